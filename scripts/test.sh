#!/usr/bin/env bash
# Fresh machine -> installed package -> test suite. Creates (or reuses) a virtual environment,
# installs the CPU build of torch first, then builds ifm (C++ extension) without build isolation.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IFM_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q setuptools wheel ninja numpy
python -m pip install -q --no-build-isolation -e ".[test,triton]"
python -m pytest "$@"
