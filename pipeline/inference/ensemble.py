"""Decoding with several models at once: an ensemble that averages their next-token probabilities.

The members read the same source ids and write the same target ids: checkpoints of one run, or models
trained from the same tokenizers with other seeds or settings. At each step every member scores the
next token, and the ensemble's log-probability is ``log(mean_i p_i)``, the arithmetic mean of the
members' probabilities (fairseq's and Marian's rule), which is already normalised, so the search's own
``log_softmax`` leaves it unchanged. ``Ensemble`` has a model's decoding interface (``encode``, ``start``,
``step``, ``max_length``), so greedy and beam search and the ``Translator`` use it as they use one model;
its attention is the members' mean. It trains nothing and is never saved as one file.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.checkpoint import load_model, read
from pipeline.common import PipelineError
from pipeline.decoding import Decoding
from pipeline.inference.translator import Translator
from pipeline.models.base import Seq2SeqBase


class Ensemble(Seq2SeqBase):
    arch = "ensemble"

    def __init__(self, members: list[Seq2SeqBase]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two members or more (got {len(members)})")
        self.members = nn.ModuleList(members)

    def config_dict(self) -> dict:
        raise TypeError("an ensemble is not one model file: save or register its members")

    def max_length(self) -> int | None:
        limits = [m.max_length() for m in self.members if m.max_length() is not None]
        return min(limits) if limits else None

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        return {"members": [m.encode(src, src_len) for m in self.members]}

    def start(self, memory: dict) -> dict:
        return {"members": [m.start(mem) for m, mem in zip(self.members, memory["members"], strict=True)]}

    def step(self, y_prev: Tensor, state: dict, memory: dict, need_weights: bool = True
             ) -> tuple[Tensor, dict, Tensor | None]:
        outs = [m.step(y_prev, s, mem, need_weights)
                for m, s, mem in zip(self.members, state["members"], memory["members"], strict=True)]
        logp = torch.stack([torch.log_softmax(logits.float(), -1) for logits, _, _ in outs])  # [members, rows, V]
        mixed = torch.logsumexp(logp, 0) - math.log(len(outs))  # [rows, V]: log of the mean probability
        weights = [w for _, _, w in outs if w is not None]
        return mixed, {"members": [s for _, s, _ in outs]}, torch.stack(weights).mean(0) if weights else None


def load_members(model_file: Path, others: list[Path], device: torch.device | str = "cpu") -> list[Seq2SeqBase]:
    """``model_file`` (a model file of the train stage) and ``others``: more model files with the same two
    tokenizers, or training checkpoints (``step-*.pt``, ``best.pt``) of ``model_file``'s architecture."""
    base, blob = load_model(model_file, device)
    members = [base]
    for path in others:
        if not path.exists():
            raise PipelineError(f"{path}: not found (an ensemble member)")
        other = read(path, device)
        if "config" in other:  # a model file: its own architecture, the same vocabularies
            for side in ("src_tokenizer", "tgt_tokenizer"):
                if side in other and other[side] != blob.get(side):
                    raise PipelineError(f"{path}: its {side.replace('_', ' ')} differs from {model_file}'s; "
                                        "an ensemble's members must share their vocabularies")
            member, _ = load_model(path, device)
        else:  # a training checkpoint ("model") or best.pt ("state_dict") of the same architecture
            member = copy.deepcopy(base)
            member.load_state_dict(other["model"] if "model" in other else other["state_dict"])
        members.append(member.eval())
    return members


def ensemble_translator(model_file: Path, others: list[Path], device: torch.device | str = "cpu",
                        decoding: Decoding | None = None) -> Translator:
    """``Translator.from_file(model_file)`` (its tokenizers, preprocessing and length limit) decoding with the
    ensemble of that model and ``others`` (see ``load_members``)."""
    translator = Translator.from_file(model_file, device, decoding)
    translator.model = Ensemble(load_members(model_file, others, device)).eval()
    return translator
