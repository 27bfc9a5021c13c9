#!/usr/bin/env bash
# The whole suite: lint, types, then every test tier (unit, integration with its scenarios, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== e2e control plane binaries (cached in e2e/.cache after the first build)"
bash e2e/cluster/build.sh
echo "== manifest tools (kubeconform, promtool)"
bash scripts/build-manifest-tools.sh
echo "== pytest"
set +e
.venv/bin/python -m pytest --durations=25 "$@"
code=$?
set -e
echo "== suite took $(( $(date +%s) - start ))s"
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$code"
