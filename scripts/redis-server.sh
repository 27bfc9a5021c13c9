#!/usr/bin/env bash
# Print the path of a redis-server binary, installing Debian's redis-server package with apt-get
# when none is on PATH (the way e2e/cluster/build.sh provisions the real node's packages).
# The online history store's Redis tests start their own server from it, on a free port with no
# persistence; the package's system service is never started (see policy-rc.d below).
# CI starts from a clean machine, so this script is what makes Redis available: the tests call it.
# Needs root and apt-get when the binary is missing. Any failure exits non-zero with a banner.
# Usage: bash scripts/redis-server.sh
set -Eeuo pipefail
trap 'echo "# REDIS-SERVER SETUP FAILED: installing Debian redis-server with apt-get; the Redis tests cannot run" >&2' ERR

if ! command -v redis-server >/dev/null; then
  echo "[redis] installing from Debian: redis-server" >&2
  # The package would start its own service on 6379 where services start: a policy-rc.d that
  # refuses every start (Debian's documented switch) for the install keeps anything from running.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  if ((own_policy)); then rm -f "$policy"; fi
fi
command -v redis-server
