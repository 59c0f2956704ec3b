import contextlib
import csv
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sacrebleu
import torch

from flows.pipeline import _TRAINING, TrainingBar  # at import: Prefect sets up logging once, before caplog
from pipeline import allocator, schedule
from pipeline.checkpoint import load_model
from pipeline.config import Paths, load_params
from pipeline.dataset import load_split
from pipeline.overrides import merged
from pipeline.stages import evaluate, train
from pipeline.tracking import default_uri
from tests.conftest import ROOT, free_port, write_params


@pytest.fixture(scope="module")
def trained(tiny_project):
    params, paths = tiny_project
    metrics = train.run(params, paths)
    return params, paths, metrics


def _unigram_cross_entropy(paths) -> float:
    """Valid-set cross-entropy of a unigram model of the train targets: what a model must beat."""
    train_set, valid_set = load_split(paths.dataset, "train").pairs(), load_split(paths.dataset, "valid").pairs()

    def targets(pairs):  # every target token but <s>
        keep = np.ones(len(pairs.tgt), dtype=bool)
        keep[pairs.tgt_off[:-1]] = False
        return pairs.tgt[keep]

    counts = np.bincount(targets(train_set), minlength=int(valid_set.tgt.max()) + 1) + 1.0
    return float(-np.log(counts / counts.sum())[targets(valid_set)].mean())


def test_train_outputs_and_mlflow_run(trained):
    params, paths, metrics = trained
    history = torch.load(paths.checkpoints / "last.pt", weights_only=True)["state"]["history"]
    assert metrics["epochs"] == 2 and history[1]["valid_loss"] < history[0]["valid_loss"]
    assert metrics["valid_loss"] < _unigram_cross_entropy(paths) - 0.3  # learned more than word frequencies
    saved = json.loads((paths.metrics / "train.json").read_text())
    assert saved == metrics
    _model, blob = load_model(paths.model / "model.pt")  # weights_only=True inside
    assert blob["src_lang"] == "ko" and blob["config"]["hidden"] == params.model.hidden

    run_id = json.loads((paths.model / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(default_uri(paths.root))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden"] == str(params.model.hidden)
    assert run.data.tags["git_commit"] and run.data.tags["dvc_data_hash"] == "untracked"
    assert [m.step for m in client.get_metric_history(run_id, "valid_loss")] == [1, 2]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"tokenizer", "data_reports"}
    assert int(run.data.params["data_report.clean.kept_pairs"]) > 1000  # data counts are params, not metrics
    assert "data_report.tokenize.src_unk_rate" in run.data.params and not any("." in m for m in run.data.metrics)
    assert run.data.params["data_report.embeddings.method"] == "word2vec"
    assert float(run.data.params["data_report.embeddings.src_coverage"]) > 0.5
    assert {a.path for a in client.list_artifacts(run_id, "embeddings")} == {"embeddings/neighbours.tsv"}


def test_evaluate_writes_metrics_samples_and_logs_to_the_run(trained, caplog, recwarn):
    params, paths, _ = trained
    with caplog.at_level("WARNING", logger="mlflow"):
        metrics = evaluate.run(params, paths)
    # logged from code with type hints: neither MLflow's cloudpickle warning nor its type-hint warning
    said = caplog.text + "".join(str(w.message) for w in recwarn)
    assert "CloudPickle" not in said and "type hint" not in said and "signature" not in said, said
    assert json.loads((paths.metrics / "eval.json").read_text()) == metrics
    hyps = (paths.reports / "test.hyp").read_text(encoding="utf-8").splitlines()
    refs = (paths.original / "test.en").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) and sum(bool(h.strip()) for h in hyps) > len(hyps) / 2
    # the scores are those of the written hypotheses against the test references, scored independently
    assert metrics["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert metrics["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2) > 5
    with open(paths.reports / "samples.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["source", "reference", "hypothesis"] and len(rows) == 1 + params.evaluate.samples
    run_id = json.loads((paths.model / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(default_uri(paths.root))
    logged = client.get_run(run_id).data.metrics
    assert logged["bleu"] == pytest.approx(metrics["bleu"], abs=0.01)
    figures = {a.path for a in client.list_artifacts(run_id, "attention")}
    assert figures == {"attention/test-00.png", "attention/test-01.png"}
    # the servable model: logged with the scores linked to it, and registered as a version
    logged = [m for m in client.search_logged_models([client.get_run(run_id).info.experiment_id])
              if m.source_run_id == run_id]
    assert len(logged) == 1 and {m.key for m in logged[0].metrics} >= {"bleu", "chrf"}
    version = client.get_model_version(metrics["model_name"], metrics["model_version"])
    assert version.tags["test_data"] == metrics["test_data"] and float(version.tags["bleu"]) == metrics["bleu"]
    signature = mlflow.models.get_model_info(f"models:/{metrics['model_name']}/{metrics['model_version']}").signature
    assert signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert signature.params.to_dict() == [{"name": "beam_size", "type": "long", "default": 5, "shape": None}]


def test_translate_cli(trained):
    _, paths, _ = trained
    proc = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(paths.root),
                           "나는 어제 도서관에서 책을 읽었다", "그녀는 커피를 마셨어요"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)
    piped = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(paths.root)],
                           input="나는 어제 도서관에서 책을 읽었다\n", capture_output=True, text=True, cwd=ROOT)
    assert piped.stdout.strip() == lines[0]


def test_translate_without_a_model_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(tmp_path), "안녕"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr.strip().endswith("run the train stage first")


@pytest.mark.parametrize(("args", "stdin", "message"), [
    ([], "\n  \n", "error: translate: nothing to translate: give sentences as arguments or on stdin"),
    (["--beam", "0", "안녕"], "", "argument --beam: must be 1 or more (got 0)"),
    (["--device", "gpu", "안녕"], "", "argument --device: invalid choice: 'gpu'"),
])
def test_translate_refuses_bad_input_with_one_line(trained, args, stdin, message):
    _, paths, _ = trained
    proc = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(paths.root), *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and message in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_translate_on_cuda_without_a_gpu_is_one_line(trained):
    _, paths, _ = trained
    proc = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(paths.root),
                           "--device", "cuda",
                           "안녕"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: translate: --device is 'cuda' but no CUDA device is available; "
                                   "use 'auto' or 'cpu'")


def test_translator_keeps_empty_lines_and_warns_when_it_truncates(trained, caplog):
    from pipeline.inference.translator import Translator

    _, paths, _ = trained
    translator = Translator.from_file(paths.model / "model.pt")
    long = " ".join(["나는 어제 도서관에서 책을 읽었다"] * 40)
    with caplog.at_level("WARNING"):
        out = translator.translate(["나는 책을 읽었다", "", long])
    assert out[1] == "" and out[0] and out[2]
    assert "sentence 3 has" in caplog.text and "only the first 127 are translated" in caplog.text


def _copy_project(src_paths, dest, overrides):
    shutil.copytree(src_paths.root / "data", dest / "data")
    return load_params(write_params(dest, overrides)), Paths(dest)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_project, tmp_path):
    _, base = tiny_project
    overrides = {"model": {"hidden": 64}, "train": {"epochs": 3, "checkpoint_every": 4}}
    params, straight = _copy_project(base, tmp_path / "straight", overrides)
    expected = train.run(params, straight)

    params, paths = _copy_project(base, tmp_path / "killed", overrides)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.stages.train", "--root", str(paths.root), "--params",
                             str(paths.root / "params.yaml")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = paths.checkpoints / "last.pt"
    deadline = time.time() + 120
    # a checkpoint is written at step 0, then every checkpoint_every steps (the step file, then last.pt):
    # once a second step file past 0 exists, last.pt holds the first one
    while len(list(paths.checkpoints.glob("step-0*[1-9]*.pt"))) < 2 and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (paths.model / "model.pt").exists(), "the run ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)["state"]
    assert killed_at["step"] > 0 and not killed_at.get("complete")
    # the stage re-executed itself under tcmalloc where it is installed; the resumed run, in this process, is glibc's
    chosen = allocator.to_preload(os.environ, allocator.find_tcmalloc()) or "glibc malloc"
    assert f"memory allocator: {chosen}" in paths.log_file("train").read_text()

    resumed = train.run(params, paths)
    assert resumed["steps"] == expected["steps"]
    assert resumed["valid_loss"] == pytest.approx(expected["valid_loss"], abs=2e-3)
    assert json.loads((paths.model / "run.json").read_text())["run_id"] == killed_at["run_id"]  # same MLflow run


def test_changed_params_do_not_resume_a_stale_checkpoint(tiny_project, tmp_path, caplog):
    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path / "p", {"train": {"epochs": 1}})
    train.run(params, paths)
    params2 = load_params(write_params(paths.root, {"train": {"epochs": 1, "lr": 0.001}}))
    with caplog.at_level("INFO"):
        train.run(params2, paths)
    assert "another params/data run; starting afresh" in caplog.text


def test_a_step_budget_stops_after_that_many_steps(tiny_project, tmp_path):
    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path / "p", {"train": {"epochs": 50, "max_steps": 7}})
    metrics = train.run(params, paths)
    assert metrics["steps"] == 7 and metrics["epochs"] >= 1


_DISTRIBUTED = {"model": {"dropout": 0.0}, "train": {"epochs": 2, "checkpoint_every": 1000}}


@pytest.fixture(scope="module")
def one_process_reference(tiny_project, tmp_path_factory):
    """One process with accumulate: 2, the global batch of two ranks: what a distributed run must equal."""
    _, base = tiny_project
    params, single = _copy_project(base, tmp_path_factory.mktemp("single"),
                                   merged(_DISTRIBUTED, {"train": {"accumulate": 2}}))
    train.run(params, single)
    return torch.load(single.checkpoints / "last.pt", weights_only=True)["state"]


def _assert_same_run(one, paths):
    two = torch.load(paths.checkpoints / "last.pt", weights_only=True)["state"]
    assert one["step"] == two["step"] > 0
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], abs=1e-3)
    assert json.loads((paths.metrics / "train.json").read_text())["steps"] == one["step"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tiny_project, one_process_reference,
                                                                        tmp_path):
    _, base = tiny_project
    overrides = _DISTRIBUTED
    # train.processes: 2 -- the stage relaunches itself under torchrun, so dvc.yaml's command is unchanged
    _, ddp = _copy_project(base, tmp_path / "ddp", merged(overrides, {"train": {"processes": 2}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline.stages.train", "--root", str(ddp.root),
           "--params", str(ddp.root / "params.yaml")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(one_process_reference, ddp)

    # with a time budget, rank 0's clock stops both ranks at the same step (else one would wait for ever)
    write_params(ddp.root, merged(overrides, {"train": {"processes": 2, "max_minutes": 0.001}}))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((ddp.metrics / "train.json").read_text())["epochs"] == 1


def _logged_joining_command(log_file: Path, lead: subprocess.Popen, timeout: float = 120) -> list[str]:
    """The command the lead logs for the other machines ("... run: <command>"), split as a shell would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in (log_file.read_text() if log_file.exists() else "").splitlines():
            if "run: " in line and "torch.distributed.run" in line:
                return shlex.split(line.split("run: ", 1)[1])
        assert lead.poll() is None, f"the lead ended (exit {lead.returncode}) before logging the joining command"
        time.sleep(0.2)
    raise AssertionError(f"no joining command in {log_file} after {timeout} s")


@pytest.mark.slow
def test_two_nodes_meeting_at_a_c10d_rendezvous_match_one_process_with_the_same_global_batch(
        tiny_project, one_process_reference, tmp_path):
    """Two "machines" on 127.0.0.1 sharing the project folder: the train stage on one, as DVC runs it, and on
    the other the joining command the stage logs (torchrun, c10d rendezvous), as a user would copy it."""
    _, base = tiny_project
    overrides = _DISTRIBUTED
    endpoint = f"127.0.0.1:{free_port()}"
    # one thread per "machine": both share this machine's two cores
    nodes = {"train": {"nodes": 2, "rendezvous": endpoint, "threads": 1}}
    _, shared = _copy_project(base, tmp_path / "shared", merged(overrides, nodes))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = {name: tmp_path / f"{name}.log" for name in ("lead", "joiner")}
    procs = []
    # each "machine" in a session of its own: a hung rendezvous must not leave either's torchrun workers behind
    with open(logs["lead"], "w") as lead_log, open(logs["joiner"], "w") as joiner_log:
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.stages.train", "--root", str(shared.root),
                                           "--params", str(shared.root / "params.yaml")], cwd=ROOT, env=env,
                                          stdout=lead_log, stderr=subprocess.STDOUT, start_new_session=True))
            joining = _logged_joining_command(shared.log_file("train"), procs[0])  # the console's lines wrap
            assert joining[0] == "python", joining
            procs.append(subprocess.Popen([sys.executable, *joining[1:]], cwd=ROOT, env=env, stdout=joiner_log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            codes = [proc.wait(timeout=300) for proc in procs]
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert codes == [0, 0], logs["lead"].read_text()[-3000:] + logs["joiner"].read_text()[-3000:]
    _assert_same_run(one_process_reference, shared)


@pytest.mark.slow
def test_torch_compile_trains_to_the_end_and_the_model_loads(tiny_project, tmp_path):
    from pipeline.inference.translator import Translator

    _, base = tiny_project
    transformer = {"arch": "transformer", "emb_dim": 32, "hidden": 32,
                   "transformer": {"ff_dim": 64, "enc_layers": 1, "dec_layers": 1}}
    params, paths = _copy_project(base, tmp_path / "compiled", {
        "model": transformer, "train": {"compile": True, "epochs": 1, "embeddings": "random"}})
    torch._dynamo.utils.counters.clear()
    metrics = train.run(params, paths)
    assert metrics["epochs"] == 1 and math.isfinite(metrics["valid_loss"])
    # one graph for training's batches of every length (no recompile when the first batch's source and target are
    # equally long: train.compiled), one for validation's, without gradients
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert Translator.from_file(paths.model / "model.pt").translate(["나는 책을 읽었다"])[0]


def test_translator_repeats_the_training_preprocessing(trained):
    from pipeline.inference.translator import Translator
    from pipeline.text import Preprocessing

    _, paths, _ = trained
    translator = Translator.from_file(paths.model / "model.pt")
    assert translator.preprocessing.source("ＡＢ  책을\u200b 읽었다") == "AB 책을 읽었다"
    morphemes = Preprocessing("NFKC", False, True)  # as for a model trained with clean.korean_morphemes
    assert morphemes.source("책을 읽었다") == "책 을 읽 었 다"


def test_cosine_schedule_anneals_over_the_time_budget():
    from pipeline.config import Train

    cfg = Train(scheduler="cosine", warmup_steps=10, epochs=200, max_minutes=25)
    total = 200 * 92  # 200 epochs of Multi30k that the 25-minute budget never reaches
    assert schedule.progress(cfg, 500, total, 0.0) < 0.03  # by steps alone: barely started
    assert schedule.progress(cfg, 500, total, 12.5 * 60) == pytest.approx(0.5)  # half the budget
    assert schedule.lr_factor(cfg, 2000, schedule.progress(cfg, 2000, total, 25 * 60)) == pytest.approx(0.1)
    assert schedule.lr_factor(cfg, 4, 0.0) == pytest.approx(0.5)  # warmup
    no_budget = Train(scheduler="cosine", epochs=2)
    assert schedule.progress(no_budget, 50, 100, 3600.0) == pytest.approx(0.5)  # epochs only


def test_training_preloads_tcmalloc_where_installed_unless_told_or_preloaded_already():
    lib = "libtcmalloc_minimal.so.4"
    assert allocator.to_preload({}, lib) == lib
    assert allocator.to_preload({"LD_PRELOAD": "/opt/libfoo.so"}, lib) == lib  # another preload: kept beside it
    assert allocator.to_preload({"LD_PRELOAD": lib}, lib) is None  # the re-executed process
    assert allocator.to_preload({"LD_PRELOAD": "libjemalloc.so.2"}, lib) is None  # the user's own allocator
    assert allocator.to_preload({"NMT_ALLOCATOR": "system"}, lib) is None
    assert allocator.to_preload({}, None) is None  # not installed: glibc
    with pytest.raises(SystemExit, match="NMT_ALLOCATOR must be auto or system"):
        allocator.to_preload({"NMT_ALLOCATOR": "tcmaloc"}, lib)
    assert allocator.in_use({"LD_PRELOAD": f"/opt/libfoo.so:{lib}"}) == lib
    assert allocator.in_use({}) == "glibc malloc"


def test_amp_is_fp16_with_a_scaler_where_the_gpu_has_no_bf16():
    from pipeline.common import PipelineError
    from pipeline.device import choose_amp

    assert choose_amp("auto", cuda=True, bf16_supported=False) is torch.float16  # T4, V100: GradScaler
    assert choose_amp("auto", cuda=True, bf16_supported=True) is torch.bfloat16
    assert choose_amp("auto", cuda=False, bf16_supported=False) is None  # a CPU without native bf16: fp32
    assert choose_amp("auto", cuda=False, bf16_supported=True) is torch.bfloat16  # AVX512-BF16 or AMX
    assert choose_amp("auto", cuda=False, bf16_supported=True, arch="rnn") is None  # measured slower in bf16
    assert choose_amp("bf16", cuda=False, bf16_supported=True, arch="rnn") is torch.bfloat16  # asked for
    assert choose_amp("off", cuda=True, bf16_supported=True) is None
    assert choose_amp("off", cuda=False, bf16_supported=True) is None
    with pytest.raises(PipelineError, match="train.amp is 'bf16' but this GPU has no native bf16"):
        choose_amp("bf16", cuda=True, bf16_supported=False)
    with pytest.raises(PipelineError, match="this CPU .no AVX512-BF16 or AMX. has no native bf16"):
        choose_amp("bf16", cuda=False, bf16_supported=False)
    with pytest.raises(PipelineError, match="'fp16', which needs a CUDA GPU"):
        choose_amp("fp16", cuda=False, bf16_supported=True)


def test_wsd_schedule_holds_the_rate_then_decays_over_the_last_fraction_of_the_budget():
    from pipeline.config import Train

    cfg = Train(scheduler="wsd", warmup_steps=10, decay_fraction=0.2, epochs=200, max_minutes=100)
    total = 10**6  # the budget, not the epochs, ends this run
    assert schedule.lr_factor(cfg, 4, 0.0) == pytest.approx(0.5)  # warmup
    at = {minutes: schedule.lr_factor(cfg, 5000, schedule.progress(cfg, 5000, total, minutes * 60))
          for minutes in (10, 79, 85, 95, 100)}
    assert at[10] == at[79] == 1.0  # stable
    assert at[85] == pytest.approx(1 - 0.25 ** 0.5)  # a quarter into the decay: 1 - sqrt
    assert at[95] == pytest.approx(1 - 0.75 ** 0.5)
    assert at[100] == pytest.approx(0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_checkpoint_carries_the_cuda_rng_state():
    from pipeline import checkpoint

    state = checkpoint.rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()


def test_checkpoint_average_is_the_elementwise_mean(tmp_path):
    from pipeline import checkpoint

    for i, value in enumerate((1.0, 2.0, 6.0)):
        torch.save({"model": {"w": torch.full((2, 2), value), "b": torch.tensor([value])}}, tmp_path / f"{i}.pt")
    averaged = checkpoint.average(sorted(tmp_path.glob("*.pt")))
    assert averaged["w"].tolist() == [[3.0, 3.0], [3.0, 3.0]] and averaged["b"].tolist() == [3.0]


def test_training_with_checkpoint_averaging(tiny_project, tmp_path):
    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path / "avg", {"train": {"epochs": 3, "keep_checkpoints": 3,
                                                                     "average_last": 3, "checkpoint_every": 1000}})
    metrics = train.run(params, paths)
    assert metrics["averaged_valid_loss"] > 0
    if metrics["averaged_checkpoints"]:  # the average was kept: it is what models/model.pt holds
        assert metrics["averaged_checkpoints"] == 3
        assert metrics["averaged_valid_loss"] <= metrics["valid_loss"]
    from pipeline.config import Train

    with pytest.raises(ValueError, match=r"average_last \(4\) must be 0 \(off\), or 2 to keep_checkpoints \(2\)"):
        Train(average_last=4, keep_checkpoints=2)


def test_translate_pipes_one_output_line_per_input_line(trained):
    _, paths, _ = trained
    sentence = "나는 어제 도서관에서 책을 읽었다"
    lines = [sentence, f"{sentence} " * 1000, "", "그녀는 커피를 마셨어요"]
    proc = subprocess.run([sys.executable, "-m", "pipeline.inference.command", "--root", str(paths.root)],
                          input="".join(line + "\n" for line in lines), capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == "" and out[2] == ""  # one line each, nothing else
    assert "sentence 2 has" in proc.stderr  # the truncation warning went to stderr


def test_linear_scheduled_sampling_reaches_its_floor_at_the_end_of_a_time_budget():
    from pipeline.config import Train

    cfg = Train(scheduled_sampling="linear", teacher_forcing_min=0.6, epochs=200, max_minutes=10)
    total = 200 * 92  # steps of 200 epochs that the 10-minute budget never reaches
    at = [schedule.teacher_forcing(cfg, 900, schedule.progress(cfg, 900, total, minutes * 60))
          for minutes in (0, 5, 10)]
    assert at == pytest.approx([1.0 - 0.4 * 900 / total, 0.8, 0.6])


def test_validation_bleu_and_averaging_use_the_translator_on_the_raw_valid_split(tiny_project, tmp_path):
    from pipeline.decoding import from_params
    from pipeline.inference.translator import Translator

    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path, {"train": {
        "epochs": 2, "early_stopping_metric": "bleu", "checkpoint_every": 5, "average_last": 2}})
    # references the tokenizer cannot spell: decoding them from subword ids (the old path) would lose the ☃
    refs = [line + " ☃" for line in (paths.original / "valid.en").read_text(encoding="utf-8").splitlines()]
    (paths.original / "valid.en").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    sources = (paths.original / "valid.ko").read_text(encoding="utf-8").splitlines()
    metrics = train.run(params, paths)

    def bleu(weights) -> float:
        translator = Translator.from_file(paths.model / "model.pt", decoding=from_params(params, beam_size=1))
        translator.model.load_state_dict(weights)
        with torch.inference_mode():
            return sacrebleu.corpus_bleu(translator.translate(sources), [refs]).score

    history = torch.load(paths.checkpoints / "last.pt", weights_only=True)["state"]["history"]
    best = max(history, key=lambda r: r["valid_bleu"])
    assert best["valid_bleu"] == pytest.approx(bleu(torch.load(paths.checkpoints / "best.pt",
                                                               weights_only=True)["state_dict"]), abs=1e-6)
    # averaging is judged by the early-stopping metric, BLEU here, not by the valid loss
    assert "averaged_valid_bleu" in metrics and "averaged_valid_loss" not in metrics
    model_weights = load_model(paths.model / "model.pt")[0].state_dict()
    assert metrics["averaged_valid_bleu"] == pytest.approx(bleu(model_weights) if metrics["averaged_checkpoints"]
                                                           else metrics["averaged_valid_bleu"], abs=1e-4)
    assert (metrics["averaged_checkpoints"] > 0) == (metrics["averaged_valid_bleu"] >= best["valid_bleu"])


def test_progress_lines_feed_the_flows_bar_and_a_log_sees_one_every_five_minutes(caplog):
    """train's progress line is what flows/pipeline.py parses; off a terminal the bar prints at most one line
    per interval, so a 150-minute run writes about 30 lines to a CI log, not one per step."""
    import logging
    from types import SimpleNamespace

    from pipeline.config import Train

    s = SimpleNamespace(cfg=Train(epochs=100, max_minutes=150))
    state = train.State(best=math.inf, batch=300, step=1300, epoch_loss=4000.0, epoch_tokens=1000, train_tokens=10**6)
    with caplog.at_level(logging.INFO, logger="pipeline.stages.train"):
        train.report_progress(s, state, 2, 600, 45 * 60.0)
    line = caplog.records[-1].getMessage()
    found = _TRAINING.search(line)
    assert found and float(found.group(1)) == pytest.approx(30.0)  # 45 of 150 minutes, ahead of 2.5 of 100 epochs
    assert "epoch 3/100, batch 300/600, step 1300 | loss 4.000 | 370 tok/s | 45.0 of 150 min" in found.group(2)
    bar = TrainingBar(every=300.0)
    with caplog.at_level(logging.INFO, logger="flows.progress"):
        caplog.clear()
        for _ in range(3):
            bar.update(float(found.group(1)), found.group(2))
    shown = [r.getMessage() for r in caplog.records if r.name == "flows.progress"]
    assert shown == [f"   30.0% | {found.group(2)}"]  # pytest's capture is not a terminal


def test_an_ensemble_of_the_model_and_its_checkpoints_translates_and_refuses_another_vocabulary(trained, tmp_path):
    from pipeline.common import PipelineError
    from pipeline.inference.ensemble import Ensemble, ensemble_translator

    _, paths, _ = trained
    steps = sorted(paths.checkpoints.glob("step-*.pt"))
    assert steps, "the tiny training keeps step checkpoints"
    translator = ensemble_translator(paths.model / "model.pt", [steps[-1], paths.checkpoints / "best.pt"])
    assert isinstance(translator.model, Ensemble) and len(translator.model.members) == 3
    out = translator.translate(["나는 어제 책을 읽었다", ""])
    assert len(out) == 2 and out[1] == ""
    blob = torch.load(paths.model / "model.pt", weights_only=True)
    blob["tgt_tokenizer"] = blob["tgt_tokenizer"].replace('"<unk>"', '"<UNK>"', 1)
    torch.save(blob, tmp_path / "other.pt")
    with pytest.raises(PipelineError, match="tgt tokenizer differs from .*model.pt's; an ensemble's members"):
        ensemble_translator(paths.model / "model.pt", [tmp_path / "other.pt"])
