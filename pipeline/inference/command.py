"""Translate with a trained model: ``translate "나는 어제 도서관에서 책을 읽었다"`` or lines on stdin.

The model is ``models/model.pt`` by default, or any ``--model``: a model file, or an MLflow model
URI such as ``models:/nmt-sample-ko-en-ko-en@champion``, ``models:/<name>/<version>`` or
``runs:/<run id>/translator``. Decoding is the evaluate stage's (``params.yaml``, or the settings
logged with an MLflow model), so what you see here is what the BLEU score measured.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from pipeline.cli import run_command
from pipeline.common import PipelineError, setup_logging
from pipeline.device import choose_device

log = logging.getLogger(__name__)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def _project_decoding(root: Path) -> dict:
    """The project's decoding settings (``root/params.yaml``), if there is one."""
    from pipeline.config import load_params
    from pipeline.decoding import from_params

    if not (root / "params.yaml").exists():
        return {}
    return from_params(load_params(root / "params.yaml")).to_dict()


def _stdin_lines() -> list[str]:
    """stdin as UTF-8 lines: one translation per line, ``\n`` or ``\r\n`` ends a line (nothing else does, so
    the output lines up with the input)."""
    lines = sys.stdin.buffer.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(line.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError:
            raise PipelineError(f"stdin line {n} is not UTF-8 text; convert the input to UTF-8 "
                                "(e.g. iconv -f cp949 -t utf-8)") from None
    return out


def _checked_arguments(sentences: list[str]) -> list[str]:
    """Python decodes a command line that is not UTF-8 into lone surrogates; say so instead of failing later."""
    for n, sentence in enumerate(sentences, 1):
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError:
            raise PipelineError(f"argument {n} is not UTF-8 text; give UTF-8 (or pipe the file through "
                                "iconv -t utf-8)") from None
    return sentences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="translate", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line; "
                                                     "an empty line gives an empty line)")
    parser.add_argument("--model", help="a model file or an MLflow model URI (default: <root>/models/model.pt)")
    parser.add_argument("--root", default=".", help="the project root (models/, params.yaml, mlflow.db)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default: cpu")
    parser.add_argument("--beam", type=_positive, help="beam size (1 = greedy; default: evaluate.beam_size)")
    parser.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"],
                        help="ctranslate2: int8 CTranslate2 for Transformer models (the extra 'fast'); default torch")
    args = parser.parse_args(argv)
    setup_logging()
    from pipeline.inference.serving import load_translator

    root = Path(args.root)
    try:
        sentences = _checked_arguments(args.sentences) if args.sentences else _stdin_lines()
        if not any(s.strip() for s in sentences):
            raise PipelineError("nothing to translate: give sentences as arguments or on stdin, one per line")
        device = choose_device(args.device, "--device")
        reference = args.model or str(root / "models" / "model.pt")
        is_uri = ":/" in reference
        decoding = {} if is_uri else _project_decoding(root)
        if args.beam:
            decoding["beam_size"] = args.beam
        with torch.inference_mode():
            translator = load_translator(reference, root, decoding, str(device))
            if args.engine == "ctranslate2":
                from pipeline.inference.ct2 import ct2_translator

                translator = ct2_translator(translator, "int8" if device.type == "cpu" else "int8_float16",
                                            device.type)
            for line in translator.translate(sentences):
                print(line)
    except PipelineError as exc:
        print(f"error: translate: {exc}", file=sys.stderr)
        sys.exit(1)


def command() -> None:
    """The ``translate`` console script and ``python -m``: main() as the whole process (pipeline.cli.run_command:
    no interpreter teardown: 0.4 s less per call)."""
    run_command(main)


if __name__ == "__main__":
    command()
