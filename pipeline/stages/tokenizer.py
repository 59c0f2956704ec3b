"""Stage ``tokenize``: train subword tokenizers (HF ``tokenizers``) on the cleaned train split.

(The module is not called ``tokenize.py``: run from inside ``pipeline/`` it would shadow the
standard library's ``tokenize``.)

Writes ``data/tokenizer/src.json`` and ``tgt.json``; with ``joint: true`` both files hold the same
tokenizer, trained on both sides, so every consumer can load "the source" and "the target"
tokenizer the same way. Metaspace pre-tokenisation keeps word boundaries in the tokens, so decoding
restores the original spacing exactly.

Unknown characters: with ``byte_fallback: true`` a character outside the vocabulary becomes its
UTF-8 bytes (``<0xEA>`` ...) and decodes back to itself; otherwise it becomes ``<unk>``. Either way
``metrics/tokenize.json`` reports the ``<unk>`` rate and tokens per sentence on the valid split.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, stage_outputs
from pipeline.config import Params, Paths, Tokenize
from pipeline.tokens import SPECIALS, UNK

log = logging.getLogger(__name__)

BYTES = [f"<0x{b:02X}>" for b in range(256)]


def new_tokenizer(model: str) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>") if model == "bpe" else models.Unigram())
    tok.normalizer = normalizers.Strip()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def _with_byte_fallback(tok: Tokenizer) -> Tokenizer:
    """Add the 256 byte tokens to the model's vocabulary so unseen characters become bytes, not <unk>.

    The trainers have no option for this, so it is done on the serialised tokenizer.
    """
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if model["type"] == "BPE":
        start = len(model["vocab"])
        model["vocab"].update({b: start + i for i, b in enumerate(BYTES)})
    else:  # Unigram: pieces with scores below every learned piece
        floor = min(score for _, score in model["vocab"]) - 10.0
        model["vocab"] += [[b, floor] for b in BYTES]
    model["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    # bytes must be fused back into characters before the word-boundary marks become spaces
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def train_tokenizer(lines: Iterator[str], cfg: Tokenize) -> Tokenizer:
    tok = new_tokenizer(cfg.model)
    size = cfg.vocab_size - (len(BYTES) if cfg.byte_fallback else 0)
    extra = {"limit_alphabet": cfg.limit_alphabet} if cfg.limit_alphabet else {}
    if cfg.model == "bpe":
        trainer = trainers.BpeTrainer(vocab_size=size, min_frequency=cfg.min_frequency, special_tokens=SPECIALS,
                                      show_progress=False, **extra)
    else:
        trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=SPECIALS, unk_token="<unk>",
                                          show_progress=False)
    try:
        tok.train_from_iterator(lines, trainer=trainer)
    except Exception as exc:  # the Rust trainer raises plain Exception, e.g. for a too small vocabulary
        raise PipelineError(f"tokenizer training failed: {exc}; raise tokenize.vocab_size or set "
                            "tokenize.limit_alphabet") from None
    return _with_byte_fallback(tok) if cfg.byte_fallback else tok


def unknown_rate(tok: Tokenizer, lines: list[str]) -> tuple[float, float]:
    """(share of tokens that are <unk>, tokens per sentence) over ``lines``."""
    ids = [enc.ids for enc in tok.encode_batch_fast(lines, add_special_tokens=False)]
    total = sum(map(len, ids))
    unk = sum(row.count(UNK) for row in ids)
    return (unk / total if total else 0.0), (total / len(ids) if ids else 0.0)


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield line.rstrip("\n")


def run(params: Params, paths: Paths) -> dict:
    """Train the subword tokenizer(s) on data/clean/train.*."""
    cfg, src, tgt = params.tokenize, params.data.src, params.data.tgt
    train = {lang: paths.clean / f"train.{lang}" for lang in (src, tgt)}
    for f in train.values():
        if not f.exists():
            raise PipelineError(f"{f} not found; run the clean stage first")
    if cfg.joint:
        joint = train_tokenizer(itertools.chain(_lines(train[src]), _lines(train[tgt])), cfg)
        tokenizers = {"src": joint, "tgt": joint}
    else:
        tokenizers = {side: train_tokenizer(_lines(train[lang]), cfg) for side, lang in (("src", src), ("tgt", tgt))}
    report: dict = {"model": cfg.model, "joint": cfg.joint, "byte_fallback": cfg.byte_fallback}
    for side, lang in (("src", src), ("tgt", tgt)):  # unknown policy, measured on held-out text
        held_out = list(itertools.islice(_lines(paths.clean / f"valid.{lang}"), 5000))
        unk, length = unknown_rate(tokenizers[side], held_out)
        report |= {f"{side}_vocab": tokenizers[side].get_vocab_size(), f"{side}_unk_rate": round(unk, 5),
                   f"{side}_tokens_per_sentence": round(length, 2)}
    with stage_outputs() as outputs:
        out = outputs.dir(paths.tokenizer)
        for side, tok in tokenizers.items():
            (out / f"{side}.json").write_text(tok.to_str(), encoding="utf-8")
        outputs.json(paths.metrics / "tokenize.json", report)
    log.info("tokenizer: %s", report)
    return report


def main() -> None:
    stage_main("tokenize", run)


if __name__ == "__main__":
    run_command(main)
