"""Stage ``distill``: the trained model (the teacher) translates the train split, and its translations become
the student's corpus: sequence-level knowledge distillation (Kim & Rush 2016), the way mozilla/translations
and OPUS-MT make the small models they ship.

Writes ``data/distilled/``: ``train.<src>`` as the clean stage wrote it and ``train.<tgt>`` the teacher's
translations (beam, length penalty and length limit from the ``evaluate`` section; a pair whose translation
is empty is dropped and counted), ``valid.*`` and ``test.*`` copied from ``data/clean`` so that the student's
valid loss is measured against human references. ``metrics/student/distill.json`` reports sentences,
seconds, sentences/s and the teacher (its members' sha256: ``distill.ensemble`` files are not DVC deps).

Translating a large corpus takes hours on a CPU, so it goes in chunks of ``CHUNK`` sentences, each saved
under ``checkpoints/distill/<key>/`` as soon as it is done: a killed or failed run resumes at the first
missing chunk. The key hashes the teacher's weights, the decoding settings and the sources, so no chunk of
another teacher or corpus is ever reused. The outputs move into place only once every chunk is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.cli import stage_main
from pipeline.common import PipelineError, atomic_file, read_lines, sha256_of, stage_outputs
from pipeline.config import Params, Paths
from pipeline.decoding import from_params
from pipeline.device import choose_device
from pipeline.inference.ensemble import ensemble_translator
from pipeline.inference.translator import Translator

log = logging.getLogger(__name__)

CHUNK = 2000  # sentences per saved chunk: a few minutes of a CPU's work at most


def teacher(params: Params, paths: Paths) -> tuple[Translator, dict[str, str]]:
    """The teacher's translator (the model, or the ensemble of it and ``distill.ensemble``) and its members'
    sha256 by path."""
    model = paths.model / "model.pt"
    if not model.exists():
        raise PipelineError(f"{model} not found; run the train stage first")
    others = [paths.root / p for p in params.distill.ensemble]  # an absolute path stays itself
    for f in others:
        if not f.exists():
            raise PipelineError(f"{f}: not found (distill.ensemble lists it); give a model file or step "
                                "checkpoint, as a path from the project root")
    device, decoding = str(choose_device(params.train.device)), from_params(params)
    members = {str(f.relative_to(paths.root) if f.is_relative_to(paths.root) else f): sha256_of(f)
               for f in [model, *others]}
    if others:
        return ensemble_translator(model, others, device, decoding), members
    return Translator.from_file(model, device, decoding), members


def translate_in_chunks(translator: Translator, sources: list[str], folder: Path) -> list[str]:
    """Translations of ``sources``, chunk by chunk, each chunk saved in ``folder`` and reused when it is there."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    start, done_before = time.perf_counter(), 0
    chunks = range(0, len(sources), CHUNK)
    for n, first in enumerate(tqdm(chunks, desc="distill", unit="chunk", disable=None)):
        part, saved = sources[first:first + CHUNK], folder / f"{n:06d}.txt"
        if saved.exists() and len(lines := read_lines(saved)) == len(part):
            out += lines
            done_before += len(part)
            continue
        with torch.inference_mode():
            lines = translator.translate(part, prepared=True)  # train's sources are as clean wrote them
        with atomic_file(saved, encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
        out += lines
        rate = (len(out) - done_before) / max(time.perf_counter() - start, 1e-9)
        left = (len(sources) - len(out)) / max(rate, 1e-9) / 60
        # the flow draws train's "progress" lines as a bar: the same format here
        log.info("progress %5.1f%% | %d/%d sentences | %.1f sentences/s | %.0f min left",
                 100 * len(out) / len(sources), len(out), len(sources), rate, left)
    return out


def run(params: Params, paths: Paths) -> dict:
    """Translate the train split with the teacher into data/distilled, the student's corpus."""
    src, tgt = params.data.src, params.data.tgt
    student = Paths(paths.root, "student")
    files = {f"{split}.{lang}": paths.clean / f"{split}.{lang}" for split in ("train", "valid", "test")
             for lang in (src, tgt)}
    for f in files.values():
        if not f.exists():
            raise PipelineError(f"{f} not found; run the clean stage first")
    translator, members = teacher(params, paths)
    decoding = translator.decoding.to_dict()
    sources = read_lines(files[f"train.{src}"])
    key = hashlib.sha256(json.dumps([members, decoding, sha256_of(files[f"train.{src}"])]).encode()).hexdigest()[:16]
    chunks = paths.checkpoints / "distill" / key
    tic = time.perf_counter()
    hypotheses = translate_in_chunks(translator, sources, chunks)
    seconds = time.perf_counter() - tic
    kept = [(s, h) for s, h in zip(sources, hypotheses, strict=True) if h.strip()]
    report = {"sentences": len(sources), "pairs": len(kept), "empty_translations": len(sources) - len(kept),
              "seconds": round(seconds, 1), "sentences_per_sec": round(len(sources) / max(seconds, 1e-9), 2),
              "teacher": members, "decoding": decoding}
    with stage_outputs() as outputs:
        out = outputs.dir(student.clean)
        with open(out / f"train.{src}", "w", encoding="utf-8") as fs, \
                open(out / f"train.{tgt}", "w", encoding="utf-8") as ft:
            for s, h in kept:
                fs.write(s + "\n")
                ft.write(h + "\n")
        for name, f in files.items():
            if not name.startswith("train."):
                shutil.copyfile(f, out / name)
        outputs.json(student.metrics / "distill.json", report)
    shutil.rmtree(paths.checkpoints / "distill", ignore_errors=True)  # in place now: the chunks are spent
    log.info("distilled %d sentences in %.0f s (%.1f sentences/s; %d empty translations dropped)",
             len(sources), seconds, report["sentences_per_sec"], report["empty_translations"])
    return report


def main() -> None:
    stage_main("distill", run)


if __name__ == "__main__":
    main()
