"""Stage ``download``: materialise the configured corpus as line-aligned text in ``data/raw/``.

Every source kind goes through one path: fetch bytes (http(s), file:// or a local path) into a
temp file while hashing them, verify the sha256 when one is given, decompress .gz, check that both
sides have the same number of lines, and only then swap the new ``data/raw/`` in. A failure at any
point leaves the previous ``data/raw/`` as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.common import PipelineError, atomic_dir, stage_main, write_json
from pipeline.config import FileSource, Params, Paths
from pipeline.corpora import sample_ko_en

log = logging.getLogger(__name__)

RETRIES = 3
CHUNK = 1 << 20


def fetch(url: str, dest: Path, sha256: str | None = None, retries: int = RETRIES) -> str:
    """Copy ``url`` (http(s)://, file:// or a path) to ``dest``; return the sha256 of the bytes."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        digest = _fetch_http(url, dest, retries)
    else:
        local = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
        if not local.is_file():
            raise PipelineError(f"{url}: file not found; fix data.custom in params.yaml")
        h = hashlib.sha256()
        with open(local, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
    if sha256 and digest != sha256.lower():
        raise PipelineError(f"{url}: sha256 mismatch (expected {sha256.lower()}, got {digest}); "
                            "the file changed upstream or the download is corrupt")
    return digest


def _fetch_http(url: str, dest: Path, retries: int) -> str:
    for attempt in range(1, retries + 1):
        try:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
                while chunk := resp.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            return h.hexdigest()
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code == 429
            if not retryable or attempt == retries:
                raise PipelineError(f"{url}: HTTP {exc.code} {exc.reason} after {attempt} attempt(s)") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == retries:
                raise PipelineError(f"{url}: {getattr(exc, 'reason', exc)} after {attempt} attempt(s)") from None
            reason = str(getattr(exc, "reason", exc))
        delay = 2 ** (attempt - 1)
        log.warning("%s: %s, retrying in %ss (%d/%d)", url, reason, delay, attempt, retries)
        time.sleep(delay)
    raise AssertionError("unreachable")


def _to_text(blob: Path, dest: Path, name: str) -> int:
    """Decompress (if gzip) and normalise line endings into ``dest``; return the line count."""
    with open(blob, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    lines = 0
    try:
        with opener(blob, "rt", encoding="utf-8", newline=None) as src, \
                open(dest, "w", encoding="utf-8", newline="\n") as out:
            for line in src:
                out.write(line.rstrip("\n") + "\n")
                lines += 1
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise PipelineError(f"{name}: truncated or corrupt gzip ({exc})") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{name}: not UTF-8 text (byte {exc.start} of line {lines + 1})") from None
    return lines


def _download_custom(params: Params, out: Path) -> dict:
    assert params.data.custom is not None
    files = {}
    for side, lang in (("src", params.data.src), ("tgt", params.data.tgt)):
        source: FileSource = getattr(params.data.custom, side)
        blob = out / f".{side}.download"
        digest = fetch(source.url, blob, source.sha256)
        lines = _to_text(blob, out / f"train.{lang}", source.url)
        blob.unlink()
        files[lang] = {"url": source.url, "sha256": digest, "lines": lines}
    counts = {f["lines"] for f in files.values()}
    if len(counts) != 1:
        detail = ", ".join(f"{lang}: {f['lines']}" for lang, f in files.items())
        raise PipelineError(f"source and target have different line counts ({detail}); "
                            "the files must be line-aligned")
    return files


def _generate_sample(params: Params, out: Path) -> dict:
    if (params.data.src, params.data.tgt) not in (("ko", "en"), ("en", "ko")):
        raise PipelineError("data.corpus 'sample-ko-en' needs data.src/data.tgt to be ko/en or en/ko")
    pairs = sample_ko_en.generate(params.data.sample_pairs, params.data.seed)
    with open(out / "train.ko", "w", encoding="utf-8") as ko, open(out / "train.en", "w", encoding="utf-8") as en:
        for k, e in pairs:
            ko.write(k + "\n")
            en.write(e + "\n")
    return {lang: {"generator": "sample-ko-en", "seed": params.data.seed, "lines": params.data.sample_pairs}
            for lang in ("ko", "en")}


def run(params: Params, paths: Paths) -> Path:
    """Download (or generate) the corpus into data/raw/."""
    data = params.data
    with atomic_dir(paths.raw) as out:
        files = _generate_sample(params, out) if data.corpus == "sample-ko-en" else _download_custom(params, out)
        write_json(out / "manifest.json", {"corpus": data.corpus, "src": data.src, "tgt": data.tgt,
                                           "splits": {"train": files}})
    log.info("corpus %s: %d pairs in %s", data.corpus, next(iter(files.values()))["lines"], paths.raw)
    return paths.raw


def main() -> None:
    stage_main("download", run)


if __name__ == "__main__":
    main()
