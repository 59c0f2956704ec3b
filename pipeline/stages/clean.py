"""Stage ``clean``: normalise and filter the train pairs, then write train/valid/test splits.

The held-out splits a corpus comes with (registry, HF, custom) are its official ones and stay as they
are, every line: ``data/clean/original/{valid,test}.*`` are byte copies of what was downloaded (what
evaluation translates and scores against), and ``data/clean/{valid,test}.*`` the same lines prepared as
the translator prepares its input (for the valid loss). A train pair whose source occurs in one of them
is removed *from train* and counted (``train_source_in_valid``/``_test``).

Streaming: train pairs are read in chunks, normalised and filtered in a process pool (both cores), and
written as they come back. Exact duplicates are found with a set of 8-byte hashes, so memory grows
by about 80 bytes per kept pair, not by the text. When the corpus has no valid/test split, one is
carved out of train: pairs are assigned by a seeded hash of their source sentence, so a source never
lands in two splits; a carved split is filtered like train, and its original lines are kept beside it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs
from pipeline.config import SPLITS, Clean, Params, Paths
from pipeline.text import script_ratio

log = logging.getLogger(__name__)

CHUNK = 20_000


def check_pair(src: str, tgt: str, cfg: Clean, langs: tuple[str, str] = ("", "")) -> tuple[str, str, str | None]:
    """Normalise one pair; return it with the name of the filter that rejects it, or None."""
    prep = cfg.preprocessing
    src, tgt = prep.text(src), prep.text(tgt)
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
    return prep.morphemes(src), tgt, None  # morphemes after the word-count filters, which count words


def check_chunk(args: tuple[list[tuple[str, str]], Clean, tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    chunk, cfg, langs = args
    return [check_pair(s, t, cfg, langs) for s, t in chunk]


def _chunk_with_originals(args: tuple[list[tuple[str, str]], Clean, tuple[str, str]]) -> list[tuple]:
    """``check_chunk``, each result with its pair as read (what a carved held-out split keeps)."""
    return [(*checked, pair) for checked, pair in zip(check_chunk(args), args[0], strict=True)]


def _chunk_without_originals(args: tuple[list[tuple[str, str]], Clean, tuple[str, str]]) -> list[tuple]:
    """``check_chunk`` when nothing is carved: no raw text travels back from the pool for nothing."""
    return [(*checked, None) for checked in check_chunk(args)]


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


def _unique(results: Iterator[tuple], seen: set[bytes], removed: Counter[str], held_out: dict[bytes, str]
            ) -> Iterator[tuple[str, str, tuple[str, str] | None]]:
    """The pairs that passed every filter, were not seen before and whose source is in no held-out split of
    the corpus, each with its original; counts what was removed."""
    for s, t, reason, original in results:
        if reason is None and (split := held_out.get(_digest(s))):
            reason = f"train_source_in_{split}"
        if reason is None:
            key = _digest(s, t)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            removed[reason] += 1
        else:
            yield s, t, original


def _copy_held_out(paths: Paths, out: Path, split: str, src: str, tgt: str, cfg: Clean) -> list[bytes]:
    """A held-out split of the corpus: the original files copied byte for byte, and every line prepared as
    the translator prepares its input. Returns the digest of each prepared source, line by line."""
    prep, sources = cfg.preprocessing, []
    for lang in (src, tgt):
        shutil.copyfile(paths.raw / f"{split}.{lang}", out / "original" / f"{split}.{lang}")
    with open(out / f"{split}.{src}", "w", encoding="utf-8") as fs, \
            open(out / f"{split}.{tgt}", "w", encoding="utf-8") as ft:
        for s, t in _read_pairs(paths.raw, split, src, tgt):
            s = prep.source(s)
            fs.write(s + "\n")
            ft.write(prep.text(t) + "\n")
            sources.append(_digest(s))
    return sources


def run(params: Params, paths: Paths) -> dict:
    """Clean data/raw/ into data/clean/{train,valid,test}.{src,tgt}, data/clean/original/ and metrics/clean.json."""
    cfg, src, tgt = params.clean, params.data.src, params.data.tgt
    raw_splits = _raw_splits(paths)
    missing = [s for s in SPLITS if s not in raw_splits]
    removed: Counter[str] = Counter()
    dropped = sum(info.get("dropped_rows", 0) for info in raw_splits.values())  # table rows with no text to keep
    if dropped:
        removed["blank_or_short_table_row"] = dropped
    kept: Counter[str] = Counter()
    seen: set[bytes] = set()
    carved: dict[str, list[tuple[str, str, tuple[str, str]]]] = {split: [] for split in missing}

    with stage_outputs() as outputs, ExitStack() as stack:
        out = outputs.dir(paths.clean)
        (out / "original").mkdir()
        held_out: dict[bytes, str] = {}  # source digest -> the corpus's held-out split it is in
        for split in ("test", "valid"):  # a train source in both is counted as a test source
            if split in raw_splits:
                sources = _copy_held_out(paths, out, split, src, tgt, cfg)
                kept[split] = len(sources)
                held_out = dict.fromkeys(sources, split) | held_out
        files = {lang: stack.enter_context(open(out / f"train.{lang}", "w", encoding="utf-8")) for lang in (src, tgt)}
        chunks = _chunks(_read_pairs(paths.raw, "train", src, tgt), cfg, (src, tgt))
        first = list(itertools.islice(chunks, 2))
        chunks = itertools.chain(first, chunks)
        # two processes only for a corpus of two chunks or more: starting them (spawn, each importing the
        # stage) costs a second of CPU, more than one chunk takes on its own
        workers = min(2, os.cpu_count() or 1) if len(first) > 1 else 1
        pool = stack.enter_context(mp.get_context("spawn").Pool(workers)) if workers > 1 else None
        check = _chunk_with_originals if missing else _chunk_without_originals
        results = pool.imap(check, chunks) if pool else map(check, chunks)
        for s, t, original in _unique(itertools.chain.from_iterable(results), seen, removed, held_out):
            split = _split_of(s, cfg, missing) if missing else "train"
            if split == "train":
                files[src].write(s + "\n")
                files[tgt].write(t + "\n")
                kept["train"] += 1
            else:  # a carved split is written whole at the end
                carved[split].append((s, t, original))
        for split, pairs in carved.items():
            _write_carved(out, split, src, tgt, pairs)
            kept[split] = len(pairs)
        total = sum(kept.values()) + sum(removed.values())
        for split in SPLITS:
            if kept[split] == 0:
                if split != "train" and split in raw_splits:
                    raise PipelineError(f"the corpus's own {split} split is empty; give it sentences, or leave it "
                                        f"out to carve one out of train")
                if not removed:
                    fraction = getattr(cfg, f"{split}_fraction")
                    raise PipelineError(f"{total} pairs are too few to carve a {split} split out of train "
                                        f"(clean.{split}_fraction: {fraction}); use more pairs, or give the corpus "
                                        f"its own {split} split")
                raise PipelineError(f"no {split} pairs left after cleaning {total} pairs "
                                    f"(removed: {dict(removed)}); loosen the clean section of params.yaml")
        report = {"input_pairs": total, "kept_pairs": sum(kept.values()), "splits": {s: kept[s] for s in SPLITS},
                  "held_out": {split: "corpus" if split in raw_splits else "carved from train" for split in SPLITS[1:]},
                  "removed": {k: removed[k] for k in sorted(removed)}}
        outputs.json(paths.metrics / "clean.json", report)
    log.info("clean: kept %d of %d pairs (%s); removed %s", report["kept_pairs"], total,
             ", ".join(f"{k} {v}" for k, v in kept.items()), dict(removed) or "nothing")
    return report


def _write_carved(out: Path, split: str, src: str, tgt: str, pairs: list[tuple[str, str, tuple[str, str]]]) -> None:
    """A split carved out of train: the cleaned pairs, and their lines as read in ``original/``."""
    for directory, pick in ((out, lambda p: (p[0], p[1])), (out / "original", lambda p: p[2])):
        with open(directory / f"{split}.{src}", "w", encoding="utf-8") as fs, \
                open(directory / f"{split}.{tgt}", "w", encoding="utf-8") as ft:
            for pair in pairs:
                s, t = pick(pair)
                fs.write(s + "\n")
                ft.write(t + "\n")


def main() -> None:
    stage_main("clean", run)


if __name__ == "__main__":
    run_command(main)
