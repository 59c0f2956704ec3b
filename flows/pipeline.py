"""Prefect flow: run the DVC stages of ``dvc.yaml`` in graph order, one Prefect task per stage.

DVC decides what is stale and records ``dvc.lock``; Prefect adds ordering, retries, logs and
schedules. So ``make pipeline``, a scheduled run and ``dvc repro`` share the same lock file and
cache: whatever one of them built, the others reuse.

* Each stage's output goes to the Prefect run log (and so to the console and the Prefect UI).
* A failed stage ends the flow with one line naming the stage and the cause; its previous outputs
  and dvc.lock stay as they were (see dvc.yaml). Prefect retries a stage only when the stage says a
  retry may help (exit status 75: a network error or a server's 5xx), once, after
  ``$NMT_RETRY_DELAY`` seconds (default 30); never a 404, a checksum mismatch or bad params.
* One run at a time per project: a second one stops at once with one line.

    python -m flows.pipeline                        # run once (ephemeral Prefect, no server)
    python -m flows.pipeline --force                # rerun every stage
    python -m flows.pipeline --serve --cron "0 3 * * *"   # scheduled runs (needs a Prefect server)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.states import Failed

from flows.dvc import lock_entry, repro


class StageFailed(Exception):
    def __init__(self, line: str, transient: bool):
        super().__init__(line)
        self.transient = transient


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a failed task "with exc_info" even when it failed by returning a state, which prints
    a bare ``NoneType: None``; the stage's own line already says everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None and record.exc_info[0] is None:
            record.exc_info = None
        return True


def stage_order(root: Path) -> list[str]:
    """The stages of dvc.yaml, dependencies first."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


def _transient(task, task_run, state) -> bool:
    return isinstance(state.data, StageFailed) and state.data.transient


@task(retries=1, retry_delay_seconds=float(os.environ.get("NMT_RETRY_DELAY", 30)), retry_condition_fn=_transient)
def run_stage(name: str, root: str, force: bool = False):
    """Reproduce one DVC stage if it is stale; report whether it ran."""
    logger = get_run_logger()
    start = time.perf_counter()
    before = lock_entry(Path(root), name)
    outcome = repro(Path(root), [name], single_item=True, force=force, on_line=logger.info)
    seconds = round(time.perf_counter() - start, 1)
    if outcome.error:
        return Failed(message=outcome.error, data=StageFailed(outcome.error, outcome.transient))
    status = "cached"
    if name in outcome.ran:  # "unchanged": it ran (download looks upstream every time) and made the same outputs
        status = "unchanged" if before and before == lock_entry(Path(root), name) else "ran"
    logger.info("stage %s: %s (%.1fs)", name, status, seconds)
    return {"stage": name, "status": status, "seconds": seconds}


@contextlib.contextmanager
def one_run_at_a_time(root: Path) -> Iterator[None]:
    """Hold the project's run lock; a second run stops at once instead of interleaving its stages."""
    lock_file = root / ".dvc" / "tmp" / "pipeline.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StageFailed(f"error: pipeline: another run ({holder}) is working on this project; "
                              "wait for it to finish", transient=False) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield


def summary_markdown(summary: dict) -> str:
    rows = "\n".join(f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} |" for s in summary["stages"])
    scores = (f"**BLEU {summary['bleu']:.2f}, chrF {summary['chrf']:.2f}**" if "bleu" in summary
              else f"**failed**: {summary.get('error', '')}")
    return f"# NMT pipeline\n\n{scores}\n\n| stage | status | seconds |\n|---|---|---:|\n{rows}\n"


@flow(name="nmt-pipeline")
def nmt_pipeline(root: str = ".", force: bool = False):
    """Run the whole NMT pipeline through DVC and return a summary."""
    from prefect.artifacts import create_markdown_artifact

    from pipeline.common import PipelineError
    from pipeline.config import Paths, load_params
    from pipeline.tracking import tracking_uri

    logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())
    logger = get_run_logger()
    paths = Paths(Path(root))
    summary: dict = {"stages": [], "mlflow": tracking_uri(paths.root)}
    try:
        load_params(paths.root / "params.yaml")  # fail before any stage runs on a bad params file
        with one_run_at_a_time(paths.root):
            for name in stage_order(paths.root):
                state = run_stage.with_options(name=name)(name, root, force, return_state=True)
                if state.is_failed():
                    raise StageFailed(state.message or f"error: {name}: failed", transient=False)
                summary["stages"].append(state.result())
    except (PipelineError, StageFailed) as exc:
        line = str(exc) if isinstance(exc, StageFailed) else f"error: params: {exc}"
        summary["error"] = line
        create_markdown_artifact(summary_markdown(summary), key="nmt-pipeline-summary")
        return Failed(message=line, data=PipelineError(line))
    metrics = json.loads((paths.metrics / "eval.json").read_text())
    summary |= {"bleu": metrics["bleu"], "chrf": metrics["chrf"], "model": str(paths.model / "model.pt")}
    ran = [s["stage"] for s in summary["stages"] if s["status"] == "ran"]
    logger.info("ran: %s; cached: %d stage(s); BLEU %.2f, chrF %.2f; model %s", ", ".join(ran) or "nothing",
                len(summary["stages"]) - len(ran), summary["bleu"], summary["chrf"], summary["model"])
    create_markdown_artifact(summary_markdown(summary), key="nmt-pipeline-summary")
    return summary


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
    from pipeline.config import switch_corpus

    try:
        if args.corpus:
            switch_corpus(Path(args.root) / "params.yaml", args.corpus)
    except PipelineError as exc:
        print(f"error: params: {exc}", file=sys.stderr)
        sys.exit(1)
    state = nmt_pipeline(root=args.root, force=args.force, return_state=True)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # its "stopping temporary server" would come last
    if state.is_failed():
        print(state.message, file=sys.stderr)
        sys.exit(1)
    print_summary(state.result())


if __name__ == "__main__":
    main()
