"""Getting corpus files onto disk safely: download cache, resume, retries, mirror, checksums, archives.

* ``fetch(url)`` returns a local, verified file. Local paths and ``file://`` URLs are used in
  place; http(s) downloads land in a cache keyed by URL (``$NMT_CACHE_DIR``, default
  ``~/.cache/nmt-pipeline/downloads``), streamed to a ``.part`` file that a later attempt resumes
  with an HTTP Range request, then renamed into place once complete and verified.
* ``NMT_DATA_MIRROR=<base>`` makes every registry download fetch ``<base>/<corpus>/<file name>``.
* Offline (``data.offline`` or ``NMT_OFFLINE=1``) only the cache is used.
* ``read_lines(path, member)`` streams text from a plain, .gz, or a member of a .tar(.gz)/.zip file,
  after checking that no member of the archive points outside it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from pipeline.common import PipelineError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRIES = 3


def cache_dir() -> Path:
    return Path(os.environ.get("NMT_CACHE_DIR", "~/.cache/nmt-pipeline")).expanduser() / "downloads"


def offline_env() -> bool:
    return os.environ.get("NMT_OFFLINE", "").lower() in ("1", "true", "yes")


def mirrored(url: str, corpus: str) -> str:
    """The URL to use for a registry file: the mirror's copy when NMT_DATA_MIRROR is set."""
    base = os.environ.get("NMT_DATA_MIRROR")
    if not base:
        return url
    return f"{base.rstrip('/')}/{corpus}/{PurePosixPath(urlparse(url).path).name}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None, url: str) -> str:
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise PipelineError(f"{url}: sha256 mismatch (expected {sha256.lower()}, got {digest}); "
                            "the file changed upstream or the download is corrupt")
    return digest


def fetch(url: str, sha256: str | None = None, *, offline: bool = False, retries: int = RETRIES) -> tuple[Path, str]:
    """A verified local copy of ``url`` and its sha256."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        local = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
        if not local.is_file():
            raise PipelineError(f"{url}: file not found; fix the corpus files in params.yaml")
        return local, _verify(local, sha256, url)

    name = PurePosixPath(parsed.path).name or "download"
    cached = cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if cached.exists():
        digest = sha256_of(cached)
        if not sha256 or digest == sha256.lower():
            log.info("%s: from the download cache (%s)", url, cached)
            return cached, digest
        log.warning("%s: cached copy has another sha256; downloading again", url)
        cached.unlink()
    if offline or offline_env():
        raise PipelineError(f"{url}: not in the download cache ({cache_dir()}) and offline mode is on; "
                            "run once online or set NMT_DATA_MIRROR")
    cached.parent.mkdir(parents=True, exist_ok=True)
    part = cached.with_name(cached.name + ".part")
    _download(url, part, retries)
    try:
        digest = _verify(part, sha256, url)
    except PipelineError:
        part.unlink()
        raise
    os.replace(part, cached)
    return cached, digest


def _download(url: str, part: Path, retries: int) -> None:
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                resuming = have and resp.status == 206
                if have and not resuming:
                    log.info("%s: server ignored the range request; starting over", url)
                with open(part, "ab" if resuming else "wb") as out:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                expected = resp.headers.get("Content-Length")
                if expected is not None and part.stat().st_size != int(expected) + (have if resuming else 0):
                    raise ConnectionError("connection closed before the end of the file")
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # our partial file is already complete
                return
            if not (exc.code >= 500 or exc.code == 429) or attempt == retries:
                raise PipelineError(f"{url}: HTTP {exc.code} {exc.reason} after {attempt} attempt(s)") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
            if attempt == retries:
                raise PipelineError(f"{url}: {reason} after {attempt} attempt(s)") from None
        delay = 2 ** (attempt - 1)
        log.warning("%s: %s; retrying in %ss (%d/%d), resuming from the partial file", url, reason, delay,
                    attempt, retries)
        time.sleep(delay)


# --- reading -----------------------------------------------------------------------------------


def _is_unsafe(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def _check_tar(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        if _is_unsafe(m.name):
            raise PipelineError(f"{source}: unsafe archive member '{m.name}' (absolute or '..' path); refusing it")
        if (m.issym() or m.islnk()) and (_is_unsafe(m.linkname) or m.linkname.startswith("/")):
            raise PipelineError(f"{source}: archive member '{m.name}' links outside the archive; refusing it")
    return members


def _pick(names: list[str], pattern: str, source: str) -> str:
    found = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(PurePosixPath(n).name, pattern)]
    if len(found) != 1:
        what = "no member matches" if not found else f"{len(found)} members match"
        raise PipelineError(f"{source}: {what} '{pattern}' (members: {', '.join(names[:10])})")
    return found[0]


@contextlib.contextmanager
def _open_binary(path: Path, member: str | None, source: str) -> Iterator[io.BufferedIOBase]:
    if member is None:
        with open(path, "rb") as fh:
            yield fh
        return
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            members = [m for m in _check_tar(tar, source) if m.isfile()]
            name = _pick([m.name for m in members], member, source)
            fh = tar.extractfile(name)
            assert fh is not None
            yield fh
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for n in names:
                if _is_unsafe(n):
                    raise PipelineError(f"{source}: unsafe archive member '{n}' (absolute or '..' path); refusing it")
            with zf.open(_pick([n for n in names if not n.endswith("/")], member, source)) as fh:
                yield fh
    else:
        raise PipelineError(f"{source}: not a tar or zip archive (or a truncated one), but a member was asked for")


def read_lines(path: Path, member: str | None = None, source: str | None = None) -> Iterator[str]:
    """Lines (without newline) of a plain/.gz file or of an archive member; UTF-8, any line ending."""
    source = source or str(path)
    n = 0
    try:
        with _open_binary(path, member, source) as raw:
            buffered = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
            stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
            for line in io.TextIOWrapper(stream, encoding="utf-8", newline=None):
                n += 1
                yield line.rstrip("\n")
    except (EOFError, gzip.BadGzipFile, tarfile.ReadError, zipfile.BadZipFile, zlib.error) as exc:
        raise PipelineError(f"{source}: truncated or corrupt file ({exc or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{source}: not UTF-8 text (line {n + 1})") from None
