"""Transformer encoder–decoder (Vaswani et al. 2017), in one file.

Attention runs through ``F.scaled_dot_product_attention``, which picks fused kernels (flash /
memory-efficient) on GPUs; weights are computed explicitly only when asked for (heatmaps).
Decoding is incremental: each decoder layer caches the keys and values of the positions decoded so
far, and the cross-attention keys and values of the source are computed once per sentence, so a
step costs one position, not the whole prefix.
Options: sinusoidal or learned positions, pre- or post-layer-norm, tied embeddings; in training,
``recompute_layers`` keeps only each layer's input and recomputes the rest in backward (activation
checkpointing through torch.utils.checkpoint): the activations of a layer at a time instead of all of them.
Masks: source padding in encoder self-attention and cross-attention; causal in decoder
self-attention (target padding sits after every real token, so causality alone keeps real
positions from seeing it, and padded positions are ignored by the loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pipeline.models.base import Seq2SeqBase
from pipeline.tokens import PAD


@dataclass(frozen=True)
class TransformerConfig:
    src_vocab: int
    tgt_vocab: int
    hidden: int  # d_model, also the embedding size
    dropout: float
    heads: int
    ff_dim: int
    enc_layers: int
    dec_layers: int
    positions: str  # sinusoidal | learned
    norm: str  # pre | post
    tie_embeddings: bool  # output projection = target embeddings (= source embeddings too, with joint_vocab)
    max_positions: int
    joint_vocab: bool  # source and target share one tokenizer


class MultiHeadAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def _split(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, heads, L, D/heads]
        return x.view(x.size(0), x.size(1), self.heads, -1).transpose(1, 2)

    def keys_values(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """kv [B, S, D] -> keys, values [B, heads, S, D/heads]"""
        return self._split(self.k(kv)), self._split(self.v(kv))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, causal: bool = False,
               need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B, T, D] against keys/values [B, heads, S, D/heads]; key_mask [B, S] (True = real)
        -> [B, T, D], weights [B, T, S] | None"""
        q = self._split(self.q(x))
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            if causal:
                t, s = scores.shape[-2:]
                scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool, device=x.device).triu(1),
                                            float("-inf"))
            probs = scores.softmax(-1)
            out, weights = probs @ v, probs.mean(1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).flatten(2)), weights

    def forward(self, x: Tensor, kv: Tensor, key_mask: Tensor | None = None, causal: bool = False,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        return self.attend(x, *self.keys_values(kv), key_mask, causal, need_weights)


class Layer(nn.Module):
    def __init__(self, cfg: TransformerConfig, cross: bool):
        super().__init__()
        d = cfg.hidden
        self.pre = cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(d, cfg.heads, cfg.dropout)
        self.cross_attn = MultiHeadAttention(d, cfg.heads, cfg.dropout) if cross else None
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_dim), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff_dim, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 if cross else 2))
        self.dropout = nn.Dropout(cfg.dropout)

    # the sublayers by role, for whoever reads the weights (the CTranslate2 export); the modules keep their
    # positional names, which are the keys of every saved state dict
    @property
    def ff_in(self) -> nn.Linear:
        return self.ff[0]

    @property
    def ff_out(self) -> nn.Linear:
        return self.ff[3]

    @property
    def self_attn_norm(self) -> nn.LayerNorm:
        return self.norms[0]

    @property
    def cross_attn_norm(self) -> nn.LayerNorm:
        return self.norms[1]

    @property
    def ff_norm(self) -> nn.LayerNorm:
        return self.norms[-1]

    def _sub(self, i: int, x: Tensor, fn) -> tuple[Tensor, Tensor | None]:
        if self.pre:
            y, w = fn(self.norms[i](x))
            return x + self.dropout(y), w
        y, w = fn(x)
        return self.norms[i](x + self.dropout(y)), w

    def forward(self, x: Tensor, self_mask: Tensor | None, cross_kv: tuple[Tensor, Tensor] | None = None,
                memory_mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """All positions at once (the encoder; the decoder under teacher forcing, causally masked)."""
        causal = self.cross_attn is not None
        x, _ = self._sub(0, x, lambda h: self.self_attn(h, h, self_mask, causal=causal))
        weights = None
        if self.cross_attn is not None:
            x, weights = self._sub(1, x, lambda h: self.cross_attn.attend(h, *cross_kv, memory_mask,
                                                                          need_weights=need_weights))
        x, _ = self._sub(-1, x, lambda h: (self.ff(h), None))
        return x, weights

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor], cross_kv: tuple[Tensor, Tensor], memory_mask: Tensor,
             need_weights: bool) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
        """One new decoder position x [B, 1, D] against the cached keys/values of the earlier ones;
        returns the output, the cross-attention weights and the cache grown by this position."""
        grown: list[Tensor] = []

        def self_attention(h: Tensor) -> tuple[Tensor, None]:
            k, v = self.self_attn.keys_values(h)
            grown.extend((torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)))
            return self.self_attn.attend(h, *grown)  # every cached position is earlier: no mask needed

        x, _ = self._sub(0, x, self_attention)
        x, weights = self._sub(1, x, lambda h: self.cross_attn.attend(h, *cross_kv, memory_mask,
                                                                      need_weights=need_weights))
        x, _ = self._sub(2, x, lambda h: (self.ff(h), None))
        return x, weights, (grown[0], grown[1])


class TransformerSeq2Seq(Seq2SeqBase):
    arch = "transformer"

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.src_embed = nn.Embedding(cfg.src_vocab, d, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab, d, padding_idx=PAD)
        if cfg.tie_embeddings and cfg.joint_vocab:
            self.tgt_embed.weight = self.src_embed.weight  # joint vocabulary: one table for both sides
        if cfg.positions == "learned":
            self.src_pos = nn.Embedding(cfg.max_positions, d)
            self.tgt_pos = nn.Embedding(cfg.max_positions, d)
        else:
            pos = torch.arange(cfg.max_positions).unsqueeze(1)
            div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
            table = torch.zeros(cfg.max_positions, d)
            table[:, 0::2], table[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
            self.register_buffer("sinusoid", table, persistent=False)
        self.encoder = nn.ModuleList(Layer(cfg, cross=False) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(Layer(cfg, cross=True) for _ in range(cfg.dec_layers))
        self.enc_norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.dec_norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.out = nn.Linear(d, cfg.tgt_vocab)
        self.dropout = nn.Dropout(cfg.dropout)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
        for table in (self.src_embed, self.tgt_embed):
            nn.init.normal_(table.weight, std=d ** -0.5)
            with torch.no_grad():
                table.weight[PAD].zero_()
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight  # output projection = target embeddings

    def load_embeddings(self, src: Tensor | None, tgt: Tensor | None, freeze: bool) -> None:
        """Pretrained vectors, rescaled to the scale of this model's own initial embeddings (std d^-0.5).

        word2vec and GloVe vectors have a component std of about 0.1 to 0.5, and ``_embed`` multiplies
        embeddings by sqrt(d) (16 at d = 256): unscaled, they would be several times larger than the
        position encodings and drown them. Measured on Multi30k: docs/benchmarks.md (pretrained embeddings).
        """

        def rescaled(weights: Tensor | None) -> Tensor | None:
            if weights is None:
                return None
            return weights * (self.cfg.hidden ** -0.5 / weights[PAD + 1:].std().clamp_min(1e-8))

        super().load_embeddings(rescaled(src), rescaled(tgt), freeze)

    def max_length(self) -> int:
        return self.cfg.max_positions

    def _embed(self, tokens: Tensor, table: nn.Embedding, side: str, offset: int = 0) -> Tensor:
        if offset + tokens.size(1) > self.cfg.max_positions:
            raise ValueError(f"sequence of {offset + tokens.size(1)} tokens exceeds model.max_positions")
        positions = (getattr(self, f"{side}_pos").weight if self.cfg.positions == "learned"
                     else self.sinusoid)[offset: offset + tokens.size(1)]
        return self.dropout(table(tokens) * math.sqrt(self.cfg.hidden) + positions)

    recompute_layers = False  # train.recompute_layers: set by the train stage

    def _layer(self, layer: Layer, *args, **kwargs) -> tuple[Tensor, Tensor | None]:
        if self.recompute_layers and self.training and torch.is_grad_enabled():
            # the RNG state is saved and restored around the recomputation: the same dropout masks, the same result
            return checkpoint(layer, *args, use_reentrant=False, **kwargs)
        return layer(*args, **kwargs)

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        mask = src != PAD
        x = self._embed(src, self.src_embed, "src")
        for layer in self.encoder:
            x, _ = self._layer(layer, x, mask)
        memory = self.enc_norm(x)
        # what each decoder layer's cross-attention reads: computed once per sentence, reused at every step
        kv = [layer.cross_attn.keys_values(memory) for layer in self.decoder]
        return {"memory": memory, "mask": mask, "cross_k": [k for k, _ in kv], "cross_v": [v for _, v in kv]}

    def _decode(self, tgt_in: Tensor, memory: dict, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """The output layer's input [B, T, d] at every position of ``tgt_in``, and the last layer's attention."""
        x = self._embed(tgt_in, self.tgt_embed, "tgt")
        weights = None
        for i, layer in enumerate(self.decoder):
            last = i == len(self.decoder) - 1
            x, w = self._layer(layer, x, None, (memory["cross_k"][i], memory["cross_v"][i]), memory["mask"],
                               need_weights=need_weights and last)
            weights = w if last else weights
        return self.dec_norm(x), weights

    def features(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._decode(tgt_in, self.encode(src, src_len))

    def sampled_logits(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, teacher_forcing: float) -> Tensor:
        """Scheduled sampling in two passes (Mihaylova & Martins 2019): a teacher-forced pass without
        gradients predicts every position at once; each input token after <s> is then the gold one with
        probability ``teacher_forcing``, else that prediction; a second pass trains on the mix.
        One extra decoder pass instead of a step loop over the target."""
        memory = self.encode(src, src_len)
        with torch.no_grad():
            predicted = self.out(self._decode(tgt_in, memory)[0]).argmax(-1)  # [B, T]: the token after each prefix
        use_model = (torch.rand(tgt_in.shape, device=tgt_in.device) >= teacher_forcing) & (tgt_in != PAD)
        mixed = tgt_in.clone()
        mixed[:, 1:] = torch.where(use_model[:, 1:], predicted[:, :-1], tgt_in[:, 1:])
        return self.out(self._decode(mixed, memory)[0])

    # --- decoding, one step at a time -----------------------------------------------------------------

    incremental = True  # False: every step re-decodes the whole prefix (kept to compare in tests and bench/)

    def start(self, memory: dict) -> dict:
        if not self.incremental:
            return {"prefix": memory["mask"].new_zeros((memory["mask"].size(0), 0), dtype=torch.long)}
        empty = memory["cross_k"][0][:, :, :0]  # [B, heads, 0, D/heads]
        return {"k": [empty] * len(self.decoder), "v": [empty] * len(self.decoder)}

    def step(self, y_prev: Tensor, state: dict, memory: dict, need_weights: bool = True
             ) -> tuple[Tensor, dict, Tensor | None]:
        need_weights = need_weights and not self.training  # the fused attention kernel otherwise
        if "prefix" in state:
            prefix = torch.cat([state["prefix"], y_prev.unsqueeze(1)], 1)
            hidden, weights = self._decode(prefix, memory, need_weights=need_weights)
            return self.out(hidden[:, -1]), {"prefix": prefix}, (weights[:, -1] if weights is not None else None)
        x = self._embed(y_prev.unsqueeze(1), self.tgt_embed, "tgt", offset=state["k"][0].size(2))  # [B, 1, D]
        keys, values, weights = [], [], None
        for i, layer in enumerate(self.decoder):
            last = i == len(self.decoder) - 1
            x, w, (k, v) = layer.step(x, (state["k"][i], state["v"][i]), (memory["cross_k"][i], memory["cross_v"][i]),
                                      memory["mask"], need_weights=need_weights and last)
            keys.append(k)
            values.append(v)
            weights = w if last else weights
        logits = self.out(self.dec_norm(x))[:, 0]
        return logits, {"k": keys, "v": values}, (weights[:, 0] if weights is not None else None)
