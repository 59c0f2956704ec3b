"""Running ``dvc repro`` for the Prefect flow and for ``make repro``.

DVC runs as a subprocess with this interpreter first on ``PATH`` (so ``python -m pipeline.<stage>``
in dvc.yaml means the project's Python), in the project's directory; the caller's working directory
and environment are left alone. Its output is passed on line by line, and a failure is boiled down
to one line that names the stage, the cause and what to do:

* the stage's own ``error: <stage>: ...`` line (``pipeline.cli``) when it printed one;
* else what DVC said (a lock held by another run, a missing dependency, a killed process).

    python -m flows.dvc [stage ...]      # `make repro`: dvc repro, ending a failure with one line
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXIT_TRANSIENT = 75  # pipeline.cli: a retry may get past it


@dataclass
class Outcome:
    returncode: int
    ran: list[str] = field(default_factory=list)  # stages whose command ran
    error: str | None = None  # the one line, when it failed
    transient: bool = False  # a retry may succeed (a network error, a 5xx)


def stage_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("COLUMNS", "200")  # rich wraps log lines at 80 columns when not on a terminal
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def failure_line(lines: list[str], returncode: int) -> tuple[str, bool]:
    """(the one line that says why DVC failed, whether a retry may help)."""
    ours = [line for line in lines if line.startswith("error: ")]
    dvc = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    said = " ".join(dvc)
    exited = re.search(r"exited with (-?\d+)", said)
    status = int(exited.group(1)) if exited else returncode
    if ours:
        return ours[-1], status == EXIT_TRANSIENT
    stage = re.search(r"failed to reproduce '([^']+)'", said)
    name = stage.group(1) if stage else "dvc"
    if status < 0:
        sig = signal.Signals(-status).name
        return (f"error: {name}: killed by {sig}; its previous outputs and dvc.lock are as they were "
                "(training resumes from its last checkpoint): rerun", False)
    if "Unable to acquire lock" in said or "is busy, it is being blocked by" in said:
        return (f"error: {name}: another DVC process is working on this project; wait for it to finish "
                "(if none is running, remove .dvc/tmp/lock and .dvc/tmp/rwlock)", False)
    return f"error: {name}: {said or f'dvc exited with {returncode}'}", False


def lock_entry(root: Path, stage: str) -> dict | None:
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)


def repro(root: Path, targets: list[str] | None = None, *, single_item: bool = False, force: bool = False,
          on_line: Callable[[str], None] = print) -> Outcome:
    """``dvc repro [targets]`` in ``root``; every output line goes to ``on_line``."""
    cmd = [sys.executable, "-m", "dvc", "repro", *(targets or [])]
    cmd += ["--single-item"] if single_item else []
    cmd += ["--force"] if force else []
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=root, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            on_line(line)
    ran = [m.group(1) for line in lines if (m := re.match(r"Running stage '([^']+)'", line))]
    outcome = Outcome(proc.returncode, ran)
    if proc.returncode:
        outcome.error, outcome.transient = failure_line(lines, proc.returncode)
    return outcome


class ProjectBusy(Exception):
    """Another run (``make pipeline``, ``make repro``, a scheduled run) holds the project."""


@contextlib.contextmanager
def one_run_at_a_time(root: Path, who: str = "pipeline") -> Iterator[None]:
    """Hold the project's run lock; a second run stops at once, in one line, instead of interleaving its stages
    (or meeting DVC's own lock halfway through)."""
    lock_file = root / ".dvc" / "tmp" / "pipeline.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ProjectBusy(f"error: {who}: another run ({holder}) is working on this project; wait for it to "
                              "finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield


def main(argv: list[str] | None = None) -> None:
    from pipeline.common import PipelineError
    from pipeline.config import load_params

    targets = sys.argv[1:] if argv is None else argv
    root = Path.cwd()
    try:  # fail before DVC runs anything
        load_params(root / "params.yaml")
    except PipelineError as exc:
        print(f"error: params: {exc}", file=sys.stderr)
        sys.exit(1)
    try:
        with one_run_at_a_time(root, "repro"):
            outcome = repro(root, targets)
    except ProjectBusy as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    if outcome.error:
        print(outcome.error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
