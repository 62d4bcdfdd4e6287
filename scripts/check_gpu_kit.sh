#!/usr/bin/env bash
# The GPU kit proven without a GPU, in an environment shaped like the GPU machines: Python 3.12,
# torch 2.11.0 (CUDA 13.0 build), triton 3.6.0, numpy, scipy, pytest, hypothesis; no POT, no
# pytest-benchmark, and pip without an index (PIP_NO_INDEX=1).
#
#   1. scripts/gpu.sh in a temporary copy of the tree: the build (CUDA extension against torch
#      2.11, in place) and every step that needs no GPU must work, the GPU steps must report
#      "no GPU: not run" and the exit code must be 3 (no GPU), not 1 (failure);
#   2. the Triton suite under the interpreter with triton 3.6 (tests/test_triton_kernels.py and
#      the parity tests of backend triton) in the same environment (numpy < 2.4, see below).
#
# The venv lives outside the checkout: ${IFM_GPU_VENV:-$HOME/.cache/ifm-kernels/venv-gpu-py312},
# created on the first run with ${IFM_GPU_PYTHON:-python3.12} (pyenv) and the packages above
# (about 6 minutes, 4 GB). The report of the dry run is copied to ${IFM_GPU_KIT_OUT:-build/gpu-kit}.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${IFM_GPU_VENV:-${IFM_CUDA_CACHE:-$HOME/.cache/ifm-kernels}/venv-gpu-py312}"
KEEP="${IFM_GPU_KIT_OUT:-$ROOT/build/gpu-kit}"
TORCH="${IFM_GPU_TORCH:-2.11.0}" TRITON="${IFM_GPU_TRITON:-3.6.0}"
fail() {
  echo "check_gpu_kit: FAIL: $*" >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  # a Python 3.12 that runs: IFM_GPU_PYTHON, python3.12 on PATH, or pyenv's 3.12 (its shim on
  # PATH fails while 3.12 is not among pyenv's selected versions)
  py=""
  for cand in "${IFM_GPU_PYTHON:-}" python3.12 \
    "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12; do
    if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
      2>/dev/null; then
      py="$cand"
      break
    fi
  done
  [ -n "$py" ] || fail "no Python 3.12 found (set IFM_GPU_PYTHON, or pyenv install 3.12)"
  echo "check_gpu_kit: creating $VENV ($("$py" --version), torch $TORCH, triton $TRITON)"
  "$py" -m venv "$VENV"
  # numpy < 2.4: triton 3.6's interpreter converts 1-element arrays to Python scalars, an
  # error since NumPy 2.4 (triton 3.9's interpreter does not; on a GPU no interpreter runs)
  "$VENV/bin/python" -m pip install -q "torch==$TORCH" "triton==$TRITON" "numpy<2.4" scipy \
    pytest hypothesis setuptools ninja || { rm -rf "$VENV"; fail "installing the venv"; }
fi
PY="$VENV/bin/python"
"$PY" - "$TORCH" "$TRITON" <<'PY' || fail "$VENV is not shaped like the GPU machines"
import importlib.util, sys
import torch, triton
assert sys.version_info[:2] == (3, 12), sys.version
assert torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda, torch.__version__
assert triton.__version__ == sys.argv[2], triton.__version__
import numpy
assert tuple(map(int, numpy.__version__.split(".")[:2])) < (2, 4), (
    f"numpy {numpy.__version__}: triton 3.6's interpreter needs numpy < 2.4")
for absent in ("ot", "pytest_benchmark"):
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed"
print(f"check_gpu_kit: Python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"triton {triton.__version__}, no POT, no pytest-benchmark")
PY

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  (cd "$ROOT" && xargs -0 -I{} sh -c '[ -f "{}" ] && cp --parents "{}" "'"$WORK/src"'"' || true)
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"

# 1. the dry run, as on the GPU machine: the venv's python on PATH, pip without an index
echo "check_gpu_kit: bash scripts/gpu.sh (no GPU here, pip without an index)"
set +e
(cd "$WORK/src" && PATH="$VENV/bin:$PATH" PIP_NO_INDEX=1 PIP_FIND_LINKS= IFM_GPU_COMMIT="$commit" \
   IFM_GPU_OUT="$WORK/out" MAX_JOBS="${MAX_JOBS:-2}" bash scripts/gpu.sh)
rc=$?
set -e
rm -rf "$KEEP" && mkdir -p "$KEEP" && cp -r "$WORK/out/." "$KEEP/"
[ "$rc" -eq 3 ] || fail "scripts/gpu.sh exited $rc, expected 3 (no GPU: not run); see $KEEP/REPORT.md"
"$PY" - "$WORK/out/report.json" <<'PY' || fail "the dry run's report is wrong ($KEEP/REPORT.md)"
import json, sys
data = json.load(open(sys.argv[1]))
steps = {s["name"]: s for s in data["steps"]}
assert steps["build"]["status"] == "passed", steps["build"]
for name in ("parity", "sanitizer", "bench"):
    assert steps[name]["status"] == "no GPU: not run", steps[name]
assert steps["cuda_graph"]["status"] in ("no GPU: not run", "skipped"), steps["cuda_graph"]
assert int(steps["parity"]["note"].split()[0]) > 0, "no parity test collected"
assert data["bench"]["shapes"], "no benchmark shape"
print("check_gpu_kit: dry run: build passed, GPU steps 'no GPU: not run', exit code 3")
PY

# 2. the Triton suite under the interpreter with this triton (the dry run built ifm in place)
echo "check_gpu_kit: Triton suite under the interpreter, triton $TRITON"
(cd "$WORK/src" && TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider \
   tests/test_triton_kernels.py tests/test_fields_parity.py -k triton) ||
  fail "the Triton suite with triton $TRITON"
echo "check_gpu_kit: PASS"
