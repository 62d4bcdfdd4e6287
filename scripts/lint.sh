#!/usr/bin/env bash
# Lint: ruff (lint + format check; configuration in pyproject.toml) over the Python files and
# clang-format (.clang-format) over csrc/. Checks only, changes nothing; `--fix` applies ruff's
# fixes, ruff format and clang-format in place instead.
# Tools: ruff and clang-format from ${IFM_VENV:-.venv} (pip install ruff clang-format), else PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${IFM_VENV:-.venv}/bin"
tool() { if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else command -v "$1"; fi; }
RUFF="$(tool ruff)" || { echo "lint: ruff not found (pip install ruff)" >&2; exit 2; }
CLANG_FORMAT="$(tool clang-format)" ||
  { echo "lint: clang-format not found (pip install clang-format)" >&2; exit 2; }
mapfile -t CSRC < <(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 2>/dev/null ||
                    find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')
status=0
if [ "${1:-}" = "--fix" ]; then
  "$RUFF" check --fix . || status=1
  "$RUFF" format . || status=1
  "$CLANG_FORMAT" -i "${CSRC[@]}" || status=1
  exit $status
fi
echo "== ruff check"
"$RUFF" check . || status=1
echo "== ruff format --check"
"$RUFF" format --check . || status=1
echo "== clang-format --dry-run -Werror (${#CSRC[@]} files in csrc/)"
"$CLANG_FORMAT" --dry-run -Werror "${CSRC[@]}" || status=1
[ $status -eq 0 ] && echo "lint: PASS" || echo "lint: FAIL"
exit $status
