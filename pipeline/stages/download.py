"""Stage ``download``: every source of the run, as line-aligned text in ``data/raw/`` (``pipeline.raw``).

The run's sources are the corpus's own splits (``data.corpus``) and the lists ``data.train``, ``data.valid``
and ``data.test`` (``plan``); each is fetched by the function of its kind (``FETCH``: a registry corpus, HF
datasets, a sacrebleu test set, files or a table), through ``pipeline.fetch`` (cache, revalidation, resume,
retries, ``NMT_DATA_MIRROR``, checksums, safe archives). ``manifest.json`` records where each came from, its
sha256, licence and line count. A source marked ``optional`` that cannot be had (not in the mirror while
offline, upstream unreachable) is left out with one line and listed under ``missing``; any other failure stops
the stage. The new ``data/raw/`` is built in a temp directory and swapped in only when every source is complete
and line-aligned, so a failure leaves the previous ``data/raw/`` untouched.

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
import re
from collections.abc import Iterator
from pathlib import Path

from pipeline import corpora, raw
from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, TransientError, stage_outputs
from pipeline.config import Data, FileSource, Params, Paths, Source, TableSource
from pipeline.corpora import registry, sample_ko_en
from pipeline.fetch import CorruptFileError, evict, fetch_mirrored, is_archive, mirror_of, offline_env, read_lines

log = logging.getLogger(__name__)


def _aligned(src: Iterator[str], tgt: Iterator[str], src_name: str, tgt_name: str) -> Iterator[tuple[str, str]]:
    for n, (s, t) in enumerate(itertools.zip_longest(src, tgt)):
        if s is None or t is None:
            longer, shorter = (tgt_name, src_name) if s is None else (src_name, tgt_name)
            raise PipelineError(f"different line counts: {shorter} has {n} lines, {longer} has more; "
                                "the files must be line-aligned")
        yield s, t


def _get(f: FileSource, offline: bool, folder: str) -> tuple[Path, dict]:
    """The file, from the mirror when it holds it; and what the manifest says of it. A mirror may hold the
    member of an archive itself: then there is no member to pick."""
    path, digest, url = fetch_mirrored(f.url, f.sha256, mirror_of(f.url, f.mirror, folder), offline=offline)
    member = f.member if url == f.url or is_archive(path) else None
    return path, {"url": url, "sha256": digest, **({"upstream": f.url} if url != f.url else {}),
                  **({"member": member} if member else {})}


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


def _dig(row: dict, path: str, name: str) -> str:
    value: object = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PipelineError(f"{name}: rows have no column '{path}'; set data.hf.src_column/tgt_column "
                                f"(columns: {', '.join(row)})")
        value = value[key]
    return str(value)


Pairs = Iterator[tuple[str, str]]


def _files_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    assert source.files
    (sp, s_info), (tp, t_info) = (_get(source.files[lang], data.offline, source.name) for lang in (data.src, data.tgt))
    info |= {data.src: s_info, data.tgt: t_info}
    with _evicting(sp, tp):
        yield from _aligned(read_lines(sp, s_info.get("member"), s_info["url"]),
                            read_lines(tp, t_info.get("member"), t_info["url"]), s_info["url"], t_info["url"])


def _table_source_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    assert source.table
    path, info["table"] = _get(source.table, data.offline, source.name)
    dropped = [0]
    with _evicting(path):
        yield from _table_pairs(path, source.table, source.table.url, dropped)
    if dropped[0]:
        log.warning("%s: skipped %d blank or short row(s)", source.table.url, dropped[0])
        info["dropped_rows"] = dropped[0]


def _registry_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    assert source.corpus
    files = registry.CORPORA[source.corpus].files
    if split not in files:
        raise PipelineError(f"corpus '{source.corpus}' has no {split} split (it has {', '.join(files)})")
    got = {lang: _get(FileSource(url=f.url, sha256=f.sha256, member=f.member), data.offline, source.corpus)
           for lang, f in files[split].items()}
    (sp, info[data.src]), (tp, info[data.tgt]) = got[data.src], got[data.tgt]
    with _evicting(sp, tp):
        yield from _aligned(read_lines(sp, info[data.src].get("member"), info[data.src]["url"]),
                            read_lines(tp, info[data.tgt].get("member"), info[data.tgt]["url"]),
                            info[data.src]["url"], info[data.tgt]["url"])


def _hf_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    if data.offline or offline_env():
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    from datasets import get_dataset_split_names, load_dataset

    assert source.corpus
    name, _, config = source.corpus.removeprefix("hf:").partition(":")
    src_col = data.hf.src_column or f"translation.{data.src}"
    tgt_col = data.hf.tgt_column or f"translation.{data.tgt}"
    hf_split = data.hf.splits.get(split, split) if source.split is None else source.split
    try:
        available = get_dataset_split_names(name, config or None)
    except Exception as exc:  # datasets raises many types for a missing/unreachable dataset
        raise TransientError(f"{source.corpus}: cannot load it with HF datasets ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if hf_split not in available:
        raise PipelineError(f"{source.corpus}: no '{hf_split}' split (has {available}); set data.hf.splits "
                            f"or the source's split")
    info |= {"dataset": source.corpus, "split": hf_split}
    for row in load_dataset(name, config or None, split=hf_split):
        yield _dig(row, src_col, source.corpus), _dig(row, tgt_col, source.corpus)


def _sacrebleu_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    """A test set as sacrebleu downloads it (into its own cache, ``$SACREBLEU``): source and first reference."""
    from sacrebleu.dataset import DATASETS

    assert source.sacrebleu
    name, _, pair = source.sacrebleu.partition(":")
    pair = pair or f"{data.src}-{data.tgt}"
    if name not in DATASETS or pair not in DATASETS[name].langpairs:
        raise PipelineError(f"sacrebleu has no test set {name} for {pair} (`sacrebleu --list -t {name}`)")
    dataset = DATASETS[name]
    fields = dataset.fieldnames(pair)
    # the source and first reference; sacrebleu's get_files would download again for a missing docid file
    wanted = [Path(dataset._get_txt_file_path(pair, field)) for field in ("src", fields[1])]
    if not all(f.exists() for f in wanted):
        if data.offline or offline_env():
            raise PipelineError(f"sacrebleu test set {name} ({pair}): not in sacrebleu's cache ({wanted[0].parent}) "
                                "and offline mode is on")
        try:
            dataset.get_files(pair)
        except (Exception, SystemExit) as exc:  # sacrebleu exits on a failed download
            raise TransientError(f"sacrebleu test set {name} ({pair}): cannot download it ({exc})") from None
    info |= {"sacrebleu": name, "langpair": pair, "url": dataset.data[0] if dataset.data else None}
    yield from _aligned(read_lines(wanted[0]), read_lines(wanted[1]), str(wanted[0]), str(wanted[1]))


def _sample_pairs(data: Data, source: Source, split: str, info: dict) -> Pairs:
    info |= {"generator": corpora.SAMPLE, "seed": data.seed}
    pairs = sample_ko_en.generate(data.sample_pairs, data.seed)
    yield from (((e, k) for k, e in pairs) if data.src == "en" else pairs)


# one function per kind of source (``Source.kind``): each yields the (source, target) pairs of one split
FETCH = {"sample": _sample_pairs, "registry": _registry_pairs, "hf": _hf_pairs, "sacrebleu": _sacrebleu_pairs,
         "files": _files_pairs, "table": _table_source_pairs}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-")


def _corpus_sources(data: Data) -> dict[str, Source]:
    """The single corpus of ``data.corpus`` as a source per split it has."""
    if data.corpus is None:
        return {}
    name, kind = _slug(data.corpus), corpora.kind(data.corpus)
    if kind == "custom":
        assert data.custom is not None  # the params model checks it
        return {split: Source(name=name, table=spec.table) if spec.table else Source(
                    name=name, files={data.src: spec.src, data.tgt: spec.tgt}) for split, spec in data.custom.items()}
    if kind == "registry":
        splits = list(registry.CORPORA[data.corpus].files)
    else:
        splits = ["train"] if kind == "sample" else list(data.hf.splits)
    # an HF dataset may lack a valid or test split: then one is carved out of train, as before
    return {split: Source(name=name, corpus=data.corpus, optional=kind == "hf" and split != "train")
            for split in splits}


def plan(data: Data) -> dict[str, list[Source]]:
    """Every source of the run by role, in order: the corpus's own split first, then the lists'."""
    own = _corpus_sources(data)
    roles = {"train": [own["train"]] if "train" in own else [],
             "valid": [data.valid] if data.valid else [own["valid"]] if "valid" in own else [],
             "test": [own["test"]] if "test" in own else []}
    roles["train"] += data.train
    roles["test"] += data.test
    roles["mono"] = list(data.monolingual)
    for role, sources in roles.items():
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise PipelineError(f"params.yaml: data.{role}: a source is named '{data.corpus}' like the corpus; "
                                "rename it")
    return roles


def _mono_lines(data: Data, source: Source, info: dict) -> Iterator[str]:
    """Monolingual target-language text: its one file, or the target side of a corpus's train split."""
    if source.files is None:
        yield from (t for _, t in FETCH[source.kind](data, source, source.split or "train", info))
        return
    path, info[data.tgt] = _get(source.files[data.tgt], data.offline, source.name)
    with _evicting(path):
        yield from read_lines(path, info[data.tgt].get("member"), info[data.tgt]["url"])


def _fetch_one(data: Data, role: str, source: Source, out: Path) -> dict:
    info: dict = {"name": source.name, "kind": source.kind}
    if role == "mono":
        info["lines"] = raw.write_lines(out, role, source.name, data.tgt, _mono_lines(data, source, info))
    else:
        pairs = FETCH[source.kind](data, source, source.split or role, info)
        info["lines"] = raw.write_pairs(out, role, source.name, data.src, data.tgt, pairs)
    if info["lines"] == 0:
        raise PipelineError(f"source '{source.name}' ({role}): no pairs")
    provenance = {"licence": source.licence, "homepage": source.homepage}
    info |= {k: v for k, v in provenance.items() if v} | ({"weight": source.weight} if role == "train" else {})
    return info | ({"tag": source.tag} if source.tag else {})


def run(params: Params, paths: Paths) -> dict:
    """Download (or generate) every source of the run into data/raw/: one function per kind (``FETCH``)."""
    data = params.data
    roles, missing = plan(data), []
    fetched: dict[str, list[dict]] = {role: [] for role in raw.ROLES}
    with stage_outputs() as outputs:
        out = outputs.dir(paths.raw)
        for role, sources in roles.items():
            for source in sources:
                try:
                    fetched[role].append(_fetch_one(data, role, source, out))
                except PipelineError as exc:
                    if not source.optional:
                        raise
                    for f in raw.files(out, role, source.name, data.src, data.tgt):
                        f.unlink(missing_ok=True)
                    log.warning("source '%s' (%s) is missing, going on without it: %s", source.name, role, exc)
                    missing.append({"name": source.name, "role": role, "why": str(exc)})
        if not fetched["train"]:
            raise PipelineError(f"no train source could be had ({'; '.join(m['name'] for m in missing)}); "
                                "see docs/data.md for a mirror")
        raw.write_manifest(out, data.src, data.tgt, fetched, missing)
    log.info("download: %s", "; ".join(f"{role} " + ", ".join(f"{i['name']} {i['lines']} pairs" for i in infos)
                                       for role, infos in fetched.items() if infos))
    return {"sources": fetched, "missing": missing}


def main() -> None:
    stage_main("download", run)


if __name__ == "__main__":
    run_command(main)
