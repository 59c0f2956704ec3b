"""Stage ``build``: encode the clean splits to token ids and write length-bucketed shards.

Source sentences end with ``</s>``; target sentences are ``<s> ... </s>``. Pairs longer than
``max_len`` on either side are dropped and counted. Each split becomes one ``.npz`` shard per
length bucket (see ``pipeline.dataset``), and ``metrics/build.json`` records sizes, drops and the
padding ratio of token-budget batches with and without length bucketing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from pipeline.cli import stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import SPLITS, Params, Paths
from pipeline.dataset import padding_ratio, token_batches
from pipeline.tokens import load_tokenizers, source_ids, target_ids

log = logging.getLogger(__name__)

ENCODE_CHUNK = 50_000


def encode_file(tok: Tokenizer, path: Path, frame: Callable[[list[int]], list[int]]) -> list[np.ndarray]:
    """Token ids of every line of ``path``, framed by ``frame`` (``tokens.source_ids`` or ``target_ids``);
    the batch API, in chunks to bound memory."""
    out: list[np.ndarray] = []
    with open(path, encoding="utf-8") as fh:
        while lines := [line.rstrip("\n") for line in itertools.islice(fh, ENCODE_CHUNK)]:
            for enc in tok.encode_batch_fast(lines, add_special_tokens=False):
                out.append(np.asarray(frame(enc.ids), dtype=np.int32))
    return out


def run(params: Params, paths: Paths) -> dict:
    """Encode data/clean/* into data/dataset/<split>/bucket-*.npz."""
    cfg = params.build
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    bounds = [b for b in cfg.buckets if b < cfg.max_len] + [cfg.max_len]
    report: dict = {"max_len": cfg.max_len, "buckets": bounds, "splits": {}}
    with stage_outputs() as outputs:
        out = outputs.dir(paths.dataset)
        for split in SPLITS:
            files = [paths.clean / f"{split}.{params.data.src}", paths.clean / f"{split}.{params.data.tgt}"]
            for f in files:
                if not f.exists():
                    raise PipelineError(f"{f} not found; run the clean stage first")
            src = encode_file(src_tok, files[0], source_ids)
            tgt = encode_file(tgt_tok, files[1], target_ids)
            if len(src) != len(tgt):
                raise PipelineError(f"{files[0]} and {files[1]} have different line counts; rerun clean")
            src_len = np.fromiter((len(s) for s in src), dtype=np.int32, count=len(src))
            tgt_len = np.fromiter((len(t) for t in tgt), dtype=np.int32, count=len(tgt))
            longest = np.maximum(src_len, tgt_len)
            keep = longest <= cfg.max_len
            bucket_of = np.searchsorted(bounds, longest, side="left")
            (out / split).mkdir()
            counts = {}
            for b, bound in enumerate(bounds):
                idx = np.flatnonzero(keep & (bucket_of == b))
                if len(idx) == 0:
                    continue
                idx = idx[np.lexsort((tgt_len[idx], src_len[idx]))]
                with open(out / split / f"bucket-{bound:04d}.npz", "wb") as fh:
                    np.savez(fh, src=np.concatenate([src[i] for i in idx]), src_len=src_len[idx],
                             tgt=np.concatenate([tgt[i] for i in idx]), tgt_len=tgt_len[idx])
                counts[str(bound)] = len(idx)
            if not counts:
                raise PipelineError(f"every {split} pair is longer than build.max_len={cfg.max_len}")
            stats = {"pairs": int(keep.sum()), "dropped_too_long": int((~keep).sum()), "buckets": counts,
                     "src_tokens": int(src_len[keep].sum()), "tgt_tokens": int(tgt_len[keep].sum())}
            if split == "train":
                sl, tl = src_len[keep], tgt_len[keep]
                batches = token_batches(sl, tl, cfg.max_tokens, seed=0)
                stats["padding_ratio"] = round(padding_ratio(sl, tl, batches), 4)
                # the same batch sizes filled with random pairs: what bucketing saves
                shuffled = np.random.default_rng(0).permutation(len(sl))
                random_batches = np.split(shuffled, np.cumsum([len(b) for b in batches])[:-1])
                stats["padding_ratio_unbucketed"] = round(padding_ratio(sl, tl, random_batches), 4)
            report["splits"][split] = stats
        write_json(out / "meta.json", {**report, "src_vocab": src_tok.get_vocab_size(),
                                       "tgt_vocab": tgt_tok.get_vocab_size()})
        outputs.json(paths.metrics / "build.json", {
            "train_pairs": report["splits"]["train"]["pairs"],
            "padding_ratio": report["splits"]["train"]["padding_ratio"],
            "padding_ratio_unbucketed": report["splits"]["train"]["padding_ratio_unbucketed"],
            "dropped_too_long": sum(s["dropped_too_long"] for s in report["splits"].values())})
    log.info("dataset: %s", {s: v["pairs"] for s, v in report["splits"].items()})
    return report


def main() -> None:
    stage_main("build", run)


if __name__ == "__main__":
    main()
