"""Decoding: batched greedy search and batched beam search over any model's ``step``.

Both return token ids after ``<s>`` (``[B, T]``, padded with ``<pad>`` after ``</s>``) and the
attention weights of the chosen hypotheses (``[B, T, S]``, or None for models without them).
``<pad>`` and ``<s>`` are never chosen: they are not words, and an untrained model ranks them as
likely as any other token.

Beam search keeps ``beam`` live hypotheses per sentence and, apart from them, the best finished one
(ended by ``</s>``): a finished hypothesis never holds a live slot, so live ones can never push it out
(joeynmt, OpenNMT and fairseq do the same). At each step the best ``2 x beam`` candidates are ranked;
those among the first ``beam`` that end in ``</s>`` are finished, and the best ``beam`` others live on.
A sentence is done when no live hypothesis can still beat its best finished one: log-probabilities only
fall and the GNMT penalty only grows with length, so no live hypothesis can end above ``best live
score / penalty(max_len)``. Only the best finished hypothesis is returned, so waiting for ``beam`` of
them (the rule before) decoded more for the same output (11% more hypothesis-steps on the Multi30k
Transformer of docs/benchmarks.md). Done sentences leave the batch, so the others decode faster. A
hypothesis cut at the length limit is returned only for a sentence where nothing finished.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.models.base import Seq2SeqBase, map_tensors
from pipeline.tokens import BOS, EOS, PAD


def _select(obj: dict, rows: Tensor) -> dict:
    return map_tensors(obj, lambda t: t.index_select(0, rows))


@torch.no_grad()
def greedy(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int, attention: bool = True
           ) -> tuple[Tensor, Tensor | None]:
    B, device = src.size(0), src.device
    memory = model.encode(src, src_len)
    state = model.start(memory)
    alive = torch.arange(B, device=device)  # which sentences are still being decoded
    y = torch.full((B,), BOS, dtype=torch.long, device=device)
    tokens = torch.full((B, max_len), PAD, dtype=torch.long, device=device)
    attn: Tensor | None = None
    steps = 0
    for t in range(max_len):
        logits, state, w = model.step(y, state, memory, need_weights=attention)
        y = _never_special(logits).argmax(-1)
        tokens[alive, t] = y
        if w is not None:
            if attn is None:
                attn = w.new_zeros(B, max_len, w.size(-1))
            attn[alive, t] = w
        steps = t + 1
        going = (y != EOS).nonzero().squeeze(1)
        if len(going) < len(y):  # finished sentences leave the batch
            if len(going) == 0:
                break
            alive, y = alive[going], y[going]
            state, memory = _select(state, going), _select(memory, going)
    return tokens[:, :steps], (attn[:, :steps] if attn is not None else None)


def length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT length penalty ((5 + |Y|) / 6)^alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def _never_special(scores: Tensor) -> Tensor:
    """``scores`` [rows, V] with <pad> and <s> ruled out (in place)."""
    scores[:, PAD] = float("-inf")
    scores[:, BOS] = float("-inf")
    return scores


class _Finished:
    """The best finished hypothesis of one sentence: (normalised score, tokens, attention)."""

    def __init__(self) -> None:
        self.hyp: tuple[float, Tensor, Tensor | None] | None = None

    def add(self, score: float, tokens: Tensor, attn: Tensor | None) -> None:
        if self.hyp is None or score > self.hyp[0]:  # a tie keeps the one found first
            self.hyp = (score, tokens, attn)

    def best(self) -> float:
        return self.hyp[0] if self.hyp is not None else float("-inf")


@torch.no_grad()
def beam_search(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int, beam: int,
                alpha: float, attention: bool = True) -> tuple[Tensor, Tensor | None]:
    """Batched beam search: all sentences x ``beam`` hypotheses advance together."""
    if beam == 1:
        return greedy(model, src, src_len, max_len, attention)
    B, device = src.size(0), src.device
    memory = _select(model.encode(src, src_len), torch.arange(B, device=device).repeat_interleave(beam))
    state = model.start(memory)  # row i * beam + k is hypothesis k of the i-th sentence still decoding
    sentences = torch.arange(B, device=device)
    scores = torch.zeros(B, beam, device=device)
    scores[:, 1:] = float("-inf")  # every hypothesis starts as <s>: keep one
    y = torch.full((B * beam,), BOS, dtype=torch.long, device=device)
    history = torch.empty(B * beam, 0, dtype=torch.long, device=device)  # tokens so far, per row
    attn_history: Tensor | None = None  # [rows, t, S]
    finished = [_Finished() for _ in range(B)]
    best_possible = length_penalty(max_len, alpha)
    for t in range(max_len):
        logits, state, w = model.step(y, state, memory, need_weights=attention)
        logp = _never_special(torch.log_softmax(logits.float(), -1))  # [n * beam, V]
        n, V = len(sentences), logp.size(-1)
        candidates = (scores.view(-1, 1) + logp).view(n, beam * V)
        top, index = candidates.topk(min(2 * beam, beam * V), dim=-1)  # [n, 2 * beam], best first
        rows = index // V + torch.arange(n, device=device).unsqueeze(1) * beam  # the row each extends
        token = index % V
        ended = (token == EOS) & torch.isfinite(top)
        # ranked among the first `beam` and ending in </s>: finished, scored with the length penalty
        for i, r in ended[:, :beam].nonzero().tolist():
            row = rows[i, r]
            hyp_attn = None
            if w is not None:
                hyp_attn = w[row, None] if attn_history is None else torch.cat([attn_history[row], w[row, None]])
            finished[int(sentences[i])].add(float(top[i, r]) / length_penalty(t + 1, alpha),
                                            torch.cat([history[row], token[i, r, None]]), hyp_attn)
        # the best `beam` candidates that did not end live on
        order = (ended.long() * top.size(1) + torch.arange(top.size(1), device=device)).argsort(-1)[:, :beam]
        scores, rows, token = top.gather(1, order), rows.gather(1, order).view(-1), token.gather(1, order).view(-1)
        history = torch.cat([history.index_select(0, rows), token.unsqueeze(1)], 1)
        if w is not None:
            step_attn = w.index_select(0, rows).unsqueeze(1)
            attn_history = step_attn if attn_history is None else torch.cat(
                [attn_history.index_select(0, rows), step_attn], 1)
        state, y = _select(state, rows), token
        # done: no live hypothesis can still beat the best finished one
        best = torch.tensor([finished[int(s)].best() for s in sentences], device=device)
        going = (scores[:, 0] / best_possible > best).nonzero().squeeze(1)
        if len(going) < n:
            if len(going) == 0:
                break
            keep_rows = (going.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            sentences, scores, y = sentences[going], scores[going], y[keep_rows]
            history = history[keep_rows]
            attn_history = attn_history[keep_rows] if attn_history is not None else None
            state, memory = _select(state, keep_rows), _select(memory, keep_rows)
    for i, s in enumerate(sentences.tolist()):  # the length limit: a cut hypothesis only where none finished
        if finished[s].hyp is None:
            finished[s].add(float(scores[i, 0]), history[i * beam],
                            attn_history[i * beam] if attn_history is not None else None)
    return _pad([f.hyp for f in finished], src.size(1), device)


def _pad(hyps: list[tuple[float, Tensor, Tensor | None]], src_width: int, device: torch.device
         ) -> tuple[Tensor, Tensor | None]:
    width = max(len(tokens) for _, tokens, _ in hyps)
    tokens = torch.full((len(hyps), width), PAD, dtype=torch.long, device=device)
    attn = torch.zeros(len(hyps), width, src_width, device=device) if hyps[0][2] is not None else None
    for i, (_, seq, a) in enumerate(hyps):
        tokens[i, : len(seq)] = seq
        if attn is not None:
            attn[i, : len(seq), : a.size(-1)] = a
    return tokens, attn
