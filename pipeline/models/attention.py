"""Attention over encoder annotations: additive (Bahdanau; Luong "concat") and multiplicative (Luong dot/general).

Keys are computed once per sentence (``keys(memory)``) and reused at every decoder step. Queries may
be one step ``[B, H]`` or all steps ``[B, T, H]`` (a decoder without input feeding attends for all
positions at once).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.kind = kind
        if kind in ("bahdanau", "luong_concat"):  # v . tanh(W_k m + W_q q)
            self.key = nn.Linear(hidden, hidden, bias=False)
            self.query = nn.Linear(hidden, hidden, bias=False)
            self.energy = nn.Linear(hidden, 1, bias=False)
        elif kind == "luong_general":  # q . (W m)
            self.key = nn.Linear(hidden, hidden, bias=False)
        elif kind != "luong_dot":  # q . m
            raise ValueError(f"unknown attention '{kind}'")

    def keys(self, memory: Tensor) -> Tensor:
        """memory [B, S, H] -> keys [B, S, H]"""
        return memory if self.kind == "luong_dot" else self.key(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query [B, H] or [B, T, H]; keys/memory [B, S, H]; mask [B, S] (True = real token)
        -> context [B, (T,) H], weights [B, (T,) S]"""
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # [B, T, H]
        if self.kind in ("bahdanau", "luong_concat"):
            scores = self.energy(torch.tanh(keys.unsqueeze(1) + self.query(q).unsqueeze(2))).squeeze(-1)
        else:
            scores = torch.bmm(q, keys.transpose(1, 2))  # [B, T, S]
        weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)
        context = torch.bmm(weights, memory)  # [B, T, H]
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)
