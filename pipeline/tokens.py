"""Special tokens and loading the subword tokenizers.

The ids of the special tokens are fixed (every tokenizer the ``tokenize`` stage trains puts them
first), so models, decoding and batching can use them without loading a tokenizer. The
``tokenizers`` library is imported inside the loaders only: the model zoo imports this module for
``PAD``/``BOS``/``EOS`` and should not pull in the Rust tokenizer just for four integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.common import PipelineError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
PAD, UNK, BOS, EOS = range(4)


def load_tokenizer(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    if not path.exists():
        raise PipelineError(f"{path} not found; run the tokenize stage first")
    return Tokenizer.from_file(str(path))


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer from its JSON text (as stored inside a model file)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def load_tokenizers(directory: Path) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers written by the tokenize stage into ``directory``."""
    return load_tokenizer(directory / "src.json"), load_tokenizer(directory / "tgt.json")


# How a sentence is framed by special tokens, in one place: the build stage frames the training data
# so, the translator frames its input so, and a hypothesis is read back by ``strip_ids``.

def source_ids(ids: list[int]) -> list[int]:
    """A source as the models read it: its subword ids, then ``</s>``."""
    return [*ids, EOS]


def target_ids(ids: list[int]) -> list[int]:
    """A target as the models learn it: ``<s>``, its subword ids, ``</s>`` (the decoder's input is all but
    the last, its output all but the first)."""
    return [BOS, *ids, EOS]


def strip_ids(row: list[int]) -> list[int]:
    """A hypothesis's subword ids: up to (not including) the first ``</s>``, without padding."""
    out = []
    for t in row:
        if t == EOS:
            break
        if t != PAD:
            out.append(t)
    return out
