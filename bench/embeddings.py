"""Pretrained embeddings: what random, word2vec and GloVe initialisation buy, and how fast GloVe trains.

Quality (``--corpus multi30k`` or ``--corpus ko-en``): the real stages in a scratch project, then one
BiGRU + Bahdanau per initialisation, same seed and same training time budget: random; word2vec and
GloVe, each fine-tuned and frozen. Reports the valid loss after epoch 1, the best valid loss, test
BLEU/chrF (beam 5), and the embed stage's wall time and peak RSS (run as its own process, as under
DVC). ``--transformer`` adds Transformer runs: random, word2vec rescaled (what the model does) and
word2vec at its trainer's scale (what it did before), on the same data.

* multi30k: Multi30k de→en through ../shared as the registry's mirror; test_2016_flickr.
* ko-en: ../shared/corpora/ko-en/open.train.{ko,en}.gz (78k pairs, a custom corpus read from ../shared,
  nothing copied), valid/test carved out of it by the clean stage (in-domain).

Speed (``--speed``): GloVe on the 1M-pair corpus of bench/data_stages.py (dim 128, window 10,
15 epochs): the embed stage's time and peak RSS, co-occurrence pairs/s and training cells/s, each
against a naive reference measured in the same run on a sample (a Python dict per pair; a per-cell
Python loop of the reference C code's update).

    python bench/embeddings.py --corpus multi30k --minutes 6 --transformer --out bench/out/emb-m30k
    python bench/embeddings.py --corpus ko-en --minutes 6 --out bench/out/emb-koen
    python bench/embeddings.py --speed --out bench/out/emb-speed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import make_corpus, run_stage, scratch_project  # noqa: E402

from pipeline import allocator, glove  # noqa: E402
from pipeline.checkpoint import load_checkpoint  # noqa: E402
from pipeline.common import setup_logging  # noqa: E402
from pipeline.models.base import Seq2SeqBase  # noqa: E402
from pipeline.models.transformer import TransformerSeq2Seq  # noqa: E402
from pipeline.overrides import merged  # noqa: E402
from pipeline.stages import build, clean, download, evaluate, tokenizer, train  # noqa: E402
from pipeline.tokens import load_tokenizers  # noqa: E402

CORPORA = {
    "multi30k": {"data": {"corpus": "multi30k", "src": "de", "tgt": "en"}},
    "ko-en": {"data": {"corpus": "custom", "src": "ko", "tgt": "en", "custom": {"train": {
        "src": {"url": str(SHARED / "ko-en" / "open.train.ko.gz")},
        "tgt": {"url": str(SHARED / "ko-en" / "open.train.en.gz")}}}}},
}
GRU = {"tokenize": {"vocab_size": 6000},
       "model": {"arch": "rnn", "emb_dim": 128, "hidden": 256, "dropout": 0.3},
       "train": {"lr": 0.002, "scheduler": "cosine", "warmup_steps": 30, "label_smoothing": 0.1}}
TRANSFORMER = {"model": {"arch": "transformer", "emb_dim": 128, "hidden": 128, "dropout": 0.1,
                         "transformer": {"heads": 4, "ff_dim": 512, "enc_layers": 3, "dec_layers": 3}},
               # cosine over the time budget: a noam warmup would fill a short budget
               "train": {"lr": 0.001, "scheduler": "cosine", "warmup_steps": 30, "label_smoothing": 0.1}}
EMBED = {"word2vec": {"method": "word2vec", "dim": 128, "window": 5, "epochs": 5},
         "glove": {"method": "glove", "dim": 128, "window": 10, "epochs": 15}}


def _linked(base: Path, root: Path, embeddings: Path | None) -> None:
    """A run's own project: the shared data stages' outputs linked in, its own models and checkpoints."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for d in ("raw", "clean", "tokenizer", "dataset"):
        (root / "data" / d).symlink_to(base / "data" / d)
    (root / "metrics").mkdir(exist_ok=True)
    for f in (base / "metrics").glob("*.json"):
        shutil.copy(f, root / "metrics" / f.name)
    if embeddings is not None:
        (root / "data" / "embeddings").symlink_to(embeddings)


def quality(args: argparse.Namespace) -> None:
    base = (args.out / "data").resolve()  # absolute: the runs' projects link to it
    overrides = merged(merged(CORPORA[args.corpus], GRU), {"train": {"epochs": 500, "max_minutes": args.minutes,
                                                                     "experiment": f"bench-embed-{args.corpus}",
                                                                     "checkpoint_every": 100_000}})
    params, paths = scratch_project(base, overrides)
    os.environ["NMT_DATA_MIRROR"] = SHARED.as_uri()
    for stage in (download, clean, tokenizer, build):
        stage.run(params, paths)
    stage_costs = {}
    for method, cfg in EMBED.items():  # the embed stage as its own process, like DVC runs it
        root = args.out / f"embed-{method}"
        scratch_project(root, merged(overrides, {"embed": cfg}))
        (root / "data").mkdir(exist_ok=True)
        for d in ("clean", "tokenizer"):
            if not (root / "data" / d).exists():
                (root / "data" / d).symlink_to(base / "data" / d)
        stage_costs[method] = run_stage("embed", root)
        print(f"embed {method}: {stage_costs[method][0]:.1f} s, peak RSS {stage_costs[method][1] / 2**20:.0f} MiB",
              flush=True)

    runs = [("random", "GRU", {"train": {"embeddings": "random"}}, None)]
    for method in EMBED:
        for freeze in (False, True):
            runs.append((f"{method}, {'frozen' if freeze else 'fine-tuned'}", "GRU",
                         {"embed": EMBED[method], "train": {"freeze_embeddings": freeze}}, method))
    if args.transformer:
        t = merged(TRANSFORMER, {"tokenize": {"vocab_size": 6000}})
        runs += [("random", "Transformer", merged(t, {"train": {"embeddings": "random"}}), None),
                 ("word2vec, rescaled", "Transformer", merged(t, {"embed": EMBED["word2vec"]}), "word2vec"),
                 ("word2vec, unscaled", "Transformer", merged(t, {"embed": EMBED["word2vec"]}), "word2vec")]
    rows = []
    for label, arch, extra, method in runs:
        name = f"{arch}-{label}".replace(", ", "-").replace(" ", "-")
        root = args.out / name
        _linked(base, root, (args.out / f"embed-{method}" / "data" / "embeddings").resolve() if method else None)
        run_params, run_paths = scratch_project(root, merged(overrides, extra))
        own = TransformerSeq2Seq.load_embeddings
        if label.endswith("unscaled"):  # the behaviour before: the trainer's vectors multiplied by sqrt(d) as-is
            TransformerSeq2Seq.load_embeddings = Seq2SeqBase.load_embeddings
        try:
            trained = train.run(run_params, run_paths)
        finally:
            TransformerSeq2Seq.load_embeddings = own
        scores = evaluate.run(run_params, run_paths)
        history = load_checkpoint(run_paths.checkpoints / "last.pt")["state"]["history"]
        rows.append((arch, label, history[0]["valid_loss"], trained["valid_loss"], trained["epochs"],
                     scores["bleu"], scores["chrf"]))
        print(f"{arch} {label}: {rows[-1]}", flush=True)

    print(f"\n{args.corpus}: {params.data.src}→{params.data.tgt}, budget {args.minutes:g} min per run, seed 1\n")
    print("| embed stage | seconds | peak RSS |\n|---|---:|---:|")
    for method, (seconds, peak) in stage_costs.items():
        print(f"| {method} | {seconds:.1f} | {peak / 2**20:.0f} MiB |")
    print("\n| model | initialisation | valid loss, epoch 1 | best valid loss | epochs | BLEU | chrF |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for arch, label, first, best, epochs, bleu, chrf in rows:
        print(f"| {arch} | {label} | {first:.3f} | {best:.3f} | {epochs} | {bleu:.2f} | {chrf:.2f} |")


def _naive_cooccurrence(sentences: list[np.ndarray], window: int) -> tuple[int, float]:
    """The reference: a Python dict per pair. (pairs counted, seconds)"""
    counts: dict[tuple[int, int], float] = defaultdict(float)
    pairs, start = 0, time.perf_counter()
    for s in sentences:
        ids = s.tolist()
        for i, a in enumerate(ids):
            for d in range(1, window + 1):
                if i + d >= len(ids):
                    break
                counts[(a, ids[i + d])] += 1.0 / d
                counts[(ids[i + d], a)] += 1.0 / d
                pairs += 1
    return pairs, time.perf_counter() - start


def _naive_epoch(counts, dim: int, cells: int) -> float:  # counts: a scipy sparse matrix
    """The reference C code's per-cell update, in a Python loop over ``cells`` cells; seconds."""
    coo = counts.tocoo()
    rng = np.random.default_rng(0)
    vocab = counts.shape[0]
    w, wc = (rng.random((vocab, dim)) - 0.5) / dim, (rng.random((vocab, dim)) - 0.5) / dim
    b, bc = np.zeros(vocab), np.zeros(vocab)
    gw, gwc, gb, gbc = np.ones((vocab, dim)), np.ones((vocab, dim)), np.ones(vocab), np.ones(vocab)
    start = time.perf_counter()
    for k in rng.permutation(len(coo.data))[:cells]:
        i, j, x = coo.row[k], coo.col[k], coo.data[k]
        diff = w[i] @ wc[j] + b[i] + bc[j] - math.log(x)
        fdiff = min(1.0, (x / 100.0) ** 0.75) * diff
        g1, g2 = fdiff * wc[j], fdiff * w[i]
        w[i] -= 0.05 * g1 / np.sqrt(gw[i])
        wc[j] -= 0.05 * g2 / np.sqrt(gwc[j])
        b[i] -= 0.05 * fdiff / math.sqrt(gb[i])
        bc[j] -= 0.05 * fdiff / math.sqrt(gbc[j])
        gw[i] += g1 * g1
        gwc[j] += g2 * g2
        gb[i] += fdiff * fdiff
        gbc[j] += fdiff * fdiff
    return time.perf_counter() - start


def speed(args: argparse.Namespace) -> None:
    root = args.out
    if not (root / "data" / "raw").exists():
        make_corpus(root / "data" / "raw", 1_000_000)
    _, paths = scratch_project(root, {
        "data": {"corpus": "custom", "src": "de", "tgt": "en",
                 "custom": {"train": {"src": {"url": "unused"}, "tgt": {"url": "unused"}}}},
        "clean": {"valid_fraction": 0.005, "test_fraction": 0.005}, "tokenize": {"vocab_size": 8000},
        "embed": {"method": "glove", "dim": 128, "window": 10, "epochs": 15}})
    for stage in ("clean", "tokenize"):
        run_stage(stage, root)
    seconds, peak = run_stage("embed", root)
    info = json.loads((paths.embeddings / "info.json").read_text())
    print(f"embed stage, GloVe dim 128, window 10, 15 epochs, both sides: {seconds:.1f} s (target < 600), "
          f"peak RSS {peak / 2**20:.0f} MiB (target < 4096); co-occurrence cells: "
          f"src {info['src_cooccurrence_cells']:,}, tgt {info['tgt_cooccurrence_cells']:,}", flush=True)

    src_tok, _ = load_tokenizers(paths.tokenizer)
    lines = (paths.clean / "train.de").read_text(encoding="utf-8").splitlines()
    sentences = [np.asarray(e.ids) for e in src_tok.encode_batch_fast(lines, add_special_tokens=False)]
    vocab = src_tok.get_vocab_size()
    start = time.perf_counter()
    counts = glove.cooccurrence(sentences, vocab, 10)
    ours_count = time.perf_counter() - start
    pairs = sum(sum(max(0, len(s) - d) for d in range(1, 11)) for s in sentences)
    sample = sentences[:20_000]
    naive_pairs, naive_seconds = _naive_cooccurrence(sample, 10)
    start = time.perf_counter()
    _, _ = glove.train(counts, 128, 1, seed=1, progress=False)
    ours_epoch = time.perf_counter() - start
    cells = 50_000
    naive_cells = cells / _naive_epoch(counts, 128, cells)
    print("\n| what | naive reference | ours | ratio |\n|---|---:|---:|---:|")
    ours_rate, naive_rate = pairs / ours_count, naive_pairs / naive_seconds
    print(f"| co-occurrence counting, window pairs/s | {naive_rate:,.0f} (dict, 20k sentences) | {ours_rate:,.0f} "
          f"({len(sentences):,} sentences, {ours_count:.1f} s) | {ours_rate / naive_rate:.0f}x |")
    print(f"| training, cells/s (one epoch of {counts.nnz:,} cells) | {naive_cells:,.0f} (per-cell loop, {cells:,} "
          f"cells) | {counts.nnz / ours_epoch:,.0f} ({ours_epoch:.1f} s/epoch) | "
          f"{counts.nnz / ours_epoch / naive_cells:.0f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA))
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget per run")
    parser.add_argument("--transformer", action="store_true", help="also the Transformer scaling runs")
    parser.add_argument("--speed", action="store_true", help="GloVe's speed on 1M pairs instead")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    speed(args) if args.speed else quality(args)


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
