"""GloVe (Pennington, Socher and Manning 2014), trained here.

Written by hand because no maintained library trains GloVe: glove-python's last releases date from
2016–2020 and mittens from 2019, and neither builds on a current Python; gensim only loads GloVe
vectors. This follows the paper and its reference C implementation:

* **Co-occurrences**: a symmetric window of ``window`` tokens, each pair at distance d counting 1/d,
  within a sentence. Counted streaming: sentences in chunks, each chunk's pairs made with numpy
  (one shifted comparison per distance, no Python loop per pair), summed into a scipy sparse matrix.
  A chunk's temporary arrays are bounded by ``memory_mb``; the matrix itself holds one float and one
  index per non-zero cell.
* **Objective**: weighted least squares, sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 with
  f(x) = min(1, (x / x_max)^alpha), x_max = 100 and alpha = 0.75 by default.
* **Optimiser**: AdaGrad with the reference's initial learning rate (0.05) and squared-gradient
  accumulators starting at 1, vectorised in torch over shuffled mini-batches of non-zero cells.
  One deliberate difference: the reference updates cell by cell and adds (lr * g)^2 to the
  accumulator after each step; here a mini-batch sums the steps of a row that appears in many cells
  (frequent tokens appear in thousands), so each cell's g^2 is added first and every step is divided
  by an accumulator that already holds it: a row's step in one batch stays below lr * sqrt(cells)
  instead of growing with the sum of its gradients. Deterministic for a seed.
* **Vectors**: W + W~, the sum the paper recommends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from scipy import sparse
from tqdm import tqdm

log = logging.getLogger(__name__)

BYTES_PER_PAIR = 32  # int64 row and column, float32 weight, and the sparse conversion's working copies


def cooccurrence(sentences: Iterable[np.ndarray], vocab_size: int, window: int, memory_mb: int = 1024
                 ) -> sparse.csr_matrix:
    """The symmetric co-occurrence matrix X[vocab, vocab] of token-id ``sentences``, 1/d-weighted."""
    budget = max(memory_mb * 2**20 // (BYTES_PER_PAIR * 2 * window), 10_000)  # tokens per chunk
    upper = sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    chunk: list[np.ndarray] = []
    size = 0
    for sentence in sentences:
        chunk.append(np.asarray(sentence, dtype=np.int64))
        size += len(sentence)
        if size >= budget:
            upper = upper + _chunk_counts(chunk, vocab_size, window)
            chunk, size = [], 0
    if chunk:
        upper = upper + _chunk_counts(chunk, vocab_size, window)
    # each pair was counted once, left token first: the window is symmetric
    return (upper + upper.T).tocsr()


def _chunk_counts(chunk: list[np.ndarray], vocab_size: int, window: int) -> sparse.csr_matrix:
    tokens = np.concatenate(chunk)
    sentence_of = np.repeat(np.arange(len(chunk)), [len(s) for s in chunk])
    rows, cols, weights = [], [], []
    for d in range(1, window + 1):
        same = sentence_of[:-d] == sentence_of[d:]  # the pair does not cross a sentence boundary
        rows.append(tokens[:-d][same])
        cols.append(tokens[d:][same])
        weights.append(np.full(int(same.sum()), 1.0 / d))
    return sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(vocab_size, vocab_size)).tocsr()  # duplicates are summed here


def train(counts: sparse.csr_matrix, dim: int, epochs: int, seed: int, x_max: float = 100.0, alpha: float = 0.75,
          lr: float = 0.05, batch_size: int = 50_000, progress: bool = True) -> tuple[np.ndarray, list[float]]:
    """GloVe vectors (W + W~) [vocab, dim] for ``counts``, and the mean weighted loss of each epoch."""
    coo = counts.tocoo()
    rows = torch.from_numpy(coo.row.astype(np.int64))
    cols = torch.from_numpy(coo.col.astype(np.int64))
    x = torch.from_numpy(coo.data.astype(np.float32))
    weight = torch.clamp((x / x_max) ** alpha, max=1.0)
    log_x = torch.log(x)
    vocab = counts.shape[0]
    gen = torch.Generator().manual_seed(seed)
    w = (torch.rand(vocab, dim, generator=gen) - 0.5) / dim  # the reference's initialisation
    w_ctx = (torch.rand(vocab, dim, generator=gen) - 0.5) / dim
    b, b_ctx = torch.zeros(vocab), torch.zeros(vocab)
    grad_sq = [torch.ones_like(p) for p in (w, w_ctx, b, b_ctx)]  # AdaGrad accumulators start at 1
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=f"glove epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
                          leave=False):
            idx = order[start:start + batch_size]
            i, j = rows[idx], cols[idx]
            wi, wj = w[i], w_ctx[j]
            diff = (wi * wj).sum(-1) + b[i] + b_ctx[j] - log_x[idx]
            f_diff = weight[idx] * diff
            total += float((f_diff * diff).sum())
            grads = (f_diff.unsqueeze(1) * wj, f_diff.unsqueeze(1) * wi, f_diff, f_diff)
            for param, acc, index, grad in zip((w, w_ctx, b, b_ctx), grad_sq, (i, j, i, j), grads, strict=True):
                acc.index_add_(0, index, grad * grad)
                param.index_add_(0, index, -lr * grad / acc[index].sqrt())
        losses.append(total / max(len(x), 1))
        log.info("glove epoch %d/%d: loss %.5f", epoch + 1, epochs, losses[-1])
    return (w + w_ctx).numpy(), losses
