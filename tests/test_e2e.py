"""The whole loop, in a temp git repo with a corpus served over loopback HTTP: Prefect -> DVC stages ->
MLflow -> registry -> promotion -> a served model.

1. run 1 trains everything and becomes @champion;
2. run 2, a worse model (one epoch at a tiny learning rate), is registered but not promoted;
3. run 3, with nothing changed upstream, reruns no stage and promotes nothing;
4. run 4, after the upstream training file changed, retrains and decides again on the same test set;
5. `mlflow models serve` of @champion answers a POST with translations, as `translate --model` does.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from flows.pipeline import nmt_pipeline, stage_order
from pipeline.corpora.sample_ko_en import generate
from pipeline.overrides import merged
from pipeline.tracking import default_uri
from tests.conftest import ROOT, served_model, write_params
from tests.project import init_repo

pytestmark = pytest.mark.slow

TEACHER = ["download", "clean", "tokenize", "embed", "build", "train", "evaluate"]
STUDENT_STAGES = ["distill", "student_build", "student_train", "student_evaluate"]
STAGES = [TEACHER[0], "backtranslate", *TEACHER[1:], *STUDENT_STAGES]  # dvc.yaml's order; off: backtranslate, students
NAME = "nmt-loop-ko-en"


@pytest.fixture(scope="module")
def prefect(prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield


def _write_corpus(site, pairs, split):
    (site / f"{split}.ko").write_text("".join(k + "\n" for k, _ in pairs), encoding="utf-8")
    (site / f"{split}.en").write_text("".join(e + "\n" for _, e in pairs), encoding="utf-8")
    later = time.time() + 10 * len(list(site.iterdir()))  # Last-Modified has a one-second resolution
    for f in site.iterdir():
        os.utime(f, (later, later))


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
    return init_repo(root)


@pytest.fixture(scope="module")
def upstream(repo, tmp_path_factory):
    """The corpus on a loopback HTTP server: train and a fixed test split, as a user's own files would be."""
    import functools
    import http.server
    import threading

    site = tmp_path_factory.mktemp("site")
    pairs = list(generate(1700, seed=7))
    _write_corpus(site, pairs[:1500], "train")
    _write_corpus(site, pairs[1500:], "test")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    custom = {split: {"src": {"url": f"{base}/{split}.ko"}, "tgt": {"url": f"{base}/{split}.en"}}
              for split in ("train", "test")}
    overrides = {"data": {"corpus": "custom", "custom": custom}, "registry": {"model_name": NAME}}
    write_params(repo, overrides)
    yield site, overrides
    server.shutdown()


def _dvc(root, *args):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def _statuses(summary: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in summary["stages"]}


def _translate(capsys, root, *args) -> str:
    """What `translate` prints, called in this process: its command line in a process of its own is
    test_train_eval's (each process would cost this test 3-4 s of imports)."""
    from pipeline.inference.command import main

    capsys.readouterr()
    main(["--root", str(root), *args])
    return capsys.readouterr().out


def test_stage_order_comes_from_dvc_yaml(repo):
    assert stage_order(repo) == STAGES


def test_train_register_promote_retrain_and_serve(repo, upstream, prefect, capsys):
    site, corpus = upstream
    client = mlflow.MlflowClient(default_uri(repo))

    # 1. everything runs; the model is registered and becomes champion
    first = nmt_pipeline(root=str(repo))
    assert _statuses(first) == dict.fromkeys(STAGES, "ran")
    assert first["promotion"]["decision"] == "promoted" and first["model_uri"] == f"models:/{NAME}/1"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["model"]["hidden"] == 32
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert metrics["bleu"] == first["bleu"] and metrics["model_version"] == "1"
    shown = _dvc(repo, "metrics", "show", "--json")
    assert json.loads(shown.stdout)[""]["data"]["metrics/eval.json"]["data"]["bleu"] == metrics["bleu"]
    run_id = json.loads((repo / "models" / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.metrics["bleu"] == pytest.approx(metrics["bleu"], abs=0.01)
    assert {"chrf", "train_loss", "valid_loss", "valid_ppl"} <= set(run.data.metrics)
    data_md5 = next(o["md5"] for o in lock["stages"]["build"]["outs"] if o["path"] == "data/dataset")
    assert run.data.tags["dvc_data_hash"] == data_md5
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["git_commit"].startswith(head)
    assert json.loads(run.data.tags["decoding"])["beam_size"] == 5
    logged = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run_id]
    assert len(logged) == 1 and {m.key for m in logged[0].metrics} >= {"bleu", "chrf"}  # scores linked to it
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    # 2. a worse model: registered, not promoted; only train and evaluate rerun. An untrained model never ends a
    # sentence, so its hypotheses are held to a few tokens: at the default limit (1.5 x source + 10) decoding the
    # test split took more time than everything else in the run
    write_params(repo, merged(corpus, {"train": {"epochs": 1, "lr": 0.0001},
                                       "evaluate": {"max_len_a": 0.5, "max_len_b": 1}}))
    second = nmt_pipeline(root=str(repo))
    assert [s for s, status in _statuses(second).items() if status == "ran" and s in TEACHER] == ["train", "evaluate"]
    reason = second["promotion"]["reason"]
    assert second["promotion"]["decision"] == "kept" and "champion version 1" in reason, reason
    assert "does not beat" in reason or "not significantly better" in reason, reason
    assert client.get_model_version(NAME, "2").tags["promotion"] == "kept"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert json.loads((repo / "metrics" / "promote.json").read_text())["decision"] == "kept"

    # 3. nothing new upstream: download looks and finds nothing; no stage reruns; nothing is promoted
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    third = nmt_pipeline(root=str(repo))
    assert _statuses(third) == {"download": "unchanged"} | dict.fromkeys(STAGES[1:], "cached")
    assert third["promotion"]["decision"] == "nothing_new"
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == lock
    status = _dvc(repo, "status", "--json")
    assert json.loads(status.stdout) == {"download": ["always changed"]}, status.stdout + status.stderr
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2

    # 4. the upstream training file changed: everything downstream reruns, and promotion decides again
    pairs = list(generate(2000, seed=7))
    _write_corpus(site, pairs[:1500] + pairs[1700:], "train")
    fourth = nmt_pipeline(root=str(repo))
    assert {s: status for s, status in _statuses(fourth).items() if s in TEACHER} == dict.fromkeys(TEACHER, "ran")
    assert fourth["model_uri"] == f"models:/{NAME}/3"
    assert fourth["promotion"]["decision"] in ("promoted", "kept")  # the same test set: comparable
    champion = str(client.get_model_version_by_alias(NAME, "champion").version)

    # 5. the champion, served over HTTP and through translate, translates
    sentence = "나는 어제 도서관에서 책을 읽었다"
    by_alias = _translate(capsys, repo, "--model", f"models:/{NAME}@champion", sentence)
    by_version = _translate(capsys, repo, "--model", f"models:/{NAME}/{champion}", sentence)
    assert by_alias.strip() and by_alias == by_version
    with served_model(repo, f"models:/{NAME}@champion") as post:
        answer = post({"inputs": [sentence]})
        refused = {name: post(payload) for name, payload in (
            ("beam -1", {"inputs": [sentence], "params": {"beam_size": -1}}),
            ("beam 0", {"inputs": [sentence], "params": {"beam_size": 0}}),
            ("not text", {"inputs": [1, None, True]}))}
    assert answer == (200, {"predictions": [by_alias.strip()]})
    for name, (code, body) in refused.items():  # a 400 with the reason on one line, no stack trace
        assert code == 400 and "stack_trace" not in body, (name, body)
        assert "Traceback" not in body["message"] and "File \"" not in body["message"], (name, body)
    assert refused["beam -1"][1]["message"].splitlines()[-1].endswith("beam_size must be a whole number of 1 or "
                                                                        "more (got -1)")
    assert refused["beam 0"][1]["message"].splitlines()[-1].endswith("(got 0)")
    assert "Expected type str, but got int" in refused["not text"][1]["message"]


STUDENT = {"model": {"arch": "transformer", "emb_dim": 32, "hidden": 32, "dropout": 0.1,
                     "transformer": {"heads": 2, "ff_dim": 64, "enc_layers": 1, "dec_layers": 1}},
           "train": {"embeddings": "random", "epochs": 3, "lr": 0.005}}


def test_distilled_student_is_exported_registered_promoted_and_served(repo, upstream, prefect, capsys):
    """Distillation switched on: the teacher translates train, the student learns from it, its int8 CTranslate2
    export is registered as <name>-student, becomes its @champion and answers over HTTP; a run with nothing
    changed then reruns no stage."""
    client = mlflow.MlflowClient(default_uri(repo))
    # the teacher as the test above left it (after run 4, when both run: cached, so only the student's stages run)
    current = yaml.safe_load((repo / "params.yaml").read_text())
    write_params(repo, merged(current, {"distill": {"enabled": True, "student": STUDENT}}))
    first = nmt_pipeline(root=str(repo))
    assert {s: status for s, status in _statuses(first).items() if s in STUDENT_STAGES} == dict.fromkeys(
        STUDENT_STAGES, "ran")
    report = json.loads((repo / "metrics" / "student" / "distill.json").read_text())
    train_pairs = len((repo / "data" / "clean" / "train.ko").read_text(encoding="utf-8").splitlines())
    assert report["sentences"] == train_pairs and report["sentences_per_sec"] > 0
    distilled = (repo / "data" / "distilled" / "train.en").read_text(encoding="utf-8").splitlines()
    assert len(distilled) == report["pairs"] == train_pairs - report["empty_translations"]
    assert (repo / "data/distilled/valid.en").read_bytes() == (repo / "data/clean/valid.en").read_bytes()
    assert not (repo / "checkpoints" / "distill").exists()  # the chunks are spent once the corpus is in place

    student = first["student"]
    assert student["engine"] == "ctranslate2-int8" and student["model_bytes"] > 0 and student["sentences_per_sec"] > 0
    assert student["model_uri"] == f"models:/{NAME}-student/1" and (repo / "models/student/ct2/model.bin").exists()
    assert first["student_promotion"]["decision"] == "promoted"
    version = client.get_model_version(f"{NAME}-student", "1")
    assert {"bleu", "chrf", "model_bytes", "sentences_per_sec"} <= set(version.tags)
    assert client.get_run(version.run_id).data.tags["role"] == "student"

    sentence = "나는 어제 도서관에서 책을 읽었다"
    local = _translate(capsys, repo, "--model", f"models:/{NAME}-student@champion", sentence)
    assert local.strip()
    with served_model(repo, f"models:/{NAME}-student@champion") as post:
        assert post({"inputs": [sentence]}) == (200, {"predictions": [local.strip()]})

    second = nmt_pipeline(root=str(repo))
    assert _statuses(second) == {"download": "unchanged"} | dict.fromkeys(STAGES[1:], "cached")
    assert second["student_promotion"]["decision"] == "nothing_new"


def test_bad_model_references_are_one_line(repo, capsys):
    from pipeline.inference.command import main

    for reference, message in ((f"models:/{NAME}@gold", "Registered model alias gold not found"),
                               ("models:/no-such-model@champion", "Registered Model with name=no-such-model not found"),
                               (str(repo / "nowhere.pt"), "nowhere.pt not found")):
        with pytest.raises(SystemExit) as exit_:
            main(["--root", str(repo), "--model", reference, "안녕"])
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: translate: ") and message in line, err[-2000:]


def test_bad_params_fail_before_any_stage(repo, prefect):
    good = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(good.replace("\ntrain:\n", "\ntrain:\n  epochz: 3\n", 1))
        with pytest.raises(Exception, match=r"params.yaml:\d+: train.epochz: unknown key"):
            nmt_pipeline(root=str(repo))
    finally:
        (repo / "params.yaml").write_text(good)
