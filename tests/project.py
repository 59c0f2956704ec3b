"""Driving a project as a user would: a copy of this checkout in a temp git repo, the entry points
(`make pipeline`, `make repro`, `dvc repro`, a stage's CLI) run with the project's venv, and what a test
checks afterwards (the last line, a snapshot of the outputs). Shared by the fault, schedule, scale and
compare tests and the conftest fixtures."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, write_params

VENV = Path(sys.executable).parent.parent
OUTPUTS = ("data", "models", "metrics", "reports")


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (f.startswith(OUTPUTS) and not f.endswith(".gitignore")) or f == "dvc.lock":
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / f).write_bytes((ROOT / f).read_bytes())


def venv_env(**extra: str) -> dict[str, str]:
    # as after `source .venv/bin/activate`, which docs/development.md asks for before calling dvc directly
    return {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}", "NMT_RETRY_DELAY": "0",
            **extra}


def run(root: Path, entry: str, *args: str, env: dict | None = None, timeout: int = 300,
        preexec=None) -> subprocess.CompletedProcess:
    commands = {
        "make pipeline": ["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", "pipeline"],
        "make repro": ["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", "repro"],
        "dvc repro": [str(VENV / "bin" / "dvc"), "repro"],
        "stage": [sys.executable, "-m", f"pipeline.stages.{args[0] if args else ''}"],
    }
    cmd = commands[entry] + (list(args[1:]) if entry == "stage" else list(args))
    return subprocess.run(cmd, cwd=root, env=env or venv_env(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last line the command printed, leaving out make's own 'make: *** ... Error 1' trailer."""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not ln.startswith("make")]
    return lines[-1]


def assert_one_line(proc: subprocess.CompletedProcess, pattern: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    line = last_line(proc)
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}\n{output[-3000:]}"
    return line


def snapshot(root: Path) -> dict[str, str]:
    files = [f for d in OUTPUTS for f in (root / d).rglob("*") if f.is_file()] + [root / "dvc.lock"]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def commit_all(root: Path, message: str) -> None:
    """Commit everything in the git repo at ``root``, as the tests' own author."""
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(cmd, cwd=root, check=True)


def init_repo(root: Path) -> Path:
    """A git repo at ``root`` with everything in it committed."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    commit_all(root, "init")
    return root


def committed_copy(built: Path, root: Path) -> Path:
    """A copy of the built project at ``root`` with what it built committed (dvc.lock, metrics)."""
    shutil.copytree(built, root, symlinks=True)
    commit_all(root, "built")
    return root


def built_project(root: Path) -> Path:
    """The project on the tiny config in a git repo at ``root``, every stage run once by `make repro`."""
    copy_checkout(root)
    write_params(root)
    init_repo(root)
    proc = run(root, "make repro")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return root


