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
missing chunk. The key hashes the teacher's weights, the decoding settings, the chunk size and the sources,
so no chunk of another teacher or corpus is ever reused. The corpus streams through chunk by chunk and is
never held whole; the outputs move into place only once every chunk is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time

from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, sha256_of, stage_outputs
from pipeline.config import Params, Paths
from pipeline.decoding import from_params
from pipeline.device import choose_device
from pipeline.inference.corpus import CHUNK, spent, tally, translate_in_chunks
from pipeline.inference.ensemble import ensemble_translator
from pipeline.inference.translator import Translator

log = logging.getLogger(__name__)

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
    train = files[f"train.{src}"]
    key = hashlib.sha256(json.dumps([members, decoding, CHUNK, sha256_of(train)]).encode()).hexdigest()[:16]
    sentences = pairs = 0
    tic = time.perf_counter()
    with stage_outputs() as outputs:
        out = outputs.dir(student.clean)
        with open(out / f"train.{src}", "w", encoding="utf-8") as fs, \
                open(out / f"train.{tgt}", "w", encoding="utf-8") as ft:
            for part, hypotheses in translate_in_chunks(translator, train, paths.checkpoints / "distill" / key,
                                                        "distill", prepared=True):
                kept = [(s, h) for s, h in zip(part, hypotheses, strict=True) if h.strip()]
                fs.writelines(s + "\n" for s, _ in kept)
                ft.writelines(h + "\n" for _, h in kept)
                sentences, pairs = sentences + len(part), pairs + len(kept)
        seconds = time.perf_counter() - tic
        for name, f in files.items():
            if not name.startswith("train."):
                shutil.copyfile(f, out / name)
        report = tally(sentences, pairs, seconds) | {"teacher": members, "decoding": decoding}
        outputs.json(student.metrics / "distill.json", report)
    spent(paths.checkpoints / "distill", "distilled", report)
    return report


def main() -> None:
    stage_main("distill", run)


if __name__ == "__main__":
    run_command(main)
