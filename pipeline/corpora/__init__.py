"""The kinds of corpus ``data.corpus`` can name, in one place: what each is called, which languages it
fixes, and how the configuration describes them. The download stage has one function per kind
(``download.FETCH``); the registry of named corpora is ``corpora/registry.py``."""

from __future__ import annotations

from pipeline.corpora.registry import CORPORA

SAMPLE = "sample-ko-en"  # generated here (corpora/sample_ko_en.py): the embedded default, no network


def kind(corpus: str) -> str | None:
    """``sample``, ``custom``, ``hf`` (HF datasets), ``registry`` (a named corpus), or None if unknown."""
    if corpus == SAMPLE:
        return "sample"
    if corpus == "custom":
        return "custom"
    if corpus.startswith("hf:"):
        return "hf"
    return "registry" if corpus in CORPORA else None


def languages(corpus: str) -> tuple[str, str] | None:
    """The (source, target) languages a corpus comes in; None where the params say (hf:, custom)."""
    if corpus == SAMPLE:
        return ("ko", "en")
    return CORPORA[corpus].languages if corpus in CORPORA else None


def describe() -> str:
    return ", ".join([SAMPLE, *CORPORA, "hf:<dataset>[:<config>]", "custom"])
