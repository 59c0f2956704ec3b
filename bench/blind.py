"""Translate the blind test sets (``../shared/blind/<folder>/*.gz``, sources only) with a project's model.

Writes ``docs/results/blind/<folder>/<model>/<file>.hyp`` (one line per input line, the project's own
decoding: beam 5 by default) and a README beside them naming the model: architecture, the params that
trained it, its training minutes and the commit. The references of these sets are kept elsewhere;
nothing here reads, trains or tunes on anything but their sources.

    python bench/blind.py --project ../ko-en-long --folder ko-en --model transformer-150min
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.checkpoint import load_checkpoint  # noqa: E402
from pipeline.common import atomic_file, setup_logging  # noqa: E402
from pipeline.config import Paths, load_params  # noqa: E402
from pipeline.decoding import from_params  # noqa: E402
from pipeline.inference.translator import Translator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the project whose models/model.pt translates")
    parser.add_argument("--folder", required=True, help="a folder of ../shared/blind (ko-en, en-ko, de-en)")
    parser.add_argument("--model", required=True, help="the model's folder name under docs/results/blind/<folder>")
    parser.add_argument("--blind", type=Path, default=ROOT.parent / "shared" / "blind")
    args = parser.parse_args()
    setup_logging()
    project = args.project.resolve()
    params, paths = load_params(project / "params.yaml"), Paths(project)
    translator = Translator.from_file(paths.model / "model.pt", decoding=from_params(params))
    out = ROOT / "docs" / "results" / "blind" / args.folder / args.model
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((args.blind / args.folder).glob("*.gz"))
    if not files:
        raise SystemExit(f"no .gz files in {args.blind / args.folder}")
    for f in files:
        sources = gzip.decompress(f.read_bytes()).decode("utf-8").splitlines()
        with torch.inference_mode():
            hypotheses = translator.translate(sources)
        assert len(hypotheses) == len(sources)
        with atomic_file(out / f"{f.name.removesuffix('.gz')}.hyp", encoding="utf-8") as fh:
            fh.write("".join(h.replace("\n", " ") + "\n" for h in hypotheses))
        print(f"{f.name}: {len(sources)} lines", flush=True)
    state = load_checkpoint(paths.checkpoints / "last.pt")["state"]
    train = json.loads((paths.metrics / "train.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    m = params.model
    arch = (f"Transformer {m.transformer.enc_layers}+{m.transformer.dec_layers} layers, d {m.hidden}, "
            f"{m.transformer.heads} heads, FF {m.transformer.ff_dim}" if m.arch == "transformer"
            else f"{'bi' if m.rnn.bidirectional else ''}{m.rnn.cell.upper()} + {m.rnn.attention}, emb {m.emb_dim}, "
                 f"hidden {m.hidden}")
    readme = [f"# {args.folder}: {args.model}", "",
              f"- model: {arch}; {params.data.src}→{params.data.tgt}, {train['epochs']} epochs, {train['steps']} steps",
              f"- training: {state['train_seconds'] / 60:.0f} minutes (validation not counted), "
              f"{train['train_tokens_per_sec']:,.0f} target tokens/s, on this project's 2-core CPU",
              f"- decoding: beam {params.evaluate.beam_size}, length penalty {params.evaluate.length_penalty} "
              "(the project's default, as `translate` and evaluate use)",
              f"- project commit: {commit}", "", "The params the model was trained with:", "", "```yaml",
              yaml.safe_dump({k: params.model_dump()[k] for k in ("data", "clean", "tokenize", "build", "model",
                                                                  "train", "evaluate")},
                             allow_unicode=True, sort_keys=False).rstrip(), "```", ""]
    (out / "README.md").write_text("\n".join(readme), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
