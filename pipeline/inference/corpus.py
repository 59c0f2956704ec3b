"""Translating a whole corpus in resumable chunks: what distillation (the teacher translates train) and
back-translation (a reverse model translates monolingual text) both do, for hours on a CPU.

Each chunk of ``CHUNK`` sentences is saved in a folder as soon as it is done, so a killed or failed run
resumes at the first missing chunk; the caller keys the folder by everything that decides the output (the
model's weights, the decoding, the chunk size, the input), so no chunk of another model or corpus is reused.
The corpus streams through and is never held whole; progress lines look like train's, for the flow's bar.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.common import atomic_file, read_lines
from pipeline.inference.translator import Translator

log = logging.getLogger(__name__)

CHUNK = 2000  # sentences per saved chunk: a few minutes of a CPU's work at most


def chunks_of(path: Path, size: int) -> Iterator[list[str]]:
    """The file's lines, ``size`` at a time: a corpus of any length is never held whole."""
    with open(path, encoding="utf-8") as fh:
        while part := [line.rstrip("\n") for line in itertools.islice(fh, size)]:
            yield part


def translate_in_chunks(translator: Translator, source: Path, folder: Path, what: str, prepared: bool
                        ) -> Iterator[tuple[list[str], list[str]]]:
    """Each chunk of ``source``'s lines with its translations; every chunk's translations are saved in ``folder``
    and reused when they are there, so an interrupted run resumes at its first missing chunk. ``prepared``: the
    lines are as the clean stage wrote them (else the translator prepares them as ``translate`` does)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(source, encoding="utf-8") as fh:
        total = sum(1 for _ in fh)
    start, done, done_before = time.perf_counter(), 0, 0
    for n, part in enumerate(tqdm(chunks_of(source, CHUNK), desc=what, unit="chunk", total=-(-total // CHUNK),
                                  disable=None)):
        saved = folder / f"{n:06d}.txt"
        done += len(part)
        if saved.exists() and len(lines := read_lines(saved)) == len(part):
            done_before += len(part)
            yield part, lines
            continue
        with torch.inference_mode():
            lines = translator.translate(part, prepared=prepared)
        with atomic_file(saved, encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
        rate = (done - done_before) / max(time.perf_counter() - start, 1e-9)
        # the flow draws train's "progress" lines as a bar: the same format here
        log.info("progress %5.1f%% | %d/%d sentences | %.1f sentences/s | %.0f min left",
                 100 * done / total, done, total, rate, (total - done) / max(rate, 1e-9) / 60)
        yield part, lines


def spent(folder: Path, what: str, report: dict) -> None:
    """The chunks in ``folder`` are spent once the stage's output is in place: removed; the summary logged."""
    shutil.rmtree(folder, ignore_errors=True)
    log.info("%s: %d sentences in %.0f s (%.1f sentences/s; %d empty translations dropped)", what,
             report["sentences"], report["seconds"], report["sentences_per_sec"], report["empty_translations"])


def tally(sentences: int, pairs: int, seconds: float) -> dict:
    """What a corpus translation reports: sentences, the pairs kept (an empty translation teaches nothing, and is
    dropped), seconds and sentences/s."""
    return {"sentences": sentences, "pairs": pairs, "empty_translations": sentences - pairs,
            "seconds": round(seconds, 1), "sentences_per_sec": round(sentences / max(seconds, 1e-9), 2)}
