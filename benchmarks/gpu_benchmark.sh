#!/usr/bin/env bash
# The one-call GPU benchmark: β-VAE on perturbed-dsprites original/perturbed/noise, 5 seeds each,
# stacked on one GPU, in at most 9 minutes; see benchmarks/gpu_benchmark.py for the steps.
#
#   bash benchmarks/gpu_benchmark.sh                  # on the GPU machine (needs the shipped reference)
#   bash benchmarks/gpu_benchmark.sh --smoke          # CPU, tiny build, ~1-2 min: checks the path
#   bash benchmarks/gpu_benchmark.sh --fetch-wheels   # here, with network: wheels the GPU lacks
#
# On the lent GPU machine:
#   run(command="bash benchmarks/gpu_benchmark.sh", carry=["out/wheels"], timeout_s=600)
#
# Run from the repository root of a checkout. Python: $PYTHON if set, else the repo's .venv, else
# python3 — the first with torch and numpy. The GPU machine's python3 lacks `datasets` (and its
# dill, multiprocess) and reaches no registry: `--fetch-wheels` downloads them into out/wheels
# (ignored by git; name it in `carry`), and this script installs out/wheels/*.whl (or $WHEELS/*.whl)
# into /tmp/gpu-benchmark-site when `import datasets` fails. The package is used from the checkout
# (PYTHONPATH), not installed. Output: $OUT/gpu_benchmark.json (timings, steps/s, images/s, MIG),
# $OUT/results.tar.gz (the harness's records and report), $OUT/report.md, $OUT/build.log and this
# log, $OUT/gpu_benchmark.log; without OUT, under out/gpu_benchmark/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEELS="${WHEELS:-out/wheels}"
# what the GPU machine's image lacks (its python3 has pyarrow, pandas, fsspec, huggingface-hub,
# xxhash, scikit-learn, scipy, matplotlib); pinned to the versions this project is tested with
WHEEL_PACKAGES=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)

# found, not imported: importing torch costs seconds on a loaded machine
has() { "$1" -c 'import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))' "${@:2}" >/dev/null 2>&1; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && has "$candidate" torch numpy; then
      PY="$candidate"
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "no python with torch and numpy found: set PYTHON to one" >&2
  exit 2
fi

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Python 3.12 on manylinux x86-64: the GPU machine's python3 (see .library/device/KINDS.md)
  mkdir -p "$WHEELS"
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${WHEEL_PACKAGES[@]}"
fi

if compgen -G "$WHEELS/*.whl" >/dev/null && ! has "$PY" datasets; then
  SITE="${TMPDIR:-/tmp}/gpu-benchmark-site"
  echo "installing $(ls "$WHEELS"/*.whl | xargs -n1 basename | tr '\n' ' ')into $SITE"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "installing the wheels failed (see above); the script will name what is missing" >&2
  fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# nothing outside the GPU machine can be reached: never wait on the Hub
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
echo "python: $PY; PYTHONPATH=$PYTHONPATH"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi

# 530 s at most (the script plans to end by its 480 s budget; SIGINT lets it write its summary
# and pack what it has); with the lines above, the call stays within 9 minutes.
LIMIT="${GPU_BENCHMARK_TIMEOUT:-530}"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" benchmarks/gpu_benchmark.py "$@" 2>&1 \
    | tee "$OUT/gpu_benchmark.log"
else
  exec timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" benchmarks/gpu_benchmark.py "$@"
fi
