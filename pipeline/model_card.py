"""The model card: what a user of a registered model must be able to see before using it. Its sources with
their licences (a model trained on IWSLT 2017, CC BY-NC-ND 4.0, may not be used commercially), what cleaning
kept of each, its scores on every test set with their signatures, and how it decodes.

Written by the evaluate stage beside the model (``reports/model_card.md``, and the same file in the MLflow
run and the registered version's tags point at it); ``licences`` is the one-line summary for the tags.
"""

from __future__ import annotations

import json
from typing import Any


def licences(sources: dict) -> str:
    """``name: licence`` of every train source, ``; ``-joined (``unknown`` where the params give none)."""
    return "; ".join(f"{s['name']}: {s.get('licence') or 'unknown'}" for s in sources["train"])


def _origin(source: dict) -> str:
    for key in ("url", "dataset", "sacrebleu", "generator", "carved_from"):
        if source.get(key):
            return str(source[key])
    # a file from the mirror names its upstream URL (the mirror's path is the manifest's)
    files = [v.get("upstream") or v["url"] for v in source.values() if isinstance(v, dict) and "url" in v]
    return ", ".join(dict.fromkeys(files)) or "-"


def _checksum(source: dict) -> str:
    sums = [v["sha256"][:12] for v in source.values() if isinstance(v, dict) and v.get("sha256")]
    return " ".join(sums) or "-"


def render(model_name: str, version: str | None, sources: dict, test_sets: dict[str, dict[str, Any]],
           decoding: dict, engine: str) -> str:
    """The card as Markdown."""
    lines = [f"# {model_name}" + (f" version {version}" if version else ""), "",
             "## Training data", "",
             "| source | origin | sha256 | licence | pairs read | kept | in train |",
             "|---|---|---|---|---:|---:|---:|"]
    for s in sources["train"]:
        row = s.get("cleaning", {})
        lines.append(f"| {s['name']} | {_origin(s)} | {_checksum(s)} | {s.get('licence') or 'unknown'} | "
                     f"{s.get('lines', '-')} | {row.get('kept', '-')} | {row.get('train_pairs', '-')} |")
    for m in sources.get("missing", []):
        lines.append(f"| {m['name']} ({m['role']}) | missing: {m['why']} | | | 0 | 0 | 0 |")
    lines += ["", "Use of the model is bound by the licences of every source above.", "",
              "## Removed by cleaning", ""]
    for s in sources["train"]:
        removed = s.get("cleaning", {}).get("removed", {})
        lines.append(f"- {s['name']}: " + (", ".join(f"{k} {v}" for k, v in removed.items()) or "nothing"))
    lines += ["", "## Scores (sacrebleu, detokenised, 95% bootstrap intervals)", "",
              "| test set | origin | licence | pairs | BLEU | chrF | chrF++ |", "|---|---|---|---:|---:|---:|---:|"]
    test_sources = {t["name"]: t for t in sources.get("test", [])}
    for name, sc in test_sets.items():
        t = test_sources.get(name, {})
        figures = " | ".join(f"{sc[k]:.2f} ± {sc.get(f'{k}_ci', 0):.2f}" for k in ("bleu", "chrf", "chrfpp"))
        lines.append(f"| {name}{' (judged)' if sc.get('judged') else ''} | {_origin(t)} | "
                     f"{t.get('licence') or '-'} | {sc['pairs']} | {figures} |")
    first = next(iter(test_sets.values()), {})
    lines += ["", "Signatures: " + ", ".join(f"`{first[k]}`" for k in ("bleu_signature", "chrf_signature",
                                                                          "chrfpp_signature") if k in first), "",
              "## Decoding", "", f"Engine {engine}: `{json.dumps(decoding)}`", ""]
    return "\n".join(lines)
