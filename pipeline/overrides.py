"""Params overrides, in one place: a nested dict merged into params, ``section.key`` settings applied to a
params dict (grid experiments) or written into ``params.yaml`` in place (``make pipeline CORPUS=`` and
``RECIPE=``), and the recipes themselves. Whatever writes the file checks it with the params model first."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline import corpora
from pipeline.common import PipelineError, atomic_file, merged
from pipeline.config import load_params, parse_params


def set_dotted(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``section.key`` (any depth) in a params dict; KeyError when params.yaml has no such setting."""
    *sections, key = dotted.split(".")
    node = params
    for section in sections:
        if not isinstance(node.get(section), dict):
            raise KeyError(dotted)
        node = node[section]
    if key not in node:
        raise KeyError(dotted)
    node[key] = value


def switch_corpus(params_file: Path, corpus: str) -> None:
    """``make pipeline CORPUS=...``: set data.corpus, and data.src/tgt when the corpus has fixed languages."""
    data = load_params(params_file).data
    updates: dict[str, Any] = {"data.corpus": corpus}
    langs = corpora.languages(corpus)
    if langs is not None and {data.src, data.tgt} != set(langs):
        updates |= {"data.src": langs[0], "data.tgt": langs[1]}
    set_params(params_file, updates)


def set_params(path: Path, updates: dict[str, Any]) -> None:
    """Set ``section.key`` values in the params file in place, keeping its comments and layout.

    Used by ``make pipeline CORPUS=...`` and ``RECIPE=...``: DVC then sees an ordinary params change.
    A nested value is written on one line (YAML flow style) and replaces the block it had; a deeper key
    (``model.transformer.enc_layers``) rewrites its ``section.key`` block with that one value changed.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    current = yaml.safe_load("".join(lines)) or {}
    for dotted, value in updates.items():
        if "." not in dotted:
            raise PipelineError(f"{path}: {dotted}: give a setting as section.key (e.g. train.epochs)")
        section, key, *deeper = dotted.split(".")
        if deeper:
            block = copy.deepcopy((current.get(section) or {}).get(key))
            try:
                set_dotted(block if isinstance(block, dict) else {}, ".".join(deeper), value)
            except KeyError:
                raise PipelineError(f"{path}: {dotted}: no such setting; {section}.{key} has "
                                    f"{', '.join(block) if isinstance(block, dict) else 'no settings below it'}"
                                    ) from None
            value = block
        if isinstance(current.get(section), dict):  # a later update of the same block starts from this one
            current[section][key] = value
        rendered = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6, sort_keys=False)
        rendered = rendered.strip().removesuffix("...").strip()
        start = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"{section}:"), None)
        if start is None:
            lines += [f"{section}:\n", f"  {key}: {rendered}\n"]
            continue
        end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\n", "#")), len(lines))
        for i in range(start + 1, end):
            if lines[i].startswith(f"  {key}:"):
                comment = lines[i].partition(" #")[2]
                lines[i] = f"  {key}: {rendered}" + (f"  #{comment}" if comment else "\n")
                block_end = i + 1  # the lines of the block it replaces: indented deeper than the key
                while block_end < end and lines[block_end].startswith("    "):
                    block_end += 1
                del lines[i + 1:block_end]
                break
        else:
            lines.insert(start + 1, f"  {key}: {rendered}\n")
    parse_params("".join(lines), Path(path))  # refuse to write an invalid file
    with atomic_file(Path(path), encoding="utf-8") as fh:
        fh.writelines(lines)


RECIPES = Path(__file__).parent / "recipes"  # pipeline/recipes/<name>.yaml


DATA_SOURCES = {("data", key) for key in ("custom", "hf", "train", "valid", "test")}


def recipe_settings(recipe: str) -> dict[str, Any]:
    """A recipe's settings with its data reduced to the direction: what a bench lays over its own corpus files."""
    settings = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text(encoding="utf-8"))
    settings["data"] = {key: settings["data"][key] for key in ("src", "tgt")}
    return settings


def apply_recipe(params_file: Path, recipe: str) -> None:
    """``make pipeline RECIPE=ko-en``: set every key of ``pipeline/recipes/<recipe>.yaml`` (or of a file)."""
    source = Path(recipe) if recipe.endswith((".yaml", ".yml")) else RECIPES / f"{recipe}.yaml"
    if not source.exists():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise PipelineError(f"no recipe '{recipe}'; the recipes are: {known} (or give a .yaml file)")
    overlay = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    current = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    updates = {}
    for section, values in overlay.items():
        for key, value in values.items():
            old = current.get(section, {}).get(key)
            # a settings block is merged, so the file keeps every setting of it; a data source is replaced,
            # so that nothing of the old corpus (a sha256, a table, a valid split) survives beside the new one
            merge = isinstance(old, dict) and isinstance(value, dict) and (section, key) not in DATA_SOURCES
            updates[f"{section}.{key}"] = merged(old, value) if merge else value
    set_params(params_file, updates)
