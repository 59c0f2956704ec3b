"""Data stages at scale: clean + tokenize + build on 1,000,000 pairs, time and peak memory; language ID's cost.

Builds a corpus of N pairs by repeating Multi30k (de-en, from ../shared/corpora) with light random
perturbations (dropped, swapped and repeated words, numbers, case), so that almost every pair is
distinct, then runs each stage as its own process, the way DVC runs it, sampling the resident
memory of the whole process tree. Baselines measured in the same run: cleaning in one process
instead of the pool, per-line ``encode`` instead of the batch API, and the clean stage again with
language identification off (``clean.language_id``: 0), the cost of language ID on the same pairs.

    python bench/data_stages.py                  # 1,000,000 pairs
    python bench/data_stages.py --pairs 100000   # quicker

Targets (2-core machine): clean + tokenize + build under 180 s, peak RSS under 2 GB; language ID adds at most
60 s to the clean stage on 1,000,000 pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"tokenize": "tokenizer"}  # stage -> module (pipeline/tokenize.py would shadow the standard library)
SHARED = ROOT.parent / "shared" / "corpora" / "multi30k"
sys.path.insert(0, str(ROOT))


def perturb(words: list[str], rng: random.Random) -> list[str]:
    words = list(words)
    op = rng.randrange(5)
    if op == 0 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif op == 1 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif op == 2:
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    elif op == 3:
        words.insert(rng.randrange(len(words) + 1), str(rng.randrange(1000)))
    else:
        words[0] = words[0].lower() if words[0][:1].isupper() else words[0].capitalize()
    return words


def scratch_project(root: Path, overrides: dict) -> tuple:
    """A project at ``root`` whose params.yaml is the repository's with ``overrides``: (Params, Paths)."""
    from pipeline.config import Paths, load_params
    from pipeline.overrides import merged

    root.mkdir(parents=True, exist_ok=True)
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return load_params(root / "params.yaml"), Paths(root)


def make_corpus(raw: Path, pairs: int, seed: int = 0) -> None:
    from pipeline import raw as layout

    de, en = (gzip.decompress((SHARED / f"train.{x}.gz").read_bytes()).decode().splitlines() for x in ("de", "en"))
    rng = random.Random(seed)

    def generated():
        for n in range(pairs):
            i = n % len(de)
            s, t = de[i].split(), en[i].split()
            if n >= len(de):
                s, t = perturb(s, rng), perturb(t, rng)
            yield " ".join(s), " ".join(t)

    lines = layout.write_pairs(raw, "train", "bench", "de", "en", generated())
    layout.write_manifest(raw, "de", "en", {"train": [{"name": "bench", "lines": lines}]}, [])


class PeakRSS:
    """``with PeakRSS(pid) as rss:`` samples the resident memory of a process and its children every 50 ms;
    ``rss.peak`` is the highest sum seen (bytes)."""

    def __init__(self, pid: int):
        self.process, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                children = self.process.children(recursive=True)
                self.peak = max(self.peak, self.process.memory_info().rss + sum(c.memory_info().rss for c in children))
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def run_stage(stage: str, root: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes, summed over the process and its children)."""
    start = time.perf_counter()
    module = f"pipeline.stages.{MODULES.get(stage, stage)}"
    proc = subprocess.Popen([sys.executable, "-m", module, "--root", str(root), "--params",
                             str(root / "params.yaml")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    with PeakRSS(proc.pid) as rss:
        _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{stage} failed:\n{err}")
    return time.perf_counter() - start, rss.peak


def baselines(root: Path, n: int = 100_000) -> dict:
    """Same-run baselines on the first n pairs: one-process cleaning, per-line encoding."""
    from tokenizers import Tokenizer

    from pipeline import raw
    from pipeline.config import Clean
    from pipeline.stages.clean import CHUNK, check_chunk

    de, en = (f.read_text(encoding="utf-8").splitlines()[:n] for f in raw.files(root / "data" / "raw", "train",
                                                                                 "bench", "de", "en"))
    chunks = [(list(zip(de[i:i + CHUNK], en[i:i + CHUNK], strict=True)), Clean(), ("de", "en"), (0.0, 0.0))
              for i in range(0, n, CHUNK)]
    t = time.perf_counter()
    for c in chunks:
        check_chunk(c)
    serial = time.perf_counter() - t
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(check_chunk, chunks[:1])  # start-up excluded
        t = time.perf_counter()
        pool.map(check_chunk, chunks)
        pooled = time.perf_counter() - t
    tok = Tokenizer.from_file(str(root / "data" / "tokenizer" / "src.json"))
    t = time.perf_counter()
    for line in de:
        tok.encode(line, add_special_tokens=False)
    per_line = time.perf_counter() - t
    t = time.perf_counter()
    tok.encode_batch_fast(de, add_special_tokens=False)
    batched = time.perf_counter() - t
    return {"clean_1proc_pairs_s": n / serial, "clean_pool_pairs_s": n / pooled, "clean_speedup": serial / pooled,
            "encode_per_line_s": n / per_line, "encode_batch_s": n / batched, "encode_speedup": per_line / batched}


def _clean_without_language_id(root: Path, params: dict) -> float:
    """The clean stage again on the same data/raw/, language ID off: its seconds (params.yaml put back after)."""
    on = (root / "params.yaml").read_text()
    off = yaml.safe_load(on)
    off["clean"]["language_id"] = {"src": 0.0, "tgt": 0.0}
    (root / "params.yaml").write_text(yaml.safe_dump(off))
    try:
        return run_stage("clean", root)[0]
    finally:
        (root / "params.yaml").write_text(on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_corpus(root / "data" / "raw", args.pairs)
        print(f"corpus: {args.pairs:,} pairs generated in {time.perf_counter() - t:.1f}s")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] |= {"corpus": "multi30k", "src": "de", "tgt": "en"}  # unused: data/raw is made here
        params["tokenize"]["vocab_size"] = args.vocab_size
        params["clean"] |= {"valid_fraction": 0.005, "test_fraction": 0.005}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        results = {}
        for stage in ("clean", "tokenize", "build"):
            seconds, peak = run_stage(stage, root)
            results[stage] = (seconds, peak)
            rate = args.pairs / seconds
            print(f"{stage:9s} {seconds:7.1f}s  {rate:>10,.0f} pairs/s  peak RSS {peak / 2**20:7.0f} MiB")
        total = sum(s for s, _ in results.values())
        peak = max(p for _, p in results.values())
        report = json.loads((root / "metrics" / "clean.json").read_text())
        print(f"total     {total:7.1f}s  (target < 180 s)   peak RSS {peak / 2**20:.0f} MiB (target < 2048 MiB)")
        print(f"kept {report['kept_pairs']:,} of {report['input_pairs']:,} pairs; removed {report['removed']}")
        without = _clean_without_language_id(root, params)
        with_lid = results["clean"][0]
        print(f"clean without language ID: {without:.1f}s; language ID adds {with_lid - without:.1f}s "
              f"({with_lid / without:.2f}x; target <= 60 s on 1,000,000 pairs); it removed "
              f"{sum(v for k, v in report['removed'].items() if k.startswith('language_id'))} pairs")
        base = baselines(root)
        print(f"baseline clean, 1 process: {base['clean_1proc_pairs_s']:,.0f} pairs/s; pool of 2: "
              f"{base['clean_pool_pairs_s']:,.0f} pairs/s ({base['clean_speedup']:.2f}x)")
        print(f"baseline encode, per line: {base['encode_per_line_s']:,.0f} lines/s; batch API: "
              f"{base['encode_batch_s']:,.0f} lines/s ({base['encode_speedup']:.2f}x)")


if __name__ == "__main__":
    main()
