"""Stage ``train``: train the seq2seq model on the bucketed dataset, tracked in MLflow.

Resumable: ``checkpoints/last.pt`` (outside DVC's outputs, so DVC does not delete it) is written
atomically every ``checkpoint_every`` steps and at each epoch end, with the model, optimiser, RNG
state, position in the epoch and the MLflow run id. A rerun with the same params and data resumes
from it; different params or data (another fingerprint) start afresh. Batches of an epoch depend
only on (seed, epoch), so a resumed run sees exactly the batches it would have seen.

Outputs: ``models/model.pt`` (best weights by valid loss + config, loadable with
``weights_only=True``), ``models/run.json`` (the MLflow run) and ``metrics/train.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.common import PipelineError, atomic_file, stage_main, write_json
from pipeline.config import Params, Paths
from pipeline.data import Pairs, load_split, padding_ratio, token_batches
from pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from pipeline.tracking import connect, experiment_id, flatten, run_tags

log = logging.getLogger(__name__)


def choose_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device("cuda" if pref in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that have it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fingerprint(params: Params, paths: Paths) -> str:
    """What a checkpoint must match to be resumed: the train params and the exact inputs."""
    h = hashlib.sha256(json.dumps(params.train.model_dump(exclude={"device", "threads"}), sort_keys=True).encode())
    for f in (paths.dataset / "meta.json", paths.tokenizer / "src.json", paths.tokenizer / "tgt.json",
              paths.embeddings / "info.json"):
        h.update(f.read_bytes() if f.exists() else b"-")
    return h.hexdigest()


def save_model(path: Path, model: Seq2Seq, extra: dict) -> None:
    with atomic_file(path, "wb") as fh:
        torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}, fh)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[Seq2Seq, dict]:
    if not path.exists():
        raise PipelineError(f"{path} not found; run the train stage first")
    blob = torch.load(path, map_location=device, weights_only=True)
    model = Seq2Seq(Seq2SeqConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob


@torch.no_grad()
def valid_loss(model: Seq2Seq, data: Pairs, max_tokens: int, device: torch.device) -> float:
    model.eval()
    total, tokens = 0.0, 0
    for idx in token_batches(data.src_len, data.tgt_len, max_tokens):
        b = {k: v.to(device) for k, v in data.batch(idx).items()}
        with autocast(device):
            loss, n = model.loss(b["src"], b["src_len"], b["tgt"])
        total, tokens = total + loss.item(), tokens + n
    model.train()
    return total / max(tokens, 1)


def _build_model(params: Params, paths: Paths, meta: dict) -> Seq2Seq:
    cfg = params.train
    model = Seq2Seq(Seq2SeqConfig(meta["src_vocab"], meta["tgt_vocab"], cfg.emb_dim, cfg.hidden, cfg.dropout))
    if cfg.embeddings == "pretrained":
        files = [paths.embeddings / "src.npy", paths.embeddings / "tgt.npy"]
        for f in files:
            if not f.exists():
                raise PipelineError(f"{f} not found; run the embed stage first")
        src, tgt = (torch.from_numpy(np.load(f)) for f in files)
        model.load_embeddings(src, tgt, cfg.freeze_embeddings)
    return model


def run(params: Params, paths: Paths) -> dict:
    """Train the model; resume from checkpoints/last.pt when it matches."""
    cfg = params.train
    meta_path = paths.dataset / "meta.json"
    if not meta_path.exists():
        raise PipelineError(f"{meta_path} not found; run the build stage first")
    meta = json.loads(meta_path.read_text())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_set, valid_set = load_split(paths.dataset, "train"), load_split(paths.dataset, "valid")
    model = _build_model(params, paths, meta).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    max_tokens = params.build.max_tokens
    pin = device.type == "cuda"

    fp = fingerprint(params, paths)
    state = {"epoch": 0, "batch": 0, "step": 0, "best_valid": math.inf, "run_id": "", "history": [],
             "epoch_loss": 0.0, "epoch_tokens": 0, "train_seconds": 0.0, "train_tokens": 0}
    last, best = paths.checkpoints / "last.pt", paths.checkpoints / "best.pt"
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=True)
        if ck["fingerprint"] == fp and not ck["state"].get("complete"):
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            torch.set_rng_state(ck["rng"])
            state = ck["state"]
            log.info("resuming from %s: epoch %d, batch %d, step %d", last, state["epoch"] + 1, state["batch"],
                     state["step"])
        else:
            log.info("%s belongs to %s run; starting afresh", last,
                     "a finished" if ck["fingerprint"] == fp else "another params/data")

    def checkpoint(**extra: object) -> None:
        state.update(extra)
        with atomic_file(last, "wb") as fh:
            torch.save({"fingerprint": fp, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "state": state}, fh)

    mlflow = connect(paths.root)
    if state["run_id"]:
        active = mlflow.start_run(run_id=state["run_id"])
    else:
        active = mlflow.start_run(experiment_id=experiment_id(mlflow, cfg.experiment, paths.root),
                                  run_name=f"{params.data.corpus}-gru-bahdanau", tags=run_tags(paths.root))
        mlflow.log_params(flatten(params.model_dump()))
        mlflow.log_params({"model.parameters": sum(p.numel() for p in model.parameters())})
        for stage in ("clean", "tokenize", "build"):  # what the data stages did, next to the model
            report = paths.metrics / f"{stage}.json"
            if report.exists():
                values = flatten(json.loads(report.read_text()), f"{stage}.")
                mlflow.log_metrics({k: v for k, v in values.items() if isinstance(v, int | float)
                                    and not isinstance(v, bool)})
                mlflow.log_artifact(str(report), artifact_path="data_reports")
        state["run_id"] = active.info.run_id
    paths.checkpoints.mkdir(parents=True, exist_ok=True)

    with active:
        model.train()
        for epoch in range(state["epoch"], cfg.epochs):
            batches = token_batches(train_set.src_len, train_set.tgt_len, max_tokens, seed=cfg.seed * 10_000 + epoch)
            if state["batch"] == 0:
                state["padding_ratio"] = padding_ratio(train_set.src_len, train_set.tgt_len, batches)
            bar = tqdm(range(state["batch"], len(batches)), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", disable=None, initial=state["batch"], total=len(batches))
            tic = time.perf_counter()
            for i in bar:
                b = {k: v.to(device, non_blocking=pin) for k, v in train_set.batch(batches[i], pin).items()}
                with autocast(device):
                    loss, n = model.loss(b["src"], b["src_len"], b["tgt"])
                (loss / n).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["epoch_loss"] += loss.item()
                state["epoch_tokens"] += n
                state["train_tokens"] += n
                state["step"] += 1
                bar.set_postfix(loss=f"{state['epoch_loss'] / state['epoch_tokens']:.3f}", refresh=False)
                if state["step"] % cfg.checkpoint_every == 0:
                    state["train_seconds"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    checkpoint(batch=i + 1)
            state["train_seconds"] += time.perf_counter() - tic
            train_loss = state["epoch_loss"] / max(state["epoch_tokens"], 1)
            v_loss = valid_loss(model, valid_set, max_tokens, device)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 50)),
                   "valid_loss": v_loss, "valid_ppl": math.exp(min(v_loss, 50)), "step": state["step"]}
            state["history"].append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "step")}
                               | {"padding_ratio": state["padding_ratio"]}, step=epoch + 1)
            log.info("epoch %d: train loss %.4f (ppl %.2f), valid loss %.4f (ppl %.2f)", epoch + 1, train_loss,
                     row["train_ppl"], v_loss, row["valid_ppl"])
            if v_loss < state["best_valid"]:
                save_model(best, model, {"epoch": epoch + 1})
            checkpoint(epoch=epoch + 1, batch=0, epoch_loss=0.0, epoch_tokens=0,
                       best_valid=min(v_loss, state["best_valid"]))

        model.load_state_dict(torch.load(best, map_location=device, weights_only=True)["state_dict"])
        best_epoch = min(state["history"], key=lambda r: r["valid_loss"])
        tokens_per_sec = state["train_tokens"] / max(state["train_seconds"], 1e-9)
        extra = {"src_lang": params.data.src, "tgt_lang": params.data.tgt, "epoch": best_epoch["epoch"],
                 "run_id": state["run_id"], "normalize": params.clean.normalize, "max_len": params.build.max_len}
        save_model(paths.model / "model.pt", model, extra)
        metrics = {"train_loss": round(best_epoch["train_loss"], 4), "valid_loss": round(best_epoch["valid_loss"], 4),
                   "valid_ppl": round(best_epoch["valid_ppl"], 3), "best_epoch": best_epoch["epoch"],
                   "epochs": cfg.epochs, "steps": state["step"], "train_tokens_per_sec": round(tokens_per_sec, 1),
                   "padding_ratio": round(state["padding_ratio"], 4)}
        write_json(paths.metrics / "train.json", metrics)
        mlflow.log_metrics({"best_valid_loss": best_epoch["valid_loss"], "train_tokens_per_sec": tokens_per_sec})
        mlflow.log_artifacts(str(paths.tokenizer), artifact_path="tokenizer")
        _log_model(mlflow, model.cpu())
        write_json(paths.model / "run.json", {"run_id": state["run_id"],
                                              "experiment_id": active.info.experiment_id})
        checkpoint(complete=True)
    log.info("model: %s (best epoch %d, valid ppl %.2f, %.0f target tokens/s)", paths.model / "model.pt",
             best_epoch["epoch"], best_epoch["valid_ppl"], tokens_per_sec)
    return metrics


def _log_model(mlflow: object, model: Seq2Seq) -> None:
    import mlflow.pytorch

    import pipeline

    requirements = [f"torch=={torch.__version__.split('+')[0]}", "tokenizers", "numpy"]
    # pickle, not the traced 'pt2' format: decoding loops over a data-dependent length
    mlflow.pytorch.log_model(model, name="model", pip_requirements=requirements, serialization_format="pickle",
                             code_paths=[str(Path(pipeline.__file__).parent)])


def main() -> None:
    stage_main("train", run)


if __name__ == "__main__":
    main()
