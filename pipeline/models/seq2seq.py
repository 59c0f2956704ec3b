"""RNN encoder–decoder with Bahdanau (additive) attention, in one file.

Encoder: embeddings -> bidirectional GRU over packed sequences -> annotations [B, S, H].
Decoder (Bahdanau et al. 2015): at step t, attend with the previous state s_{t-1}, feed
[y_{t-1}; context_t] to a GRU cell, then predict from tanh(W [s_t; context_t; y_{t-1}]).

Speed comes from keeping only the truly sequential work in the time loop: the attention keys,
the embedding part of the GRU input gates and the whole output layer (pre-output + vocabulary
projection + loss) are computed for all positions at once, outside the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.tokenize import BOS, EOS, PAD


@dataclass(frozen=True)
class Seq2SeqConfig:
    src_vocab: int
    tgt_vocab: int
    emb_dim: int = 128
    hidden: int = 256  # decoder state and encoder annotation size (hidden/2 per direction)
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        if cfg.hidden % 2:
            raise ValueError("hidden must be even: the encoder is bidirectional")
        self.embed = nn.Embedding(cfg.src_vocab, cfg.emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(cfg.emb_dim, cfg.hidden // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, S], src_len [B] -> annotations [B, S, H], final state [B, H]."""
        x = self.dropout(self.embed(src))
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        return out, torch.cat([h[0], h[1]], dim=-1)  # forward and backward final states


class BahdanauDecoder(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        h = cfg.hidden
        self.hidden = h
        self.embed = nn.Embedding(cfg.tgt_vocab, cfg.emb_dim, padding_idx=PAD)
        self.bridge = nn.Linear(h, h)
        self.key = nn.Linear(h, h, bias=False)
        self.query = nn.Linear(h, h, bias=False)
        self.energy = nn.Linear(h, 1, bias=False)
        # GRU cell written out so the embedding half of the input gates is one batched matmul
        self.w_emb = nn.Linear(cfg.emb_dim, 3 * h)
        self.w_ctx = nn.Linear(h, 3 * h, bias=False)
        self.w_hh = nn.Linear(h, 3 * h)
        self.pre_output = nn.Linear(2 * h + cfg.emb_dim, h)
        self.out = nn.Linear(h, cfg.tgt_vocab)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_state(self, enc_final: Tensor) -> Tensor:
        return torch.tanh(self.bridge(enc_final))  # [B, H]

    def attend(self, s: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """s [B, H], keys/memory [B, S, H], mask [B, S] -> context [B, H], weights [B, S]."""
        scores = self.energy(torch.tanh(keys + self.query(s).unsqueeze(1))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights

    def cell(self, gi_emb: Tensor, ctx: Tensor, s: Tensor) -> Tensor:
        """One GRU step; gi_emb [B, 3H] is the precomputed embedding part of the input gates."""
        gi = gi_emb + self.w_ctx(ctx)
        gh = self.w_hh(s)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * s

    def logits(self, s: Tensor, ctx: Tensor, emb: Tensor) -> Tensor:
        """[..., H], [..., H], [..., E] -> [..., V]"""
        return self.out(self.dropout(torch.tanh(self.pre_output(torch.cat([s, ctx, emb], dim=-1)))))

    def forward(self, tgt_in: Tensor, s: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass. tgt_in [B, T] -> logits [B, T, V], attention [B, T, S]."""
        emb = self.dropout(self.embed(tgt_in))  # [B, T, E]
        gi_emb = self.w_emb(emb)  # [B, T, 3H]
        keys = self.key(memory)  # [B, S, H]
        states, contexts, weights = [], [], []
        for t in range(tgt_in.size(1)):
            ctx, w = self.attend(s, keys, memory, mask)
            s = self.cell(gi_emb[:, t], ctx, s)
            states.append(s)
            contexts.append(ctx)
            weights.append(w)
        return self.logits(torch.stack(states, 1), torch.stack(contexts, 1), emb), torch.stack(weights, 1)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = BahdanauDecoder(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if "embed" in name:
                nn.init.normal_(p, std=0.1)
            elif "weight_hh" in name or name.endswith("w_hh.weight"):
                for chunk in p.data.chunk(3, dim=0):  # one orthogonal matrix per gate
                    nn.init.orthogonal_(chunk)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.encoder.embed.weight[PAD].zero_()
            self.decoder.embed.weight[PAD].zero_()

    def load_embeddings(self, src: Tensor | None, tgt: Tensor | None, freeze: bool) -> None:
        for table, weights in ((self.encoder.embed, src), (self.decoder.embed, tgt)):
            if weights is not None:
                if weights.shape != table.weight.shape:
                    raise ValueError(f"pretrained embeddings {tuple(weights.shape)} do not fit "
                                     f"{tuple(table.weight.shape)}")
                table.weight.data.copy_(weights)
                table.weight.requires_grad_(not freeze)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory, final = self.encoder(src, src_len)
        return memory, self.decoder.init_state(final), src != PAD

    def forward(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, S], tgt [B, T] (<s> ... </s>) -> logits [B, T-1, V] predicting tgt[:, 1:]."""
        memory, s, mask = self.encode(src, src_len)
        return self.decoder(tgt[:, :-1], s, memory, mask)

    def loss(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> tuple[Tensor, int]:
        """Summed token cross-entropy over non-pad targets, and the number of those targets."""
        logits, _ = self(src, src_len, tgt)
        gold = tgt[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), gold.reshape(-1),
                               ignore_index=PAD, reduction="sum")
        return loss, int((gold != PAD).sum())

    @torch.no_grad()
    def greedy(self, src: Tensor, src_len: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Batched greedy decoding -> tokens [B, <=max_len] (after <s>), attention [B, T, S]."""
        memory, s, mask = self.encode(src, src_len)
        dec = self.decoder
        keys = dec.key(memory)
        y = torch.full((src.size(0),), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        tokens, weights = [], []
        for _ in range(max_len):
            emb = dec.embed(y)
            ctx, w = dec.attend(s, keys, memory, mask)
            s = dec.cell(dec.w_emb(emb), ctx, s)
            y = dec.logits(s, ctx, emb).argmax(-1).masked_fill(done, PAD)
            tokens.append(y)
            weights.append(w)
            done |= y == EOS
            if bool(done.all()):
                break
        return torch.stack(tokens, 1), torch.stack(weights, 1)


def strip_ids(row: list[int]) -> list[int]:
    """Token ids up to (not including) the first </s>, without padding."""
    out = []
    for t in row:
        if t == EOS:
            break
        if t != PAD:
            out.append(t)
    return out
