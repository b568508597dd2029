#!/usr/bin/env bash
# The prepared GPU check of stacked training; see benchmarks/device_check.py for what it measures.
#
#   bash benchmarks/device_check.sh            # on a machine with a GPU (≈ 5 min, capped at 8)
#   bash benchmarks/device_check.sh --smoke    # tiny sizes on the CPU: checks the script works
#
# Run from the repository root of a fresh checkout. It needs a python with torch, numpy, tqdm and
# safetensors: $PYTHON if set, else the repo's .venv, else the system python3 (the lent H200's
# python3 has all four); failing those it makes .venv-device and pip-installs them (needs network).
# The package is used from the checkout (PYTHONPATH), not installed. Results: $OUT/device_check.json
# when OUT is set, else out/device_check.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

has_deps() { "$1" -c 'import torch, numpy, tqdm, safetensors' >/dev/null 2>&1; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && has_deps "$candidate"; then
      PY="$candidate"
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "no python with torch, numpy, tqdm and safetensors found; creating .venv-device" >&2
  python3 -m venv .venv-device
  .venv-device/bin/python -m pip install --quiet torch numpy tqdm safetensors || {
    echo "pip install failed (no network?): set PYTHON to a python that has torch" >&2
    exit 2
  }
  PY=.venv-device/bin/python
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -c 'import torch; print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
fi
# 8 minutes at most; the python script also skips its later sections past its own budget (420 s).
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/device_check.py "$@"
