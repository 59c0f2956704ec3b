"""The servable model: an MLflow ``pyfunc`` that translates text, logged and registered by evaluate.

It wraps the same ``Translator`` as ``translate`` and the evaluate stage, and bundles everything it
needs: ``models/model.pt`` (weights, both tokenizers, normalisation and Korean morpheme settings) as
an artifact, the decoding settings as the model config, and this package as code. So

    mlflow models serve -m models:/<name>@champion --env-manager local

answers ``POST /invocations`` with ``{"inputs": ["sentence", ...]}`` by ``{"predictions": ["translation",
...]}``; ``params: {"beam_size": 1}`` overrides the beam per request. The model is logged from code
(``pipeline/inference/served_model.py``), not pickled; anything but a list of strings, or a beam below 1, is an
HTTP 400 with a one-line reason.

    python -m pipeline.inference.serving [--port 5001]     # `make serve-model`: serve the champion on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import pipeline
from pipeline.common import PipelineError
from pipeline.decoding import Decoding
from pipeline.inference.translator import Translator

ARTIFACT = "translator"  # the logged model's name inside its run


def model_name(corpus: str, src: str, tgt: str, override: str | None = None) -> str:
    """The registered model's name: ``nmt-<corpus>-<src>-<tgt>``, e.g. nmt-multi30k-de-en."""
    if override:
        return override
    corpus = re.sub(r"[^a-z0-9]+", "-", corpus.lower()).strip("-")
    for pair in (f"-{src}-{tgt}", f"-{tgt}-{src}"):  # sample-ko-en: nmt-sample-ko-en, not nmt-sample-ko-en-ko-en
        corpus = corpus.removesuffix(pair)
    return f"nmt-{corpus}-{src}-{tgt}"


def request_translator(translator: Translator, params: dict[str, Any] | None) -> Translator:
    """The translator for one request: ``params: {"beam_size": n}`` changes the beam, anything else is refused
    with a one-line reason (an HTTP 400 from the scoring server)."""
    beam = (params or {}).get("beam_size", translator.decoding.beam_size)
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(f"beam_size must be a whole number of 1 or more (got {beam!r})",
                              error_code=INVALID_PARAMETER_VALUE)
    return translator if beam == translator.decoding.beam_size else translator.with_decoding(beam_size=beam)


def log_translator(mlflow: Any, model_file: Path, decoding: Decoding, example: str) -> Any:
    """Log the servable model into the active run, from code (``inference/served_model.py``); returns
    MLflow's LoggedModel. MLflow takes the signature from ``predict``'s type hints (a list of strings in, a list out)
    and the ``beam_size`` parameter, with its default, from the input example."""
    import tokenizers
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"tokenizers=={tokenizers.__version__}", "numpy",
                    "kiwipiepy"]
    package = Path(pipeline.__file__).parent  # the whole package travels with the model: the code it runs
    return mlflow.pyfunc.log_model(
        name=ARTIFACT, python_model=str(Path(__file__).with_name("served_model.py")),
        artifacts={"model": str(model_file)},
        model_config=decoding.to_dict(), input_example=([example], {"beam_size": decoding.beam_size}),
        code_paths=[str(package)], pip_requirements=requirements)


def load_translator(reference: str, root: Path, decoding: dict[str, Any] | None = None,
                    device: str = "cpu") -> Translator:
    """A translator from a model file, a directory holding model.pt, or an MLflow model URI
    (``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run id>/translator``)."""
    if "://" not in reference and ":/" not in reference:
        path = Path(reference)
        path = path / "model.pt" if path.is_dir() else path
        return Translator.from_file(path, device, Decoding(**(decoding or {})))
    from pipeline.tracking import connect

    mlflow = connect(root)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=reference))
        model = mlflow.models.Model.load(local / "MLmodel")
    except mlflow.exceptions.MlflowException as exc:
        first = str(exc).strip().splitlines()[0]
        raise PipelineError(f"cannot load {reference} from {mlflow.get_tracking_uri()}: {first}") from None
    settings = {**model.flavors["python_function"].get("config", {}), **(decoding or {})}
    return Translator.from_file(local / "artifacts" / "model.pt", device, Decoding(**settings))


def main(argv: list[str] | None = None) -> None:
    """Serve the champion with ``mlflow models serve``, with this environment's binaries on PATH."""
    from pipeline.config import load_params
    from pipeline.tracking import tracking_uri

    parser = argparse.ArgumentParser(prog="python -m pipeline.inference.serving", description=main.__doc__)
    parser.add_argument("--model", help="model URI (default: models:/<registry.model_name>@champion)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        params = load_params(root / "params.yaml")
    except PipelineError as exc:
        print(f"error: serve-model: {exc}", file=sys.stderr)
        sys.exit(1)
    name = model_name(params.data.corpus, params.data.src, params.data.tgt, params.registry.model_name)
    uri = args.model or f"models:/{name}@champion"
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri(root), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    print(f"serving {uri} on http://{args.host}:{args.port}/invocations (Ctrl-C stops)", file=sys.stderr)
    os.execve(os.path.join(bin_dir, "mlflow"), ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                                               "--host", args.host, "--port", str(args.port)], env)


if __name__ == "__main__":
    main()
