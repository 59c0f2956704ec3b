"""Stage ``evaluate``: decode the test split, score it with sacrebleu (BLEU and chrF), register the model.

Writes ``metrics/eval.json`` (a DVC metric: ``dvc metrics show``), ``reports/test.hyp`` (every
hypothesis, in test order) and ``reports/samples.tsv`` (source, reference, hypothesis). In the
training's MLflow run it logs the scores, samples, attention heatmaps and the servable model
(``pipeline.serving``), with the scores linked to that model, and registers it as a new version of
``registry.model_name``; ``metrics/eval.json`` says which. Promotion to ``@champion`` is not a stage
(it acts outside the repo): see ``pipeline/promote.py``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
from pathlib import Path

import sacrebleu
import torch
from tqdm import tqdm

from pipeline.cli import stage_main
from pipeline.common import PipelineError, read_lines, stage_outputs
from pipeline.config import Params, Paths
from pipeline.device import choose_device
from pipeline.scoring import bleu_metric
from pipeline.serving import log_translator, model_name
from pipeline.tracking import connect
from pipeline.translator import Decoding, Translator

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


def test_data_hash(files: list[Path]) -> str:
    """What makes two test scores comparable: the exact test sentences and references."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _log_and_register(params: Params, paths: Paths, scores: dict, samples: str, translator: Translator,
                      shown: list[tuple[str, dict | None]], test_data: str, example: str,
                      scores_signatures: dict[str, str]) -> dict:
    """Scores, samples, heatmaps and the servable model go into the training's MLflow run; the model is
    registered as a new version. Returns where it was registered (empty when the run is elsewhere)."""
    run_id = json.loads((paths.model / "run.json").read_text())["run_id"]
    mlflow = connect(paths.root)
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("training run %s is not in %s; scores are in metrics/eval.json only, nothing registered",
                    run_id, mlflow.get_tracking_uri())
        return {}
    name = model_name(params.data.corpus, params.data.src, params.data.tgt, params.registry.model_name)
    with mlflow.start_run(run_id=run_id):
        logged = log_translator(mlflow, paths.model / "model.pt", translator.decoding, example)
        mlflow.log_metrics(scores, model_id=logged.model_id)  # on the run, and linked to the logged model
        mlflow.set_tags({"decoding": json.dumps(translator.decoding.to_dict()),
                         "bleu_signature": scores_signatures["bleu"], "chrf_signature": scores_signatures["chrf"]})
        mlflow.log_text(samples, "samples.tsv")
        for i, (_, attention) in enumerate(shown):
            if attention is not None:
                mlflow.log_figure(heatmap(attention), f"attention/test-{i:02d}.png")
        version = mlflow.register_model(logged.model_uri, name, tags={
            "test_data": test_data, **{k: str(v) for k, v in scores.items()}, "run_id": run_id,
            "decoding": json.dumps(translator.decoding.to_dict()),
            **{f"{k}_signature": v for k, v in scores_signatures.items()}})
    log.info("registered %s version %s (%s)", name, version.version, logged.model_uri)
    return {"model_name": name, "model_version": str(version.version),
            "model_uri": f"models:/{name}/{version.version}"}


def run(params: Params, paths: Paths) -> dict:
    """Translate data/clean/test.<src> and score it against test.<tgt>; log and register the servable model."""
    cfg = params.evaluate
    files = [paths.clean / f"test.{params.data.src}", paths.clean / f"test.{params.data.tgt}"]
    for f in files:
        if not f.exists():
            raise PipelineError(f"{f} not found; run the clean stage first")
    sources, references = read_lines(files[0]), read_lines(files[1])
    device = choose_device(params.train.device)
    decoding = Decoding(beam_size=cfg.beam_size, length_penalty=cfg.length_penalty, max_len_a=cfg.max_len_a,
                        max_len_b=cfg.max_len_b, max_tokens=params.build.max_tokens)
    translator = Translator.from_file(paths.model / "model.pt", str(device), decoding)
    hypotheses: list[str] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(sources), CHUNK), desc="translate test", unit="chunk", disable=None):
            hypotheses += translator.translate(sources[start:start + CHUNK], preprocessed=True)
    bleu_scorer, chrf_scorer = bleu_metric(params.data.tgt), sacrebleu.CHRF()
    bleu = bleu_scorer.corpus_score(hypotheses, [references])
    chrf = chrf_scorer.corpus_score(hypotheses, [references])
    lower = bleu_metric(params.data.tgt, lowercase=True).corpus_score(hypotheses, [references])
    scores = {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "bleu_lowercase": round(lower.score, 2)}
    metrics = {**scores, "test_pairs": len(sources), "beam_size": cfg.beam_size,
               "bleu_signature": str(bleu_scorer.get_signature()), "chrf_signature": str(chrf_scorer.get_signature()),
               "test_data": test_data_hash(files)}
    table = io.StringIO(newline="")
    writer = csv.writer(table, delimiter="\t")
    writer.writerow(["source", "reference", "hypothesis"])
    writer.writerows(zip(sources[: cfg.samples], references[: cfg.samples], hypotheses[: cfg.samples], strict=True))
    with stage_outputs() as outputs:  # in place only once MLflow has the scores and the model too
        with outputs.open(paths.reports / "test.hyp", encoding="utf-8") as fh:
            fh.writelines(h + "\n" for h in hypotheses)
        with outputs.open(paths.reports / "samples.tsv", encoding="utf-8", newline="") as fh:
            fh.write(table.getvalue())
        shown = translator.translate_with_attention(sources[: cfg.heatmaps], preprocessed=True)
        metrics |= _log_and_register(params, paths, scores, table.getvalue(), translator, shown,
                                     metrics["test_data"], sources[0],
                                     {"bleu": metrics["bleu_signature"], "chrf": metrics["chrf_signature"]})
        outputs.json(paths.metrics / "eval.json", metrics)
    log.info("test BLEU %.2f, chrF %.2f on %d pairs", bleu.score, chrf.score, len(sources))
    return metrics


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
