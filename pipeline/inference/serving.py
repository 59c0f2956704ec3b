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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pipeline
from pipeline.common import PipelineError
from pipeline.decoding import Decoding
from pipeline.inference.translator import Translator

ARTIFACT = "translator"  # the logged model's name inside its run
CT2_KEY = "ctranslate2"  # in the model config: the compute type of the CTranslate2 export logged beside model.pt


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


def log_translator(mlflow: Any, model_file: Path, decoding: Decoding, example: str,
                   ct2: tuple[Path, str] | None = None) -> Any:
    """Log the servable model into the active run, from code (``inference/served_model.py``); returns
    MLflow's LoggedModel. MLflow takes the signature from ``predict``'s type hints (a list of strings in, a list out)
    and the ``beam_size`` parameter, with its default, from the input example. ``ct2``: a CTranslate2 export of
    the model and its compute type, which the served model then decodes with."""
    import tokenizers
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"tokenizers=={tokenizers.__version__}", "numpy",
                    "kiwipiepy"]
    artifacts, config = {"model": str(model_file)}, decoding.to_dict()
    package = Path(pipeline.__file__).parent  # the whole package travels with the model: the code it runs
    with tempfile.TemporaryDirectory() as scratch:
        if ct2 is not None:
            import ctranslate2

            named = Path(scratch) / "ct2"  # MLflow names a folder artifact after the folder
            shutil.copytree(ct2[0], named)
            artifacts["ct2"], config[CT2_KEY] = str(named), ct2[1]
            requirements.append(f"ctranslate2=={ctranslate2.__version__}")
        return mlflow.pyfunc.log_model(
            name=ARTIFACT, python_model=str(Path(__file__).with_name("served_model.py")), artifacts=artifacts,
            model_config=config, input_example=([example], {"beam_size": decoding.beam_size}),
            code_paths=[str(package)], pip_requirements=requirements)


def logged_translator(artifacts: dict[str, str], config: dict[str, Any], device: str = "cpu") -> Translator:
    """The translator of a logged model (its artifacts' local paths and its model config): the model file and
    its decoding settings, on CTranslate2 when it was logged with an export."""
    settings = dict(config)
    compute_type = settings.pop(CT2_KEY, None)
    translator = Translator.from_file(Path(artifacts["model"]), device, Decoding(**settings))
    if compute_type:
        from pipeline.inference.ct2 import CT2Translator

        translator = CT2Translator(translator, Path(artifacts["ct2"]), compute_type, device)
    return translator


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
    # the translator reads the files into memory (torch, CTranslate2): without a folder of our own, MLflow downloads
    # each model to a new temporary folder that nobody removes
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=reference, dst_path=scratch))
            model = mlflow.models.Model.load(local / "MLmodel")
        except mlflow.exceptions.MlflowException as exc:
            first = str(exc).strip().splitlines()[0]
            raise PipelineError(f"cannot load {reference} from {mlflow.get_tracking_uri()}: {first}") from None
        flavor = model.flavors["python_function"]
        artifacts = {name: str(local / entry["path"]) for name, entry in flavor.get("artifacts", {}).items()}
        return logged_translator(artifacts, {**flavor.get("config", {}), **(decoding or {})}, device)


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
    name = model_name(params.data.name, params.data.src, params.data.tgt, params.registry.model_name)
    uri = args.model or f"models:/{name}@champion"
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri(root), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    print(f"serving {uri} on http://{args.host}:{args.port}/invocations (Ctrl-C stops)", file=sys.stderr)
    os.execve(os.path.join(bin_dir, "mlflow"), ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                                               "--host", args.host, "--port", str(args.port)], env)


if __name__ == "__main__":
    main()
