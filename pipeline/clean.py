"""Stage ``clean``: normalise and filter the raw pairs, then write train/valid/test splits.

Streaming: pairs are read in chunks, normalised and filtered in a process pool (both cores), and
written as they come back. Exact duplicates are found with a set of 8-byte hashes, so memory grows
by about 80 bytes per kept pair, not by the text. When the corpus has no valid/test split, pairs
are assigned by a seeded hash of their source sentence, so a source never lands in two splits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from pipeline.cli import stage_main
from pipeline.common import PipelineError, stage_outputs
from pipeline.config import SPLITS, Clean, Params, Paths
from pipeline.text import korean_morphemes, normalise, script_ratio, strip_markup

log = logging.getLogger(__name__)

CHUNK = 20_000


def check_pair(src: str, tgt: str, cfg: Clean, langs: tuple[str, str] = ("", "")) -> tuple[str, str, str | None]:
    """Normalise one pair; return it with the name of the filter that rejects it, or None."""
    if cfg.strip_markup:  # before normalise, whose tag filter would take `title <target>` apart
        src, tgt = strip_markup(src), strip_markup(tgt)
    src, tgt = normalise(src, cfg.normalize), normalise(tgt, cfg.normalize)
    if not src or not tgt:
        return src, tgt, "empty"
    if src == tgt:
        return src, tgt, "source_equals_target"
    ns, nt = len(src.split()), len(tgt.split())
    if min(ns, nt) < cfg.min_words:
        return src, tgt, "too_short"
    if max(ns, nt) > cfg.max_words:
        return src, tgt, "too_long"
    if max(ns, nt) / min(ns, nt) > cfg.max_ratio:
        return src, tgt, "length_ratio"
    if cfg.min_script_ratio > 0:
        for text, lang in zip((src, tgt), langs, strict=True):
            ratio = script_ratio(text, lang)
            if ratio is not None and ratio < cfg.min_script_ratio:
                return src, tgt, "wrong_script"
    if cfg.korean_morphemes:  # after the word-count filters, which should count words, not morphemes
        src = korean_morphemes(src)
    return src, tgt, None


def _check_chunk(args: tuple[list[tuple[str, str]], Clean, tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    chunk, cfg, langs = args
    return [check_pair(s, t, cfg, langs) for s, t in chunk]


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\t".join(parts).encode(), digest_size=8).digest()


def _split_of(src: str, cfg: Clean, missing: list[str]) -> str:
    """Where a train pair goes when the corpus lacks the ``missing`` held-out splits."""
    bucket = int.from_bytes(_digest(str(cfg.seed), src), "big") / 2**64
    if "test" in missing and bucket < cfg.test_fraction:
        return "test"
    if "valid" in missing and cfg.test_fraction <= bucket < cfg.test_fraction + cfg.valid_fraction:
        return "valid"
    return "train"


def _read_pairs(raw: Path, split: str, src: str, tgt: str) -> Iterator[tuple[str, str]]:
    with open(raw / f"{split}.{src}", encoding="utf-8") as fs, open(raw / f"{split}.{tgt}", encoding="utf-8") as ft:
        for n, (s, t) in enumerate(itertools.zip_longest(fs, ft), 1):
            if s is None or t is None:
                raise PipelineError(f"{raw}/{split}.{src if s is None else tgt} ends at line {n - 1} but "
                                    "the other side goes on; rerun the download stage")
            yield s.rstrip("\n"), t.rstrip("\n")


def _chunks(pairs: Iterator[tuple[str, str]], cfg: Clean, langs: tuple[str, str]
            ) -> Iterator[tuple[list, Clean, tuple[str, str]]]:
    while chunk := list(itertools.islice(pairs, CHUNK)):
        yield chunk, cfg, langs


def _raw_splits(paths: Paths) -> dict[str, dict]:
    """The splits the download stage wrote, with what it recorded of each."""
    manifest_path = paths.raw / "manifest.json"
    if not manifest_path.exists():
        raise PipelineError(f"{manifest_path} not found; run the download stage first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    raw_splits = {s: manifest["splits"][s] for s in SPLITS if s in manifest["splits"]}
    if "train" not in raw_splits:
        raise PipelineError(f"{manifest_path}: no train split; rerun the download stage")
    return raw_splits


def _unique(results: Iterator[tuple[str, str, str | None]], seen: set[bytes], removed: Counter[str]
            ) -> Iterator[tuple[str, str]]:
    """The pairs that passed every filter and were not seen before; counts what was removed."""
    for s, t, reason in results:
        if reason is None:
            key = _digest(s, t)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            removed[reason] += 1
        else:
            yield s, t


def run(params: Params, paths: Paths) -> dict:
    """Clean data/raw/ into data/clean/{train,valid,test}.{src,tgt} and metrics/clean.json."""
    cfg, src, tgt = params.clean, params.data.src, params.data.tgt
    raw_splits = _raw_splits(paths)
    missing = [s for s in SPLITS if s not in raw_splits]
    removed: Counter[str] = Counter()
    dropped = sum(info.get("dropped_rows", 0) for info in raw_splits.values())  # table rows with no text to keep
    if dropped:
        removed["blank_or_short_table_row"] = dropped
    kept: Counter[str] = Counter()
    seen: set[bytes] = set()
    train_sources: set[bytes] = set()
    held_out: dict[str, list[tuple[str, str]]] = {"valid": [], "test": []}

    with stage_outputs() as outputs, ExitStack() as stack:
        out = outputs.dir(paths.clean)
        files = {(split, lang): stack.enter_context(open(out / f"{split}.{lang}", "w", encoding="utf-8"))
                 for split in SPLITS for lang in (src, tgt)}

        def write(split: str, s: str, t: str) -> None:
            files[(split, src)].write(s + "\n")
            files[(split, tgt)].write(t + "\n")
            kept[split] += 1

        workers = min(2, os.cpu_count() or 1)
        pool = stack.enter_context(mp.get_context("spawn").Pool(workers)) if workers > 1 else None
        for raw_split in raw_splits:
            chunks = _chunks(_read_pairs(paths.raw, raw_split, src, tgt), cfg, (src, tgt))
            results = pool.imap(_check_chunk, chunks) if pool else map(_check_chunk, chunks)
            for s, t in _unique(itertools.chain.from_iterable(results), seen, removed):
                split = _split_of(s, cfg, missing) if raw_split == "train" and missing else raw_split
                if split == "train":
                    train_sources.add(_digest(s))
                    write("train", s, t)
                else:  # held out until every train source is known
                    held_out[split].append((s, t))
        for split, pairs in held_out.items():
            for s, t in pairs:
                if _digest(s) in train_sources:
                    removed[f"{split}_source_in_train"] += 1
                else:
                    write(split, s, t)
        total = sum(kept.values()) + sum(removed.values())
        for split in SPLITS:
            if kept[split] == 0:
                raise PipelineError(f"no {split} pairs left after cleaning {total} pairs "
                                    f"(removed: {dict(removed)}); loosen the clean section of params.yaml")
        report = {"input_pairs": total, "kept_pairs": sum(kept.values()), "splits": dict(kept),
                  "removed": {k: removed[k] for k in sorted(removed)}}
        outputs.json(paths.metrics / "clean.json", report)
    log.info("clean: kept %d of %d pairs (%s); removed %s", report["kept_pairs"], total,
             ", ".join(f"{k} {v}" for k, v in kept.items()), dict(removed) or "nothing")
    return report


def main() -> None:
    stage_main("clean", run)


if __name__ == "__main__":
    main()
