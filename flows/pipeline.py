"""Prefect flow: run the DVC stages of ``dvc.yaml`` in graph order, one Prefect task per stage (the student
stages, while distillation is off, in one task together).

DVC decides what is stale and records ``dvc.lock``; Prefect adds ordering, retries, logs and
schedules. So ``make pipeline``, a scheduled run and ``dvc repro`` share the same lock file and
cache: whatever one of them built, the others reuse.

* Each stage's output goes to the Prefect run log (the Prefect UI); ``make pipeline`` shows one line per
  stage (and each training epoch) and a short summary, and writes everything else to
  ``logs/pipeline.log``.
* A failed stage ends the flow with one line naming the stage and the cause; its previous outputs
  and dvc.lock stay as they were (see dvc.yaml). Prefect retries a stage only when the stage says a
  retry may help (exit status 75: a network error or a server's 5xx), once, after
  ``$NMT_RETRY_DELAY`` seconds (default 30); never a 404, a checksum mismatch or bad params.
* One run at a time per project: a second one stops at once with one line.
* After the stages, the newly registered model becomes ``@champion`` only if it beats the current one
  (``pipeline/stages/promote.py``); the summary (stages, scores, model URI, promotion) is also a Prefect
  markdown artifact.

    python -m flows.pipeline                        # run once (ephemeral Prefect, no server)
    python -m flows.pipeline --force                # rerun every stage
    python -m flows.pipeline --serve --cron "0 3 * * *"   # scheduled runs until Ctrl-C (`make serve`)
    python -m flows.pipeline --deploy nmt [--cron ...]     # a deployment on the work pool nmt (`make deploy`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from uuid import UUID

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.states import Failed

from flows.dvc import ProjectBusy, lock_entry, one_run_at_a_time, repro, stage_env

# One line per stage, and per training epoch: what `make pipeline` shows (main() gives it a console handler).
PROGRESS = logging.getLogger("flows.progress")
SAID = {"unchanged": "ran, outputs unchanged"}  # the other statuses say themselves
SWITCH = "python -m pipeline.switch "  # how dvc.yaml starts the stages that distill.enabled switches on
SCHEDULED = "nmt-pipeline-scheduled"  # the deployment `make serve` registers
BAR_STAGES = {"train", "student_train", "distill"}  # long stages whose progress lines become a bar
_EPOCH = re.compile(r"(epoch \d+: train loss .*?)\s*$")
_TRAINING = re.compile(r"progress +([\d.]+)% \| (.*?)\s*$")  # train's progress lines


class TrainingBar:
    """The training's progress on the console: a bar redrawn in place on a terminal; elsewhere (a log, CI) one
    of train's progress lines every ``every`` seconds, so a long run shows it is alive without flooding."""

    def __init__(self, every: float = 300.0):
        self.every, self.last, self.bar = every, -math.inf, None

    def update(self, percent: float, text: str) -> None:
        if sys.stderr.isatty():
            if self.bar is None:
                from rich.progress import BarColumn, Progress, TextColumn

                self.bar = Progress(TextColumn("  train"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                                    TextColumn("{task.description}"), transient=True)
                self.task = self.bar.add_task(text, total=100.0)
                self.bar.start()
            self.bar.update(self.task, completed=percent, description=text)
        elif time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            PROGRESS.info("  %5.1f%% | %s", percent, text)

    def say(self, line: str) -> None:
        """A line above the bar (through the bar's console, which would otherwise draw over it)."""
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            PROGRESS.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
    return stage_plan(root)[0]


def stage_plan(root: Path) -> tuple[list[str], set[str], dict[str, str]]:
    """The stages of dvc.yaml, dependencies first; those DVC finds stale now (``dvc status``, in this process:
    0.15 s for all of them, where a ``dvc repro`` subprocess takes 0.5 s to say one is cached); and those that
    a switch turns on (their command starts with ``SWITCH``), each with its params section (``distill``,
    ``backtranslate``)."""
    from dvc.repo import Repo

    from pipeline.switch import switch_of

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        written = {stage: n for n, stage in enumerate(repo.index.stages)}
        # dependencies first, and otherwise dvc.yaml's order: the teacher is evaluated before the student trains
        order = [stage.name for stage in nx.lexicographical_topological_sort(graph.reverse(), key=written.get)]
        # DVC names a stage relative to the working directory ("../project/dvc.yaml:train" from elsewhere)
        stale = {key.rsplit(":", 1)[-1] for key in repo.status()}
        switched = {stage.name: switch_of(stage.name) for stage in repo.index.stages
                    if _command(stage).startswith(SWITCH)}
        # a name we cannot place: ask DVC for each
        return order, stale if stale <= set(order) else set(order), switched


def _command(stage) -> str:
    """A stage's command as one line: dvc.yaml's ``cmd`` is a string or a list of commands run in turn."""
    cmd = getattr(stage, "cmd", "") or ""
    return cmd if isinstance(cmd, str) else " && ".join(cmd)


def _say(stage: str, status: str, seconds: float) -> None:
    PROGRESS.info("%-13s %-27s %6.1f s", stage, SAID.get(status, status), seconds)


def _transient(task, task_run, state) -> bool:
    return isinstance(state.data, StageFailed) and state.data.transient


@task(retries=1, retry_delay_seconds=float(os.environ.get("NMT_RETRY_DELAY", 30)), retry_condition_fn=_transient)
def run_stage(names: list[str], root: str, force: bool = False, up_to_date: bool = False, quiet: bool = False
              ):  # -> a summary dict per stage, or a Failed state
    """Reproduce DVC stages if they are stale, in one ``dvc repro``: one stage, or the student stages while
    distillation is off (they only write markers; each start of DVC costs a second or two); report whether each
    ran. ``up_to_date``: DVC said so before the run, and no stage before these changed anything since, so there
    is nothing to ask DVC again. ``quiet``: no console line (the students while off: the flow says that once)."""
    logger = get_run_logger()
    start = time.perf_counter()
    say = (lambda *_: None) if quiet else _say
    if up_to_date and not force:
        for name in names:
            logger.info("stage %s: cached (dvc status: up to date)", name)
            say(name, "cached", time.perf_counter() - start)
        return [{"stage": name, "status": "cached", "seconds": round(time.perf_counter() - start, 1)}
                for name in names]
    before = {name: lock_entry(Path(root), name) for name in names}
    barred = len(names) == 1 and names[0] in BAR_STAGES  # a long stage, with training's progress lines

    bar = TrainingBar()

    def on_line(line: str) -> None:
        if barred and (progress := _TRAINING.search(line)):
            bar.update(float(progress.group(1)), progress.group(2))
            return  # the bar is the record; the epoch lines and logs/<stage>.log keep the rest
        logger.info(line)
        if barred and (epoch := _EPOCH.search(line)):
            bar.say(f"  {epoch.group(1)}")

    try:
        outcome = repro(Path(root), names, single_item=True, force=force, on_line=on_line)
    finally:
        bar.close()
    seconds = round(time.perf_counter() - start, 1)
    if outcome.error:
        _say(outcome.ran[-1] if outcome.ran else names[0], "failed", seconds)  # even when quiet
        return Failed(message=outcome.error, data=StageFailed(outcome.error, outcome.transient))
    results = []
    for name in names:
        status = "cached"
        if name in outcome.ran:  # "unchanged": it ran (download looks upstream every time), made the same outputs
            status = "unchanged" if before[name] and before[name] == lock_entry(Path(root), name) else "ran"
        share = round(seconds / len(names), 1)  # one DVC process ran them all
        logger.info("stage %s: %s (%.1fs)", name, status, share)
        say(name, status, share)
        results.append({"stage": name, "status": status, "seconds": share})
    return results


def batches(order: list[str], switched: dict[str, str], enabled: dict[str, bool]) -> list[list[str]]:
    """The stages in ``order``, each alone, except those a switch keeps off: together per switch, where the
    first of them stands (the student stages depend on the teacher's, before them, and nothing depends on
    them; backtranslate is one stage)."""
    off: dict[str, list[str]] = {}
    for name in order:
        if name in switched and not enabled[switched[name]]:
            off.setdefault(switched[name], []).append(name)
    grouped = {name for group in off.values() for name in group}
    runs = [[name] for name in order if name not in grouped]
    for group in off.values():
        runs.insert(sum(order.index(run[0]) < order.index(group[0]) for run in runs), group)
    return runs


@task
def promote(root: str, role: str = "teacher"):  # -> the decision, or a Failed state
    """Give the newly registered model @champion if it beats the current one: ``python -m pipeline.stages.promote``
    (`make promote`), as its own process like every stage, so flows import no stage; the decision is in
    metrics/promote.json (metrics/student/promote.json for the distilled student)."""
    logger = get_run_logger()
    done = subprocess.run([sys.executable, "-m", "pipeline.stages.promote", "--root", root, "--params",
                           str(Path(root) / "params.yaml"), "--role", role], env=stage_env(), capture_output=True,
                          text=True, errors="replace")
    said = (done.stdout + done.stderr).splitlines()
    for line in said:
        logger.info(line)
    if done.returncode:
        line = next((x for x in reversed(said) if x.startswith("error: ")), f"error: promote: exit {done.returncode}")
        return Failed(message=line, data=StageFailed(line, transient=False))
    from pipeline.config import Paths  # here, as in summarize: the flow's module stays light to import

    decision = json.loads((Paths(Path(root), role).metrics / "promote.json").read_text())
    logger.info("promotion (%s): %s (%s)", role, decision["decision"], decision["reason"])
    return decision


def summary_markdown(summary: dict) -> str:
    rows = "\n".join(f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} |" for s in summary["stages"])
    if "error" in summary:
        head = f"**failed**: {summary['error']}"
    else:
        promotion = summary["promotion"]
        head = (f"**BLEU {summary['bleu']:.2f}, chrF {summary['chrf']:.2f}**; model {summary['model_uri']}\n\n"
                + "".join(f"- {line}\n" for line in test_set_lines(summary))
                + f"\npromotion: **{promotion['decision']}**: {promotion['reason']}")
        if "student" in summary:
            head += "\n\n" + "\n\n".join(student_lines(summary))
    return f"# NMT pipeline\n\n{head}\n\n| stage | status | seconds |\n|---|---|---:|\n{rows}\n"


@flow(name="nmt-pipeline")
def nmt_pipeline(root: str = ".", force: bool = False):  # -> the summary, or a Failed state
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
        params = load_params(paths.root / "params.yaml")  # a bad file fails before any stage
        distill = params.distill.enabled
        with one_run_at_a_time(paths.root):
            order, stale, switched = stage_plan(paths.root)
            enabled = {section: getattr(params, section).enabled for section in set(switched.values())}
            changed = False  # once a stage has changed its outputs, DVC decides for every later one
            for names in batches(order, switched, enabled):
                section = switched.get(names[0])
                quiet = section is not None and not enabled[section]  # off: one line for the group, below
                state = run_stage.with_options(name=" + ".join(names))(
                    names, root, force, not changed and not stale & set(names), quiet, return_state=True)
                if state.is_failed():
                    raise StageFailed(state.message or f"error: {names[0]}: failed", transient=False)
                results = state.result()
                summary["stages"] += results
                changed |= any(r["status"] == "ran" for r in results)
                if quiet:
                    PROGRESS.info("%-13s %-27s %6.1f s", section, f"off ({section}.enabled)",
                                  sum(r["seconds"] for r in results))
            for role in ("teacher", "student") if distill else ("teacher",):
                state = promote(root, role, return_state=True)
                if state.is_failed():
                    raise StageFailed(state.message or "error: promote: failed", transient=False)
                summary["promotion" if role == "teacher" else "student_promotion"] = state.result()
    except (PipelineError, StageFailed, ProjectBusy) as exc:
        line = f"error: params: {exc}" if isinstance(exc, PipelineError) else str(exc)
        summary["error"] = line
        create_markdown_artifact(summary_markdown(summary), key="nmt-pipeline-summary")
        return Failed(message=line, data=PipelineError(line))
    metrics = json.loads((paths.metrics / "eval.json").read_text())
    summary |= {"bleu": metrics["bleu"], "chrf": metrics["chrf"], "bleu_ci": metrics.get("bleu_ci", 0.0),
                "chrf_ci": metrics.get("chrf_ci", 0.0), "model": str(paths.model / "model.pt"),
                "model_uri": metrics.get("model_uri", "(not registered)"),
                "sentences_per_sec": metrics.get("sentences_per_sec"), "judged_on": metrics.get("judged_on"),
                "test_sets": metrics.get("test_sets", {})}
    if distill:
        summary["student"] = json.loads((Paths(paths.root, "student").metrics / "eval.json").read_text())
    ran = [s["stage"] for s in summary["stages"] if s["status"] == "ran"]
    logger.info("ran: %s; cached: %d stage(s); BLEU %.2f, chrF %.2f; %s; promotion: %s",
                ", ".join(ran) or "nothing", len(summary["stages"]) - len(ran), summary["bleu"], summary["chrf"],
                summary["model_uri"], summary["promotion"]["decision"])
    create_markdown_artifact(summary_markdown(summary), key="nmt-pipeline-summary")
    return summary


def _start_local_server(root: Path, port: int) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on 127.0.0.1, its log in logs/prefect-server.log; (process, API URL)."""
    url = f"http://127.0.0.1:{port}/api"
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2):
        raise StageFailed(f"error: serve: something already answers on port {port}; if it is a Prefect server, "
                          f"use it: PREFECT_API_URL={url} make serve", transient=False)
    log_file = root / "logs" / "prefect-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=open(log_file, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StageFailed(f"error: serve: the Prefect server did not start (see {log_file})", transient=False)
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2):
            return server, url
        time.sleep(0.5)
    server.terminate()
    raise StageFailed(f"error: serve: the Prefect server did not answer within 2 minutes (see {log_file})",
                      transient=False)


def serve(root: Path, cron: str, interval: float | None, port: int) -> None:
    """Run the flow on a schedule until Ctrl-C. Schedules need a Prefect server: the one in
    PREFECT_API_URL, or else a local one started here (and stopped on the way out)."""
    from prefect.runner import Runner
    from prefect.schedules import Cron, Interval
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, server = PREFECT_API_URL.value(), None
    try:
        if not url:
            server, url = _start_local_server(root, port)
        if interval:  # the first run right away (schedule_from below), then every `interval` seconds
            start = datetime.datetime.now(datetime.timezone.utc)
            schedule, when = Interval(interval, anchor_date=start), f"now and every {interval:g} s"
        else:
            schedule, when = Cron(cron), f"on cron '{cron}'"
        with temporary_settings({PREFECT_API_URL: url}):
            print(f"serving nmt-pipeline {when} from {url} (UI: {url.removesuffix('/api')}); Ctrl-C stops",
                  file=sys.stderr)
            # what Flow.serve does, with the first run scheduled in between. One run at a time: a retraining
            # that outlasts the interval delays the next run, never overlaps it
            runner = Runner(name=SCHEDULED)
            deployment = runner.add_flow(nmt_pipeline, name=SCHEDULED, schedules=[schedule], concurrency_limit=1,
                                         parameters={"root": str(root)})
            if interval:
                schedule_from(deployment, start)
            asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(30)
    print("stopped", file=sys.stderr)


def schedule_from(deployment: UUID, start: datetime.datetime) -> None:
    """Have the server schedule the deployment's first run from ``start`` on, as its scheduler would on its next
    pass. That pass may come a minute later (a server's default), after the first run's time, which is then a
    whole interval later; the runs created here are the scheduler's own (auto-scheduled, each created once)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        response = client.request("POST", "/deployments/{id}/schedule", path_params={"id": str(deployment)},
                                  json={"start_time": start.isoformat(), "max_runs": 1})
        response.raise_for_status()


def test_set_lines(summary: dict) -> list[str]:
    """A line per test set when the run has several (the first is the one promotion judged on)."""
    sets = summary.get("test_sets", {})
    if len(sets) < 2:
        return []
    return [f"test {name}{' (judged)' if name == summary.get('judged_on') else ''}: BLEU {sc['bleu']:.2f} ± "
            f"{sc.get('bleu_ci', 0.0):.2f}, chrF {sc['chrf']:.2f} ± {sc.get('chrf_ci', 0.0):.2f}, {sc['pairs']} pairs"
            for name, sc in sets.items()]


def student_lines(summary: dict) -> list[str]:
    """What distillation made: the student's scores, engine, size and speed against the teacher's, and its promotion."""
    student, promotion = summary["student"], summary["student_promotion"]
    speed = f"{student['sentences_per_sec']:.1f} sentences/s"
    if summary.get("sentences_per_sec"):
        speed += f", {student['sentences_per_sec'] / summary['sentences_per_sec']:.1f}x the teacher"
    return [f"student: BLEU {student['bleu']:.2f} ± {student['bleu_ci']:.2f}, chrF {student['chrf']:.2f} ± "
            f"{student['chrf_ci']:.2f}; {student['engine']}, {student['model_bytes'] / 2**20:.1f} MiB, {speed} "
            "(metrics/student/eval.json)",
            f"student model: {student.get('model_uri', '(not registered)')}; promotion: {promotion['decision']}: "
            f"{promotion['reason']}"]


CODE = Path(__file__).resolve().parents[1]  # where flows/pipeline.py lives: what a worker runs


def deployment_name(root: Path) -> str:
    """``nmt-<folder>-<6 hex of its path>``: readable, and two projects of one folder name on different paths
    get deployments of their own instead of one replacing the other's."""
    slug = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-") or "project"
    return f"nmt-{slug}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]}"


def deploy(root: Path, pool: str, cron: str | None, interval: float | None) -> str:
    """Deploy the project at ``root`` to the Prefect process work pool ``pool`` (created if missing) on the
    server of PREFECT_API_URL; returns the deployment's name. Workers (``prefect worker start --pool <pool>``,
    `make worker`) run it, on any machine that sees this code and project at the same paths. One deployment
    per project folder, with a concurrency limit of 1: two runs of one project never overlap (the second
    waits for a slot), while runs of other projects go to whichever worker is free."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron, Interval
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise StageFailed("error: deploy: work pools live on a Prefect server; set PREFECT_API_URL (e.g. "
                          "http://127.0.0.1:4200/api after `prefect server start`)", transient=False)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    name = deployment_name(root)
    schedules = [Interval(interval)] if interval else [Cron(cron)] if cron else []
    # a module path, not "flows/pipeline.py:nmt_pipeline": loaded by file, the flow's module would be named
    # `pipeline` and hide the package of that name from its own imports
    nmt_pipeline.from_source(source=str(CODE), entrypoint="flows.pipeline.nmt_pipeline").deploy(
        name=name, work_pool_name=pool, parameters={"root": str(root)}, schedules=schedules, concurrency_limit=1,
        build=False, push=False, print_next_steps=False, ignore_warnings=True)
    return name


def print_summary(summary: dict) -> None:
    """The end of `make pipeline`, after its stage lines."""
    promotion = summary["promotion"]
    lines = [f"BLEU {summary['bleu']:.2f} ± {summary['bleu_ci']:.2f}, chrF {summary['chrf']:.2f} ± "
             f"{summary['chrf_ci']:.2f} (95% intervals; metrics/eval.json)   samples: reports/samples.tsv",
             *test_set_lines(summary),
             f"model: {summary['model_uri']} ({summary['model']})   card: reports/model_card.md",
             f"promotion: {promotion['decision']}: {promotion['reason']}"]
    if "student" in summary:
        lines += student_lines(summary)
    for line in [*lines, f"MLflow: {summary['mlflow']} (make ui)   details: logs/pipeline.log"]:
        print(line, file=sys.stderr)


def quiet_console(root: Path) -> None:
    """`make pipeline`'s console: the stage lines and the summary. Prefect's own console lines (a header per
    task, its state changes, every line of every stage) go to logs/pipeline.log instead; the Prefect run
    log keeps them all as before."""
    log_file = root / "logs" / "pipeline.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, mode="w", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if type(handler).__name__ == "PrefectConsoleHandler":
                logger.removeHandler(handler)
    logging.getLogger().addHandler(to_file)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    PROGRESS.addHandler(console)
    PROGRESS.setLevel(logging.INFO)


SERVICES = {"MLFLOW_TRACKING_URI": "/health", "PREFECT_API_URL": "/health"}  # variable -> its health endpoint


def check_services(timeout: float = 3.0) -> None:
    """Every MLflow or Prefect server the environment names must answer before anything runs: a dead one would
    otherwise cost minutes of client retries (MLflow's: 255 s) and end in a traceback."""
    for var, health in SERVICES.items():
        url = os.environ.get(var, "")
        if not url.startswith(("http://", "https://")):
            continue  # not a server: sqlite, a folder, or unset
        try:
            with urllib.request.urlopen(url.rstrip("/") + health, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # it answered, if not with 200: it is there
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StageFailed(f"error: pipeline: {var}={url} does not answer ({reason}); start that server, or "
                              f"unset {var} to run without it", transient=False) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--force", action="store_true", help="rerun every stage, stale or not")
    parser.add_argument("--corpus", help="switch data.corpus in params.yaml first (and src/tgt for a registry "
                                         "corpus), e.g. multi30k")
    parser.add_argument("--recipe", help="apply a recipe to params.yaml first: pipeline/recipes/<name>.yaml "
                                         "(e.g. ko-en) or a .yaml file")
    parser.add_argument("--serve", action="store_true", help="run the flow on a schedule until Ctrl-C")
    parser.add_argument("--cron", help="schedule for --serve (default: daily at 03:00) or --deploy (default: none)")
    parser.add_argument("--interval", type=float, help="for --serve: every this many seconds instead of --cron")
    parser.add_argument("--port", type=int, default=4200, help="for --serve without PREFECT_API_URL: the port of "
                                                                "the local Prefect server started (default 4200)")
    parser.add_argument("--check-services", action="store_true",
                        help="only check that the servers MLFLOW_TRACKING_URI and PREFECT_API_URL name answer")
    parser.add_argument("--deploy", metavar="POOL", help="deploy this project to the Prefect process work pool POOL "
                                                         "(on PREFECT_API_URL's server) instead of running; with "
                                                         "--cron or --interval, on that schedule")
    args = parser.parse_args(argv)
    from pipeline.common import PipelineError
    from pipeline.config import load_params
    from pipeline.overrides import apply_recipe, switch_corpus

    try:
        check_services()
        if args.check_services:
            return
        if args.corpus:
            switch_corpus(Path(args.root) / "params.yaml", args.corpus)
        if args.recipe:
            apply_recipe(Path(args.root) / "params.yaml", args.recipe)
        load_params(Path(args.root) / "params.yaml")  # a bad file stops here, before Prefect starts at all
        if args.serve:
            serve(Path(args.root).resolve(), args.cron or "0 3 * * *", args.interval, args.port)
            return
        if args.deploy:
            try:
                name = deploy(Path(args.root).resolve(), args.deploy, args.cron, args.interval)
            except (PipelineError, StageFailed):
                raise
            except Exception as exc:  # the Prefect client's HTTP and connection errors: one line, no traceback
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise StageFailed(f"error: deploy: {reason} (is PREFECT_API_URL's server up?)",
                                  transient=False) from None
            print(f"deployed nmt-pipeline/{name} to work pool {args.deploy}; start workers with `prefect worker "
                  f"start --pool {args.deploy}` (make worker POOL={args.deploy}), run it with `prefect deployment "
                  f"run nmt-pipeline/{name}`", file=sys.stderr)
            return
    except PipelineError as exc:
        print(f"error: params: {exc}", file=sys.stderr)
        sys.exit(1)
    except StageFailed as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    quiet_console(Path(args.root))
    state = nmt_pipeline(root=args.root, force=args.force, return_state=True)
    if state.is_failed():
        print(state.message, file=sys.stderr)
        sys.exit(1)
    print_summary(state.result())


def command() -> None:
    """The ``nmt-pipeline`` console script and ``python -m flows.pipeline``: main() as the whole process
    (pipeline.cli.run_command: no interpreter teardown)."""
    from pipeline.cli import run_command

    run_command(main)


if __name__ == "__main__":
    command()
