"""Decoding speed and BLEU on Multi30k test_2016_flickr: PyTorch uncached, PyTorch cached, CTranslate2 int8.

Reads the scratch projects that ``bench/multi30k.py --out`` leaves (the 25-minute Transformer and
BiGRU + Bahdanau), decodes the cleaned test split with greedy search and beam 5 (GNMT alpha 1.0),
and prints sentences/s and cased BLEU for each way of decoding, all measured in this run:

* PyTorch uncached: the Transformer re-decodes its whole prefix at every step (the decoder before
  the key/value caches; ``model.incremental = False``);
* PyTorch cached: what the pipeline uses (per-layer key/value caches, finished sentences leave the batch);
* CTranslate2 int8 (Transformer only): ``translate --engine ctranslate2``;
* the beam search before the fix (a finished hypothesis kept a beam slot and competed with live
  ones), on the same models, so that the BLEU of the exact search is compared with the old one.

    python bench/decode.py --transformer bench/out/transformer25 --rnn bench/out/rnn25
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sacrebleu
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline.translator as translator_module  # noqa: E402
from pipeline.ct2 import ct2_translator  # noqa: E402
from pipeline.models.base import Seq2SeqBase, map_tensors  # noqa: E402
from pipeline.search import beam_search, greedy, length_penalty  # noqa: E402
from pipeline.translator import Decoding, Translator  # noqa: E402
from pipeline.vocab import BOS, EOS, PAD  # noqa: E402


@torch.no_grad()
def old_beam_search(model: Seq2SeqBase, src: Tensor, src_len: Tensor, max_len: int, beam: int = 5,
                    alpha: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """The reference: the beam search before the fix, unchanged (finished hypotheses held beam slots)."""
    if beam == 1:
        return greedy(model, src, src_len, max_len)
    B, device = src.size(0), src.device
    expand = torch.arange(B, device=device).repeat_interleave(beam)
    memory = map_tensors(model.encode(src, src_len), lambda t: t.index_select(0, expand))
    state = model.start(memory)
    y = torch.full((B * beam,), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(B, beam, device=device)
    scores[:, 1:] = float("-inf")
    finished = torch.zeros(B * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * beam, device=device)
    history: list[Tensor] = []
    for _ in range(max_len):
        logits, state, _ = model.step(y, state, memory)
        logp = torch.log_softmax(logits.float(), -1)
        logp[finished] = float("-inf")
        logp[finished, PAD] = 0.0
        V = logp.size(-1)
        total = (scores.view(-1, 1) + logp).view(B, beam * V)
        new_len = lengths.unsqueeze(1) + (~finished).float().unsqueeze(1)
        ranked = total / length_penalty(new_len.expand(-1, V).reshape(B, beam * V), alpha)
        _, best = ranked.topk(beam, dim=-1)
        origin = (best // V + torch.arange(B, device=device).unsqueeze(1) * beam).view(-1)
        y = (best % V).view(-1)
        scores = total.gather(1, best)
        lengths = new_len.view(-1).index_select(0, origin)
        finished = finished.index_select(0, origin) | (y == EOS)
        history = [h.index_select(0, origin) for h in history] + [y]
        state = map_tensors(state, lambda t, o=origin: t.index_select(0, o))
        if bool(finished.all()):
            break
    final = (scores.view(-1) / length_penalty(lengths, alpha)).view(B, beam)
    pick = final.argmax(-1) + torch.arange(B, device=device) * beam
    return torch.stack(history, 1).index_select(0, pick), None


def measure(translator: Translator, sources: list[str], references: list[str]) -> tuple[float, float, float]:
    """(seconds, sentences/s, cased BLEU) for translating every source; one warm-up batch first."""
    with torch.inference_mode():
        translator.translate(sources[:32], preprocessed=True)
        start = time.perf_counter()
        hypotheses = translator.translate(sources, preprocessed=True)
        seconds = time.perf_counter() - start
    return seconds, len(sources) / seconds, sacrebleu.corpus_bleu(hypotheses, [references]).score


def rows_for(project: Path, label: str) -> list[tuple]:
    sources = (project / "data" / "clean" / "test.de").read_text(encoding="utf-8").splitlines()
    references = (project / "data" / "clean" / "test.en").read_text(encoding="utf-8").splitlines()
    rows = []
    for search, beam in (("greedy", 1), ("beam 5", 5)):
        base = Translator.from_file(project / "models" / "model.pt", decoding=Decoding(beam_size=beam))
        transformer = base.model.arch == "transformer"
        ways = []
        if transformer:
            ways.append(("PyTorch uncached", "uncached"))
        ways.append(("PyTorch cached" if transformer else "PyTorch", "cached"))
        if beam > 1:
            ways.append(("PyTorch, the old beam search", "old"))
        if transformer:
            ways.append(("CTranslate2 int8", "ct2"))
        for name, way in ways:
            translator = ct2_translator(base, "int8") if way == "ct2" else base
            base.model.incremental = way != "uncached"
            translator_module.beam_search = old_beam_search if way == "old" else beam_search
            seconds, rate, bleu = measure(translator, sources, references)
            rows.append((label, search, name, seconds, rate, bleu))
            print(f"{label:12s} {search:7s} {name:30s} {seconds:7.1f} s {rate:8.1f} sent/s  BLEU {bleu:.2f}",
                  flush=True)
    translator_module.beam_search = beam_search
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformer", type=Path, required=True, help="scratch project of bench/multi30k.py")
    parser.add_argument("--rnn", type=Path, required=True, help="scratch project of bench/multi30k.py")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = rows_for(args.transformer, "Transformer") + rows_for(args.rnn, "BiGRU")
    print("\n| model | search | decoder | seconds | sentences/s | BLEU (cased) |\n|---|---|---|---:|---:|---:|")
    for label, search, name, seconds, rate, bleu in rows:
        print(f"| {label} | {search} | {name} | {seconds:.1f} | {rate:.1f} | {bleu:.2f} |")


if __name__ == "__main__":
    main()
