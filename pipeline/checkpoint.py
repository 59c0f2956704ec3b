"""Model files and training checkpoints: what is saved, how it is loaded, and when it may be resumed.

* A model file (``models/model.pt``) holds the architecture's config, the weights and whatever the
  translator needs besides (languages, preprocessing). It loads with ``weights_only=True``.
* A training checkpoint adds the optimiser, LR schedule, RNG states, the loop's position and a
  fingerprint of everything the run depends on; ``checkpoints/last.pt`` is resumed only when the
  fingerprint matches. Step checkpoints ``step-<n>.pt`` are rotated, ``best.pt`` follows the best epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import torch

from pipeline.common import PipelineError, atomic_file
from pipeline.models import Seq2SeqBase, model_from_config


def _write(obj: dict[str, Any], fh: BinaryIO) -> None:
    # torch.save reports a full disk as an opaque RuntimeError; a plain write raises ENOSPC
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fh.write(buffer.getbuffer())


def save_model(fh: BinaryIO, model: Seq2SeqBase, extra: dict[str, Any]) -> None:
    """Write a model file (architecture, weights and ``extra``) to the open binary file ``fh``."""
    _write({"config": model.config_dict(), "state_dict": model.state_dict(), **extra}, fh)


class NotAModelFile(PipelineError):
    """A file that is not a model file or checkpoint of this project: truncated, foreign, or of another layout."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: not a model file of this project ({why}); give models/model.pt of a trained "
                         "project, or a checkpoint of one")


def read(path: Path, device: torch.device | str = "cpu", needs: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a model file or checkpoint holds (``weights_only=True``); every way a file can fail to be one (cut
    short, another program's file, a dict without ``needs``) is one ``NotAModelFile`` line, never a traceback."""
    if not path.exists():
        raise PipelineError(f"{path} not found; run the train stage first")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # RuntimeError (a cut zip), UnpicklingError, EOFError, ...: torch has no one type
        raise NotAModelFile(path, str(exc).strip().splitlines()[0][:160] or type(exc).__name__) from None
    missing = [key for key in needs if not isinstance(blob, dict) or key not in blob]
    if missing:
        raise NotAModelFile(path, f"no {', '.join(missing)} inside")
    return blob


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[Seq2SeqBase, dict]:
    blob = read(path, device, ("config", "state_dict"))
    try:
        model = model_from_config(blob["config"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a config or weights of another layout
        raise NotAModelFile(path, str(exc).strip().splitlines()[0][:160]) from None
    return model.to(device).eval(), blob


def load_weights(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The weights of a model file (``best.pt``, ``model.pt``), for a model that already exists."""
    return read(path, device, ("state_dict",))["state_dict"]


def fingerprint(settings: dict[str, Any], files: list[Path]) -> str:
    """What a checkpoint must match to be resumed: the settings and the exact bytes of ``files``."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        h.update(f.read_bytes() if f.exists() else b"-")
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, blob: dict[str, Any], step: int, keep: int, step_file: bool = True) -> None:
    """Write ``step-<step>.pt`` (unless not ``step_file``) and ``last.pt`` atomically; keep the newest
    ``keep`` step files."""
    if not step_file:
        with atomic_file(directory / "last.pt", "wb") as fh:
            _write(blob, fh)
        return
    path = directory / f"step-{step:08d}.pt"
    with atomic_file(path, "wb") as fh:
        _write(blob, fh)
    with atomic_file(directory / "last.pt", "wb") as fh, open(path, "rb") as src:
        shutil.copyfileobj(src, fh)
    for old in sorted(directory.glob("step-*.pt"))[:-keep]:
        old.unlink()


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """A training checkpoint (``last.pt``, ``step-*.pt``), or None when there is none."""
    return read(path, device) if path.exists() else None


def average(files: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the model weights saved in ``files`` (training checkpoints)."""
    total: dict[str, torch.Tensor] = {}
    for f in files:
        weights = read(f, "cpu", ("model",))["model"]
        for name, tensor in weights.items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(files)) for name, tensor in total.items()}


def clear_checkpoints(directory: Path) -> None:
    """Forget another run's checkpoints before a fresh start, so none of them is mistaken for ours."""
    for f in [*directory.glob("step-*.pt"), directory / "best.pt", directory / "last.pt"]:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
