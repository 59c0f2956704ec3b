"""Distillation's parts: the student's params, the off switch, and a distill run that resumes from its chunks.
The whole of it (teacher -> distill -> student -> int8 -> registry -> HTTP) is in test_e2e.py."""

import json
from typing import ClassVar

import pytest
import torch

from pipeline.common import PipelineError
from pipeline.config import Params, Paths, parse_params
from pipeline.decoding import Decoding
from pipeline.inference import corpus
from pipeline.inference.translator import Translator
from pipeline.models import build_model
from pipeline.switch import declared_outputs, write_markers
from pipeline.tokens import load_tokenizers
from tests.conftest import ROOT


def test_the_student_is_the_params_with_its_sections_laid_over():
    params = Params.model_validate({"model": {"hidden": 128}, "distill": {"student": {
        "model": {"arch": "transformer", "emb_dim": 64, "hidden": 64, "transformer": {"dec_layers": 1}},
        "train": {"embeddings": "random", "lr": 0.003}}}})
    student = params.student()
    assert (student.model.arch, student.model.hidden, student.model.transformer.dec_layers) == ("transformer", 64, 1)
    assert student.model.transformer.enc_layers == params.model.transformer.enc_layers  # merged, not replaced
    assert (student.train.lr, student.train.epochs, student.distill.student) == (0.003, params.train.epochs, {})
    assert params.model.arch == "rnn"


@pytest.mark.parametrize(("student", "message"), [
    ({"model": {"arch": "transformer", "hidden": 96, "emb_dim": 96, "transformer": {"heads": 5}}},
     "distill.student: the student is not valid: model: hidden (96) must be divisible by transformer.heads (5)"),
    ({"evaluate": {"beam_size": 2}}, "student may set the model, train and build sections, not evaluate"),
])
def test_a_bad_student_is_one_line(tmp_path, student, message):
    with pytest.raises(PipelineError) as error:
        parse_params(json.dumps({"distill": {"student": student}}), tmp_path / "params.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_rnn_student_for_ctranslate2_is_refused_before_it_trains(tmp_path):
    text = json.dumps({"distill": {"enabled": True, "student": {"model": {"arch": "rnn"}}}})
    with pytest.raises(PipelineError, match="distill.quantization: 'int8' exports the student to CTranslate2"):
        parse_params(text, tmp_path / "params.yaml")
    parse_params(json.dumps({"distill": {"enabled": True, "quantization": "none",
                                         "student": {"model": {"arch": "rnn"}}}}), tmp_path / "params.yaml")


def test_off_every_declared_output_becomes_a_marker(tmp_path):
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    outputs = declared_outputs(tmp_path / "dvc.yaml", "student_train")
    assert {p.relative_to(tmp_path).as_posix() for p in outputs} == {
        "models/student/model.pt", "models/student/run.json", "dvclive/student/plots", "metrics/student/train.json",
        "dvclive/student/metrics.json"}
    (tmp_path / "dvclive/student/plots/metrics").mkdir(parents=True)
    (tmp_path / "dvclive/student/plots/metrics/valid_loss.tsv").write_text("step\tvalid_loss\n1\t3.2\n")
    write_markers(outputs)
    assert json.loads((tmp_path / "models/student/model.pt").read_text()) == {"enabled": False}
    assert [p.name for p in (tmp_path / "dvclive/student/plots").rglob("*")] == ["off.json"]  # nothing stale kept


class Watched(Translator):
    """A real translator that records the chunks it is given, and is killed after ``budget`` of them."""

    budget: ClassVar[int | None] = None
    seen: ClassVar[list[int]] = []

    def translate(self, sentences, prepared=False):
        if Watched.budget == 0:
            raise KeyboardInterrupt
        if Watched.budget is not None:
            Watched.budget -= 1
        Watched.seen.append(len(sentences))
        return super().translate(sentences, prepared)


def test_an_interrupted_distill_resumes_at_its_first_missing_chunk(tiny_project, tmp_path, monkeypatch):
    params, paths = tiny_project
    src_tok, tgt_tok = load_tokenizers(paths.tokenizer)
    torch.manual_seed(0)
    model = build_model(**params.model.fields(src_tok.get_vocab_size(), tgt_tok.get_vocab_size(), False)).eval()
    parts = (model, src_tok, tgt_tok, params.clean.preprocessing, params.build.max_len, Decoding(1))
    sources = tmp_path / "train.ko"
    sources.write_text("".join((paths.clean / "train.ko").read_text(encoding="utf-8").splitlines(True)[:120]),
                       encoding="utf-8")
    monkeypatch.setattr(corpus, "CHUNK", 50)  # three chunks: 50, 50, 20

    def translations(translator: Translator, folder: str) -> list[str]:
        chunks = corpus.translate_in_chunks(translator, sources, tmp_path / folder, "distill", prepared=True)
        return [h for _, part in chunks for h in part]

    expected = translations(Translator(*parts), "fresh")
    assert len(expected) == 120
    monkeypatch.setattr(Watched, "budget", 2)
    with pytest.raises(KeyboardInterrupt):
        translations(Watched(*parts), "chunks")
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == ["000000.txt", "000001.txt"]
    monkeypatch.setattr(Watched, "budget", None)
    monkeypatch.setattr(Watched, "seen", [])
    assert translations(Watched(*parts), "chunks") == expected
    assert Watched.seen == [20]


def test_student_paths_share_the_tokenizers_and_held_out_splits(tmp_path):
    teacher, student = Paths(tmp_path), Paths(tmp_path, "student")
    assert (student.tokenizer, student.embeddings, student.original) == (teacher.tokenizer, teacher.embeddings,
                                                                         teacher.original)
    assert student.clean == tmp_path / "data/distilled" and student.model == tmp_path / "models/student"
    assert len({teacher.dataset, student.dataset, teacher.checkpoints, student.checkpoints}) == 4
