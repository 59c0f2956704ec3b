"""Prefect flow: run the DVC stages of ``dvc.yaml`` in graph order, one Prefect task per stage.

DVC decides what is stale and records ``dvc.lock``; Prefect adds ordering, retries (on
``download``), logs and schedules. So ``make pipeline``, a scheduled run and ``dvc repro`` share
the same lock file and cache: whatever one of them built, the others reuse.

    python -m flows.pipeline                        # run once (ephemeral Prefect, no server)
    python -m flows.pipeline --force                # rerun every stage
    python -m flows.pipeline --serve --cron "0 3 * * *"   # scheduled runs (needs a Prefect server)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
from prefect import flow, get_run_logger, task

RETRIES = {"download": 3}


@contextlib.contextmanager
def _inside(root: str | Path) -> Iterator[None]:
    """DVC resolves stage targets and paths against the working directory."""
    previous = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


def stage_order(root: Path) -> list[str]:
    """The stages of dvc.yaml, dependencies first."""
    from dvc.repo import Repo

    with _inside(root), Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


@task
def run_stage(name: str, root: str, force: bool = False) -> dict:
    """Reproduce one DVC stage if it is stale; report whether it ran."""
    from dvc.repo import Repo

    logger = get_run_logger()
    logging.getLogger("dvc").propagate = False  # DVC prints its own lines; don't log them twice
    start = time.perf_counter()
    with _inside(root), Repo(".") as repo:
        ran = repo.reproduce(name, single_item=True, force=force)
    seconds = time.perf_counter() - start
    status = "ran" if ran else "cached"
    logger.info("stage %s: %s (%.1fs)", name, status, seconds)
    return {"stage": name, "status": status, "seconds": round(seconds, 1)}


@flow(name="nmt-pipeline")
def nmt_pipeline(root: str = ".", force: bool = False) -> dict:
    """Run the whole NMT pipeline through DVC and return a summary."""
    from pipeline.config import Paths, load_params
    from pipeline.tracking import tracking_uri

    logger = get_run_logger()
    load_params(Path(root) / "params.yaml")  # fail before any stage runs on a bad params file
    # DVC runs each stage as `python -m ...`: make that the interpreter running this flow
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    stages = []
    for name in stage_order(Path(root)):
        options = {"name": name, "retries": RETRIES.get(name, 0), "retry_delay_seconds": 5}
        stages.append(run_stage.with_options(**options)(name, root, force))
    paths = Paths(Path(root))
    metrics = json.loads((paths.metrics / "eval.json").read_text())
    summary = {"stages": stages, "bleu": metrics["bleu"], "chrf": metrics["chrf"],
               "model": str(paths.model / "model.pt"), "mlflow": tracking_uri(paths.root)}
    ran = [s["stage"] for s in stages if s["status"] == "ran"]
    logger.info("ran: %s; cached: %d stage(s); BLEU %.2f, chrF %.2f; model %s", ", ".join(ran) or "nothing",
                len(stages) - len(ran), summary["bleu"], summary["chrf"], summary["model"])
    return summary


def switch_corpus(params_file: Path, corpus: str) -> None:
    from pipeline.config import load_params, set_params
    from pipeline.corpora.registry import CORPORA

    data = load_params(params_file).data
    updates: dict = {"data.corpus": corpus}
    if corpus in CORPORA and {data.src, data.tgt} != set(CORPORA[corpus].languages):
        updates |= dict(zip(("data.src", "data.tgt"), CORPORA[corpus].languages, strict=True))
    elif corpus == "sample-ko-en":
        updates |= {"data.src": "ko", "data.tgt": "en"}
    set_params(params_file, updates)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="NMT pipeline")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for s in summary["stages"]:
        table.add_row(s["stage"], s["status"], f"{s['seconds']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"BLEU {summary['bleu']:.2f}  chrF {summary['chrf']:.2f}  (metrics/eval.json, `dvc metrics show`)")
    console.print(f"model: {summary['model']}   samples: reports/samples.tsv   MLflow: {summary['mlflow']}")
    console.print('try: translate "나는 어제 도서관에서 책을 읽었다"')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--force", action="store_true", help="rerun every stage, stale or not")
    parser.add_argument("--corpus", help="switch data.corpus in params.yaml first (and src/tgt for a registry "
                                         "corpus), e.g. multi30k")
    parser.add_argument("--serve", action="store_true", help="serve the flow on a schedule instead of running it")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule for --serve (default: daily at 03:00)")
    args = parser.parse_args(argv)
    if args.serve:
        nmt_pipeline.serve(name="nmt-pipeline-scheduled", cron=args.cron,
                           parameters={"root": str(Path(args.root).resolve())})
        return
    from pipeline.common import PipelineError

    try:
        if args.corpus:
            switch_corpus(Path(args.root) / "params.yaml", args.corpus)
        summary = nmt_pipeline(root=args.root, force=args.force)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print_summary(summary)


if __name__ == "__main__":
    main()
