"""Multi30k de→en: train one architecture under a time budget, report test_2016_flickr BLEU.

Runs the real pipeline stages (download through ../shared/corpora as the mirror, clean, tokenize,
embed, build, train, evaluate) in a scratch project, then prints the learning curve, BLEU with
beam search (sacrebleu default: cased, 13a; and lowercased, the convention of the PyTorch tutorial
numbers: 28.3 for a bidirectional GRU + Bahdanau, 36.5 for a 3+3-layer Transformer, 10 GPU epochs),
chrF, wall time and training tokens/s.

    python bench/multi30k.py --arch rnn --minutes 25 --scheduler wsd
    python bench/multi30k.py --arch transformer --minutes 25 --scheduler wsd --out bench/out/m30k-transformer
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
sys.path.insert(0, str(ROOT))

from pipeline import allocator  # noqa: E402
from pipeline.checkpoint import load_checkpoint, load_model  # noqa: E402
from pipeline.common import setup_logging  # noqa: E402
from pipeline.config import Paths, load_params  # noqa: E402
from pipeline.decoding import from_params  # noqa: E402
from pipeline.inference.translator import Translator  # noqa: E402
from pipeline.overrides import merged  # noqa: E402
from pipeline.stages import build, clean, download, embed, evaluate, tokenizer, train  # noqa: E402

SETTINGS = {  # what each architecture trains with; everything else is params.yaml's default
    "rnn": {"tokenize": {"vocab_size": 6000, "joint": False},
            "model": {"arch": "rnn", "emb_dim": 128, "hidden": 256, "dropout": 0.3},
            "train": {"lr": 0.002, "scheduler": "cosine", "warmup_steps": 100, "label_smoothing": 0.1}},
    "transformer": {"tokenize": {"vocab_size": 8000, "joint": True},
                    "embed": {"dim": 256},
                    "model": {"arch": "transformer", "emb_dim": 256, "hidden": 256, "dropout": 0.1,
                              "transformer": {"heads": 4, "ff_dim": 1024, "enc_layers": 3, "dec_layers": 3,
                                              "tie_embeddings": True}},
                    "train": {"lr": 0.001, "scheduler": "noam", "warmup_steps": 500, "label_smoothing": 0.1,
                              "embeddings": "random"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(SETTINGS), default="rnn")
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget")
    parser.add_argument("--epochs", type=int, default=200, help="upper bound; the budget usually stops first")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--scheduler", choices=["constant", "noam", "cosine", "wsd"],
                        help="the learning-rate schedule (default: the architecture's in SETTINGS)")
    parser.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto", help="train.amp")
    parser.add_argument("--seed", type=int, default=1, help="train.seed: initialisation, dropout and batch order")
    parser.add_argument("--average", type=int, default=5, help="average the last N epoch checkpoints (0: off)")
    parser.add_argument("--out", type=Path, help="keep the scratch project here (default: a temp dir)")
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    os.environ["NMT_DATA_MIRROR"] = SHARED.as_uri()  # <mirror>/multi30k/<file>, checksums verified
    root = args.out or Path(tempfile.mkdtemp(prefix=f"bench-m30k-{args.arch}-"))
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = {"data": {"corpus": "multi30k", "src": "de", "tgt": "en"},
                 "train": {"epochs": args.epochs, "max_minutes": args.minutes, "experiment": "bench-multi30k",
                           "seed": args.seed,
                           "checkpoint_every": 100_000,  # step files at epoch ends only: those are averaged
                           "keep_checkpoints": max(args.average, 2), "average_last": args.average},
                 "evaluate": {"beam_size": args.beam}}
    if args.scheduler:
        overrides["train"]["scheduler"] = args.scheduler
    if args.scheduler not in (None, "noam"):
        # noam's 500 warmup steps are its shape (the peak, then 1/sqrt); under another schedule they would be
        # most of a 25-minute CPU run (about 600 steps: the 2026-12-03 teacher's BLEU 32)
        overrides["train"]["warmup_steps"] = 100
    overrides["train"]["amp"] = args.amp
    params = merged(merged(params, SETTINGS[args.arch]), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    p, paths = load_params(root / "params.yaml"), Paths(root)

    start = time.perf_counter()
    for stage in (download, clean, tokenizer, embed, build):
        stage.run(p, paths)
    trained = train.run(p, paths)
    scores = evaluate.run(p, paths)
    wall = time.perf_counter() - start

    history = load_checkpoint(paths.checkpoints / "last.pt")["state"]["history"]
    print(f"\nMulti30k de→en, {args.arch}, budget {args.minutes:g} min, scratch project {root}")
    print("epoch  step  train_loss  valid_loss  valid_ppl  lr")
    for row in history:
        print(f"{row['epoch']:5d} {row['step']:5d}  {row['train_loss']:10.4f}  {row['valid_loss']:10.4f}  "
              f"{row['valid_ppl']:9.2f}  {row['lr']:.2e}")
    params_count = sum(t.numel() for t in load_model(paths.model / "model.pt")[0].parameters())  # tied: once
    summary = {"arch": args.arch, "parameters": params_count, "epochs": trained["epochs"],
               "best_epoch": trained["best_epoch"], "train_tokens_per_sec": trained["train_tokens_per_sec"],
               "averaged_checkpoints": trained.get("averaged_checkpoints", 0),
               "bleu_cased": scores["bleu"], "bleu_lowercase": scores["bleu_lowercase"], "chrf": scores["chrf"],
               "beam": args.beam, "scheduler": p.train.scheduler, "amp": p.train.amp, "seed": p.train.seed,
               "wall_minutes": round(wall / 60, 1)}
    if trained.get("averaged_checkpoints"):  # the best single epoch, for the share averaging bought
        summary["bleu_cased_best_epoch"] = _bleu(best_epoch_translator(paths, p), paths, p)
    print(json.dumps(summary, indent=2))


def best_epoch_translator(paths: Paths, params) -> Translator:
    """The best epoch's weights (checkpoints/best.pt) with the tokenizers and settings of models/model.pt."""
    translator = Translator.from_file(paths.model / "model.pt", decoding=from_params(params))
    best = load_checkpoint(paths.checkpoints / "best.pt")
    translator.model.load_state_dict(best["state_dict"])
    return translator


def _bleu(translator: Translator, paths: Paths, params) -> float:
    import sacrebleu

    sources = (paths.original / f"test.{params.data.src}").read_text(encoding="utf-8").splitlines()
    references = (paths.original / f"test.{params.data.tgt}").read_text(encoding="utf-8").splitlines()
    with torch.inference_mode():
        hypotheses = translator.translate(sources)
    return round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
