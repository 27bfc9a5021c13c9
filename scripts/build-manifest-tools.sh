#!/usr/bin/env bash
# Build the checkers the chart, kustomize and observability tests need, each from a pinned Go
# module in scripts/tools/<name>/ (its go.mod `tool` line names the command), into the e2e tool
# cache as e2e/.cache/bin/<name>-<module version>/<name>: the layout and stamp scheme of
# e2e/cluster/build.sh, which builds helm and kubectl.
#   kubeconform  github.com/yannh/kubeconform       schema validation of rendered manifests
#   promtool     github.com/prometheus/prometheus   `promtool check rules` / `promtool test rules`
#   prometheus   github.com/prometheus/prometheus   a real server for the Prometheus analysis provider's
#                                                   test (same module and go.mod as promtool)
# Idempotent: a warm run checks stamps and builds nothing. Any failure exits non-zero.
# Usage: bash scripts/build-manifest-tools.sh          build what is missing, print the bin dirs
#        bash scripts/build-manifest-tools.sh --print  only print them
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RECSERVE_E2E_CACHE:-$ROOT/e2e/.cache}"
CURRENT="(setup)"
trap 'echo "# MANIFEST TOOLS BUILD FAILED: $CURRENT; the chart/kustomize/observability tests cannot run" >&2' ERR

# name -> "module path of the command's module|package of the command|folder in scripts/tools"
declare -A TOOLS=(
  [kubeconform]="github.com/yannh/kubeconform|github.com/yannh/kubeconform/cmd/kubeconform|kubeconform"
  [promtool]="github.com/prometheus/prometheus|github.com/prometheus/prometheus/cmd/promtool|promtool"
  [prometheus]="github.com/prometheus/prometheus|github.com/prometheus/prometheus/cmd/prometheus|promtool"
)
NAMES=(kubeconform promtool prometheus)

mod_dir_of() { echo "$ROOT/scripts/tools/${TOOLS[$1]##*|}"; }
package_of() { local rest="${TOOLS[$1]#*|}"; echo "${rest%|*}"; }

dir_of() {
  local mod="${TOOLS[$1]%%|*}" version
  version="$(sed -n "s#^\s*${mod} \(v[^ ]*\).*#\1#p" "$(mod_dir_of "$1")/go.mod")"
  [[ -n "$version" ]]
  echo "$CACHE/bin/$1-$version"
}

if [[ "${1:-}" == "--print" ]]; then
  for name in "${NAMES[@]}"; do echo "$name=$(dir_of "$name")"; done
  exit 0
fi

command -v go >/dev/null || { CURRENT="go toolchain (go not on PATH)"; false; }
if [[ "${CI:-}" == "true" ]]; then PAR="$(nproc)"; else PAR=1; fi
export GOFLAGS="${GOFLAGS:-} -p=$PAR -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.manifest-tools.lock"
flock 9

for name in "${NAMES[@]}"; do
  CURRENT="$name"
  mod_dir="$(mod_dir_of "$name")"
  dir="$(dir_of "$name")"
  stamp="$( { go version; cat "$mod_dir/go.mod" "$mod_dir/go.sum"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$dir/$name" && -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
    echo "[manifest tools] $name: cached ($dir)"
    continue
  fi
  echo "[manifest tools] $name: building $(basename "$dir") with go build -p=$PAR ..."
  start=$(date +%s)
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$mod_dir" && go mod download && nice -n 19 go build -trimpath -ldflags "-s -w" \
    -o "$tmp/$name" "$(package_of "$name")")
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "[manifest tools] $name: built in $(($(date +%s) - start))s"
done
for name in "${NAMES[@]}"; do echo "$name=$(dir_of "$name")"; done
