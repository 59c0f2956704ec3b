"""Experiment tracking: where MLflow runs go, the tags that tie a run to its code and data, a training's
run, and the learning curves in DVCLive's layout.

Default: a sqlite file ``mlflow.db`` with artifacts in ``mlartifacts/``, both in the project root,
so a fresh clone needs no server. ``MLFLOW_TRACKING_URI`` points everything at a server instead.

"The project root" is the one DVC names in ``DVC_ROOT`` when it runs a stage: for ``dvc exp run
--temp`` and queued experiments that is the real project, not the temporary copy they run in (whose
``mlflow.db`` would be thrown away with it). So every run lands in the project's own store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipeline.common import git_commit, read_lines

log = logging.getLogger(__name__)

TEST_HYPOTHESES = "evaluation/test.hyp"  # a run's test hypotheses: evaluate logs them, promotion and compare test them
MODEL_CARD = "model_card.md"  # sources, licences, cleaning, scores per test set, decoding (pipeline.model_card)


def logged_hypotheses(run_id: str, tracking_uri: str) -> list[str] | None:
    """The test hypotheses a run logged; None for a run that logged none (one from before they were)."""
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:  # else MLflow downloads to a temporary folder left behind
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_HYPOTHESES,
                                                       tracking_uri=tracking_uri, dst_path=scratch)
        except Exception:  # MlflowException, OSError: no such artifact
            return None
        return read_lines(Path(path))


def project_root(root: Path) -> Path:
    return Path(os.environ.get("DVC_ROOT") or root)


def default_uri(root: Path) -> str:
    return f"sqlite:///{(project_root(root) / 'mlflow.db').resolve()}"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(root)


def experiment_id(mlflow: Any, name: str, root: Path) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so compare URIs, not the environment
    local = mlflow.get_tracking_uri() == default_uri(root)
    location = (project_root(root) / "mlartifacts").resolve().as_uri() if local else None
    return mlflow.create_experiment(name, artifact_location=location)


def connect(root: Path) -> Any:
    # an offline-first tool does not report usage unless the user turns it on
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download, on the console
    import mlflow

    for noisy in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(root))
    # set_tracking_uri also exports MLFLOW_TRACKING_URI, which would then point every later project
    # connected from this process (a flow, a benchmark, a test) at this one's store
    if user_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return mlflow


def dvc_data_hash(root: Path, out: str = "data/dataset") -> str:
    """The md5 DVC recorded for ``out`` in dvc.lock, or 'untracked' outside a DVC run."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return "untracked"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for o in stage.get("outs", []):
            if o.get("path") == out:
                return o.get("md5", "untracked")
    return "untracked"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = json.dumps(v) if isinstance(v, list) else v
    return flat


def run_tags(root: Path) -> dict[str, str]:
    """git commit and data hash; under ``dvc exp run`` the experiment's name; in a sweep (flows/compare.py)
    the sweep and its parent run."""
    commit = git_commit(root)
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit.split("-")[0],
            "dvc_data_hash": dvc_data_hash(root)}
    for env, tag in (("DVC_EXP_NAME", "dvc_experiment"), ("NMT_SWEEP", "sweep"),
                     ("NMT_PARENT_RUN_ID", "mlflow.parentRunId")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def end_abandoned_run(mlflow: Any, run_id: str) -> None:
    """Mark KILLED the MLflow run of a training that was interrupted and will not be resumed."""
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return  # another store, or deleted
    if run.info.status == "RUNNING":
        mlflow.MlflowClient().set_terminated(run_id, "KILLED")
        log.info("MLflow run %s was left running by an interrupted training; marked KILLED", run_id)


def training_run(mlflow: Any, run_id: str, params: Any, paths: Any, extra: dict[str, Any]) -> Any:
    """The MLflow run of a training (``params``, ``paths``: the project's): the resumed ``run_id``, or a new
    run with every param, ``extra`` and the data stages' reports logged, so the run's metrics are the model's."""
    if run_id:
        return mlflow.start_run(run_id=run_id)
    m = params.model
    name = (f"{params.data.name}-transformer" if m.arch == "transformer"
            else f"{params.data.name}-{m.rnn.cell}-{m.rnn.attention}")
    if paths.role != "teacher":  # the distilled student: its run sits beside its teacher's
        name += f"-{paths.role}"
    active = mlflow.start_run(experiment_id=experiment_id(mlflow, params.train.experiment, paths.root),
                              run_name=name, tags={**run_tags(paths.root), "role": paths.role})
    mlflow.log_params(flatten(params.model_dump()))
    mlflow.log_params(extra)
    for stage in ("clean", "tokenize", "build"):
        report = paths.metrics / f"{stage}.json"
        if report.exists():
            mlflow.log_params(flatten(json.loads(report.read_text()), f"data_report.{stage}."))
            mlflow.log_artifact(str(report), artifact_path="data_reports")
    embeddings = paths.embeddings / "info.json"
    if params.train.embeddings == "pretrained" and embeddings.exists():
        mlflow.log_params(flatten(json.loads(embeddings.read_text()), "data_report.embeddings."))
        mlflow.log_artifact(str(paths.embeddings / "neighbours.tsv"), artifact_path="embeddings")
    return active


def write_curves(outputs: Any, directory: Path, history: list[dict[str, float]]) -> None:
    """Per-epoch curves in DVCLive's layout (``metrics.json``, ``plots/metrics/<name>.tsv``, step = epoch),
    which ``dvc plots show/diff`` draw and ``dvc exp show`` lists, through ``outputs`` (``common.Outputs``).
    Written once, from the checkpointed history, at the end: a failed, killed or resumed run never leaves
    half a curve behind. The two parts are replaced one by one, not ``directory`` as a whole, because the
    student's curves live inside the teacher's (``dvclive/student``)."""
    from dvclive import Live

    with tempfile.TemporaryDirectory() as scratch:
        with Live(dir=scratch, save_dvc_exp=False, dvcyaml=False) as live:
            for row in history:
                live.step = int(row["epoch"])
                for name, value in row.items():
                    if name not in ("epoch", "step"):
                        live.log_metric(name, value)
        shutil.copytree(Path(scratch) / "plots", outputs.dir(directory / "plots"), dirs_exist_ok=True)
        with outputs.open(directory / "metrics.json", "wb") as fh:
            fh.write((Path(scratch) / "metrics.json").read_bytes())
