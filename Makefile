# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
# `make test` is what CI runs (budget: 45 min cold, 25 warm on 2 cores); `make test-all` adds the
# long variants (tests marked `long`: the scale run, extended demos, benchmark checks).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: env demo test test-all lint unit integration scenarios e2e crd bench

env:
	@bash scripts/bootstrap.sh

demo: env
	$(VENV)/bin/recserve up manifests/examples/movielens-ranker.yaml

test:
	@bash scripts/test.sh

test-all:
	@bash scripts/test.sh --all

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: env
	$(PY) -m pytest -m unit

integration: env
	$(PY) -m pytest -m integration

scenarios: env
	$(PY) -m pytest -m scenario

e2e: env
	bash e2e/cluster/build.sh
	$(PY) -m pytest -m e2e e2e

crd: env
	$(PY) -m recserve_operator.api.crd --write
