"""Where training and decoding run: device choice, mixed precision, the DDP process group and the torchrun
relaunch."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from pipeline.common import PipelineError

log = logging.getLogger(__name__)


def choose_device(pref: str, what: str = "train.device") -> torch.device:
    """``auto`` takes CUDA when present (this process's GPU under torchrun), else the CPU."""
    if pref == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{what} is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if pref not in ("auto", "cuda", "cpu"):
        raise PipelineError(f"{what} must be auto, cpu or cuda (got {pref!r})")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


# Where bf16 autocast pays on a CPU with native bf16 (bench/train_speed.py --only precision, 2-core Xeon
# with AMX: the Transformer 1.54x fp32's target tokens/s; the GRU 0.95x, its recurrences stay fp32 and
# the casts around them cost more than the bf16 matmuls save).
CPU_BF16_ARCHS = frozenset({"transformer"})


def choose_amp(setting: str, cuda: bool, bf16_supported: bool, arch: str = "transformer") -> torch.dtype | None:
    """The autocast dtype for ``train.amp``. ``auto``: on a GPU, bf16 where it has it, else fp16 (with a
    GradScaler: T4, V100); on a CPU, bf16 where the processor multiplies bf16 natively (AVX512-BF16 or
    AMX) and the architecture was measured faster so (``CPU_BF16_ARCHS``), else none: emulated bf16 is
    slower than fp32. ``bf16_supported`` is the GPU's or the CPU's, as ``cuda`` says."""
    if setting == "off":
        return None
    where = "this GPU" if cuda else "this CPU (no AVX512-BF16 or AMX)"
    if setting == "bf16":
        if not bf16_supported:
            raise PipelineError(f"train.amp is 'bf16' but {where} has no native bf16; use 'auto' or 'off'")
        return torch.bfloat16
    if setting == "fp16":
        if not cuda:
            raise PipelineError("train.amp is 'fp16', which needs a CUDA GPU; use 'auto', 'bf16' or 'off' on a CPU")
        return torch.float16
    if cuda:
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.bfloat16 if bf16_supported and arch in CPU_BF16_ARCHS else None


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (torch's own probe; private, hence the guard)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def amp_dtype(setting: str, device: torch.device, arch: str) -> torch.dtype | None:
    cuda = device.type == "cuda"
    return choose_amp(setting, cuda, torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16(), arch)


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


RENDEZVOUS_ID = "nmt-train"  # every node of a run passes the same id to torchrun


def torchrun_args(processes: int, nodes: int = 1, rendezvous: str | None = None) -> list[str]:
    """torchrun's launch options: one machine (``--standalone``), or ``nodes`` machines meeting at the c10d
    ``rendezvous`` (host:port), as torchrun users write them."""
    if nodes == 1:
        return ["--standalone", f"--nproc-per-node={processes}"]
    return [f"--nnodes={nodes}", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rendezvous}", f"--rdzv-id={RENDEZVOUS_ID}"]


def joining_command(processes: int, nodes: int, rendezvous: str, root: Path, params_file: Path,
                    role: str = "teacher") -> str:
    """What each other machine runs to join a multi-node training (the project folder shared, at ``root``):
    the lead's own ``params_file``, so that every node trains with the same settings."""
    return shlex.join(["python", "-m", "torch.distributed.run", *torchrun_args(processes, nodes, rendezvous),
                       "-m", "pipeline.stages.train", "--root", str(root), "--params", str(params_file),
                       *(["--role", role] if role != "teacher" else [])])


def relaunch_under_torchrun(module: str, params: dict, root: Path, processes: int, role: str = "teacher",
                            nodes: int = 1, rendezvous: str | None = None) -> int:
    """Run ``python -m <module>`` as ``processes`` DDP processes under torchrun (on this machine, or as one of
    ``nodes`` machines meeting at ``rendezvous``), with ``params`` written to a temporary file in ``root`` (and
    the stage's ``--role``); each process gets its share of the CPU threads. Several machines: logs what the
    others run to join. Returns torchrun's exit status."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=root, delete=False) as fh:
        yaml.safe_dump(params, fh, allow_unicode=True)
    if nodes > 1:
        log.info("waiting for %d more node(s) at %s; on each, in the shared project folder, run: %s", nodes - 1,
                 rendezvous, joining_command(processes, nodes, rendezvous, root.resolve(), Path(fh.name), role))
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or processes) // processes)))
    try:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run",
                               *torchrun_args(processes, nodes, rendezvous), "-m", module, "--params", fh.name,
                               "--root", str(root), "--role", role], env=env).returncode
    finally:
        os.unlink(fh.name)
