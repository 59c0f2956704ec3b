"""CTranslate2: the exported Transformer decodes exactly as PyTorch does (float32), int8 runs, RNNs are refused."""

import subprocess
import sys

import pytest
import torch

from pipeline.common import PipelineError
from pipeline.decoding import Decoding
from pipeline.inference.translator import Translator
from pipeline.stages import train
from tests.conftest import ROOT
from tests.test_train_eval import _copy_project

pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def transformer(tiny_project, tmp_path_factory):
    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path_factory.mktemp("ct2"), {
        "model": {"arch": "transformer", "emb_dim": 32, "hidden": 32,
                  "transformer": {"ff_dim": 64, "enc_layers": 2, "dec_layers": 2, "positions": "sinusoidal"}},
        "train": {"epochs": 2, "embeddings": "random"}})
    train.run(params, paths)
    return paths


@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.0), (4, 0.0)])
def test_float32_export_decodes_exactly_as_pytorch(transformer, beam, alpha):
    from pipeline.inference.ct2 import ct2_translator

    sources = (transformer.original / "valid.ko").read_text(encoding="utf-8").splitlines()
    reference = Translator.from_file(transformer.model / "model.pt", decoding=Decoding(beam, alpha))
    with torch.inference_mode():
        expected = reference.translate(sources)
    assert ct2_translator(reference, "float32").translate(sources) == expected
    fast = ct2_translator(reference, "int8").translate(sources[:20])
    assert len(fast) == 20 and all(fast)


def test_an_rnn_is_refused_in_one_line(tiny_project, tmp_path):
    from pipeline.inference.ct2 import ct2_translator

    _, base = tiny_project
    params, paths = _copy_project(base, tmp_path / "rnn", {"train": {"epochs": 1}})
    train.run(params, paths)
    with pytest.raises(PipelineError, match="CTranslate2 runs Transformer models only"):
        ct2_translator(Translator.from_file(paths.model / "model.pt"))


def test_translate_cli_with_the_ctranslate2_engine(transformer):
    args = [sys.executable, "-m", "pipeline.inference.command", "--root", str(transformer.root),
            "나는 어제 책을 읽었다"]
    fast = subprocess.run([*args, "--engine", "ctranslate2"], capture_output=True, text=True, cwd=ROOT)
    assert fast.returncode == 0 and fast.stdout.strip(), fast.stderr[-2000:]
