"""Stage ``backtranslate``: a reverse-direction model turns monolingual target-language text into synthetic
training pairs (Sennrich et al. 2016), the biggest single lever for a low-resource pair.

The model (``backtranslate.model``: a model file, or a registry URI such as ``models:/nmt-ko-en-en-ko@champion``)
translates every line of ``data.monolingual`` (as the download stage left it in ``data/raw/mono/``) from the
target language into the source language, with the evaluate section's decoding. ``data/backtranslated/`` holds
the pairs (synthetic source, real target) in ``data/raw``'s layout with a manifest of one train source,
``backtranslated`` (its weight and tag from the params; tagged back-translation, Caswell et al. 2019, puts a
token such as ``<bt>`` before each synthetic source so that the model can tell them apart); the clean stage
filters and merges it like any other source, with its own row in ``metrics/clean.json``.
``metrics/backtranslate.json`` reports sentences, seconds, sentences/s and the model.

Translating takes hours on a CPU, so it goes in resumable chunks (``pipeline.inference.corpus``) keyed by the
model's bytes, the decoding and the text: a killed run resumes at its first missing chunk. Off by default
(``backtranslate.enabled``): ``pipeline.switch`` then writes a marker in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from pipeline import raw
from pipeline.cli import run_command, stage_main
from pipeline.common import PipelineError, sha256_of, stage_outputs
from pipeline.config import Params, Paths
from pipeline.decoding import from_params
from pipeline.device import choose_device
from pipeline.inference.corpus import CHUNK, spent, tally, translate_in_chunks
from pipeline.inference.serving import load_translator
from pipeline.inference.translator import Translator

log = logging.getLogger(__name__)

NAME = "backtranslated"  # its row in the clean report


def reverse_model(params: Params, paths: Paths) -> tuple[Translator, str]:
    """The target-to-source translator and what identifies its weights (a file's sha256, or the URI)."""
    reference = params.backtranslate.model
    assert reference is not None  # the params model checks it
    device, decoding = str(choose_device(params.train.device)), from_params(params).to_dict()
    if ":/" in reference:  # models:/..., runs:/...: the registry resolves it
        return load_translator(reference, paths.root, decoding, device), reference
    path = paths.root / reference
    if not path.is_file():
        raise PipelineError(f"{path}: not found (backtranslate.model); give a model file from the project root, "
                            "or a registry URI such as models:/<name>@champion")
    translator = load_translator(str(path), paths.root, decoding, device)
    wanted = (params.data.tgt, params.data.src)
    if None not in translator.languages and translator.languages != wanted:
        raise PipelineError(f"{path} translates {'-'.join(map(str, translator.languages))}; back-translation needs a "
                            f"{'-'.join(wanted)} model (target to source)")
    return translator, sha256_of(path)


def _monolingual(paths: Paths, tgt: str) -> Path:
    """Every monolingual source's lines in one file (in the order of params.yaml), to translate in chunks."""
    manifest = raw.read_manifest(paths.raw)
    sources = manifest["sources"].get("mono", [])
    if not sources:
        raise PipelineError("data.monolingual gave no text (see data/raw/manifest.json: missing); back-translation "
                            "needs target-language text")
    joined = paths.checkpoints / "backtranslate" / f"monolingual.{tgt}"
    joined.parent.mkdir(parents=True, exist_ok=True)
    with open(joined, "wb") as out:
        for info in sources:
            with open(paths.raw / "mono" / f"{info['name']}.{tgt}", "rb") as fh:
                shutil.copyfileobj(fh, out)
    return joined


def run(params: Params, paths: Paths) -> dict:
    """Translate data.monolingual with the reverse model into data/backtranslated/."""
    src, tgt, cfg = params.data.src, params.data.tgt, params.backtranslate
    text = _monolingual(paths, tgt)
    translator, model_id = reverse_model(params, paths)
    decoding = translator.decoding.to_dict()
    key = hashlib.sha256(json.dumps([model_id, decoding, CHUNK, sha256_of(text)]).encode()).hexdigest()[:16]
    sentences = pairs = 0
    tic = time.perf_counter()
    with stage_outputs() as outputs:
        out = outputs.dir(paths.backtranslated)

        def synthetic():
            nonlocal sentences, pairs
            for part, hypotheses in translate_in_chunks(translator, text, text.parent / key, "backtranslate",
                                                        prepared=False):
                sentences += len(part)
                for target, source in zip(part, hypotheses, strict=True):
                    if source.strip():  # an empty translation teaches nothing
                        pairs += 1
                        yield source, target

        lines = raw.write_pairs(out, "train", NAME, src, tgt, synthetic())
        seconds = time.perf_counter() - tic
        info = {"name": NAME, "kind": "backtranslation", "lines": lines, "model": cfg.model, "weight": cfg.weight,
                **({"tag": cfg.tag} if cfg.tag else {})}
        raw.write_manifest(out, src, tgt, {"train": [info]}, [])
        report = tally(sentences, pairs, seconds) | {"model": cfg.model, "model_id": model_id, "decoding": decoding,
                                                     "tag": cfg.tag}
        outputs.json(paths.metrics / "backtranslate.json", report)
    spent(paths.checkpoints / "backtranslate", "back-translated", report)
    return report


def main() -> None:
    stage_main("backtranslate", run)


if __name__ == "__main__":
    run_command(main)
