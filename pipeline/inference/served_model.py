"""The served model's code, logged as source (MLflow's models-from-code) instead of a pickled object.

MLflow copies this file into every logged model and runs it on loading; ``set_model`` names the model.
Nothing is unpickled, so loading cannot run code that is not this file and the ``pipeline`` package
logged beside it, and the type hints on ``predict`` give MLflow its input check and signature.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TranslatorModel(PythonModel):
    """Sentences in, translations out, through ``pipeline.inference.translator.Translator``."""

    def load_context(self, context: Any) -> None:
        import torch

        from pipeline.inference.serving import logged_translator

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.translator = logged_translator(context.artifacts, context.model_config, device)

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        import torch

        from pipeline.inference.serving import request_translator

        translator = request_translator(self.translator, params)
        with torch.inference_mode():
            return translator.translate(model_input)


mlflow.models.set_model(TranslatorModel())
