import json

import numpy as np
import pytest

from pipeline.common import PipelineError
from pipeline.config import Paths, Tokenize, load_params
from pipeline.dataset import load_split, padding_ratio, token_batches
from pipeline.stages import tokenizer
from pipeline.stages.tokenizer import train_tokenizer, unknown_rate
from pipeline.tokens import BOS, EOS, PAD, UNK, load_tokenizers
from tests.conftest import write_params


def test_tokenizers_round_trip(tiny_project):
    _, paths = tiny_project
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    examples = ((src_tok, "나는 어제 도서관에서 책을 읽었다."), (tgt_tok, "I read a book at the library yesterday."))
    for tok, text in examples:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
        assert tok.token_to_id("<pad>") == PAD and tok.token_to_id("</s>") == EOS
    assert src_tok.get_vocab() != tgt_tok.get_vocab()  # separate vocabularies by default


def test_joint_vocabulary(tmp_path, tiny_project):
    _params, paths = tiny_project
    joint = load_params(write_params(tmp_path, {"tokenize": {"joint": True}}))
    out = Paths(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clean").symlink_to(paths.clean)
    tokenizer.run(joint, out)
    assert (out.tokenizer / "src.json").read_text() == (out.tokenizer / "tgt.json").read_text()


def test_embeddings_fit_the_vocabularies(tiny_project):
    params, paths = tiny_project
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    for side, tok in (("src", src_tok), ("tgt", tgt_tok)):
        m = np.load(paths.embeddings / f"{side}.npy")
        assert m.shape == (tok.get_vocab_size(), params.embed.dim) and m.dtype == np.float32
        assert not m[PAD].any() and np.isfinite(m).all()


def test_shards_match_clean_splits(tiny_project):
    _params, paths = tiny_project
    meta = json.loads((paths.dataset / "meta.json").read_text())
    for split in ("train", "valid", "test"):
        lines = (paths.clean / f"{split}.en").read_text(encoding="utf-8").splitlines()
        data = load_split(paths.dataset, split)
        assert len(data) == meta["splits"][split]["pairs"] == len(lines)
        assert (data.tgt[data.tgt_off[:-1]] == BOS).all()
        assert (data.tgt[data.tgt_off[1:] - 1] == EOS).all() and (data.src[data.src_off[1:] - 1] == EOS).all()
        for shard in (paths.dataset / split).glob("bucket-*.npz"):
            bound = int(shard.stem.split("-")[1])
            z = np.load(shard)
            assert np.maximum(z["src_len"], z["tgt_len"]).max() <= bound
    train = meta["splits"]["train"]
    assert train["padding_ratio"] < train["padding_ratio_unbucketed"]


def test_token_batches_cover_everything_within_budget():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(2, 60, 5000).astype(np.int32), rng.integers(2, 60, 5000).astype(np.int32)
    batches = token_batches(src, tgt, 800, seed=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    for b in batches:
        assert len(b) * int(max(src[b].max(), tgt[b].max())) <= 800
    again = token_batches(src, tgt, 800, seed=3)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(batches, token_batches(src, tgt, 800, seed=4),
                                                                 strict=False))
    sorted_ratio = padding_ratio(src, tgt, batches)
    random_ratio = padding_ratio(src, tgt, np.array_split(rng.permutation(5000), len(batches)))
    assert sorted_ratio < random_ratio / 2


def test_oversized_pair_gets_its_own_batch():
    batches = token_batches(np.array([3, 500, 3]), np.array([3, 3, 3]), 100)
    assert sorted(len(b) for b in batches) == [1, 2]


def test_batch_padding(tiny_project):
    _, paths = tiny_project
    data = load_split(paths.dataset, "valid")
    idx = np.array([0, len(data) - 1])
    b = data.batch(idx)
    assert b["src"].shape == (2, int(data.src_len[idx].max()))
    for row, i in enumerate(idx):
        n = int(data.src_len[i])
        assert b["src"][row, :n].tolist() == data.src[data.src_off[i]:data.src_off[i + 1]].tolist()
        assert (b["src"][row, n:] == PAD).all()


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_byte_fallback_round_trips_unseen_characters(model):
    from pipeline.corpora.sample_ko_en import generate

    korean = [k for k, _ in generate(3000, seed=1)]
    plain = train_tokenizer(iter(korean), Tokenize(model=model, vocab_size=900))
    fallback = train_tokenizer(iter(korean), Tokenize(model=model, vocab_size=900, byte_fallback=True))
    unseen = "뷁 쀍 😀 도서관에서 end."
    assert UNK in plain.encode(unseen).ids and plain.decode(plain.encode(unseen).ids) != unseen
    assert UNK not in fallback.encode(unseen).ids and fallback.decode(fallback.encode(unseen).ids) == unseen
    assert fallback.get_vocab_size() == 900
    assert unknown_rate(plain, [unseen])[0] > 0 and unknown_rate(fallback, [unseen])[0] == 0


def test_too_small_vocabulary_is_a_clear_error():
    with pytest.raises(PipelineError, match="raise tokenize.vocab_size"):
        hangul_300 = "".join(chr(0xAC00 + i) for i in range(300))
        train_tokenizer(iter([hangul_300] * 10), Tokenize(model="unigram", vocab_size=100))


def test_tokenize_reports_unknown_rate(tiny_project):
    _, paths = tiny_project
    report = json.loads((paths.metrics / "tokenize.json").read_text())
    assert 0 <= report["src_unk_rate"] < 0.01 and report["tgt_tokens_per_sentence"] > 5
