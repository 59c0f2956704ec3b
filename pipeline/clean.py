"""Stage ``clean``: normalise and filter the raw pairs, then write train/valid/test splits.

Streaming: pairs are read in chunks, normalised and filtered in a process pool (both cores), and
written as they come back. Exact duplicates are found with a set of 8-byte hashes, so memory grows
by about 80 bytes per kept pair, not by the text. When the corpus has no valid/test split, pairs
are assigned by a seeded hash of their source sentence, so a source never lands in two splits.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import logging
import multiprocessing as mp
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from pipeline.common import PipelineError, atomic_dir, stage_main, write_json
from pipeline.config import Clean, Params, Paths

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
CHUNK = 20_000
_TAG = re.compile(r"<[^<>]{1,200}>")
_SPACE = re.compile(r"\s+")
# control (Cc) and format (Cf) characters, line/paragraph separators; a regex is ~20x faster than a per-char loop
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def normalise(text: str, form: str) -> str:
    """Unicode-normalise, unescape HTML, drop tags and control characters, squeeze whitespace."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# Letters of the script each language is written in; languages not listed are not checked.
_LATIN = r"A-Za-z\u00c0-\u024f"
SCRIPTS = {
    "ko": r"\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f", "ja": r"\u3040-\u30ff\u4e00-\u9fff",
    "zh": r"\u4e00-\u9fff\u3400-\u4dbf", "ru": r"\u0400-\u04ff", "uk": r"\u0400-\u04ff",
    "ar": r"\u0600-\u06ff", "el": r"\u0370-\u03ff", "he": r"\u0590-\u05ff", "hi": r"\u0900-\u097f",
    "th": r"\u0e00-\u0e7f",
    **dict.fromkeys(("en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "ro", "tr",
                     "hu", "id", "vi", "ms", "et", "lv", "lt", "sk", "sl", "hr", "ca"), _LATIN),
}
_LETTER = re.compile(r"[^\W\d_]")


def script_ratio(text: str, lang: str) -> float | None:
    """Share of the letters of ``text`` written in ``lang``'s script (None: language not checked)."""
    if lang not in SCRIPTS:
        return None
    letters = len(_LETTER.findall(text))
    return len(re.findall(f"[{SCRIPTS[lang]}]", text)) / letters if letters else 1.0


_KIWI = None


def korean_morphemes(text: str) -> str:
    """Korean split into morphemes with kiwipiepy: '책을 읽었다' -> '책 을 읽 었 다'."""
    global _KIWI
    if _KIWI is None:  # one analyser per process (pool workers included); it loads a model
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            raise PipelineError("clean.korean_morphemes needs kiwipiepy: pip install -e '.[korean]'") from None
        _KIWI = Kiwi()
    return " ".join(token.form for token in _KIWI.tokenize(text))


def check_pair(src: str, tgt: str, cfg: Clean, langs: tuple[str, str] = ("", "")) -> tuple[str, str, str | None]:
    """Normalise one pair; return it with the name of the filter that rejects it, or None."""
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


def run(params: Params, paths: Paths) -> dict:
    """Clean data/raw/ into data/clean/{train,valid,test}.{src,tgt} and metrics/clean.json."""
    cfg, src, tgt = params.clean, params.data.src, params.data.tgt
    manifest_path = paths.raw / "manifest.json"
    if not manifest_path.exists():
        raise PipelineError(f"{manifest_path} not found; run the download stage first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    raw_splits = [s for s in SPLITS if s in manifest["splits"]]
    if "train" not in raw_splits:
        raise PipelineError(f"{manifest_path}: no train split; rerun the download stage")
    missing = [s for s in SPLITS if s not in raw_splits]
    removed: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    seen: set[bytes] = set()
    train_sources: set[bytes] = set()
    held_out: dict[str, list[tuple[str, str]]] = {"valid": [], "test": []}
    total = 0

    with atomic_dir(paths.clean) as out, ExitStack() as stack:
        files = {(split, lang): stack.enter_context(open(out / f"{split}.{lang}", "w", encoding="utf-8"))
                 for split in SPLITS for lang in (src, tgt)}
        workers = min(2, os.cpu_count() or 1)
        pool = stack.enter_context(mp.get_context("spawn").Pool(workers)) if workers > 1 else None
        for raw_split in raw_splits:
            chunks = _chunks(_read_pairs(paths.raw, raw_split, src, tgt), cfg, (src, tgt))
            results = pool.imap(_check_chunk, chunks) if pool else map(_check_chunk, chunks)
            for s, t, reason in itertools.chain.from_iterable(results):
                total += 1
                if reason is None:
                    key = _digest(s, t)
                    reason = "duplicate" if key in seen else None
                    seen.add(key)
                if reason:
                    removed[reason] += 1
                    continue
                split = _split_of(s, cfg, missing) if raw_split == "train" and missing else raw_split
                if split == "train":
                    train_sources.add(_digest(s))
                    files[("train", src)].write(s + "\n")
                    files[("train", tgt)].write(t + "\n")
                    kept["train"] += 1
                else:  # held out until every train source is known
                    held_out[split].append((s, t))
        for split, pairs in held_out.items():
            for s, t in pairs:
                if _digest(s) in train_sources:
                    removed[f"{split}_source_in_train"] += 1
                    continue
                files[(split, src)].write(s + "\n")
                files[(split, tgt)].write(t + "\n")
                kept[split] += 1
        for split in SPLITS:
            if kept[split] == 0:
                raise PipelineError(f"no {split} pairs left after cleaning {total} pairs "
                                    f"(removed: {dict(removed)}); loosen the clean section of params.yaml")

    report = {"input_pairs": total, "kept_pairs": sum(kept.values()), "splits": dict(kept),
              "removed": {k: removed[k] for k in sorted(removed)}}
    write_json(paths.metrics / "clean.json", report)
    log.info("clean: kept %d of %d pairs (%s); removed %s", report["kept_pairs"], total,
             ", ".join(f"{k} {v}" for k, v in kept.items()), dict(removed) or "nothing")
    return report


def main() -> None:
    stage_main("clean", run)


if __name__ == "__main__":
    main()
