"""The GPU check: the ko-en recipe for a fixed budget and the Multi30k Transformer, one file of figures.

On a machine with a CUDA GPU (``bench/gpu.sh``, which also installs what is missing): trains

* the ko-en recipe (``pipeline/recipes/ko-en.yaml``: Transformer, WSD, bf16 autocast) for
  ``--ko-minutes`` (6) of training, and scores FLORES-200 devtest under the evaluation protocol;
* the Multi30k de→en Transformer of ``bench/multi30k.py`` for ``--m30k-minutes`` (2), scored on
  test_2016_flickr;

through the real stages in scratch projects, and writes, per run, target tokens/s, seconds per epoch,
peak GPU memory, BLEU and chrF (with their intervals and signatures) to ``<out>/gpu.json`` and a
Markdown table to ``<out>/gpu.md``. Corpora are read from ``--shared`` (``../shared/corpora``; on a
machine without it, copy that folder into the repository and point here).

``--smoke``: the same plumbing on the CPU in seconds (the first lines of each corpus, a tiny model),
as the test suite runs it.

    bash bench/gpu.sh                      # on the GPU machine: about 9 minutes with the install
    python bench/gpu.py --smoke --out /tmp/gpu-smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import scratch_project  # noqa: E402
from multi30k import SETTINGS as M30K  # noqa: E402

from pipeline import allocator  # noqa: E402
from pipeline.checkpoint import load_checkpoint  # noqa: E402
from pipeline.common import setup_logging, write_json  # noqa: E402
from pipeline.overrides import merged, recipe_settings  # noqa: E402
from pipeline.stages import build, clean, download, embed, evaluate, tokenizer, train  # noqa: E402

SMOKE = {"tokenize": {"vocab_size": 300}, "build": {"max_tokens": 1000},
         "model": {"emb_dim": 32, "hidden": 32, "transformer": {"heads": 2, "ff_dim": 64, "enc_layers": 1,
                                                                "dec_layers": 1}},
         "train": {"warmup_steps": 2, "checkpoint_every": 10}, "evaluate": {"beam_size": 2, "heatmaps": 1}}


def _corpus(files: dict[str, tuple[Path, Path]], scratch: Path, lines: int | None) -> dict:
    """``data.custom`` for these (source, target) files per split; with ``lines``, the first lines only (a
    tenth of them for the held-out splits)."""
    custom = {}
    for split, pair in files.items():
        custom[split] = {}
        for side, path in zip(("src", "tgt"), pair, strict=True):
            if lines:
                head = scratch / "corpora" / path.name.removesuffix(".gz")
                head.parent.mkdir(parents=True, exist_ok=True)
                keep = lines if split == "train" else lines // 10
                text = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()[:keep]
                head.write_text("\n".join(text) + "\n", encoding="utf-8")
                path = head
            custom[split][side] = {"url": str(path.resolve())}
    return {"data": {"corpus": "custom", "custom": custom}}


def _run(name: str, root: Path, overrides: dict, minutes: float) -> dict:
    overrides = merged(overrides, {"train": {"max_minutes": minutes, "epochs": 1000, "experiment": "bench-gpu"}})
    params, paths = scratch_project(root, overrides)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for stage in (download, clean, tokenizer, embed, build):
        stage.run(params, paths)
    data_seconds = time.perf_counter() - start
    trained = train.run(params, paths)
    state = load_checkpoint(paths.checkpoints / "last.pt")["state"]
    scores = evaluate.run(params, paths)
    return {"run": name, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "train_minutes": round(state["train_seconds"] / 60, 2), "epochs": trained["epochs"],
            "steps": trained["steps"],
            "seconds_per_epoch": round(state["train_seconds"] / max(trained["epochs"], 1), 1),
            "target_tokens_per_sec": trained["train_tokens_per_sec"],
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "data_stages_seconds": round(data_seconds, 1), "wall_seconds": round(time.perf_counter() - start, 1),
            **{k: scores[k] for k in ("bleu", "bleu_ci", "chrf", "chrf_ci", "bleu_signature", "chrf_signature")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--ko-minutes", type=float, default=6.0)
    parser.add_argument("--m30k-minutes", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true", help="the plumbing on the CPU, in seconds")
    args = parser.parse_args()
    setup_logging()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); --smoke runs on a CPU")
    lines, minutes = (300, 0.003) if args.smoke else (None, 1.0)  # smoke: 1.1 and 0.4 s of training
    ko, m30k = args.shared / "ko-en", args.shared / "multi30k"
    recipe = recipe_settings("ko-en")  # on the shared files, not the recipe's sources
    ko_files = {"train": (ko / "open.train.ko.gz", ko / "open.train.en.gz"),
                "test": (ko / "flores200.devtest.ko.gz", ko / "flores200.devtest.en.gz")}
    m30k_files = {split: (m30k / f"{name}.de.gz", m30k / f"{name}.en.gz")
                  for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr"))}
    device = {"train": {"device": "cpu" if args.smoke else "cuda"}}
    runs = [("ko-en recipe", merged(merged(recipe, _corpus(ko_files, args.out / "ko-en", lines)), device),
             args.ko_minutes * minutes),
            ("Multi30k Transformer", merged(merged(merged(M30K["transformer"], {"data": {"src": "de", "tgt": "en"}}),
                                                   _corpus(m30k_files, args.out / "multi30k", lines)), device),
             args.m30k_minutes * minutes)]
    results = []
    for name, overrides, budget in runs:
        folder = args.out / name.split()[0].lower()
        results.append(_run(name, folder, merged(overrides, SMOKE) if args.smoke else overrides, budget))
        print(json.dumps(results[-1]), flush=True)
    write_json(args.out / "gpu.json", {"smoke": args.smoke, "torch": torch.__version__, "runs": results})
    table = ["| run | device | train min | epochs | s/epoch | target tok/s | peak GPU GiB | BLEU | chrF |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    table += [f"| {r['run']} | {r['device']} | {r['train_minutes']} | {r['epochs']} | {r['seconds_per_epoch']} | "
              f"{r['target_tokens_per_sec']:,.0f} | {r['peak_gpu_memory_gib']} | "
              f"{r['bleu']:.2f} ± {r['bleu_ci']:.2f} | "
              f"{r['chrf']:.2f} ± {r['chrf_ci']:.2f} |" for r in results]
    (args.out / "gpu.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))


if __name__ == "__main__":
    allocator.reexec_with_tcmalloc()  # trains as the train stage does: pipeline/allocator.py
    main()
