"""RNN encoder–decoders: GRU or LSTM, any depth, with no attention, Bahdanau or Luong attention.

Encoder: embeddings -> (bi)directional GRU/LSTM over packed sequences -> annotations [B, S, H]
(H/2 per direction when bidirectional); a bridge maps its final states to the decoder's.

Decoders, by ``attention``:
* ``none`` (Sutskever/Cho): one context vector c (the bridged final state) fed at every step.
* ``bahdanau``: attend with s_{t-1}, feed [y_{t-1}; context_t] to the RNN, predict from
  tanh(W [s_t; context_t; y_{t-1}]).
* ``luong_*``: run the RNN, attend with h_t, h~_t = tanh(W_c [context_t; h_t]), predict from h~_t;
  with ``input_feeding`` h~_{t-1} is fed into step t (Luong et al. 2015, section 3.3).

Speed: decoders that do not need a step loop (``none``, Luong without input feeding) run the whole
target sequence through cuDNN/MKL in one call. The others keep only the truly sequential work in
the loop: attention keys, the embedding part of the input gates and the whole output layer
(pre-output, vocabulary projection, loss) are computed for all positions at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.models.attention import Attention
from pipeline.models.base import Seq2SeqBase
from pipeline.tokens import PAD


@dataclass(frozen=True)
class RNNConfig:
    src_vocab: int
    tgt_vocab: int
    emb_dim: int
    hidden: int  # decoder state and annotation size (hidden/2 per direction of a bidirectional encoder)
    dropout: float
    cell: str  # gru | lstm
    layers: int
    bidirectional: bool
    attention: str  # none | bahdanau | luong_dot | luong_general | luong_concat
    input_feeding: bool  # luong_*: feed the attentional state h~ back into the next step


RNN = {"gru": nn.GRU, "lstm": nn.LSTM}
GATES = {"gru": 3, "lstm": 4}


class StackedCell(nn.Module):
    """GRU/LSTM cells, ``layers`` deep, written out so the embedding half of the first layer's input
    gates can be computed for all positions at once (``w_emb``), outside the time loop."""

    def __init__(self, cell: str, emb: int, extra: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        g = GATES[cell]
        self.cell, self.hidden = cell, hidden
        self.w_emb = nn.Linear(emb, g * hidden)
        self.w_extra = nn.Linear(extra, g * hidden, bias=False) if extra else None
        self.w_ih = nn.ModuleList(nn.Linear(hidden, g * hidden) for _ in range(layers - 1))
        self.w_hh = nn.ModuleList(nn.Linear(hidden, g * hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: nn.Linear) -> tuple[Tensor, Tensor | None]:
        gh = w_hh(h)
        if self.cell == "gru":
            i_r, i_z, i_n = gi.chunk(3, -1)
            h_r, h_z, h_n = gh.chunk(3, -1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            return (1 - z) * torch.tanh(i_n + r * h_n) + z * h, None
        i, f, g, o = (gi + gh).chunk(4, -1)
        assert c is not None
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, gi_emb: Tensor, extra: Tensor | None, h: list[Tensor], c: list[Tensor] | None
                ) -> tuple[list[Tensor], list[Tensor] | None]:
        """One step. gi_emb [B, G*H] = w_emb(y_{t-1}); extra [B, X]; h, c: per layer [B, H]."""
        gi = gi_emb if self.w_extra is None or extra is None else gi_emb + self.w_extra(extra)
        new_h, new_c = [], [] if c is not None else None
        for layer in range(len(h)):
            if layer:
                gi = self.w_ih[layer - 1](self.dropout(new_h[-1]))
            hl, cl = self._cell(gi, h[layer], c[layer] if c is not None else None, self.w_hh[layer])
            new_h.append(hl)
            if new_c is not None:
                new_c.append(cl)
        return new_h, new_c


class RNNSeq2Seq(Seq2SeqBase):
    arch = "rnn"

    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.cfg = cfg
        H, E = cfg.hidden, cfg.emb_dim
        self.src_embed = nn.Embedding(cfg.src_vocab, E, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab, E, padding_idx=PAD)
        self.encoder = RNN[cfg.cell](E, H // 2 if cfg.bidirectional else H, cfg.layers, batch_first=True,
                                     bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.bridge = nn.Linear(H, H)
        self.luong = cfg.attention.startswith("luong")
        self.stepwise = cfg.attention == "bahdanau" or (self.luong and cfg.input_feeding)
        if cfg.attention != "none":
            self.attention = Attention(cfg.attention, H)
        extra = 0 if self.luong and not cfg.input_feeding else H  # context, c, or h~ fed with y_{t-1}
        if self.stepwise:
            self.decoder = StackedCell(cfg.cell, E, extra, H, cfg.layers, cfg.dropout)
        else:
            self.decoder = RNN[cfg.cell](E + extra, H, cfg.layers, batch_first=True,
                                         dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        if self.luong:
            self.combine = nn.Linear(2 * H, H, bias=False)  # h~ = tanh(W_c [context; h])
        else:
            self.pre_output = nn.Linear(2 * H + E, H)  # tanh(W [s; context; y_prev])
        self.out = nn.Linear(H, cfg.tgt_vocab)
        self.dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if "embed" in name:
                nn.init.normal_(p, std=0.1)
            elif "weight_hh" in name or (".w_hh." in name and name.endswith("weight")):
                for gate in p.data.chunk(GATES[self.cfg.cell], dim=0):
                    nn.init.orthogonal_(gate)  # recurrent weights: orthogonal per gate
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.src_embed.weight[PAD].zero_()
            self.tgt_embed.weight[PAD].zero_()

    # --- encoder ---------------------------------------------------------------------------------

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        x = self.dropout(self.src_embed(src))
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # [B, S, H]
        finals = final if isinstance(final, tuple) else (final,)  # (h,) or (h, c): [layers*dirs, B, H/dirs]
        bridged = []
        for f in finals:
            if self.cfg.bidirectional:
                f = f.view(self.cfg.layers, 2, *f.shape[1:]).transpose(1, 2).flatten(2)  # [layers, B, H]
            bridged.append(torch.tanh(self.bridge(f)).transpose(0, 1))  # [B, layers, H]
        mem = {"memory": memory, "mask": src != PAD, "h0": bridged[0]}
        if self.cfg.cell == "lstm":
            mem["c0"] = bridged[1]
        if self.cfg.attention != "none":
            mem["keys"] = self.attention.keys(memory)
        return mem

    # --- decoding, one step at a time ---------------------------------------------------------------

    def start(self, memory: dict) -> dict:
        state = {"h": memory["h0"]}  # [B, layers, H]
        if "c0" in memory:
            state["c"] = memory["c0"]
        if self.luong and self.cfg.input_feeding:
            state["feed"] = torch.zeros_like(memory["h0"][:, 0])
        return state

    def _attend(self, query: Tensor, memory: dict) -> tuple[Tensor, Tensor]:
        return self.attention(query, memory["keys"], memory["memory"], memory["mask"])

    def _hidden(self, top: Tensor, context: Tensor, emb: Tensor) -> tuple[Tensor, Tensor | None]:
        """What the output layer reads, for any number of positions; and h~ (Luong)."""
        if self.luong:
            attentional = torch.tanh(self.combine(torch.cat([context, top], -1)))
            return self.dropout(attentional), attentional
        return self.dropout(torch.tanh(self.pre_output(torch.cat([top, context, emb], -1)))), None

    def step(self, y_prev: Tensor, state: dict, memory: dict, need_weights: bool = True
             ) -> tuple[Tensor, dict, Tensor | None]:
        emb = self.dropout(self.tgt_embed(y_prev))  # [B, E]; dropped as in forward (scheduled sampling trains here)
        h = list(state["h"].unbind(1))
        c = list(state["c"].unbind(1)) if "c" in state else None
        weights = None
        if self.stepwise:
            if self.cfg.attention == "bahdanau":
                context, weights = self._attend(h[-1], memory)
                h, c = self.decoder(self.decoder.w_emb(emb), context, h, c)
            else:
                h, c = self.decoder(self.decoder.w_emb(emb), state["feed"], h, c)
                context, weights = self._attend(h[-1], memory)
            top = h[-1]
        else:
            fixed = memory["h0"][:, -1] if self.cfg.attention == "none" else None
            x = emb if fixed is None else torch.cat([emb, fixed], -1)
            hx = torch.stack(h, 0) if c is None else (torch.stack(h, 0), torch.stack(c, 0))
            out, hx = self.decoder(x.unsqueeze(1), hx)
            top = out[:, 0]
            h_all, c_all = (hx, None) if c is None else hx
            h, c = list(h_all.unbind(0)), (list(c_all.unbind(0)) if c_all is not None else None)
            context, weights = (fixed, None) if fixed is not None else self._attend(top, memory)
        hidden, attentional = self._hidden(top, context, emb)
        logits = self.out(hidden)
        new = {"h": torch.stack(h, 1)}
        if c is not None:
            new["c"] = torch.stack(c, 1)
        if attentional is not None and "feed" in state:
            new["feed"] = attentional
        return logits, new, weights

    # --- teacher forcing: all positions --------------------------------------------------------------

    def features(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        memory = self.encode(src, src_len)
        emb = self.dropout(self.tgt_embed(tgt_in))  # [B, T, E]
        state = self.start(memory)
        if not self.stepwise:
            fixed = memory["h0"][:, -1] if self.cfg.attention == "none" else None
            x = emb if fixed is None else torch.cat([emb, fixed.unsqueeze(1).expand(-1, emb.size(1), -1)], -1)
            h0 = state["h"].transpose(0, 1).contiguous()
            hx = h0 if "c" not in state else (h0, state["c"].transpose(0, 1).contiguous())
            tops, _ = self.decoder(x, hx)  # [B, T, H]
            if fixed is not None:
                context, weights = fixed.unsqueeze(1).expand_as(tops), None
            else:
                context, weights = self._attend(tops, memory)
            return self._hidden(tops, context, emb)[0], weights

        gi_emb = self.decoder.w_emb(emb)  # [B, T, G*H], for every position at once
        h = list(state["h"].unbind(1))
        c = list(state["c"].unbind(1)) if "c" in state else None
        feed = state.get("feed")
        tops, contexts, weights = [], [], []
        for t in range(tgt_in.size(1)):
            if self.cfg.attention == "bahdanau":
                context, w = self._attend(h[-1], memory)
                h, c = self.decoder(gi_emb[:, t], context, h, c)
                tops.append(h[-1])
                contexts.append(context)
            else:  # Luong with input feeding: h~_t is needed before step t+1
                h, c = self.decoder(gi_emb[:, t], feed, h, c)
                context, w = self._attend(h[-1], memory)
                feed = torch.tanh(self.combine(torch.cat([context, h[-1]], -1)))
                tops.append(feed)
            weights.append(w)
        if self.luong:
            return self.dropout(torch.stack(tops, 1)), torch.stack(weights, 1)
        hidden, _ = self._hidden(torch.stack(tops, 1), torch.stack(contexts, 1), emb)
        return hidden, torch.stack(weights, 1)
