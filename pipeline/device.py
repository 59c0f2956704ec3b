"""Where training and decoding run: device choice, mixed precision, and the DDP process group."""

from __future__ import annotations

import contextlib
import os

import torch

from pipeline.common import PipelineError


def choose_device(pref: str, what: str = "train.device") -> torch.device:
    """``auto`` takes CUDA when present (this process's GPU under torchrun), else the CPU."""
    if pref == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{what} is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if pref not in ("auto", "cuda", "cpu"):
        raise PipelineError(f"{what} must be auto, cpu or cuda (got {pref!r})")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def choose_amp(setting: str, cuda: bool, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``: ``auto`` is bf16 on GPUs that have it, else fp16 (with a
    GradScaler: T4, V100); none on the CPU, where bf16 autocast is slower than fp32 on most processors."""
    if setting == "off" or not cuda:
        return None
    if setting == "bf16":
        if not bf16_supported:
            raise PipelineError("train.amp is 'bf16' but this GPU has no bf16; use 'auto' or 'fp16'")
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    return torch.bfloat16 if bf16_supported else torch.float16


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    cuda = device.type == "cuda"
    return choose_amp(setting, cuda, cuda and torch.cuda.is_bf16_supported())


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return (torch.distributed.get_rank() if world > 1 else 0), world
