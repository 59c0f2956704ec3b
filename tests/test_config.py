import subprocess
import sys

import pytest

from pipeline.common import PipelineError
from pipeline.config import Params, load_params
from tests.conftest import ROOT


def test_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.corpus == "sample-ko-en"


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as exc:
        load_params(path)
    return str(exc.value)


def test_unknown_key_names_file_line_and_key(tmp_path):
    msg = _error(tmp_path, "train:\n  epochs: 3\n  learning_rate: 0.1\n")
    assert msg.startswith(f"{tmp_path / 'params.yaml'}:3: train.learning_rate: unknown key")


def test_wrong_type_names_the_value(tmp_path):
    msg = _error(tmp_path, "clean:\n  seed: 1\ntrain:\n  epochs: many\n")
    assert ":4: train.epochs:" in msg and "'many'" in msg


def test_cross_section_check(tmp_path):
    msg = _error(tmp_path, "embed:\n  dim: 64\nmodel:\n  emb_dim: 128\n")
    assert "model.emb_dim (128) must equal embed.dim (64)" in msg
    msg = _error(tmp_path, "model:\n  arch: transformer\n  hidden: 250\n  emb_dim: 250\n")
    assert msg.endswith(":1: model: hidden (250) must be divisible by transformer.heads (4)")
    msg = _error(tmp_path, "model:\n  arch: rnn\ntrain:\n  recompute_layers: true\n")
    assert "train.recompute_layers applies to model.arch: transformer only" in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    assert ":3: not valid YAML" in _error(tmp_path, "train:\n  epochs: 1\n\tlr: 2\n")
    with pytest.raises(PipelineError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_custom_corpus_requires_files(tmp_path):
    assert "needs data.custom.train" in _error(tmp_path, "data:\n  corpus: custom\n")
    assert "unknown corpus 'wmt99'" in _error(tmp_path, "data:\n  corpus: wmt99\n")
    assert "has languages de and en, not ko/en" in _error(tmp_path, "data:\n  corpus: multi30k\n")


def test_stage_cli_prints_one_line_and_exits_1(tmp_path):
    (tmp_path / "params.yaml").write_text("tokenize:\n  vocab_size: ten\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.stages.tokenizer", "--params", str(tmp_path / "params.yaml"),
                           "--root", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tokenize:") and "tokenize.vocab_size" in lines[0]


def test_set_params_keeps_comments_and_refuses_invalid_values(tmp_path):
    from pipeline.overrides import set_params, switch_corpus

    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    switch_corpus(path, "multi30k")
    params = load_params(path)
    assert (params.data.corpus, params.data.src, params.data.tgt) == ("multi30k", "de", "en")
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines(), strict=True) if a != b]
    assert len(changed) == 2 and changed[0][1].startswith("  corpus: multi30k  # sample-ko-en")
    with pytest.raises(PipelineError, match="train.epochs"):
        set_params(path, {"train.epochs": "lots"})
    assert load_params(path).train.epochs == params.train.epochs  # the file was not touched


def test_set_params_takes_any_depth_and_names_a_wrong_key(tmp_path):
    from pipeline.overrides import set_params

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    set_params(path, {"model.transformer.enc_layers": 6, "model.transformer.dec_layers": 1, "train.epochs": 2})
    params = load_params(path)
    assert (params.model.transformer.enc_layers, params.model.transformer.dec_layers) == (6, 1)
    assert params.model.transformer.heads == 4 and params.train.epochs == 2  # the rest of the block kept
    with pytest.raises(PipelineError, match=r"model.transformer.layerz: no such setting; model.transformer has "
                                            r"heads, ff_dim"):
        set_params(path, {"model.transformer.layerz": 1})


def test_an_empty_params_file_is_one_line(tmp_path):
    for text in ("", "# only a comment\n"):
        assert _error(tmp_path, text).endswith("params.yaml: empty; it must hold the params sections (the "
                                               "project's own: git checkout params.yaml)")
    assert "not a mapping of params sections (got list)" in _error(tmp_path, "- a\n- b\n")
