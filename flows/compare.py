"""Compare models side by side: a grid of params changes, run as DVC experiments, one MLflow run each.

    python -m flows.compare [--grid lineup] [--jobs 1]      # `make compare GRID=lineup JOBS=1`

1. The grid (``flows/grids/<name>.yaml``, or any YAML file) names experiments by their changes to
   params.yaml. Every entry is validated before anything runs: a bad key or value is one line naming
   the entry.
2. A parent MLflow run is opened for the sweep; each entry is queued with ``dvc exp run --queue -n
   <name> -S key=value ...``.
3. ``dvc exp run --run-all -j N`` starts the DVC queue's workers (as ``dvc queue start -j N`` does) and
   waits for them. Each experiment runs in a temporary copy of the project; DVC names the project in
   ``DVC_ROOT``, so every run logs to the project's own MLflow store (pipeline/tracking.py), tagged
   with its DVC experiment name, the sweep, and the parent run (the workers inherit the environment).
4. ``reports/compare.md`` (one row per experiment, best BLEU first) and ``reports/compare.png``
   (valid loss per epoch, every run on one plot) are written and logged to the parent run.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.states import Failed

from flows.dvc import stage_env

GRIDS = Path(__file__).parent / "grids"


class GridError(Exception):
    """A grid that cannot run; the message is the one line to show."""


def load_grid(grid: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """(name, {experiment: {dotted key: value}}) with the grid's ``common`` changes merged into each."""
    path = Path(grid) if grid.endswith((".yaml", ".yml")) else GRIDS / f"{grid}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in GRIDS.glob("*.yaml")))
        raise GridError(f"error: compare: no grid '{grid}'; the grids are: {known} (or give a .yaml file)")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    experiments = spec.get("experiments") or {}
    if not experiments:
        raise GridError(f"error: compare: {path} lists no experiments (an 'experiments:' mapping)")
    for name in experiments:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
            raise GridError(f"error: compare: {path}: experiment name '{name}' must be letters, digits, '-', '_'")
    return path.stem, {str(name): {**(spec.get("common") or {}), **(changes or {})}
                       for name, changes in experiments.items()}


def validate(root: Path, grid: str, experiments: dict[str, dict[str, Any]]) -> None:
    """Every experiment's params, checked by the params model before any runs."""
    from pipeline.common import PipelineError
    from pipeline.config import parse_params
    from pipeline.overrides import set_dotted

    base = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    for name, changes in experiments.items():
        params = yaml.safe_load(yaml.safe_dump(base))
        for dotted, value in changes.items():
            try:
                set_dotted(params, dotted, value)
            except KeyError:
                raise GridError(f"error: compare: grid '{grid}', experiment '{name}': {dotted}: unknown key "
                                "(params.yaml has no such setting)") from None
        try:
            parse_params(yaml.safe_dump(params, allow_unicode=True), Path("params.yaml"))
        except PipelineError as exc:
            detail = re.sub(r"^params\.yaml(:\d+)?: ", "", str(exc))
            raise GridError(f"error: compare: grid '{grid}', experiment '{name}': {detail}") from None


def _hydra(value: Any) -> str:
    """A value as `dvc exp run -S key=value` parses it (Hydra's override grammar)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_hydra(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "\\'") + "'"


def _dvc(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env or stage_env(),
                          capture_output=True, text=True)


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"dvc exited with {done.returncode}"


def queue(root: str, sweep: str, experiments: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    for name, changes in experiments.items():
        exp = f"{sweep}-{name}"
        sets = [arg for dotted, value in changes.items() for arg in ("-S", f"{dotted}={_hydra(value)}")]
        done = _dvc(Path(root), "exp", "run", "--queue", "-n", exp, *sets)
        if done.returncode:
            raise GridError(f"error: compare: could not queue '{name}': {_last_line(done)}")
        names.append(exp)
    get_run_logger().info("queued %d experiments: %s", len(names), ", ".join(names))
    return names


def _follow(proc: subprocess.Popen, source: Any) -> Iterator[str]:
    """The lines ``proc`` writes to the file ``source`` reads, until it exits."""
    pending = b""
    while True:
        ended = proc.poll() is not None
        pending += source.read()
        *lines, pending = pending.split(b"\n")
        yield from (line.decode("utf-8", "replace").rstrip() for line in lines)
        if ended:
            if pending:
                yield pending.decode("utf-8", "replace").rstrip()
            return
        time.sleep(0.5)


def run_queue(root: str, jobs: int, sweep: str, parent_run_id: str) -> None:
    """Every queued experiment, ``jobs`` at a time; the workers inherit the sweep's tags through the environment."""
    logger = get_run_logger()
    env = stage_env() | {"NMT_SWEEP": sweep, "NMT_PARENT_RUN_ID": parent_run_id}
    status = _dvc(Path(root), "queue", "status", env=env).stdout
    active = re.search(r"Worker status: (\d+) active", status)  # an idle one (a grid's just ended) takes ours
    if active and int(active.group(1)):
        raise GridError("error: compare: a DVC queue worker is already running (dvc queue status); "
                        "stop it with `dvc queue stop` and run again")
    # DVC's output goes through a file, not a pipe: the queue worker it starts inherits its stdout and would
    # hold a pipe open through its 10 s of idling after the last experiment
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "queue.log"
        with open(log, "wb") as sink, open(log, "rb") as source:
            proc = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "--run-all", "-j", str(jobs)],
                                    cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
            for line in _follow(proc, source):
                logger.info(line)


def write_report(root: Path, grid: str, sweep: str, experiments: dict[str, dict[str, Any]]) -> list[dict]:
    """reports/compare.md and reports/compare.png; the rows, best BLEU first."""
    from pipeline.common import atomic_file
    from pipeline.tracking import connect

    mlflow = connect(root)
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.sweep = '{sweep}'",
                              output_format="list")
    by_name = {run.data.tags.get("dvc_experiment", "").removeprefix(f"{sweep}-"): run for run in runs}
    rows = []
    for name, changes in experiments.items():
        run = by_name.get(name)
        row = {"name": name, "changes": changes, "ok": False, "parameters": None, "tokens_per_sec": None,
               "valid_loss": None, "bleu": None, "bleu_ci": None, "chrf": None, "chrf_ci": None, "p_value": None,
               "minutes": None, "curve": [], "run": run}
        if run is not None:
            m = run.data.metrics
            row |= {"ok": run.info.status == "FINISHED" and "bleu" in m,
                    "parameters": int(run.data.params.get("model.parameters", 0)) or None,
                    "tokens_per_sec": m.get("train_tokens_per_sec"), "valid_loss": m.get("best_valid_loss"),
                    "bleu": m.get("bleu"), "chrf": m.get("chrf"), "bleu_ci": m.get("bleu_ci"),
                    "chrf_ci": m.get("chrf_ci"),
                    "minutes": (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else None,
                    "curve": [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, "valid_loss")],
                    "test_sets": {key.split("/")[1]: m for key, m in _test_set_metrics(m).items()}}
        rows.append(row)
    rows.sort(key=lambda r: -(r["bleu"] if r["bleu"] is not None else -1))
    _p_values(root, client, rows)

    def cell(value: Any, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-"

    def score(r: dict, key: str) -> str:
        ci = r[key + "_ci"]
        return "-" if r[key] is None else f"{r[key]:.2f}" + (f" ± {ci:.2f}" if ci is not None else "")

    # the judged test set is BLEU/chrF; every other test set a column group of its own
    others = list(dict.fromkeys(name for r in rows for name in r.get("test_sets", {})))[1:]
    lines = [f"# Model comparison: grid `{grid}` (sweep {sweep})", "",
             "BLEU and chrF with their 95% bootstrap confidence intervals; p: sacrebleu's paired bootstrap test "
             "of each model's test BLEU against the first row's (below 0.05: the difference is unlikely to be "
             "chance)." + (f" BLEU and chrF are on the judged test set; {', '.join(others)}: the other test sets."
                           if others else ""), "",
             "| experiment | changes | parameters | tokens/s | best valid loss | BLEU | chrF | p vs best | minutes |"
             + "".join(f" {name} BLEU | {name} chrF |" for name in others),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(others)]
    for r in rows:
        changes = ", ".join(f"`{k}={v}`" for k, v in r["changes"].items()) or "(the defaults)"
        status = "" if r["ok"] else " (failed)"
        extra = "".join(f" {score(sets, 'bleu')} | {score(sets, 'chrf')} |" for sets in
                        (_scores(r.get("test_sets", {}).get(name, {})) for name in others))
        lines.append(f"| {r['name']}{status} | {changes} | {cell(r['parameters'], ',')} | "
                     f"{cell(r['tokens_per_sec'], ',.0f')} | {cell(r['valid_loss'], '.3f')} | "
                     f"{score(r, 'bleu')} | {score(r, 'chrf')} | {cell(r['p_value'], '.3f')} | "
                     f"{cell(r['minutes'], '.1f')} |" + extra)
    reports = root / "reports"
    with atomic_file(reports / "compare.md", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    _plot(rows, reports / "compare.png", grid)
    return rows


def _test_set_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``test/<name>/<metric>`` (the evaluate stage's per-test-set metrics) as {test/<name>: {metric: value}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("test/") and key.count("/") == 2:
            prefix, metric = key.rsplit("/", 1)
            out.setdefault(prefix, {})[metric] = value
    return out


def _scores(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: metrics.get(k) for k in ("bleu", "bleu_ci", "chrf", "chrf_ci")}


def _p_values(root: Path, client: Any, rows: list[dict]) -> None:
    """Each row's p-value against the best row (paired bootstrap on test BLEU), where both runs logged their
    test hypotheses and were scored on the project's own test set (the same test-data hash)."""

    from pipeline.common import read_lines
    from pipeline.config import load_params
    from pipeline.scoring import files_digest, paired_test
    from pipeline.tracking import logged_hypotheses

    params = load_params(root / "params.yaml")
    files = [root / "data" / "clean" / "original" / f"test.{lang}" for lang in (params.data.src, params.data.tgt)]
    if not rows or rows[0]["run"] is None or not all(f.exists() for f in files):
        return
    test_data = files_digest(files)

    def hypotheses(run: Any) -> list[str] | None:
        if run is None or run.data.tags.get("test_data") != test_data:
            return None
        return logged_hypotheses(run.info.run_id, client.tracking_uri)

    best = hypotheses(rows[0]["run"])
    if best is None:
        return
    references = read_lines(files[1])
    for r in rows[1:]:
        if (hyps := hypotheses(r["run"])) is not None:
            r["p_value"] = paired_test(hyps, best, references, params.data.tgt)["p_value"]


def _plot(rows: list[dict], path: Path, grid: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"], strict=True), marker="o", label=r["name"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid loss (NLL per token)")
    ax.set_title(f"grid {grid}: valid loss")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@flow(name="nmt-compare")
def compare(root: str = ".", grid: str = "lineup", jobs: int = 1):  # -> the rows, or a Failed state
    """Run a grid of experiments through the DVC queue and compare them."""
    from pipeline.config import load_params
    from pipeline.tracking import connect, experiment_id

    logger = get_run_logger()
    path = Path(root)
    try:
        name, experiments = load_grid(grid)
        validate(path, name, experiments)
        sweep = f"{name}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
        mlflow = connect(path)
        params = load_params(path / "params.yaml")
        with mlflow.start_run(experiment_id=experiment_id(mlflow, params.train.experiment, path),
                              run_name=f"compare {name}", tags={"sweep": sweep, "grid": name}) as parent:
            queue(root, sweep, experiments)
            run_queue(root, jobs, sweep, parent.info.run_id)
            rows = write_report(path, name, sweep, experiments)
            mlflow.log_artifact(str(path / "reports" / "compare.md"))
            mlflow.log_artifact(str(path / "reports" / "compare.png"))
        logger.info("compare %s: %d experiments, best %s (BLEU %s); reports/compare.md", name, len(rows),
                    rows[0]["name"], rows[0]["bleu"])
        failed = [r["name"] for r in rows if not r["ok"]]
        if failed:
            raise GridError(f"error: compare: experiment(s) {', '.join(failed)} failed; see `dvc queue logs "
                            "<name>` (the others are in reports/compare.md)")
    except GridError as exc:
        return Failed(message=str(exc), data=exc)
    return rows


def main(argv: list[str] | None = None) -> None:
    import logging

    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="lineup", help="a grid in flows/grids (default: lineup) or a .yaml file")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="experiments at a time (default 1)")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    try:  # a bad grid fails here, before Prefect or DVC start
        name, experiments = load_grid(args.grid)
        validate(Path(args.root), name, experiments)
        state = compare(root=args.root, grid=args.grid, jobs=args.jobs, return_state=True)
    except GridError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    if state.is_failed():
        print(state.message, file=sys.stderr)
        sys.exit(1)
    print((Path(args.root) / "reports" / "compare.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    from pipeline.cli import run_command

    run_command(main)
