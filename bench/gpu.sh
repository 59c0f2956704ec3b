#!/usr/bin/env bash
# The GPU check in one command (bench/gpu.py): installs what the machine lacks, then trains the ko-en recipe
# for 6 minutes and the Multi30k Transformer for 2, and writes bench/out/gpu/gpu.{json,md}.
#   bash bench/gpu.sh [--smoke] [--out DIR] [--shared CORPORA_DIR]
# On a machine without ../shared, copy shared/corpora into the repository and pass --shared.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif ! "$PY" -c "import torch, tokenizers, sacrebleu, mlflow, dvclive, pydantic" 2>/dev/null; then
  # a GPU machine: torch with CUDA from the default index (the Makefile's CPU wheel is for machines without one)
  "$PY" -m pip install -q "torch==2.13.0" && "$PY" -m pip install -q -e .
fi
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
exec "$PY" bench/gpu.py "$@"
