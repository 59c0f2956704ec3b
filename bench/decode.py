"""Decoding speed on Multi30k test_2016_flickr: this search against the previous one, and CTranslate2 int8.

Reads the scratch projects that ``bench/multi30k.py --out`` leaves (a Transformer, optionally a BiGRU +
Bahdanau), translates the 1,000 test sources as downloaded with greedy search and beam 5 (GNMT alpha
1.0, the project's decoding otherwise), and prints seconds, sentences/s, decoder steps and cased BLEU
for each way of decoding, all measured in this run (one warm-up batch first):

* PyTorch: what the pipeline uses (``pipeline.inference.search``: stops a sentence once no live hypothesis can beat
  its best finished one);
* PyTorch, the previous search: the same with the beam search before that rule (it waited for ``beam``
  finished hypotheses), kept here as the reference; the bench says whether both give identical output;
* CTranslate2 int8 (Transformer only): ``translate --engine ctranslate2``;
* PyTorch under bf16 autocast (the weights stay fp32; matmuls in bf16, as training's ``train.amp: bf16``);
* with ``--uncached``, the Transformer re-decoding its whole prefix at every step (before key/value caches).

    python bench/decode.py --transformer bench/out/transformer12 [--rnn bench/out/rnn20]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import sacrebleu
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline.inference.translator as translator_module  # noqa: E402
from pipeline.config import Paths, load_params  # noqa: E402
from pipeline.decoding import from_params  # noqa: E402
from pipeline.inference.ct2 import ct2_translator  # noqa: E402
from pipeline.inference.search import _pad, beam_search, greedy, length_penalty  # noqa: E402
from pipeline.inference.translator import Translator  # noqa: E402
from pipeline.models.base import Seq2SeqBase, map_tensors  # noqa: E402
from pipeline.tokens import BOS, EOS  # noqa: E402


def _select(obj: dict, rows: Tensor) -> dict:
    return map_tensors(obj, lambda t: t.index_select(0, rows))


class _FinishedBefore:
    """The best ``beam`` finished hypotheses of one sentence: (normalised score, tokens, attention)."""

    def __init__(self, beam: int):
        self.beam, self.hyps = beam, []

    def add(self, score: float, tokens: Tensor, attn: Tensor | None) -> None:
        self.hyps.append((score, tokens, attn))
        self.hyps.sort(key=lambda h: -h[0])
        del self.hyps[self.beam:]

    def worst(self) -> float:
        return self.hyps[-1][0] if len(self.hyps) == self.beam else float("-inf")


@torch.no_grad()
def previous_beam_search(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int, beam: int,
                         alpha: float, attention: bool = True) -> tuple[Tensor, Tensor | None]:
    """The reference: the beam search before this change, unchanged (it stopped only once ``beam`` hypotheses
    had finished and no live one could beat the worst of them; <pad> and <s> were not masked; it always
    asked the model for attention weights: ``attention`` is ignored)."""
    if beam == 1:
        return greedy(model, src, src_len, max_len)
    B, device = src.size(0), src.device
    memory = _select(model.encode(src, src_len), torch.arange(B, device=device).repeat_interleave(beam))
    state = model.start(memory)  # row i * beam + k is hypothesis k of the i-th sentence still decoding
    sentences = torch.arange(B, device=device)
    scores = torch.zeros(B, beam, device=device)
    scores[:, 1:] = float("-inf")  # every hypothesis starts as <s>: keep one
    y = torch.full((B * beam,), BOS, dtype=torch.long, device=device)
    history = torch.empty(B * beam, 0, dtype=torch.long, device=device)  # tokens so far, per row
    attn_history: Tensor | None = None  # [rows, t, S]
    finished = [_FinishedBefore(beam) for _ in range(B)]
    best_possible = length_penalty(max_len, alpha)
    for t in range(max_len):
        logits, state, w = model.step(y, state, memory)
        logp = torch.log_softmax(logits.float(), -1)  # [n * beam, V]
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
        # done: `beam` finished hypotheses, and no live one can still beat the worst of them
        worst = torch.tensor([finished[int(s)].worst() for s in sentences], device=device)
        going = (scores[:, 0] / best_possible > worst).nonzero().squeeze(1)
        if len(going) < n:
            if len(going) == 0:
                break
            keep_rows = (going.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            sentences, scores, y = sentences[going], scores[going], y[keep_rows]
            history = history[keep_rows]
            attn_history = attn_history[keep_rows] if attn_history is not None else None
            state, memory = _select(state, keep_rows), _select(memory, keep_rows)
    for i, s in enumerate(sentences.tolist()):  # the length limit: a cut hypothesis only where none finished
        if not finished[s].hyps:
            finished[s].add(float(scores[i, 0]), history[i * beam],
                            attn_history[i * beam] if attn_history is not None else None)
    return _pad([f.hyps[0] for f in finished], src.size(1), device)


def measure(translator: Translator, sources: list[str], references: list[str]
            ) -> tuple[float, tuple[int, int], float, list[str]]:
    """(seconds, (batched decoder steps, hypothesis-steps), cased BLEU, hypotheses) for translating every
    source; one warm-up batch first."""
    model = translator.model
    steps = [0, 0]
    step = type(model).step

    def counted(self, y, *args, **kwargs):
        steps[0] += 1
        steps[1] += y.size(0)  # the rows this step computes: one per live hypothesis
        return step(self, y, *args, **kwargs)

    with torch.inference_mode():
        translator.translate(sources[:32])
        model.step = counted.__get__(model)  # counts the batched decoder steps
        try:
            start = time.perf_counter()
            hypotheses = translator.translate(sources)
            seconds = time.perf_counter() - start
        finally:
            del model.step
    return seconds, (steps[0], steps[1]), sacrebleu.corpus_bleu(hypotheses, [references]).score, hypotheses


def rows_for(project: Path, label: str, uncached: bool) -> list[tuple]:
    params, paths = load_params(project / "params.yaml"), Paths(project)
    sources = (paths.original / f"test.{params.data.src}").read_text(encoding="utf-8").splitlines()
    references = (paths.original / f"test.{params.data.tgt}").read_text(encoding="utf-8").splitlines()
    rows = []
    for search, beam in (("greedy", 1), ("beam 5", 5)):
        base = Translator.from_file(paths.model / "model.pt", decoding=from_params(params, beam_size=beam))
        transformer = base.model.arch == "transformer"
        ways = [("PyTorch", "cached"), ("PyTorch, bf16 autocast", "bf16")]
        if beam > 1:
            ways.append(("PyTorch, the previous search", "previous"))
        if transformer:
            ways.append(("CTranslate2 int8", "ct2"))
            if uncached:
                ways.append(("PyTorch uncached", "uncached"))
        outputs = {}
        for name, way in ways:
            translator = ct2_translator(base, "int8") if way == "ct2" else base
            base.model.incremental = way != "uncached"
            translator_module.beam_search = previous_beam_search if way == "previous" else beam_search
            with torch.autocast("cpu", torch.bfloat16) if way == "bf16" else contextlib.nullcontext():
                seconds, steps, bleu, outputs[way] = measure(translator, sources, references)
            same = "" if way == "cached" else (
                "identical" if outputs[way] == outputs["cached"] else
                f"{sum(a != b for a, b in zip(outputs[way], outputs['cached'], strict=True))} lines differ")
            counts = f"{steps[0]} / {steps[1]:,}" if way != "ct2" else "-"
            rows.append((label, search, name, seconds, len(sources) / seconds, counts, bleu, same))
            print(f"{label:12s} {search:7s} {name:30s} {seconds:7.1f} s {len(sources) / seconds:8.1f} sent/s "
                  f"{counts:>16} steps  BLEU {bleu:.2f}  {same}", flush=True)
    translator_module.beam_search = beam_search
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformer", type=Path, required=True, help="scratch project of bench/multi30k.py")
    parser.add_argument("--rnn", type=Path, help="scratch project of bench/multi30k.py")
    parser.add_argument("--uncached", action="store_true", help="also the Transformer without key/value caches")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = rows_for(args.transformer, "Transformer", args.uncached)
    if args.rnn:
        rows += rows_for(args.rnn, "BiGRU", False)
    print("\n| model | search | decoder | seconds | sentences/s | decoder steps / hypothesis-steps | BLEU (cased) "
          "| output |\n|---|---|---|---:|---:|---:|---:|---|")
    for label, search, name, seconds, rate, counts, bleu, same in rows:
        print(f"| {label} | {search} | {name} | {seconds:.1f} | {rate:.1f} | {counts} | {bleu:.2f} | "
              f"{same or 'this search'} |")


if __name__ == "__main__":
    main()
