#!/usr/bin/env bash
# The whole suite, phase by phase with a wall time for each and a total: the venv, lint, types,
# import contracts, the binaries the tests use, then each pytest tier (unit, integration, e2e).
#   bash scripts/test.sh         what CI runs (`make test`): every tier without the long variants;
#                                it builds the CPU serving image (scripts/build-images.sh --only
#                                serving-cpu.Dockerfile) and runs one pod of it on the real kubelet
#                                node (e2e/test_real_node.py, e2e/test_real_node_smoke.py)
#   bash scripts/test.sh --all   `make test-all`: the long variants too (tests marked `long`), with
#                                the operator image as well: the images under podman
#                                (e2e/test_images.py) and the serving image as a Ray head pod on the
#                                real node answering /v1/recommend (e2e/test_real_node_serving.py),
#                                and with CoreDNS as the node's cluster DNS (RECSERVE_E2E_REAL_NODE=1
#                                makes build.sh build it) a RecommenderModel served by KubeRay on
#                                the real node through a canary step (e2e/test_real_node_rayservice.py)
# Every tier runs even when an earlier one failed; the exit code is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."

selection="not long"
# make test builds only the serving image its smoke runs; the operator image (~1 CPU-minute
# cold) is for make test-all's tests.
images=(--only serving-cpu.Dockerfile)
if [[ "${1:-}" == "--all" ]]; then
  selection=""
  images=()
  export RECSERVE_E2E_REAL_NODE=1
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
  # The image build is its own process group (setsid): podman and its helpers go with it.
  if [[ -n "${images_pid:-}" ]] && kill -0 "$images_pid" 2>/dev/null; then kill -- "-$images_pid"; fi
  rm -f "${build_log:-}" "${images_log:-}"
  echo
  echo "== phase times"
  printf '%s\n' "${timings[@]}"
  echo "== suite took $(($(date +%s) - start))s (exit $status)"
}
trap report EXIT

# The control-plane binaries take most of a cold run's CPU (Kubernetes alone ~12 min on 2 cores;
# the real node's kubelet and pause, and its Debian packages, come from the same script).
# build.sh runs at nice 19 in the background from the start, so it fills the CPU the lint and the
# Ray-bound tests leave idle; whatever needs a binary first waits for it (build.sh holds a lock).
build_log=$(mktemp -t recserve-e2e-build.XXXXXX)
# Wait for a background build whose pid is in the variable named $1, clear that variable (so that
# report() has nothing left to kill) and print its log ($2); its exit code is the build's.
finish_background() {
  local code=0
  wait "${!1}" || code=$?
  printf -v "$1" '%s' ""
  cat "$2"
  return "$code"
}

# The container images (scripts/build-images.sh), built for real and cached by content: make test
# the serving image only (its real-node smoke), make test-all the operator image too. The serving
# image alone costs ~3 CPU-minutes cold (Debian base, Python base and the image; see
# docker/README.md), the operator image ~1 more; a warm run ~2 s. It runs at nice 19 in the
# background like build.sh; the tests' fixtures wait for it through the script's lock.
images_log=$(mktemp -t recserve-images-build.XXXXXX)

phase "venv (scripts/bootstrap.sh)" bash scripts/bootstrap.sh || exit
phase "manifest tools (kubeconform, promtool)" bash scripts/build-manifest-tools.sh
bash e2e/cluster/build.sh >"$build_log" 2>&1 &
build_pid=$!
setsid nice -n 19 bash scripts/build-images.sh "${images[@]}" >"$images_log" 2>&1 &
images_pid=$!
phase "ruff" bash -c ".venv/bin/ruff check . && .venv/bin/ruff format --check ."
phase "mypy" .venv/bin/mypy
phase "import contracts (lint-imports)" .venv/bin/lint-imports
phase "pytest unit" tier unit tests "$@"
phase "pytest integration" tier integration tests "$@"
phase "e2e binaries (rest of the background build)" finish_background build_pid "$build_log"
phase "container images (rest of the background build)" finish_background images_pid "$images_log"
phase "pytest e2e" tier e2e e2e "$@"
exit "$status"
