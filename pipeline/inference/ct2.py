"""CTranslate2 for the Transformer: export a model file, and translate with it (``translate --engine ctranslate2``).

CTranslate2 (OpenNMT's C++ inference engine) decodes Transformers much faster than PyTorch on a CPU,
in int8, and serves on CUDA. The export maps our Transformer onto its ``TransformerSpec`` weight for
weight, the way its own OpenNMT-py converter does: fused query/key/value projections, pre- or
post-norm, the final norms of a pre-norm model, tied or separate embeddings, the output bias. Our
sinusoidal positions interleave sin and cos, unlike CTranslate2's, so the table is exported as-is.

What it does not reproduce exactly (hence PyTorch stays the default, and bench/decode.py compares both):
its beam search normalises scores by ``length ** alpha`` instead of GNMT's ``((5 + length) / 6) ** alpha``
(the same ranking at alpha 0), int8 rounds the weights, and it has no attention weights to return.
CTranslate2 has no RNN encoder–decoder, so RNN models stay on PyTorch.

The exported model is cached by the sha256 of the model's weights under ``$NMT_CACHE_DIR/ctranslate2``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.common import PipelineError
from pipeline.inference.translator import Translator

log = logging.getLogger(__name__)


def _vocabulary(tokenizer) -> list[str]:  # a tokenizers.Tokenizer
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    return [by_id[i] for i in range(len(by_id))]


def _spec(translator: Translator):  # -> a ctranslate2 TransformerSpec
    from ctranslate2.converters import utils
    from ctranslate2.specs import common_spec, transformer_spec

    model, cfg = translator.model, translator.model.cfg
    pre = cfg.norm == "pre"
    spec = transformer_spec.TransformerSpec.from_config((cfg.enc_layers, cfg.dec_layers), cfg.heads, pre_norm=pre,
                                                        activation=common_spec.Activation.RELU)

    def linear(target, layer: torch.nn.Linear) -> None:
        target.weight = layer.weight.detach().cpu().numpy()
        target.bias = layer.bias.detach().cpu().numpy()

    def norm(target, layer: torch.nn.LayerNorm) -> None:
        target.gamma, target.beta = layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy()

    def fused(target, *layers: torch.nn.Linear) -> None:
        parts = [common_spec.LinearSpec() for _ in layers]
        for part, layer in zip(parts, layers, strict=True):
            linear(part, layer)
        utils.fuse_linear(target, parts)

    def positions(side: str) -> np.ndarray:
        table = model.sinusoid if cfg.positions == "sinusoidal" else getattr(model, f"{side}_pos").weight
        return table.detach().cpu().numpy()

    def ffn(target, layer) -> None:
        linear(target.linear_0, layer.ff_in)
        linear(target.linear_1, layer.ff_out)
        norm(target.layer_norm, layer.ff_norm)

    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight = model.src_embed.weight.detach().cpu().numpy()
    enc.position_encodings.encodings = positions("src")
    dec.embeddings.weight = model.tgt_embed.weight.detach().cpu().numpy()
    dec.position_encodings.encodings = positions("tgt")
    if pre:
        norm(enc.layer_norm, model.enc_norm)
        norm(dec.layer_norm, model.dec_norm)
    for target, layer in zip(enc.layer, model.encoder, strict=True):
        attn = layer.self_attn
        fused(target.self_attention.linear[0], attn.q, attn.k, attn.v)
        linear(target.self_attention.linear[1], attn.o)
        norm(target.self_attention.layer_norm, layer.self_attn_norm)
        ffn(target.ffn, layer)
    for target, layer in zip(dec.layer, model.decoder, strict=True):
        attn, cross = layer.self_attn, layer.cross_attn
        fused(target.self_attention.linear[0], attn.q, attn.k, attn.v)
        linear(target.self_attention.linear[1], attn.o)
        norm(target.self_attention.layer_norm, layer.self_attn_norm)
        linear(target.attention.linear[0], cross.q)
        fused(target.attention.linear[1], cross.k, cross.v)
        linear(target.attention.linear[2], cross.o)
        norm(target.attention.layer_norm, layer.cross_attn_norm)
        ffn(target.ffn, layer)
    linear(dec.projection, model.out)
    spec.register_source_vocabulary(_vocabulary(translator.src_tok))
    spec.register_target_vocabulary(_vocabulary(translator.tgt_tok))
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = "<unk>", "<s>", "</s>"
    spec.config.decoder_start_token = "<s>"
    spec.config.layer_norm_epsilon = model.dec_norm.eps if pre else model.decoder[0].self_attn_norm.eps  # torch: 1e-5
    return spec


def export(translator: Translator, out_dir: Path, quantization: str = "int8") -> Path:
    """Write ``translator``'s Transformer as a CTranslate2 model into ``out_dir``."""
    try:
        from ctranslate2.converters.converter import Converter
    except ImportError:
        raise PipelineError("--engine ctranslate2 needs CTranslate2: pip install -e '.[fast]'") from None
    if translator.model.arch != "transformer":
        raise PipelineError("CTranslate2 runs Transformer models only; this model is an RNN (use --engine torch)")

    class _Ours(Converter):
        def _load(self):
            return _spec(translator)

    _Ours().convert(str(out_dir), quantization=quantization, force=True)
    return out_dir


class CT2Translator(Translator):
    """A Translator that searches with CTranslate2: the same preprocessing, tokenizers, truncation, batching
    and decoding settings (``Translator``), only ``search`` is CTranslate2's."""

    def __init__(self, base: Translator, model_dir: Path, compute_type: str = "int8", device: str = "cpu"):
        import ctranslate2

        super().__init__(base.model, base.src_tok, base.tgt_tok, base.preprocessing, base.max_src_len, base.decoding)
        self.engine = ctranslate2.Translator(str(model_dir), device=device, compute_type=compute_type,
                                             intra_threads=torch.get_num_threads())
        self.src_tokens = _vocabulary(self.src_tok)  # CTranslate2 takes token strings
        self.tgt_ids = self.tgt_tok.get_vocab()

    def search(self, sources: list[list[int]], max_len: int, attention: bool) -> list[tuple[list[int], None]]:
        d = self.decoding
        results = self.engine.translate_batch([[self.src_tokens[i] for i in s] for s in sources],
                                              beam_size=d.beam_size, length_penalty=d.length_penalty,
                                              max_decoding_length=max_len)
        return [([self.tgt_ids[token] for token in r.hypotheses[0]], None) for r in results]


def ct2_translator(base: Translator, compute_type: str = "int8", device: str = "cpu") -> CT2Translator:
    """``base`` on CTranslate2, exporting its model once (cached by the weights' hash)."""
    weights = hashlib.sha256()
    for name, tensor in sorted(base.model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().numpy().tobytes())
    cache = Path(os.environ.get("NMT_CACHE_DIR", "~/.cache/nmt-pipeline")).expanduser() / "ctranslate2"
    model_dir = cache / f"{weights.hexdigest()[:16]}-{compute_type}"
    if not (model_dir / "model.bin").exists():
        log.info("exporting the model to CTranslate2 (%s) in %s", compute_type, model_dir)
        export(base, model_dir, "int8" if compute_type.startswith("int8") else compute_type)
    return CT2Translator(base, model_dir, compute_type, device)
