"""``Translator``: sentences in, translations out, the way the model was trained.

The evaluate stage, training's validation BLEU, the ``translate`` command and the served model all
decode through it, so they see the same preprocessing, tokenisation, truncation, batching and search.
It needs only a model file: the train stage writes both tokenizers and the preprocessing settings
into ``models/model.pt``. Another engine (``pipeline.inference.ct2``) replaces ``search`` only.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from pipeline.checkpoint import load_model
from pipeline.common import PipelineError
from pipeline.dataset import token_batches
from pipeline.decoding import Decoding
from pipeline.inference.search import beam_search
from pipeline.models import Seq2SeqBase
from pipeline.text import Preprocessing
from pipeline.tokens import PAD, source_ids, strip_ids, tokenizer_from_json

log = logging.getLogger(__name__)

Attention = dict  # {"source": tokens, "target": tokens, "weights": [T, S] array}


class Translator:
    def __init__(self, model: Seq2SeqBase, src_tok: Tokenizer, tgt_tok: Tokenizer, preprocessing: Preprocessing,
                 max_src_len: int, decoding: Decoding):
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        self.preprocessing, self.decoding = preprocessing, decoding
        self.languages: tuple[str | None, str | None] = (None, None)  # (source, target) as the model file says
        limit = model.max_length()  # a Transformer cannot read or write past its positions
        self.max_src_len = min(max_src_len, limit) if limit else max_src_len

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu", decoding: Decoding | None = None) -> Translator:
        """The translator of a model file written by the train stage."""
        model, blob = load_model(path, device)
        if "src_tokenizer" not in blob:
            raise PipelineError(f"{path} has no tokenizers inside (an older model file); rerun the train stage")
        preprocessing = Preprocessing(blob["normalize"], blob.get("strip_markup", False), blob["korean_morphemes"])
        tokenizers = tokenizer_from_json(blob["src_tokenizer"]), tokenizer_from_json(blob["tgt_tokenizer"])
        translator = cls(model.eval(), *tokenizers, preprocessing, blob["max_len"], decoding or Decoding())
        translator.languages = (blob.get("src_lang"), blob.get("tgt_lang"))
        return translator

    def with_decoding(self, **changes) -> Translator:
        """The same translator with other decoding settings (a per-request beam, say)."""
        other = copy.copy(self)
        other.decoding = self.decoding.replace(**changes)
        return other

    def translate(self, sentences: list[str], prepared: bool = False) -> list[str]:
        """Translations of raw sentences (``prepared``: of sentences already prepared as the clean stage writes
        them, such as the train split it wrote). An empty line translates to an empty line; a source longer
        than the model was trained on is cut to that length, with a warning."""
        return [text for text, _ in self._translate(sentences, attention=False, prepared=prepared)]

    def translate_with_attention(self, sentences: list[str]) -> list[tuple[str, Attention | None]]:
        """``translate``, each translation with its attention (None where the engine has none)."""
        return self._translate(sentences, attention=True)

    def _translate(self, sentences: list[str], attention: bool, prepared: bool = False
                   ) -> list[tuple[str, Attention | None]]:
        # preparing twice is not a no-op: Korean morphemes would be split again
        texts = list(sentences) if prepared else [self.preprocessing.source(s) for s in sentences]
        out: list[tuple[str, Attention | None]] = [("", None)] * len(texts)
        todo = [i for i, text in enumerate(texts) if text]
        if not todo:
            return out
        ids = []
        for i, enc in zip(todo, self.src_tok.encode_batch_fast([texts[i] for i in todo]), strict=True):
            if len(enc.ids) >= self.max_src_len:
                log.warning("sentence %d has %d subword tokens; only the first %d are translated "
                            "(the model reads at most %d with </s>)", i + 1, len(enc.ids),
                            self.max_src_len - 1, self.max_src_len)
            ids.append(source_ids(enc.ids[: self.max_src_len - 1]))
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        for idx in token_batches(lengths, lengths, self.decoding.batch_tokens()):
            max_len = self.decoding.max_len(int(lengths[idx].max()), self.model.max_length())
            found = self.search([ids[i] for i in idx], max_len, attention)
            for i, (hyp, weights) in zip(idx, found, strict=True):
                kept = strip_ids(hyp)
                shown = None
                if weights is not None:
                    n = min(len(kept) + 1, len(hyp))  # with </s>, unless the length limit cut it off
                    shown = {"source": [self.src_tok.id_to_token(t) for t in ids[i]],
                             "target": [self.tgt_tok.id_to_token(t) for t in hyp[:n]],
                             "weights": weights[:n, : len(ids[i])]}
                out[todo[i]] = (self.tgt_tok.decode(kept), shown)
        return out

    def search(self, sources: list[list[int]], max_len: int, attention: bool
               ) -> list[tuple[list[int], np.ndarray | None]]:
        """Target ids (up to ``</s>``, then padding) of each source's best hypothesis, with its attention
        weights [T, S] when asked for (they cost a Transformer its fused attention kernel)."""
        device = next(self.model.parameters()).device
        src = torch.full((len(sources), max(len(s) for s in sources)), PAD, dtype=torch.long)
        for row, s in enumerate(sources):
            src[row, : len(s)] = torch.tensor(s)
        src_len = torch.tensor([len(s) for s in sources])
        was_training = self.model.training
        self.model.eval()
        try:
            tokens, attn = beam_search(self.model, src.to(device), src_len.to(device), max_len,
                                       self.decoding.beam_size, self.decoding.length_penalty, attention)
        finally:
            self.model.train(was_training)
        weights = attn.float().cpu().numpy() if attn is not None else [None] * len(sources)
        return list(zip(tokens.tolist(), weights, strict=True))
