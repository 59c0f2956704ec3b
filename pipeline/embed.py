"""Stage ``embed``: pretrain subword embeddings on the train split (gensim word2vec).

Writes ``data/embeddings/src.npy`` and ``tgt.npy``: float32 matrices ``[vocab, dim]`` whose row i
is the vector of token id i, ready to initialise the model's embedding tables. Tokens word2vec
never saw (special tokens, rare pieces) get small random vectors; ``<pad>`` gets zeros.
``method`` selects the trainer; GloVe will be a second function with the same signature.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from pipeline.cli import stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import Embed, Params, Paths
from pipeline.vocab import PAD, load_tokenizers

log = logging.getLogger(__name__)


def _stable_hash(text: str) -> int:
    # gensim seeds each vector with hash(word); Python's hash() changes per process.
    return zlib.crc32(text.encode())


def word2vec(sentences: list[list[str]], cfg: Embed) -> dict[str, np.ndarray]:
    from gensim.models import Word2Vec

    model = Word2Vec(sentences, vector_size=cfg.dim, window=cfg.window, min_count=cfg.min_count,
                     sg=1 if cfg.algorithm == "skipgram" else 0, negative=cfg.negative, epochs=cfg.epochs,
                     seed=cfg.seed, workers=1, hashfxn=_stable_hash)  # one worker: reproducible vectors
    return {word: model.wv[word] for word in model.wv.index_to_key}


TRAINERS: dict[str, Callable[[list[list[str]], Embed], dict[str, np.ndarray]]] = {"word2vec": word2vec}


def embedding_matrix(tok: Tokenizer, vectors: dict[str, np.ndarray], dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = float(np.std(np.stack(list(vectors.values())))) if vectors else 0.1
    matrix = rng.normal(0.0, scale, size=(tok.get_vocab_size(), dim)).astype(np.float32)
    for token, idx in tok.get_vocab().items():
        if token in vectors:
            matrix[idx] = vectors[token]
    matrix[PAD] = 0.0
    return matrix


def _tokenised(tok: Tokenizer, path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    return [enc.tokens for enc in tok.encode_batch(lines, add_special_tokens=False)]


def run(params: Params, paths: Paths) -> dict:
    """Train embeddings for the source and target vocabularies."""
    cfg = params.embed
    if cfg.method == "none":  # keep the stage's outputs well-defined for DVC
        with stage_outputs() as outputs:
            write_json(outputs.dir(paths.embeddings) / "info.json", {"method": "none"})
        return {"method": "none"}
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    sides = {"src": (src_tok, params.data.src), "tgt": (tgt_tok, params.data.tgt)}
    for _, lang in sides.values():
        if not (paths.clean / f"train.{lang}").exists():
            raise PipelineError(f"{paths.clean / f'train.{lang}'} not found; run the clean stage first")
    if params.tokenize.joint:  # one shared vocabulary: one model over both sides
        sentences = _tokenised(src_tok, paths.clean / f"train.{params.data.src}") + \
            _tokenised(tgt_tok, paths.clean / f"train.{params.data.tgt}")
        shared = TRAINERS[cfg.method](sentences, cfg)
        vectors = {"src": shared, "tgt": shared}
    else:
        vectors = {side: TRAINERS[cfg.method](_tokenised(tok, paths.clean / f"train.{lang}"), cfg)
                   for side, (tok, lang) in sides.items()}
    info = {"method": cfg.method, "algorithm": cfg.algorithm, "dim": cfg.dim}
    with stage_outputs() as outputs:
        out = outputs.dir(paths.embeddings)
        for side, (tok, _) in sides.items():
            np.save(out / f"{side}.npy", embedding_matrix(tok, vectors[side], cfg.dim, cfg.seed))
            info[f"{side}_coverage"] = round(len(vectors[side]) / tok.get_vocab_size(), 4)
        write_json(out / "info.json", info)
    log.info("embeddings: %s", info)
    return info


def main() -> None:
    stage_main("embed", run)


if __name__ == "__main__":
    main()
