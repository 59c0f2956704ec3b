"""Translate with the trained model: ``translate "나는 어제 도서관에서 책을 읽었다"`` or lines on stdin."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from pipeline.common import PipelineError, setup_logging
from pipeline.config import Paths
from pipeline.device import choose_device
from pipeline.translator import Translator

log = logging.getLogger(__name__)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="translate", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line; "
                                                     "an empty line gives an empty line)")
    parser.add_argument("--root", default=".", help="project root holding models/ and data/tokenizer/")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default: cpu")
    parser.add_argument("--beam", type=_positive, default=5, help="beam size (1 = greedy; default 5)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
        if not any(s.strip() for s in sentences):
            raise PipelineError("nothing to translate: give sentences as arguments or on stdin, one per line")
        device = choose_device(args.device, "--device")
        with torch.inference_mode():
            translator = Translator.from_paths(Paths(Path(args.root)), str(device), beam_size=args.beam)
            for line in translator.translate(sentences):
                print(line)
    except PipelineError as exc:
        print(f"error: translate: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
