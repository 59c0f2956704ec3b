"""Stage ``train``: train the configured model on the bucketed dataset, tracked in MLflow.

Batches: token-budget batches of length-sorted pairs, in a new order each epoch that depends only on
(seed, epoch). One optimiser step consumes ``accumulate x processes`` batches; every batch's loss is
divided by the target tokens of the whole step, so 2 processes (torchrun, DDP) and 1 process with
``accumulate: 2`` take the same steps. The last, incomplete group of an epoch is skipped then.

Resumable: ``checkpoints/last.pt`` (outside DVC's outputs, so DVC does not delete it) is written
atomically every ``checkpoint_every`` steps and at each epoch end, with the model, optimiser, LR
scheduler, RNG state, position in the epoch and the MLflow run id; the last ``keep_checkpoints``
step checkpoints and ``best.pt`` are kept too. A rerun with the same params and data resumes; other
params or data (another fingerprint) start afresh.

Outputs: ``models/model.pt`` (best weights + config, loadable with ``weights_only=True``),
``models/run.json`` (the MLflow run) and ``metrics/train.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.common import PipelineError, atomic_file, stage_main, write_json
from pipeline.config import Params, Paths, Train
from pipeline.data import Pairs, load_split, padding_ratio, token_batches
from pipeline.models import ModelConfig, Seq2SeqBase, build_model
from pipeline.tracking import connect, experiment_id, flatten, run_tags

log = logging.getLogger(__name__)


def choose_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that have it; full precision elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fingerprint(params: Params, paths: Paths) -> str:
    """What a checkpoint must match to be resumed: model and train params and the exact inputs."""
    settings = {"model": params.model.model_dump(), "train": params.train.model_dump(exclude={"device", "threads"}),
                "max_tokens": params.build.max_tokens, "world": int(os.environ.get("WORLD_SIZE", 1))}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in (paths.dataset / "meta.json", paths.tokenizer / "src.json", paths.tokenizer / "tgt.json",
              paths.embeddings / "info.json"):
        h.update(f.read_bytes() if f.exists() else b"-")
    return h.hexdigest()


def save_model(path: Path, model: Seq2SeqBase, extra: dict) -> None:
    with atomic_file(path, "wb") as fh:
        torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}, fh)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[Seq2SeqBase, dict]:
    if not path.exists():
        raise PipelineError(f"{path} not found; run the train stage first")
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ModelConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob


def lr_factor(cfg: Train, total_steps: int):
    """Multiplier of train.lr at optimiser step s (0-based)."""
    warm = cfg.warmup_steps

    def factor(s: int) -> float:
        s += 1
        if cfg.scheduler == "noam":  # linear warmup, then 1/sqrt(step); peaks at lr
            return min(s / max(warm, 1), math.sqrt(max(warm, 1) / s))
        if warm and s <= warm:
            return s / warm
        if cfg.scheduler == "cosine":
            progress = min(1.0, (s - warm) / max(total_steps - warm, 1))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # down to 10% of lr
        return 1.0

    return factor


def teacher_forcing(cfg: Train, step: int, total_steps: int) -> float:
    """Probability of feeding the gold previous token (scheduled sampling, Bengio et al. 2015)."""
    if cfg.scheduled_sampling == "linear":
        return max(cfg.teacher_forcing_min, 1.0 - (1.0 - cfg.teacher_forcing_min) * step / max(total_steps, 1))
    if cfg.scheduled_sampling == "inverse_sigmoid":
        k = cfg.sampling_k
        return max(cfg.teacher_forcing_min, k / (k + math.exp(min(step / k, 50.0))))
    return 1.0


class LossModule(nn.Module):
    """The model's loss as a forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, model: Seq2SeqBase):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt: torch.Tensor, label_smoothing: float,
                teacher: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.model.loss(src, src_len, tgt, label_smoothing, teacher)


@torch.no_grad()
def valid_loss(model: Seq2SeqBase, data: Pairs, max_tokens: int, device: torch.device, amp: bool) -> float:
    """Token-level negative log-likelihood on ``data`` (no label smoothing)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for idx in token_batches(data.src_len, data.tgt_len, max_tokens):
        b = {k: v.to(device) for k, v in data.batch(idx).items()}
        with autocast(device, amp):
            _, nll, n = model.loss(b["src"], b["src_len"], b["tgt"])
        total, tokens = total + nll.item(), tokens + n
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def valid_bleu(model: Seq2SeqBase, data: Pairs, paths: Paths, max_tokens: int, device: torch.device) -> float:
    """Greedy BLEU on ``data`` against its own (detokenised) references."""
    import sacrebleu

    from pipeline.search import greedy, strip_ids
    from pipeline.tokenize import load_tokenizers

    _, tgt_tok = load_tokenizers(paths)
    was_training = model.training
    model.eval()
    hyps, refs = [], []
    for idx in token_batches(data.src_len, data.tgt_len, max_tokens):
        b = data.batch(idx)
        tokens, _ = greedy(model, b["src"].to(device), b["src_len"].to(device), int(b["src"].size(1) * 1.5) + 10)
        hyps += tgt_tok.decode_batch([strip_ids(r) for r in tokens.tolist()])
        refs += tgt_tok.decode_batch([strip_ids(r[1:]) for r in b["tgt"].tolist()])
    model.train(was_training)
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def _build_model(params: Params, paths: Paths, meta: dict) -> Seq2SeqBase:
    model = build_model(ModelConfig(meta["src_vocab"], meta["tgt_vocab"], **params.model.model_dump(),
                                    joint_vocab=params.tokenize.joint))
    if params.train.embeddings == "pretrained":
        files = [paths.embeddings / "src.npy", paths.embeddings / "tgt.npy"]
        for f in files:
            if not f.exists():
                raise PipelineError(f"{f} not found; run the embed stage first")
        src, tgt = (torch.from_numpy(np.load(f)) for f in files)
        model.load_embeddings(src, tgt, params.train.freeze_embeddings)
    return model


def _distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return (torch.distributed.get_rank() if world > 1 else 0), world


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
    rank, world = _distributed(device)
    torch.manual_seed(cfg.seed)
    train_set, valid_set = load_split(paths.dataset, "train"), load_split(paths.dataset, "valid")
    model = _build_model(params, paths, meta).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    max_tokens, pin = params.build.max_tokens, device.type == "cuda"
    group = cfg.accumulate * world  # batches per optimiser step
    n_batches = len(token_batches(train_set.src_len, train_set.tgt_len, max_tokens))
    steps_per_epoch = n_batches // group if group > 1 else n_batches
    if steps_per_epoch == 0:
        raise PipelineError(f"one epoch has {n_batches} batches, fewer than accumulate x processes ({group})")
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
    higher_is_better = cfg.early_stopping_metric == "bleu"

    fp = fingerprint(params, paths)
    state = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf if higher_is_better else math.inf, "stale": 0,
             "run_id": "", "history": [], "epoch_loss": 0.0, "epoch_tokens": 0, "train_seconds": 0.0,
             "train_tokens": 0, "padding_ratio": 0.0}
    last, best = paths.checkpoints / "last.pt", paths.checkpoints / "best.pt"
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=True)
        if ck["fingerprint"] == fp and not ck["state"].get("complete"):
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
            state = ck["state"]
            log.info("resuming from %s: epoch %d, batch %d, step %d", last, state["epoch"] + 1, state["batch"],
                     state["step"])
        else:
            log.info("%s belongs to %s run; starting afresh", last,
                     "a finished" if ck["fingerprint"] == fp else "another params/data")

    def checkpoint(**extra: object) -> None:
        state.update(extra)
        if rank:
            return
        blob = {"fingerprint": fp, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "state": state}
        step_file = paths.checkpoints / f"step-{state['step']:08d}.pt"
        with atomic_file(step_file, "wb") as fh:
            torch.save(blob, fh)
        with atomic_file(last, "wb") as fh, open(step_file, "rb") as src:
            shutil.copyfileobj(src, fh)
        for old in sorted(paths.checkpoints.glob("step-*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink()

    loss_module: nn.Module = LossModule(model)
    if cfg.compile:
        model.forward = torch.compile(model.forward)  # compiles the teacher-forced pass; weights keep their names
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[device] if pin else None)

    mlflow = connect(paths.root) if rank == 0 else None
    active = contextlib.nullcontext()
    if mlflow is not None:
        if state["run_id"]:
            active = mlflow.start_run(run_id=state["run_id"])
        else:
            m = params.model
            name = (f"{params.data.corpus}-transformer" if m.arch == "transformer"
                    else f"{params.data.corpus}-{m.cell}-{m.attention}")
            active = mlflow.start_run(experiment_id=experiment_id(mlflow, cfg.experiment, paths.root), run_name=name,
                                      tags=run_tags(paths.root))
            mlflow.log_params(flatten(params.model_dump()))
            mlflow.log_params({"model.parameters": sum(p.numel() for p in model.parameters()), "world_size": world})
            for stage in ("clean", "tokenize", "build"):  # what the data stages did, next to the model
                report = paths.metrics / f"{stage}.json"
                if report.exists():
                    values = flatten(json.loads(report.read_text()), f"{stage}.")
                    mlflow.log_metrics({k: v for k, v in values.items()
                                        if isinstance(v, int | float) and not isinstance(v, bool)})
                    mlflow.log_artifact(str(report), artifact_path="data_reports")
            state["run_id"] = active.info.run_id
    paths.checkpoints.mkdir(parents=True, exist_ok=True)

    with active:
        model.train()
        for epoch in range(state["epoch"], cfg.epochs):
            batches = token_batches(train_set.src_len, train_set.tgt_len, max_tokens, seed=cfg.seed * 10_000 + epoch)
            groups = [batches[i:i + group] for i in range(0, steps_per_epoch * group, group)]
            if state["batch"] == 0:
                state["padding_ratio"] = padding_ratio(train_set.src_len, train_set.tgt_len, batches)
            bar = tqdm(range(state["batch"], len(groups)), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       disable=None if rank == 0 else True, initial=state["batch"], total=len(groups))
            tic = time.perf_counter()
            for i in bar:
                # every batch's loss is divided by the target tokens of the whole step (all processes)
                step_tokens = sum(int(train_set.tgt_len[b].sum()) - len(b) for b in groups[i])
                teacher = teacher_forcing(cfg, state["step"], total_steps)
                mine = groups[i][rank::world]
                for j, idx in enumerate(mine):
                    b = {k: v.to(device, non_blocking=pin) for k, v in train_set.batch(idx, pin).items()}
                    sync = j == len(mine) - 1 or world == 1
                    with (contextlib.nullcontext() if sync else loss_module.no_sync()), autocast(device, cfg.amp):
                        loss, nll, n = loss_module(b["src"], b["src_len"], b["tgt"], cfg.label_smoothing, teacher)
                        (loss * world / step_tokens).backward()
                    state["epoch_loss"] += nll.item()
                    state["epoch_tokens"] += n
                    state["train_tokens"] += n * world
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.set_postfix(loss=f"{state['epoch_loss'] / max(state['epoch_tokens'], 1):.3f}", refresh=False)
                if state["step"] % cfg.checkpoint_every == 0:
                    state["train_seconds"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    checkpoint(batch=i + 1)
                if cfg.max_minutes and state["train_seconds"] + time.perf_counter() - tic > 60 * cfg.max_minutes:
                    state["out_of_time"] = True
                    break
            state["train_seconds"] += time.perf_counter() - tic

            train_loss = state["epoch_loss"] / max(state["epoch_tokens"], 1)
            v_loss = valid_loss(model, valid_set, max_tokens, device, cfg.amp)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 50)),
                   "valid_loss": v_loss, "valid_ppl": math.exp(min(v_loss, 50)), "step": state["step"],
                   "lr": scheduler.get_last_lr()[0],
                   "teacher_forcing": teacher_forcing(cfg, state["step"], total_steps)}
            if higher_is_better:
                row["valid_bleu"] = valid_bleu(model, valid_set, paths, max_tokens, device)
            score = row["valid_bleu"] if higher_is_better else v_loss
            improved = score > state["best"] if higher_is_better else score < state["best"]
            state["history"].append(row)
            log.info("epoch %d: train loss %.4f (ppl %.2f), valid loss %.4f (ppl %.2f)%s", epoch + 1, train_loss,
                     row["train_ppl"], v_loss, row["valid_ppl"],
                     f", valid BLEU {row['valid_bleu']:.2f}" if higher_is_better else "")
            if mlflow is not None:
                mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "step")}
                                   | {"padding_ratio": state["padding_ratio"]}, step=epoch + 1)
            if improved and rank == 0:
                save_model(best, model, {"epoch": epoch + 1})
            checkpoint(epoch=epoch + 1, batch=0, epoch_loss=0.0, epoch_tokens=0,
                       best=score if improved else state["best"], stale=0 if improved else state["stale"] + 1)
            if state.get("out_of_time"):
                log.info("time budget of %s minutes used: stopping after epoch %d", cfg.max_minutes, epoch + 1)
                break
            if cfg.early_stopping and state["stale"] >= cfg.early_stopping:
                log.info("early stopping: no better valid %s for %d epoch(s)", cfg.early_stopping_metric,
                         state["stale"])
                break

        key = "valid_bleu" if higher_is_better else "valid_loss"
        best_row = (max if higher_is_better else min)(state["history"], key=lambda r: r[key])
        tokens_per_sec = state["train_tokens"] / max(state["train_seconds"], 1e-9)
        metrics = {"train_loss": round(best_row["train_loss"], 4), "valid_loss": round(best_row["valid_loss"], 4),
                   "valid_ppl": round(best_row["valid_ppl"], 3), "best_epoch": best_row["epoch"],
                   "epochs": len(state["history"]), "steps": state["step"],
                   "train_tokens_per_sec": round(tokens_per_sec, 1), "padding_ratio": round(state["padding_ratio"], 4)}
        if rank == 0:
            model.load_state_dict(torch.load(best, map_location=device, weights_only=True)["state_dict"])
            extra = {"src_lang": params.data.src, "tgt_lang": params.data.tgt, "epoch": best_row["epoch"],
                     "run_id": state["run_id"], "normalize": params.clean.normalize, "max_len": params.build.max_len,
                     "korean_morphemes": params.clean.korean_morphemes}
            save_model(paths.model / "model.pt", model, extra)
            write_json(paths.metrics / "train.json", metrics)
            assert mlflow is not None
            mlflow.log_metrics({"best_valid_loss": best_row["valid_loss"], "train_tokens_per_sec": tokens_per_sec})
            mlflow.log_artifacts(str(paths.tokenizer), artifact_path="tokenizer")
            _log_model(mlflow, model.cpu())
            write_json(paths.model / "run.json",
                       {"run_id": state["run_id"], "experiment_id": active.info.experiment_id})
            checkpoint(complete=True)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    log.info("model: %s (best epoch %d, valid ppl %.2f, %.0f target tokens/s)", paths.model / "model.pt",
             best_row["epoch"], best_row["valid_ppl"], tokens_per_sec)
    return metrics


def _log_model(mlflow: object, model: Seq2SeqBase) -> None:
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
