"""Reading the length-bucketed shards written by ``build`` and batching them by token budget.

A split on disk is ``data/dataset/<split>/bucket-<max_len>.npz``, each shard holding the pairs
whose longer side fits its bucket, as flat int32 token arrays plus lengths. In memory a split is
one ``Pairs`` (flat arrays + offsets) so any subset of pairs can be padded into a batch quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.common import PipelineError
from pipeline.tokens import PAD

if TYPE_CHECKING:
    import torch


@dataclass
class Pairs:
    src: np.ndarray  # [total source tokens] int32, sentences back to back
    src_len: np.ndarray  # [n] int32
    tgt: np.ndarray  # [total target tokens] int32, each sentence <s> ... </s>
    tgt_len: np.ndarray  # [n] int32

    def __post_init__(self) -> None:
        self.src_off = np.concatenate([[0], np.cumsum(self.src_len, dtype=np.int64)])
        self.tgt_off = np.concatenate([[0], np.cumsum(self.tgt_len, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.src_len)

    def batch(self, idx: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """Pad the pairs ``idx`` into tensors: src [B, S], src_len [B], tgt [B, T]."""
        import torch  # here, not at the top: the build stage uses this module and needs no torch (2-3 s)

        src = _pad(self.src, self.src_off, self.src_len, idx)
        tgt = _pad(self.tgt, self.tgt_off, self.tgt_len, idx)
        out = {"src": torch.from_numpy(src), "src_len": torch.from_numpy(self.src_len[idx].astype(np.int64)),
               "tgt": torch.from_numpy(tgt)}
        return {k: v.pin_memory() for k, v in out.items()} if pin else out


def _pad(flat: np.ndarray, off: np.ndarray, lens: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lengths = lens[idx]
    out = np.full((len(idx), int(lengths.max())), PAD, dtype=np.int64)
    # one gather instead of a Python loop: position j of row i reads flat[off[idx[i]] + j]
    cols = np.arange(out.shape[1])
    mask = cols[None, :] < lengths[:, None]
    out[mask] = flat[(off[idx][:, None] + cols[None, :])[mask]]
    return out


def load_split(dataset: Path, split: str) -> Pairs:
    shards = sorted((dataset / split).glob("bucket-*.npz"))
    if not shards:
        raise PipelineError(f"{dataset / split} has no shards; run the build stage first")
    parts = [np.load(s) for s in shards]
    return Pairs(*(np.concatenate([p[k] for p in parts]) for k in ("src", "src_len", "tgt", "tgt_len")))


def token_batches(src_len: np.ndarray, tgt_len: np.ndarray, max_tokens: int, seed: int | None = None
                  ) -> list[np.ndarray]:
    """Group pair indices into batches of at most ``max_tokens`` (longest side x size, padding counted).

    Pairs are sorted by (source, target) length so a batch holds pairs of nearly equal length; with
    a seed, ties are broken at random and the batch order is shuffled (a new order per seed).
    """
    n = len(src_len)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n) if seed is not None else np.arange(n)
    order = np.lexsort((tiebreak, tgt_len, src_len))
    longest = np.maximum(src_len, tgt_len)[order]
    batches, start, width = [], 0, 0
    for i in range(n):
        width = max(width, int(longest[i]))
        if width * (i - start + 1) > max_tokens and i > start:
            batches.append(order[start:i])
            start, width = i, int(longest[i])
    if start < n:
        batches.append(order[start:])
    if seed is not None:
        rng.shuffle(batches)
    return batches


def padding_ratio(src_len: np.ndarray, tgt_len: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padded positions in the padded source and target tensors of ``batches``."""
    real = padded = 0
    for b in batches:
        real += int(src_len[b].sum() + tgt_len[b].sum())
        padded += len(b) * int(src_len[b].max() + tgt_len[b].max())
    return 1.0 - real / padded if padded else 0.0
