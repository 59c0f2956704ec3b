"""The memory allocator of training processes: tcmalloc where it is installed, glibc's malloc otherwise.

A training step frees and reallocates tensors of a new shape at every batch. glibc's malloc hands the large
blocks back to the system and faults them in again the next step, and keeps fragments of the rest: on this
project's 2-core CPU, 200 steps of the d 256 Transformer took 246 s and peaked at 6.0 GB of RSS under glibc,
184 s and 2.4 GB under tcmalloc (``bench/streaming.py``, docs/scaling.md). PyTorch's CPU performance guide
suggests the same. An allocator can only be chosen before the process starts, so the train stage (and each
bench that trains) re-executes itself once with tcmalloc preloaded (``LD_PRELOAD``). The outputs are the same
either way, only the time and the memory differ, which is why this is not a params key.

Install it with the distribution's package (Debian, Ubuntu: ``apt install libtcmalloc-minimal4``; Fedora:
``gperftools-libs``); ``NMT_ALLOCATOR=system`` keeps glibc's malloc.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping

# gperftools' tcmalloc: the minimal build (no profiler) first, as ldconfig knows them
TCMALLOC = ("tcmalloc_minimal", "tcmalloc")
GLIBC = "glibc malloc"
# tcmalloc reports every allocation over 1 GiB on stderr; a large vocabulary's embedding gradient is one
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find_tcmalloc() -> str | None:
    """tcmalloc's shared library as the dynamic linker finds it (``libtcmalloc_minimal.so.4``), or None."""
    return next(filter(None, map(ctypes.util.find_library, TCMALLOC)), None)


def to_preload(environ: Mapping[str, str], library: str | None) -> str | None:
    """The library to preload into a new training process, or None: none installed, one preloaded already
    (this process is the re-executed one, or the user chose an allocator), or ``NMT_ALLOCATOR=system``."""
    choice = environ.get("NMT_ALLOCATOR", "auto")
    if choice not in ("auto", "system"):
        raise SystemExit(f"error: NMT_ALLOCATOR must be auto or system (got {choice!r}); unset it for auto")
    if choice == "system" or library is None or in_use(environ) != GLIBC:
        return None
    return library


def in_use(environ: Mapping[str, str] = os.environ) -> str:
    """What this process allocates with, for the log: the preloaded malloc library, or glibc."""
    preloaded = [lib for lib in environ.get("LD_PRELOAD", "").replace(":", " ").split() if "malloc" in lib]
    return preloaded[0] if preloaded else GLIBC


def reexec_with_tcmalloc() -> None:
    """Replace this process by the same command (``sys.orig_argv``: ``python -m pipeline.stages.train ...``
    or a bench script) with tcmalloc preloaded, where ``to_preload`` says so; otherwise return and run as is."""
    library = to_preload(os.environ, find_tcmalloc())
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**QUIET, **os.environ, "LD_PRELOAD": preload})
