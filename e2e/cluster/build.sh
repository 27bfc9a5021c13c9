#!/usr/bin/env bash
# Build every binary the e2e control plane needs, from pinned Go modules, into a cache keyed by
# version: e2e/.cache/bin/<component>-<version>/. Idempotent: a warm run checks stamps and builds
# nothing. Any failure exits non-zero with a banner; nothing is ever skipped silently.
#
# Components (pins live in e2e/cluster/tools/*/go.mod, with go.sum):
#   kubernetes-v1.37.2  kube-apiserver kube-controller-manager kube-scheduler kubectl
#                       (k8s.io/kubernetes v1.37.2, every k8s.io/* staging module replaced by v0.37.2)
#   etcd-v3.7.0         etcd (go.etcd.io/etcd/server/v3 etcdmain, the version k8s v1.37.2 requires)
#   kwok-v0.8.0         kwok (sigs.k8s.io/kwok)
#   kuberay-v1.5.0      ray-operator + crds/ (github.com/ray-project/kuberay/ray-operator)
#   helm-v3.22.0        helm (helm.sh/helm/v3)
# and the real node beside kwok's (make test runs a real pod on it; the kubelet builds in 42 s
# at -p=2 with the control plane's GOCACHE warm), with Debian's containerd, runc, CNI plugins
# and busybox-static installed by apt-get when missing:
#   kubelet-v1.37.2     kubelet (k8s.io/kubernetes/cmd/kubelet; tools/kubelet: the same pins and
#                       replaces as tools/kubernetes, tidied for the kubelet alone)
#   pause-v1            pause (tools/pause: a static pod-sandbox process, ours, no dependency)
# Opt-in (RECSERVE_E2E_REAL_NODE=1), for the real node's cluster DNS; off by default because
# its cold build is ~110 s of CPU even with the control plane's GOCACHE warm (CoreDNS needs
# newer golang.org/x/*, grpc and protobuf than k8s v1.37.2, so almost none of client-go's
# compiled packages can be shared):
#   coredns-v1.15.0     coredns (tools/coredns: coremain with only the bind, errors, log and
#                       kubernetes plugins; k8s.io/* required at v0.37.2, the control plane's)
# Opt-in on top (RECSERVE_E2E_REAL_NODE=1 RECSERVE_E2E_CONTAINERD=build): Debian's containerd
# 1.6 serves kubelet v1.37 (with a warning); the kubelets after it need containerd 2:
#   containerd-v2.4.2   containerd containerd-shim-runc-v2 ctr (github.com/containerd/containerd/v2)
#
# Usage: bash e2e/cluster/build.sh            build what is missing, print the bin dirs
#        bash e2e/cluster/build.sh --print    only print the bin dirs (exit 1 if any is missing)
# Env:   RECSERVE_E2E_GO_PARALLEL  go build -p (default: 1, or nproc when CI=true)
#        RECSERVE_E2E_CACHE        cache root (default: e2e/.cache)
#        RECSERVE_E2E_REAL_NODE    1: also build the real node's cluster DNS (coredns)
#        RECSERVE_E2E_CONTAINERD   build: with RECSERVE_E2E_REAL_NODE=1, also build containerd 2
#                                  (default deb: the node uses Debian's containerd package)
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$HERE/tools"
CACHE="${RECSERVE_E2E_CACHE:-$(cd "$HERE/.." && pwd)/.cache}"
BIN_ROOT="$CACHE/bin"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
KWOK_VERSION=v0.8.0
KUBERAY_VERSION=v1.5.0
HELM_VERSION=v3.22.0
PAUSE_VERSION=v1
CONTAINERD_VERSION=v2.4.2
COREDNS_VERSION=v1.15.0

CURRENT="(setup)"
PARTIAL=""
fail() {
  local rc=$?
  [[ -n "$PARTIAL" ]] && rm -rf "$PARTIAL"
  {
    echo
    echo "################################################################"
    echo "# E2E BUILD FAILED while building: $CURRENT (exit $rc)"
    echo "# The e2e tier cannot run without it. Fix the build; do not skip."
    echo "################################################################"
  } >&2
  exit "${rc/#0/1}"
}
trap fail ERR

if [[ "${CI:-}" == "true" ]]; then
  PAR="${RECSERVE_E2E_GO_PARALLEL:-$(nproc)}"
else
  PAR="${RECSERVE_E2E_GO_PARALLEL:-1}"
fi
# Keep what the environment already says (for example -buildvcs=false) and add our restraint.
export GOFLAGS="${GOFLAGS:-} -p=$PAR -mod=readonly"
# Every module here names go 1.26.0; refuse to fetch another toolchain behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
command -v go >/dev/null || { CURRENT="go toolchain (go not on PATH)"; false; }

real_node() { [[ "${RECSERVE_E2E_REAL_NODE:-0}" == "1" ]]; }
build_containerd() { real_node && [[ "${RECSERVE_E2E_CONTAINERD:-deb}" == "build" ]]; }

dir_of() { echo "$BIN_ROOT/$1-$2"; }

# The stamp covers the Go version, the pins, our own Go sources, the ldflags and the package
# list: change any of them and that component rebuilds.
stamp_of() {
  local mod="$1"
  shift
  {
    go version
    cat "$TOOLS/$mod/go.mod" "$TOOLS/$mod/go.sum"
    if [[ -d "$TOOLS/$mod/cmd" ]]; then
      find "$TOOLS/$mod/cmd" -type f -name '*.go' -print0 | sort -z | xargs -0 cat
    fi
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

# is_built <dir> <stamp> <binaries...>
is_built() {
  local dir="$1" stamp="$2"
  shift 2
  [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]] || return 1
  local b
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

# build <component> <version> <module dir> <ldflags> <binaries (name=package)...>
build() {
  local comp="$1" version="$2" mod="$3" ldflags="$4"
  shift 4
  local dir stamp names=() pkgs=() spec
  dir="$(dir_of "$comp" "$version")"
  stamp="$(stamp_of "$mod" "$ldflags" "$@")"
  for spec in "$@"; do names+=("${spec%%=*}"); pkgs+=("${spec#*=}"); done
  if is_built "$dir" "$stamp" "${names[@]}"; then
    echo "[e2e build] $comp $version: cached ($dir)"
    return 0
  fi
  CURRENT="$comp $version (module $TOOLS/$mod)"
  echo "[e2e build] $comp $version: building ${names[*]} with go build -p=$PAR ..."
  local start tmp
  start=$(date +%s)
  tmp="$dir.tmp.$$"
  PARTIAL="$tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  pushd "$TOOLS/$mod" >/dev/null
  go mod download
  # One go build for all of a component's commands: shared packages compile once and the
  # links run side by side instead of one after another.
  CURRENT="$comp $version: ${names[*]}"
  nice -n 19 go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "${pkgs[@]}"
  local name
  for name in "${names[@]}"; do [[ -x "$tmp/$name" ]]; done
  popd >/dev/null
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  PARTIAL=""
  echo "[e2e build] $comp $version: built in $(($(date +%s) - start))s"
}

print_dirs() {
  echo "kubernetes=$(dir_of kubernetes "$K8S_VERSION")"
  echo "etcd=$(dir_of etcd "$ETCD_VERSION")"
  echo "kwok=$(dir_of kwok "$KWOK_VERSION")"
  echo "kuberay=$(dir_of kuberay "$KUBERAY_VERSION")"
  echo "helm=$(dir_of helm "$HELM_VERSION")"
  echo "kubelet=$(dir_of kubelet "$K8S_VERSION")"
  echo "pause=$(dir_of pause "$PAUSE_VERSION")"
  if real_node; then
    echo "coredns=$(dir_of coredns "$COREDNS_VERSION")"
  fi
  if build_containerd; then
    echo "containerd=$(dir_of containerd "$CONTAINERD_VERSION")"
  fi
}

if [[ "${1:-}" == "--print" ]]; then
  print_dirs
  exit 0
fi

mkdir -p "$BIN_ROOT"
# One build at a time per cache (parallel pytest sessions, or a human and a test run).
exec 9>"$BIN_ROOT/.lock"
flock 9

total_start=$(date +%s)

K8S_LD=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LD+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=37"
  K8S_LD+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build kubernetes "$K8S_VERSION" kubernetes "$K8S_LD" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kubectl=k8s.io/kubernetes/cmd/kubectl

build etcd "$ETCD_VERSION" kubernetes "" etcd=./cmd/etcd

build kwok "$KWOK_VERSION" kwok "" \
  kwok=sigs.k8s.io/kwok/cmd/kwok
# kwok's default Stages (what kwokctl feeds it): node initialize + heartbeat with lease, and the
# fast pod lifecycle (ready, complete for Job pods, delete), from the same module version.
CURRENT="kwok $KWOK_VERSION stages"
KWOK_DIR="$(dir_of kwok "$KWOK_VERSION")"
if [[ ! -f "$KWOK_DIR/stages/.stamp" || "$(cat "$KWOK_DIR/stages/.stamp")" != "$(cat "$KWOK_DIR/.stamp")" ]]; then
  src="$(cd "$TOOLS/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
  rm -rf "$KWOK_DIR/stages"
  mkdir -p "$KWOK_DIR/stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$src/$f" "$KWOK_DIR/stages/"
  done
  chmod u+w "$KWOK_DIR"/stages/*.yaml
  cp "$KWOK_DIR/.stamp" "$KWOK_DIR/stages/.stamp"
  echo "[e2e build] kwok $KWOK_VERSION: stages copied from $src"
fi

build kuberay "$KUBERAY_VERSION" kuberay "" ray-operator=github.com/ray-project/kuberay/ray-operator
# KubeRay's CRDs, from the same module version the operator was built from.
CURRENT="kuberay $KUBERAY_VERSION CRDs"
KUBERAY_DIR="$(dir_of kuberay "$KUBERAY_VERSION")"
if [[ ! -f "$KUBERAY_DIR/crds/.stamp" || "$(cat "$KUBERAY_DIR/crds/.stamp")" != "$(cat "$KUBERAY_DIR/.stamp")" ]]; then
  src="$(cd "$TOOLS/kuberay" && go list -m -f '{{.Dir}}' github.com/ray-project/kuberay/ray-operator)"
  [[ -d "$src/config/crd/bases" ]]
  rm -rf "$KUBERAY_DIR/crds"
  mkdir -p "$KUBERAY_DIR/crds"
  cp "$src"/config/crd/bases/*.yaml "$KUBERAY_DIR/crds/"
  chmod u+w "$KUBERAY_DIR"/crds/*.yaml
  ls "$KUBERAY_DIR"/crds/ray.io_rayclusters.yaml >/dev/null
  cp "$KUBERAY_DIR/.stamp" "$KUBERAY_DIR/crds/.stamp"
  echo "[e2e build] kuberay $KUBERAY_VERSION: CRDs copied from $src/config/crd/bases"
fi

build helm "$HELM_VERSION" helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  helm=helm.sh/helm/v3/cmd/helm

# The real node's runtime comes from Debian, like the images' podman (scripts/build-images.sh):
# containerd 1.6, runc, the CNI plugins (/usr/lib/cni) and the busybox the test pods run.
CURRENT="installing the real node's containerd, runc, CNI plugins, busybox-static with apt-get"
missing=()
[[ -x /usr/bin/containerd && -x /usr/bin/containerd-shim-runc-v2 && -x /usr/bin/ctr ]] || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
  echo "[e2e build] real node: installing from Debian: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The kubelet has the control plane's pins and ldflags in a module of its own (tools/kubelet):
# a kubelet change never invalidates the control plane's binaries.
build kubelet "$K8S_VERSION" kubelet "$K8S_LD" kubelet=k8s.io/kubernetes/cmd/kubelet
# The pod sandbox's pause process: registry.k8s.io/pause cannot be pulled here.
CGO_ENABLED=0 build pause "$PAUSE_VERSION" pause "" pause=./cmd/pause
if real_node; then
  # With cgo, as the control plane's binaries are: the std packages it compiles are shared.
  build coredns "$COREDNS_VERSION" coredns "" coredns=./cmd/coredns
fi
if build_containerd; then
  # Static, as containerd's own release builds are; without cgo the btrfs snapshotter drops out.
  CGO_ENABLED=0 build containerd "$CONTAINERD_VERSION" containerd \
    "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    ctr=github.com/containerd/containerd/v2/cmd/ctr
fi

echo "[e2e build] all components ready in $(($(date +%s) - total_start))s"
print_dirs
