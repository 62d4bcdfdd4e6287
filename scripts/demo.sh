#!/usr/bin/env bash
# Fresh machine -> installed package -> `ifm demo` into docs/demo (figures, summary.json,
# summary.md), without progress bars. Extra arguments go to the demo and override these
# (e.g. `bash scripts/demo.sh --quick --out /tmp/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "scripts/demo.sh: figures and summary go to docs/demo/ (or to --out DIR when given)"
. scripts/_venv.sh
ifm_venv_install .venv torch==2.13.0 demo
ifm demo --out docs/demo --no-progress "$@"
