"""Stage ``download``: materialise the configured corpus as line-aligned text in ``data/raw/``.

Every source kind ends in the same place: ``data/raw/<split>.<lang>`` (UTF-8, one sentence per
line) plus ``manifest.json`` (where each file came from, its sha256 and line count). Files are
fetched through ``pipeline.fetch`` (cache, revalidation, resume, retries, mirror, checksums, safe
archives); the new ``data/raw/`` is built in a temp directory and swapped in only when every split
is complete and both sides have the same number of lines, so a failure leaves the previous
``data/raw/`` untouched.

DVC runs this stage on every ``repro`` (``always_changed`` in dvc.yaml): it is how a scheduled run
notices new data upstream. Its output depends only on the content it reads (no dates, no ETags), so
when nothing changed upstream ``data/raw/`` comes out byte-identical and every later stage stays cached.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline import corpora
from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import Data, FileSource, Params, Paths, SplitSource, TableSource
from pipeline.corpora import registry, sample_ko_en
from pipeline.fetch import CorruptFileError, evict, fetch, mirrored, read_lines

log = logging.getLogger(__name__)


def _write_pairs(out: Path, split: str, src: str, tgt: str, pairs: Iterable[tuple[str, str]]) -> int:
    n = 0
    with open(out / f"{split}.{src}", "w", encoding="utf-8") as fs, \
            open(out / f"{split}.{tgt}", "w", encoding="utf-8") as ft:
        for s, t in pairs:
            # a sentence must stay on one line, or the sides fall out of step
            fs.write(s.replace("\n", " ").replace("\r", " ") + "\n")
            ft.write(t.replace("\n", " ").replace("\r", " ") + "\n")
            n += 1
    return n


def _aligned(src: Iterator[str], tgt: Iterator[str], src_name: str, tgt_name: str) -> Iterator[tuple[str, str]]:
    for n, (s, t) in enumerate(itertools.zip_longest(src, tgt)):
        if s is None or t is None:
            longer, shorter = (tgt_name, src_name) if s is None else (src_name, tgt_name)
            raise PipelineError(f"different line counts: {shorter} has {n} lines, {longer} has more; "
                                "the files must be line-aligned")
        yield s, t


def _get(f: FileSource, offline: bool, corpus: str | None = None) -> tuple[Path, dict]:
    url = mirrored(f.url, corpus) if corpus else f.url
    path, digest = fetch(url, f.sha256, offline=offline)
    return path, {"url": url, "sha256": digest, **({"member": f.member} if f.member else {})}


@contextlib.contextmanager
def _evicting(*paths: Path) -> Iterator[None]:
    """A cached download that cannot be read is removed from the cache, so the next run fetches it anew."""
    try:
        yield
    except CorruptFileError as exc:
        evicted = [p for p in paths if evict(p)]
        if not evicted:
            raise
        raise PipelineError(f"{exc}; removed the cached copy ({', '.join(map(str, evicted))}) so the next run "
                            "downloads it again") from None


def _table_pairs(path: Path, t: TableSource, source: str, dropped: list[int]) -> Iterator[tuple[str, str]]:
    """The (source, target) columns of each row; blank or short rows are skipped and counted in ``dropped``."""
    reader = csv.reader(read_lines(path, t.member, source), delimiter="\t" if t.format == "tsv" else ",",
                        quoting=csv.QUOTE_NONE if t.format == "tsv" else csv.QUOTE_MINIMAL)
    columns: list[int | str] = [t.src_column, t.tgt_column]
    if t.header:
        header = next(reader, [])
        try:
            columns = [header.index(c) if isinstance(c, str) else c for c in columns]
        except ValueError:
            raise PipelineError(f"{source}: columns {t.src_column!r}/{t.tgt_column!r} not in header {header}") from None
    elif any(isinstance(c, str) for c in columns):
        raise PipelineError(f"{source}: column names need header: true")
    s_col, t_col = int(columns[0]), int(columns[1])
    for row in reader:
        if len(row) <= max(s_col, t_col):
            dropped[0] += 1
            continue
        yield row[s_col], row[t_col]


def _custom_split(data: Data, split: str, spec: SplitSource, out: Path) -> dict:
    if spec.table:
        path, info = _get(spec.table, data.offline)
        dropped = [0]
        with _evicting(path):
            rows = _table_pairs(path, spec.table, spec.table.url, dropped)
            lines = _write_pairs(out, split, data.src, data.tgt, rows)
        if dropped[0]:
            log.warning("%s: skipped %d blank or short row(s)", spec.table.url, dropped[0])
        return {"table": info, "lines": lines, **({"dropped_rows": dropped[0]} if dropped[0] else {})}
    assert spec.src and spec.tgt
    (sp, s_info), (tp, t_info) = _get(spec.src, data.offline), _get(spec.tgt, data.offline)
    pairs = _aligned(read_lines(sp, spec.src.member, spec.src.url), read_lines(tp, spec.tgt.member, spec.tgt.url),
                     spec.src.url, spec.tgt.url)
    with _evicting(sp, tp):
        lines = _write_pairs(out, split, data.src, data.tgt, pairs)
    return {data.src: s_info, data.tgt: t_info, "lines": lines}


def _registry_split(data: Data, split: str, files: dict[str, registry.RemoteFile], out: Path) -> dict:
    got = {lang: _get(FileSource(url=f.url, sha256=f.sha256, member=f.member), data.offline, data.corpus)
           for lang, f in files.items()}
    (sp, s_info), (tp, t_info) = got[data.src], got[data.tgt]
    pairs = _aligned(read_lines(sp, s_info.get("member"), s_info["url"]),
                     read_lines(tp, t_info.get("member"), t_info["url"]), s_info["url"], t_info["url"])
    with _evicting(sp, tp):
        lines = _write_pairs(out, split, data.src, data.tgt, pairs)
    return {data.src: s_info, data.tgt: t_info, "lines": lines}


def _dig(row: dict, path: str, name: str) -> str:
    value: object = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PipelineError(f"{name}: rows have no column '{path}'; set data.hf.src_column/tgt_column "
                                f"(columns: {', '.join(row)})")
        value = value[key]
    return str(value)


def _hf_splits(data: Data, out: Path) -> dict:
    if data.offline:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    from datasets import get_dataset_split_names, load_dataset

    name, _, config = data.corpus.removeprefix("hf:").partition(":")
    src_col = data.hf.src_column or f"translation.{data.src}"
    tgt_col = data.hf.tgt_column or f"translation.{data.tgt}"
    try:
        available = get_dataset_split_names(name, config or None)
    except Exception as exc:  # datasets raises many types for a missing/unreachable dataset
        raise PipelineError(f"{data.corpus}: cannot load it with HF datasets ({type(exc).__name__}: {exc})") from None
    splits = {}
    for split, hf_split in data.hf.splits.items():
        if hf_split not in available:
            continue
        ds = load_dataset(name, config or None, split=hf_split)
        pairs = ((_dig(r, src_col, data.corpus), _dig(r, tgt_col, data.corpus)) for r in ds)
        splits[split] = {"dataset": data.corpus, "split": hf_split,
                         "lines": _write_pairs(out, split, data.src, data.tgt, pairs)}
    if "train" not in splits:
        raise PipelineError(f"{data.corpus}: no '{data.hf.splits.get('train')}' split (has {available}); "
                            "set data.hf.splits")
    return splits


def _sample_splits(data: Data, out: Path) -> dict:
    pairs = sample_ko_en.generate(data.sample_pairs, data.seed)
    if data.src == "en":
        pairs = ((e, k) for k, e in pairs)
    return {"train": {"generator": corpora.SAMPLE, "seed": data.seed,
                      "lines": _write_pairs(out, "train", data.src, data.tgt, pairs)}}


def _custom_splits(data: Data, out: Path) -> dict:
    assert data.custom is not None  # the params model checks it
    return {split: _custom_split(data, split, spec, out) for split, spec in data.custom.items()}


def _registry_splits(data: Data, out: Path) -> dict:
    corpus = registry.CORPORA[data.corpus]
    return {split: _registry_split(data, split, files, out) for split, files in corpus.files.items()}


FETCH = {"sample": _sample_splits, "custom": _custom_splits, "hf": _hf_splits, "registry": _registry_splits}


def run(params: Params, paths: Paths) -> dict:
    """Download (or generate) the corpus into data/raw/: one function per kind of corpus (``FETCH``)."""
    data = params.data
    with stage_outputs() as outputs:
        out = outputs.dir(paths.raw)
        splits = FETCH[corpora.kind(data.corpus)](data, out)
        for split, info in splits.items():
            if info["lines"] == 0:
                raise PipelineError(f"{data.corpus}: the {split} split is empty")
        write_json(out / "manifest.json", {"corpus": data.corpus, "src": data.src, "tgt": data.tgt, "splits": splits})
    log.info("corpus %s: %s", data.corpus, ", ".join(f"{s} {i['lines']} pairs" for s, i in splits.items()))
    return splits


def main() -> None:
    stage_main("download", run)


if __name__ == "__main__":
    run_command(main)
