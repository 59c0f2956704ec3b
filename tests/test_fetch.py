"""Registry corpora over real HTTP from a loopback mirror, and every way a download can go wrong."""

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import tarfile
import time
import zipfile

import pytest

from pipeline import fetch
from pipeline.common import PipelineError
from pipeline.config import Paths, load_params
from pipeline.stages import clean, download, tokenizer
from tests.conftest import SHARED, write_params

CORPORA = SHARED / "corpora"
needs_shared = pytest.mark.skipif(not CORPORA.exists(), reason="../shared/corpora not present")


def _project(root, data, **sections):
    root.mkdir(parents=True, exist_ok=True)
    return load_params(write_params(root, {"data": data, **sections})), Paths(root)


def _snapshot(paths):
    return {str(p.relative_to(paths.raw)): p.read_bytes() for p in sorted(paths.raw.rglob("*")) if p.is_file()}


def _archive_project(root, archive):
    """A custom corpus whose two sides are the *.ko and *.en members of one archive."""
    files = {side: {"url": str(archive), "member": f"*.{lang}"} for side, lang in (("src", "ko"), ("tgt", "en"))}
    return _project(root, {"corpus": "custom", "custom": {"train": files}})


def _good_raw(root):
    params, paths = _project(root, {"sample_pairs": 50})
    download.run(params, paths)
    return _snapshot(paths)


@needs_shared
@pytest.mark.slow
def test_multi30k_through_the_mirror_then_clean_and_tokenize(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("NMT_DATA_MIRROR", http_server(CORPORA))
    params, paths = _project(tmp_path, {"corpus": "multi30k", "src": "de", "tgt": "en"})
    got = download.run(params, paths)["sources"]  # registry checksums are verified on the mirror's files
    assert {role: [i["lines"] for i in infos] for role, infos in got.items()} == {
        "train": [29000], "valid": [1014], "test": [1000], "mono": []}
    assert got["train"][0]["de"]["url"].endswith("/multi30k/train.de.gz")
    report = clean.run(params, paths)
    assert report["splits"]["train"] >= 28500
    assert report["splits"]["test"] == 1000  # the official test split, whole
    sizes = tokenizer.run(params, paths)
    assert sizes["src_vocab"] == sizes["tgt_vocab"] == params.tokenize.vocab_size


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@needs_shared
def test_ko_en_news_archives_through_the_mirror(tmp_path, http_server, monkeypatch):
    # the real upstream layout (one .tar.gz per split) built from the Korean-English files in ../shared
    mirror = tmp_path / "mirror" / "ko-en-news"
    mirror.mkdir(parents=True)
    for split, name in (("train", "news.test"), ("dev", "news.dev"), ("test", "jhe.dev")):
        members = {f"korean-english-park.{split}.{lang}": gzip.decompress((CORPORA / "ko-en" / f"{name}.{lang}.gz")
                                                                          .read_bytes()) for lang in ("ko", "en")}
        (mirror / f"korean-english-park.{split}.tar.gz").write_bytes(_tar_gz(members))
    monkeypatch.setenv("NMT_DATA_MIRROR", http_server(tmp_path / "mirror"))
    params, paths = _project(tmp_path / "p", {"corpus": "ko-en-news"})
    got = download.run(params, paths)["sources"]
    assert {role: [i["lines"] for i in infos] for role, infos in got.items()} == {
        "train": [2000], "valid": [1000], "test": [720], "mono": []}
    report = clean.run(params, paths)
    assert report["splits"]["train"] > 1800
    assert 0 < report["removed"]["wrong_script"] < 100  # the news corpus has some misaligned, English-only lines
    # the Hangul alphabet alone is larger than the vocabulary asked for
    assert tokenizer.run(params, paths)["src_vocab"] >= params.tokenize.vocab_size

    # the cache now holds the archives: offline works, and a cold cache offline fails clearly
    params, paths = _project(tmp_path / "p", {"corpus": "ko-en-news", "offline": True})
    assert download.run(params, paths)["sources"]["train"][0]["lines"] == 2000
    monkeypatch.setenv("NMT_CACHE_DIR", str(tmp_path / "cold"))
    with pytest.raises(PipelineError, match="not in the download cache .* and offline mode is on"):
        download.run(params, paths)


def test_interrupted_download_resumes_with_a_range_request(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    body = gzip.compress("".join(f"줄 {i}\n" for i in range(20000)).encode())
    seen = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            rng = self.headers.get("Range")
            seen.append(rng)
            if rng is None:  # first try: promise everything, send half, hang up
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                return
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

        def log_message(self, *args):
            pass

    url = f"{http_server(tmp_path, Flaky)}/big.ko.gz"
    path, _ = fetch.fetch(url, hashlib.sha256(body).hexdigest())
    assert seen == [None, f"bytes={len(body) // 2}-"]
    assert path.read_bytes() == body and path.parent == fetch.cache_dir()
    # pinned by sha256 and already cached: nothing upstream can change it, so no request at all
    assert fetch.fetch(url, hashlib.sha256(body).hexdigest())[0] == path and len(seen) == 2


def test_cached_download_is_revalidated_and_a_changed_upstream_file_replaces_it(tmp_path, http_server):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("first\n")
    url = f"{http_server(site)}/a.txt"
    path, first = fetch.fetch(url)
    assert path.read_text() == "first\n"
    assert fetch.fetch(url) == (path, first)  # 304 Not Modified: the cached copy
    (site / "a.txt").write_text("second\n")
    later = time.time() + 10  # Last-Modified has a one-second resolution
    os.utime(site / "a.txt", (later, later))
    path, second = fetch.fetch(url)
    assert path.read_text() == "second\n" and second != first


def test_bad_checksum_from_http_is_not_cached(tmp_path, http_server):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.txt").write_text("hello\n")
    url = f"{http_server(tmp_path / 'srv')}/a.txt"
    with pytest.raises(PipelineError, match="sha256 mismatch"):
        fetch.fetch(url, "1" * 64)
    assert list(fetch.cache_dir().iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.en", "/etc/evil.en", "ok/../../evil.en"])
def test_archive_with_path_traversal_is_refused(tmp_path, member):
    before = _good_raw(tmp_path)
    (tmp_path / "bad.tar.gz").write_bytes(_tar_gz({"data/train.ko": "안녕\n".encode(), member: b"hello\n"}))
    params, paths = _archive_project(tmp_path, tmp_path / "bad.tar.gz")
    with pytest.raises(PipelineError, match="unsafe archive member"):
        download.run(params, paths)
    assert _snapshot(paths) == before


def test_truncated_archive(tmp_path):
    before = _good_raw(tmp_path)
    blob = _tar_gz({"train.ko": ("가나다\n" * 20000).encode(), "train.en": b"abc\n" * 20000})
    (tmp_path / "cut.tar.gz").write_bytes(blob[: len(blob) // 2])
    params, paths = _archive_project(tmp_path, tmp_path / "cut.tar.gz")
    with pytest.raises(PipelineError, match="truncated or corrupt"):
        download.run(params, paths)
    assert _snapshot(paths) == before


def test_zip_member_tsv_and_csv_with_header(tmp_path):
    rows = [(f"문장 {i}", f"sentence {i}") for i in range(30)]
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        # a blank line and a row with one column are dropped and counted, not fatal
        zf.writestr("corpus/train.tsv", "".join(f"{k}\t{e}\n" for k, e in rows) + "\nonly-one-column\n")
    (tmp_path / "test.csv").write_text("id,english,korean\n" + "".join(f'{i},"{e}, ok",{k}\n'
                                                                        for i, (k, e) in enumerate(rows[:5])))
    custom = {"train": {"table": {"url": str(tmp_path / "c.zip"), "member": "*.tsv"}},
              "test": {"table": {"url": (tmp_path / "test.csv").as_uri(), "format": "csv", "header": True,
                                 "src_column": "korean", "tgt_column": "english"}}}
    params, paths = _project(tmp_path, {"corpus": "custom", "custom": custom})
    got = download.run(params, paths)["sources"]
    assert got["train"][0]["lines"] == 30 and got["test"][0]["lines"] == 5
    assert got["train"][0]["dropped_rows"] == 2  # counted in metrics/clean.json by the clean stage
    assert (paths.raw / "test" / "custom.en").read_text().splitlines()[0] == "sentence 0, ok"
    assert (paths.raw / "train" / "custom.ko").read_text(encoding="utf-8").splitlines()[-1] == "문장 29"


def test_hf_datasets_source(tmp_path):
    ds = tmp_path / "my-dataset"
    ds.mkdir()
    for split, ko, n in (("train", "학습", 300), ("test", "시험", 6)):
        with open(ds / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"translation": {"ko": f"{ko} 문장 {i}", "en": f"sentence {split} {i}"}},
                                    ensure_ascii=False) + "\n")
    params, paths = _project(tmp_path / "p", {"corpus": f"hf:{ds}"})
    got = download.run(params, paths)
    assert {role: [i["lines"] for i in infos] for role, infos in got["sources"].items()} == {
        "train": [300], "valid": [], "test": [6], "mono": []}
    assert [m["role"] for m in got["missing"]] == ["valid"]  # the dataset has none: one line, then carved
    name = download._slug(f"hf:{ds}")
    assert (paths.raw / "test" / f"{name}.ko").read_text(encoding="utf-8").splitlines()[0] == "시험 문장 0"
    report = clean.run(params, paths)  # no validation split: carved out of train
    assert report["splits"]["test"] == 6 and report["splits"]["valid"] > 0

    params, paths = _project(tmp_path / "p", {"corpus": f"hf:{ds}", "hf": {"src_column": "translation.xx"}})
    with pytest.raises(PipelineError, match="no column 'translation.xx'"):
        download.run(params, paths)


def test_mirror_url_layout(monkeypatch):
    url = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/val.de.gz"
    assert fetch.mirror_of(url, None, "multi30k") is None
    monkeypatch.setenv("NMT_DATA_MIRROR", "http://127.0.0.1:9/m/")
    assert fetch.mirror_of(url, None, "multi30k") == "http://127.0.0.1:9/m/multi30k/val.de.gz"
    assert fetch.mirror_of(url, "ko-en/x.gz", "multi30k") == "http://127.0.0.1:9/m/ko-en/x.gz"
    assert fetch.mirror_of("data/local.ko", None, "mine") is None  # a local file is read in place


def test_local_files_are_used_in_place(tmp_path):
    src = tmp_path / "f.txt"
    src.write_bytes(b"abc\n")
    path, digest = fetch.fetch(str(src))
    assert path == src and digest == hashlib.sha256(b"abc\n").hexdigest()
    shutil.rmtree(fetch.cache_dir(), ignore_errors=True)


def test_a_relative_path_is_the_projects_also_from_a_dvc_experiment_copy(tmp_path, monkeypatch):
    project, copy = tmp_path / "project", tmp_path / "project" / ".dvc" / "tmp" / "exps" / "abc"
    copy.mkdir(parents=True)
    (tmp_path / "corpus.ko").write_text("안녕\n", encoding="utf-8")
    monkeypatch.chdir(copy)  # where `dvc exp run --temp` runs a stage
    monkeypatch.setenv("DVC_ROOT", str(project))
    local, _ = fetch.fetch("../corpus.ko")
    assert local.resolve() == (tmp_path / "corpus.ko").resolve()
    monkeypatch.delenv("DVC_ROOT")
    with pytest.raises(PipelineError, match=r"^\.\./corpus\.ko: file not found"):
        fetch.fetch("../corpus.ko")
