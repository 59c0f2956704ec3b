"""Promotion: give the newly registered model the alias ``@champion`` only if it beats the current one.

Not a DVC stage: it changes the MLflow Model Registry, outside the repo, so DVC's "nothing changed,
skip" cannot apply to it. The Prefect flow runs it after the stages; ``make promote`` runs it alone.

The candidate is the version the evaluate stage registered (``metrics/eval.json``). It becomes
champion when there is none, or when it is better on the *same* test set (the same test-data hash) by
``registry.criterion`` (BLEU, or chrF for Chinese, Japanese and Korean targets: ``auto``) and the
difference is significant: sacrebleu's paired bootstrap test of the two versions' test hypotheses
(logged by evaluate) gives p < ``registry.significance`` (0.05). A higher score by chance, as a rerun
with another seed often gives, moves nothing: the outcome says "not significantly better (p = …)".
``registry.significance: null`` promotes on any higher score. A champion scored on another test set is
not comparable: the alias stays, and the line says so.
The decision goes into the version's tags and ``metrics/promote.json``; a run that registered
nothing new decides nothing.

    python -m pipeline.stages.promote                  # `make promote`
    python -m pipeline.stages.promote --role student   # the distilled student's own @champion
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, read_lines, write_json
from pipeline.config import Params, Paths
from pipeline.scoring import paired_test
from pipeline.tracking import connect, logged_hypotheses

log = logging.getLogger(__name__)

ALIAS = "champion"
CJK = {"zh", "ja", "ko"}


def criterion(params: Params) -> str:
    if params.registry.criterion != "auto":
        return params.registry.criterion
    return "chrf" if params.data.tgt in CJK else "bleu"


def significant(candidate: list[str], champion: list[str], references: list[str], lang: str, key: str,
                level: float | None) -> tuple[bool, str]:
    """Whether the ``candidate`` hypotheses beat the ``champion``'s on ``references`` by ``key``: by the paired
    bootstrap test at ``level``, or by any margin when ``level`` is None. Returns the verdict and why."""
    test = paired_test(candidate, champion, references, lang, key)
    new, old, p = test["candidate"], test["baseline"], test["p_value"]
    if new <= old:
        return False, f"{key} {new:.2f} does not beat {old:.2f}"
    if level is None:
        return True, f"{key} {new:.2f} beats {old:.2f}"
    if p >= level:
        return False, f"{key} {new:.2f} vs {old:.2f}: not significantly better (p = {p:.3f} >= {level})"
    return True, f"{key} {new:.2f} beats {old:.2f} significantly (p = {p:.3f} < {level})"


def _decide(candidate: Any, champion: Any | None, key: str, params: Params, paths: Paths, client: Any
            ) -> tuple[str, str]:
    """(decision, reason) for ``candidate`` against the current ``champion`` (model versions)."""
    new = float(candidate.tags[key])
    if champion is None:
        return "promoted", f"first {ALIAS} ({key} {new:.2f})"
    if champion.version == candidate.version:
        return "kept", f"version {candidate.version} is already {ALIAS}"
    if champion.tags.get("test_data") != candidate.tags.get("test_data"):
        return "not_comparable", (f"{ALIAS} version {champion.version} was scored on another test set "
                                  f"({champion.tags.get('test_data')} vs {candidate.tags.get('test_data')}); "
                                  f"not promoting version {candidate.version} ({key} {new:.2f}): compare them "
                                  "on one test set, or set the alias by hand in the MLflow UI")
    old = float(champion.tags[key])
    hyps = {v.version: logged_hypotheses(v.run_id, client.tracking_uri) for v in (candidate, champion)}
    if any(h is None for h in hyps.values()) or params.registry.significance is None:
        better = new > old  # no hypotheses to test (a version from before they were logged), or asked so
        why = f"{key} {new:.2f} {'beats' if better else 'does not beat'} {old:.2f}"
    else:
        references = read_lines(paths.original / f"test.{params.data.tgt}")  # = the test data both were scored on
        better, why = significant(hyps[candidate.version], hyps[champion.version], references, params.data.tgt, key,
                                  params.registry.significance)
    if better:
        return "promoted", f"version {candidate.version}: {why} ({ALIAS} version {champion.version})"
    return "kept", f"version {candidate.version}: {why} ({ALIAS} version {champion.version}, same test set)"


def run(params: Params, paths: Paths) -> dict:
    """Promote the model the evaluate stage registered, if it beats @champion."""
    evaluated = paths.metrics / "eval.json"
    if not evaluated.exists():
        raise PipelineError(f"{evaluated} not found; run the pipeline (make pipeline) first")
    scores = json.loads(evaluated.read_text())
    if scores.get("enabled") is False:  # a student stage that is off (pipeline/switch.py)
        log.info("promotion: distillation is off (distill.enabled: false)")
        return {"decision": "off", "reason": "distillation is off (distill.enabled: false)"}
    if "model_version" not in scores:
        raise PipelineError(f"{evaluated} names no registered model (the training run is not in this MLflow "
                            "store); rerun the evaluate stage with the store the model was trained with")
    name, version, key = scores["model_name"], scores["model_version"], criterion(params)
    decision_file = paths.metrics / "promote.json"
    last = json.loads(decision_file.read_text()) if decision_file.exists() else {}
    if last.get("model_name") == name and last.get("candidate_version") == version:
        previous = last.get("previous_decision", last["decision"])  # what was decided for this version
        decision = {**last, "decision": "nothing_new", "previous_decision": previous,
                    "reason": f"no new model since version {version} ({previous})"}
        write_json(decision_file, decision)
        log.info("promotion: %s", decision["reason"])
        return decision

    client = connect(paths.root).MlflowClient()
    try:
        candidate = client.get_model_version(name, version)
    except Exception as exc:  # MlflowException: a store without this version
        raise PipelineError(f"version {version} of {name} is not in this MLflow store ({exc})") from None
    try:
        champion = client.get_model_version_by_alias(name, ALIAS)
    except Exception:  # MlflowException: no such alias yet
        champion = None
    outcome, reason = _decide(candidate, champion, key, params, paths, client)
    judged = scores.get("judged_on")  # the first test set of the run
    if judged:
        reason = f"on test set {judged}: {reason}"
    if outcome == "promoted":
        client.set_registered_model_alias(name, ALIAS, version)
        champion = candidate
    client.set_model_version_tag(name, version, "promotion", outcome)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    decision = {"model_name": name, "candidate_version": version, "decision": outcome, "reason": reason,
                "criterion": key, "test_set": judged, "candidate_score": float(candidate.tags[key]),
                "champion_version": str(champion.version) if champion else None,
                "champion_uri": f"models:/{name}@{ALIAS}" if champion else None}
    write_json(decision_file, decision)
    log.info("promotion: %s (%s)", outcome, reason)
    return decision


def main() -> None:
    stage_main("promote", run)


if __name__ == "__main__":
    run_command(main)
