#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA toolkit: install a CUDA build of torch, build ifm
# with its CUDA kernels, run the test suite (every backend, GPU tests included) and the GPU
# benchmarks. Extra arguments go to the benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IFM_VENV:-.venv-gpu}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "${IFM_TORCH_SPEC:-torch}"
python -m pip install -q setuptools wheel ninja numpy
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
IFM_FORCE_CUDA=1 python -m pip install -q --no-build-isolation -e ".[test,triton]"
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("scripts/gpu.sh: no GPU visible to torch; run it on a GPU machine")
PY
python -m pytest -q
python -m pytest -q benchmarks/test_bench_gpu.py --benchmark-only "$@"
