"""Data that streams: clean, tokenize and build a synthetic corpus of N pairs, then the first 200 training
steps, each stage's time and peak RSS (whole process tree), for N = 1M and 10M by default.

Training reads its batches from the length-bucketed shards on disk (``pipeline.dataset.Shards``): its memory
should follow the batch and the table of batches, not the corpus (the target: under 2 GB, level from 1M to 10M
pairs). The corpus is bench/data_stages.py's (Multi30k repeated with random perturbations); the model is the
default Transformer block at d 256 with random embeddings.

Training runs once per allocator setting on each corpus: glibc's malloc with its defaults, with ``LEAN`` below,
and tcmalloc (and jemalloc) preloaded where the distribution's package is installed. The difference is memory
the allocator keeps after the step freed it, not data: see docs/scaling.md.

    python bench/streaming.py                    # 1M and 10M pairs, every allocator: about 70 minutes on 2 cores
    python bench/streaming.py --pairs 1000000 10000000 --allocators "default allocator" tcmalloc LEAN  # 42 min
    python bench/streaming.py --pairs 200000 --steps 20  # the plumbing, quickly
    python bench/streaming.py --pairs 10000000 --allocators tcmalloc --recompute no yes  # train.recompute_layers
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import PeakRSS, make_corpus, run_stage  # noqa: E402

from pipeline import allocator  # noqa: E402

# glibc's own tunables (no code of ours): hand freed memory back to the system at once, two malloc arenas
LEAN = {"MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "2"}
# other allocators, preloaded where the distribution's package is installed (Debian: libjemalloc2,
# libtcmalloc-minimal4); the allocators PyTorch's CPU performance guide suggests
PRELOADS = {"jemalloc": ctypes.util.find_library("jemalloc"), "tcmalloc": allocator.find_tcmalloc()}


def allocators() -> dict[str, dict[str, str]]:
    """Each allocator setting to train under: its name and the whole environment of the run."""
    # NMT_ALLOCATOR=system: else the train stage would preload tcmalloc itself (pipeline/allocator.py)
    default = {k: v for k, v in os.environ.items() if k not in LEAN and k != "LD_PRELOAD"} | {"NMT_ALLOCATOR": "system"}
    settings = {"default allocator": default, "LEAN": default | LEAN}
    settings |= {name: default | {"LD_PRELOAD": path} for name, path in PRELOADS.items() if path}
    if "tcmalloc" in settings:  # gperftools' own setting: give freed spans back to the system at once
        settings["tcmalloc, decommit"] = settings["tcmalloc"] | {"TCMALLOC_AGGRESSIVE_DECOMMIT": "true"}
    return settings


def train_until(root: Path, steps: int, env: dict[str, str]) -> tuple[float, int]:
    """Run the train stage from scratch, in the environment ``env``, until its step checkpoint ``steps`` exists;
    (seconds, peak RSS in bytes)."""
    shutil.rmtree(root / "checkpoints", ignore_errors=True)  # else the second run resumes the first
    target = root / "checkpoints" / f"step-{steps:08d}.pt"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.stages.train", "--root",
                             str(root), "--params", str(root / "params.yaml")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    with PeakRSS(proc.pid) as rss:
        try:
            while not target.exists():
                if proc.poll() is not None:
                    raise SystemExit(f"train ended (exit {proc.returncode}) before step {steps}; see "
                                     f"{root}/logs/train.log")
                time.sleep(0.2)
            seconds = time.perf_counter() - start
        finally:
            proc.kill()
            proc.wait()
    return seconds, rss.peak


def _label(allocator_name: str, recompute: str) -> str:
    return allocator_name + (", layers recomputed" if recompute == "yes" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep the scratch projects under this folder")
    settings = allocators()
    parser.add_argument("--allocators", nargs="+", choices=list(settings), default=list(settings),
                        help="train under these allocator settings only, in this order")
    parser.add_argument("--recompute", nargs="+", choices=["no", "yes"], default=["no"],
                        help="train.recompute_layers of each training: no, yes, or both (no yes)")
    args = parser.parse_args()
    runs = [(name, recompute) for name in args.allocators for recompute in args.recompute]
    rows = []
    for n in args.pairs:
        root = (args.keep / f"pairs-{n}") if args.keep else Path(tempfile.mkdtemp(prefix=f"bench-stream-{n}-"))
        root.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        make_corpus(root / "data" / "raw", n)
        print(f"{n:,} pairs generated in {time.perf_counter() - tic:.0f} s", flush=True)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] |= {"corpus": "custom", "src": "de", "tgt": "en",
                           "custom": {"train": {"src": {"url": "unused"}, "tgt": {"url": "unused"}}}}
        params["clean"] |= {"valid_fraction": 0.001, "test_fraction": 0.001}
        params["tokenize"] |= {"vocab_size": 8000}
        params["embed"] |= {"method": "none"}
        params["model"] |= {"arch": "transformer", "emb_dim": 256, "hidden": 256}
        params["train"] |= {"embeddings": "random", "epochs": 1, "checkpoint_every": args.steps,
                            "keep_checkpoints": 2, "experiment": "bench-streaming"}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in ("clean", "tokenize", "embed", "build"):  # embed: method none, it only says so
            seconds, peak = run_stage(stage, root)
            rows.append((n, stage, seconds, peak))
            print(f"{n:>11,} {stage:9s} {seconds:7.1f} s  peak RSS {peak / 2**20:7.0f} MiB", flush=True)
        # the first runs on a cold page cache, the others on a warm one: that changes the seconds a little, not the
        # peak RSS (the shards are mapped either way)
        for name, recompute in runs:
            params["train"]["recompute_layers"] = recompute == "yes"
            (root / "params.yaml").write_text(yaml.safe_dump(params))
            seconds, peak = train_until(root, args.steps, settings[name])
            label = _label(name, recompute)
            rows.append((n, f"train, {args.steps} steps, {label}", seconds, peak))
            print(f"{n:>11,} train ({label}) {seconds:7.1f} s  peak RSS {peak / 2**20:7.0f} MiB", flush=True)
        dataset = sum(f.stat().st_size for f in (root / "data" / "dataset").rglob("*") if f.is_file())
        print(f"{n:>11,} dataset on disk: {dataset / 2**20:,.0f} MiB", flush=True)
        if not args.keep:
            shutil.rmtree(root)
    print("\n| pairs | stage | seconds | peak RSS (MiB) |\n|---:|---|---:|---:|")
    for n, stage, seconds, peak in rows:
        print(f"| {n:,} | {stage} | {seconds:.1f} | {peak / 2**20:,.0f} |")
    for label in (_label(name, recompute) for name, recompute in runs):
        trained = [(n, peak) for n, stage, _, peak in rows if stage.endswith(f"steps, {label}")]
        worst = max(peak for _, peak in trained)
        growth = trained[-1][1] / trained[0][1]
        verdict = "met" if worst < 2**31 else "MISSED"
        print(f"training's peak RSS, {label}: at most {worst / 2**20:,.0f} MiB (target < 2,048 MiB: {verdict}); "
              f"{trained[-1][0]:,} pairs against {trained[0][0]:,}: {growth:.2f}x")
    by_stage = {(n, stage): (seconds, peak) for n, stage, seconds, peak in rows}
    for n in args.pairs:
        for name in args.allocators if set(args.recompute) == {"no", "yes"} else []:
            (t0, m0), (t1, m1) = (by_stage[(n, f"train, {args.steps} steps, {_label(name, r)}")] for r in ("no", "yes"))
            print(f"{n:,} pairs, {name}: layers recomputed take {t1 / t0:.2f}x the time and {m1 / m0:.2f}x the memory")


if __name__ == "__main__":
    main()
