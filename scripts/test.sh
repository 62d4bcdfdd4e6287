#!/usr/bin/env bash
# Fresh machine -> installed package -> test suite. Creates (or reuses) a virtual environment,
# installs the CPU build of torch first, then builds ifm (C++ extension) without build isolation.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
set -euo pipefail
. "$(dirname "$0")/_venv.sh"
ifm_venv_install .venv torch==2.13.0 test,triton
python -m pytest "$@"
