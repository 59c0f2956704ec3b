"""Stage ``evaluate``: translate the test split, score it with sacrebleu, register the model.

The field's protocol: the test sources as downloaded go through the translator (which prepares them
exactly as ``translate`` does) and the hypotheses are scored against the references as downloaded, every
line of them (``data/clean/original/test.*``; the clean stage never filters or rewrites a corpus's own
test split). BLEU (tokenised for the target language), chrF and chrF++ each come with a 95% bootstrap
confidence interval and sacrebleu's signature (``pipeline.scoring``).

Writes ``metrics/eval.json`` (a DVC metric: ``dvc metrics show``), ``reports/test.hyp`` (every
hypothesis, in test order) and ``reports/samples.tsv`` (source, reference, hypothesis). In the
training's MLflow run it logs the scores, the hypotheses, samples, attention heatmaps and the servable model
(``pipeline.inference.serving``), with the scores linked to that model, and registers it as a new version of
``registry.model_name``; ``metrics/eval.json`` says which. Promotion to ``@champion`` is not a stage
(it acts outside the repo): see ``pipeline/stages/promote.py``.

``--role student`` (the ``student_evaluate`` stage) does the same for the distilled student, in its folders,
registered as ``<name>-student``; with ``distill.quantization`` set it exports the student to CTranslate2
(``models/student/ct2``), and what is scored, timed and served is that export. Every evaluation records the
model's size on disk and the sentences per second of its test translation, so teacher and student compare.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline import model_card
from pipeline.cli import run_command, stage_main
from pipeline.common import Outputs, PipelineError, read_lines, stage_outputs, write_json
from pipeline.config import Params, Paths
from pipeline.decoding import from_params
from pipeline.device import choose_device
from pipeline.inference.serving import log_translator, model_name
from pipeline.inference.translator import Translator
from pipeline.scoring import corpus_scores, files_digest
from pipeline.tracking import MODEL_CARD, TEST_HYPOTHESES, connect

log = logging.getLogger(__name__)

CHUNK = 2000  # sentences per progress step


@functools.cache
def heatmap_fonts() -> list[str]:
    """Label fonts: NanumGothic for Hangul, then DejaVu Sans (matplotlib's own) for the rest.

    DejaVu has no Hangul, so Korean tokens came out as empty boxes on a machine without a CJK font.
    NanumGothic comes from the koreanize-matplotlib package, a declared dependency; the font file is
    registered directly (importing that package would change matplotlib's global settings).
    """
    import importlib.util

    from matplotlib import font_manager

    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        log.warning("koreanize-matplotlib is not installed: Hangul in attention heatmaps will show as boxes")
        return ["DejaVu Sans"]
    font_manager.fontManager.addfont(str(Path(spec.submodule_search_locations[0]) / "fonts" / "NanumGothic.ttf"))
    return ["NanumGothic", "DejaVu Sans"]


def heatmap(attention: dict):
    """Source x target attention weights as a figure."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = heatmap_fonts()
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    weights = attention["weights"]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * weights.shape[1] + 2), max(3, 0.4 * weights.shape[0] + 1.5)))
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(weights.shape[1]), attention["source"], rotation=90)
    ax.set_yticks(range(weights.shape[0]), attention["target"])
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _log_and_register(params: Params, paths: Paths, scores: dict, signatures: dict[str, str], samples: str,
                      hypotheses: dict[str, list[str]], translator: Translator, shown: list[tuple[str, dict | None]],
                      test_data: str, example: str, ct2: tuple[Path, str] | None, card: tuple[dict, dict]) -> dict:
    """Scores, hypotheses, samples, heatmaps, provenance, the model card and the servable model go into the
    training's MLflow run; the model is registered as a new version. Returns where it was registered (empty
    when the run is elsewhere)."""
    run_id = json.loads((paths.model / "run.json").read_text())["run_id"]
    mlflow = connect(paths.root)
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("training run %s is not in %s; scores are in metrics/eval.json only, nothing registered",
                    run_id, mlflow.get_tracking_uri())
        return {}
    name = model_name(params.data.name, params.data.src, params.data.tgt, params.registry.model_name)
    if paths.role != "teacher":  # the student is a model of its own, with its own @champion
        name += f"-{paths.role}"
    decoding = json.dumps(translator.decoding.to_dict())
    sources, test_sets = card
    judged = next(iter(test_sets))
    provenance = {"judged_on": judged, "test_sets": ",".join(test_sets), "licences": model_card.licences(sources)}
    with mlflow.start_run(run_id=run_id):
        logged = log_translator(mlflow, paths.model / "model.pt", translator.decoding, example, ct2)
        mlflow.log_metrics(scores, model_id=logged.model_id)  # on the run, and linked to the logged model
        mlflow.set_tags({"decoding": decoding, "test_data": test_data, **signatures, **provenance})
        mlflow.log_text("".join(h + "\n" for h in hypotheses[judged]), TEST_HYPOTHESES)
        for test_set, hyps in hypotheses.items():
            mlflow.log_text("".join(h + "\n" for h in hyps), f"evaluation/tests/{test_set}.hyp")
        mlflow.log_text(samples, "samples.tsv")
        mlflow.log_dict(sources, "data/sources.json")
        for i, (_, attention) in enumerate(shown):
            if attention is not None:
                mlflow.log_figure(heatmap(attention), f"attention/test-{i:02d}.png")
        version = mlflow.register_model(logged.model_uri, name, tags={
            "test_data": test_data, **{k: str(v) for k, v in scores.items()}, "run_id": run_id,
            "decoding": decoding, **signatures, **provenance})
        text = model_card.render(name, str(version.version), sources, test_sets, translator.decoding.to_dict(),
                                 "ctranslate2-" + ct2[1] if ct2 else "torch")
        mlflow.log_text(text, MODEL_CARD)
    log.info("registered %s version %s (%s)", name, version.version, logged.model_uri)
    return {"model_name": name, "model_version": str(version.version),
            "model_uri": f"models:/{name}/{version.version}", "model_card": text}


def engine(params: Params, paths: Paths, translator: Translator, outputs: Outputs
           ) -> tuple[Translator, tuple[Path, str] | None]:
    """What is scored and registered: the student on CTranslate2 (exported into ``paths.ct2``) when
    ``distill.quantization`` asks for it, else the model on PyTorch; and the export with its compute type."""
    quantization = params.distill.quantization
    if paths.role != "student":
        return translator, None
    if quantization == "none":  # dvc.yaml declares the export: say there is none
        write_json(outputs.dir(paths.ct2) / "off.json", {"quantization": "none"})
        return translator, None
    from pipeline.inference.ct2 import CT2Translator, export

    folder = export(translator, outputs.dir(paths.ct2), quantization)
    device = next(translator.model.parameters()).device.type
    return CT2Translator(translator, folder, quantization, device), (folder, quantization)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_sets(paths: Paths, src: str, tgt: str) -> dict[str, tuple[Path, list[str], list[str]]]:
    """The run's test sets as downloaded, in order (the first is judged): name -> (reference file, sources,
    references)."""
    if not paths.sources.exists():
        raise PipelineError(f"{paths.sources} not found; run the clean stage first")
    sets = {}
    for name in [t["name"] for t in json.loads(paths.sources.read_text(encoding="utf-8"))["test"]]:
        files = paths.test_set(name, src), paths.test_set(name, tgt)
        for f in files:
            if not f.exists():
                raise PipelineError(f"{f} not found; run the clean stage first")
        sets[name] = (files[1], read_lines(files[0]), read_lines(files[1]))
        if not sets[name][1]:
            raise PipelineError(f"{files[0]} is empty: the test set {name} has no sentences to translate")
    return sets


def _translate(translator: Translator, sources: list[str], what: str) -> tuple[list[str], float]:
    hypotheses: list[str] = []
    tic = time.perf_counter()
    with torch.inference_mode():
        for start in tqdm(range(0, len(sources), CHUNK), desc=f"translate {what}", unit="chunk", disable=None):
            hypotheses += translator.translate(sources[start:start + CHUNK])
    return hypotheses, time.perf_counter() - tic


def _samples(sources: list[str], references: list[str], hypotheses: list[str], n: int) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table, delimiter="\t")
    writer.writerow(["source", "reference", "hypothesis"])
    writer.writerows(zip(sources[:n], references[:n], hypotheses[:n], strict=True))
    return table.getvalue()


def run(params: Params, paths: Paths) -> dict:
    """Translate every test set as downloaded and score it against its references as downloaded
    (data/clean/original/tests/*); log and register the servable model. The first test set is the judged one:
    its scores are the top-level ones (and promotion's)."""
    cfg, src, tgt = params.evaluate, params.data.src, params.data.tgt
    sets = test_sets(paths, src, tgt)
    translator = Translator.from_file(paths.model / "model.pt", str(choose_device(params.train.device)),
                                      from_params(params))
    sources_info = json.loads(paths.sources.read_text(encoding="utf-8"))
    with stage_outputs() as outputs:  # in place only once MLflow has the scores and the model too
        translator, ct2 = engine(params, paths, translator, outputs)
        scored_sets: dict[str, dict] = {}
        hypotheses: dict[str, list[str]] = {}
        seconds = 0.0
        for name, (reference_file, sources, references) in sets.items():
            hypotheses[name], took = _translate(translator, sources, name)
            seconds += took
            scored_sets[name] = {**corpus_scores(hypotheses[name], references, tgt, f"{reference_file}"),
                                 "pairs": len(sources), "test_data": files_digest(
                                     [paths.test_set(name, src), reference_file]),
                                 **({"judged": True} if not scored_sets else {})}
        judged = next(iter(sets))
        scored = {k: v for k, v in scored_sets[judged].items() if k not in ("pairs", "test_data", "judged")}
        scores = {k: v for k, v in scored.items() if not isinstance(v, str)}
        signatures = {k: v for k, v in scored.items() if isinstance(v, str)}
        pairs = sum(s["pairs"] for s in scored_sets.values())
        speed = {"sentences_per_sec": round(pairs / max(seconds, 1e-9), 2),
                 "model_bytes": _size(ct2[0] if ct2 else paths.model / "model.pt")}
        scores |= speed | {f"test/{name}/{k}": v for name, sc in scored_sets.items() for k, v in sc.items()
                           if isinstance(v, float) and k != "bleu_lowercase"}
        _, sources, references = sets[judged]
        metrics = {**scored, **speed, "test_pairs": len(sources), "beam_size": cfg.beam_size,
                   "engine": f"ctranslate2-{ct2[1]}" if ct2 else "torch", "test_data": scored_sets[judged]["test_data"],
                   "judged_on": judged, "test_sets": scored_sets}
        samples = _samples(sources, references, hypotheses[judged], cfg.samples)
        for name, hyps in [("test", hypotheses[judged])] + [(f"tests/{n}", h) for n, h in hypotheses.items()]:
            with outputs.open(paths.reports / f"{name}.hyp", encoding="utf-8") as fh:
                fh.writelines(h + "\n" for h in hyps)
        with outputs.open(paths.reports / "samples.tsv", encoding="utf-8", newline="") as fh:
            fh.write(samples)
        with torch.inference_mode():
            shown = translator.translate_with_attention(sources[: cfg.heatmaps])
        registered = _log_and_register(params, paths, scores, signatures, samples, hypotheses, translator, shown,
                                       metrics["test_data"], sources[0], ct2, (sources_info, scored_sets))
        card = registered.pop("model_card", None) or model_card.render(
            model_name(params.data.name, src, tgt, params.registry.model_name), None, sources_info, scored_sets,
            translator.decoding.to_dict(), metrics["engine"])
        metrics |= registered
        with outputs.open(paths.reports / "model_card.md", encoding="utf-8") as fh:
            fh.write(card)
        outputs.json(paths.metrics / "eval.json", metrics)
    for name, sc in scored_sets.items():
        log.info("test %s%s: BLEU %.2f ± %.2f, chrF %.2f ± %.2f on %d pairs", name, " (judged)" if sc.get("judged")
                 else "", sc["bleu"], sc["bleu_ci"], sc["chrf"], sc["chrf_ci"], sc["pairs"])
    log.info("%s, %.1f sentences/s", metrics["engine"], speed["sentences_per_sec"])
    return metrics


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    run_command(main)
