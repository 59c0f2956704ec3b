"""Back-translation: a real reverse-direction model (the built tiny project's ko→en model) turns Korean text into
synthetic pairs for an en→ko run; they join train as a source of their own, behind their tag."""

import json

import pytest

from pipeline.common import PipelineError
from pipeline.config import Paths, load_params
from pipeline.corpora.sample_ko_en import generate
from pipeline.stages import backtranslate, clean, download
from tests.conftest import write_params

KOREAN = [k for k, _ in generate(120, seed=7)]


def _project(root, model, **overrides):
    (root / "mono.ko").write_text("".join(line + "\n" for line in KOREAN), encoding="utf-8")
    data = {"src": "en", "tgt": "ko", "sample_pairs": 600,
            "monolingual": [{"name": "news", "files": {"ko": {"url": str(root / "mono.ko")}}}]}
    params = load_params(write_params(root, {"data": data, "backtranslate": {"enabled": True, "model": str(model),
                                                                             **overrides}}))
    return params, Paths(root)


def test_monolingual_text_becomes_tagged_train_pairs(built_tiny, tmp_path):
    params, paths = _project(tmp_path, built_tiny / "models" / "model.pt")
    download.run(params, paths)
    assert (paths.raw / "mono" / "news.ko").read_text(encoding="utf-8").splitlines() == KOREAN
    report = backtranslate.run(params, paths)
    assert report["sentences"] == len(KOREAN) and report["pairs"] + report["empty_translations"] == len(KOREAN)
    synthetic = (paths.backtranslated / "train" / "backtranslated.en").read_text(encoding="utf-8").splitlines()
    real = (paths.backtranslated / "train" / "backtranslated.ko").read_text(encoding="utf-8").splitlines()
    assert len(synthetic) == report["pairs"] > 0 and set(real) <= set(KOREAN)
    assert any(any("a" <= c <= "z" for c in s) for s in synthetic)  # the ko→en model wrote English
    assert not (paths.checkpoints / "backtranslate").exists()  # the chunks are spent once the output is in place

    cleaned = clean.run(params, paths)
    row = cleaned["sources"]["backtranslated"]
    assert row["input"] == report["pairs"] and row["train_pairs"] > 0
    train_en = (paths.clean / "train.en").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("<bt> ") for line in train_en) == row["train_pairs"]
    sources = json.loads(paths.sources.read_text())
    assert sources["train"][-1]["kind"] == "backtranslation" and sources["train"][-1]["tag"] == "<bt>"


def test_a_model_of_the_wrong_direction_is_one_line(built_tiny, tmp_path):
    params, paths = _project(tmp_path, built_tiny / "models" / "model.pt")
    params = load_params(write_params(tmp_path, {"data": {**params.data.model_dump(include={"monolingual"}),
                                                          "src": "ko", "tgt": "en",
                                                          "monolingual": [{"name": "m", "corpus": "sample-ko-en"}]},
                                                 "backtranslate": {"enabled": True,
                                                                   "model": str(built_tiny / "models" / "model.pt")}}))
    download.run(params, paths)
    with pytest.raises(PipelineError, match="translates ko-en; back-translation needs a en-ko model"):
        backtranslate.run(params, paths)


def test_switched_on_it_needs_a_model_and_text(tmp_path):
    with pytest.raises(PipelineError, match="backtranslate.enabled: true needs backtranslate.model"):
        load_params(write_params(tmp_path, {"backtranslate": {"enabled": True}}))
    with pytest.raises(PipelineError, match="give one file, of the target language"):
        load_params(write_params(tmp_path, {"data": {"monolingual": [{"name": "m", "files": {"ko": {"url": "a"}}}]}}))
