"""Decoding: batched greedy search and batched beam search over any model's ``step``.

Both return token ids after ``<s>`` (``[B, T]``, padded with ``<pad>`` after ``</s>``) and the
attention weights of the chosen hypotheses (``[B, T, S]``, or None for models without them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.models.base import Seq2SeqBase, map_tensors
from pipeline.vocab import BOS, EOS, PAD


@torch.no_grad()
def greedy(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int) -> tuple[Tensor, Tensor | None]:
    memory = model.encode(src, src_len)
    state = model.start(memory)
    y = torch.full((src.size(0),), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros_like(y, dtype=torch.bool)
    tokens, weights = [], []
    for _ in range(max_len):
        logits, state, w = model.step(y, state, memory)
        y = logits.argmax(-1).masked_fill(done, PAD)
        tokens.append(y)
        weights.append(w)
        done |= y == EOS
        if bool(done.all()):
            break
    attn = torch.stack(weights, 1) if weights[0] is not None else None
    return torch.stack(tokens, 1), attn


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + |Y|) / 6)^alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int, beam: int = 5,
                alpha: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """Batched beam search: all sentences x ``beam`` hypotheses advance together."""
    if beam == 1:
        return greedy(model, src, src_len, max_len)
    B, device = src.size(0), src.device
    expand = torch.arange(B, device=device).repeat_interleave(beam)  # row i*beam+k is sentence i
    memory = map_tensors(model.encode(src, src_len), lambda t: t.index_select(0, expand))
    state = model.start(memory)
    y = torch.full((B * beam,), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(B, beam, device=device)
    scores[:, 1:] = float("-inf")  # all hypotheses start equal: keep one
    finished = torch.zeros(B * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * beam, device=device)
    history: list[Tensor] = []
    attn_history: list[Tensor] = []
    for _ in range(max_len):
        logits, state, w = model.step(y, state, memory)
        logp = torch.log_softmax(logits.float(), -1)  # [B*beam, V]
        # a finished hypothesis can only continue with <pad>, at no cost
        logp[finished] = float("-inf")
        logp[finished, PAD] = 0.0
        V = logp.size(-1)
        total = (scores.view(-1, 1) + logp).view(B, beam * V)
        new_len = lengths.unsqueeze(1) + (~finished).float().unsqueeze(1)  # [B*beam, 1]
        ranked = total / length_penalty(new_len.expand(-1, V).reshape(B, beam * V), alpha)
        _, best = ranked.topk(beam, dim=-1)  # [B, beam]
        origin = best // V + torch.arange(B, device=device).unsqueeze(1) * beam  # source rows
        y = (best % V).view(-1)
        origin = origin.view(-1)
        scores = total.gather(1, best)
        lengths = new_len.view(-1).index_select(0, origin)
        finished = finished.index_select(0, origin) | (y == EOS)
        history = [h.index_select(0, origin) for h in history] + [y]
        if w is not None:
            attn_history = [a.index_select(0, origin) for a in attn_history] + [w.index_select(0, origin)]
        state = map_tensors(state, lambda t, o=origin: t.index_select(0, o))
        if bool(finished.all()):
            break
    final = (scores.view(-1) / length_penalty(lengths, alpha)).view(B, beam)
    pick = final.argmax(-1) + torch.arange(B, device=device) * beam
    tokens = torch.stack(history, 1).index_select(0, pick)
    attn = torch.stack(attn_history, 1).index_select(0, pick) if attn_history else None
    return tokens, attn

