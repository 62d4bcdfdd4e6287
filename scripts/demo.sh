#!/usr/bin/env bash
# Fresh machine -> installed package -> `ifm demo`. Extra arguments go to the demo
# (e.g. `bash scripts/demo.sh --quick --out /tmp/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IFM_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q setuptools wheel ninja numpy
python -m pip install -q --no-build-isolation -e ".[demo]"
ifm demo "$@"
