import torch

from pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig, strip_ids
from pipeline.tokenize import BOS, EOS, PAD


def _batch(seqs_src, seqs_tgt):
    S, T = max(map(len, seqs_src)), max(map(len, seqs_tgt))
    src = torch.tensor([s + [PAD] * (S - len(s)) for s in seqs_src])
    tgt = torch.tensor([t + [PAD] * (T - len(t)) for t in seqs_tgt])
    return src, torch.tensor([len(s) for s in seqs_src]), tgt


def test_overfits_a_tiny_batch_and_greedy_reproduces_it():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    srcs = [[*torch.randint(4, 30, (n,), generator=g).tolist(), EOS] for n in (5, 7, 3, 6)]
    tgts = [[BOS, *list(reversed(s[:-1])), EOS] for s in srcs]  # learn to reverse
    src, src_len, tgt = _batch(srcs, tgts)
    model = Seq2Seq(Seq2SeqConfig(30, 30, emb_dim=32, hidden=64, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss, n = model.loss(src, src_len, tgt)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    assert (loss / n).item() < 0.01
    model.eval()
    out, attn = model.greedy(src, src_len, max_len=12)
    assert [strip_ids(r) for r in out.tolist()] == [t[1:-1] for t in tgts]
    assert attn.shape[0] == 4 and attn.shape[2] == src.shape[1]


def test_padding_does_not_change_the_result():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(20, 20, emb_dim=8, hidden=16, dropout=0.0)).eval()
    short, long = [5, 6, 7, EOS], [5, 6, 7, 8, 9, 10, 11, EOS]
    tgt = [BOS, 4, 5, EOS]
    alone_logits, _alone_attn = model(*_batch([short], [tgt]))
    both_logits, both_attn = model(*_batch([short, long], [tgt, [*tgt, 6, 7]]))
    torch.testing.assert_close(alone_logits[0], both_logits[0, :3], atol=1e-5, rtol=1e-5)
    assert both_attn[0, :, len(short):].abs().max() == 0  # no attention on padding
    torch.testing.assert_close(both_attn.sum(-1), torch.ones_like(both_attn.sum(-1)))


def test_padding_targets_are_ignored_by_the_loss():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(20, 20, emb_dim=8, hidden=16, dropout=0.0))
    src, src_len, tgt = _batch([[5, 6, EOS]], [[BOS, 4, EOS]])
    loss, n = model.loss(src, src_len, tgt)
    padded = torch.cat([tgt, torch.full((1, 3), PAD)], dim=1)
    loss_padded, n_padded = model.loss(src, src_len, padded)
    assert n == n_padded == 2
    torch.testing.assert_close(loss, loss_padded)


def test_pretrained_embeddings_load_and_freeze():
    model = Seq2Seq(Seq2SeqConfig(10, 12, emb_dim=4, hidden=8))
    src, tgt = torch.randn(10, 4), torch.randn(12, 4)
    model.load_embeddings(src, tgt, freeze=True)
    assert torch.equal(model.encoder.embed.weight, src) and not model.decoder.embed.weight.requires_grad
