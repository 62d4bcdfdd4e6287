#!/usr/bin/env bash
# The one GPU check, for a GPU machine without a package index (about 6 minutes on one H100 /
# H200). Uses the current environment's Python (a CUDA build of torch, triton, nvcc,
# compute-sanitizer, pytest; POT and pytest-benchmark optional): no venv, no network.
#
#   (a) builds ifm in place with its CUDA kernels for the visible GPU
#       (pip install --no-build-isolation --no-deps -e .);
#   (b) GPU parity tests of the CUDA and Triton backends (edge and published shapes);
#   (c) compute-sanitizer memcheck / racecheck / synccheck / initcheck on one small call of each
#       kernel of both backends (scripts/gpu_sanitize.py);
#   (d) tests/test_cuda_graph.py (CUDA-graph capture);
#   (e) CUDA-event benchmarks at the published shapes per backend, beside the best PyTorch form
#       and the static model's estimate (scripts/gpu_bench.py);
#   (f) REPORT.md and report.json in ${IFM_GPU_OUT:-gpu-report}/.
#
# Each step prints its time and has a limit; a failing step is reported and the next one runs.
# Exit code: 0 all passed, 1 a step failed, 3 no GPU visible (the GPU steps were not run).
# Python: ${PYTHON:-python} (python3 when there is no `python`). Details: scripts/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PY" scripts/gpu_check.py "$@"
