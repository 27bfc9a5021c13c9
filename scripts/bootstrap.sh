#!/usr/bin/env bash
# Create .venv with the exact pinned dependency set (requirements.lock) and recserve itself.
# Idempotent: re-running after a lock change brings the venv in line; a current venv costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY'
import sys
if not ((3, 11) <= sys.version_info[:2] < (3, 13)):
    sys.exit(f"recserve needs Python 3.11 or 3.12, found {sys.version.split()[0]} ({sys.executable}); set PYTHON=")
PY

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.recserve-installed
wanted=$(cat requirements.lock pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
# Bytecode now, once: these machines run Python with PYTHONDONTWRITEBYTECODE=1, so without it every
# process (each recserve command, Ray worker and replica) compiles what it imports from source
# again: 3-4 s of CPU more for torch, transformers and Ray, 4 s more for Feast (measured).
.venv/bin/uv pip install --python .venv/bin/python --quiet --compile-bytecode -r requirements.lock
.venv/bin/uv pip install --python .venv/bin/python --quiet --no-deps -e .
echo "$wanted" > "$stamp"
echo "environment ready: .venv"
