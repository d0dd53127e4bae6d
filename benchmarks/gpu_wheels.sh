#!/usr/bin/env bash
# Gathers into .whl/ (git-ignored) the wheels that a bare GPU machine lacks for
# benchmarks/gpu_suite.sh: its image has jax, flax, optax, orbax-checkpoint, numpy, torch,
# pillow, tokenizers, protobuf, pyarrow, etils and timm, and no network. Run it here, where
# the package registry is reachable, with the virtual environment of the README active: each
# package is taken at the version installed here, for CPython 3.12 on x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
# What salmu_jax imports beyond that image (grain, tfds and their own needs), and open_clip
# (the PyTorch peer of the train-step table) with its text-cleaning needs.
packages=(grain array-record tensorflow-datasets dm-tree immutabledict promise simple-parsing
          docstring-parser tensorflow-metadata googleapis-common-protos termcolor toml
          ml-collections faker tzdata importlib-resources ftfy wcwidth open-clip-torch)
rm -rf .whl && mkdir -p .whl
for name in "${packages[@]}"; do
  version=$(python -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}' || true)
  # Not installed here (open_clip comes with the interop extra): the version its tests use.
  [ -z "$version" ] && [ "$name" = open-clip-torch ] && version=3.3.0
  spec=$name${version:+==$version}
  if ! python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$spec" 2>/dev/null; then
    # Published as source only (promise): build its wheel here, which must then be pure
    # Python to install there.
    python -m pip wheel -q --no-deps -w .whl "$spec"
    if ! compgen -G ".whl/${name//-/_}-*-none-any.whl" >/dev/null; then
      echo "error: $spec has no wheel for CPython 3.12 on x86-64 and is not pure Python" >&2
      exit 1
    fi
  fi
done
du -sh .whl
