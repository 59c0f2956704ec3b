"""Stage ``train``: train the configured model on the bucketed dataset, tracked in MLflow.

Batches: token-budget batches of length-sorted pairs, in a new order each epoch that depends only on
(seed, epoch). One optimiser step consumes ``accumulate x processes`` batches; every batch's loss is
divided by the target tokens of the whole step, so 2 processes (torchrun, DDP) and 1 process with
``accumulate: 2`` take the same steps. The last, incomplete group of an epoch is skipped then.

Resumable: ``checkpoints/last.pt`` (outside DVC's outputs, so DVC does not delete it) is written
atomically every ``checkpoint_every`` steps and at each epoch end, with the model, optimiser, fp16
grad scaler, RNG states (CPU and CUDA), position in the epoch and the MLflow run id (the learning
rate follows from the step and the time used); the last ``keep_checkpoints``
step checkpoints and ``best.pt`` are kept too. A rerun with the same params and data resumes; other
params or data (another fingerprint) start afresh.

Outputs: ``models/model.pt`` (best weights, config, both tokenizers and the preprocessing settings:
all a translator needs; loadable with ``weights_only=True``), ``models/run.json`` (the MLflow run),
``metrics/train.json`` and the learning curves in ``dvclive/`` (for ``dvc plots``). The servable
MLflow model is logged by the evaluate stage.

Reading order: ``run`` at the bottom, then ``setup``, ``resume``, ``train_epoch``, ``validate``,
``end_epoch`` and ``finish`` above it.
"""

from __future__ import annotations

if __name__ == "__main__":  # the allocator is chosen before torch is imported, so that re-executing under it costs
    # an interpreter's start (~0.05 s), not a second import of torch (~1.5 s): see pipeline/allocator.py
    from pipeline.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental import _config as fx_config

from pipeline import allocator, checkpoint
from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, atomic_file, read_lines, stage_outputs
from pipeline.config import Params, Paths, Train
from pipeline.dataset import END, FIRST, TGT_TOKENS, Shards, batch_padding, load_split
from pipeline.decoding import from_params
from pipeline.device import (
    amp_dtype,
    autocast,
    choose_device,
    init_distributed,
    relaunch_under_torchrun,
)
from pipeline.inference.translator import Translator
from pipeline.models import Seq2SeqBase, build_model
from pipeline.schedule import lr_factor, progress, teacher_forcing
from pipeline.scoring import corpus_score
from pipeline.tokens import load_tokenizers
from pipeline.tracking import connect, end_abandoned_run, training_run, write_curves

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 20.0  # between progress lines


class LossModule(nn.Module):
    """The model's loss as a forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, model: Seq2SeqBase):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt: torch.Tensor, label_smoothing: float,
                teacher: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.model.loss(src, src_len, tgt, label_smoothing, teacher)


@torch.no_grad()
def valid_loss(model: Seq2SeqBase, data: Shards, max_tokens: int, device: torch.device,
               amp: torch.dtype | None = None) -> float:
    """Token-level negative log-likelihood on ``data`` (no label smoothing)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for row in data.batches(max_tokens):
        b = {k: v.to(device) for k, v in data.batch(row).items()}
        with autocast(device, amp):
            _, nll, n = model.loss(b["src"], b["src_len"], b["tgt"])
        total, tokens = total + nll.item(), tokens + n
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def valid_bleu(s: Session) -> float:
    """BLEU on the valid split as evaluate scores the test split: the sources as downloaded through the
    translator, against the references as downloaded. Greedy, with the project's length limit: a signal
    for every epoch, and the beam settings can change without retraining (dvc.yaml lists only the limit)."""
    sources, references = s.valid_text
    translator = Translator(s.model, *s.tokenizers, s.params.clean.preprocessing, s.params.build.max_len,
                            from_params(s.params, beam_size=1))
    return corpus_score(translator.translate(sources), references, s.params.data.tgt)


# --- state -------------------------------------------------------------------------------------


@dataclass
class State:
    """Where training stands; saved in every checkpoint (plain types, so ``weights_only`` loads it)."""

    best: float  # best valid loss (or BLEU) so far
    epoch: int = 0  # epochs completed
    batch: int = 0  # optimiser steps taken in the current epoch
    step: int = 0  # optimiser steps taken in all
    stale: int = 0  # epochs since the best one
    run_id: str = ""  # the MLflow run
    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch
    epoch_loss: float = 0.0  # summed NLL of the current epoch so far
    epoch_tokens: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    padding_ratio: float = 0.0
    out_of_time: bool = False  # the budget (max_minutes, or max_steps) is used
    complete: bool = False


@dataclass
class Session:
    """What one training run works with; built once by ``setup``."""

    params: Params
    paths: Paths
    device: torch.device
    rank: int
    world: int
    model: Seq2SeqBase
    loss_module: nn.Module  # the model's loss, wrapped in DDP when world > 1
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None  # autocast dtype (None: fp32)
    scaler: torch.amp.GradScaler  # fp16 only; a no-op otherwise
    train_set: Shards
    valid_set: Shards
    train_batches: np.ndarray  # the train split's batch table (dataset.Shards.batches); its order changes by epoch
    group: int  # batches per optimiser step (accumulate x processes)
    steps_per_epoch: int
    total_steps: int
    fingerprint: str
    mlflow: Any = None  # the mlflow module on rank 0, None elsewhere
    tokenizers: tuple = ()  # (source, target), for validation BLEU
    valid_text: tuple[list[str], list[str]] = ([], [])  # valid sources and references as downloaded

    @property
    def cfg(self) -> Train:
        return self.params.train

    @property
    def higher_is_better(self) -> bool:
        return self.cfg.early_stopping_metric == "bleu"

    def checkpoint_blob(self, state: State) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(), "state": asdict(state)}

    def progress(self, state: State, seconds: float) -> float:
        return progress(self.cfg, state.step, self.total_steps, seconds)

    def set_lr(self, state: State, progress: float) -> float:
        lr = self.cfg.lr * lr_factor(self.cfg, state.step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def save_checkpoint(self, state: State) -> None:
        if self.rank == 0:
            checkpoint.save_checkpoint(self.paths.checkpoints, self.checkpoint_blob(state), state.step,
                                       self.cfg.keep_checkpoints, step_file=state.step > 0)


# --- setup -------------------------------------------------------------------------------------


def _build_model(params: Params, paths: Paths, meta: dict) -> Seq2SeqBase:
    model = build_model(**params.model.fields(meta["src_vocab"], meta["tgt_vocab"], params.tokenize.joint))
    if params.train.embeddings == "pretrained":
        files = [paths.embeddings / "src.npy", paths.embeddings / "tgt.npy"]
        for f in files:
            if not f.exists():
                raise PipelineError(f"{f} not found; run the embed stage first")
        src, tgt = (torch.from_numpy(np.load(f)) for f in files)
        model.load_embeddings(src, tgt, params.train.freeze_embeddings)
    return model


def compiled(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile`` for every batch shape at once. Duck sizing (on by default) gives the source and target
    lengths one symbol when the first batch has them equal, which length-bucketed batches often do, and the first
    batch where they differ then compiles the forward and backward again: 20 s of a cold compile on 2 cores
    (the compile test, 90 -> 69 s). Turning it off is PyTorch's own advice in that recompile's message; the setting
    is private, so it is patched only while the compiled pass runs (it is read when a graph is traced)."""
    return fx_config.patch(use_duck_shape=False)(torch.compile(forward, dynamic=True))


def _fingerprint(params: Params, paths: Paths, world: int) -> str:
    # what changes the run; where and how it runs (device, threads, the rendezvous address, recomputation) does not
    train = params.train.model_dump(exclude={"device", "threads", "rendezvous", "recompute_layers"})
    settings = {"model": params.model.model_dump(), "train": train,
                "max_tokens": params.build.max_tokens, "world": world}
    if params.train.embeddings == "pretrained":  # info.json alone does not change with every embed setting
        settings["embed"] = params.embed.model_dump(exclude={"workers"})
    return checkpoint.fingerprint(settings, [paths.dataset / "meta.json", paths.tokenizer / "src.json",
                                             paths.tokenizer / "tgt.json", paths.embeddings / "info.json"])


def setup(params: Params, paths: Paths) -> Session:
    cfg = params.train
    meta_path = paths.dataset / "meta.json"
    if not meta_path.exists():
        raise PipelineError(f"{meta_path} not found; run the build stage first")
    meta = json.loads(meta_path.read_text())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    rank, world = init_distributed(device)
    torch.manual_seed(cfg.seed)
    train_set, valid_set = load_split(paths.dataset, "train"), load_split(paths.dataset, "valid")
    model = _build_model(params, paths, meta).to(device)
    if cfg.recompute_layers:  # a Transformer: the params' validation says so
        model.recompute_layers = True
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    group = cfg.accumulate * world
    train_batches = train_set.batches(params.build.max_tokens)
    n_batches = len(train_batches)
    steps_per_epoch = n_batches // group
    if steps_per_epoch == 0:
        raise PipelineError(f"one epoch has {n_batches} batches, fewer than accumulate x processes ({group})")
    total_steps = min(steps_per_epoch * cfg.epochs, cfg.max_steps or steps_per_epoch * cfg.epochs)
    amp = amp_dtype(cfg.amp, device, params.model.arch)
    if rank == 0:
        log.info("training on %s in %s; memory allocator: %s", device, str(amp or torch.float32).removeprefix("torch."),
                 allocator.in_use())
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    loss_module: nn.Module = LossModule(model)
    if cfg.compile:
        model.features = compiled(model.features)  # the teacher-forced pass; weights keep names
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device] if device.type == "cuda" else None)
    session = Session(params, paths, device, rank, world, model, loss_module, optimizer, amp, scaler, train_set,
                      valid_set, train_batches, group, steps_per_epoch, total_steps, _fingerprint(params, paths, world),
                      connect(paths.root) if rank == 0 else None)
    if session.higher_is_better:
        session.tokenizers = load_tokenizers(paths.tokenizer)
        valid = paths.original / "valid"
        session.valid_text = (read_lines(valid.with_suffix(f".{params.data.src}")),
                              read_lines(valid.with_suffix(f".{params.data.tgt}")))
    return session


def resume(s: Session) -> State:
    """The state to continue from: ``last.pt`` when it is an unfinished run of these params and data.

    Otherwise training starts afresh: the checkpoints of the other run are deleted (so none of them
    can pass for this run's), and its MLflow run, if it never finished, is marked KILLED.
    """
    fresh = State(best=-math.inf if s.higher_is_better else math.inf)
    last = s.paths.checkpoints / "last.pt"
    ck = checkpoint.load_checkpoint(last, s.device)
    if s.world > 1:
        torch.distributed.barrier()  # every rank has read last.pt before rank 0 may delete it
    if ck is not None and ck["fingerprint"] == s.fingerprint and not ck["state"].get("complete"):
        s.model.load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        s.scaler.load_state_dict(ck["scaler"])
        checkpoint.set_rng_state(ck["rng"])
        state = State(**ck["state"])
        log.info("resuming from %s: epoch %d, batch %d, step %d", last, state.epoch + 1, state.batch, state.step)
        return state
    if ck is not None:
        log.info("%s belongs to %s run; starting afresh", last,
                 "a finished" if ck["fingerprint"] == s.fingerprint else "another params/data")
    if s.rank == 0:
        if ck is not None and not ck["state"].get("complete") and ck["state"].get("run_id"):
            end_abandoned_run(s.mlflow, ck["state"]["run_id"])
        checkpoint.clear_checkpoints(s.paths.checkpoints)
    return fresh


def start_tracking(s: Session, state: State) -> contextlib.AbstractContextManager:
    """The MLflow run of this training: the resumed one, or a new one with every param logged."""
    if s.mlflow is None:
        return contextlib.nullcontext()
    active = training_run(s.mlflow, state.run_id, s.params, s.paths,
                          {"model.parameters": sum(p.numel() for p in s.model.parameters()), "world_size": s.world})
    state.run_id = active.info.run_id
    return active


# --- one epoch ---------------------------------------------------------------------------------


def train_epoch(s: Session, state: State, epoch: int) -> None:
    """Optimiser steps from ``state.batch`` to the end of the epoch, or until the time budget is used."""
    cfg, data = s.cfg, s.train_set
    order = np.random.default_rng(cfg.seed * 10_000 + epoch).permutation(len(s.train_batches))  # this epoch's
    batches = s.train_batches[order]
    groups = [batches[i:i + s.group] for i in range(0, s.steps_per_epoch * s.group, s.group)]
    if state.batch == 0:
        state.padding_ratio = batch_padding(batches)
    pin = s.device.type == "cuda"
    tic = reported = time.perf_counter()
    for i in range(state.batch, len(groups)):
        done = s.progress(state, state.train_seconds + time.perf_counter() - tic)
        s.set_lr(state, done)
        # every batch's loss is divided by the target tokens of the whole step (all processes)
        step_tokens = int((groups[i][:, TGT_TOKENS] - (groups[i][:, END] - groups[i][:, FIRST])).sum())  # no <s>
        teacher = teacher_forcing(cfg, state.step, done)
        mine = groups[i][s.rank::s.world]
        for j, row in enumerate(mine):
            b = {k: v.to(s.device, non_blocking=pin) for k, v in data.batch(row, pin).items()}
            sync = j == len(mine) - 1 or s.world == 1
            with (contextlib.nullcontext() if sync else s.loss_module.no_sync()), autocast(s.device, s.amp):
                loss, nll, n = s.loss_module(b["src"], b["src_len"], b["tgt"], cfg.label_smoothing, teacher)
                s.scaler.scale(loss * s.world / step_tokens).backward()
            state.epoch_loss += nll.item()
            state.epoch_tokens += n
            state.train_tokens += n * s.world
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.batch = i + 1
        if s.rank == 0 and time.perf_counter() - reported >= PROGRESS_SECONDS:
            reported = time.perf_counter()
            report_progress(s, state, epoch, len(groups), state.train_seconds + reported - tic)
        if state.step % cfg.checkpoint_every == 0:
            state.train_seconds += time.perf_counter() - tic
            tic = time.perf_counter()
            s.save_checkpoint(state)
        if (cfg.max_minutes and _out_of_time(s, state.train_seconds + time.perf_counter() - tic)) or \
                (cfg.max_steps and state.step >= cfg.max_steps):  # every rank counts the same steps
            state.out_of_time = True
            break
    state.train_seconds += time.perf_counter() - tic


def report_progress(s: Session, state: State, epoch: int, batches: int, seconds: float) -> None:
    """One progress line (the flow draws its bar from these): how far the run is, by epochs or by its time
    budget or its steps, whichever is further, and where the epoch stands."""
    cfg = s.cfg
    by_epochs = (epoch + state.batch / batches) / cfg.epochs
    done = max(by_epochs, seconds / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0,
               state.step / cfg.max_steps if cfg.max_steps else 0.0)
    budget = f" of {cfg.max_minutes:g}" if cfg.max_minutes else ""
    log.info("progress %5.1f%% | epoch %d/%d, batch %d/%d, step %d | loss %.3f | %.0f tok/s | %.1f%s min",
             100 * min(done, 1.0), epoch + 1, cfg.epochs, state.batch, batches, state.step,
             state.epoch_loss / max(state.epoch_tokens, 1), state.train_tokens / max(seconds, 1e-9), seconds / 60,
             budget)


def _out_of_time(s: Session, seconds: float) -> bool:
    """Whether the time budget is used; under DDP rank 0's clock decides for every rank, so all stop together."""
    over = seconds > 60 * s.cfg.max_minutes
    if s.world == 1:
        return over
    flag = torch.tensor([float(over)], device=s.device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


# --- validation and the end of an epoch ------------------------------------------------------------


def validate(s: Session, state: State, epoch: int) -> dict[str, float]:
    """The epoch's row of metrics: train and valid loss/perplexity, LR, teacher forcing (and valid BLEU)."""
    cfg = s.cfg
    train_loss = state.epoch_loss / max(state.epoch_tokens, 1)
    v_loss = valid_loss(s.model, s.valid_set, s.params.build.max_tokens, s.device, s.amp)
    if not math.isfinite(v_loss):
        raise PipelineError(f"the valid loss is {v_loss} after epoch {epoch + 1}: training diverged; "
                            "lower train.lr or raise train.warmup_steps")
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 50)),
           "valid_loss": v_loss, "valid_ppl": math.exp(min(v_loss, 50)), "step": state.step,
           "lr": s.optimizer.param_groups[0]["lr"],
           "teacher_forcing": teacher_forcing(cfg, state.step, s.progress(state, state.train_seconds))}
    if s.higher_is_better:
        row["valid_bleu"] = valid_bleu(s)
    log.info("epoch %d: train loss %.4f (ppl %.2f), valid loss %.4f (ppl %.2f)%s", epoch + 1, train_loss,
             row["train_ppl"], v_loss, row["valid_ppl"],
             f", valid BLEU {row['valid_bleu']:.2f}" if s.higher_is_better else "")
    return row


def end_epoch(s: Session, state: State, row: dict[str, float]) -> None:
    """Record the epoch, keep the best weights, checkpoint, and reset the epoch's counters."""
    score = row["valid_bleu"] if s.higher_is_better else row["valid_loss"]
    improved = score > state.best if s.higher_is_better else score < state.best
    state.history.append(row)
    if s.mlflow is not None:
        s.mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "step")}
                             | {"padding_ratio": state.padding_ratio}, step=int(row["epoch"]))
    if improved and s.rank == 0:
        with atomic_file(s.paths.checkpoints / "best.pt", "wb") as fh:
            checkpoint.save_model(fh, s.model, {"epoch": int(row["epoch"])})
    state.epoch, state.batch, state.epoch_loss, state.epoch_tokens = int(row["epoch"]), 0, 0.0, 0
    state.best = score if improved else state.best
    state.stale = 0 if improved else state.stale + 1
    s.save_checkpoint(state)


def should_stop(s: Session, state: State) -> bool:
    if state.out_of_time:
        budget = f"{s.cfg.max_minutes} minutes" if s.cfg.max_minutes and state.step < (s.cfg.max_steps or 1e18) \
            else f"{s.cfg.max_steps} steps"
        log.info("budget of %s used: stopping after epoch %d", budget, state.epoch)
        return True
    if s.cfg.early_stopping and state.stale >= s.cfg.early_stopping:
        log.info("early stopping: no better valid %s for %d epoch(s)", s.cfg.early_stopping_metric, state.stale)
        return True
    return False


# --- the end of training ---------------------------------------------------------------------------


def finish(s: Session, state: State) -> dict[str, Any]:
    """Write models/model.pt (the best epoch's weights), metrics/train.json and models/run.json."""
    key = "valid_bleu" if s.higher_is_better else "valid_loss"
    best_row = (max if s.higher_is_better else min)(state.history, key=lambda r: r[key])
    tokens_per_sec = state.train_tokens / max(state.train_seconds, 1e-9)
    metrics = {"train_loss": round(best_row["train_loss"], 4), "valid_loss": round(best_row["valid_loss"], 4),
               "valid_ppl": round(best_row["valid_ppl"], 3), "best_epoch": best_row["epoch"],
               "epochs": len(state.history), "steps": state.step,
               "train_tokens_per_sec": round(tokens_per_sec, 1), "padding_ratio": round(state.padding_ratio, 4)}
    if s.rank == 0:
        params, paths, model, mlflow = s.params, s.paths, s.model, s.mlflow
        model.load_state_dict(checkpoint.load_weights(paths.checkpoints / "best.pt", s.device))
        if s.cfg.average_last:
            metrics |= _average_if_better(s, best_row[key])
        extra = {"src_lang": params.data.src, "tgt_lang": params.data.tgt, "epoch": best_row["epoch"],
                 "run_id": state.run_id, "normalize": params.clean.normalize, "max_len": params.build.max_len,
                 "korean_morphemes": params.clean.korean_morphemes,  # the translator repeats the preprocessing
                 "strip_markup": params.clean.strip_markup,
                 "src_tokenizer": (paths.tokenizer / "src.json").read_text(encoding="utf-8"),
                 "tgt_tokenizer": (paths.tokenizer / "tgt.json").read_text(encoding="utf-8")}
        with stage_outputs() as outputs:  # in place only once MLflow has everything too
            with outputs.open(paths.model / "model.pt", "wb") as fh:
                checkpoint.save_model(fh, model, extra)
            outputs.json(paths.metrics / "train.json", metrics)
            write_curves(outputs, paths.curves, state.history)
            outputs.json(paths.model / "run.json",
                         {"run_id": state.run_id, "experiment_id": mlflow.get_run(state.run_id).info.experiment_id})
            mlflow.log_metrics({"best_valid_loss": best_row["valid_loss"], "train_tokens_per_sec": tokens_per_sec})
            mlflow.log_artifacts(str(paths.tokenizer), artifact_path="tokenizer")
        state.complete = True
        s.save_checkpoint(state)
    log.info("model: %s (best epoch %d, valid ppl %.2f, %.0f target tokens/s)", s.paths.model / "model.pt",
             best_row["epoch"], best_row["valid_ppl"], tokens_per_sec)
    return metrics


def _average_if_better(s: Session, best_score: float) -> dict[str, Any]:
    """Average the last ``average_last`` step checkpoints into the model, and keep the average when it is at
    least as good as the best epoch by the early-stopping metric (valid loss or valid BLEU); it usually is:
    the cheapest BLEU there is."""
    files = sorted(s.paths.checkpoints.glob("step-*.pt"))[-s.cfg.average_last:]
    if len(files) < 2:
        log.info("only %d step checkpoint(s): nothing to average", len(files))
        return {}
    best = {k: v.clone() for k, v in s.model.state_dict().items()}
    averaged = checkpoint.average(files)
    s.model.load_state_dict({k: averaged[k].to(best[k].dtype) for k in best})
    name = "valid_bleu" if s.higher_is_better else "valid_loss"
    if s.higher_is_better:
        score = valid_bleu(s)
        kept = score >= best_score
    else:
        score = valid_loss(s.model, s.valid_set, s.params.build.max_tokens, s.device, s.amp)
        kept = score <= best_score
    if not kept:
        s.model.load_state_dict(best)
    log.info("average of the last %d checkpoints: %s %.4f against %.4f for the best epoch; %s", len(files),
             name.replace("_", " "), score, best_score, "keeping the average" if kept else "keeping the best epoch")
    if s.mlflow is not None:
        s.mlflow.log_metrics({f"averaged_{name}": score})
    return {"averaged_checkpoints": len(files) if kept else 0, f"averaged_{name}": round(score, 4)}


def _under_torchrun(params: Params, paths: Paths) -> dict:
    """``train.processes > 1`` or ``train.nodes > 1``: this stage again, as that many DDP processes (so
    dvc.yaml's command stays `python -m pipeline.stages.train`); on several machines, the others join with
    ``device.joining_command``, and whichever process torchrun makes rank 0 writes the outputs into the
    shared project folder."""
    cfg = params.train
    code = relaunch_under_torchrun("pipeline.stages.train", params.model_dump(), paths.root, cfg.processes,
                                   paths.role, cfg.nodes, cfg.rendezvous)
    if code:
        raise PipelineError(f"{cfg.processes * cfg.nodes} training processes under torchrun failed (exit {code}); "
                            f"see {paths.log_file('train')} and the lines above")
    return json.loads((paths.metrics / "train.json").read_text())


def run(params: Params, paths: Paths) -> dict:
    """Train the model; resume from checkpoints/last.pt when it matches."""
    if (params.train.processes > 1 or params.train.nodes > 1) and "WORLD_SIZE" not in os.environ:
        return _under_torchrun(params, paths)
    s = setup(params, paths)
    state = resume(s)
    s.paths.checkpoints.mkdir(parents=True, exist_ok=True)
    with start_tracking(s, state):
        if state.step == 0:  # last.pt only: random weights must never be averaged into the model
            s.save_checkpoint(state)  # from now on a killed run can be resumed, or ended, by its run id
        s.model.train()
        try:
            for epoch in range(state.epoch, s.cfg.epochs):
                train_epoch(s, state, epoch)
                end_epoch(s, state, validate(s, state, epoch))
                if should_stop(s, state):
                    break
            metrics = finish(s, state)
        except KeyboardInterrupt:
            if s.mlflow is not None:
                s.mlflow.end_run("KILLED")
            raise
    if s.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def main() -> None:
    stage_main("train", run)


if __name__ == "__main__":
    run_command(main)
