# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
# `make test` is what CI runs (budget: 45 min cold, 25 warm on 2 cores); `make test-all` adds the
# long variants (tests marked `long`: the scale run, extended demos, benchmark checks).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: env demo test test-all lint unit integration scenarios e2e generate crd

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

# Rewrites everything generated from a source in the repository: the CRD (from the API types),
# the chart's copy of it, the chart README's values table, and the kustomize base (from the chart;
# needs helm from `bash e2e/cluster/build.sh`). The tests fail while any of them is stale.
generate: env
	$(PY) -m recserve_operator.api.crd --write
	PYTHON=$(PY) bash scripts/sync-chart-crds.sh --crds-only
	$(PY) scripts/chart-readme.py
	$(PY) scripts/render-kustomize-base.py

crd: generate
