# Everything runs inside .venv, created on first use. `make help` lists the targets.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TEST_WORKERS ?= 2  # pytest processes of `make test`
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: help install pipeline repro promote compare test lint ui serve serve-model deploy worker push pull

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the project and its dev tools

# The CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build here.
# On a GPU machine use TORCH_SPEC="torch==2.13.0" with the CUDA index, or let pip pick.
TORCH_SPEC ?= torch==2.13.0
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

pipeline: $(STAMP)  ## run the whole pipeline (Prefect flow over the DVC stages); CORPUS=multi30k or RECIPE=ko-en first
	$(PY) -m flows.pipeline $(if $(CORPUS),--corpus $(CORPUS)) $(if $(RECIPE),--recipe $(RECIPE))

repro: $(STAMP)  ## the same stages through `dvc repro` (a failure ends with one line)
	$(PY) -m flows.dvc

compare: $(STAMP)  ## run a grid of models as DVC experiments (GRID=lineup, JOBS=1): reports/compare.md
	$(PY) -m flows.compare --grid $(or $(GRID),lineup) --jobs $(or $(JOBS),1)

deploy: $(STAMP)  ## deploy this project to the Prefect process work pool POOL (default nmt) on PREFECT_API_URL; CRON= to schedule
	$(PY) -m flows.pipeline --deploy $(or $(POOL),nmt) $(if $(CRON),--cron "$(CRON)")

worker: $(STAMP)  ## a Prefect worker for the work pool POOL (default nmt): runs the deployed pipelines
	$(PY) -m flows.pipeline --check-services  # a dead PREFECT_API_URL: one line now, not minutes of retries
	$(VENV)/bin/prefect worker start --pool $(or $(POOL),nmt) --type process

push: $(STAMP)  ## send the DVC cache (data, models) to the default DVC remote (`dvc remote add -d ...`)
	$(PY) -m dvc push

pull: $(STAMP)  ## fetch this commit's data and models from the DVC remote: `dvc repro` then reruns nothing
	$(PY) -m dvc pull

promote: $(STAMP)  ## give the last registered model @champion if it beats the current one
	$(PY) -m pipeline.stages.promote

serve-model: $(STAMP)  ## serve models:/<name>@champion on 127.0.0.1:5001 (POST /invocations); MODEL=models:/<name>-student@champion
	$(PY) -m pipeline.inference.serving $(if $(MODEL),--model $(MODEL))

test: $(STAMP)  ## lint, then the test suite
	$(VENV)/bin/ruff check .
	# two workers, a test file each at a time (its module fixtures built once), the slowest files first: most tests
	# wait on a subprocess or a server with one core busy; tests/conftest.py orders the files and gives each worker
	# its share of the torch threads
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15  # the slowest tests, for keeping the suite short

lint: $(STAMP)  ## ruff only
	$(VENV)/bin/ruff check .

ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

serve: $(STAMP)  ## scheduled runs (CRON="0 3 * * *"); starts a local Prefect server unless PREFECT_API_URL is set
	$(PY) -m flows.pipeline --serve $(if $(CRON),--cron "$(CRON)")
