#!/usr/bin/env bash
# The checkers the chart, kustomize and observability tests need, in the e2e tool cache
# (e2e/.cache/bin/<name>-<version>/<name>, the layout of e2e/cluster/build.sh):
#   kubeconform  built from its pinned Go module in scripts/tools/kubeconform/ (go.mod `tool` line)
#   promtool     Debian's prometheus package at PROMETHEUS_DEB (unpacked, never installed, so no
#   prometheus   service starts): `promtool check/test rules`, and a real server for the
#                Prometheus analysis provider's test. Building them from source cost ~5 min cold.
# Idempotent: a warm run checks stamps and fetches or builds nothing. Any failure exits non-zero.
# Usage: bash scripts/build-manifest-tools.sh          fetch or build what is missing, print the bin dirs
#        bash scripts/build-manifest-tools.sh --print  only print them
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RECSERVE_E2E_CACHE:-$ROOT/e2e/.cache}"
CURRENT="(setup)"
trap 'echo "# MANIFEST TOOLS FAILED: $CURRENT; the chart/kustomize/observability tests cannot run" >&2' ERR

PROMETHEUS_DEB="2.42.0+ds-5+deb12u1"
KUBECONFORM_MOD="$ROOT/scripts/tools/kubeconform"

kubeconform_dir() {
  local version
  version="$(sed -n 's#^\s*github.com/yannh/kubeconform \(v[^ ]*\).*#\1#p' "$KUBECONFORM_MOD/go.mod")"
  [[ -n "$version" ]]
  echo "$CACHE/bin/kubeconform-$version"
}
prometheus_dir() { echo "$CACHE/bin/prometheus-deb-${PROMETHEUS_DEB//[+~]/_}"; }

print_dirs() {
  echo "kubeconform=$(kubeconform_dir)"
  echo "promtool=$(prometheus_dir)"
  echo "prometheus=$(prometheus_dir)"
}

if [[ "${1:-}" == "--print" ]]; then
  print_dirs
  exit 0
fi

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.manifest-tools.lock"
flock 9

build_kubeconform() {
  CURRENT="kubeconform"
  command -v go >/dev/null || { CURRENT="kubeconform: go not on PATH"; false; }
  local dir stamp tmp start
  dir="$(kubeconform_dir)"
  stamp="$( { go version; cat "$KUBECONFORM_MOD/go.mod" "$KUBECONFORM_MOD/go.sum"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$dir/kubeconform" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    echo "[manifest tools] kubeconform: cached ($dir)"
    return
  fi
  start=$(date +%s)
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$KUBECONFORM_MOD" && GOFLAGS="${GOFLAGS:-} -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
    go build -trimpath -ldflags "-s -w" -o "$tmp/kubeconform" github.com/yannh/kubeconform/cmd/kubeconform)
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "[manifest tools] kubeconform: built in $(($(date +%s) - start))s"
}

fetch_prometheus() {
  CURRENT="prometheus $PROMETHEUS_DEB (Debian package)"
  local dir tmp start
  dir="$(prometheus_dir)"
  if [[ -x "$dir/prometheus" && -x "$dir/promtool" ]]; then
    echo "[manifest tools] prometheus, promtool: cached ($dir)"
    return
  fi
  start=$(date +%s)
  if ! apt-cache show "prometheus=$PROMETHEUS_DEB" >/dev/null 2>&1; then
    CURRENT="apt-get update (the package lists have no prometheus=$PROMETHEUS_DEB)"
    apt-get update -qq
  fi
  CURRENT="apt-get download prometheus=$PROMETHEUS_DEB (pinned; see PROMETHEUS_DEB in this script)"
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp/deb"
  (cd "$tmp/deb" && apt-get download -qq "prometheus=$PROMETHEUS_DEB" 2>&1 | grep -v "unsandboxed" || true)
  ls "$tmp"/deb/prometheus_*.deb >/dev/null
  dpkg-deb -x "$tmp"/deb/prometheus_*.deb "$tmp/root"
  cp "$tmp/root/usr/bin/prometheus" "$tmp/root/usr/bin/promtool" "$tmp/"
  rm -rf "$tmp/deb" "$tmp/root"
  "$tmp/promtool" --version >/dev/null
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "[manifest tools] prometheus, promtool: unpacked from Debian's package in $(($(date +%s) - start))s"
}

build_kubeconform
fetch_prometheus
print_dirs
