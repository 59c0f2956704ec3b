"""Distillation on Multi30k de→en: the teacher, an ensemble, the distilled student, the same student trained on
the original corpus, and how fast each translates test_2016_flickr.

The teacher is a project trained by ``bench/multi30k.py`` (the 25-minute Transformer). In that project this
runs the pipeline's own stages, as ``distill.enabled: true`` would: ``distill`` (the teacher translates train),
then build, train and evaluate with ``--role student`` (the student is exported to CTranslate2 int8 and
registered). The same student architecture and budget trained on the original pairs, in a second project
sharing the teacher's data stages, is the row that says what distillation bought. Every row is scored and timed
here in one process, one after the other (beam 5, the test sources as downloaded, sacrebleu's default BLEU and
chrF with 95% intervals): PyTorch for all, CTranslate2 int8 for the students too.

    python bench/multi30k.py --arch transformer --minutes 25 --out bench/out/m30k-transformer   # the teacher
    python bench/distill.py --teacher bench/out/m30k-transformer --minutes 25 --out bench/out/distill
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import allocator  # noqa: E402
from pipeline.checkpoint import load_checkpoint, load_weights  # noqa: E402
from pipeline.common import read_lines, setup_logging  # noqa: E402
from pipeline.config import STUDENT, Paths, load_params  # noqa: E402
from pipeline.decoding import from_params  # noqa: E402
from pipeline.inference.ct2 import ct2_translator  # noqa: E402
from pipeline.inference.ensemble import ensemble_translator  # noqa: E402
from pipeline.inference.translator import Translator  # noqa: E402
from pipeline.overrides import merged  # noqa: E402
from pipeline.scoring import corpus_scores  # noqa: E402
from pipeline.stages import build, distill, evaluate, train  # noqa: E402


def scored(name: str, translator: Translator, paths: Paths, src: str, tgt: str) -> dict:
    """BLEU/chrF with their intervals, and sentences/s, of ``translator`` on the project's test split."""
    sources, references = read_lines(paths.original / f"test.{src}"), read_lines(paths.original / f"test.{tgt}")
    tic = time.perf_counter()
    with torch.inference_mode():
        hypotheses = translator.translate(sources)
    seconds = time.perf_counter() - tic
    scores = corpus_scores(hypotheses, references, tgt)
    row = {"row": name, "bleu": scores["bleu"], "bleu_ci": scores["bleu_ci"], "chrf": scores["chrf"],
           "chrf_ci": scores["chrf_ci"], "seconds": round(seconds, 1),
           "sentences_per_sec": round(len(sources) / seconds, 1)}
    print(json.dumps(row), flush=True)
    return row | {"bleu_signature": scores["bleu_signature"]}


def student_overlay(minutes: float) -> dict:
    """The default student (config.STUDENT) under the bench's time budget, on the teacher's schedule."""
    return merged(STUDENT, {"train": {"max_minutes": minutes, "epochs": 200, "experiment": "bench-distill"}})


def ensemble_members(model_file: Path, checkpoints: Path, n: int) -> list[Path]:
    """The last ``n`` step checkpoints whose weights are not the model's own: when the best epoch is the last,
    the newest step checkpoint *is* the model, and an ensemble with it would count the model twice."""
    model = load_weights(model_file)
    members = []
    for step in sorted(checkpoints.glob("step-*.pt"), reverse=True):
        weights = load_checkpoint(step)["model"]
        if not all(torch.equal(model[k], weights[k]) for k in model):
            members.append(step)
        if len(members) == n:
            break
    return members[::-1]


def original_student(teacher: Path, out: Path, overlay: dict) -> Path:
    """A project that trains the student's architecture on the original pairs: the teacher's data stages and
    params, with the student's sections laid over them (so the one difference is the corpus)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for folder in ("data/raw", "data/clean", "data/tokenizer", "data/embeddings", "data/dataset", "metrics"):
        shutil.copytree(teacher / folder, out / folder)
    params = merged(yaml.safe_load((teacher / "params.yaml").read_text()), overlay)
    (out / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a project trained by bench/multi30k.py")
    parser.add_argument("--minutes", type=float, default=25.0, help="each student's training budget")
    parser.add_argument("--ensemble", type=int, default=2, help="step checkpoints beside the model in the "
                                                                 "ensemble row (0: no ensemble row)")
    parser.add_argument("--out", type=Path, required=True, help="where the original-data student is trained")
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    root = args.teacher.resolve()
    overlay = student_overlay(args.minutes)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["distill"] = merged(raw.get("distill", {}), {"enabled": True, "student": overlay, "quantization": "int8"})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    params, paths = load_params(root / "params.yaml"), Paths(root)
    src, tgt, decoding = params.data.src, params.data.tgt, from_params(params)
    rows = []

    teacher = Translator.from_file(paths.model / "model.pt", decoding=decoding)
    rows.append(scored("teacher (PyTorch)", teacher, paths, src, tgt))
    steps = ensemble_members(paths.model / "model.pt", paths.checkpoints, args.ensemble) if args.ensemble else []
    if steps:
        together = ensemble_translator(paths.model / "model.pt", steps, "cpu", decoding)
        rows.append(scored(f"ensemble: model + {len(steps)} step checkpoints (PyTorch)", together, paths, src, tgt))

    report = distill.run(params, paths)
    print(json.dumps({"distill": {k: report[k] for k in ("sentences", "pairs", "seconds", "sentences_per_sec")}}))
    student, student_paths = params.student(), Paths(root, "student")
    for stage in (build, train, evaluate):
        stage.run(student, student_paths)
    distilled = Translator.from_file(student_paths.model / "model.pt", decoding=decoding)
    rows.append(scored("student on the distilled corpus (PyTorch)", distilled, paths, src, tgt))
    rows.append(scored("student on the distilled corpus (CTranslate2 int8)", ct2_translator(distilled, "int8"),
                       paths, src, tgt))

    other = original_student(root, args.out.resolve(), {**overlay, "distill": {"enabled": False}})
    other_params, other_paths = load_params(other / "params.yaml"), Paths(other)
    train.run(other_params, other_paths)
    original = Translator.from_file(other_paths.model / "model.pt", decoding=decoding)
    rows.append(scored("student on the original corpus (PyTorch)", original, paths, src, tgt))
    rows.append(scored("student on the original corpus (CTranslate2 int8)", ct2_translator(original, "int8"),
                       paths, src, tgt))

    base = rows[0]["sentences_per_sec"]
    print(f"\nMulti30k de→en test_2016_flickr, beam {decoding.beam_size}; BLEU {rows[0]['bleu_signature']}")
    print("| row | BLEU | chrF | seconds | sentences/s | speed vs teacher |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['bleu']:.2f} ± {r['bleu_ci']:.2f} | {r['chrf']:.2f} ± {r['chrf_ci']:.2f} | "
              f"{r['seconds']:.1f} | {r['sentences_per_sec']:.1f} | {r['sentences_per_sec'] / base:.2f}x |")


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
