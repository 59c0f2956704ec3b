"""Stage ``evaluate``: decode the test split and score it with sacrebleu (BLEU and chrF).

Writes ``metrics/eval.json`` (a DVC metric: ``dvc metrics show``), ``reports/test.hyp`` (every
hypothesis, in test order) and ``reports/samples.tsv`` (source, reference, hypothesis), and adds
the scores and samples to the training's MLflow run.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging

import sacrebleu
import torch
from tqdm import tqdm

from pipeline.cli import stage_main
from pipeline.common import PipelineError, read_lines, stage_outputs
from pipeline.config import Params, Paths
from pipeline.device import choose_device
from pipeline.tracking import connect
from pipeline.translator import Translator

log = logging.getLogger(__name__)

CHUNK = 2000  # sentences per progress step


@functools.cache
def _cjk_font() -> list[str]:
    """DejaVu has no Hangul/CJK glyphs: a font that has them, when one is installed."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist
             if any(k in f.name for k in ("CJK", "Nanum", "Noto Sans KR", "Malgun", "AppleGothic", "Source Han"))}
    return sorted(names)[:1]


def heatmap(attention: dict):
    """Source x target attention weights as a figure."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = [*_cjk_font(), "DejaVu Sans"]
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


def _log_to_training_run(paths: Paths, metrics: dict, samples: str, shown: list[tuple[str, dict | None]]) -> None:
    """Scores, samples and attention heatmaps go into the MLflow run of the training."""
    run_id = json.loads((paths.model / "run.json").read_text())["run_id"]
    mlflow = connect(paths.root)
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("training run %s is not in %s; scores are in metrics/eval.json only", run_id,
                    mlflow.get_tracking_uri())
        return
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: metrics[k] for k in ("bleu", "chrf", "bleu_lowercase")})
        mlflow.log_text(samples, "samples.tsv")
        for i, (_, attention) in enumerate(shown):
            if attention is not None:
                mlflow.log_figure(heatmap(attention), f"attention/test-{i:02d}.png")


def run(params: Params, paths: Paths) -> dict:
    """Translate data/clean/test.<src> and score it against test.<tgt>."""
    cfg = params.evaluate
    files = [paths.clean / f"test.{params.data.src}", paths.clean / f"test.{params.data.tgt}"]
    for f in files:
        if not f.exists():
            raise PipelineError(f"{f} not found; run the clean stage first")
    sources, references = read_lines(files[0]), read_lines(files[1])
    device = choose_device(params.train.device)
    translator = Translator.from_paths(paths, str(device), max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b,
                                       max_tokens=params.build.max_tokens, beam_size=cfg.beam_size,
                                       length_penalty=cfg.length_penalty)
    hypotheses: list[str] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(sources), CHUNK), desc="translate test", unit="chunk", disable=None):
            hypotheses += translator.translate(sources[start:start + CHUNK], preprocessed=True)
    bleu_metric = sacrebleu.BLEU()
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = sacrebleu.CHRF().corpus_score(hypotheses, [references])
    lower = sacrebleu.BLEU(lowercase=True).corpus_score(hypotheses, [references])
    metrics = {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "bleu_lowercase": round(lower.score, 2),
               "test_pairs": len(sources), "beam_size": cfg.beam_size,
               "bleu_signature": str(bleu_metric.get_signature())}
    table = io.StringIO(newline="")
    writer = csv.writer(table, delimiter="\t")
    writer.writerow(["source", "reference", "hypothesis"])
    writer.writerows(zip(sources[: cfg.samples], references[: cfg.samples], hypotheses[: cfg.samples], strict=True))
    with stage_outputs() as outputs:  # in place only once MLflow has the scores too
        outputs.json(paths.metrics / "eval.json", metrics)
        with outputs.open(paths.reports / "test.hyp", encoding="utf-8") as fh:
            fh.writelines(h + "\n" for h in hypotheses)
        with outputs.open(paths.reports / "samples.tsv", encoding="utf-8", newline="") as fh:
            fh.write(table.getvalue())
        _log_to_training_run(paths, metrics, table.getvalue(),
                             translator.translate_with_attention(sources[: cfg.heatmaps], preprocessed=True))
    log.info("test BLEU %.2f, chrF %.2f on %d pairs", bleu.score, chrf.score, len(sources))
    return metrics


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
