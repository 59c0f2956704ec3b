"""Getting corpus files onto disk safely: download cache, revalidation, resume, retries, mirror, checksums.

* ``fetch(url)`` returns a local, verified file. Local paths and ``file://`` URLs are used in
  place; http(s) downloads land in a cache keyed by URL (``$NMT_CACHE_DIR``, default
  ``~/.cache/nmt-pipeline/downloads``), streamed to a ``.part`` file that a later attempt resumes
  with an HTTP Range request, then renamed into place once complete and verified.
* A cached file is revalidated on every fetch (``If-None-Match``/``If-Modified-Since`` with the
  ETag/Last-Modified it came with), so a changed upstream file is noticed and downloaded again; a
  file pinned by sha256 that the cache already holds is not asked for at all.
* A cached file that turns out to be corrupt when read is evicted (``evict``), never served again.
* ``NMT_DATA_MIRROR=<base>``: a file is taken from ``<base>/<its mirror path>`` when the mirror holds it
  (``fetch_mirrored``; by default ``<base>/<corpus or source name>/<file name>``), else from upstream.
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
import json
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

from pipeline.common import PipelineError, TransientError, sha256_of

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRIES = 3


def cache_dir() -> Path:
    return Path(os.environ.get("NMT_CACHE_DIR", "~/.cache/nmt-pipeline")).expanduser() / "downloads"


def offline_env() -> bool:
    return os.environ.get("NMT_OFFLINE", "").lower() in ("1", "true", "yes")


def mirror_of(url: str | None, path: str | None, folder: str) -> str | None:
    """Where ``NMT_DATA_MIRROR`` would hold the file of ``url``: ``<mirror>/<path>``, by default
    ``<mirror>/<folder>/<file name>``; None without a mirror, or for a local file (nothing to mirror)."""
    base = os.environ.get("NMT_DATA_MIRROR")
    if not base or (path is None and urlparse(url or "").scheme not in ("http", "https")):
        return None
    return f"{base.rstrip('/')}/{path or f'{folder}/{PurePosixPath(urlparse(url).path).name}'}"


def is_archive(path: Path) -> bool:
    return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


def fetch_mirrored(url: str | None, sha256: str | None, mirror: str | None, *, offline: bool = False
                   ) -> tuple[Path, str, str]:
    """``fetch`` from the mirror when it holds the file, else from ``url`` (unless offline); also returns the URL
    it came from."""
    if mirror is not None:
        try:
            return (*fetch(mirror, sha256, offline=offline), mirror)
        except TransientError:
            raise
        except PipelineError as exc:  # not in the mirror (or, offline, an http mirror's file not in the cache)
            local = urlparse(mirror).scheme not in ("http", "https")
            why = f"not in the mirror ({mirror})" if local else str(exc).split("; ")[0]
            if url is None:
                raise PipelineError(f"{why}; it has no public download") from None
            if offline or offline_env():
                raise PipelineError(f"{url}: {why} and offline mode is on") from None
            log.info("%s: %s; downloading it", url, why)
    if url is None:
        raise PipelineError("a file only a mirror holds, and NMT_DATA_MIRROR is not set (docs/data.md)")
    return (*fetch(url, sha256, offline=offline), url)


def _verify(path: Path, sha256: str | None, url: str) -> str:
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise PipelineError(f"{url}: sha256 mismatch (expected {sha256.lower()}, got {digest}); "
                            "the file changed upstream or the download is corrupt")
    return digest


def cached_path(url: str) -> Path:
    name = PurePosixPath(urlparse(url).path).name or "download"
    return cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def _validators(cached: Path) -> dict[str, str]:
    """The ETag/Last-Modified a cached file came with (a sidecar ``.meta.json``)."""
    meta = cached.with_name(cached.name + ".meta.json")
    try:
        return json.loads(meta.read_text()) if cached.exists() else {}
    except (OSError, ValueError):
        return {}


def evict(path: Path) -> bool:
    """Remove ``path`` from the download cache (True) if it is a cached download, else do nothing."""
    if path.parent != cache_dir():
        return False
    for f in (path, path.with_name(path.name + ".meta.json")):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return True


def fetch(url: str, sha256: str | None = None, *, offline: bool = False, retries: int = RETRIES) -> tuple[Path, str]:
    """A verified local copy of ``url`` and its sha256."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        local = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
        if not local.is_absolute():  # relative to the project, also from a DVC experiment's temporary copy
            local = Path(os.environ.get("DVC_ROOT", ".")) / local
        if not local.is_file():
            raise PipelineError(f"{url}: file not found; fix the corpus files in params.yaml")
        return local, _verify(local, sha256, url)

    cached = cached_path(url)
    if cached.exists() and sha256:
        if sha256_of(cached) == sha256.lower():  # pinned and present: nothing upstream can change it
            log.info("%s: from the download cache (%s)", url, cached)
            return cached, sha256.lower()
        log.warning("%s: cached copy has another sha256; downloading again", url)
        evict(cached)
    if offline or offline_env():
        if cached.exists():
            log.info("%s: offline, from the download cache (%s)", url, cached)
            return cached, sha256_of(cached)
        raise PipelineError(f"{url}: not in the download cache ({cache_dir()}) and offline mode is on; "
                            "run once online or set NMT_DATA_MIRROR")
    cached.parent.mkdir(parents=True, exist_ok=True)
    part = cached.with_name(cached.name + ".part")
    try:
        headers = _download(url, part, retries, _validators(cached))
    except TransientError as exc:
        if not cached.exists():
            raise
        log.warning("%s; using the cached copy (%s)", exc, cached)
        return cached, sha256_of(cached)
    if headers is None:  # 304: the cached copy is current
        log.info("%s: unchanged upstream, from the download cache (%s)", url, cached)
        return cached, sha256_of(cached)
    try:
        digest = _verify(part, sha256, url)
    except PipelineError:
        part.unlink()
        raise
    os.replace(part, cached)
    meta = {k: headers[k] for k in ("ETag", "Last-Modified") if headers.get(k)}
    cached.with_name(cached.name + ".meta.json").write_text(json.dumps(meta))
    return cached, digest


def _download(url: str, part: Path, retries: int, validators: dict[str, str]) -> dict[str, str] | None:
    """Stream ``url`` into ``part``, resuming it; the response headers, or None for 304 Not Modified."""
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        if not have and validators.get("ETag"):
            headers["If-None-Match"] = validators["ETag"]
        if not have and validators.get("Last-Modified"):
            headers["If-Modified-Since"] = validators["Last-Modified"]
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
                resuming = have and resp.status == 206
                if have and not resuming:
                    log.info("%s: server ignored the range request; starting over", url)
                with open(part, "ab" if resuming else "wb") as out:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                expected = resp.headers.get("Content-Length")
                if expected is not None and part.stat().st_size != int(expected) + (have if resuming else 0):
                    raise ConnectionError("connection closed before the end of the file")
                return dict(resp.headers)
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None
            if exc.code == 416 and have:  # our partial file is already complete
                return dict(exc.headers)
            transient = exc.code >= 500 or exc.code == 429
            if not transient or attempt == retries:
                error = TransientError if transient else PipelineError
                raise error(f"{url}: HTTP {exc.code} {exc.reason} after {attempt} attempt(s)") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
            if attempt == retries:
                raise TransientError(f"{url}: {reason} after {attempt} attempt(s)") from None
        delay = 2 ** (attempt - 1)
        log.warning("%s: %s; retrying in %ss (%d/%d), resuming from the partial file", url, reason, delay,
                    attempt, retries)
        time.sleep(delay)
    raise AssertionError("unreachable")


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


class CorruptFileError(PipelineError):
    """The bytes of a file are not what they claim to be (truncated, bad gzip, not UTF-8)."""


def _bad_utf8_line(path: Path, member: str | None, source: str) -> int:
    """1-based number of the first line that is not valid UTF-8 (decoding line by line: slow, errors only)."""
    with _open_binary(path, member, source) as raw:
        buffered = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
        stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
        for n, line in enumerate(stream, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return 0


def read_lines(path: Path, member: str | None = None, source: str | None = None) -> Iterator[str]:
    """Lines (without newline) of a plain/.gz file or of an archive member; UTF-8, any line ending."""
    source = source or str(path)
    try:
        with _open_binary(path, member, source) as raw:
            buffered = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
            stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
            for line in io.TextIOWrapper(stream, encoding="utf-8", newline=None):
                yield line.rstrip("\n")
    except (EOFError, gzip.BadGzipFile, tarfile.ReadError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptFileError(f"{source}: truncated or corrupt file ({exc or type(exc).__name__})") from None
    except UnicodeDecodeError:
        # the text layer decodes in blocks, so find the line itself
        raise CorruptFileError(f"{source}:{_bad_utf8_line(path, member, source)}: not UTF-8 text; "
                               "convert the file to UTF-8") from None
