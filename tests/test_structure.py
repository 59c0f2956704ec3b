"""The house rules, checked: one source of defaults, complete DVC dependencies, and who may import whom."""

import ast
import re
from pathlib import Path

import yaml

from pipeline.config import Params
from tests.conftest import ROOT

PKG = ROOT / "pipeline"
# Parse params and write files, or pick the memory allocator, but do not change what a stage computes;
# every value they could contribute comes from params.yaml, which DVC watches per section. Declaring them
# would rerun every stage, data stages included, for an edit to a log message.
INFRASTRUCTURE = {"pipeline/common.py", "pipeline/cli.py", "pipeline/config.py", "pipeline/tracking.py",
                  "pipeline/allocator.py",
                  "pipeline/__init__.py", "pipeline/stages/__init__.py", "pipeline/inference/__init__.py"}
STAGES, INFERENCE = PKG / "stages", PKG / "inference"


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(file: Path, top_level_only: bool = False) -> set[Path]:
    """pipeline modules imported by ``file`` (anywhere in it, or only at module level)."""
    tree = ast.parse(file.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {f for f in map(_module_file, names) if f} or {_module_file(node.module)}
        elif isinstance(node, ast.Import):
            found |= {_module_file(a.name) for a in node.names if a.name.split(".")[0] == "pipeline"}
    found.discard(None)
    # importing pipeline.models.rnn runs pipeline/models/__init__.py first (unless we are that package)
    for f in list(found):
        for parent in f.relative_to(ROOT).parents[:-2]:
            if (ROOT / parent / "__init__.py").exists() and ROOT / parent not in file.parents:
                found.add(ROOT / parent / "__init__.py")
    return found - {file}


def _closure(start: Path, top_level_only: bool = False, through_infrastructure: bool = True) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        f = todo.pop()
        if not through_infrastructure and f != start and f.relative_to(ROOT).as_posix() in INFRASTRUCTURE:
            continue
        for g in _imports(f, top_level_only):
            if g not in seen:
                seen.add(g)
                todo.append(g)
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _stage_module(stage: dict) -> Path:
    module = re.findall(r"-m (pipeline[\w.]+)", stage["cmd"])[-1]  # the last: pipeline.switch runs the stage
    return _module_file(module)


def test_params_yaml_lists_every_field_with_the_code_default():
    def compare(code: dict, written: dict, prefix: str = "") -> list[str]:
        problems = [f"{prefix}{k}: not in params.yaml" for k in code if k not in written]
        problems += [f"{prefix}{k}: not a field of the params model" for k in written if k not in code]
        for k in code.keys() & written.keys():
            if isinstance(code[k], dict) and isinstance(written[k], dict):
                problems += compare(code[k], written[k], f"{prefix}{k}.")
            elif code[k] != written[k]:
                problems.append(f"{prefix}{k}: params.yaml says {written[k]!r}, the code's default is {code[k]!r}")
        return problems

    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert compare(Params().model_dump(), written) == []


def test_dvc_yaml_declares_the_code_each_stage_imports():
    missing = {}
    for name, stage in _stages().items():
        module = _stage_module(stage)
        declared = [ROOT / d for d in stage["deps"]]
        for f in {module} | _closure(module, through_infrastructure=False):
            rel = f.relative_to(ROOT).as_posix()
            if rel in INFRASTRUCTURE:
                continue
            if not any(f == d or d in f.parents for d in declared):
                missing.setdefault(name, []).append(rel)
    assert missing == {}


def test_no_import_cycles():
    for f in PKG.rglob("*.py"):
        assert f not in _closure(f), f"{f.relative_to(ROOT)} imports itself through a cycle"


def test_models_import_no_stage_config_or_tokenizers():
    stages = {_stage_module(s) for s in _stages().values()}
    for f in (PKG / "models").glob("*.py"):
        reached = _closure(f, top_level_only=True)
        assert not reached & stages, f
        assert PKG / "config.py" not in reached, f
        for g in {f} | reached:
            tree = ast.parse(g.read_text())
            top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
            modules = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
            modules |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in modules if m.split(".")[0] in ("tokenizers", "pydantic")}, g


def test_no_stage_imports_another_stage():
    stages = {_stage_module(s) for s in _stages().values()}
    for f in stages:
        assert not (_closure(f) & stages) - {f}, f"{f.relative_to(ROOT)} imports another stage"


def test_flows_import_no_stage():
    """Flows run stages through DVC and promotion as its own command, so DVC decides what is stale and a
    stage's imports and side effects stay in its own process."""
    stages = set(STAGES.glob("*.py")) - {STAGES / "__init__.py"}
    assert {_stage_module(s) for s in _stages().values()} | {STAGES / "promote.py"} == stages
    for f in (ROOT / "flows").glob("*.py"):
        reached = _closure(f) & stages
        assert not reached, f"{f.relative_to(ROOT)} imports {', '.join(sorted(g.name for g in reached))}"


def test_the_floors_stages_over_inference_over_the_shared_modules():
    """``pipeline/stages`` may use ``pipeline/inference`` (evaluate and validation translate), inference
    may use the shared modules below both, and nothing runs back up."""
    for f in INFERENCE.glob("*.py"):
        reached = {g for g in _closure(f) if STAGES in g.parents}
        assert not reached, f"{f.relative_to(ROOT)} imports the stage(s) {sorted(g.name for g in reached)}"
    shared = [f for f in PKG.rglob("*.py") if STAGES not in f.parents and INFERENCE not in f.parents]
    for f in shared:
        reached = {g for g in _closure(f) if {STAGES, INFERENCE} & set(g.parents)}
        assert not reached, f"{f.relative_to(ROOT)} (shared) imports {sorted(str(g.relative_to(PKG)) for g in reached)}"


def test_paths_and_dvc_yaml_name_the_same_outputs():
    """``config.Paths`` repeats dvc.yaml's outputs for the code; each dvc.yaml output lies in a Paths folder, and
    each Paths folder a stage writes is some stage's output in dvc.yaml."""
    from pipeline.config import Paths

    outs = {ROOT / (next(iter(o)) if isinstance(o, dict) else o)
            for s in _stages().values() for kind in ("outs", "metrics") for o in s.get(kind, [])}
    folders = {f"{role} {name}": getattr(Paths(ROOT, role), name) for role in ("teacher", "student")
               for name in ("raw", "backtranslated", "clean", "tokenizer", "embeddings", "dataset", "model",
                            "metrics", "reports", "curves", "ct2")}
    folders.pop("teacher ct2")  # only the student is exported by evaluate
    assert all(any(o == f or f in o.parents for f in folders.values()) for o in outs), outs
    assert [n for n, f in folders.items() if not any(o == f or f in o.parents for o in outs)] == []
