"""What every model shares: its config, the loss, and the step interface that decoding uses.

Each architecture's constructor takes its own frozen dataclass (``RNNConfig``,
``TransformerConfig``), built by the train stage from the validated ``model`` section of
params.yaml; the dataclasses have no defaults and no checks of their own, so nothing is kept twice.

A model implements
  ``features(src, src_len, tgt_in) -> hidden [B, T, H], attention [B, T, S] | None`` (teacher forcing: what
  the output layer ``out`` reads; ``forward`` returns ``out`` of it, the logits [B, T, V]),
  ``encode(src, src_len) -> memory`` and ``start(memory) -> state``,
  ``step(y_prev [B], state, memory) -> logits [B, V], state, attention [B, S] | None``.
Memory and state are dicts of batch-first tensors (or lists of them), so beam search can reorder
them with one ``index_select`` per tensor.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.models.loss import linear_cross_entropy, smoothed_nll
from pipeline.tokens import PAD


def map_tensors(obj: Any, fn: Any) -> Any:
    """Apply ``fn`` to every tensor in nested dicts/lists/tuples."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


class Seq2SeqBase(nn.Module):
    """Each architecture names itself (``arch``) and keeps the dataclass it was built from (``cfg``);
    ``config_dict()`` is what a model file stores to rebuild it."""

    arch: str
    cfg: Any

    def config_dict(self) -> dict:
        return {"arch": self.arch, **asdict(self.cfg)}

    def max_length(self) -> int | None:
        """The longest sequence, in tokens, the model can read or write; None: no limit."""
        return None

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        raise NotImplementedError

    def start(self, memory: dict) -> dict:
        raise NotImplementedError

    def step(self, y_prev: Tensor, state: dict, memory: dict, need_weights: bool = True
             ) -> tuple[Tensor, dict, Tensor | None]:
        """One target position for every row: logits [B, V], the new state, and the attention weights [B, S]
        (None where the model has none, or with ``need_weights=False`` where computing them costs extra)."""
        raise NotImplementedError

    def load_embeddings(self, src: Tensor | None, tgt: Tensor | None, freeze: bool) -> None:
        for table, weights in ((self.src_embed, src), (self.tgt_embed, tgt)):
            if weights is not None:
                if weights.shape != table.weight.shape:
                    raise ValueError(f"pretrained embeddings {tuple(weights.shape)} do not fit "
                                     f"{tuple(table.weight.shape)}")
                table.weight.data.copy_(weights)
                table.weight.requires_grad_(not freeze)

    def sampled_logits(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, teacher_forcing: float) -> Tensor:
        """Scheduled sampling: at each step feed the gold token with probability ``teacher_forcing``,
        else the model's own previous prediction. -> logits [B, T, V]"""
        memory = self.encode(src, src_len)
        state = self.start(memory)
        y = tgt_in[:, 0]
        out = []
        for t in range(tgt_in.size(1)):
            logits, state, _ = self.step(y, state, memory)
            out.append(logits)
            if t + 1 < tgt_in.size(1):
                gold = tgt_in[:, t + 1]
                use_gold = torch.rand(gold.shape, device=gold.device) < teacher_forcing
                y = torch.where(use_gold | (gold == PAD), gold, logits.argmax(-1).detach())
        return torch.stack(out, 1)

    def features(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: what the output layer ``out`` reads at every position [B, T, H], and attention."""
        raise NotImplementedError

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        hidden, weights = self.features(src, src_len, tgt_in)
        return self.out(hidden), weights  # logits [B, T, V]

    def loss(self, src: Tensor, src_len: Tensor, tgt: Tensor, label_smoothing: float = 0.0,
             teacher_forcing: float = 1.0) -> tuple[Tensor, Tensor, int]:
        """(training loss, negative log-likelihood, target tokens), sums over the non-pad targets of tgt[:, 1:]."""
        tgt_in, gold = tgt[:, :-1], tgt[:, 1:].reshape(-1)
        if teacher_forcing >= 1.0:  # the output layer and the loss in one, chunk by chunk (models/loss.py)
            hidden, _ = self.features(src, src_len, tgt_in)
            loss, nll = linear_cross_entropy(hidden.reshape(-1, hidden.size(-1)), self.out.weight, self.out.bias,
                                             gold, label_smoothing)
        else:  # scheduled sampling decodes step by step: its logits exist anyway
            logits = self.sampled_logits(src, src_len, tgt_in, teacher_forcing)
            loss, nll = smoothed_nll(logits.reshape(-1, logits.size(-1)).float().log_softmax(-1), gold,
                                     label_smoothing)
        return loss, nll.detach(), int((gold != PAD).sum())
