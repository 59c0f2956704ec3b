import gzip
import http.server
import json
from pathlib import Path

import pytest

from pipeline import fetch
from pipeline.common import PipelineError
from pipeline.config import Paths, load_params
from pipeline.stages import download
from tests.conftest import SHARED, write_params

KO_EN = SHARED / "corpora" / "ko-en"
NEWS_KO_SHA = "4943f47ac0e077724f83d92292525a4e6b664406574b288c946f3d302cbe6760"
NEWS_EN_SHA = "488bbeeb04d95253e969ecaaa835c53a6f443c3329fc9882e0679c7e76b46bd7"


def custom(tmp_path, src, tgt, src_sha=None, tgt_sha=None):
    files = {"src": {"url": src, "sha256": src_sha}, "tgt": {"url": tgt, "sha256": tgt_sha}}
    data = {"corpus": "custom", "custom": {"train": files}}
    return load_params(write_params(tmp_path, {"data": data})), Paths(tmp_path)


def snapshot(paths):
    return {str(p.relative_to(paths.raw)): p.read_bytes() for p in sorted(paths.raw.rglob("*")) if p.is_file()}


def test_sample_corpus(tmp_path):
    params = load_params(write_params(tmp_path, {"data": {"sample_pairs": 300}}))
    paths = Paths(tmp_path)
    download.run(params, paths)
    ko = (paths.raw / "train" / "sample-ko-en.ko").read_text().splitlines()
    en = (paths.raw / "train" / "sample-ko-en.en").read_text().splitlines()
    assert len(ko) == len(en) == 300
    assert json.loads((paths.raw / "manifest.json").read_text())["sources"]["train"][0]["kind"] == "sample"


@pytest.mark.skipif(not KO_EN.exists(), reason="../shared/corpora not present")
def test_local_path_and_file_url_with_checksums(tmp_path):
    params, paths = custom(tmp_path, str(KO_EN / "news.dev.ko.gz"), (KO_EN / "news.dev.en.gz").as_uri(),
                           NEWS_KO_SHA, NEWS_EN_SHA)
    download.run(params, paths)
    ko = (paths.raw / "train" / "custom.ko").read_text(encoding="utf-8").splitlines()
    assert len(ko) == 1000
    with gzip.open(KO_EN / "news.dev.ko.gz", "rt", encoding="utf-8") as fh:
        assert ko[0] == fh.readline().rstrip("\n")


@pytest.mark.skipif(not KO_EN.exists(), reason="../shared/corpora not present")
def test_http_download_from_loopback(tmp_path, http_server):
    base = http_server(KO_EN)
    params, paths = custom(tmp_path, f"{base}/news.dev.ko.gz", f"{base}/news.dev.en.gz", NEWS_KO_SHA, NEWS_EN_SHA)
    download.run(params, paths)
    manifest = json.loads((paths.raw / "manifest.json").read_text())
    assert manifest["sources"]["train"][0]["ko"]["sha256"] == NEWS_KO_SHA
    assert manifest["sources"]["train"][0]["lines"] == 1000


def _good_raw(tmp_path):
    """A previous good download to protect."""
    params = load_params(write_params(tmp_path, {"data": {"sample_pairs": 100}}))
    paths = Paths(tmp_path)
    download.run(params, paths)
    return snapshot(paths)


@pytest.mark.skipif(not KO_EN.exists(), reason="../shared/corpora not present")
def test_checksum_mismatch_keeps_previous_data(tmp_path):
    before = _good_raw(tmp_path)
    params, paths = custom(tmp_path, str(KO_EN / "news.dev.ko.gz"), str(KO_EN / "news.dev.en.gz"), "0" * 64)
    with pytest.raises(PipelineError, match="sha256 mismatch"):
        download.run(params, paths)
    assert snapshot(paths) == before
    assert [p.name for p in tmp_path.joinpath("data").iterdir()] == ["raw"]  # no temp dir left behind


def test_missing_file_and_misaligned_sides(tmp_path):
    before = _good_raw(tmp_path)
    params, paths = custom(tmp_path, str(tmp_path / "missing.ko"), str(tmp_path / "missing.en"))
    with pytest.raises(PipelineError, match=r"missing\.ko: file not found"):
        download.run(params, paths)
    (tmp_path / "a.ko").write_text("하나\n둘\n")
    (tmp_path / "a.en").write_text("one\n")
    params, paths = custom(tmp_path, str(tmp_path / "a.ko"), str(tmp_path / "a.en"))
    with pytest.raises(PipelineError, match="different line counts"):
        download.run(params, paths)
    assert snapshot(paths) == before


def test_truncated_gzip(tmp_path):
    before = _good_raw(tmp_path)
    blob = gzip.compress(("안녕하세요\n" * 5000).encode())
    (tmp_path / "cut.ko.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "ok.en").write_text("hello\n" * 5000)
    params, paths = custom(tmp_path, str(tmp_path / "cut.ko.gz"), str(tmp_path / "ok.en"))
    with pytest.raises(PipelineError, match="truncated or corrupt"):
        download.run(params, paths)
    assert snapshot(paths) == before


def test_http_errors_retry_then_fail_clearly(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)  # keep the backoff, skip the wait
    before = _good_raw(tmp_path)
    hits = []

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_error(500 if "flaky" in self.path else 404)

        def log_message(self, *args):
            pass

    base = http_server(tmp_path, Failing)
    params, paths = custom(tmp_path, f"{base}/flaky.ko", f"{base}/x.en")
    with pytest.raises(PipelineError, match=r"flaky.ko: HTTP 500 .* after 3 attempt"):
        download.run(params, paths)
    assert hits.count("/flaky.ko") == 3
    params, paths = custom(tmp_path, f"{base}/gone.ko", f"{base}/x.en")
    with pytest.raises(PipelineError, match=r"gone.ko: HTTP 404 .* after 1 attempt"):
        download.run(params, paths)
    assert snapshot(paths) == before


def _lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_several_sources_a_mirror_and_a_missing_optional_one(tmp_path, monkeypatch):
    """Train from two sources (one from the mirror under a path of its own, one local), a test set from a
    sacrebleu cache, and an optional source that nothing holds: reported by name, the run goes on."""
    mirror = tmp_path / "mirror"
    _lines(mirror / "ko-en" / "news.ko", ["뉴스 하나", "뉴스 둘"])
    _lines(mirror / "ko-en" / "news.en", ["news one", "news two"])
    from sacrebleu.dataset import DATASETS

    iwslt = DATASETS["iwslt17"]
    monkeypatch.setattr(iwslt, "_outdir", str(tmp_path / "sacrebleu" / "iwslt17"))  # sacrebleu's own cache
    _lines(Path(iwslt._get_txt_file_path("ko-en", "src")), ["시험"])
    _lines(Path(iwslt._get_txt_file_path("ko-en", "ref")), ["a test"])
    monkeypatch.setenv("NMT_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("NMT_OFFLINE", "1")
    upstream = "https://example.org/corpus"
    data = {"corpus": None, "train": [
        {"name": "news", "licence": "CC BY-SA 3.0", "files": {  # the mirror holds the members themselves
            lang: {"url": f"{upstream}/news.tar.gz", "member": f"*.{lang}", "mirror": f"ko-en/news.{lang}"}
            for lang in ("ko", "en")}},
        {"name": "mine", "files": {"en": {"url": _lines(tmp_path / "m.en", ["my sentence"])},
                                   "ko": {"url": _lines(tmp_path / "m.ko", ["내 문장"])}}, "weight": 2},
        {"name": "big", "files": {"ko": {"url": f"{upstream}/big.ko.gz"}, "en": {"url": f"{upstream}/big.en.gz"}},
         "optional": True},
        {"name": "only-mirrored", "files": {"ko": {"mirror": "x/y.ko"}, "en": {"mirror": "x/y.en"}}, "optional": True}],
        "test": [{"name": "iwslt17", "sacrebleu": "iwslt17", "licence": "CC BY-NC-ND 4.0"}]}
    params = load_params(write_params(tmp_path, {"data": data}))
    paths = Paths(tmp_path)
    got = download.run(params, paths)
    assert [(i["name"], i["lines"]) for i in got["sources"]["train"]] == [("news", 2), ("mine", 1)]
    assert got["sources"]["train"][0]["ko"]["url"] == f"{mirror}/ko-en/news.ko"
    assert got["sources"]["train"][0]["licence"] == "CC BY-SA 3.0" and got["sources"]["train"][1]["weight"] == 2
    assert got["sources"]["train"][0]["ko"]["upstream"] == f"{upstream}/news.tar.gz"
    assert [(m["name"], m["role"]) for m in got["missing"]] == [("big", "train"), ("only-mirrored", "train")]
    assert "has no public download" in got["missing"][1]["why"]
    assert "not in the mirror" in got["missing"][0]["why"] and "offline" in got["missing"][0]["why"]
    assert (paths.raw / "test" / "iwslt17.ko").read_text(encoding="utf-8") == "시험\n"

    data["train"][2]["optional"] = False  # the same source, required: the stage stops and keeps data/raw
    before = snapshot(paths)
    with pytest.raises(PipelineError, match=r"big.ko.gz: not in the mirror .* offline mode is on"):
        download.run(load_params(write_params(tmp_path, {"data": data})), paths)
    assert snapshot(paths) == before


def test_a_list_source_cannot_take_the_corpus_name_or_two_kinds(tmp_path):
    with pytest.raises(PipelineError, match="give one of corpus, sacrebleu, files .one per language. or a table"):
        load_params(write_params(tmp_path, {"data": {"train": [{"name": "x", "corpus": "multi30k",
                                                                "sacrebleu": "wmt14"}]}}))
    with pytest.raises(PipelineError, match="corpus is null and train lists no source"):
        load_params(write_params(tmp_path, {"data": {"corpus": None}}))
    with pytest.raises(PipelineError, match="files are for ko, de; give one for each of ko and en"):
        load_params(write_params(tmp_path, {"data": {"train": [{"name": "x", "files": {"ko": {"url": "a"},
                                                                                       "de": {"url": "b"}}}]}}))
    params = load_params(write_params(tmp_path, {"data": {"train": [{"name": "sample-ko-en", "files": {
        "ko": {"url": "a"}, "en": {"url": "b"}}}]}}))
    with pytest.raises(PipelineError, match="named 'sample-ko-en' like the corpus"):
        download.plan(params.data)
