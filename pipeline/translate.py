"""Translate with the trained model: ``translate "나는 어제 도서관에서 책을 읽었다"`` or lines on stdin.

``Translator`` is also what the evaluate stage decodes with, so the CLI and the BLEU score see the
same normalisation, tokenisation, batching and decoding.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from pipeline.clean import korean_morphemes, normalise
from pipeline.common import PipelineError, setup_logging
from pipeline.config import Paths
from pipeline.data import Pairs, token_batches
from pipeline.models import Seq2SeqBase
from pipeline.search import beam_search, strip_ids
from pipeline.tokenize import BOS, EOS, load_tokenizers
from pipeline.train import load_model

log = logging.getLogger(__name__)


class Translator:
    def __init__(self, model: Seq2SeqBase, src_tok: Tokenizer, tgt_tok: Tokenizer, *, normalize: str = "NFKC",
                 korean_morphemes: bool = False, max_src_len: int = 128, max_len_a: float = 1.5,
                 max_len_b: int = 10, max_tokens: int = 6000,
                 beam_size: int = 1, length_penalty: float = 1.0):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.device = next(model.parameters()).device
        self.normalize, self.korean_morphemes, self.max_src_len = normalize, korean_morphemes, max_src_len
        self.max_len_a, self.max_len_b, self.max_tokens = max_len_a, max_len_b, max_tokens
        self.beam_size, self.length_penalty = beam_size, length_penalty

    @classmethod
    def from_paths(cls, paths: Paths, device: str = "cpu", **kwargs: float | int) -> Translator:
        model, blob = load_model(paths.model / "model.pt", device)
        src_tok, tgt_tok = load_tokenizers(paths)
        return cls(model, src_tok, tgt_tok, normalize=blob.get("normalize", "NFKC"),
                   korean_morphemes=blob.get("korean_morphemes", False), max_src_len=blob.get("max_len", 128),
                   **kwargs)

    def preprocess(self, sentence: str) -> str:
        """What the clean stage did to training sources: normalisation, and morphemes when trained so."""
        text = normalise(sentence, self.normalize)
        return korean_morphemes(text) if self.korean_morphemes else text

    def translate(self, sentences: list[str], preprocessed: bool = False) -> list[str]:
        return [text for text, _ in self.translate_with_attention(sentences, preprocessed)]

    def translate_with_attention(self, sentences: list[str], preprocessed: bool = False
                                 ) -> list[tuple[str, dict | None]]:
        """Translations, each with its attention: {"source": tokens, "target": tokens, "weights": [T, S]}.

        ``preprocessed``: the sentences come from the clean stage already (the evaluate stage)."""
        if not sentences:
            return []
        texts = sentences if preprocessed else [self.preprocess(s) for s in sentences]
        ids = [[*enc.ids[: self.max_src_len - 1], EOS] for enc in self.src_tok.encode_batch_fast(texts)]
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        # a placeholder target of length 1 lets Pairs pad the sources
        pairs = Pairs(np.concatenate(ids).astype(np.int32), lengths,
                      np.full(len(ids), BOS, dtype=np.int32), np.ones(len(ids), dtype=np.int32))
        out: list[tuple[str, dict | None]] = [("", None)] * len(ids)
        # a beam multiplies the batch: keep the token budget per hypothesis
        for idx in token_batches(lengths, lengths, max(self.max_tokens // self.beam_size, 1)):
            batch = pairs.batch(idx)
            max_len = int(self.max_len_a * int(lengths[idx].max()) + self.max_len_b)
            tokens, attn = beam_search(self.model, batch["src"].to(self.device), batch["src_len"].to(self.device),
                                       max_len, self.beam_size, self.length_penalty)
            for row, (i, hyp) in enumerate(zip(idx, tokens.tolist(), strict=True)):
                kept = strip_ids(hyp)
                weights = None
                if attn is not None:
                    n = min(len(kept) + 1, attn.size(1))  # with </s>, unless the length limit cut it off
                    weights = {"source": [self.src_tok.id_to_token(t) for t in ids[i]],
                               "target": [self.tgt_tok.id_to_token(t) for t in hyp[:n]],
                               "weights": attn[row, :n, : len(ids[i])].float().cpu().numpy()}
                out[i] = (self.tgt_tok.decode(kept), weights)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="translate", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line)")
    parser.add_argument("--root", default=".", help="project root holding models/ and data/tokenizer/")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy; default 5)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        with torch.inference_mode():
            translator = Translator.from_paths(Paths(Path(args.root)), args.device, beam_size=args.beam)
            sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
            for line in translator.translate(sentences):
                print(line)
    except PipelineError as exc:
        print(f"error: translate: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
