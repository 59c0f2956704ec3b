"""Stage ``tokenize``: train subword tokenizers (HF ``tokenizers``) on the cleaned train split.

Writes ``data/tokenizer/src.json`` and ``tgt.json``; with ``joint: true`` both files hold the same
tokenizer, trained on both sides, so every consumer can load "the source" and "the target"
tokenizer the same way. Metaspace pre-tokenisation keeps word boundaries in the tokens, so decoding
restores the original spacing exactly; characters never seen in training become ``<unk>``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipeline.common import PipelineError, atomic_file, stage_main
from pipeline.config import Params, Paths

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
PAD, UNK, BOS, EOS = range(4)


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Strip()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def train_tokenizer(lines: Iterator[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield line.rstrip("\n")


def load_tokenizers(paths: Paths) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers written by this stage."""
    files = [paths.tokenizer / "src.json", paths.tokenizer / "tgt.json"]
    for f in files:
        if not f.exists():
            raise PipelineError(f"{f} not found; run the tokenize stage first")
    return Tokenizer.from_file(str(files[0])), Tokenizer.from_file(str(files[1]))


def run(params: Params, paths: Paths) -> dict:
    """Train the subword tokenizer(s) on data/clean/train.*."""
    cfg, src, tgt = params.tokenize, params.data.src, params.data.tgt
    train = {lang: paths.clean / f"train.{lang}" for lang in (src, tgt)}
    for f in train.values():
        if not f.exists():
            raise PipelineError(f"{f} not found; run the clean stage first")
    if cfg.joint:
        joint = train_tokenizer(itertools.chain(_lines(train[src]), _lines(train[tgt])),
                                cfg.vocab_size, cfg.min_frequency)
        tokenizers = {"src": joint, "tgt": joint}
    else:
        tokenizers = {side: train_tokenizer(_lines(train[lang]), cfg.vocab_size, cfg.min_frequency)
                      for side, lang in (("src", src), ("tgt", tgt))}
    paths.tokenizer.mkdir(parents=True, exist_ok=True)
    for side, tok in tokenizers.items():
        with atomic_file(paths.tokenizer / f"{side}.json", encoding="utf-8") as fh:
            fh.write(tok.to_str())
    sizes = {side: tok.get_vocab_size() for side, tok in tokenizers.items()}
    log.info("tokenizer (%s, %s): vocab sizes %s", cfg.model, "joint" if cfg.joint else "separate", sizes)
    return sizes


def main() -> None:
    stage_main("tokenize", run)


if __name__ == "__main__":
    main()
