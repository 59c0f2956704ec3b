"""``Translator``: sentences in, translations out, the way the model was trained.

The evaluate stage, the ``translate`` command and the served model all decode through it, so they
see the same normalisation, tokenisation, batching and search.
"""

from __future__ import annotations

import logging

import numpy as np
from tokenizers import Tokenizer

from pipeline.checkpoint import load_model
from pipeline.config import Paths
from pipeline.data import Pairs, token_batches
from pipeline.models import Seq2SeqBase
from pipeline.search import beam_search
from pipeline.text import korean_morphemes, normalise
from pipeline.vocab import BOS, EOS, load_tokenizers, strip_ids

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
        src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
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
        texts = sentences if preprocessed else [self.preprocess(s) for s in sentences]
        out: list[tuple[str, dict | None]] = [("", None)] * len(texts)
        todo = [i for i, text in enumerate(texts) if text]  # an empty line translates to an empty line
        if not todo:
            return out
        ids = []
        for i, enc in zip(todo, self.src_tok.encode_batch_fast([texts[i] for i in todo]), strict=True):
            if len(enc.ids) >= self.max_src_len:
                log.warning("sentence %d has %d subword tokens; only the first %d are translated "
                            "(the model was trained on at most build.max_len = %d)", i + 1, len(enc.ids),
                            self.max_src_len - 1, self.max_src_len)
            ids.append([*enc.ids[: self.max_src_len - 1], EOS])
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        # a placeholder target of length 1 lets Pairs pad the sources
        pairs = Pairs(np.concatenate(ids).astype(np.int32), lengths,
                      np.full(len(ids), BOS, dtype=np.int32), np.ones(len(ids), dtype=np.int32))
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
                out[todo[i]] = (self.tgt_tok.decode(kept), weights)
        return out
