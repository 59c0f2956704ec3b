"""Back-translation measured by simulation on Multi30k de→en: does monolingual English, back-translated, help?

Multi30k's train is split by a seeded hash of the pair into halves P (parallel) and M (whose English is kept as
monolingual text, its German thrown away). An en→de model trained on P back-translates M's English; then
de→en models are trained at one budget each, in optimiser steps so that every row gets the same compute
whatever else the machine is doing (``train.max_steps``; 600 steps of about 4,800 target tokens are about 25
minutes of this project's 2-core CPU in fp32, at 1,900 target tokens/s):

1. P alone;  2. P + back-translated M;  3. P + tagged back-translated M (``<bt>``, Caswell et al. 2019);
4. the full parallel train (the upper bound).

Every row runs the pipeline's own stages in a project of its own under ``--out`` (download, backtranslate,
clean, tokenize, build, train, evaluate): a row whose ``metrics/eval.json`` exists is not run again, and a row
killed while training resumes from its checkpoints, so the bench can be stopped and restarted. Each row is
scored on test_2016_flickr (beam 5, sacrebleu BLEU and chrF with 95% intervals), and rows 2-4 against row 1 by
sacrebleu's paired bootstrap test.

    python bench/backtranslation.py --out bench/out/backtranslation            # 600 steps a row
    python bench/backtranslation.py --out /tmp/bt --steps 20 --lines 2000       # the plumbing, in minutes
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora" / "multi30k"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import scratch_project  # noqa: E402
from multi30k import SETTINGS  # noqa: E402

from pipeline import allocator  # noqa: E402
from pipeline.common import read_lines, setup_logging  # noqa: E402
from pipeline.overrides import merged  # noqa: E402
from pipeline.scoring import paired_test  # noqa: E402
from pipeline.stages import backtranslate, build, clean, download, evaluate, tokenizer, train  # noqa: E402

ROWS = ("P alone", "P + back-translated M", "P + tagged back-translated M", "full parallel train")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


def split_halves(out: Path, lines: int | None) -> dict[str, Path]:
    """P.{de,en} and M.en from Multi30k's train by a seeded hash of each pair; the held-out splits as files."""
    de, en = _lines(SHARED / "train.de.gz")[:lines], _lines(SHARED / "train.en.gz")[:lines]
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("P.de", "P.en", "M.en", "full.de", "full.en")}
    halves: dict[str, list[str]] = {name: [] for name in files}
    for d, e in zip(de, en, strict=True):
        half = "P" if hashlib.blake2b(f"bt1\t{d}\t{e}".encode(), digest_size=8).digest()[0] < 128 else "M"
        if half == "P":
            halves["P.de"].append(d)
            halves["P.en"].append(e)
        else:
            halves["M.en"].append(e)
        halves["full.de"].append(d)
        halves["full.en"].append(e)
    for name, text in halves.items():
        files[name].write_text("".join(line + "\n" for line in text), encoding="utf-8")
    for split, name in (("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            files[f"{split}.{lang}"] = out / f"{name}.{lang}"
            files[f"{split}.{lang}"].write_text("\n".join(_lines(SHARED / f"{name}.{lang}.gz")) + "\n",
                                                encoding="utf-8")
    return files


def _data(files: dict[str, Path], src: str, tgt: str, train: str) -> dict:
    splits = {"train": {"src": {"url": str(files[f"{train}.{src}"])}, "tgt": {"url": str(files[f"{train}.{tgt}"])}}}
    for split in ("valid", "test"):
        splits[split] = {"src": {"url": str(files[f"{split}.{src}"])}, "tgt": {"url": str(files[f"{split}.{tgt}"])}}
    return {"data": {"corpus": "custom", "src": src, "tgt": tgt, "custom": splits}}


def run_row(root: Path, overrides: dict) -> dict:
    """The pipeline's stages in the project at ``root``; the row's figures (its eval.json when done before)."""
    done = root / "metrics" / "eval.json"
    if done.exists():
        print(f"{root.name}: done before ({done})", flush=True)
        return json.loads((root / "metrics" / "row.json").read_text())
    params, paths = scratch_project(root, overrides)
    tic = time.perf_counter()
    stages = [download, backtranslate, clean, tokenizer, build] if params.backtranslate.enabled else \
        [download, clean, tokenizer, build]
    for stage in stages:
        stage.run(params, paths)
    trained = train.run(params, paths)
    scores = evaluate.run(params, paths)
    cleaned = json.loads((paths.metrics / "clean.json").read_text())
    row = {"project": str(root), "steps": trained["steps"], "train_pairs": cleaned["splits"]["train"],
           "tokens_per_sec": trained["train_tokens_per_sec"], "valid_loss": trained.get("valid_loss"),
           "bleu": scores["bleu"], "bleu_ci": scores["bleu_ci"], "chrf": scores["chrf"], "chrf_ci": scores["chrf_ci"],
           "wall_minutes": round((time.perf_counter() - tic) / 60, 1)}
    (root / "metrics" / "row.json").write_text(json.dumps(row, indent=2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "backtranslation")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per model (train.max_steps)")
    parser.add_argument("--lines", type=int, help="use the first LINES of Multi30k's train only (a quick run)")
    parser.add_argument("--beam", type=int, default=5)
    args = parser.parse_args()
    setup_logging()
    out = args.out.resolve()
    files = split_halves(out / "corpus", args.lines)
    base = merged(SETTINGS["transformer"], {
        "embed": {"method": "none"},  # random embeddings: SETTINGS' Transformer trains its own
        "train": {"epochs": 10_000, "max_steps": args.steps, "scheduler": "wsd", "warmup_steps": 100,
                  "experiment": "bench-backtranslation", "checkpoint_every": 100},
        "evaluate": {"beam_size": args.beam}})
    reverse = run_row(out / "en-de-P", merged(base, _data(files, "en", "de", "P")))
    print(f"en→de on P: BLEU {reverse['bleu']:.2f} ± {reverse['bleu_ci']:.2f}", flush=True)
    model = str(out / "en-de-P" / "models" / "model.pt")
    mono = {"data": {"monolingual": [{"name": "m", "files": {"en": {"url": str(files["M.en"])}}}]}}
    overlays = [_data(files, "de", "en", "P"),
                merged(merged(_data(files, "de", "en", "P"), mono),
                       {"backtranslate": {"enabled": True, "model": model, "tag": None}}),
                merged(merged(_data(files, "de", "en", "P"), mono),
                       {"backtranslate": {"enabled": True, "model": model, "tag": "<bt>"}}),
                _data(files, "de", "en", "full")]
    rows = []
    for name, overlay, folder in zip(ROWS, overlays, ("de-en-P", "de-en-P-bt", "de-en-P-tagged-bt", "de-en-full"),
                                     strict=True):
        rows.append({"row": name, **run_row(out / folder, merged(base, overlay))})
        print(json.dumps(rows[-1]), flush=True)
    references = read_lines(files["test.en"])
    baseline = read_lines(Path(rows[0]["project"]) / "reports" / "test.hyp")
    for row in rows[1:]:
        hyps = read_lines(Path(row["project"]) / "reports" / "test.hyp")
        row["p_vs_P"] = paired_test(hyps, baseline, references, "en")["p_value"]
    print(f"\nMulti30k de→en, {args.steps} steps a model, beam {args.beam}; test_2016_flickr, sacrebleu BLEU/chrF; "
          f"en→de on P (the back-translator): BLEU {reverse['bleu']:.2f} ± {reverse['bleu_ci']:.2f}\n")
    print("| row | train pairs | steps | target tokens/s | best valid loss | BLEU | chrF | p vs P alone | wall min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        loss = f"{r['valid_loss']:.3f}" if r["valid_loss"] is not None else "-"
        p = f"{r['p_vs_P']:.4f}" if "p_vs_P" in r else "-"
        print(f"| {r['row']} | {r['train_pairs']:,} | {r['steps']} | {r['tokens_per_sec']:,.0f} | {loss} | "
              f"{r['bleu']:.2f} ± {r['bleu_ci']:.2f} | {r['chrf']:.2f} ± {r['chrf_ci']:.2f} | {p} | "
              f"{r['wall_minutes']} |")


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
