"""Hostile input through the real entry points: one clear line on stderr, a non-zero exit, nothing lost."""

import json
import subprocess
import sys

import pytest

from pipeline.config import Paths
from tests.conftest import ROOT, write_params, write_raw


def _run(*args, stdin: bytes = b"", cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, cwd=cwd, timeout=300)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_a_duplicate_key_in_params_stops_the_pipeline_in_one_line(tmp_path):
    params = write_params(tmp_path)
    params.write_text(params.read_text() + "train:\n  epochs: 1\n")
    before = params.read_bytes()
    first = next(i for i, line in enumerate(before.decode().splitlines(), 1) if line == "train:")
    last = len(before.decode().splitlines()) - 1
    for args in (["-m", "flows.pipeline", "--root", str(tmp_path)],
                 ["-m", "pipeline.stages.clean", "--root", str(tmp_path), "--params", str(params)]):
        line = _one_line(_run(*args))
        assert line.endswith(f"params.yaml:{last}: duplicate key 'train' (first on line {first}); keep one of them")
    assert params.read_bytes() == before


def test_translate_refuses_input_that_is_not_utf8(tmp_path):
    line = _one_line(_run("-m", "pipeline.inference.command", "--root", str(tmp_path), stdin=b"ok\n\xff\xfe abc\n"))
    assert line.startswith("error: translate: stdin line 2 is not UTF-8 text")
    line = _one_line(_run("-m", "pipeline.inference.command", "--root", str(tmp_path), "ok", b"\xff\xfe abc"))
    assert line.startswith("error: translate: argument 2 is not UTF-8 text")


def _raw_corpus(root, splits: dict[str, list[tuple[str, str]]]):
    write_raw(Paths(root), {split: {"corpus": (pairs, {})} for split, pairs in splits.items()})
    write_params(root)


def test_a_corpus_too_small_to_carve_a_split_says_so(tmp_path):
    _raw_corpus(tmp_path, {"train": [("하나", "one"), ("둘", "two"), ("셋", "three")]})
    line = _one_line(_run("-m", "pipeline.stages.clean", "--root", str(tmp_path),
                          "--params", str(tmp_path / "params.yaml")))
    assert "3 pairs are too few to carve a valid split out of train (clean.valid_fraction: 0.04)" in line
    assert "loosen" not in line and not (tmp_path / "data" / "clean").exists()


def test_an_empty_test_split_is_one_line_at_clean_and_at_evaluate(tmp_path):
    pairs = [(f"문장 {i}", f"sentence {i}") for i in range(300)]
    _raw_corpus(tmp_path, {"train": pairs, "test": []})
    line = _one_line(_run("-m", "pipeline.stages.clean", "--root", str(tmp_path),
                          "--params", str(tmp_path / "params.yaml")))
    assert line == "error: clean: the held-out set test:corpus is empty; give it sentences, or leave it out (a " \
                   "valid or test split is then carved out of train)"
    paths = Paths(tmp_path)  # as a clean stage of an older version could leave it
    paths.test_set("corpus", "ko").parent.mkdir(parents=True)
    for lang in ("ko", "en"):
        paths.test_set("corpus", lang).write_text("")
    paths.sources.write_text(json.dumps({"train": [], "test": [{"name": "corpus"}]}))
    line = _one_line(_run("-m", "pipeline.stages.evaluate", "--root", str(tmp_path),
                          "--params", str(tmp_path / "params.yaml")))
    assert line.startswith("error: evaluate: ") and "corpus.ko is empty" in line


def test_a_truncated_or_foreign_model_file_is_one_line_in_translate_and_serving(built_tiny, tmp_path):
    from pipeline.common import PipelineError
    from pipeline.inference.serving import load_translator

    model = (built_tiny / "models" / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(model[: len(model) // 2])
    (tmp_path / "foreign.pt").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 20)
    for name in ("cut.pt", "foreign.pt"):
        path = tmp_path / name
        line = _one_line(_run("-m", "pipeline.inference.command", "--root", str(tmp_path), "--model", str(path),
                              "안녕"))
        assert line.startswith(f"error: translate: {path}: not a model file of this project ("), line
        with pytest.raises(PipelineError, match="not a model file of this project"):
            load_translator(str(path), tmp_path)  # what serving, distillation and back-translation load with
