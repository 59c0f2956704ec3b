"""Korean↔English on real text: preprocessing measured, then both directions and both architectures.

Data (../shared/corpora/ko-en, read in place): ``open.train`` (78k human-translated pairs: Tatoeba,
Django and Python documentation, the Bible) to train on, ``flores200.devtest`` (1,012 general-domain
pairs) as the pipeline's test split, and ``news.test`` (2,000 pairs) as a second general-domain test.
Every 50th pair of open.train is held out here as an in-domain test set (written to the scratch
directory, never to the project), so that all runs are scored on the same sentences whatever their
preprocessing. BLEU uses the tokenizer that fits the target (ko-mecab for Korean, 13a for English);
its signature is printed with it.

* ``ablations``: BiGRU + Bahdanau ko→en, one preprocessing change per row against a base row, the
  same seed and time budget each (random embeddings, to measure the preprocessing alone).
* ``main``: a recipe (pipeline/recipes/<direction>.yaml) with one architecture under a time budget:
  learning curve, BLEU/chrF on FLORES, news and in-domain, and 10 FLORES translations beside the
  references.

    python bench/korean.py ablations --minutes 6 --out bench/out/ko-ablations
    python bench/korean.py main --direction ko-en --arch rnn --minutes 25 --out bench/out/ko-en-rnn
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
from pathlib import Path

import sacrebleu
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
KO_EN = ROOT.parent / "shared" / "corpora" / "ko-en"
sys.path.insert(0, str(ROOT))

from pipeline import build, clean, download, embed, tokenizer, train  # noqa: E402
from pipeline.common import setup_logging  # noqa: E402
from pipeline.config import RECIPES, Paths, load_params, merged  # noqa: E402
from pipeline.scoring import bleu_metric  # noqa: E402
from pipeline.translator import Decoding, Translator  # noqa: E402

MODELS = {
    "rnn": {"model": {"arch": "rnn", "emb_dim": 128, "hidden": 256, "dropout": 0.3},
            "train": {"lr": 0.002, "scheduler": "cosine", "warmup_steps": 100, "label_smoothing": 0.1}},
    "transformer": {"model": {"arch": "transformer", "emb_dim": 256, "hidden": 256, "dropout": 0.1,
                              "transformer": {"heads": 4, "ff_dim": 1024, "enc_layers": 3, "dec_layers": 3}},
                    # cosine over the time budget: noam's 500 warmup steps would fill a short budget
                    "train": {"lr": 0.001, "scheduler": "cosine", "warmup_steps": 100, "label_smoothing": 0.1}},
}
ABLATIONS = {  # one change each against "base"
    "base": {},
    "NFC instead of NFKC": {"clean": {"normalize": "NFC"}},
    "Korean morphemes (kiwipiepy)": {"clean": {"korean_morphemes": True}},
    "reST markup stripped": {"clean": {"strip_markup": True}},
    "vocabulary 16,000 per side": {"tokenize": {"vocab_size": 16000}},
    "joint vocabulary 16,000": {"tokenize": {"vocab_size": 16000, "joint": True}},
}
BASE = {"clean": {"normalize": "NFKC"}, "tokenize": {"vocab_size": 8000, "joint": False}}


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


def held_out(scratch: Path) -> dict[str, dict[str, Path]]:
    """open.train without every 50th pair (train), those pairs (in-domain test), FLORES and news (gz, in place)."""
    corpus = scratch / "corpus"
    if not (corpus / "train.en").exists():
        corpus.mkdir(parents=True, exist_ok=True)
        for lang in ("ko", "en"):
            lines = _lines(KO_EN / f"open.train.{lang}.gz")
            (corpus / f"train.{lang}").write_text("".join(x + "\n" for i, x in enumerate(lines) if i % 50 != 49),
                                                  encoding="utf-8")
            (corpus / f"indomain.{lang}").write_text("".join(x + "\n" for i, x in enumerate(lines) if i % 50 == 49),
                                                     encoding="utf-8")
    return {"train": {lang: corpus / f"train.{lang}" for lang in ("ko", "en")},
            "in-domain": {lang: corpus / f"indomain.{lang}" for lang in ("ko", "en")},
            "flores": {lang: KO_EN / f"flores200.devtest.{lang}.gz" for lang in ("ko", "en")},
            "news": {lang: KO_EN / f"news.test.{lang}.gz" for lang in ("ko", "en")}}


def _project(root: Path, overrides: dict) -> tuple:
    root.mkdir(parents=True, exist_ok=True)
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return load_params(root / "params.yaml"), Paths(root)


def _split(files: dict, name: str, src: str, tgt: str) -> dict:
    return {side: {"url": str(files[name][lang])} for side, lang in (("src", src), ("tgt", tgt))}


def _corpus(files: dict, src: str, tgt: str) -> dict:
    custom = {"train": _split(files, "train", src, tgt), "test": _split(files, "flores", src, tgt)}
    return {"data": {"corpus": "custom", "src": src, "tgt": tgt, "custom": custom}}


def score(translator: Translator, files: dict, src: str, tgt: str) -> dict[str, tuple[float, float, list[str]]]:
    """BLEU, chrF and the hypotheses on each test set (raw sentences, preprocessed as the model was trained)."""
    out = {}
    for name in ("in-domain", "flores", "news"):
        read = _lines if files[name][src].suffix == ".gz" else lambda p: p.read_text(encoding="utf-8").splitlines()
        sources, references = read(files[name][src]), read(files[name][tgt])
        with torch.inference_mode():
            hypotheses = translator.translate(sources)
        bleu = bleu_metric(tgt).corpus_score(hypotheses, [references]).score
        chrf = sacrebleu.CHRF().corpus_score(hypotheses, [references]).score
        out[name] = (bleu, chrf, hypotheses)
    return out


def _train_and_score(root: Path, overrides: dict, files: dict, src: str, tgt: str, embed_stage: bool = False):
    params, paths = _project(root, overrides)
    for stage in (download, clean, tokenizer, *([embed] if embed_stage else []), build):
        stage.run(params, paths)
    trained = train.run(params, paths)
    e = params.evaluate
    translator = Translator.from_file(paths.model / "model.pt", decoding=Decoding(
        e.beam_size, e.length_penalty, e.max_len_a, e.max_len_b, params.build.max_tokens))
    return params, paths, trained, score(translator, files, src, tgt)


def ablations(args: argparse.Namespace) -> None:
    files = held_out(args.out)
    common = merged(merged(merged(_corpus(files, "ko", "en"), MODELS["rnn"]), BASE), {
        "train": {"embeddings": "random", "epochs": 500, "max_minutes": args.minutes, "checkpoint_every": 100_000,
                  "experiment": "bench-korean-ablations"}})
    rows = []
    for name, change in ABLATIONS.items():
        root = args.out / name.split(" (")[0].replace(" ", "-").replace(",", "")
        _, _, trained, scores = _train_and_score(root, merged(common, change), files, "ko", "en")
        rows.append((name, trained["epochs"], scores))
        print(name, {k: (round(b, 2), round(c, 2)) for k, (b, c, _) in scores.items()}, flush=True)
    print(f"\nko→en, BiGRU + Bahdanau, {args.minutes:g} min each, random embeddings, beam 5; "
          f"BLEU {bleu_metric('en').get_signature()}\n")
    print("| preprocessing | epochs | in-domain BLEU | in-domain chrF | FLORES BLEU | FLORES chrF | news BLEU "
          "| news chrF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, epochs, s in rows:
        cells = " | ".join(f"{s[k][0]:.2f} | {s[k][1]:.2f}" for k in ("in-domain", "flores", "news"))
        print(f"| {name} | {epochs} | {cells} |")


def main_run(args: argparse.Namespace) -> None:
    src, tgt = args.direction.split("-")
    files = held_out(args.out.parent / "ko-corpus")
    recipe = yaml.safe_load((RECIPES / f"{args.direction}.yaml").read_text(encoding="utf-8"))
    recipe["data"]["custom"]["train"] = _split(files, "train", src, tgt)  # open.train without the held-out pairs
    overrides = merged(merged(recipe, MODELS[args.arch]), {
        "train": {"epochs": 500, "max_minutes": args.minutes, "checkpoint_every": 100_000,
                  "keep_checkpoints": 5, "average_last": 5, "experiment": "bench-korean",
                  "embeddings": "pretrained" if args.arch == "rnn" else "random"}})
    _, paths, trained, scores = _train_and_score(args.out, overrides, files, src, tgt,
                                                      embed_stage=args.arch == "rnn")
    history = torch.load(paths.checkpoints / "last.pt", weights_only=True)["state"]["history"]
    print(f"\n{src}→{tgt}, {args.arch}, {args.minutes:g} min; BLEU {bleu_metric(tgt).get_signature()}; "
          f"chrF {sacrebleu.CHRF().get_signature()}")
    print("\n| epoch | step | train loss | valid loss | valid ppl |\n|---:|---:|---:|---:|---:|")
    for row in history:
        print(f"| {row['epoch']} | {row['step']} | {row['train_loss']:.3f} | {row['valid_loss']:.3f} | "
              f"{row['valid_ppl']:.1f} |")
    print(f"\naveraged checkpoints: {trained.get('averaged_checkpoints', 0)}; "
          f"tokens/s {trained['train_tokens_per_sec']:.0f}")
    print("\n| test set | BLEU | chrF |\n|---|---:|---:|")
    for name, (bleu, chrf, _) in scores.items():
        print(f"| {name} | {bleu:.2f} | {chrf:.2f} |")
    sources, references = _lines(files["flores"][src]), _lines(files["flores"][tgt])
    print("\n| FLORES source | reference | translation |\n|---|---|---|")
    for i in range(0, 1000, 100):
        print(f"| {sources[i]} | {references[i]} | {scores['flores'][2][i]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ablations", "main"])
    parser.add_argument("--direction", choices=["ko-en", "en-ko"], default="ko-en")
    parser.add_argument("--arch", choices=sorted(MODELS), default="rnn")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "checkpoints", ignore_errors=True)
    ablations(args) if args.mode == "ablations" else main_run(args)


if __name__ == "__main__":
    main()
