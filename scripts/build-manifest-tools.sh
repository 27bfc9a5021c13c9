#!/usr/bin/env bash
# Build the manifest checkers the chart/kustomize tests need, from the pinned Go module in
# scripts/tools/kubeconform, into the e2e tool cache (e2e/.cache/bin/kubeconform-<version>/),
# the same layout and stamp scheme as e2e/cluster/build.sh, which builds helm and kubectl.
# Idempotent: a warm run checks the stamp and builds nothing. Any failure exits non-zero.
# Usage: bash scripts/build-manifest-tools.sh          build what is missing, print the bin dir
#        bash scripts/build-manifest-tools.sh --print  only print it
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/scripts/tools/kubeconform"
CACHE="${RECSERVE_E2E_CACHE:-$ROOT/e2e/.cache}"
VERSION="$(sed -n 's#^\s*github.com/yannh/kubeconform \(v[^ ]*\).*#\1#p' "$MOD/go.mod")"
DIR="$CACHE/bin/kubeconform-$VERSION"
trap 'echo "# MANIFEST TOOLS BUILD FAILED (kubeconform $VERSION); chart/kustomize tests cannot run" >&2' ERR

if [[ "${1:-}" == "--print" ]]; then
  echo "kubeconform=$DIR"
  exit 0
fi
command -v go >/dev/null
if [[ "${CI:-}" == "true" ]]; then PAR="$(nproc)"; else PAR=1; fi
export GOFLAGS="${GOFLAGS:-} -p=$PAR -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
stamp="$( { go version; cat "$MOD/go.mod" "$MOD/go.sum"; } | sha256sum | cut -d' ' -f1)"
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.manifest-tools.lock"
flock 9
if [[ -x "$DIR/kubeconform" && -f "$DIR/.stamp" && "$(cat "$DIR/.stamp")" == "$stamp" ]]; then
  echo "[manifest tools] kubeconform $VERSION: cached ($DIR)"
else
  echo "[manifest tools] kubeconform $VERSION: building ..."
  tmp="$DIR.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$MOD" && go mod download && nice -n 19 go build -trimpath -ldflags "-s -w" \
    -o "$tmp/kubeconform" github.com/yannh/kubeconform/cmd/kubeconform)
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$DIR" && mv "$tmp" "$DIR"
fi
echo "kubeconform=$DIR"
