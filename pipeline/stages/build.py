"""Stage ``build``: encode the clean splits to token ids and write length-bucketed shards.

Source sentences end with ``</s>``; target sentences are ``<s> ... </s>``. Pairs longer than
``max_len`` on either side are dropped and counted. Each split streams through in chunks into
``pipeline.dataset.ShardWriter``: per length bucket, the pairs' ids in the smallest integer type the
vocabulary allows, sorted by length, which training reads batch by batch (``dataset.Shards``). Memory
follows the chunk and the largest bucket's lengths, not the corpus. ``metrics/build.json`` records sizes,
drops and the padding ratio of training's batches against batches of random pairs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs, write_json
from pipeline.config import SPLITS, Params, Paths
from pipeline.dataset import END, FIRST, Shards, ShardWriter, batch_padding, padding_ratio, table_file, token_dtype
from pipeline.tokens import load_tokenizers, source_ids, target_ids

log = logging.getLogger(__name__)

ENCODE_CHUNK = 50_000  # pairs encoded (and held) at a time
SAMPLE = 1_000_000  # pairs at most behind the unbucketed padding ratio


def line_pairs(src: Path, tgt: Path, size: int = ENCODE_CHUNK) -> Iterator[tuple[list[str], list[str]]]:
    """The two files' lines, ``size`` pairs at a time; a PipelineError when their line counts differ."""
    with open(src, encoding="utf-8") as fs, open(tgt, encoding="utf-8") as ft:
        while True:
            s = [line.rstrip("\n") for line in itertools.islice(fs, size)]
            t = [line.rstrip("\n") for line in itertools.islice(ft, size)]
            if len(s) != len(t):
                raise PipelineError(f"{src} and {tgt} have different line counts; rerun clean")
            if not s:
                return
            yield s, t


def encode(tok: Tokenizer, lines: list[str], frame: Callable[[list[int]], list[int]]) -> list[np.ndarray]:
    """Token ids of each line (the batch API), framed by ``frame`` (``tokens.source_ids`` or ``target_ids``)."""
    return [np.asarray(frame(e.ids), dtype=np.int32) for e in tok.encode_batch_fast(lines, add_special_tokens=False)]


def unbucketed_padding(shards: Shards, table: np.ndarray, seed: int = 0) -> float:
    """The padding ratio of batches of the same sizes filled with random pairs (at most ``SAMPLE`` of them):
    what bucketing saves."""
    step = -(-len(shards) // SAMPLE)  # every step-th pair of each length-sorted bucket: all lengths, in proportion
    lengths = np.concatenate([shards.lengths(b)[::step] for b in range(len(shards.buckets))]).astype(np.int64)
    rng = np.random.default_rng(seed)
    sample = lengths[rng.permutation(len(lengths))]
    sizes = (table[:, END] - table[:, FIRST])[rng.permutation(len(table))]
    cuts = np.cumsum(sizes)
    batches = np.split(np.arange(len(sample)), cuts[cuts < len(sample)])
    return padding_ratio(sample[:, 0], sample[:, 1], [b for b in batches if len(b)])


def run(params: Params, paths: Paths) -> dict:
    """Encode data/clean/* into data/dataset/<split>/bucket-* shards."""
    cfg = params.build
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    bounds = [b for b in cfg.buckets if b < cfg.max_len] + [cfg.max_len]
    dtype = token_dtype(max(src_tok.get_vocab_size(), tgt_tok.get_vocab_size()))
    report: dict = {"max_len": cfg.max_len, "buckets": bounds, "dtype": dtype.name, "splits": {}}
    with stage_outputs() as outputs:
        out = outputs.dir(paths.dataset)
        for split in SPLITS:
            files = [paths.clean / f"{split}.{params.data.src}", paths.clean / f"{split}.{params.data.tgt}"]
            for f in files:
                if not f.exists():
                    raise PipelineError(f"{f} not found; run the clean stage first")
            dropped = 0
            with ShardWriter(out / split, bounds, dtype) as writer:
                for s_lines, t_lines in line_pairs(*files):
                    src, tgt = encode(src_tok, s_lines, source_ids), encode(tgt_tok, t_lines, target_ids)
                    keep = [i for i in range(len(src)) if max(len(src[i]), len(tgt[i])) <= cfg.max_len]
                    dropped += len(src) - len(keep)
                    writer.add([src[i] for i in keep], [tgt[i] for i in keep])
            shards = writer.shards
            if not len(shards):
                if not dropped:
                    raise PipelineError(f"{files[0]} is empty: the {split} split has no pairs (metrics/clean.json "
                                        "says why)")
                raise PipelineError(f"every {split} pair is longer than build.max_len={cfg.max_len}")
            table = shards.batches(cfg.max_tokens)  # training's own batches, saved so that it needs not scan
            np.save(table_file(out / split, cfg.max_tokens), table)
            stats = {"pairs": len(shards), "dropped_too_long": dropped,
                     "buckets": {str(b["bound"]): b["pairs"] for b in shards.buckets},
                     "src_tokens": sum(b["src_tokens"] for b in shards.buckets),
                     "tgt_tokens": sum(b["tgt_tokens"] for b in shards.buckets)}
            if split == "train":
                stats["batches"] = len(table)
                stats["padding_ratio"] = round(batch_padding(table), 4)
                stats["padding_ratio_unbucketed"] = round(unbucketed_padding(shards, table), 4)
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
    run_command(main)
