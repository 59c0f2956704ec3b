"""``Translator``: sentences in, translations out, the way the model was trained.

The evaluate stage, the ``translate`` command and the served model all decode through it, so they
see the same normalisation, tokenisation, batching and search. It needs only a model file: the
train stage writes both tokenizers and the preprocessing settings into ``models/model.pt``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from pipeline.checkpoint import load_model
from pipeline.common import PipelineError
from pipeline.data import Pairs, token_batches
from pipeline.models import Seq2SeqBase
from pipeline.search import beam_search
from pipeline.text import korean_morphemes, normalise, strip_markup
from pipeline.vocab import BOS, EOS, strip_ids, tokenizer_from_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoding:
    """How to search: params.yaml's evaluate section, shared by evaluate, translate and serving."""

    beam_size: int = 5  # 1 = greedy
    length_penalty: float = 1.0  # GNMT alpha
    max_len_a: float = 1.5  # hypothesis length limit: a * source length + b
    max_len_b: int = 10
    max_tokens: int = 6000  # source tokens per batch (divided by the beam)

    def to_dict(self) -> dict:
        return asdict(self)


class Translator:
    def __init__(self, model: Seq2SeqBase, src_tok: Tokenizer, tgt_tok: Tokenizer, *, normalize: str = "NFKC",
                 korean_morphemes: bool = False, strip_markup: bool = False, max_src_len: int = 128,
                 decoding: Decoding = Decoding()):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.device = next(model.parameters()).device
        self.normalize, self.korean_morphemes, self.max_src_len = normalize, korean_morphemes, max_src_len
        self.strip_markup = strip_markup
        self.decoding = decoding

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu", decoding: Decoding = Decoding()) -> Translator:
        """The translator of a model file written by the train stage."""
        model, blob = load_model(path, device)
        if "src_tokenizer" not in blob:
            raise PipelineError(f"{path} has no tokenizers inside (an older model file); rerun the train stage")
        return cls(model, tokenizer_from_json(blob["src_tokenizer"]), tokenizer_from_json(blob["tgt_tokenizer"]),
                   normalize=blob["normalize"], korean_morphemes=blob["korean_morphemes"],
                   strip_markup=blob.get("strip_markup", False), max_src_len=blob["max_len"], decoding=decoding)

    def preprocess(self, sentence: str) -> str:
        """What the clean stage did to training sources: markup, normalisation, morphemes (when trained so)."""
        text = normalise(strip_markup(sentence) if self.strip_markup else sentence, self.normalize)
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
        d = self.decoding
        # a beam multiplies the batch: keep the token budget per hypothesis
        for idx in token_batches(lengths, lengths, max(d.max_tokens // d.beam_size, 1)):
            batch = pairs.batch(idx)
            max_len = int(d.max_len_a * int(lengths[idx].max()) + d.max_len_b)
            tokens, attn = beam_search(self.model, batch["src"].to(self.device), batch["src_len"].to(self.device),
                                       max_len, d.beam_size, d.length_penalty)
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
