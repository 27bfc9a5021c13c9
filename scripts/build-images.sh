#!/usr/bin/env bash
# Build the recserve container images for real, with podman (runc) and no registry: base images
# cannot be pulled on these machines, so the Debian base is made here with debootstrap from the
# mirror the machine's apt sources name, and every image is built on top of it.
#
#   localhost/debian:bookworm        debootstrap --variant=minbase, slimmed as debian:bookworm-slim
#                                    (docker/local/debian/: no docs, no apt caches in layers)
#   localhost/python:3.11-bookworm   + Debian's python3.11 and venv (docker/local/python.Containerfile):
#                                    stands in for the Dockerfiles' default PYTHON_IMAGE
#   localhost/uv:<version>           the binary of the pinned uv wheel (the one in .venv): stands
#                                    in for the Dockerfiles' default UV_IMAGE
#   recserve_serving.release.IMAGES names, as OCI archives in $CACHE (a runtime imports these):
#     docker/serving-cpu.Dockerfile  router + ranker on ONNX Runtime, no torch
#     docker/operator.Dockerfile     the operator
# Not built: docker/builder-cpu.Dockerfile (its CPU torch comes from PyTorch's own index, which
# is not reachable here; PyPI's torch is the CUDA build, ~4 GB more) and docker/serving.Dockerfile
# (CUDA base images). The unit tests lint both.
#
# Cached by content: the bases carry their input digest as a label; each release image has a
# .stamp next to its archive over its Dockerfile and staged build context (exactly the files its
# .dockerignore lets through), build arguments, base digests and the podman version. A warm run
# compares digests and builds nothing; a changed input rebuilds what depends on it (podman's
# layer cache keeps the package installs when only the code changed).
#
# Usage: bash scripts/build-images.sh           build what is missing or stale; print NAME=ARCHIVE
#        bash scripts/build-images.sh --print   print NAME=ARCHIVE (exit 1 if one is not built)
#        bash scripts/build-images.sh --env     print the podman environment (CONTAINERS_CONF, ...)
#        --only DOCKERFILE (repeatable, before the above): only these release images, e.g.
#          `--only serving-cpu.Dockerfile`, which is all `make test` runs: the operator image's
#          ~1 CPU-minute cold is left to `make test-all`. The bases are built either way.
# Env:   RECSERVE_IMAGES_CACHE   cache root (default: e2e/.cache/images): podman's configuration,
#                                storage and the archives; podman's run-time state is on tmpfs in
#                                /run/recserve-podman-<hash of the cache path> (`--env` names it)
#        RECSERVE_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the apt sources' first)
# Needs root (debootstrap, rootful podman), apt-get, and .venv (scripts/bootstrap.sh, run here).
# Installs podman, runc, debootstrap, catatonit, uidmap and slirp4netns from Debian when missing.
# Any failure exits non-zero with a banner.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RECSERVE_IMAGES_CACHE:-$ROOT/e2e/.cache/images}"
PODMAN_DIR="$CACHE/podman"
SUITE=bookworm
PYTHON_BASE=localhost/python:3.11-bookworm
DEBIAN_BASE=localhost/debian:$SUITE

CURRENT="(setup)"
PARTIAL=""
fail() {
  local rc=$?
  # A failure inside $(...) fails its caller too: let the outermost shell print the banner.
  ((BASH_SUBSHELL == 0)) || exit "$rc"
  [[ -n "$PARTIAL" ]] && rm -rf "$PARTIAL"
  {
    echo
    echo "################################################################"
    echo "# IMAGE BUILD FAILED while: $CURRENT (exit $rc)"
    echo "# The container smoke tests cannot run without it. Fix the build; do not skip."
    echo "################################################################"
  } >&2
  exit "${rc/#0/1}"
}
trap fail ERR

# Podman's configuration and storage live in the cache, not in /etc or /var/lib: nothing of the
# machine's is changed, and removing the cache removes every image and layer this script made.
# Host quirks (../shared/notes/containers.md): crun refuses hybrid cgroups, so runc; no
# CAP_SYS_RESOURCE, so the default ulimits must not raise anything and cgroupfs, not systemd.
# Podman's run-time state (locks, sockets, the per-boot database check) goes to a tmpfs, as its
# defaults do, under a short path: slirp4netns's API socket must fit in 108 bytes.
export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
PODMAN_RUN="/run/recserve-podman-$(printf '%s' "$CACHE" | sha256sum | cut -c1-12)"

write_podman_config() {
  mkdir -p "$PODMAN_DIR/storage" "$PODMAN_RUN/run" "$PODMAN_RUN/tmp"
  cat >"$CONTAINERS_CONF.tmp" <<EOF
# Written by scripts/build-images.sh; see the comment there.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PODMAN_DIR/events.log"
tmp_dir = "$PODMAN_RUN/tmp"
EOF
  cat >"$CONTAINERS_STORAGE_CONF.tmp" <<EOF
# Written by scripts/build-images.sh; see the comment there.
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_RUN/run"
EOF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
  mv "$CONTAINERS_STORAGE_CONF.tmp" "$CONTAINERS_STORAGE_CONF"
}

ONLY=()
while [[ "${1:-}" == "--only" ]]; do
  ONLY+=("${2:?--only needs a Dockerfile name, e.g. serving-cpu.Dockerfile}")
  shift 2
done

if [[ "${1:-}" == "--env" ]]; then
  echo "CONTAINERS_CONF=$CONTAINERS_CONF"
  echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
  echo "RECSERVE_PODMAN_RUN=$PODMAN_RUN"
  exit 0
fi

# The images the project releases, named as recserve_serving.release.IMAGES names them, so that
# an archive imported into a container runtime is found under the name the chart uses.
PY="$ROOT/.venv/bin/python"
release_name() {
  PYTHONPATH="$ROOT/serving" "$PY" -c \
    "import sys; from recserve_serving.release import IMAGES; print(IMAGES[sys.argv[1]])" "$1"
}
archive_of() { echo "$CACHE/$(echo "$1" | sed 's#.*/##; s#:#-#').oci.tar"; }
BUILT=(serving-cpu.Dockerfile operator.Dockerfile)
if ((${#ONLY[@]})); then
  for dockerfile in "${ONLY[@]}"; do
    [[ " ${BUILT[*]} " == *" $dockerfile "* ]] || {
      echo "--only $dockerfile: not one of the images built here (${BUILT[*]})" >&2
      exit 2
    }
  done
  BUILT=("${ONLY[@]}")
fi

if [[ "${1:-}" == "--print" ]]; then
  missing=0
  for dockerfile in "${BUILT[@]}"; do
    name="$(release_name "$dockerfile")"
    echo "$name=$(archive_of "$name")"
    [[ -f "$(archive_of "$name").stamp" ]] || missing=1
  done
  exit "$missing"
fi

[[ $EUID -eq 0 ]] || {
  CURRENT="checking privileges: debootstrap and rootful podman need root"
  false
}

ensure_packages() {
  CURRENT="installing podman, runc, debootstrap, catatonit, uidmap, slirp4netns with apt-get"
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [[ -x /usr/libexec/podman/catatonit || -x /usr/bin/catatonit ]] || missing+=(catatonit)
  command -v newuidmap >/dev/null || missing+=(uidmap)
  # The smoke tests give a container its own network namespace with ports forwarded from
  # 127.0.0.1 by slirp4netns: no bridge, no firewall rule on the host.
  command -v slirp4netns >/dev/null || missing+=(slirp4netns)
  if ((${#missing[@]})); then
    echo "[images] installing from Debian: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The first Debian mirror the apt sources name (deb822 or one-line format), as the notes advise:
# it is the one this machine is known to reach.
debian_mirror() {
  if [[ -n "${RECSERVE_DEBIAN_MIRROR:-}" ]]; then
    echo "$RECSERVE_DEBIAN_MIRROR"
    return
  fi
  local mirror
  mirror="$(
    { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
      sed -nE 's#^URIs:[[:space:]]*(\S+/debian)/?([[:space:]].*)?$#\1#p; s#^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(\S+/debian)/?[[:space:]]+bookworm([[:space:]].*)?$#\2#p' |
      head -1
  )"
  [[ -n "$mirror" ]] || {
    CURRENT="finding a Debian mirror in /etc/apt/sources.list*: none names .../debian; set RECSERVE_DEBIAN_MIRROR"
    false
  }
  echo "$mirror"
}

sha() { sha256sum | cut -d' ' -f1; }

STAMP_LABEL=dev.recserve.inputs
# A base image is current when it is in storage and carries the digest of its inputs.
base_is_current() {
  [[ "$(podman image inspect --format "{{index .Labels \"$STAMP_LABEL\"}}" "$1" 2>/dev/null)" == "$2" ]]
}

# fresh <archive> <stamp> <name>: the archive exists, its stamp matches, and the image is in
# storage (loaded from the archive again if the storage was wiped).
fresh() {
  local archive="$1" stamp="$2" name="$3"
  [[ -f "$archive" && -f "$archive.stamp" && "$(cat "$archive.stamp")" == "$stamp" ]] || return 1
  if ! podman image exists "$name"; then
    CURRENT="loading $name from $archive"
    podman load -q -i "$archive" >/dev/null
  fi
  podman image exists "$name"
}

# save <name> <archive> <stamp>: write the OCI archive atomically, then its stamp.
save() {
  local name="$1" archive="$2" stamp="$3"
  CURRENT="saving $name to $archive"
  PARTIAL="$archive.tmp"
  rm -f "$archive.tmp" "$archive.stamp"
  # Uncompressed layers: gzip of a gigabyte costs minutes of CPU on two shared cores, and
  # runtimes import either kind (ctr images import, podman load).
  nice -n 19 podman save -q --uncompressed --format oci-archive -o "$archive.tmp" "$name"
  mv "$archive.tmp" "$archive"
  PARTIAL=""
  echo "$stamp" >"$archive.stamp"
}

build_debian() {
  local mirror rootfs start
  mirror="$(debian_mirror)"
  DEBIAN_STAMP="$(
    {
      printf '%s\n' "debootstrap $(dpkg-query -W -f='${Version}' debootstrap)" minbase "$SUITE" "$mirror"
      (cd "$ROOT/docker/local/debian" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    } | sha
  )"
  if base_is_current "$DEBIAN_BASE" "$DEBIAN_STAMP"; then
    echo "[images] $DEBIAN_BASE: cached"
    return
  fi
  CURRENT="debootstrap --variant=minbase $SUITE from $mirror"
  echo "[images] $DEBIAN_BASE: debootstrap from $mirror ..."
  start=$(date +%s)
  rootfs="$CACHE/rootfs.tmp.$$"
  PARTIAL="$rootfs"
  rm -rf "$rootfs"
  nice -n 19 debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 || {
    tail -20 "$CACHE/debootstrap.log" >&2
    false
  }
  # Slim it as debian:bookworm-slim is: the apt and dpkg settings for the images built on it,
  # and what they exclude removed from what debootstrap already installed. Package lists are
  # fetched by the builds that need them (apt-get update).
  cp -r "$ROOT/docker/local/debian/." "$rootfs/"
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{info,man,groff,lintian,linda}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  CURRENT="podman import of the $SUITE root filesystem"
  tar -C "$rootfs" --numeric-owner -cf - . |
    podman import -q --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "LABEL $STAMP_LABEL=$DEBIAN_STAMP" --change 'CMD ["/bin/bash"]' - "$DEBIAN_BASE" >/dev/null
  rm -rf "$rootfs"
  PARTIAL=""
  echo "[images] $DEBIAN_BASE: made in $(($(date +%s) - start))s"
}

# For the release images, the host's CA bundle and a uv config that trusts it are mounted into
# the RUN steps (bind mounts are never part of a layer): where the host reaches PyPI through a
# TLS-inspecting proxy whose CA only the host trusts, uv's built-in roots would refuse it;
# elsewhere it is the same public bundle. The python base gets none: apt uses the mirror over
# http, and installing Debian's ca-certificates must be free to write that file.
HOST_CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
trust_mounts() {
  [[ -f "$HOST_CA" ]] || return 0
  printf 'system-certs = true\n' >"$PODMAN_DIR/uv.toml"
  echo "--volume=$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro"
  echo "--volume=$PODMAN_DIR/uv.toml:/etc/uv/uv.toml:ro"
}

# podman_build <name> <containerfile> <context> [podman build options...]
podman_build() {
  local name="$1" file="$2" context="$3"
  shift 3
  # --network host: RUN steps reach the Debian mirror and PyPI without a bridge, iptables rules
  # or a network namespace being made (nothing to clean up). --pull never: every base is local.
  local log
  log="$CACHE/build-$(echo "$name" | sed 's#.*/##; s#:#-#').log"
  nice -n 19 podman build --network host --pull=never --layers \
    -f "$file" -t "$name" "$@" "$context" >"$log" 2>&1 || {
    tail -40 "$log" >&2
    echo "(whole log: $log)" >&2
    false
  }
}

build_python() {
  local start
  PYTHON_STAMP="$(printf '%s\n' "$DEBIAN_STAMP" "$(cat "$ROOT/docker/local/python.Containerfile")" | sha)"
  if base_is_current "$PYTHON_BASE" "$PYTHON_STAMP"; then
    echo "[images] $PYTHON_BASE: cached"
    return
  fi
  CURRENT="building $PYTHON_BASE (docker/local/python.Containerfile)"
  start=$(date +%s)
  podman_build "$PYTHON_BASE" "$ROOT/docker/local/python.Containerfile" "$ROOT/docker/local" \
    --label "$STAMP_LABEL=$PYTHON_STAMP"
  echo "[images] $PYTHON_BASE: built in $(($(date +%s) - start))s"
}

# The uv image the Dockerfiles copy /uv from, made of the binary of the pinned uv wheel (the one
# scripts/bootstrap.sh installs), checked to be the version the Dockerfiles name.
build_uv() {
  local version wanted context stamp
  CURRENT="finding the uv version the Dockerfiles use"
  wanted="$(sed -n 's#^ARG UV_IMAGE=ghcr.io/astral-sh/uv:##p' "$ROOT"/docker/*.Dockerfile | sort -u)"
  [[ -n "$wanted" && "$(echo "$wanted" | wc -l)" -eq 1 ]]
  version="$("$ROOT/.venv/bin/uv" --version | awk '{print $2}')"
  CURRENT="checking .venv/bin/uv ($version) against the Dockerfiles' uv ($wanted)"
  [[ "$version" == "$wanted" ]]
  UV_BASE="localhost/uv:$version"
  stamp="$(sha256sum "$ROOT/.venv/bin/uv" | cut -d' ' -f1)"
  UV_STAMP="$stamp"
  if base_is_current "$UV_BASE" "$stamp"; then
    echo "[images] $UV_BASE: cached"
    return
  fi
  CURRENT="building $UV_BASE"
  context="$CACHE/uv-context.tmp.$$"
  PARTIAL="$context"
  rm -rf "$context" && mkdir -p "$context"
  cp "$ROOT/.venv/bin/uv" "$context/uv"
  printf 'FROM scratch\nCOPY uv /uv\n' >"$context/Containerfile"
  podman_build "$UV_BASE" "$context/Containerfile" "$context" --label "$STAMP_LABEL=$stamp"
  rm -rf "$context"
  PARTIAL=""
  echo "[images] $UV_BASE: built"
}

# stage_context <dockerfile> <dir>: copy exactly what the Dockerfile's .dockerignore lets through
# (its `!path` lines; caches and bytecode dropped). The image is built from this copy, so the
# stamp below covers every byte the build can see, and nothing else.
stage_context() {
  local dockerfile="$1" dir="$2" paths=()
  mapfile -t paths < <(sed -n 's#^!\(.*\)#\1#p' "$ROOT/docker/$dockerfile.dockerignore" | sed 's#/$##')
  rm -rf "$dir" && mkdir -p "$dir"
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${paths[@]}" |
    tar -C "$dir" -xf -
}

build_release_image() {
  local dockerfile="$1" name archive context stamp start size
  name="$(release_name "$dockerfile")"
  archive="$(archive_of "$name")"
  context="$CACHE/context-${dockerfile%.Dockerfile}"
  CURRENT="staging the build context of docker/$dockerfile"
  stage_context "$dockerfile" "$context"
  local args=(--build-arg "PYTHON_IMAGE=$PYTHON_BASE" --build-arg "UV_IMAGE=$UV_BASE") mounts=()
  mapfile -t mounts < <(trust_mounts)
  stamp="$(
    {
      podman --version
      printf '%s\n' "$PYTHON_STAMP" "$UV_STAMP" "${args[@]}"
      (cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    } | sha
  )"
  if fresh "$archive" "$stamp" "$name"; then
    size="$(podman image inspect --format '{{.Size}}' "$name")"
    echo "[images] $name: cached ($((size / 1000000)) MB unpacked, $(du -m "$archive" | cut -f1) MB archive)"
    return
  fi
  CURRENT="building $name from docker/$dockerfile"
  echo "[images] $name: building from docker/$dockerfile ..."
  start=$(date +%s)
  podman_build "$name" "$context/docker/$dockerfile" "$context" "${args[@]}" "${mounts[@]}"
  save "$name" "$archive" "$stamp"
  size="$(podman image inspect --format '{{.Size}}' "$name")"
  echo "[images] $name: built in $(($(date +%s) - start))s; $((size / 1000000)) MB unpacked, $(du -m "$archive" | cut -f1) MB archive"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
total_start=$(date +%s)

ensure_packages
write_podman_config
CURRENT="bootstrapping .venv (scripts/bootstrap.sh: uv and the release names come from it)"
bash "$ROOT/scripts/bootstrap.sh" >/dev/null
build_debian
build_python
build_uv
for dockerfile in "${BUILT[@]}"; do
  build_release_image "$dockerfile"
done
# Images an input change replaced are untagged now; drop them (the layer cache stays).
CURRENT="pruning dangling images"
podman image prune -f >/dev/null
echo "[images] all images ready in $(($(date +%s) - total_start))s"
for dockerfile in "${BUILT[@]}"; do
  name="$(release_name "$dockerfile")"
  echo "$name=$(archive_of "$name")"
done
