"""Stage ``embed``: pretrain subword embeddings on the train split: word2vec (gensim) or GloVe (``pipeline.glove``).

Writes, per side (``src``, ``tgt``; the same vectors twice with a joint vocabulary):

* ``data/embeddings/<side>.npy``: float32 ``[vocab, dim]``, row i the vector of token id i, ready to
  initialise the model's embedding table. Tokens the trainer never saw (special tokens, pieces rarer
  than ``min_count``) get random vectors of the trained ones' scale; ``<pad>`` gets zeros.
* ``data/embeddings/<side>.vec``: the same vectors in word2vec text format (gensim ``KeyedVectors``),
  which other tools read.
* ``data/embeddings/neighbours.tsv``: the nearest neighbours of the 20 most frequent tokens of each
  side, and ``info.json``: the method, coverage (share of the vocabulary trained) and, for GloVe, the
  loss of each epoch (no timing: the outputs depend on the inputs only). The train stage logs both to
  its MLflow run.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from tokenizers import Tokenizer

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import Embed, Params, Paths
from pipeline.tokens import PAD, SPECIALS, load_tokenizers

log = logging.getLogger(__name__)

NEIGHBOURS, SHOWN = 5, 20


def _stable_hash(text: str) -> int:
    # gensim seeds each vector with hash(word); Python's hash() changes per process.
    return zlib.crc32(text.encode())


def train_word2vec(sentences: list[np.ndarray], vocab_size: int, cfg: Embed) -> tuple[np.ndarray, np.ndarray, dict]:
    """(vectors [vocab, dim], trained [vocab] bool, report) with gensim's word2vec over token ids."""
    from gensim.models import Word2Vec

    w2v = cfg.word2vec
    model = Word2Vec([[str(t) for t in s] for s in sentences], vector_size=cfg.dim, window=cfg.window,
                     min_count=cfg.min_count, sg=1 if w2v.algorithm == "skipgram" else 0, negative=w2v.negative,
                     epochs=cfg.epochs, seed=cfg.seed, workers=cfg.workers, hashfxn=_stable_hash)
    vectors = np.zeros((vocab_size, cfg.dim), dtype=np.float32)
    trained = np.zeros(vocab_size, dtype=bool)
    for key in model.wv.index_to_key:
        vectors[int(key)], trained[int(key)] = model.wv[key], True
    return vectors, trained, {}


def train_glove(sentences: list[np.ndarray], vocab_size: int, cfg: Embed) -> tuple[np.ndarray, np.ndarray, dict]:
    """(vectors [vocab, dim], trained [vocab] bool, report) with GloVe; pieces rarer than min_count left out."""
    from pipeline import glove  # here: it imports torch, which word2vec runs never need (2 s a process)

    g = cfg.glove
    counts = glove.cooccurrence(sentences, vocab_size, cfg.window, g.memory_mb)
    frequency = np.bincount(np.concatenate(sentences), minlength=vocab_size)
    keep = sparse.diags((frequency >= cfg.min_count).astype(np.float64), format="csr")
    counts = (keep @ counts @ keep).tocsr()
    counts.eliminate_zeros()
    vectors, losses = glove.train(counts, cfg.dim, cfg.epochs, cfg.seed, g.x_max, g.alpha, g.lr, g.batch_size)
    trained = np.asarray(counts.getnnz(axis=1) > 0)
    return vectors.astype(np.float32), trained, {"cooccurrence_cells": int(counts.nnz),
                                                 "epoch_losses": [round(x, 5) for x in losses]}


TRAINERS = {"word2vec": train_word2vec, "glove": train_glove}


def embedding_matrix(vectors: np.ndarray, trained: np.ndarray, seed: int) -> np.ndarray:
    """The trained rows as they are; the others random at the trained rows' scale; <pad> zeros."""
    rng = np.random.default_rng(seed)
    scale = float(vectors[trained].std()) if trained.any() else 0.1
    matrix = rng.normal(0.0, scale, size=vectors.shape).astype(np.float32)
    matrix[trained] = vectors[trained]
    matrix[PAD] = 0.0
    return matrix


def neighbours(matrix: np.ndarray, tokens: list[str], frequency: np.ndarray, side: str) -> list[list[str]]:
    """Rows (side, token, its nearest neighbours by cosine) for the most frequent real tokens."""
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
    ordinary = np.array([t not in SPECIALS for t in tokens])
    order = [i for i in np.argsort(-frequency) if ordinary[i] and frequency[i] > 0][:SHOWN]
    rows = []
    for i in order:
        similarity = unit @ unit[i]
        similarity[~ordinary] = -np.inf
        similarity[i] = -np.inf
        rows.append([side, tokens[i], *(tokens[j] for j in np.argsort(-similarity)[:NEIGHBOURS])])
    return rows


def _ids(tok: Tokenizer, path: Path) -> list[np.ndarray]:
    if not path.exists():
        raise PipelineError(f"{path} not found; run the clean stage first")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if not lines:
        raise PipelineError(f"{path} is empty: nothing to train embeddings on; check the clean section of "
                            "params.yaml (metrics/clean.json says what it removed)")
    return [np.asarray(enc.ids, dtype=np.int64) for enc in tok.encode_batch_fast(lines, add_special_tokens=False)]


def _save_word2vec_text(path: Path, matrix: np.ndarray, tokens: list[str], frequency: np.ndarray) -> None:
    """Most frequent piece first, as word2vec's own files are."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors(matrix.shape[1])
    kv.add_vectors(tokens, matrix)
    for token, count in zip(tokens, frequency.tolist(), strict=True):  # add_vectors(extras=...) fails in 4.3
        kv.set_vecattr(token, "count", count)
    kv.save_word2vec_format(str(path), binary=False)


def run(params: Params, paths: Paths) -> dict:
    """Train embeddings for the source and target vocabularies."""
    cfg = params.embed
    if cfg.method == "none":  # keep the stage's outputs well-defined for DVC
        with stage_outputs() as outputs:
            write_json(outputs.dir(paths.embeddings) / "info.json", {"method": "none"})
        return {"method": "none"}
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    src = _ids(src_tok, paths.clean / f"train.{params.data.src}")
    tgt = _ids(tgt_tok, paths.clean / f"train.{params.data.tgt}")
    for side, sentences in (("source", src), ("target", tgt)):
        frequency = np.bincount(np.concatenate(sentences)) if sentences else np.zeros(0)
        if (frequency >= cfg.min_count).sum() < 2 or not any(len(s) > 1 for s in sentences):
            raise PipelineError(f"embed.min_count: fewer than two {side} pieces occur {cfg.min_count} times or more "
                                f"next to each other in the train split; lower embed.min_count or use more data")
    start = time.perf_counter()
    if params.tokenize.joint:  # one shared vocabulary: one model over both sides
        shared = TRAINERS[cfg.method](src + tgt, src_tok.get_vocab_size(), cfg)
        trained = {"src": (src_tok, src + tgt, shared), "tgt": (tgt_tok, src + tgt, shared)}
    else:
        trained = {side: (tok, sentences, TRAINERS[cfg.method](sentences, tok.get_vocab_size(), cfg))
                   for side, tok, sentences in (("src", src_tok, src), ("tgt", tgt_tok, tgt))}
    seconds = time.perf_counter() - start  # logged, not written: the outputs depend on the inputs only
    info: dict[str, Any] = {"method": cfg.method, "dim": cfg.dim}
    table = [["side", "token", *(f"neighbour_{k + 1}" for k in range(NEIGHBOURS))]]
    with stage_outputs() as outputs:
        out = outputs.dir(paths.embeddings)
        for side, (tok, sentences, (vectors, mask, report)) in trained.items():
            matrix = embedding_matrix(vectors, mask, cfg.seed)
            tokens = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
            np.save(out / f"{side}.npy", matrix)
            frequency = np.bincount(np.concatenate(sentences), minlength=len(tokens))
            _save_word2vec_text(out / f"{side}.vec", matrix, tokens, frequency)
            table += neighbours(matrix, tokens, frequency, side)
            info[f"{side}_coverage"] = round(float(mask.mean()), 4)
            info |= {f"{side}_{k}": v for k, v in report.items()}
        (out / "neighbours.tsv").write_text("".join("\t".join(row) + "\n" for row in table), encoding="utf-8")
        write_json(out / "info.json", info)
    log.info("embeddings (%s): coverage src %.1f%%, tgt %.1f%%; trained in %.1fs", cfg.method,
             100 * info["src_coverage"], 100 * info["tgt_coverage"], seconds)
    return info


def main() -> None:
    stage_main("embed", run)


if __name__ == "__main__":
    run_command(main)
