"""Everything that turns a trained model into translations: search, the translators (PyTorch and
CTranslate2), the served MLflow model and the ``translate`` command. Imports no stage."""
