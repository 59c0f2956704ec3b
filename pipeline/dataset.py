"""The dataset ``build`` writes, read batch by batch; and batching by token budget.

On disk (``Shards``) a split is ``data/dataset/<split>/``: ``index.json`` names its length buckets, and per
bucket ``bucket-<bound>.src`` and ``.tgt`` hold the pairs' token ids back to back (uint16 when the vocabulary
fits, else uint32) and ``.len`` their lengths (uint16 pairs: source, target), sorted by (source, target)
length. A batch is a run of neighbours within one bucket, as many as fit the token budget: the bucket bounds a
batch's width, the sort keeps its padding low. Training holds the table of batches (nine numbers each) and
reads each batch with three small reads, so its memory follows the batch, not the corpus (measured:
docs/scaling.md).

In memory (``Pairs``) a set of pairs is flat arrays plus offsets, for what is small by nature: the sentences
a translator is given, a bench's sample, a test's look at a split (``Shards.pairs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.common import PipelineError
from pipeline.tokens import PAD

if TYPE_CHECKING:
    import torch

LENGTH = np.dtype(np.uint16)  # a side's length; build.max_len is at most 65,535 (config)
# the columns of a batch table (Shards.batches): which bucket, which pairs, where their tokens start, how
# many tokens, and the longest side of each
BUCKET, FIRST, END, SRC_OFF, TGT_OFF, SRC_TOKENS, TGT_TOKENS, SRC_MAX, TGT_MAX = range(9)
SORT_TOKENS = 8_000_000  # tokens gathered at a time when a bucket is sorted (about 150 MB of index)
WINDOW = 1_000_000  # pairs' lengths read at a time to make a batch table


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id of a vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


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


def load_split(dataset: Path, split: str) -> Shards:
    return Shards(dataset / split)


def table_file(folder: Path, max_tokens: int) -> Path:
    """Where build saves a split's batch table for a token budget (training loads it instead of scanning)."""
    return folder / f"batches-{max_tokens}.npy"


class Shards:
    """One split as build wrote it (see the module's docstring), read batch by batch. Its shard files stay open
    from here on, so a build that replaces the folder meanwhile cannot change the pairs this reader sees."""

    def __init__(self, folder: Path):
        index = folder / "index.json"
        if not index.exists():
            raise PipelineError(f"{folder} has no shards (index.json); run the build stage first")
        info = json.loads(index.read_text())
        self.folder, self.dtype, self.buckets = folder, np.dtype(info["dtype"]), info["buckets"]
        self.fds: dict[tuple[int, str], int] = {}
        for b in range(len(self.buckets)):
            for kind in ("src", "tgt", "len"):
                try:
                    self.fds[b, kind] = os.open(self.file(b, kind), os.O_RDONLY)
                except FileNotFoundError:
                    self.close()
                    raise PipelineError(f"{self.file(b, kind)} is missing though {index} names it; rerun the "
                                        "build stage") from None

    def close(self) -> None:
        for fd in getattr(self, "fds", {}).values():  # also after an __init__ that raised
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return sum(b["pairs"] for b in self.buckets)

    def file(self, bucket: int, kind: str) -> Path:
        return self.folder / f"bucket-{self.buckets[bucket]['bound']:04d}.{kind}"

    def _read(self, bucket: int, kind: str, dtype: np.dtype, first: int, count: int) -> np.ndarray:
        """``count`` items from item ``first`` of a bucket's file (pread: no shared file position, no mapping)."""
        want, at, parts = count * dtype.itemsize, first * dtype.itemsize, []
        while want:  # one call unless a read is larger than Linux's 2 GB a call
            got = os.pread(self.fds[bucket, kind], min(want, 1 << 30), at)
            if not got:
                raise PipelineError(f"{self.file(bucket, kind)} is shorter than its index says; rerun the build stage")
            parts.append(got)
            want, at = want - len(got), at + len(got)
        return np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), dtype=dtype)

    def lengths(self, bucket: int, first: int = 0, count: int | None = None) -> np.ndarray:
        """[pairs, 2] (source, target) lengths of ``count`` pairs of ``bucket`` from ``first`` (None: the rest)."""
        count = self.buckets[bucket]["pairs"] - first if count is None else count
        return self._read(bucket, "len", LENGTH, 2 * first, 2 * count).reshape(-1, 2)

    def batches(self, max_tokens: int) -> np.ndarray:
        """The table of batches [batches, 9] (columns BUCKET ... TGT_MAX): runs of neighbouring pairs of each
        bucket, as many as fit ``max_tokens`` (longest side x pairs, padding counted; a pair longer than that
        alone). Fixed for a split and a budget (build saves it); training shuffles its order every epoch."""
        saved = table_file(self.folder, max_tokens)
        if saved.exists():
            return np.load(saved)
        return np.concatenate([self._bucket_batches(b, max_tokens) for b in range(len(self.buckets))]
                              or [np.zeros((0, 9), dtype=np.int64)])

    def _bucket_batches(self, b: int, max_tokens: int) -> np.ndarray:
        """``batches`` for one bucket, its lengths read a window at a time: memory follows the window."""
        window_pairs = max(WINDOW, 4 * max_tokens)  # a batch holds at most max_tokens pairs
        n, start, src_at, tgt_at, parts = self.buckets[b]["pairs"], 0, 0, 0, []
        while start < n:
            lengths = self.lengths(b, start, min(window_pairs, n - start)).astype(np.int64)
            last = start + len(lengths) == n
            longest = lengths.max(1)
            firsts, i = [], 0
            while i < len(lengths) and (last or i + max_tokens <= len(lengths)):  # else the next window decides
                width = np.maximum.accumulate(longest[i:i + max_tokens])
                firsts.append(i)
                i += max(1, int((width * np.arange(1, len(width) + 1) <= max_tokens).sum()))  # a monotone test
            first, end = np.array(firsts, dtype=np.int64), np.array([*firsts[1:], i], dtype=np.int64)
            src_cum = np.concatenate([[0], np.cumsum(lengths[:, 0])])
            tgt_cum = np.concatenate([[0], np.cumsum(lengths[:, 1])])
            done = lengths[:i]  # the pairs these batches hold (reduceat's last run goes to the end)
            columns = [np.full_like(first, b), start + first, start + end, src_at + src_cum[first],
                       tgt_at + tgt_cum[first], src_cum[end] - src_cum[first], tgt_cum[end] - tgt_cum[first],
                       np.maximum.reduceat(done[:, 0], first), np.maximum.reduceat(done[:, 1], first)]
            parts.append(np.stack(columns, axis=1))
            start, src_at, tgt_at = start + i, src_at + src_cum[i], tgt_at + tgt_cum[i]
        return np.concatenate(parts) if parts else np.zeros((0, 9), dtype=np.int64)

    def batch(self, row: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """The batch of one row of ``batches``, read from disk and padded: src [B, S], src_len [B], tgt [B, T]."""
        b, first, end, src_off, tgt_off, src_n, tgt_n = (int(x) for x in row[:SRC_MAX])
        lengths = self.lengths(b, first, end - first)
        src = self._read(b, "src", self.dtype, src_off, src_n)
        tgt = self._read(b, "tgt", self.dtype, tgt_off, tgt_n)
        return Pairs(src, lengths[:, 0].astype(np.int32), tgt, lengths[:, 1].astype(np.int32)).batch(
            np.arange(end - first), pin)

    def pairs(self) -> Pairs:
        """The whole split in memory (a small one: tests, benches)."""
        parts = [(self._read(b, "src", self.dtype, 0, x["src_tokens"]), self._read(b, "tgt", self.dtype, 0,
                                                                                   x["tgt_tokens"]), self.lengths(b))
                 for b, x in enumerate(self.buckets)]
        lengths = np.concatenate([p[2] for p in parts]).astype(np.int32).reshape(-1, 2)
        return Pairs(np.concatenate([p[0] for p in parts]).astype(np.int32), lengths[:, 0],
                     np.concatenate([p[1] for p in parts]).astype(np.int32), lengths[:, 1])


def batch_padding(table: np.ndarray) -> float:
    """Share of padded positions in the source and target tensors of a batch table's batches."""
    padded = int(((table[:, END] - table[:, FIRST]) * (table[:, SRC_MAX] + table[:, TGT_MAX])).sum())
    real = int((table[:, SRC_TOKENS] + table[:, TGT_TOKENS]).sum())
    return 1.0 - real / padded if padded else 0.0  # a float, not numpy's: it goes into checkpoints


class ShardWriter:
    """Writes one split in ``Shards``' layout: ``with ShardWriter(...) as writer: writer.add(...)``. Pairs come
    chunk by chunk, in any order, and are appended to their bucket's files; leaving the block sorts each bucket
    by length (ties at random, seeded) and writes ``index.json`` (``writer.shards`` then reads it). Memory: a
    chunk while writing; one bucket's lengths and ``SORT_TOKENS`` tokens' worth of index while sorting (the
    bucket's unsorted tokens are read through a memory map, which the page cache holds, not the process)."""

    def __init__(self, folder: Path, bounds: list[int], dtype: np.dtype, seed: int = 0):
        self.folder, self.bounds, self.dtype, self.seed = folder, bounds, dtype, seed
        self.unsorted = folder / ".unsorted"
        self.counts = [0] * len(bounds)
        self.files: dict = {}
        self.shards: Shards | None = None

    def __enter__(self) -> ShardWriter:
        self.unsorted.mkdir(parents=True)
        self.files = {(b, kind): open(self.unsorted / f"{b}.{kind}", "wb")  # noqa: SIM115 (closed in __exit__)
                      for b in range(len(self.bounds)) for kind in ("src", "tgt", "len")}
        return self

    def __exit__(self, kind, exc, tb) -> None:
        for f in self.files.values():
            f.close()
        if exc is None:
            self.shards = self._sort()
        shutil.rmtree(self.unsorted, ignore_errors=True)

    def add(self, src: list[np.ndarray], tgt: list[np.ndarray]) -> None:
        """Pairs of framed ids, each side at most the last bound long."""
        src_len = np.fromiter((len(x) for x in src), dtype=np.int64, count=len(src))
        tgt_len = np.fromiter((len(x) for x in tgt), dtype=np.int64, count=len(tgt))
        bucket_of = np.searchsorted(self.bounds, np.maximum(src_len, tgt_len), side="left")
        for b in np.unique(bucket_of):
            idx = np.flatnonzero(bucket_of == b)
            np.concatenate([src[i] for i in idx]).astype(self.dtype).tofile(self.files[b, "src"])
            np.concatenate([tgt[i] for i in idx]).astype(self.dtype).tofile(self.files[b, "tgt"])
            np.stack([src_len[idx], tgt_len[idx]], 1).astype(LENGTH).tofile(self.files[b, "len"])
            self.counts[b] += len(idx)

    def _sort(self) -> Shards:
        rng, buckets = np.random.default_rng(self.seed), []
        for b, bound in enumerate(self.bounds):
            if not self.counts[b]:
                continue
            lengths = np.fromfile(self.unsorted / f"{b}.len", dtype=LENGTH).reshape(-1, 2)
            # by source length, then target length; equal lengths in random order, so that a batch does not
            # gather neighbouring lines of one document every epoch
            order = np.lexsort((rng.random(len(lengths)), lengths[:, 1], lengths[:, 0]))
            name = f"bucket-{bound:04d}"
            for side, col in (("src", 0), ("tgt", 1)):
                tokens = np.memmap(self.unsorted / f"{b}.{side}", dtype=self.dtype, mode="r")
                _gather(tokens, lengths[:, col].astype(np.int64), order, self.folder / f"{name}.{side}")
                del tokens
            lengths[order].tofile(self.folder / f"{name}.len")
            buckets.append({"bound": bound, "pairs": len(order), "src_tokens": int(lengths[:, 0].sum(dtype=np.int64)),
                            "tgt_tokens": int(lengths[:, 1].sum(dtype=np.int64))})
        (self.folder / "index.json").write_text(json.dumps({"dtype": self.dtype.name, "buckets": buckets}, indent=2))
        return Shards(self.folder)


def _gather(tokens: np.ndarray, lengths: np.ndarray, order: np.ndarray, out: Path) -> None:
    """Write the token runs of the pairs ``order`` (pair i's run: ``lengths[i]`` tokens at its offset) to ``out``,
    ``SORT_TOKENS`` tokens at a time."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ends = np.cumsum(lengths[order])  # where each run ends in the output
    cuts = np.searchsorted(ends, np.arange(SORT_TOKENS, int(ends[-1]), SORT_TOKENS), side="right")
    with open(out, "wb") as fh:
        for a, z in zip([0, *cuts], [*cuts, len(order)], strict=True):
            if a == z:
                continue
            pairs, n = order[a:z], lengths[order[a:z]]
            # position j of run k reads tokens[offsets[pairs[k]] + j]: one gather, no loop over pairs
            idx = np.repeat(offsets[pairs] - (np.cumsum(n) - n), n)
            idx += np.arange(len(idx))
            tokens[idx].tofile(fh)


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
