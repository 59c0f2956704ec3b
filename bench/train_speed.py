"""Training speed (target tokens/s) of the default models against a naive reference, same run, same data.

Data: Multi30k de-en train (../shared/corpora), BPE 4,000 per side, as the pipeline builds it.

* GRU + Bahdanau (params.yaml defaults: emb 128, hidden 256, bidirectional encoder), ours: length-
  bucketed token-budget batches, packed encoder, precomputed attention keys and input gates, output
  layer and loss for all positions at once.
* Naive reference, written here: the same architecture and sizes, random batches of the same mean
  size padded to their longest sentence, no packing, and a per-time-step Python decoder loop that
  recomputes the attention keys and applies the output layer and loss inside the loop (the shape of
  most tutorial code).
* Transformer (3+3 layers, d=256, 4 heads, ff 1024): ours, and the same model fed random batches.
* Precision: both of our models in fp32 and under bf16 autocast (what ``train.amp: auto`` picks on a
  CPU with AVX512-BF16 or AMX, or on a GPU), and the FLOP/s each achieves as a share of the peak matmul
  FLOP/s of that dtype measured here (square matmuls, the best of several sizes): the utilisation.
  FLOPs per step are counted by torch's ``FlopCounterMode`` (matmuls, attention; the GRU's recurrent
  kernels are not counted, so the RNN's share is a lower bound).
* Compile: the Transformer eager against ``train.compile: true`` (the train stage's ``compiled``: torch.compile of
  the teacher-forced pass, dynamic shapes), in the precision ``train.amp: auto`` picks on this machine; the
  first, untimed pass over the timed batches holds the compiles, and its seconds are printed apart.

    python bench/train_speed.py                   # about 11 minutes on 2 cores (the compile rows 5)
    python bench/train_speed.py --only precision  # the precision rows alone
    python bench/train_speed.py --only compile    # the compile rows alone
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora" / "multi30k"
sys.path.insert(0, str(ROOT))

from pipeline.config import Tokenize  # noqa: E402
from pipeline.dataset import Pairs, token_batches  # noqa: E402
from pipeline.device import amp_dtype, autocast, cpu_has_bf16  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.stages.tokenizer import train_tokenizer  # noqa: E402
from pipeline.stages.train import compiled  # noqa: E402
from pipeline.tokens import PAD, source_ids, target_ids  # noqa: E402


class NaiveBahdanau(nn.Module):
    """The tutorial-style reference: same sizes, nothing hoisted out of the time loop."""

    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int, hidden: int):
        super().__init__()
        self.src_embed = nn.Embedding(src_vocab, emb, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, emb, padding_idx=PAD)
        self.encoder = nn.GRU(emb, hidden // 2, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.energy = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.GRUCell(emb + hidden, hidden)
        self.pre_output = nn.Linear(2 * hidden + emb, hidden)
        self.out = nn.Linear(hidden, tgt_vocab)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, int]:
        memory, h = self.encoder(self.src_embed(src))  # padded, not packed
        s = torch.tanh(self.bridge(torch.cat([h[0], h[1]], -1)))
        mask = src != PAD
        total, count = 0.0, 0
        for t in range(tgt.size(1) - 1):
            emb = self.tgt_embed(tgt[:, t])
            scores = self.energy(torch.tanh(self.key(memory) + self.query(s).unsqueeze(1))).squeeze(-1)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
            ctx = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
            s = self.cell(torch.cat([emb, ctx], -1), s)
            logits = self.out(torch.tanh(self.pre_output(torch.cat([s, ctx, emb], -1))))
            gold = tgt[:, t + 1]
            total = total + F.cross_entropy(logits, gold, ignore_index=PAD, reduction="sum")
            count += int((gold != PAD).sum())
        return total, count


def load_pairs(n: int) -> tuple[Pairs, int, int]:
    de, en = (gzip.decompress((SHARED / f"train.{x}.gz").read_bytes()).decode().splitlines()[:n]
              for x in ("de", "en"))
    cfg = Tokenize(vocab_size=4000)
    src_tok, tgt_tok = train_tokenizer(iter(de), cfg), train_tokenizer(iter(en), cfg)
    src = [np.array(source_ids(e.ids), np.int32) for e in src_tok.encode_batch_fast(de)]
    tgt = [np.array(target_ids(e.ids), np.int32) for e in tgt_tok.encode_batch_fast(en)]
    pairs = Pairs(np.concatenate(src), np.array([len(s) for s in src], np.int32),
                  np.concatenate(tgt), np.array([len(t) for t in tgt], np.int32))
    return pairs, src_tok.get_vocab_size(), tgt_tok.get_vocab_size()


def random_batches(pairs: Pairs, size: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [order[i:i + size] for i in range(0, len(order) - size + 1, size)]


def measure(step_fn, batches: list[np.ndarray], pairs: Pairs, steps: int, warmup: int = 2) -> float:
    """Target tokens per second over ``steps`` optimiser steps (after ``warmup``)."""
    tokens, start = 0, 0.0
    for i, idx in enumerate(batches[: warmup + steps]):
        if i == warmup:
            start, tokens = time.perf_counter(), 0
        b = pairs.batch(idx)
        tokens += step_fn(b)
    return tokens / (time.perf_counter() - start)


def ours_loss(model: nn.Module, b: dict) -> tuple[torch.Tensor, int]:
    loss, _, n = model.loss(b["src"], b["src_len"], b["tgt"])
    return loss, n


def naive_loss(model: NaiveBahdanau, b: dict) -> tuple[torch.Tensor, int]:
    return model.loss(b["src"], b["tgt"])


def trainer(model: nn.Module, loss_fn=ours_loss, dtype: torch.dtype | None = None):
    """One optimiser step per call (fp32 master weights and optimizer; the forward under autocast)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    device = torch.device("cpu")

    def step(b: dict) -> int:
        with autocast(device, dtype):
            loss, n = loss_fn(model, b)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return n

    return step


def build(arch: str, sv: int, tv: int) -> nn.Module:
    if arch == "rnn":
        return build_model("rnn", src_vocab=sv, tgt_vocab=tv, emb_dim=128, hidden=256, dropout=0.1, cell="gru",
                           layers=1, bidirectional=True, attention="bahdanau", input_feeding=True)
    return build_model("transformer", src_vocab=sv, tgt_vocab=tv, hidden=256, dropout=0.1, heads=4, ff_dim=1024,
                       enc_layers=3, dec_layers=3, positions="sinusoidal", norm="pre", tie_embeddings=False,
                       max_positions=512, joint_vocab=False)


def against_naive(pairs: Pairs, sv: int, tv: int, ours_batches: list, naive_batches: list, steps: int) -> None:
    torch.manual_seed(0)
    rnn = build("rnn", sv, tv)
    ours = measure(trainer(rnn), ours_batches, pairs, steps)
    naive = NaiveBahdanau(sv, tv, 128, 256)
    ref = measure(trainer(naive, naive_loss), naive_batches, pairs, steps)
    print(f"GRU + Bahdanau   ours {ours:8,.0f} tok/s   naive reference {ref:8,.0f} tok/s   ratio {ours / ref:.2f}x "
          "(target >= 2x)")
    tf = build("transformer", sv, tv)
    ours_tf = measure(trainer(tf), ours_batches, pairs, steps)
    rand_tf = measure(trainer(tf), naive_batches, pairs, steps)
    print(f"Transformer 3+3  ours {ours_tf:8,.0f} tok/s   same model, random batches {rand_tf:8,.0f} tok/s   "
          f"ratio {ours_tf / rand_tf:.2f}x")


def peak_matmul(dtype: torch.dtype) -> float:
    """The best FLOP/s of square matmuls (n = 512 to 2048) in ``dtype`` on this machine's threads."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        reps = max(3, int(2e10 / (2 * n**3)))
        tic = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - tic))
    return best


def step_flops(model: nn.Module, b: dict, dtype: torch.dtype | None) -> int:
    """FLOPs of one training step's forward and backward on batch ``b`` (as FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter:
        with autocast(torch.device("cpu"), dtype):
            loss, n = ours_loss(model, b)
        (loss / n).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def precision(pairs: Pairs, sv: int, tv: int, batches: list, steps: int) -> None:
    """fp32 against bf16 autocast, both architectures, in the same run; utilisation against the peaks."""
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    peaks = {name: peak_matmul(d or torch.float32) for name, d in dtypes.items()}
    print(f"peak matmul: fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s "
          f"(native bf16: {cpu_has_bf16()})")
    tokens_per_batch = np.mean([int(pairs.tgt_len[b].sum()) - len(b) for b in batches[2:2 + steps]])
    for arch in ("rnn", "transformer"):
        speed = {}
        for name, dtype in dtypes.items():
            torch.manual_seed(0)
            model = build(arch, sv, tv)
            flops = np.mean([step_flops(model, pairs.batch(b), dtype) for b in batches[2:5]])
            speed[name] = measure(trainer(model, dtype=dtype), batches, pairs, steps)
            achieved = flops * speed[name] / tokens_per_batch
            print(f"{arch:<12} {name}  {speed[name]:8,.0f} tok/s   {achieved / 1e9:6.1f} GFLOP/s counted = "
                  f"{100 * achieved / peaks[name]:4.1f}% of the {name} peak")
        print(f"{arch:<12} bf16 / fp32 = {speed['bf16'] / speed['fp32']:.2f}x (target >= 1.4x)")


def compile_rows(pairs: Pairs, sv: int, tv: int, batches: list, steps: int) -> None:
    """The Transformer eager and compiled, same batches, same precision. Each first runs the timed batches once
    untimed: that pass holds the compiles (one per guard its shapes cross, e.g. a size threshold inside a kernel's
    decomposition), so the timed pass over the same batches compiles nothing."""
    dtype = amp_dtype("auto", torch.device("cpu"), "transformer")
    speed = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build("transformer", sv, tv)
        if name == "compiled":
            model.features = compiled(model.features)
        step = trainer(model, dtype=dtype)
        tic = time.perf_counter()
        for idx in batches[:steps]:
            step(pairs.batch(idx))
        first = time.perf_counter() - tic
        speed[name] = measure(step, batches, pairs, steps, warmup=0)
        print(f"transformer  {name:<8} {str(dtype or torch.float32).removeprefix('torch.')}  "
              f"{speed[name]:8,.0f} tok/s   the first pass over the same {steps} batches {first:5.1f} s")
    print(f"transformer  compiled / eager = {speed['compiled'] / speed['eager']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=29000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--max-tokens", type=int, default=6000)
    parser.add_argument("--only", choices=["naive", "precision", "compile"], help="one section of the bench")
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs, sv, tv = load_pairs(args.pairs)
    ours_batches = token_batches(pairs.src_len, pairs.tgt_len, args.max_tokens, seed=0)
    mean_size = int(np.mean([len(b) for b in ours_batches]))
    naive_batches = random_batches(pairs, mean_size)
    print(f"data: {len(pairs):,} pairs, vocab {sv}/{tv}, {len(ours_batches)} token-budget batches "
          f"(mean {mean_size} sentences); {args.steps} timed steps each; torch threads {torch.get_num_threads()}")
    if args.only in (None, "naive"):
        against_naive(pairs, sv, tv, ours_batches, naive_batches, args.steps)
    if args.only in (None, "precision"):
        precision(pairs, sv, tv, ours_batches, args.steps)
    if args.only in (None, "compile"):
        compile_rows(pairs, sv, tv, ours_batches, args.steps)


if __name__ == "__main__":
    main()
