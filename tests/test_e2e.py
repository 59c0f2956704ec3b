"""The whole flow on a tiny config, in a temp git repo: Prefect -> DVC stages -> MLflow."""

import json
import shutil
import subprocess
import sys

import mlflow
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import nmt_pipeline, stage_order
from pipeline.tracking import default_uri
from tests.conftest import ROOT, write_params

pytestmark = pytest.mark.slow

STAGES = ["download", "clean", "tokenize", "embed", "build", "train", "evaluate"]


@pytest.fixture(scope="module")
def prefect():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A fresh git repo holding the project's tracked and to-be-tracked files, nothing generated."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("data/", "models/", "metrics/", "reports/")) or f == "dvc.lock":
            continue
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, root / f)
    write_params(root)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root


def _dvc(root, *args):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def test_stage_order_comes_from_dvc_yaml(repo):
    assert stage_order(repo) == STAGES


def test_full_flow_then_fully_cached_then_only_train_and_evaluate(repo, prefect):
    first = nmt_pipeline(root=str(repo))
    assert [s["stage"] for s in first["stages"]] == STAGES
    assert all(s["status"] == "ran" for s in first["stages"])

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["model"]["hidden"] == 32
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert metrics["bleu"] == first["bleu"] and (repo / "models" / "model.pt").exists()
    shown = _dvc(repo, "metrics", "show", "--json")
    assert json.loads(shown.stdout)[""]["data"]["metrics/eval.json"]["data"]["bleu"] == metrics["bleu"]

    run_id = json.loads((repo / "models" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(default_uri(repo))
    run = client.get_run(run_id)
    assert run.data.metrics["bleu"] == pytest.approx(metrics["bleu"], abs=0.01)
    assert {"chrf", "train_loss", "valid_loss", "valid_ppl"} <= set(run.data.metrics)
    data_md5 = next(o["md5"] for o in lock["stages"]["build"]["outs"] if o["path"] == "data/dataset")
    assert run.data.tags["dvc_data_hash"] == data_md5
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["git_commit"].startswith(head)
    assert any(m.source_run_id == run_id for m in client.search_logged_models([run.info.experiment_id]))

    second = nmt_pipeline(root=str(repo))  # download looks upstream every time; nothing changed there
    assert {s["stage"]: s["status"] for s in second["stages"]} == {"download": "unchanged"} | {
        name: "cached" for name in STAGES[1:]}
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == lock
    status = _dvc(repo, "status", "--json")
    assert json.loads(status.stdout) == {"download": ["always changed"]}, status.stdout + status.stderr

    write_params(repo, {"train": {"lr": 0.003}})
    third = nmt_pipeline(root=str(repo))
    ran = [s["stage"] for s in third["stages"] if s["status"] == "ran"]
    assert ran == ["train", "evaluate"]
    assert len(client.search_runs([run.info.experiment_id])) == 2


def test_bad_params_fail_before_any_stage(repo, prefect):
    good = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(good.replace("train:\n", "train:\n  epochz: 3\n", 1))
        with pytest.raises(Exception, match=r"params.yaml:\d+: train.epochz: unknown key"):
            nmt_pipeline(root=str(repo))
    finally:
        (repo / "params.yaml").write_text(good)
