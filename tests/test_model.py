import itertools

import pytest
import torch

from pipeline.inference.search import beam_search, greedy
from pipeline.models import build_model
from pipeline.models import loss as loss_module
from pipeline.tokens import BOS, EOS, PAD, strip_ids

RNN_VARIANTS = [dict(cell=c, attention=a, layers=layers, bidirectional=bi, input_feeding=feed)
                for c, a, (layers, bi), feed in itertools.product(
                    ["gru", "lstm"], ["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"],
                    [(1, True), (2, False)], [True, False])
                if feed or a.startswith("luong")]
TRANSFORMERS = [dict(arch="transformer", norm=n, positions=p, tie_embeddings=t)
                for n, p, t in [("pre", "sinusoidal", False), ("post", "learned", True)]]


def _batch(seqs_src, seqs_tgt):
    S, T = max(map(len, seqs_src)), max(map(len, seqs_tgt))
    src = torch.tensor([s + [PAD] * (S - len(s)) for s in seqs_src])
    tgt = torch.tensor([t + [PAD] * (T - len(t)) for t in seqs_tgt])
    return src, torch.tensor([len(s) for s in seqs_src]), tgt


RNN_BASE = dict(emb_dim=32, hidden=32, dropout=0.0, cell="gru", layers=1, bidirectional=True, attention="bahdanau",
                input_feeding=True)
TRANSFORMER_BASE = dict(hidden=32, dropout=0.0, heads=4, ff_dim=64, enc_layers=2, dec_layers=2, positions="sinusoidal",
                        norm="pre", tie_embeddings=False, max_positions=512, joint_vocab=False)


def _model(vocab=30, arch="rnn", **kw):
    base = TRANSFORMER_BASE if arch == "transformer" else RNN_BASE
    return build_model(arch, src_vocab=vocab, tgt_vocab=vocab, **{**base, **kw})


def _id(kw):
    return "-".join(str(v) for v in kw.values())


# three variants stay in the fast subset (pytest -m "not slow"); CI runs them all
FAST = ("gru-bahdanau-1-True-True", "lstm-luong_general-2-False-True", "transformer-pre-sinusoidal-False")
VARIANTS = [pytest.param(kw, id=_id(kw), marks=() if _id(kw) in FAST else pytest.mark.slow)
            for kw in RNN_VARIANTS + TRANSFORMERS]


@pytest.mark.parametrize("kw", VARIANTS)
def test_every_variant_overfits_a_tiny_batch_and_decodes_it(kw):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    srcs = [[*torch.randint(4, 30, (n,), generator=g).tolist(), EOS] for n in (5, 7, 3, 6)]
    tgts = [[BOS, *reversed(s[:-1]), EOS] for s in srcs]  # learn to reverse
    src, src_len, tgt = _batch(srcs, tgts)
    model = _model(**kw)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2 if kw.get("arch") != "transformer" else 5e-3)
    for _ in range(60):  # the slowest variant is at loss 0.012 by then (0.004 at 120 steps), all decode exactly
        loss, _, n = model.loss(src, src_len, tgt)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    assert (loss / n).item() < 0.05
    model.eval()
    expected = [t[1:-1] for t in tgts]
    out, _ = greedy(model, src, src_len, max_len=12)
    assert [strip_ids(r) for r in out.tolist()] == expected
    out, attn = beam_search(model, src, src_len, max_len=12, beam=3, alpha=1.0)
    assert [strip_ids(r) for r in out.tolist()] == expected
    if kw.get("attention", "x") != "none":
        assert attn is not None and attn.shape[0] == 4 and attn.shape[2] == src.shape[1]


@pytest.mark.parametrize("kw", [dict(attention="bahdanau"), dict(attention="luong_general", cell="lstm"),
                                dict(attention="luong_dot", input_feeding=False), *TRANSFORMERS], ids=_id)
def test_padding_does_not_change_the_result(kw):
    torch.manual_seed(0)
    model = _model(vocab=20, **kw).eval()
    short, long = [5, 6, 7, EOS], [5, 6, 7, 8, 9, 10, 11, EOS]
    tgt = [BOS, 4, 5, EOS]
    alone, _ = model(*_batch([short], [tgt[:-1]]))
    both, _ = model(*_batch([short, long], [tgt[:-1], [*tgt, 6]]))
    torch.testing.assert_close(alone[0], both[0, :3], atol=1e-5, rtol=1e-4)
    memory = model.encode(*_batch([short, long], [tgt, tgt])[:2])
    _, _, weights = model.step(torch.tensor([BOS, BOS]), model.start(memory), memory)
    assert weights[0, len(short):].abs().max() == 0  # no attention on padding
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


def test_step_matches_teacher_forcing():
    torch.manual_seed(0)
    for kw in [dict(attention="bahdanau", layers=2), dict(attention="luong_concat", cell="lstm"),
               dict(attention="none"), TRANSFORMERS[0]]:
        model = _model(vocab=20, **kw).eval()
        src, src_len, tgt = _batch([[5, 6, 7, EOS]], [[BOS, 4, 9, 5, EOS]])
        full, _ = model(src, src_len, tgt)
        memory = model.encode(src, src_len)
        state = model.start(memory)
        for t in range(tgt.size(1)):
            logits, state, _ = model.step(tgt[:, t], state, memory)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-4)


def test_recomputed_transformer_layers_give_the_same_loss_and_gradients():
    # dropout on: the recomputation must replay the same masks (the RNG state saved and restored around it)
    src, src_len, tgt = _batch([[5, 6, 7, 8, EOS], [9, 4, EOS]], [[BOS, 4, 9, 5, EOS], [BOS, 7, EOS]])
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = _model(vocab=20, arch="transformer", dropout=0.3).train()
        model.recompute_layers = recompute
        loss = model.loss(src, src_len, tgt, label_smoothing=0.1)[0]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((loss.detach(), grads, torch.rand(1)))  # the last: where the global RNG stream went on
    (loss, grads, after), (loss_r, grads_r, after_r) = results
    torch.testing.assert_close(loss_r, loss, rtol=0, atol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_r[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(after_r, after, rtol=0, atol=0)


def test_padding_targets_are_ignored_and_label_smoothing_mixes_in_the_uniform_loss():
    torch.manual_seed(0)
    model = _model(vocab=20).eval()
    src, src_len, tgt = _batch([[5, 6, EOS]], [[BOS, 4, EOS]])
    loss, nll, n = model.loss(src, src_len, tgt)
    padded = torch.cat([tgt, torch.full((1, 3), PAD)], dim=1)
    loss_p, _, n_p = model.loss(src, src_len, padded)
    assert n == n_p == 2
    torch.testing.assert_close(loss, loss_p)
    smooth, nll_s, _ = model.loss(src, src_len, tgt, label_smoothing=0.1)
    torch.testing.assert_close(nll, nll_s)
    # (1 - eps) * NLL + eps * (mean over the vocabulary of -log p), summed over the 2 target tokens
    logp = torch.log_softmax(model(src, src_len, tgt[:, :-1])[0], -1)[0]
    expected = 0.9 * nll + 0.1 * (-logp.mean(-1)).sum()
    torch.testing.assert_close(smooth, expected)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("chunk", [3, 2048], ids=["chunked", "one-chunk"])
def test_the_fused_output_loss_matches_cross_entropy_in_value_and_gradients(monkeypatch, autocast, chunk):
    monkeypatch.setattr(loss_module, "CHUNK", chunk)
    torch.manual_seed(0)
    hidden = torch.randn(11, 16, requires_grad=True)
    weight, bias = torch.randn(40, 16, requires_grad=True), torch.randn(40, requires_grad=True)
    gold = torch.randint(PAD + 1, 40, (11,))
    gold[[2, 7]] = PAD
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        features = hidden.to(autocast or hidden.dtype)  # in the autocast dtype, as a decoder's output is
        fused, nll = loss_module.linear_cross_entropy(features, weight, bias, gold, 0.1)
        logits = torch.nn.functional.linear(features, weight, bias).float()
    (2.5 * fused).backward()  # a scale on the loss reaches every gradient
    fused_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    plain = torch.nn.functional.cross_entropy(logits, gold, ignore_index=PAD, label_smoothing=0.1, reduction="sum")
    (2.5 * plain).backward()
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else {}
    torch.testing.assert_close(fused, plain.detach(), **tol)
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(logits, gold, ignore_index=PAD,
                                                                      reduction="sum").detach(), **tol)
    for mine, theirs in zip(fused_grads, (hidden.grad, weight.grad, bias.grad), strict=True):
        torch.testing.assert_close(mine, theirs, **tol)
    with torch.no_grad():  # validation's path computes the same loss without keeping gradients
        torch.testing.assert_close(loss_module.linear_cross_entropy(hidden, weight, bias, gold, 0.1)[0],
                                   plain.detach(), **(tol or dict(rtol=1e-5, atol=1e-4)))


def test_the_fused_output_loss_keeps_small_fp16_gradients_until_the_loss_scale():
    """Under fp16 autocast the gradient of the features is multiplied by the loss scale only in backward:
    kept in fp16 before that, gradients under fp16's smallest normal (6e-5) would lose their precision."""
    torch.manual_seed(0)
    hidden = torch.randn(4, 8, dtype=torch.float16, requires_grad=True)
    weight = (1e-6 * torch.randn(32000, 8)).requires_grad_()  # tiny weights: tiny gradients of the features
    gold = torch.randint(PAD + 1, 32000, (4,))
    with torch.autocast("cpu", dtype=torch.float16):
        fused, _ = loss_module.linear_cross_entropy(hidden, weight, None, gold, 0.0)
    (65536.0 * fused).backward()
    with torch.autocast("cpu", enabled=False):
        logits = torch.nn.functional.linear(hidden.float(), weight)
        expected, = torch.autograd.grad(65536.0 * torch.nn.functional.cross_entropy(logits, gold, reduction="sum"),
                                        hidden)
    torch.testing.assert_close(hidden.grad.float(), expected.float(), rtol=1e-2, atol=1e-6)


def test_scheduled_sampling_feeds_predictions():
    torch.manual_seed(0)
    model = _model(vocab=20).eval()
    src, src_len, tgt = _batch([[5, 6, EOS]], [[BOS, 4, 9, 5, EOS]])
    forced, _ = model(src, src_len, tgt[:, :-1])
    torch.testing.assert_close(model.sampled_logits(src, src_len, tgt[:, :-1], 1.0), forced, atol=1e-5, rtol=1e-4)
    sampled = model.sampled_logits(src, src_len, tgt[:, :-1], 0.0)
    assert not torch.allclose(sampled[:, 1:], forced[:, 1:])  # fed its own argmax, not the gold token


def test_beam_search_finds_a_better_sequence_than_greedy():
    torch.manual_seed(3)
    model = _model(vocab=12, attention="bahdanau").eval()
    src, src_len, _ = _batch([[5, 6, 7, EOS], [8, 9, EOS]], [[BOS, EOS], [BOS, EOS]])

    def logprob(tokens):
        seq = torch.cat([torch.full((tokens.size(0), 1), BOS), tokens], 1)
        logits, _ = model(src, src_len, seq[:, :-1])
        lp = torch.log_softmax(logits, -1).gather(-1, seq[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (lp * (seq[:, 1:] != PAD)).sum(-1)

    g, _ = greedy(model, src, src_len, max_len=6)
    b, _ = beam_search(model, src, src_len, max_len=6, beam=8, alpha=0.0)
    assert (logprob(b) >= logprob(g) - 1e-4).all()


def test_pretrained_embeddings_load_and_freeze():
    model = _model(vocab=10)
    src, tgt = torch.randn(10, 32), torch.randn(10, 32)
    model.load_embeddings(src, tgt, freeze=True)
    assert torch.equal(model.src_embed.weight, src) and not model.tgt_embed.weight.requires_grad
