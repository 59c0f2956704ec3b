"""Shared fixtures: a tiny params file and a tiny project with the data stages already run."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline import raw
from pipeline.config import Params, Paths, load_params
from pipeline.overrides import merged
from pipeline.stages import build, clean, download, embed, tokenizer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here for telemetry

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

TINY = {
    "data": {"sample_pairs": 1500},
    "tokenize": {"vocab_size": 400},
    "embed": {"dim": 16, "epochs": 2},
    "build": {"max_tokens": 1500},
    "model": {"emb_dim": 16, "hidden": 32},
    "train": {"epochs": 2, "lr": 0.01, "checkpoint_every": 5, "experiment": "test"},
    "evaluate": {"samples": 5, "heatmaps": 2},
}


# The test files by their seconds under `make test` (--durations=0, 2026-12-07), slowest first. With `--dist loadfile
# --no-loadscope-reorder` (the Makefile) xdist hands them to its two workers in this order, a file at a time, the
# next one to a worker with at most two tests left: the long ones start at once and the short ones fill in at the
# end (by default it orders files by their number of tests and starts the long few-test files last). test_faults
# starts at once beside test_e2e: its worker builds the tiny project (built_tiny) that test_scale, test_compare and
# test_schedule copy later, so that nobody waits for it.
SLOWEST_FIRST = ("test_e2e.py", "test_faults.py", "test_scale.py", "test_train_eval.py", "test_compare.py",
                 "test_schedule.py", "test_model.py", "test_bench.py")

PREFECT = pytest.StashKey[tuple[subprocess.Popen, str, Path]]()
SHARED_PREFECT = "NMT_TEST_PREFECT_API"  # the URL of the controller's server, for its workers
SHARED_PREFECT_LOG = "NMT_TEST_PREFECT_LOG"  # and its log, for the message if it never answers


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs two workers), each worker and every process its tests start gets its
    share of the cores as torch threads: two workers with two OpenMP threads each would fight for two cores.
    xdist's controller launches the run's one Prefect server before the workers, which inherit its URL; it is not
    waited for here (9 s to answer: the workers start meanwhile), but by the first test that needs it."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
        config.stash[PREFECT] = (*launch_prefect_server(home), home)
        os.environ[SHARED_PREFECT] = config.stash[PREFECT][1]
        os.environ[SHARED_PREFECT_LOG] = str(home / "server.log")


def pytest_unconfigure(config: pytest.Config) -> None:
    if PREFECT in config.stash:
        server, _, home = config.stash[PREFECT]
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its own order


def write_raw(paths, roles, src="ko", tgt="en"):
    """data/raw/ as the download stage leaves it: ``roles`` maps train/valid/test to {name: (pairs, info)}."""
    sources = {}
    for role, named in roles.items():
        sources[role] = [{"name": name, **info, "lines": raw.write_pairs(paths.raw, role, name, src, tgt, pairs)}
                         for name, (pairs, info) in named.items()]
    raw.write_manifest(paths.raw, src, tgt, sources, [])


def write_params(root: Path, overrides: dict | None = None) -> Path:
    """params.yaml in ``root``: the project's defaults with the tiny settings and ``overrides``."""
    params = merged(merged(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), overrides or {})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; keep one test's store out of the next
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("NMT_DATA_MIRROR", "NMT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NMT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Paths]:
    """A project directory where download → build have run on 1,500 sample pairs."""
    root = tmp_path_factory.mktemp("tiny")
    params = load_params(write_params(root))
    paths = Paths(root)
    for stage in (download, clean, tokenizer, embed, build):
        stage.run(params, paths)
    return params, paths


@pytest.fixture(scope="session")
def built_tiny(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny project in a git repo with every stage run once by `make repro`, built once for the whole test
    run: a test that needs a built project copies it (``shutil.copytree(built_tiny, dest, symlinks=True)``).
    Under xdist the first worker to ask builds it in the run's shared temporary folder while a lock holds the
    other back (four test files use it, on either worker: a build is 23 s)."""
    from tests.project import built_project

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the workers' own folders are popen-gw0, popen-gw1 in the run's folder
        shared = shared.parent
    root = shared / "built-tiny" / "project"
    with open(shared / "built-tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (root.parent / "complete").exists():
            shutil.rmtree(root.parent, ignore_errors=True)  # a build that failed half-way
            built_project(root)
            (root.parent / "complete").touch()
    return root


@pytest.fixture
def http_server():
    """Serve a directory on 127.0.0.1; yields a function dir -> base URL."""
    servers = []

    def serve(directory: Path, handler: type | None = None) -> str:
        cls = handler or functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on a free port of 127.0.0.1, its database and log in ``home``: (process, API URL),
    at once; `wait_until_answering` waits for it."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=open(home / "server.log", "w"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{port}/api"


def wait_until_answering(url: str, log: Path, server: subprocess.Popen | None = None, seconds: int = 120) -> None:
    """Until ``url`` answers; the server's log tail if it does not in ``seconds`` or ``server`` exits first."""
    deadline = time.time() + seconds
    while True:
        alive = server is None or server.poll() is None
        assert alive and time.time() < deadline, f"nothing answered at {url}: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)


def prefect_post(url: str, body: dict, timeout: float = 60):
    """POST ``body`` as JSON to the Prefect server's REST API; its JSON answer. Retried on the codes Prefect's own
    client retries, up to its default five times: the server answers 503 for errors a client may retry (its
    sqlite database locked by another writer while both test workers use it, say)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    for attempt in range(6):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code not in (408, 429, 502, 503) or attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """One real Prefect server on 127.0.0.1 for every test that runs a flow, in process or in a subprocess
    (`make pipeline`, `flows.compare`): without it each flow starts a temporary server of its own (4-8 s
    apiece). Under xdist it is the controller's, shared by the workers; else one started here. Its URL goes into
    PREFECT_API_URL for the rest of the session."""
    shared = os.environ.get(SHARED_PREFECT)
    if shared:
        server, url = None, shared
        wait_until_answering(f"{url}/health", Path(os.environ[SHARED_PREFECT_LOG]))
    else:
        home = tmp_path_factory.mktemp("prefect-home")
        server, url = launch_prefect_server(home)
        wait_until_answering(f"{url}/health", home / "server.log", server)
    os.environ["PREFECT_API_URL"] = url
    yield url
    os.environ.pop("PREFECT_API_URL", None)
    if server is not None:
        server.terminate()
        server.wait(30)


@contextlib.contextmanager
def served_model(root: Path, uri: str, tracking_uri: str | None = None):
    """``mlflow models serve`` of the model ``uri`` in ``root``'s MLflow store (or ``tracking_uri``'s), on a free
    port of 127.0.0.1; yields ``post(payload) -> (HTTP status, JSON body)`` once the server answers."""
    from pipeline.tracking import default_uri

    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri or default_uri(root),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = Path(tempfile.mkdtemp()) / "serve.log"  # a file, not a pipe: nobody drains a pipe while it runs
    server = subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=open(log, "w"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)

    def post(payload: dict) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(payload).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", log, server)
        yield post
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(log.parent, ignore_errors=True)
