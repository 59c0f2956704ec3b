import json

import pytest

from pipeline.common import PipelineError
from pipeline.config import Clean, Paths, load_params
from pipeline.stages import clean, download
from pipeline.text import normalise
from tests.conftest import write_params, write_raw


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


def _raw(tmp_path, pairs, info=None, **clean_params):
    params = load_params(write_params(tmp_path, {"clean": clean_params}))
    paths = Paths(tmp_path)
    write_raw(paths, {"train": {"corpus": (pairs, info or {})}})
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
    params, paths = _raw(tmp_path, [(f"문장 {i}", f"sentence {i}") for i in range(500)], {"dropped_rows": 3})
    report = clean.run(params, paths)
    assert report["removed"] == {"blank_or_short_table_row": 3} and report["input_pairs"] == 503


def test_given_splits_stay_whole_and_their_sources_leave_train(tmp_path):
    params, paths = _raw(tmp_path, [(f"문장 {i}", f"sentence {i}") for i in range(50)])
    write_raw(paths, {"train": {"corpus": ([(f"문장 {i}", f"sentence {i}") for i in range(50)], {})},
                      "valid": {"dev": ([("문장 1", "other 1"), ("새 문장", "new one")], {})},
                      "test": {"a": ([("문장 2", "other 2"), ("다른 문장", "another one")], {}),
                               "b": ([("문장 3", "other 3"), ("문장 2", "again")], {})}})
    report = clean.run(params, paths)
    assert report["splits"] == {"train": 47, "valid": 2, "test": 2} and report["test_sets"] == {"a": 2, "b": 2}
    assert report["removed"] == {"train_source_in_test:a": 1, "train_source_in_test:b": 1,
                                 "train_source_in_valid": 1}  # 문장 2 is in both test sets: counted in the first
    assert report["held_out"] == {"valid": "given", "test": "given"}
    train_sources = set((paths.clean / "train.ko").read_text(encoding="utf-8").splitlines())
    assert not train_sources & {"문장 1", "문장 2", "문장 3"} and len(train_sources) == 47
    assert (paths.original / "valid.en").read_bytes() == (paths.raw / "valid" / "dev.en").read_bytes()
    for name in ("a", "b"):
        assert paths.test_set(name, "en").read_bytes() == (paths.raw / "test" / f"{name}.en").read_bytes()
    assert (paths.original / "test.en").read_bytes() == paths.test_set("a", "en").read_bytes()  # the judged one
    assert [t["name"] for t in json.loads(paths.sources.read_text())["test"]] == ["a", "b"]


def test_everything_filtered_is_an_error_and_leaves_nothing(tmp_path):
    params, paths = _raw(tmp_path, [("같다", "같다")] * 5)
    with pytest.raises(PipelineError, match="no train pairs left"):
        clean.run(params, paths)
    assert not paths.clean.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["raw"]


def test_two_sources_with_duplicates_across_them_weights_tags_and_language_id(tmp_path):
    """A two-corpus German-English run on files written here, through download and clean. Only language ID can
    catch the French line: it has Latin script like both sides, so the script filter passes it."""
    first = [(f"Ein Hund läuft über die Wiese Nummer {i}.", f"A dog runs across meadow number {i}.")
             for i in range(300)]
    french = [("Un chien court dans l'herbe verte près de la rivière.", "A dog runs in the green grass by the river.")]
    second = [(f"Eine Katze schläft auf dem Sofa Nummer {i}.", f"A cat sleeps on sofa number {i}.")
              for i in range(200)] + first[:7] + french + [first[0]]  # 7 pairs of the first, one of them twice

    def source(name, pairs, **extra):
        files = {}
        for i, lang in ((0, "de"), (1, "en")):
            (tmp_path / f"{name}.{lang}").write_text("".join(p[i] + "\n" for p in pairs), encoding="utf-8")
            files[lang] = {"url": str(tmp_path / f"{name}.{lang}")}
        return {"name": name, "files": files, **extra}

    data = {"corpus": None, "src": "de", "tgt": "en",
            "train": [source("one", first, licence="CC0"), source("two", second, weight=2, tag="<two>")],
            "valid": source("dev", [("Ein Vogel singt im Baum.", "A bird sings in the tree.")]),
            "test": [source("t", [("Ein Fisch schwimmt im Wasser.", "A fish swims in the water.")])]}
    params = load_params(write_params(tmp_path, {"data": data}))
    paths = Paths(tmp_path)
    download.run(params, paths)
    report = clean.run(params, paths)
    assert report["sources"]["one"] == {"input": 300, "kept": 300, "train_pairs": 300, "removed": {}}
    assert report["sources"]["two"] == {"input": 209, "kept": 200, "train_pairs": 400, "removed": {
        "duplicate_across_sources": 8, "language_id_src": 1}}
    train_de = (paths.clean / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(train_de) == 700 and train_de[300] == train_de[301] == "<two> Eine Katze schläft auf dem Sofa Nummer 0."
    assert not any("chien" in line for line in train_de)
    sources = json.loads(paths.sources.read_text())
    assert [(s["name"], s["cleaning"]["train_pairs"], s.get("licence")) for s in sources["train"]] == [
        ("one", 300, "CC0"), ("two", 400, None)]
    off = load_params(write_params(tmp_path, {"data": data, "clean": {"language_id": {"src": 0, "tgt": 0}}}))
    assert clean.run(off, paths)["sources"]["two"]["removed"] == {"duplicate_across_sources": 8}


def test_weights_below_one_subsample_by_a_seeded_hash():
    kept = [clean.copies(0.5, 1, f"s{i}", f"t{i}") for i in range(4000)]
    assert set(kept) == {0, 1} and 1800 < sum(kept) < 2200
    assert kept == [clean.copies(0.5, 1, f"s{i}", f"t{i}") for i in range(4000)]
    assert [clean.copies(2.0, 1, "s", "t"), clean.copies(1.0, 1, "s", "t")] == [2, 1]


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
