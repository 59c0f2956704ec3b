"""Faults through the real entry points: every failure ends with one line and loses nothing.

One project (a temp git repo with DVC) is built once; each test breaks something, runs `make
pipeline`, `make repro`, `dvc repro` or a stage's CLI as a user would, and checks the exit status,
the single error line at the end of the output (no traceback), and that every previous output and
dvc.lock are byte-identical afterwards.
"""

import gzip
import http.server
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import mlflow
import pytest
import yaml

from pipeline.tracking import default_uri
from tests.conftest import write_params
from tests.project import VENV, assert_one_line, run, snapshot, venv_env

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api, built_tiny):
    root = tmp_path_factory.mktemp("faults") / "project"
    shutil.copytree(built_tiny, root, symlinks=True)
    return root


@pytest.fixture
def good(project):
    """The project with its outputs complete; the params file is put back after the test."""
    params = (project / "params.yaml").read_bytes()
    before = snapshot(project)
    yield project, before
    (project / "params.yaml").write_bytes(params)


def _custom(root: Path, src, tgt, **extra) -> None:
    def spec(x):
        return x if isinstance(x, dict) else {"url": str(x)}
    write_params(root, {"data": {"corpus": "custom", "custom": {"train": {"src": spec(src), "tgt": spec(tgt)}},
                                 **extra}})


class _Counting(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, counts requests per path, and answers chosen paths with an error status."""

    hits: ClassVar[list[str]] = []  # each test gets its own subclass with its own lists (see `server`)
    status: ClassVar[dict[str, int]] = {}

    def do_GET(self):
        self.hits.append(self.path)
        code = self.status.get(self.path)
        if code:
            self.send_error(code)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, http_server):
    site = tmp_path / "site"
    site.mkdir()
    handler = type("Handler", (_Counting,), {"hits": [], "status": {}})

    def make(*args, **kwargs):
        return handler(*args, directory=str(site), **kwargs)

    base = http_server(site, make)
    return base, site, handler


def test_a_no_op_make_pipeline_says_one_line_per_stage(built_tiny, prefect_api, tmp_path):
    # a copy of its own: whatever the other tests here left stale would be redone (a retraining: 30 s);
    # the first run promotes what `make repro` registered
    root = tmp_path / "project"
    shutil.copytree(built_tiny, root, symlinks=True)
    first = run(root, "make pipeline")
    assert first.returncode == 0 and "Downloading artifacts" not in first.stdout + first.stderr, first.stderr
    before = snapshot(root)
    proc = run(root, "make pipeline")
    printed = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 0 and len(printed) <= 16, "\n".join(printed)
    # make's own lines (its command; "Entering directory" when CI runs the suite under `make test`) aside
    lines = [line for line in printed if not line.startswith(("make", str(VENV)))]
    stages = [line.split()[0] for line in lines[:9]]
    assert stages == ["download", "backtranslate", "clean", "tokenize", "embed", "build", "train", "evaluate",
                      "distill"], "\n".join(printed)
    assert "ran, outputs unchanged" in lines[0] and "off (backtranslate.enabled)" in lines[1]
    assert all(" cached " in line for line in lines[2:8])
    assert "off (distill.enabled)" in lines[8]  # the four student stages, off, in one line
    assert lines[-1].endswith("details: logs/pipeline.log") and "Flow run" not in proc.stdout + proc.stderr
    assert "Beginning flow run" in (root / "logs" / "pipeline.log").read_text()  # Prefect's lines went there

    def stages_outputs(files: dict) -> dict:  # promotion writes its decision even when no stage runs
        return {f: h for f, h in files.items() if f != "metrics/promote.json"}

    assert stages_outputs(snapshot(root)) == stages_outputs(before)


def test_mismatched_line_counts(good, tmp_path):
    root, before = good
    (tmp_path / "a.ko").write_text("하나\n둘\n셋\n")
    (tmp_path / "a.en").write_text("one\ntwo\n")
    _custom(root, tmp_path / "a.ko", tmp_path / "a.en")
    proc = run(root, "make repro")
    assert_one_line(proc, r"^error: download: different line counts: .*a\.en has 2 lines.*must be line-aligned")
    assert snapshot(root) == before


def test_truncated_gzip(good, tmp_path):
    root, before = good
    blob = gzip.compress(("안녕하세요\n" * 20000).encode())
    (tmp_path / "cut.ko.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "ok.en").write_text("hello\n" * 20000)
    _custom(root, tmp_path / "cut.ko.gz", tmp_path / "ok.en")
    proc = run(root, "dvc repro")
    # plain dvc adds its own "ERROR: failed to reproduce" after the stage's line; the stage's line is there
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "error: download: " in proc.stdout + proc.stderr and "truncated or corrupt" in proc.stdout + proc.stderr
    assert snapshot(root) == before


def test_bad_utf8_names_its_line(good, tmp_path):
    root, before = good
    (tmp_path / "bad.ko").write_bytes("하나\n둘\n".encode() + b"\xff\xfe broken\n" + "넷\n".encode())
    (tmp_path / "bad.en").write_text("one\ntwo\nthree\nfour\n")
    _custom(root, tmp_path / "bad.ko", tmp_path / "bad.en")
    proc = run(root, "make repro")
    assert_one_line(proc, r"^error: download: .*bad\.ko:3: not UTF-8 text; convert the file to UTF-8$")
    assert snapshot(root) == before


def _archive(path: Path, kind: str, members: dict[str, bytes]) -> None:
    if kind == "tar":
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(zipfile.ZipInfo(name), data)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_unsafe_archive_member(good, tmp_path, kind):
    root, before = good
    archive = tmp_path / f"evil.{kind}"
    _archive(archive, kind, {"corpus/train.ko": "안녕\n".encode(), "../../evil.en": b"hello\n"})
    _custom(root, {"url": str(archive), "member": "*.ko"}, {"url": str(archive), "member": "*.en"})
    proc = run(root, "stage", "download")
    assert_one_line(proc, r"^error: download: .*evil\.\w+: unsafe archive member '\.\./\.\./evil\.en'.*refusing it$")
    assert snapshot(root) == before


def test_http_404_is_not_retried(good, server):
    root, before = good
    base, site, handler = server
    (site / "ok.en").write_text("hello\n")
    _custom(root, f"{base}/gone.ko", f"{base}/ok.en")
    proc = run(root, "make pipeline")
    assert_one_line(proc, r"^error: download: .*/gone\.ko: HTTP 404 .* after 1 attempt")
    assert handler.hits.count("/gone.ko") == 1
    assert snapshot(root) == before


def test_http_500_is_retried_a_bounded_number_of_times(good, server):
    root, before = good
    base, site, handler = server
    (site / "ok.en").write_text("hello\n")
    handler.status["/flaky.ko"] = 500
    _custom(root, f"{base}/flaky.ko", f"{base}/ok.en")
    proc = run(root, "make pipeline")
    assert_one_line(proc, r"^error: download: .*/flaky\.ko: HTTP 500 .* after 3 attempt\(s\); a later run may succeed")
    assert handler.hits.count("/flaky.ko") == 6  # 3 attempts in the stage, then one Prefect retry of 3
    assert snapshot(root) == before


def test_params_typo_under_make_repro(good):
    root, before = good
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text.replace("\ntrain:\n", "\ntrain:\n  epochz: 3\n", 1))
    proc = run(root, "make repro")
    assert_one_line(proc, r"^error: params: \S*params\.yaml:\d+: train\.epochz: unknown key; did you mean 'epochs'\?$")
    assert snapshot(root) == before


def test_corrupt_cached_download_is_evicted_then_a_fixed_upstream_file_is_used(good, server):
    root, before = good
    base, site, _ = server
    lines = "".join(f"문장 {i}\n" for i in range(3000))
    blob = gzip.compress(lines.encode())
    (site / "train.ko.gz").write_bytes(blob[: len(blob) // 2])  # no checksum: the download itself succeeds
    (site / "train.en").write_text("".join(f"sentence {i}\n" for i in range(3000)))
    _custom(root, f"{base}/train.ko.gz", f"{base}/train.en")
    proc = run(root, "dvc repro")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    assert "truncated or corrupt file" in output and "removed the cached copy" in output
    assert snapshot(root) == before

    (site / "train.ko.gz").write_bytes(blob)  # fixed upstream
    proc = run(root, "stage", "download")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (root / "data" / "raw" / "train" / "custom.ko").read_text(encoding="utf-8") == lines


def test_two_runs_at_once(good):
    root, _ = good
    write_params(root, {"evaluate": {"samples": 7}})  # the first run has evaluate to redo
    first = subprocess.Popen(["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", "pipeline"], cwd=root,
                             env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in first.stdout:  # the first run holds the project from its first stage to its summary
        seen.append(line)
        if line.startswith("download "):  # its stage line
            break
    second = run(root, "make pipeline")
    assert_one_line(second, r"^error: pipeline: another run \(pid \d+\) is working on this project; wait for it")
    third = run(root, "make repro")  # DVC's own lock would stop it too, halfway, in 13 lines
    assert_one_line(third, r"^error: repro: another run \(pid \d+\) is working on this project; wait for it")
    rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, "".join(seen)[-2000:] + rest[-3000:]


def _wait_for_step_checkpoint(root: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list((root / "checkpoints").glob("step-0*[1-9]*.pt")):
            return
        time.sleep(0.05)
    raise AssertionError("training never wrote a step checkpoint")


def test_kill_9_during_training_keeps_everything_and_the_abandoned_run_ends_killed(good):
    root, _ = good
    write_params(root, {"train": {"epochs": 4}})
    before = snapshot(root)
    for f in (root / "checkpoints").glob("*.pt"):
        f.unlink()
    proc = subprocess.Popen(["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", "pipeline"], cwd=root,
                            env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_for_step_checkpoint(root, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshot(root) == before
    import torch

    killed_run = torch.load(root / "checkpoints" / "last.pt", weights_only=True)["state"]["run_id"]
    client = mlflow.MlflowClient(default_uri(root))
    assert client.get_run(killed_run).info.status == "RUNNING"

    write_params(root, {"train": {"epochs": 1, "lr": 0.008}})  # changed params: a fresh run, not a resume
    proc = run(root, "stage", "train")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert client.get_run(killed_run).info.status == "KILLED"
    experiment = client.get_experiment_by_name("test")
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")


@pytest.fixture
def small_disk(good):
    """``models/`` on a tmpfs with room for the current model but not for a new one beside it."""
    root, _ = good
    models = root / "models"
    saved = {f.name: f.read_bytes() for f in models.iterdir() if f.is_file()}  # not models/student/
    room = sum(len(b) for b in saved.values()) + 64 * 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(models)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}); RLIMIT_FSIZE cannot stand in: "
                    "it would stop the MLflow sqlite store, which is larger than a model, before the model")
    for name, blob in saved.items():
        (models / name).write_bytes(blob)
    yield root
    subprocess.run(["umount", str(models)], check=True)
    for name, blob in saved.items():  # what the tmpfs held, back on the real disk
        (models / name).write_bytes(blob)


def test_full_disk_keeps_the_previous_model(good, small_disk):
    root, _ = good
    write_params(root, {"train": {"lr": 0.007}})
    before = snapshot(root)
    proc = run(root, "make repro")
    assert_one_line(proc, r"^error: train: disk full writing .*models/model\.pt .*; the previous outputs are kept")
    assert snapshot(root) == before
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] != 0.007


def test_a_dead_mlflow_or_prefect_server_is_one_line_at_once(tmp_path):
    """A closed port of 127.0.0.1 named by MLFLOW_TRACKING_URI or PREFECT_API_URL: `make pipeline` and `make worker`
    stop before anything runs, in one line naming the URL (MLflow's client alone retried for 255 s)."""
    from tests.conftest import ROOT, free_port

    dead = f"http://127.0.0.1:{free_port()}"
    shutil.copy(ROOT / "Makefile", tmp_path)  # an empty project: should the check miss, nothing can run there
    for var, url, entry in (("MLFLOW_TRACKING_URI", dead, "pipeline"), ("PREFECT_API_URL", f"{dead}/api", "pipeline"),
                            ("PREFECT_API_URL", f"{dead}/api", "worker")):
        tic = time.monotonic()
        proc = subprocess.run(["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", entry], cwd=tmp_path,
                              env=venv_env(**{var: url}), capture_output=True, text=True, timeout=120)
        assert time.monotonic() - tic < 15
        assert_one_line(proc, rf"^error: pipeline: {var}={url} does not answer \(.*\); start that server, or unset")
