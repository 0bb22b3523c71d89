#!/usr/bin/env bash
# One short GPU check (benchmarks/gpu_check.py), at most 8 minutes on one H100, ending in one JSON
# line. Runs on a GPU machine with no network that has PyTorch, transformers, jaxtyping and
# networkx: what else it needs travels as wheels in .whl/ (benchmarks/gpu_wheels.sh fetches them
# where pip works), installed here into a private folder; the models are built on the spot.
#   bash benchmarks/gpu_check.sh           # on a GPU: full sizes (the 1B shape in bfloat16)
#   bash benchmarks/gpu_check.sh --small   # anywhere: small sizes (tests/unit/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"  # the interpreter to run with (a test passes its own)
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/p0-site .whl/*.whl
  export PYTHONPATH="/tmp/p0-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
