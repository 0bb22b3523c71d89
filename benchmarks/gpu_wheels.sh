#!/usr/bin/env bash
# Fetch into .whl/ the wheels benchmarks/gpu_check.sh needs on a GPU machine whose image has
# PyTorch, transformers, jaxtyping, networkx, numpy, pandas, pyarrow and the like, but not these
# (Python 3.12, x86-64, manylinux). Together well under the 64 MiB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  transformer-lens==3.9.0 better-abc fancy-einsum typeguard beartype datasets dill multiprocess \
  pydantic pydantic-core annotated-types typing-inspection pydot
du -sh .whl
