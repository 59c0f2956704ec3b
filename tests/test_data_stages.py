import json

import numpy as np
import pytest

from pipeline import dataset
from pipeline.common import PipelineError
from pipeline.config import Paths, Tokenize, load_params
from pipeline.dataset import (
    BUCKET,
    END,
    FIRST,
    SRC_MAX,
    SRC_TOKENS,
    TGT_MAX,
    TGT_TOKENS,
    batch_padding,
    load_split,
    padding_ratio,
    table_file,
    token_batches,
)
from pipeline.stages import tokenizer
from pipeline.stages.tokenizer import train_tokenizer, unknown_rate
from pipeline.tokens import BOS, EOS, PAD, UNK, load_tokenizers, source_ids, target_ids
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
    _, paths = tiny_project
    meta = json.loads((paths.dataset / "meta.json").read_text())
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    assert meta["dtype"] == "uint16"  # a 400-piece vocabulary: two bytes a token
    for split in ("train", "valid", "test"):
        lines = {lang: (paths.clean / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
                 for lang in ("ko", "en")}
        shards = load_split(paths.dataset, split)
        data = shards.pairs()
        assert len(shards) == len(data) == meta["splits"][split]["pairs"] == len(lines["en"])
        assert (data.tgt[data.tgt_off[:-1]] == BOS).all()
        assert (data.tgt[data.tgt_off[1:] - 1] == EOS).all() and (data.src[data.src_off[1:] - 1] == EOS).all()
        # every clean pair is there once, whatever order the buckets put them in
        written = sorted((tuple(data.src[data.src_off[i]:data.src_off[i + 1]]),
                          tuple(data.tgt[data.tgt_off[i]:data.tgt_off[i + 1]])) for i in range(len(data)))
        encoded = sorted((tuple(source_ids(src_tok.encode(k, add_special_tokens=False).ids)),
                          tuple(target_ids(tgt_tok.encode(e, add_special_tokens=False).ids)))
                         for k, e in zip(lines["ko"], lines["en"], strict=True))
        assert written == encoded
        for b, bucket in enumerate(shards.buckets):
            lengths = shards.lengths(b)
            assert lengths.max() <= bucket["bound"] and len(lengths) == bucket["pairs"]
            assert (np.diff(lengths[:, 0].astype(int)) >= 0).all()  # sorted by source length
    train = meta["splits"]["train"]
    assert train["padding_ratio"] < train["padding_ratio_unbucketed"]


def test_a_batch_table_covers_each_pair_once_within_the_budget(tiny_project):
    _, paths = tiny_project
    shards = load_split(paths.dataset, "train")
    table = shards.batches(300)
    assert (table[:, END] - table[:, FIRST]).sum() == len(shards)
    for bucket in range(len(shards.buckets)):
        rows = table[table[:, BUCKET] == bucket]
        assert rows[0, FIRST] == 0 and (rows[1:, FIRST] == rows[:-1, END]).all()  # runs that tile the bucket
    widths = np.maximum(table[:, SRC_MAX], table[:, TGT_MAX])
    assert (((table[:, END] - table[:, FIRST]) * widths <= 300) | (table[:, END] - table[:, FIRST] == 1)).all()
    assert 0 < batch_padding(table) < 0.3
    data = shards.pairs()  # each row's offsets and counts are its pairs' own
    first_pair = np.cumsum([0] + [b["pairs"] for b in shards.buckets])
    for row in table[:: max(1, len(table) // 7)]:
        pairs = slice(first_pair[row[BUCKET]] + row[FIRST], first_pair[row[BUCKET]] + row[END])
        assert (row[SRC_TOKENS], row[TGT_TOKENS]) == (data.src_len[pairs].sum(), data.tgt_len[pairs].sum())
        assert (row[SRC_MAX], row[TGT_MAX]) == (data.src_len[pairs].max(), data.tgt_len[pairs].max())


def test_the_saved_table_and_a_scan_window_by_window_agree(tiny_project, monkeypatch):
    params, paths = tiny_project
    shards = load_split(paths.dataset, "train")
    saved = shards.batches(params.build.max_tokens)  # the table build saved
    assert table_file(shards.folder, params.build.max_tokens).exists()
    monkeypatch.setattr(dataset, "WINDOW", 10)  # windows of 4 x 40 pairs: every bucket takes several
    assert max(b["pairs"] for b in shards.buckets) > 160
    scanned = np.concatenate([shards._bucket_batches(b, 40) for b in range(len(shards.buckets))])
    monkeypatch.setattr(dataset, "WINDOW", 10**9)
    assert np.array_equal(scanned, np.concatenate([shards._bucket_batches(b, 40) for b in range(len(shards.buckets))]))
    assert np.array_equal(saved, np.concatenate([shards._bucket_batches(b, params.build.max_tokens)
                                                 for b in range(len(shards.buckets))]))


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


def test_a_batch_read_from_disk_is_its_pairs_padded(tiny_project):
    _, paths = tiny_project
    shards = load_split(paths.dataset, "valid")
    data, table = shards.pairs(), shards.batches(200)
    first_pair = {b: sum(x["pairs"] for x in shards.buckets[:b]) for b in range(len(shards.buckets))}
    for row in table[[0, len(table) // 2, -1]]:
        b = shards.batch(row)
        pairs = range(first_pair[int(row[BUCKET])] + int(row[FIRST]), first_pair[int(row[BUCKET])] + int(row[END]))
        assert b["src"].shape == (len(pairs), int(row[SRC_MAX])) and b["tgt"].shape[1] == int(row[TGT_MAX])
        for r, i in enumerate(pairs):
            n = int(data.src_len[i])
            assert b["src"][r, :n].tolist() == data.src[data.src_off[i]:data.src_off[i + 1]].tolist()
            assert (b["src"][r, n:] == PAD).all() and int(b["src_len"][r]) == n


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
