"""The thin command line every stage shares:
``python -m pipeline.stages.<stage> [--params params.yaml] [--root .] [--role student]``.

``--role student`` runs the stage for the distilled student (``distill``): the student's folders
(``config.Paths``) and its params (``Params.student``: ``distill.student`` over the rest).

A stage's whole log, tracebacks included, goes to ``logs/<stage>.log``; the console gets progress and
a summary, and a failure ends with exactly one line on stderr:

    error: <stage>: <what went wrong, where, and what to do>

Exit status: 0 done, 1 a problem the user can fix, 75 (EX_TEMPFAIL) a transient failure that a retry
may get past, 70 (EX_SOFTWARE) a bug (the traceback is in the log file the line names).

Apart from ``common`` because it needs the config, and the config needs ``common``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pipeline.common import PipelineError, TransientError, setup_logging
from pipeline.config import ROLES, Paths, load_params

log = logging.getLogger("pipeline")

EXIT_ERROR, EXIT_SOFTWARE, EXIT_TRANSIENT = 1, 70, 75


def log_to_file(path: Path) -> logging.FileHandler:
    """Send the log to ``path`` as well (replacing the previous run's log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def failure(exc: BaseException, log_file: Path) -> tuple[str, int]:
    """The one line that reports ``exc``, and the exit status that goes with it."""
    if isinstance(exc, TransientError):
        return f"{exc}; a later run may succeed", EXIT_TRANSIENT
    if isinstance(exc, PipelineError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return (f"disk full{where} ({exc.strerror}); the previous outputs are kept: free some space and rerun",
                EXIT_ERROR)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; the previous outputs are kept (training resumes from its last checkpoint)", 130
    return f"unexpected {type(exc).__name__}: {exc} (traceback in {log_file})", EXIT_SOFTWARE


def stage_main(name: str, run: Callable[..., Any], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{name}", description=run.__doc__)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="the project root holding data/ and models/")
    parser.add_argument("--role", default="teacher", choices=ROLES, help="student: the distilled student's stage")
    args = parser.parse_args(argv)
    paths = Paths(Path(args.root), args.role)
    setup_logging()
    rank = int(os.environ.get("RANK", "0"))  # DDP: the other ranks keep logs of their own
    label, log_file = paths.log_file(name).stem, paths.log_file(name, rank)  # label: train or student_train
    file_log = log_to_file(log_file)
    start = time.perf_counter()
    try:
        params = load_params(args.params)
        run(params.student() if args.role == "student" else params, paths)
    except (Exception, KeyboardInterrupt) as exc:
        line, status = failure(exc, log_file)
        file_log.stream.write("".join(traceback.format_exception(exc)))  # the traceback: in the file only
        file_log.stream.write(f"error: {label}: {line}\n")
        file_log.flush()
        print(f"error: {label}: {line}", file=sys.stderr)
        sys.exit(status)
    log.info("%s finished in %.1fs", label, time.perf_counter() - start)


def run_command(main: Callable[[], Any]) -> NoReturn:
    """Run a command's ``main()`` as the whole process (``if __name__ == "__main__": run_command(main)``) and end
    it without the interpreter's teardown.

    With torch and MLflow loaded, that teardown frees half a million objects one by one: 1.1-1.2 s for evaluate
    and for the flow's own process (measured 2026-12-07), and one pipeline run starts several such processes. The
    exit handlers still run first (MLflow ends its run, Prefect stops its temporary server, logging flushes) and
    every output was written atomically before, so nothing is lost.

    The two calls before ``os._exit`` are the first two steps of CPython's own shutdown (``Py_FinalizeEx``), in
    its order: join the non-daemon threads and run the thread-level exit hooks (executors join their workers),
    then the ``atexit`` handlers. Both are private, and unchanged from 3.9 to 3.13."""
    try:
        main()
        status = 0
    except SystemExit as exc:  # sys.exit(1), sys.exit("message"), argparse's 2
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say anyway
            stream.flush()
    os._exit(status)
