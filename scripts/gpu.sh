#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA toolkit: install a CUDA build of torch, build ifm
# with its CUDA kernels, run the test suite (every backend, GPU tests included) and the GPU
# benchmarks. Extra arguments go to the benchmark run.
set -euo pipefail
. "$(dirname "$0")/_venv.sh"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
IFM_FORCE_CUDA=1 ifm_venv_install .venv-gpu "${IFM_TORCH_SPEC:-torch}" test,triton
python - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("scripts/gpu.sh: no GPU visible to torch; run it on a GPU machine")
PY
python -m pytest -q
python -m pytest -q benchmarks/test_bench_gpu.py --benchmark-only "$@"
