import json

import pytest

from pipeline.common import PipelineError
from pipeline.config import Clean, Paths, load_params
from pipeline.stages import clean
from pipeline.text import normalise
from tests.conftest import write_params


def test_normalise():
    assert normalise("ＡＢＣ　１２３", "NFKC") == "ABC 123"
    assert normalise("Tom &amp; Jerry&#39;s <b>show</b>", "NFKC") == "Tom & Jerry's show"
    assert normalise("a\x00b\u200bc\t d\n", "NFKC") == "a b c d"
    assert normalise("ＡＢＣ", "none") == "ＡＢＣ"


def test_filters():
    cfg = Clean(max_words=5, max_ratio=2.0)
    assert clean.check_pair("  ", "x", cfg)[2] == "empty"
    assert clean.check_pair("same", "same", cfg)[2] == "source_equals_target"
    assert clean.check_pair("a b c d e f", "x y z", cfg)[2] == "too_long"
    assert clean.check_pair("a b c d e", "x", cfg)[2] == "length_ratio"
    assert clean.check_pair("안녕 하세요", "hello there", cfg)[2] is None


def _raw(tmp_path, pairs, **clean_params):
    params = load_params(write_params(tmp_path, {"clean": clean_params}))
    paths = Paths(tmp_path)
    paths.raw.mkdir(parents=True)
    (paths.raw / "train.ko").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
    (paths.raw / "train.en").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    (paths.raw / "manifest.json").write_text(json.dumps({"splits": {"train": {}}}))
    return params, paths


def test_report_splits_and_no_leakage(tmp_path, monkeypatch):
    good = [(f"문장 {i}", f"sentence {i}") for i in range(3000)]
    bad = [("", "empty source"), ("copy", "copy"), ("긴 " * 100, "long"), ("하나 둘 셋 넷 다섯 여섯 일곱", "one")]
    pairs = good + bad + good[:40]  # 40 exact duplicates
    params, paths = _raw(tmp_path, pairs, valid_fraction=0.1, test_fraction=0.1)
    report = clean.run(params, paths)
    assert report["input_pairs"] == len(pairs)
    assert report["removed"] == {"duplicate": 40, "empty": 1, "length_ratio": 1, "source_equals_target": 1,
                                 "too_long": 1}
    assert sum(report["splits"].values()) == 3000
    assert 200 < report["splits"]["test"] < 400  # ~10% by hash
    split_sources = {s: set((paths.clean / f"{s}.ko").read_text(encoding="utf-8").splitlines())
                     for s in ("train", "valid", "test")}
    assert not split_sources["train"] & (split_sources["valid"] | split_sources["test"])
    for s in ("train", "valid", "test"):  # still aligned
        src = (paths.clean / f"{s}.ko").read_text(encoding="utf-8").splitlines()
        tgt = (paths.clean / f"{s}.en").read_text(encoding="utf-8").splitlines()
        assert [a.split()[1] for a in src] == [b.split()[1] for b in tgt]
    assert json.loads((paths.metrics / "clean.json").read_text()) == report
    first = {f.relative_to(paths.clean): f.read_bytes() for f in paths.clean.rglob("*") if f.is_file()}
    monkeypatch.setattr(clean, "CHUNK", 1000)  # four chunks: two processes now, one before
    assert clean.run(params, paths) == report
    assert first == {f.relative_to(paths.clean): f.read_bytes() for f in paths.clean.rglob("*") if f.is_file()}


def test_table_rows_dropped_by_download_are_counted(tmp_path):
    params, paths = _raw(tmp_path, [(f"문장 {i}", f"sentence {i}") for i in range(500)])
    (paths.raw / "manifest.json").write_text(json.dumps({"splits": {"train": {"dropped_rows": 3}}}))
    report = clean.run(params, paths)
    assert report["removed"] == {"blank_or_short_table_row": 3} and report["input_pairs"] == 503


def test_given_splits_stay_whole_and_their_sources_leave_train(tmp_path):
    params, paths = _raw(tmp_path, [(f"문장 {i}", f"sentence {i}") for i in range(50)])
    for split, rows in (("valid", [("문장 1", "other 1"), ("새 문장", "new one")]),
                        ("test", [("문장 2", "other 2"), ("다른 문장", "another one")])):
        (paths.raw / f"{split}.ko").write_text("".join(r[0] + "\n" for r in rows), encoding="utf-8")
        (paths.raw / f"{split}.en").write_text("".join(r[1] + "\n" for r in rows), encoding="utf-8")
    (paths.raw / "manifest.json").write_text(json.dumps({"splits": {"train": {}, "valid": {}, "test": {}}}))
    report = clean.run(params, paths)
    assert report["splits"] == {"train": 48, "valid": 2, "test": 2}
    assert report["removed"] == {"train_source_in_test": 1, "train_source_in_valid": 1}
    assert report["held_out"] == {"valid": "corpus", "test": "corpus"}
    train_sources = set((paths.clean / "train.ko").read_text(encoding="utf-8").splitlines())
    assert not train_sources & {"문장 1", "문장 2"} and len(train_sources) == 48
    for split in ("valid", "test"):
        assert (paths.original / f"{split}.en").read_bytes() == (paths.raw / f"{split}.en").read_bytes()


def test_everything_filtered_is_an_error_and_leaves_nothing(tmp_path):
    params, paths = _raw(tmp_path, [("같다", "같다")] * 5)
    with pytest.raises(PipelineError, match="no train pairs left"):
        clean.run(params, paths)
    assert not paths.clean.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["raw"]


@pytest.mark.slow  # loads kiwipiepy's model
def test_korean_morphemes_split_the_source_only(tmp_path):
    pairs = [(f"나는 어제 도서관에서 책을 {i}권 읽었다", f"I read {i} books at the library") for i in range(200)]
    params, paths = _raw(tmp_path, pairs, korean_morphemes=True)
    clean.run(params, paths)
    first = (paths.clean / "train.ko").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("나 는 어제 도서관 에서 책 을") and first.endswith("읽 었 다")
    assert (paths.clean / "train.en").read_text().splitlines()[0].startswith("I read")


def test_korean_morphemes_need_a_korean_source(tmp_path):
    with pytest.raises(PipelineError, match="Korean source only"):
        load_params(write_params(tmp_path, {"data": {"src": "en", "tgt": "ko"}, "clean": {"korean_morphemes": True}}))
