"""Decoding settings: the one home of how a model searches, and of the function that reads them from params.

The evaluate stage, training's validation BLEU, ``translate``, the served model, CTranslate2 and every
bench decode with a ``Decoding`` built by ``from_params``, so a score, a served answer and a command-line
translation always come from the same search. The defaults here are also ``params.yaml``'s (the
``evaluate`` section of ``pipeline.config`` reads them from this class).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Decoding:
    beam_size: int = 5  # 1 = greedy
    length_penalty: float = 1.0  # GNMT alpha
    max_len_a: float = 1.5  # hypothesis length limit: a * source length + b ...
    max_len_b: int = 10  # ... capped at what the model can represent (a Transformer's max_positions)
    max_tokens: int = 6000  # source tokens per batch (divided by the beam)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Decoding:
        return replace(self, **changes)

    def max_len(self, src_len: int, model_limit: int | None = None) -> int:
        """Target tokens to decode at most for a source of ``src_len`` tokens (``</s>`` included)."""
        limit = int(self.max_len_a * src_len + self.max_len_b)
        return max(1, min(limit, model_limit)) if model_limit else limit

    def batch_tokens(self) -> int:
        """Source tokens per batch: a beam multiplies the batch, so the budget is per hypothesis."""
        return max(self.max_tokens // self.beam_size, 1)


def from_params(params: Any, **overrides: Any) -> Decoding:
    """The decoding of a project (a ``pipeline.config.Params``: not imported, since config reads its defaults
    here): its ``evaluate`` section, with batches of ``build.max_tokens``."""
    e = params.evaluate
    settings = {"beam_size": e.beam_size, "length_penalty": e.length_penalty, "max_len_a": e.max_len_a,
                "max_len_b": e.max_len_b, "max_tokens": params.build.max_tokens}
    return Decoding(**(settings | overrides))
