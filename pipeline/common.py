"""Low-level helpers every module may use: the error type, atomic outputs, logging, git.

Imports nothing from ``pipeline``, so anything can import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline")

_UMASK = os.umask(0)
os.umask(_UMASK)


class PipelineError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""


class TransientError(PipelineError):
    """A failure that a retry later may not meet again (a network error, a server's 5xx)."""


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should look like any other file
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        exc.filename = exc.filename or str(path)  # "disk full writing <path>"
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class Outputs:
    """A stage's outputs, written beside their final paths and moved into place together at the end.

    DVC keeps a stage's previous outputs while it runs (``persist: true`` in dvc.yaml), so a stage
    that fails or is killed at any point before ``commit`` leaves them, byte for byte, as they were:
    no output is replaced while another is still being written, or before the stage's MLflow logging
    is done. ``commit`` is a handful of renames.
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []  # (temp, final)

    def _temp(self, path: Path, directory: bool) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
            os.chmod(tmp, 0o777 & ~_UMASK)
        else:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should look like any other file
        self._moves.append((tmp, path))
        return tmp

    def dir(self, path: Path) -> Path:
        """An empty directory that becomes ``path``."""
        return self._temp(path, directory=True)

    @contextlib.contextmanager
    def open(self, path: Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
        try:
            with open(self._temp(path, directory=False), mode, **kwargs) as fh:
                yield fh
        except OSError as exc:
            exc.filename = exc.filename or str(path)
            raise

    def json(self, path: Path, obj: Any) -> None:
        with self.open(path, encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
            fh.write("\n")

    def commit(self) -> None:
        for tmp, final in self._moves:
            if tmp.is_dir() and final.exists():
                old = final.with_name(f".{final.name}.old{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
        self._moves = []

    def discard(self) -> None:
        for tmp, _ in self._moves:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._moves = []


@contextlib.contextmanager
def stage_outputs() -> Iterator[Outputs]:
    """``with stage_outputs() as out:`` write every output through ``out``; all or nothing."""
    out = Outputs()
    try:
        yield out
        out.commit()
    finally:
        out.discard()


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path, encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied key by key, nested sections merged rather than replaced."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def setup_logging(level: int = logging.INFO) -> None:
    if not logging.getLogger().handlers:
        from rich.console import Console
        from rich.logging import RichHandler

        # stderr: stdout is data (translate's one line per input line), logs must never mix into it
        logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                            handlers=[RichHandler(console=Console(stderr=True), show_path=False,
                                                  rich_tracebacks=True)])
    for chatty in ("gensim", "smart_open"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def git_commit(root: Path) -> str:
    """The current commit, with '-dirty' if tracked files changed; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")
