"""Shared fixtures: a tiny params file and a tiny project with the data stages already run."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import yaml

from pipeline import build, clean, download, embed, tokenizer
from pipeline.config import Params, Paths, load_params, merged

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
