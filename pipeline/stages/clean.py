"""Stage ``clean``: normalise and filter every train source, merge them, and write train/valid/test splits.

The held-out sets of the run (a corpus's own valid and test splits, ``data.valid``, each of ``data.test``) are
official and stay as they are, every line: ``data/clean/original/tests/<name>.*`` and ``original/valid.*``
are byte copies of what was downloaded (what evaluation translates and scores against), the first test set
also as ``original/test.*`` (the one promotion judges on), and ``data/clean/{valid,test}.*`` the same lines
prepared as the translator prepares its input (for the valid loss). A train pair whose source occurs in any
held-out set is removed *from train* and counted per set (``train_source_in_valid``,
``train_source_in_test:<name>``).

The train sources are read one after the other, in chunks, normalised and filtered in a process pool (both
cores): rules (empty, copies, length, ratio, script), then language identification (``pipeline.langid``, the
slowest, on what the rules left). Exact duplicates are found with a dict of 8-byte hashes (about 100 bytes a
kept pair, not the text); a pair already kept from an *earlier* source counts as ``duplicate_across_sources``.
Each source then gets its weight (2: every pair twice; 0.5: a seeded half) and its tag (a token before each
of its source sentences). ``metrics/clean.json`` has a row per source (read, kept, removed per filter, written
to train), and ``data/clean/sources.json`` the provenance of every source, for the model card.

When the run has no valid or no test set, one is carved out of train: pairs are assigned by a seeded hash of
their source sentence, so a source never lands in two splits; a carved split is filtered like train, and its
original lines are kept beside it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from pipeline import langid, raw
from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import SPLITS, Clean, Params, Paths
from pipeline.text import script_ratio

log = logging.getLogger(__name__)

CHUNK = 20_000
Chunk = tuple[list[tuple[str, str]], Clean, tuple[str, str], tuple[float, float]]


def check_pair(src: str, tgt: str, cfg: Clean, langs: tuple[str, str] = ("", ""),
               lid: tuple[float, float] = (0.0, 0.0)) -> tuple[str, str, str | None]:
    """Normalise one pair; return it with the name of the filter that rejects it, or None. ``lid``: each
    side's language-ID threshold (0: not checked)."""
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
    for side, text, lang, threshold in zip(("src", "tgt"), (src, tgt), langs, lid, strict=True):
        if threshold > 0 and langid.probability(text, lang) < threshold:
            return src, tgt, f"language_id_{side}"
    return prep.morphemes(src), tgt, None  # morphemes after the word-count filters, which count words


def check_chunk(args: Chunk) -> list[tuple[str, str, str | None]]:
    chunk, cfg, langs, lid = args
    return [check_pair(s, t, cfg, langs, lid) for s, t in chunk]


def _chunk_with_originals(args: Chunk) -> list[tuple]:
    """``check_chunk``, each result with its pair as read (what a carved held-out split keeps)."""
    return [(*checked, pair) for checked, pair in zip(check_chunk(args), args[0], strict=True)]


def _chunk_without_originals(args: Chunk) -> list[tuple]:
    """``check_chunk`` when nothing is carved: no raw text travels back from the pool for nothing."""
    return [(*checked, None) for checked in check_chunk(args)]


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\t".join(parts).encode(), digest_size=8).digest()


def _fraction(*parts: str) -> float:
    """A seeded hash of ``parts`` as a number in [0, 1): the same pair always lands on the same side."""
    return int.from_bytes(_digest(*parts), "big") / 2**64


def _split_of(src: str, cfg: Clean, missing: list[str]) -> str:
    """Where a train pair goes when the run lacks the ``missing`` held-out splits."""
    bucket = _fraction(str(cfg.seed), src)
    if "test" in missing and bucket < cfg.test_fraction:
        return "test"
    if "valid" in missing and cfg.test_fraction <= bucket < cfg.test_fraction + cfg.valid_fraction:
        return "valid"
    return "train"


def copies(weight: float, seed: int, src: str, tgt: str) -> int:
    """How many times a kept pair of a source of ``weight`` is written: the whole part, and once more with the
    probability of the fraction (by a seeded hash of the pair, so that a rerun writes the same)."""
    whole = int(weight)
    return whole + int(weight > whole and _fraction(f"w{seed}", src, tgt) < weight - whole)


def thresholds(cfg: Clean, langs: tuple[str, str]) -> tuple[float, float]:
    """Each side's language-ID threshold; 0 for a side that is off or whose language lid.176 lacks."""
    out = []
    for lang, threshold in zip(langs, (cfg.language_id.src, cfg.language_id.tgt), strict=True):
        if threshold and not langid.known(lang):
            log.warning("language ID: lid.176 does not know '%s'; that side is not checked", lang)
            threshold = 0.0
        out.append(threshold)
    return out[0], out[1]


def _copy_held_out(paths: Paths, role: str, name: str, originals: list[Path], prepared: Path | None, cfg: Clean,
                   langs: tuple[str, str]) -> list[bytes]:
    """A held-out set: the files as downloaded copied byte for byte to each ``<original>.<lang>``, and every
    line prepared as the translator prepares its input in ``<prepared>.<lang>``. Returns the digest of each
    prepared source, line by line."""
    prep, sources = cfg.preprocessing, []
    for original in originals:
        original.parent.mkdir(parents=True, exist_ok=True)
        for lang, f in zip(langs, raw.files(paths.raw, role, name, *langs), strict=True):
            shutil.copyfile(f, original.with_name(f"{original.name}.{lang}"))
    with ExitStack() as stack:
        out = [stack.enter_context(open(prepared.with_name(f"{prepared.name}.{lang}"), "w", encoding="utf-8"))
               for lang in langs] if prepared else []
        for s, t in raw.read_pairs(paths.raw, role, name, *langs):
            s = prep.source(s)
            if out:
                out[0].write(s + "\n")
                out[1].write(prep.text(t) + "\n")
            sources.append(_digest(s))
    return sources


class Merged:
    """The train split as the sources' checked pairs are written into it: held-out sources, duplicates within
    and across sources, weights and tags, with the report's row of each source."""

    def __init__(self, files: list[IO[str]], held_out: dict[bytes, str], carve: list[str], cfg: Clean):
        self.files, self.held_out, self.carve, self.cfg = files, held_out, carve, cfg
        self.seen: dict[bytes, int] = {}  # pair digest -> the source that kept it first
        self.carved: dict[str, list[tuple[str, str, tuple[str, str]]]] = {split: [] for split in carve}
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, index: int, info: dict, results: Iterable[tuple]) -> None:
        removed: Counter[str] = Counter()
        if info.get("dropped_rows"):  # table rows the download stage found no text in
            removed["blank_or_short_table_row"] = info["dropped_rows"]
        kept = written = 0
        tag, weight = info.get("tag"), info.get("weight", 1.0)
        for s, t, reason, original in results:
            if reason is None and (held := self.held_out.get(_digest(s))):
                reason = f"train_source_in_{held}"
            if reason is None:
                key = _digest(s, t)
                first = self.seen.get(key)
                if first is None:
                    self.seen[key] = index
                else:
                    reason = "duplicate" if first == index else "duplicate_across_sources"
            if reason:
                removed[reason] += 1
                continue
            kept += 1
            split = _split_of(s, self.cfg, self.carve) if self.carve else "train"
            if split != "train":  # a carved split is written whole at the end
                self.carved[split].append((s, t, original))
                continue
            for _ in range(copies(weight, self.cfg.seed, s, t)):
                self.files[0].write((f"{tag} {s}" if tag else s) + "\n")
                self.files[1].write(t + "\n")
                written += 1
        self.rows[info["name"]] = {"input": kept + sum(removed.values()), "kept": kept, "train_pairs": written,
                                   "removed": {k: removed[k] for k in sorted(removed)}}


def _held_out(paths: Paths, manifest: dict, out: Path, cfg: Clean, langs: tuple[str, str]
              ) -> tuple[dict[bytes, str], dict[str, int]]:
    """Copy every held-out set; returns source digest -> the set it is in, and each set's line count."""
    held_out: dict[bytes, str] = {}
    counts: dict[str, int] = {}
    for i, info in enumerate(manifest["sources"].get("test", [])):  # the first test set is the judged one
        originals = [out / "original" / "tests" / info["name"]] + ([out / "original" / "test"] if i == 0 else [])
        sources = _copy_held_out(paths, "test", info["name"], originals, out / "test" if i == 0 else None, cfg,
                                 langs)
        counts[f"test:{info['name']}"] = len(sources)
        held_out = dict.fromkeys(sources, f"test:{info['name']}") | held_out  # in two sets: counted in the first
    for info in manifest["sources"].get("valid", []):
        sources = _copy_held_out(paths, "valid", info["name"], [out / "original" / "valid"], out / "valid", cfg,
                                 langs)
        counts["valid"] = len(sources)
        held_out = dict.fromkeys(sources, "valid") | held_out  # in a test set too: counted as a test source
    for name, n in counts.items():
        if n == 0:
            raise PipelineError(f"the held-out set {name} is empty; give it sentences, or leave it out "
                                "(a valid or test split is then carved out of train)")
    return held_out, counts


def train_sources(paths: Paths, manifest: dict) -> list[tuple[Path, dict]]:
    """Every train source with the folder it is in: data/raw's, then the back-translated pairs when that
    stage made them (``data/backtranslated``; a marker ``off.json`` when it is off)."""
    sources = [(paths.raw, info) for info in manifest["sources"]["train"]]
    if (paths.backtranslated / "manifest.json").exists():
        synthetic = raw.read_manifest(paths.backtranslated)["sources"]["train"]
        sources += [(paths.backtranslated, info) for info in synthetic]
    return sources


def _checked(sources: list[tuple[Path, dict]], cfg: Clean, langs: tuple[str, str], lid: tuple[float, float],
             check: Callable, stack: ExitStack) -> Iterator[tuple[int, dict, Iterator[tuple]]]:
    """Each train source's checked pairs, in order, from one process pool for all of them."""
    total = sum(info["lines"] for _, info in sources)
    # two processes only for two chunks or more: starting them (spawn, each importing the stage) costs a second
    # of CPU, more than one chunk takes on its own
    workers = min(2, os.cpu_count() or 1) if total > CHUNK else 1
    pool = stack.enter_context(mp.get_context("spawn").Pool(workers)) if workers > 1 else None
    for index, (folder, info) in enumerate(sources):
        pairs = raw.read_pairs(folder, "train", info["name"], *langs)
        chunks = iter(lambda p=pairs: list(itertools.islice(p, CHUNK)), [])
        args = ((chunk, cfg, langs, lid) for chunk in chunks)
        results = pool.imap(check, args) if pool else map(check, args)
        yield index, info, itertools.chain.from_iterable(results)


def _check_counts(kept: dict[str, int], removed: Counter[str], carved: list[str], total: int, cfg: Clean) -> None:
    for split in SPLITS:
        if kept[split]:
            continue
        if split != "train" and split not in carved:
            raise PipelineError(f"the run's own {split} split is empty; give it sentences, or leave it out to carve "
                                "one out of train")
        if not removed:
            raise PipelineError(f"{total} pairs are too few to carve a {split} split out of train "
                                f"(clean.{split}_fraction: {getattr(cfg, f'{split}_fraction')}); use more pairs, or "
                                f"give the run its own {split} split")
        raise PipelineError(f"no {split} pairs left after cleaning {total} pairs (removed: {dict(removed)}); "
                            "loosen the clean section of params.yaml")


def run(params: Params, paths: Paths) -> dict:
    """Clean data/raw/ into data/clean/{train,valid,test}.{src,tgt}, data/clean/original/, data/clean/sources.json
    and metrics/clean.json."""
    cfg, langs = params.clean, (params.data.src, params.data.tgt)
    manifest = raw.read_manifest(paths.raw)
    carve = [split for split in SPLITS[1:] if not manifest["sources"].get(split)]
    lid = thresholds(cfg, langs)
    with stage_outputs() as outputs, ExitStack() as stack:
        out = outputs.dir(paths.clean)
        (out / "original").mkdir()
        held_out, held_counts = _held_out(paths, manifest, out, cfg, langs)
        files = [stack.enter_context(open(out / f"train.{lang}", "w", encoding="utf-8")) for lang in langs]
        merged = Merged(files, held_out, carve, cfg)
        check = _chunk_with_originals if carve else _chunk_without_originals
        sources = train_sources(paths, manifest)
        for index, info, results in _checked(sources, cfg, langs, lid, check, stack):
            merged.add(index, info, results)
        for split, pairs in merged.carved.items():
            _write_carved(out, split, *langs, pairs)
        report = _report(manifest, merged, held_counts, carve, cfg)
        outputs.json(paths.metrics / "clean.json", report)
        provenance = _provenance(manifest, [info for _, info in sources], merged, report)
        write_json(out / paths.sources.name, provenance)  # inside the new data/clean
    log.info("clean: kept %d of %d pairs (%s); removed %s", report["kept_pairs"], report["input_pairs"],
             ", ".join(f"{k} {v}" for k, v in report["splits"].items()), report["removed"] or "nothing")
    for name, row in report["sources"].items():
        log.info("  %s: read %d, kept %d, wrote %d to train; removed %s", name, row["input"], row["kept"],
                 row["train_pairs"], row["removed"] or "nothing")
    return report


def _report(manifest: dict, merged: Merged, held_counts: dict[str, int], carve: list[str], cfg: Clean) -> dict:
    removed: Counter[str] = Counter()
    for row in merged.rows.values():
        removed.update(row["removed"])
    first_test = next(iter(manifest["sources"].get("test", [])), None)
    splits = {"train": sum(row["train_pairs"] for row in merged.rows.values()),
              "valid": held_counts.get("valid", len(merged.carved.get("valid", []))),
              "test": held_counts.get(f"test:{first_test['name']}") if first_test else len(merged.carved["test"])}
    total = sum(row["input"] for row in merged.rows.values()) + sum(held_counts.values())
    _check_counts(splits, removed, carve, total, cfg)
    test_sets = {name.removeprefix("test:"): n for name, n in held_counts.items() if name.startswith("test:")}
    return {"input_pairs": total, "kept_pairs": sum(splits.values()), "splits": splits,
            "held_out": {split: "carved from train" if split in carve else "given" for split in SPLITS[1:]},
            "test_sets": test_sets or {"carved": splits["test"]},
            "removed": {k: removed[k] for k in sorted(removed)}, "sources": merged.rows,
            **({"missing": [m["name"] for m in manifest["missing"]]} if manifest.get("missing") else {})}


def _provenance(manifest: dict, train_infos: list[dict], merged: Merged, report: dict) -> dict:
    """Where every source of the model came from, with its licence and what cleaning kept of it: what the
    evaluate stage puts in the MLflow run, the registered version and the model card."""
    train = [info | {"cleaning": merged.rows[info["name"]]} for info in train_infos]
    tests = manifest["sources"].get("test", []) or [{"name": "carved", "carved_from": "train",
                                                       "lines": report["splits"]["test"]}]
    valid = manifest["sources"].get("valid", []) or [{"name": "carved", "carved_from": "train",
                                                        "lines": report["splits"]["valid"]}]
    return {"train": train, "valid": valid[0], "test": tests, "missing": manifest.get("missing", [])}


def _write_carved(out: Path, split: str, src: str, tgt: str, pairs: list[tuple[str, str, tuple[str, str]]]) -> None:
    """A split carved out of train: the cleaned pairs, and their lines as read in ``original/`` (the test split
    also as the one test set, ``original/tests/carved``)."""
    folders = [(out, lambda p: (p[0], p[1])), (out / "original", lambda p: p[2])]
    for directory, pick in folders:
        with open(directory / f"{split}.{src}", "w", encoding="utf-8") as fs, \
                open(directory / f"{split}.{tgt}", "w", encoding="utf-8") as ft:
            for pair in pairs:
                s, t = pick(pair)
                fs.write(s + "\n")
                ft.write(t + "\n")
    if split == "test":
        (out / "original" / "tests").mkdir(exist_ok=True)
        for lang in (src, tgt):
            shutil.copyfile(out / "original" / f"test.{lang}", out / "original" / "tests" / f"carved.{lang}")


def main() -> None:
    stage_main("clean", run)


if __name__ == "__main__":
    run_command(main)
