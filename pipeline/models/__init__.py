"""The model zoo: ``build_model(ModelConfig)`` returns an RNN or Transformer encoder–decoder."""

from pipeline.models.base import ModelConfig, Seq2SeqBase
from pipeline.models.rnn import RNNSeq2Seq
from pipeline.models.transformer import TransformerSeq2Seq


def build_model(cfg: ModelConfig) -> Seq2SeqBase:
    return RNNSeq2Seq(cfg) if cfg.arch == "rnn" else TransformerSeq2Seq(cfg)


__all__ = ["ModelConfig", "Seq2SeqBase", "build_model"]
