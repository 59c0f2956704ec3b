"""A grid of experiments through the real DVC queue: runs land in the project's MLflow store, `dvc exp show`
lists them with their scores, the report compares them, and a bad grid fails before anything runs."""

import json
import subprocess
import sys

import mlflow
import pytest

from flows.compare import _hydra, _test_set_metrics
from pipeline.tracking import default_uri
from tests.project import committed_copy, venv_env

pytestmark = pytest.mark.slow

GRID = """
common:
  train.epochs: 1
experiments:
  bahdanau: {}
  luong-dot:
    model.rnn.attention: luong_dot
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api, built_tiny):
    """The built tiny project, committed: the data stages are cached for every experiment, which retrains."""
    return committed_copy(built_tiny, tmp_path_factory.mktemp("compare") / "project")


def _compare(root, *args):
    return subprocess.run([sys.executable, "-m", "flows.compare", *args], cwd=root, env=venv_env(), capture_output=True,
                          text=True, timeout=900)


def test_grid_values_reach_dvc_in_hydra_syntax():
    assert [_hydra(v) for v in (True, None, 3, 0.5, "gru", "it's", [8, 16], {"train": "x"})] == [
        "true", "null", "3", "0.5", "'gru'", "'it\\'s'", "[8, 16]", "{train: 'x'}"]


def test_the_report_reads_each_test_set_from_its_metric_names():
    metrics = {"bleu": 30.0, "test/flores200/bleu": 3.2, "test/flores200/bleu_ci": 0.3, "test/news/chrf": 21.0,
               "test/odd": 1.0, "train_loss": 2.0}
    assert _test_set_metrics(metrics) == {"test/flores200": {"bleu": 3.2, "bleu_ci": 0.3},
                                          "test/news": {"chrf": 21.0}}


def test_a_bad_grid_fails_before_any_experiment_runs(project, tmp_path):
    (tmp_path / "bad.yaml").write_text("experiments:\n  ok: {}\n  typo:\n    model.rnn.attenion: luong_dot\n")
    proc = _compare(project, "--grid", str(tmp_path / "bad.yaml"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: compare: grid 'bad', experiment 'typo': "
                                                    "model.rnn.attenion: unknown key (params.yaml has no such setting)")
    (tmp_path / "bad.yaml").write_text("experiments:\n  wrong:\n    model.rnn.attention: sideways\n")
    line = _compare(project, "--grid", str(tmp_path / "bad.yaml")).stderr.strip().splitlines()[-1]
    assert line.startswith("error: compare: grid 'bad', experiment 'wrong': model.rnn.attention: Input should be")
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=project, capture_output=True,
                           text=True)
    assert "wrong" not in shown.stdout and "typo" not in shown.stdout  # nothing was queued


def test_a_grid_runs_through_the_dvc_queue_into_one_mlflow_store(project, tmp_path):
    (tmp_path / "two.yaml").write_text(GRID)
    proc = _compare(project, "--grid", str(tmp_path / "two.yaml"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    report = (project / "reports" / "compare.md").read_text().splitlines()
    rows = [line for line in report if line.startswith("| ") and not line.startswith("| experiment")]
    assert len(rows) == 2 and {r.split(" | ")[0].strip("| ") for r in rows} == {"bahdanau", "luong-dot"}
    cells = [r.split(" | ") for r in rows]
    assert all(" ± " in c[5] and " ± " in c[6] for c in cells)  # BLEU and chrF with their 95% intervals
    assert cells[0][7] == "-" and 0 < float(cells[1][7]) <= 1  # the paired test against the best row
    assert (project / "reports" / "compare.png").stat().st_size > 1000

    client = mlflow.MlflowClient(default_uri(project))  # the project's own store, not the queue's temp copies
    experiment = client.get_experiment_by_name("test")
    runs = client.search_runs([experiment.experiment_id], "tags.sweep LIKE 'two-%'")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent[0].info.run_id}
    assert {r.data.params["model.rnn.attention"] for r in children} == {"bahdanau", "luong_dot"}
    for r in children:
        assert r.data.tags["dvc_experiment"].startswith("two-")
        assert [m.step for m in client.get_metric_history(r.info.run_id, "valid_loss")] == [1]
        assert "bleu" in r.data.metrics and "chrf" in r.data.metrics
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"compare.md", "compare.png"}

    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=project,
                                      capture_output=True, text=True, check=True).stdout)
    experiments = {e["name"]: e for commit in shown for e in (commit.get("experiments") or [])
                   for e in e["revs"]}
    names = {r.data.tags["dvc_experiment"] for r in children}
    assert names <= set(experiments)
    for name in names:
        scores = experiments[name]["data"]["metrics"]["metrics/eval.json"]["data"]
        assert scores["bleu"] >= 0 and "chrf" in scores


def test_learning_curves_are_dvc_plots(project):
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=project, capture_output=True,
                           text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    plots = json.loads(shown.stdout)
    assert any("valid_loss" in name for name in plots.get("data", plots))
    assert (project / "dvclive" / "plots" / "metrics" / "valid_loss.tsv").read_text().startswith("step\tvalid_loss")
