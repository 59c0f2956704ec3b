"""MLflow wiring: where runs go, and the tags that tie a run to its code and data.

Default: a sqlite file ``mlflow.db`` with artifacts in ``mlartifacts/``, both in the project root,
so a fresh clone needs no server. ``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.common import git_commit

log = logging.getLogger(__name__)


def default_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(root)


def experiment_id(mlflow: Any, name: str, root: Path) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so compare URIs, not the environment
    local = mlflow.get_tracking_uri() == default_uri(root)
    location = (root / "mlartifacts").resolve().as_uri() if local else None
    return mlflow.create_experiment(name, artifact_location=location)


def connect(root: Path) -> Any:
    # an offline-first tool does not report usage unless the user turns it on
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
    commit = git_commit(root)
    return {"git_commit": commit, "mlflow.source.git.commit": commit.split("-")[0],
            "dvc_data_hash": dvc_data_hash(root)}
