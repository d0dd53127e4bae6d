#!/usr/bin/env bash
# The GPU suite on a fresh GPU machine with no network: installs the wheels that
# benchmarks/gpu_wheels.sh gathered in .whl/ (carried with the tree), then runs
# benchmarks/gpu_suite.py, writing into $OUT (or the first argument). Extra arguments go to
# the suite. Ends within ten minutes: the suite keeps to its --budget_s, and a hard limit
# stops anything that would not.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_suite_out}}
shift || true
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/salmu_site .whl/*.whl
  export PYTHONPATH=/tmp/salmu_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
# JAX would otherwise take 75% of the card up front, leaving open_clip's side of the same
# process too little to run its larger batches.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
timeout 590 python3 benchmarks/gpu_suite.py --out="$out" "$@"
