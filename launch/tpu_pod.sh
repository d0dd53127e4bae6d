#!/usr/bin/env bash
# Runs one salmu_jax command on every worker of a Cloud TPU VM slice (jax.distributed
# detects the pod itself: --distributed).
#
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR_TYPE -- python -m salmu_jax.train \
#       --config=configs/paper.py:compromised --workdir=gs://BUCKET/runs/compromised ...
#
# Creates the slice if it does not exist (RUNTIME_VERSION, default tpu-ubuntu2204-base),
# copies this checkout to every worker, installs it with the TPU build of JAX, then runs
# the command on all workers at once. The dataset and workdir must be reachable from every
# worker (a GCS bucket or a shared disk): build the dataset once with make_dataset first.
set -euo pipefail
if [ $# -lt 5 ] || [ "$4" != "--" ]; then
  echo "usage: $0 NAME ZONE ACCELERATOR_TYPE -- COMMAND..." >&2
  exit 2
fi
name=$1 zone=$2 accelerator=$3
shift 4
runtime=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
cd "$(dirname "$0")/.."

if ! gcloud compute tpus tpu-vm describe "$name" --zone="$zone" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
      --accelerator-type="$accelerator" --version="$runtime"
fi
archive=$(mktemp --suffix=.tar.gz)
git archive --format=tar.gz -o "$archive" HEAD
gcloud compute tpus tpu-vm scp "$archive" "$name":salmu_jax.tar.gz --zone="$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
  set -e; rm -rf salmu_jax && mkdir salmu_jax && tar -xzf salmu_jax.tar.gz -C salmu_jax
  cd salmu_jax && python3 -m venv .venv && . .venv/bin/activate
  pip install -q -U pip && pip install -q -e . 'jax[tpu]'"
# The same command on every worker; process 0 writes the logs and metrics.
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
  cd salmu_jax && . .venv/bin/activate && $(printf '%q ' "$@") --distributed"
