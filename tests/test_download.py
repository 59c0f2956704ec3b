import gzip
import http.server
import json

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
    return {p.name: p.read_bytes() for p in sorted(paths.raw.iterdir())}


def test_sample_corpus(tmp_path):
    params = load_params(write_params(tmp_path, {"data": {"sample_pairs": 300}}))
    paths = Paths(tmp_path)
    download.run(params, paths)
    ko = (paths.raw / "train.ko").read_text().splitlines()
    en = (paths.raw / "train.en").read_text().splitlines()
    assert len(ko) == len(en) == 300
    assert json.loads((paths.raw / "manifest.json").read_text())["corpus"] == "sample-ko-en"


@pytest.mark.skipif(not KO_EN.exists(), reason="../shared/corpora not present")
def test_local_path_and_file_url_with_checksums(tmp_path):
    params, paths = custom(tmp_path, str(KO_EN / "news.dev.ko.gz"), (KO_EN / "news.dev.en.gz").as_uri(),
                           NEWS_KO_SHA, NEWS_EN_SHA)
    download.run(params, paths)
    ko = (paths.raw / "train.ko").read_text(encoding="utf-8").splitlines()
    assert len(ko) == 1000
    with gzip.open(KO_EN / "news.dev.ko.gz", "rt", encoding="utf-8") as fh:
        assert ko[0] == fh.readline().rstrip("\n")


@pytest.mark.skipif(not KO_EN.exists(), reason="../shared/corpora not present")
def test_http_download_from_loopback(tmp_path, http_server):
    base = http_server(KO_EN)
    params, paths = custom(tmp_path, f"{base}/news.dev.ko.gz", f"{base}/news.dev.en.gz", NEWS_KO_SHA, NEWS_EN_SHA)
    download.run(params, paths)
    manifest = json.loads((paths.raw / "manifest.json").read_text())
    assert manifest["splits"]["train"]["ko"]["sha256"] == NEWS_KO_SHA
    assert manifest["splits"]["train"]["lines"] == 1000


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
