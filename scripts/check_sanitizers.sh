#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the kernels that run on this machine:
#   1. the CPU kernels (csrc/cpu/) and their C++ unit tests (csrc/tests/), built by CMake with
#      -fsanitize=address,undefined into build/sanitize and run through CTest;
#   2. the CUDA kernels (csrc/cuda/*.cu) under the CPU emulation (tests/cuda_emu), built with the
#      same flags by tests/test_cuda_backend.py (IFM_EMU_CXXFLAGS) and run by pytest with the
#      sanitizer runtimes preloaded into Python.
# Any report fails the run (-fno-sanitize-recover; halt_on_error). Leak checking is off: the
# Python interpreter and torch keep allocations alive on purpose. Needs the test venv
# (bash scripts/test.sh creates it; IFM_VENV overrides its path) and g++.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${IFM_VENV:-.venv}/bin/python"
CXX="${CXX:-g++}"
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== sanitizers: CPU kernels + C++ unit tests (CTest)"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build/sanitize -j2 --target test_cpu_kernels test_field_math
ctest --test-dir build/sanitize --output-on-failure

echo "== sanitizers: emulated CUDA kernels (pytest)"
if [ ! -x "$PY" ]; then
  echo "check_sanitizers: FAIL: no test venv at ${IFM_VENV:-.venv} (run bash scripts/test.sh)" >&2
  exit 1
fi
RUNTIMES="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libubsan.so)"
# The golden files, the launch-configuration / schedule / planted-defect tests, the long rows
# (every compaction run length) and one randomised mode per field (the whole emulated suite is
# ~10x slower under the sanitizers).
SUBSET="emulated_golden or chunking or schedules or planted or launch_limits or order_dep"
SUBSET="$SUBSET or emulated_long_rows"
SUBSET="$SUBSET or (emulated_string_random and cifar and stable-norm)"
SUBSET="$SUBSET or (emulated_coulomb_random and pfgm)"
IFM_EMU_CXXFLAGS="$FLAGS" LD_PRELOAD="$RUNTIMES" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_backend.py -k "$SUBSET" "$@"
echo "check_sanitizers: PASS"
