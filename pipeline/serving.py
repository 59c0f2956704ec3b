"""The servable model: an MLflow ``pyfunc`` that translates text, logged and registered by evaluate.

It wraps the same ``Translator`` as ``translate`` and the evaluate stage, and bundles everything it
needs: ``models/model.pt`` (weights, both tokenizers, normalisation and Korean morpheme settings) as
an artifact, the decoding settings as the model config, and this package as code. So

    mlflow models serve -m models:/<name>@champion --env-manager local

answers ``POST /invocations`` with ``{"inputs": ["sentence", ...]}`` (or a ``text`` column) by
``{"predictions": ["translation", ...]}``; ``params: {"beam_size": 1}`` overrides the beam per request.

    python -m pipeline.serving [--port 5001]     # `make serve-model`: serve the champion on 127.0.0.1
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
from pipeline.translator import Translator

ARTIFACT = "translator"  # the logged model's name inside its run


def model_name(corpus: str, src: str, tgt: str, override: str | None = None) -> str:
    """The registered model's name: ``nmt-<corpus>-<src>-<tgt>``, e.g. nmt-multi30k-de-en."""
    if override:
        return override
    corpus = re.sub(r"[^a-z0-9]+", "-", corpus.lower()).strip("-")
    for pair in (f"-{src}-{tgt}", f"-{tgt}-{src}"):  # sample-ko-en: nmt-sample-ko-en, not nmt-sample-ko-en-ko-en
        corpus = corpus.removesuffix(pair)
    return f"nmt-{corpus}-{src}-{tgt}"


def _pyfunc_class() -> type:
    import warnings

    import mlflow.pyfunc

    # the signature is given explicitly when the model is logged; type hints would make a second one
    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")

    class TranslatorModel(mlflow.pyfunc.PythonModel):
        """Text in, translations out (the class is built here so that importing this module needs no MLflow)."""

        def load_context(self, context: Any) -> None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.translator = Translator.from_file(Path(context.artifacts["model"]), device,
                                                   Decoding(**context.model_config))

        # no type hints: MLflow would infer a signature from them; the logged one is explicit
        def predict(self, context, model_input, params=None):
            import torch

            texts = model_input["text"].tolist() if hasattr(model_input, "columns") else list(model_input)
            translator = self.translator
            if params and params.get("beam_size"):
                translator = translator.with_decoding(beam_size=int(params["beam_size"]))
            with torch.inference_mode():
                return translator.translate([str(t) for t in texts])

    return TranslatorModel


def log_translator(mlflow: Any, model_file: Path, decoding: Decoding, example: str) -> Any:
    """Log the servable model into the active run; returns MLflow's LoggedModel."""
    import tokenizers
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema([ColSpec("string")]),
                               params=ParamSchema([ParamSpec("beam_size", "long", decoding.beam_size)]))
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"tokenizers=={tokenizers.__version__}", "numpy",
                    "kiwipiepy"]
    return mlflow.pyfunc.log_model(
        name=ARTIFACT, python_model=_pyfunc_class()(), artifacts={"model": str(model_file)},
        model_config=decoding.to_dict(), signature=signature, input_example={"text": [example]},
        code_paths=[str(Path(pipeline.__file__).parent)], pip_requirements=requirements)


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

    parser = argparse.ArgumentParser(prog="python -m pipeline.serving", description=main.__doc__)
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
