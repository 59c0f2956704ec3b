"""The model zoo: ``build_model(arch, **fields)`` returns an RNN or Transformer encoder–decoder."""

from typing import Any

from pipeline.models.base import Seq2SeqBase
from pipeline.models.rnn import RNNConfig, RNNSeq2Seq
from pipeline.models.transformer import TransformerConfig, TransformerSeq2Seq

ARCHS: dict[str, tuple[type, type[Seq2SeqBase]]] = {"rnn": (RNNConfig, RNNSeq2Seq),
                                                   "transformer": (TransformerConfig, TransformerSeq2Seq)}


def build_model(arch: str, **fields: Any) -> Seq2SeqBase:
    """A freshly initialised model; ``fields`` are those of the architecture's config dataclass."""
    config, model = ARCHS[arch]
    return model(config(**fields))


def model_from_config(config: dict) -> Seq2SeqBase:
    """Rebuild a model from ``Seq2SeqBase.config_dict()`` (as stored in a model file)."""
    fields = dict(config)
    return build_model(fields.pop("arch"), **fields)


__all__ = ["ARCHS", "Seq2SeqBase", "build_model", "model_from_config"]
