"""The pipeline's stages, one module each (``python -m pipeline.stages.<name>``, as dvc.yaml runs them),
and promotion. A stage never imports another; what two share lives below, in ``pipeline``."""
