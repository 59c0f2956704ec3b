"""The off switch of the distillation and back-translation stages: ``python -m pipeline.switch <stage> --
<command ...>`` in dvc.yaml (``SWITCHES`` says which params section's ``enabled`` switches each on).

With ``<section>.enabled: true`` it runs the command: the stage itself. Off (the default), it writes each output
dvc.yaml declares for the stage as a marker, ``{"enabled": false}`` (a folder holds it as ``off.json``), in
well under a second and without torch: DVC records the stage as done and caches it, so ``make pipeline`` costs
what it did before distillation existed, and switching it on reruns these stages only.

Why stages that do nothing rather than a second pipeline file: ``dvc repro`` runs every ``dvc.yaml`` of a
repository, so a second file would not be off under ``make repro``; and one file stays the one truth of the graph.
Outputs an enabled run wrote before are replaced by markers; DVC's cache keeps them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import yaml

from pipeline.common import PipelineError, setup_logging, write_json
from pipeline.config import load_params

log = logging.getLogger(__name__)

OFF = {"enabled": False}
SWITCHES = {"backtranslate": "backtranslate"}  # stage -> the params section whose `enabled` runs it


def switch_of(stage: str) -> str:
    """The params section that switches ``stage`` on: ``distill`` for the student's stages."""
    return SWITCHES.get(stage, "distill")


def declared_outputs(dvc_yaml: Path, stage: str) -> list[Path]:
    """The outs and metrics of ``stage`` in ``dvc_yaml``, as paths from its folder."""
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise PipelineError(f"{dvc_yaml}: no stage '{stage}'")
    entries = [e for kind in ("outs", "metrics", "plots") for e in stages[stage].get(kind, [])]
    return [dvc_yaml.parent / (next(iter(e)) if isinstance(e, dict) else e) for e in entries]


def write_markers(outputs: list[Path]) -> None:
    """Each output as the marker: a file (it has a suffix) holds it, a folder holds it as ``off.json``."""
    for path in outputs:
        if path.is_dir() or not path.suffix:
            shutil.rmtree(path, ignore_errors=True)  # what an enabled run left: the marker alone describes it now
            write_json(path / "off.json", OFF)
        else:
            write_json(path, OFF)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m pipeline.switch <stage> -- <command ...>", file=sys.stderr)
        sys.exit(2)
    stage, command = argv[0], argv[2:]
    setup_logging()
    try:
        if getattr(load_params("params.yaml"), switch_of(stage)).enabled:
            if command[0] == "python":  # this interpreter, not whichever python comes first on PATH
                command = [sys.executable, *command[1:]]
            os.execvp(command[0], command)
        write_markers(declared_outputs(Path("dvc.yaml"), stage))
    except (PipelineError, OSError, yaml.YAMLError) as exc:
        print(f"error: {stage}: {' '.join(str(exc).split())}", file=sys.stderr)  # YAML errors span lines
        sys.exit(1)
    log.info("%s: off (%s.enabled: false); its outputs are markers", stage, switch_of(stage))


if __name__ == "__main__":
    main()
