"""Beam search that cannot lose its best finished hypothesis, checked against hand-built and brute-force
cases; and incremental (cached) Transformer decoding against the uncached one."""

import itertools
import math

import pytest
import torch
from torch import Tensor

from pipeline.inference.search import beam_search, greedy, length_penalty
from pipeline.models import build_model
from pipeline.models.base import Seq2SeqBase
from pipeline.tokens import BOS, EOS, PAD, strip_ids
from tests.test_model import TRANSFORMER_BASE, _batch, _model

A, B_ = 4, 5  # two ordinary tokens
V = 6


class TableModel(Seq2SeqBase):
    """A model whose next-token log-probabilities are a fixed function of the prefix (no source)."""

    arch = "table"

    def __init__(self, table):
        super().__init__()
        self.table = table  # prefix tuple -> {token: probability}; unlisted prefixes end at once

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        return {"mask": src != PAD}

    def start(self, memory: dict) -> dict:
        return {"prefix": memory["mask"].new_zeros((memory["mask"].size(0), 0), dtype=torch.long)}

    def step(self, y_prev: Tensor, state: dict, memory: dict, need_weights: bool = True):
        prefix = torch.cat([state["prefix"], y_prev.unsqueeze(1)], 1)
        logits = torch.full((prefix.size(0), V), -1e9)
        for i, row in enumerate(prefix.tolist()):
            for token, p in self.table.get(tuple(row[1:]), {EOS: 1.0}).items():
                if p > 0:
                    logits[i, token] = math.log(p)  # normalised already, so log_softmax keeps these values
        return logits, {"prefix": prefix}, None


def _decode(model, beam, alpha=0.0, max_len=4):
    src, src_len, _ = _batch([[A, EOS]], [[BOS, EOS]])
    out, _ = beam_search(model, src, src_len, max_len=max_len, beam=beam, alpha=alpha)
    return strip_ids(out[0].tolist()), out[0].tolist()


def test_a_finished_hypothesis_is_never_pushed_out_by_live_ones():
    # the example, beam 2, alpha 0: step 1 gives [A] -0.36 and [</s>] -1.20; both continuations
    # of A score -1.06 after step 2 and every later ending falls below -1.20. The old search let the two
    # continuations take both slots, lost [</s>], and returned a hypothesis cut at the length limit.
    p_end = math.exp(-1.20)
    table = {(): {A: math.exp(-0.36), EOS: p_end, B_: 1 - math.exp(-0.36) - p_end},
             (A,): {A: math.exp(-0.70), B_: math.exp(-0.70), EOS: 1 - 2 * math.exp(-0.70)},
             (A, A): {A: 0.5, B_: 0.5}, (A, B_): {A: 0.5, B_: 0.5}}
    for prefix in itertools.product((A, B_), repeat=3):
        table[(A, *prefix[1:])] = table.get((A, *prefix[1:]), {A: 0.5, B_: 0.5})
    tokens, raw = _decode(TableModel(table), beam=2, max_len=4)
    assert tokens == [] and raw[0] == EOS  # the empty translation, -1.20, beats everything that went on


def _exhaustive_best(table, max_len, alpha):
    """The best complete hypothesis by enumerating every sequence (ending in </s>) up to max_len."""
    best, best_seq = -math.inf, None
    for n in range(max_len):
        for body in itertools.product((A, B_), repeat=n):
            seq, logp = (*body, EOS), 0.0
            for t, token in enumerate(seq):
                p = table.get(tuple(seq[:t]), {EOS: 1.0}).get(token, 0.0)
                logp = logp + math.log(p) if p > 0 else -math.inf
            score = logp / length_penalty(len(seq), alpha)
            if score > best:
                best, best_seq = score, list(body)
    return best_seq


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_beam_as_wide_as_every_sequence_finds_the_exhaustive_best(seed, alpha):
    rng = torch.Generator().manual_seed(seed)
    max_len = 3
    table = {}
    for n in range(max_len):
        for prefix in itertools.product((A, B_, EOS), repeat=n):
            if EOS in prefix:
                continue
            p = torch.rand(3, generator=rng)
            p = p / p.sum()
            table[prefix] = dict(zip((A, B_, EOS), p.tolist(), strict=True))
    tokens, _ = _decode(TableModel(table), beam=V ** max_len, alpha=alpha, max_len=max_len)
    assert tokens == _exhaustive_best(table, max_len, alpha)


def test_beam_never_scores_below_greedy_on_random_models():
    for seed in range(6):
        torch.manual_seed(seed)
        model = _model(vocab=12, attention="bahdanau").eval()
        src, src_len, _ = _batch([[5, 6, 7, EOS], [8, 9, EOS], [10, 11, 5, 6, 7, EOS]], [[BOS, EOS]] * 3)

        def logprob(tokens, model=model, src=src, src_len=src_len):
            seq = torch.cat([torch.full((tokens.size(0), 1), BOS), tokens], 1)
            logits, _ = model(src, src_len, seq[:, :-1])
            lp = torch.log_softmax(logits, -1).gather(-1, seq[:, 1:].unsqueeze(-1)).squeeze(-1)
            return (lp * (seq[:, 1:] != PAD)).sum(-1)

        g, _ = greedy(model, src, src_len, max_len=8)
        b, _ = beam_search(model, src, src_len, max_len=8, beam=6, alpha=0.0)
        assert (logprob(b) >= logprob(g) - 1e-4).all()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_and_uncached_transformer_decoding_agree(norm):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = _model(vocab=30, arch="transformer", norm=norm)
    srcs = [[*torch.randint(4, 30, (n,), generator=g).tolist(), EOS] for n in (5, 7, 3, 6)]
    tgts = [[BOS, *reversed(s[:-1]), EOS] for s in srcs]
    src, src_len, tgt = _batch(srcs, tgts)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):  # partly trained: confident enough to matter, not a trivial copy
        loss, _, n = model.loss(src, src_len, tgt)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    model.eval()
    for search in (lambda: greedy(model, src, src_len, 12),
                   lambda: beam_search(model, src, src_len, 12, beam=4, alpha=1.0)):
        model.incremental = True
        cached, cached_attn = search()
        model.incremental = False
        uncached, uncached_attn = search()
        assert cached.tolist() == uncached.tolist()
        torch.testing.assert_close(cached_attn, uncached_attn, atol=1e-5, rtol=1e-4)


class CountingTable(TableModel):
    steps = 0

    def step(self, y_prev, state, memory, need_weights=True):
        self.steps += 1
        return super().step(y_prev, state, memory, need_weights)


def test_pad_and_bos_are_never_chosen():
    # a model that ranks <pad> and <s> above every word, as an untrained one may
    table = {(): {PAD: 0.5, BOS: 0.3, A: 0.15, EOS: 0.05}, (A,): {PAD: 0.6, BOS: 0.3, B_: 0.05, EOS: 0.05},
             (A, B_): {PAD: 0.9, EOS: 0.1}}
    src, src_len, _ = _batch([[A, EOS]], [[BOS, EOS]])
    for out in (greedy(TableModel(table), src, src_len, 6)[0],
                beam_search(TableModel(table), src, src_len, 6, 3, 0.0)[0]):
        row = out[0].tolist()
        body = row[: row.index(EOS)] if EOS in row else row
        assert PAD not in body and BOS not in body, row


def test_search_stops_once_nothing_can_beat_the_best_finished_hypothesis():
    # </s> first at -0.1; A and B go on forever at -3.0 and below: the answer is known after one step.
    # The old rule waited for `beam` finished hypotheses and decoded to the length limit.
    table = {(): {EOS: 0.9, A: 0.05, B_: 0.05}}
    for n in range(1, 12):
        for prefix in itertools.product((A, B_), repeat=n):
            table[prefix] = {A: 0.5, B_: 0.5}
    model = CountingTable(table)
    tokens, raw = _decode(model, beam=2, max_len=10)
    assert tokens == [] and raw[0] == EOS and model.steps == 1


def test_the_length_limit_never_exceeds_a_transformers_positions(tiny_project):
    from pipeline.decoding import Decoding
    from pipeline.inference.translator import Translator
    from pipeline.text import Preprocessing
    from pipeline.tokens import load_tokenizers

    _, paths = tiny_project
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    torch.manual_seed(0)
    model = build_model("transformer", src_vocab=src_tok.get_vocab_size(), tgt_vocab=tgt_tok.get_vocab_size(),
                        **{**TRANSFORMER_BASE, "max_positions": 16}).eval()
    assert model.max_length() == 16
    translator = Translator(model, src_tok, tgt_tok, Preprocessing(), 128, Decoding(beam_size=2))
    sentence = "나는 어제 도서관에서 책을 읽었다 그녀는 커피를 마셨어요"  # 12+ tokens: 1.5 x 12 + 10 > 16
    assert len(src_tok.encode(sentence).ids) >= 12
    with torch.inference_mode():
        out = translator.translate([sentence, sentence * 3])  # the second is also longer than 16 to read
    assert len(out) == 2  # before: "sequence of 17 tokens exceeds model.max_positions"


def test_rnn_scheduled_sampling_keeps_the_target_embedding_dropout():
    torch.manual_seed(0)
    model = _model(vocab=12, attention="bahdanau").train()
    src, src_len, tgt = _batch([[5, 6, 7, EOS], [8, 9, EOS]], [[BOS, 5, 6, EOS], [BOS, 7, EOS]])
    embedded, dropped = [], []
    model.tgt_embed.register_forward_hook(lambda m, i, out: embedded.append(out))
    model.dropout.register_forward_hook(lambda m, i, out: dropped.append(i[0]))
    model.loss(src, src_len, tgt, teacher_forcing=0.5)  # scheduled sampling: through step()
    assert embedded and all(any(e is d for d in dropped) for e in embedded)


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_an_ensemble_of_a_model_with_itself_decodes_as_the_model(arch):
    from pipeline.inference.ensemble import Ensemble

    torch.manual_seed(3)
    model = _model(arch=arch).eval()
    src, src_len, _ = _batch([[5, 6, 7, EOS], [8, 9, EOS]], [[BOS, EOS]] * 2)
    for beam in (1, 3):
        alone, _ = beam_search(model, src, src_len, max_len=8, beam=beam, alpha=1.0)
        twice, attn = beam_search(Ensemble([model, model]), src, src_len, max_len=8, beam=beam, alpha=1.0)
        assert twice.tolist() == alone.tolist()
        assert attn is not None and attn.shape[:2] == twice.shape


def test_an_ensemble_scores_the_mean_of_its_members_probabilities():
    from pipeline.inference.ensemble import Ensemble

    first = TableModel({(): {A: 0.9, EOS: 0.1}, (A,): {EOS: 1.0}})
    second = TableModel({(): {A: 0.1, B_: 0.6, EOS: 0.3}, (B_,): {EOS: 1.0}})
    ensemble = Ensemble([first, second])
    src, src_len, _ = _batch([[A, EOS]], [[BOS, EOS]])
    memory = ensemble.encode(src, src_len)
    logp, _, weights = ensemble.step(torch.tensor([BOS]), ensemble.start(memory), memory)
    assert torch.exp(logp[0, [A, B_, EOS]]).tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert weights is None  # neither member has attention
    # alone, each picks its own favourite; together A (0.5) beats B (0.3), and A then ends
    assert _decode(ensemble, beam=2)[0] == [A]
    with pytest.raises(ValueError, match="two members or more"):
        Ensemble([first])
