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


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that have it; full precision elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return (torch.distributed.get_rank() if world > 1 else 0), world
