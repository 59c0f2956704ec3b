"""Small helpers every stage shares: the error type, atomic outputs, logging and the stage CLI."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline")

_UMASK = os.umask(0)
os.umask(_UMASK)


class PipelineError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""


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
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp directory that replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path, encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def setup_logging(level: int = logging.INFO) -> None:
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                            handlers=[RichHandler(show_path=False, rich_tracebacks=True)])
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


def stage_main(name: str, run: Callable[..., Any], argv: list[str] | None = None) -> None:
    """The thin CLI of a stage: ``python -m pipeline.<name> [--params params.yaml] [--root .]``."""
    from pipeline.config import Paths, load_params

    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{name}", description=run.__doc__)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="the project root holding data/ and models/")
    args = parser.parse_args(argv)
    setup_logging()
    start = time.perf_counter()
    try:
        params = load_params(args.params)
        run(params, Paths(Path(args.root)))
    except PipelineError as exc:
        print(f"error: {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("%s finished in %.1fs", name, time.perf_counter() - start)
