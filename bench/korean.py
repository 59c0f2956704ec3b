"""Korean↔English on real text: preprocessing measured, then both directions and both architectures.

Data (../shared/corpora/ko-en, read in place): ``open.train`` (78k human-translated pairs: Tatoeba,
Django and Python documentation, the Bible) to train on, ``flores200.devtest`` (1,012 general-domain
pairs) as the pipeline's test split, and ``news.test`` (2,000 pairs) as a second general-domain test.
Every 50th pair of open.train is held out here as an in-domain test set (written to the scratch
directory, never to the project), so that all runs are scored on the same sentences whatever their
preprocessing. BLEU uses the tokenizer that fits the target (ko-mecab for Korean, 13a for English);
its signature is printed with it.

* ``ablations``: ko→en, one preprocessing change per row against the ``ko-en`` recipe's own choices,
  the same model, seed and time budget each (random embeddings, to measure the preprocessing alone),
  scored on the in-domain held-out pairs and FLORES (greedy BLEU and chrF).
* ``forced``: the bits per character of the FLORES and news references under each ablation row's
  saved model (teacher-forced): comparable across vocabularies, and far steadier than the BLEU of an
  early model.
* ``stats``: what each preprocessing choice does to the data itself, without training: lines that
  NFKC changes (and which characters), lines with reST markup, tokens per sentence and the <unk>
  rate on FLORES and news of each vocabulary choice, and the morpheme split's speed and length.
* ``curve``: a project trained by the pipeline with a recipe (``make pipeline RECIPE=ko-en``): for the
  step checkpoints about every ``--every`` training minutes, the valid loss and the test split's
  BLEU/chrF under the evaluation protocol (the sources as downloaded through the translator, the
  references as downloaded, the project's decoding), and ten everyday sentences at ``--sentences-at``
  minutes: the answer to "how long must I train".
* ``main``: a recipe (pipeline/recipes/<direction>.yaml) with one architecture under a time budget:
  BLEU/chrF/bits-per-character on FLORES, news and in-domain, 10 FLORES translations beside the
  references, three everyday sentences, and the learning curve from step checkpoints every 200 steps.

Batches are 2,000 tokens (``--max-tokens``), not the pipeline's 6,000, so that a budget of minutes
takes about three times as many optimiser steps (a 10-minute BiGRU at 6,000 made 283); the two batch
sizes were not compared at equal time here.

    python bench/korean.py stats --out bench/out/ko-stats
    python bench/korean.py ablations --arch transformer --minutes 7 --beam 1 --out bench/out/ko-ablations
    python bench/korean.py ablations --rows "the recipe" ...   # one row again, after a change
    python bench/korean.py main --direction ko-en --arch transformer --minutes 10 --out bench/out/ko-en-transformer
    python bench/korean.py curve --project ../ko-en-long --out bench/out/ko-en-long-curve
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import sacrebleu
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
KO_EN = ROOT.parent / "shared" / "corpora" / "ko-en"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import scratch_project  # noqa: E402

from pipeline import allocator  # noqa: E402
from pipeline.checkpoint import load_checkpoint, load_model  # noqa: E402
from pipeline.common import setup_logging  # noqa: E402
from pipeline.config import Paths, load_params  # noqa: E402
from pipeline.dataset import Pairs, load_split, token_batches  # noqa: E402
from pipeline.decoding import from_params  # noqa: E402
from pipeline.inference.translator import Translator  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.overrides import RECIPES, merged, recipe_settings  # noqa: E402
from pipeline.scoring import bleu_metric, corpus_scores  # noqa: E402
from pipeline.stages import build, clean, download, embed, tokenizer, train  # noqa: E402
from pipeline.text import normalise, strip_markup  # noqa: E402
from pipeline.tokens import load_tokenizers, source_ids, target_ids  # noqa: E402

MODELS = {
    "rnn": {"model": {"arch": "rnn", "emb_dim": 128, "hidden": 256, "dropout": 0.3},
            "train": {"lr": 0.002, "scheduler": "cosine", "warmup_steps": 100, "label_smoothing": 0.1}},
    "transformer": {"model": {"arch": "transformer", "emb_dim": 256, "hidden": 256, "dropout": 0.1,
                              "transformer": {"heads": 4, "ff_dim": 1024, "enc_layers": 3, "dec_layers": 3}},
                    # cosine over the time budget: noam's 500 warmup steps would fill a short budget
                    "train": {"lr": 0.001, "scheduler": "cosine", "warmup_steps": 100, "label_smoothing": 0.1}},
}
ABLATIONS = {  # one change each against the recipe's preprocessing (pipeline/recipes/ko-en.yaml)
    "the recipe (NFKC, markup stripped, no morphemes, 8,000 per side)": {},
    "reST markup kept": {"clean": {"strip_markup": False}},
    "NFC instead of NFKC": {"clean": {"normalize": "NFC"}},
    "Korean morphemes (kiwipiepy)": {"clean": {"korean_morphemes": True}},
    "vocabulary 16,000 per side": {"tokenize": {"vocab_size": 16000}},
    "joint vocabulary 16,000": {"tokenize": {"vocab_size": 16000, "joint": True}},
}
EVERYDAY = {"ko": ["저는 매일 아침 커피를 마셔요.", "이 책은 정말 재미있어요.", "내일 비가 올까요?",
                   "역까지 가는 길을 알려 주시겠어요?", "저는 한국어를 조금 할 수 있어요.",
                   "이 식당은 몇 시에 문을 닫나요?", "어제 친구와 영화를 봤어요.", "이 파일을 열 수 없습니다.",
                   "방이 너무 추워요.", "도와주셔서 감사합니다."],
            "en": ["I drink coffee every morning.", "This book is really interesting.", "Will it rain tomorrow?",
                   "Could you tell me the way to the station?", "I can speak a little Korean.",
                   "What time does this restaurant close?", "I watched a movie with a friend yesterday.",
                   "This file cannot be opened.", "The room is too cold.", "Thank you for your help."]}


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8").splitlines()


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


def _split(files: dict, name: str, src: str, tgt: str) -> dict:
    return {side: {"url": str(files[name][lang])} for side, lang in (("src", src), ("tgt", tgt))}


def _corpus(files: dict, src: str, tgt: str) -> dict:
    custom = {"train": _split(files, "train", src, tgt), "test": _split(files, "flores", src, tgt)}
    return {"data": {"corpus": "custom", "src": src, "tgt": tgt, "custom": custom}}


def metrics(tgt: str) -> tuple[sacrebleu.BLEU, sacrebleu.CHRF]:
    """BLEU tokenised for ``tgt`` and chrF, each scored once so that its signature is complete."""
    chrf = sacrebleu.CHRF()
    chrf.corpus_score(["x"], [["x"]])
    return bleu_metric(tgt), chrf


def score(translator: Translator, files: dict, src: str, tgt: str,
          names: tuple[str, ...]) -> dict[str, tuple[float, float, list[str]]]:
    """BLEU, chrF and the hypotheses on each test set (raw sentences, preprocessed as the model was trained)."""
    bleu_scorer, chrf_scorer = metrics(tgt)
    out = {}
    for name in names:
        sources, references = _lines(files[name][src]), _lines(files[name][tgt])
        with torch.inference_mode():
            hypotheses = translator.translate(sources)
        bleu = bleu_scorer.corpus_score(hypotheses, [references]).score
        chrf = chrf_scorer.corpus_score(hypotheses, [references]).score
        out[name] = (bleu, chrf, hypotheses)
    return out


def bits_per_char(translator: Translator, sources: list[str], references: list[str]) -> float:
    """Bits per character of the references under the model, teacher-forced.

    Comparable across preprocessing and vocabularies (the sum over subword tokens is divided by the raw
    references' characters, which no choice changes) and far less noisy than the BLEU or chrF of an
    early model's translations, whose differences drown in run-to-run noise."""
    t = translator
    targets = [t.preprocessing.text(r) for r in references]
    sources = [t.preprocessing.source(s) for s in sources]
    src = [source_ids(e.ids) for e in t.src_tok.encode_batch(sources, add_special_tokens=False)]
    tgt = [target_ids(e.ids) for e in t.tgt_tok.encode_batch(targets, add_special_tokens=False)]
    pairs = Pairs(np.concatenate(src).astype(np.int32), np.array([len(x) for x in src], dtype=np.int32),
                  np.concatenate(tgt).astype(np.int32), np.array([len(x) for x in tgt], dtype=np.int32))
    nats = 0.0
    with torch.inference_mode():
        for idx in token_batches(pairs.src_len, pairs.tgt_len, 4000):
            b = pairs.batch(idx)
            nats += t.model.loss(b["src"], b["src_len"], b["tgt"])[1].item()
    return nats / math.log(2) / sum(len(r) for r in references)


def forced(args: argparse.Namespace) -> None:
    """Bits per character of FLORES and news references under each ablation row's model (ko→en)."""
    print("| preprocessing | FLORES bits/char | news bits/char |\n|---|---:|---:|")
    for name in _rows(args):
        model = args.out / _row_dir(name) / "models" / "model.pt"
        if model.exists():
            translator = Translator.from_file(model)
            cells = [bits_per_char(translator, _lines(KO_EN / f"{test}.ko.gz"), _lines(KO_EN / f"{test}.en.gz"))
                     for test in ("flores200.devtest", "news.test")]
            print(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} |", flush=True)


def _rows(args: argparse.Namespace) -> dict[str, dict]:
    """The ablation rows named by --rows (the start of their names), or all of them."""
    return {name: change for name, change in ABLATIONS.items()
            if not args.rows or any(name.startswith(prefix) for prefix in args.rows)}


def _row_dir(name: str) -> str:
    return name.split(" (")[0].replace(" ", "-").replace(",", "")


def _train_and_score(root: Path, overrides: dict, files: dict, src: str, tgt: str, names: tuple[str, ...],
                     embed_stage: bool = False):
    params, paths = scratch_project(root, overrides)
    for stage in (download, clean, tokenizer, *([embed] if embed_stage else []), build):
        stage.run(params, paths)
    trained = train.run(params, paths)
    translator = Translator.from_file(paths.model / "model.pt", decoding=from_params(params))
    return translator, paths, trained, score(translator, files, src, tgt, names)


def ablations(args: argparse.Namespace) -> None:
    files = held_out(args.out)
    recipe = yaml.safe_load((RECIPES / "ko-en.yaml").read_text(encoding="utf-8"))
    preprocessing = {"clean": recipe["clean"], "tokenize": recipe["tokenize"]}
    common = merged(merged(merged(_corpus(files, "ko", "en"), MODELS[args.arch]), preprocessing), {
        "build": {"max_tokens": args.max_tokens}, "evaluate": {"beam_size": args.beam},
        "train": {"embeddings": "random", "epochs": 500, "max_minutes": args.minutes, "checkpoint_every": 100_000,
                  "experiment": "bench-korean-ablations"}})
    rows = []
    for name, change in _rows(args).items():
        root = args.out / _row_dir(name)
        _, _, trained, scores = _train_and_score(root, merged(common, change), files, "ko", "en",
                                                 ("in-domain", "flores"))
        rows.append((name, trained["epochs"], scores))
        print(name, {k: (round(b, 2), round(c, 2)) for k, (b, c, _) in scores.items()}, flush=True)
    print(f"\nko→en, {args.arch}, {args.minutes:g} min each, batches of {args.max_tokens} tokens, random "
          f"embeddings, beam {args.beam}; BLEU {bleu_metric('en').get_signature()}\n")
    print("| preprocessing | epochs | in-domain BLEU | in-domain chrF | FLORES BLEU | FLORES chrF |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, epochs, s in rows:
        cells = " | ".join(f"{s[k][0]:.2f} | {s[k][1]:.2f}" for k in ("in-domain", "flores"))
        print(f"| {name} | {epochs} | {cells} |")


def main_run(args: argparse.Namespace) -> None:
    src, tgt = args.direction.split("-")
    files = held_out(args.out.parent / "ko-corpus")
    recipe = merged(recipe_settings(args.direction), {"data": {"corpus": "custom", "custom": {
        "train": _split(files, "train", src, tgt)}}})  # open.train without the held-out pairs
    rnn = args.arch == "rnn"
    overrides = merged(merged(recipe, MODELS[args.arch]), {
        "build": {"max_tokens": args.max_tokens}, "evaluate": {"beam_size": args.beam},
        # a step checkpoint every 200 steps gives the learning curve inside an epoch longer than the budget
        "train": {"epochs": 500, "max_minutes": args.minutes, "checkpoint_every": 200, "keep_checkpoints": 1000,
                  "experiment": "bench-korean",
                  "embeddings": "pretrained" if rnn else "random"}})
    translator, paths, trained, scores = _train_and_score(args.out, overrides, files, src, tgt,
                                                          ("in-domain", "flores", "news"), embed_stage=rnn)
    bleu_scorer, chrf_scorer = metrics(tgt)
    print(f"\n{src}→{tgt}, {args.arch}, {args.minutes:g} min, {trained['epochs']} epoch(s), "
          f"{trained['train_tokens_per_sec']:.0f} target tokens/s; BLEU {bleu_scorer.get_signature()}; "
          f"chrF {chrf_scorer.get_signature()}")
    print("\n| test set | BLEU | chrF | bits/char of the references |\n|---|---:|---:|---:|")
    for name, (bleu, chrf, _) in scores.items():
        bpc = bits_per_char(translator, _lines(files[name][src]), _lines(files[name][tgt]))
        print(f"| {name} | {bleu:.2f} | {chrf:.2f} | {bpc:.3f} |", flush=True)
    sources, references = _lines(files["flores"][src]), _lines(files["flores"][tgt])
    print("\n| FLORES source | reference | translation |\n|---|---|---|")
    for i in range(0, 1000, 100):
        print(f"| {sources[i]} | {references[i]} | {scores['flores'][2][i]} |")
    print("\n| everyday sentence | translation |\n|---|---|")
    for sentence, translation in zip(EVERYDAY[src], translator.translate(EVERYDAY[src]), strict=True):
        print(f"| {sentence} | {translation} |")
    print("\n| step | valid loss | valid ppl |\n|---:|---:|---:|", flush=True)
    for step, loss in curve(paths, args.max_tokens):
        print(f"| {step} | {loss:.3f} | {math.exp(loss):.1f} |")


def curve(paths, max_tokens: int) -> list[tuple[int, float]]:
    """Valid loss (no label smoothing) of every step checkpoint: the learning curve inside the epochs."""
    model, _ = load_model(paths.model / "model.pt")
    valid = load_split(paths.dataset, "valid")
    points = []
    for f in sorted(paths.checkpoints.glob("step-*.pt")):
        model.load_state_dict(load_checkpoint(f)["model"])
        points.append((int(f.stem.split("-")[1]), train.valid_loss(model, valid, max_tokens, torch.device("cpu"))))
    return points


def _checkpoint_minutes(files: list[Path]) -> list[tuple[Path, float]]:
    """Each step checkpoint with the training minutes it was written at (validation not counted)."""
    return [(f, load_checkpoint(f)["state"]["train_seconds"] / 60) for f in files]


def _every(points: list[tuple[Path, float]], minutes: float) -> list[tuple[Path, float]]:
    """The first checkpoint past each multiple of ``minutes``, and the last one."""
    chosen, mark = [], minutes
    for f, at in points:
        if at >= mark:
            chosen.append((f, at))
            mark = (at // minutes + 1) * minutes
    return chosen if chosen and chosen[-1] == points[-1] else [*chosen, points[-1]]


def curve_run(args: argparse.Namespace) -> None:
    project = args.project.resolve()
    params, paths = load_params(project / "params.yaml"), Paths(project)
    src, tgt = params.data.src, params.data.tgt
    meta = json.loads((paths.dataset / "meta.json").read_text())
    model = build_model(**params.model.fields(meta["src_vocab"], meta["tgt_vocab"], params.tokenize.joint)).eval()
    translator = Translator(model, *load_tokenizers(paths.tokenizer), params.clean.preprocessing,
                            params.build.max_len, from_params(params).replace(beam_size=args.beam))
    test = paths.original / "test"
    sources, references = _lines(test.with_suffix(f".{src}")), _lines(test.with_suffix(f".{tgt}"))
    valid = load_split(paths.dataset, "valid")
    points = _checkpoint_minutes(sorted(paths.checkpoints.glob("step-*.pt")))
    if not points:
        raise SystemExit(f"no step checkpoints in {paths.checkpoints}")
    rows, translations = [], {}
    chosen = [(f, minutes, "model") for f, minutes in _every(points, args.every)]
    if (paths.model / "model.pt").exists():  # the stage's output: the best epoch, or the checkpoint average
        chosen.append((paths.model / "model.pt", points[-1][1], "state_dict"))
    for f, minutes, key in chosen:
        model.load_state_dict(load_checkpoint(f)[key])
        loss = train.valid_loss(model, valid, params.build.max_tokens, torch.device("cpu"))
        tic = time.perf_counter()
        scores = corpus_scores(translator.translate(sources), references, tgt)
        rows.append((f.stem.split("-")[-1], minutes, loss, scores, time.perf_counter() - tic))
        print(f"step {rows[-1][0]} ({minutes:.1f} min): valid loss {loss:.3f}, BLEU {scores['bleu']:.2f}, "
              f"chrF {scores['chrf']:.2f} ({rows[-1][4]:.0f} s to translate)", flush=True)
        for at in args.sentences_at:
            if at not in translations and minutes >= at - args.every / 2:
                translations[at] = (minutes, translator.translate(EVERYDAY[src]))
                for sentence, said in zip(EVERYDAY[src], translations[at][1], strict=True):  # now: a long run
                    print(f"  {minutes:.0f} min | {sentence} | {said}", flush=True)  # may be cut short
    print(f"\n{src}→{tgt}, beam {args.beam}; BLEU {scores['bleu_signature']}; chrF {scores['chrf_signature']}\n")
    print("| training minutes | step | valid loss | valid ppl | BLEU | chrF |\n|---:|---:|---:|---:|---|---|")
    for step, minutes, loss, sc, _ in rows:
        print(f"| {minutes:.0f} | {step} | {loss:.3f} | {math.exp(loss):.1f} | {sc['bleu']:.2f} ± {sc['bleu_ci']:.2f} "
              f"| {sc['chrf']:.2f} ± {sc['chrf_ci']:.2f} |")
    minutes_seen = sorted(translations)
    print("\n| sentence | " + " | ".join(f"{translations[m][0]:.0f} min" for m in minutes_seen) + " |")
    print("|---|" + "---|" * len(minutes_seen))
    for i, sentence in enumerate(EVERYDAY[src]):
        print(f"| {sentence} | " + " | ".join(translations[m][1][i] for m in minutes_seen) + " |")


def stats(args: argparse.Namespace) -> None:
    """What each preprocessing choice does to the data itself (no training): fast and exact."""
    from collections import Counter

    from pipeline.config import Tokenize
    from pipeline.stages.tokenizer import train_tokenizer, unknown_rate
    from pipeline.text import korean_morphemes

    files = held_out(args.out.parent / "ko-corpus")
    train_lines = {lang: files["train"][lang].read_text(encoding="utf-8").splitlines() for lang in ("ko", "en")}
    tests = {name: {lang: _lines(files[name][lang]) for lang in ("ko", "en")} for name in ("flores", "news")}
    print(f"open.train without the held-out pairs: {len(train_lines['ko']):,} pairs\n")
    print("| choice | ko lines changed | en lines changed | what changes most |\n|---|---:|---:|---|")
    for name, fn in (("NFKC instead of NFC", lambda t: normalise(t, "NFKC") != normalise(t, "NFC")),
                     ("reST markup stripped", lambda t: strip_markup(t) != t)):
        changed = {lang: [t for t in train_lines[lang] if fn(t)] for lang in ("ko", "en")}
        chars: Counter = Counter()
        if name.startswith("NFKC"):
            for t in changed["ko"] + changed["en"]:
                chars.update(c for c in t if unicodedata.normalize("NFKC", c) != c)
            top = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '?').lower()} ({n})" for c, n in chars.most_common(4))
        else:
            top = " / ".join(changed["ko"][:1] + changed["en"][:1])[:160]
        share = {lang: 100 * len(changed[lang]) / len(train_lines[lang]) for lang in ("ko", "en")}
        print(f"| {name} | {len(changed['ko']):,} ({share['ko']:.2f}%) | {len(changed['en']):,} ({share['en']:.2f}%) "
              f"| {top} |", flush=True)

    print("\n| tokenizer (BPE, NFKC) | side | vocab | tokens/sentence, train | <unk> rate FLORES | <unk> rate news |")
    print("|---|---|---:|---:|---:|---:|")
    ko_norm = [normalise(t, "NFKC") for t in train_lines["ko"]]
    en_norm = [normalise(t, "NFKC") for t in train_lines["en"]]
    test_norm = {n: {lang: [normalise(t, "NFKC") for t in v[lang]] for lang in v} for n, v in tests.items()}
    for label, size, joint in (("8,000 per side", 8000, False), ("16,000 per side", 16000, False),
                               ("16,000 joint", 16000, True)):
        cfg = Tokenize(vocab_size=size, joint=joint)
        if joint:
            shared = train_tokenizer(iter(ko_norm + en_norm), cfg)
            toks = {"ko": shared, "en": shared}
        else:
            toks = {"ko": train_tokenizer(iter(ko_norm), cfg), "en": train_tokenizer(iter(en_norm), cfg)}
        for lang, lines in (("ko", ko_norm), ("en", en_norm)):
            _, per_sentence = unknown_rate(toks[lang], lines[:20000])
            unk = {n: unknown_rate(toks[lang], test_norm[n][lang])[0] for n in test_norm}
            print(f"| {label} | {lang} | {toks[lang].get_vocab_size():,} | {per_sentence:.1f} | "
                  f"{100 * unk['flores']:.2f}% | {100 * unk['news']:.2f}% |", flush=True)

    sample = ko_norm[:5000]
    start = time.perf_counter()
    morphs = [korean_morphemes(t) for t in sample]
    seconds = time.perf_counter() - start
    cfg = Tokenize(vocab_size=8000)
    plain_tok, morph_tok = train_tokenizer(iter(sample), cfg), train_tokenizer(iter(morphs), cfg)
    print(f"\nKorean morphemes (kiwipiepy), first 5,000 ko sentences: {len(sample) / seconds:,.0f} sentences/s; "
          f"BPE 8,000 tokens/sentence {unknown_rate(plain_tok, sample)[1]:.1f} plain vs "
          f"{unknown_rate(morph_tok, morphs)[1]:.1f} morphemes; e.g. '{sample[0][:40]}' -> '{morphs[0][:60]}'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ablations", "curve", "forced", "main", "stats"])
    parser.add_argument("--direction", choices=["ko-en", "en-ko"], default="ko-en")
    parser.add_argument("--arch", choices=sorted(MODELS), default="rnn")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--max-tokens", type=int, default=2000, help="batch size in tokens: a short CPU budget "
                        "takes more, smaller steps than with the pipeline's 6,000")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the scores (1 = greedy)")
    parser.add_argument("--rows", nargs="+", help="ablations, forced: only the rows whose names start so "
                        "(e.g. 'the recipe'), to re-measure one after a change")
    parser.add_argument("--project", type=Path, help="curve: the project folder trained with a recipe")
    parser.add_argument("--every", type=float, default=15.0, help="curve: minutes between scored checkpoints")
    parser.add_argument("--sentences-at", type=float, nargs="+", default=[25.0, 75.0, 150.0],
                        help="curve: training minutes at which to translate the everyday sentences")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.rows and not _rows(args):
        parser.error(f"--rows matches no row; the rows are: {'; '.join(ABLATIONS)}")
    setup_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "checkpoints", ignore_errors=True)
    if args.mode == "curve" and not args.project:
        parser.error("curve needs --project")
    modes = {"ablations": ablations, "curve": curve_run, "forced": forced, "main": main_run, "stats": stats}
    modes[args.mode](args)


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
