#!/usr/bin/env bash
# Fresh machine -> installed package -> `ifm demo`. Extra arguments go to the demo
# (e.g. `bash scripts/demo.sh --quick --out /tmp/demo`).
set -euo pipefail
. "$(dirname "$0")/_venv.sh"
ifm_venv_install .venv torch==2.13.0 demo
ifm demo "$@"
