"""Scheduled retraining against real servers: the test run's Prefect server and an MLflow server (with its own
artifact store) started here, both on 127.0.0.1, the flow served on an interval as `make serve` does, a flow run
created by the schedule (not by hand) that completes and promotes, and a clean Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from flows.pipeline import SCHEDULED
from tests.conftest import free_port, prefect_post, served_model, wait_until_answering, write_params

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _flow_runs(api: str) -> list[dict]:
    """The runs of the served deployment (the server is the test run's: other tests' runs are there too)."""
    return prefect_post(f"{api}/flow_runs/filter", {"deployments": {"name": {"any_": [SCHEDULED]}}}, timeout=10)


@pytest.fixture
def servers(tmp_path, prefect_api):
    """An MLflow server of its own, launched and not waited for (10-15 s to answer; the test waits once the
    project is copied, before the flow starts: the flow checks that its servers answer); the Prefect server is
    the test run's (its scheduler looks every 60 s, the default: the first run must not wait for it, see
    flows.pipeline.schedule_from)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    port, log = free_port(), tmp_path / "mlflow.log"
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}",
         "--artifacts-destination", str(tmp_path / "mlflow-artifacts")],
        # without MLflow 3's job runner (a second process importing MLflow, for GenAI scoring jobs: nothing here)
        env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT)
    try:
        yield ({**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}, tmp_path / "mlflow-artifacts",
               lambda: wait_until_answering(f"http://127.0.0.1:{port}/health", log, server))
    finally:
        server.terminate()
        server.wait(30)


def test_a_scheduled_run_retrains_and_promotes_against_real_servers(tmp_path, servers, built_tiny):
    env, artifacts, mlflow_answering = servers
    root = tmp_path / "project"
    shutil.copytree(built_tiny, root, symlinks=True)
    # a new seed: the scheduled run retrains (its data stages are cached) and registers on the MLflow server
    write_params(root, {"registry": {"model_name": "nmt-scheduled"}, "train": {"seed": 2}})

    log = tmp_path / "serve.log"
    mlflow_answering()  # the flow checks that the servers it is given answer before it starts (a dead one: one line)
    # started as from a terminal, where Ctrl-C has its default action: a suite launched in the background
    # (`make test &`, nohup, some CI runners) has SIGINT ignored, and that is inherited through exec
    serve = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--serve", "--interval", "600", "--root",
                              str(root)], cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, runs = time.time() + 400, []
        while time.time() < deadline and serve.poll() is None:
            runs = _flow_runs(env["PREFECT_API_URL"])
            if any(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs):
                break
            time.sleep(0.5)
        finished = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
        assert finished and finished[0]["state_type"] == "COMPLETED", log.read_text()[-4000:]
        assert finished[0]["auto_scheduled"] is True  # created from the schedule, not by hand
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        serve.wait(60)
    assert serve.returncode == 0 and log.read_text().rstrip().endswith("stopped")

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("nmt-scheduled", "champion")
    assert float(champion.tags["bleu"]) >= 0 and champion.tags["promotion"] == "promoted"
    assert client.get_run(champion.run_id).data.metrics["bleu"] == pytest.approx(float(champion.tags["bleu"]))
    assert any(artifacts.rglob("model.pt"))  # uploaded to the server's own artifact store
    assert json.loads((root / "metrics" / "promote.json").read_text())["decision"] == "promoted"

    # the champion, served from the tracking server (its artifacts through the server's proxy)
    with served_model(root, "models:/nmt-scheduled@champion", env["MLFLOW_TRACKING_URI"]) as post:
        status, answer = post({"inputs": ["나는 어제 도서관에서 책을 읽었다"]})
    assert status == 200 and len(answer["predictions"]) == 1 and answer["predictions"][0].strip(), answer
