#!/usr/bin/env bash
# The whole suite, phase by phase with a wall time for each and a total: the venv, lint, types,
# import contracts, the binaries the tests use, then each pytest tier (unit, integration, e2e).
#   bash scripts/test.sh         what CI runs (`make test`): every tier without the long variants
#   bash scripts/test.sh --all   `make test-all`: the long variants too (tests marked `long`)
# Every tier runs even when an earlier one failed; the exit code is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."

selection="not long"
if [[ "${1:-}" == "--all" ]]; then
  selection=""
  shift
fi

start=$(date +%s)
timings=()
status=0

# phase NAME COMMAND...: run it, record its wall time, remember the first failure.
phase() {
  local name="$1" began code
  shift
  echo "== $name"
  began=$(date +%s)
  "$@"
  code=$?
  timings+=("$(printf '%-34s %5ss%s' "$name" "$(($(date +%s) - began))" "$([[ $code -ne 0 ]] && echo "  FAILED (exit $code)")")")
  if [[ $code -ne 0 && $status -eq 0 ]]; then status=$code; fi
  return "$code"
}

# A tier that collects no test is a failure here (pytest's exit 5), never a silent pass.
tier() {
  local marker="$1" code
  shift
  .venv/bin/python -m pytest --durations=15 -m "$marker${selection:+ and $selection}" "$@"
  code=$?
  if [[ $code -eq 5 ]]; then
    echo "pytest collected no $marker tests: that is a failure here" >&2
    return 1
  fi
  return "$code"
}

report() {
  if [[ -n "${build_pid:-}" ]] && kill -0 "$build_pid" 2>/dev/null; then kill "$build_pid"; fi
  rm -f "${build_log:-}"
  echo
  echo "== phase times"
  printf '%s\n' "${timings[@]}"
  echo "== suite took $(($(date +%s) - start))s (exit $status)"
}
trap report EXIT

# The control-plane binaries take most of a cold run's CPU (Kubernetes alone ~12 min on 2 cores).
# build.sh runs at nice 19 in the background from the start, so it fills the CPU the lint and the
# Ray-bound tests leave idle; whatever needs a binary first waits for it (build.sh holds a lock).
build_log=$(mktemp -t recserve-e2e-build.XXXXXX)
wait_for_binaries() {
  local code=0
  wait "$build_pid" || code=$?
  build_pid=""
  cat "$build_log"
  return "$code"
}

phase "venv (scripts/bootstrap.sh)" bash scripts/bootstrap.sh || exit
phase "manifest tools (kubeconform, promtool)" bash scripts/build-manifest-tools.sh
bash e2e/cluster/build.sh >"$build_log" 2>&1 &
build_pid=$!
phase "ruff" bash -c ".venv/bin/ruff check . && .venv/bin/ruff format --check ."
phase "mypy" .venv/bin/mypy
phase "import contracts (lint-imports)" .venv/bin/lint-imports
phase "pytest unit" tier unit tests "$@"
phase "pytest integration" tier integration tests "$@"
phase "e2e binaries (rest of the background build)" wait_for_binaries
phase "pytest e2e" tier e2e e2e "$@"
exit "$status"
