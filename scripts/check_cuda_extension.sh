#!/usr/bin/env bash
# Build the full CUDA extension (ifm._C with csrc/cuda/) against a CUDA build of torch, import
# it, check that every torch.ops.ifm op of ifm._ops.OPS has CUDA and CPU kernels, and check
# with cuobjdump that the library holds SASS for every arch of scripts/cuda_arch_list.txt and
# PTX for the one marked +PTX (and that ifm._build_info records the same). Needs no GPU: only
# nvcc (CUDA_HOME, default /usr/local/cuda) and the torch wheel. When a GPU is visible it also
# runs tests/test_cuda_backend.py against that build.
#
# * The virtual environment lives OUTSIDE the checkout, in ${IFM_CUDA_VENV:-
#   $HOME/.cache/ifm-kernels/venv-cu} (created with ${IFM_CUDA_PYTHON:-python3});
#   torch==${IFM_CUDA_TORCH:-2.14.1} (CUDA 13.0 build, ~5.5 GB) is installed on the first run
#   and reused afterwards.
# * TORCH_CUDA_ARCH_LIST defaults to scripts/cuda_arch_list.txt.
# * The build runs in a temporary copy of the sources and installs into that venv, so nothing in
#   the checkout changes (no build/, *.so or *.egg-info that the CPU venv could pick up).
# * Idempotent and cheap when nothing changed: a hash of the sources (setup.py, pyproject.toml,
#   csrc/, python/, ifm_kernels/), torch and the arch list is remembered after a successful
#   build, and an unchanged tree only re-runs the checks.
# Prints PASS or FAIL; exits non-zero on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${IFM_CUDA_CACHE:-$HOME/.cache/ifm-kernels}"
VENV="${IFM_CUDA_VENV:-$CACHE/venv-cu}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(grep -v '^#' "$ROOT/scripts/cuda_arch_list.txt" |
  tr -d '[:space:]')}"
TORCH_SPEC="torch==${IFM_CUDA_TORCH:-2.14.1}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
STAMP="$VENV/.ifm-cuda-build.sha256"

fail() {
  echo "check_cuda_extension: FAIL: $*" >&2
  exit 1
}

[ -x "$CUDA_HOME/bin/nvcc" ] || fail "nvcc not found under CUDA_HOME=$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$PATH"

# 1. the venv with a CUDA build of torch
mkdir -p "$(dirname "$VENV")"
if [ ! -x "$VENV/bin/python" ]; then
  echo "check_cuda_extension: creating $VENV"
  "${IFM_CUDA_PYTHON:-python3}" -m venv "$VENV" || fail "cannot create $VENV"
fi
PY="$VENV/bin/python"
want="${TORCH_SPEC#torch==}"
have="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have" != "$want" ] || ! "$PY" -c 'import torch, sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
  echo "check_cuda_extension: installing $TORCH_SPEC (CUDA build) into $VENV (first run: minutes)"
  "$PY" -m pip install -q "$TORCH_SPEC" || fail "pip install $TORCH_SPEC"
  rm -f "$STAMP"
fi
"$PY" -m pip install -q setuptools wheel ninja numpy pytest >/dev/null || fail "pip install build tools"
"$PY" -c 'import torch, sys; sys.exit(torch.version.cuda is None)' ||
  fail "torch in $VENV is not a CUDA build"
TORCH_CUDA="$("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "check_cuda_extension: torch $TORCH_CUDA, nvcc: $(nvcc --version | tail -1)"

# 2. build into the venv from a temporary copy (skipped when the sources are unchanged)
cd "$ROOT"
hash="$( (echo "$TORCH_CUDA $TORCH_CUDA_ARCH_LIST"; find setup.py pyproject.toml csrc python ifm_kernels -type f \
           \( -name '*.py' -o -name '*.toml' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' \
              -o -name '*.cuh' \) -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort |
           xargs sha256sum) | sha256sum | cut -d' ' -f1)"
built_ok() {
  (cd / && "$PY" - <<'PY'
import sys
import torch
from ifm import _ops
if _ops.LOAD_ERROR is not None:
    sys.exit(f"import ifm._C failed: {_ops.LOAD_ERROR}")
missing = [f"ifm::{op} ({key})" for op in _ops.OPS
           for key in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"ifm::{op}", key)]
if missing:
    sys.exit("no kernel registered for " + ", ".join(missing))
import ifm
print(f"check_cuda_extension: ifm._C from {ifm.__file__}: CPU and CUDA kernels registered "
      f"for " + ", ".join(f"ifm::{op}" for op in _ops.OPS))
PY
  ) && check_archs
}

# SASS for each arch of TORCH_CUDA_ARCH_LIST, PTX for those marked +PTX, in the library
# (cuobjdump: the toolkit's, else the one bundled with triton) and in ifm._build_info.
check_archs() {
  local lib cuobjdump
  lib="$(cd / && "$PY" -c 'import ifm._C as c; print(c.__file__)')" || return 1
  cuobjdump="$(command -v cuobjdump || true)"
  [ -n "$cuobjdump" ] || cuobjdump="$(ls "$SITE"/triton/backends/nvidia/bin/cuobjdump 2>/dev/null || true)"
  [ -x "$cuobjdump" ] || { echo "check_cuda_extension: no cuobjdump (toolkit or triton)" >&2; return 1; }
  (cd / && "$PY" - "$lib" "$cuobjdump" <<'PY'
import os, re, subprocess, sys
lib, cuobjdump = sys.argv[1:]
want = os.environ["TORCH_CUDA_ARCH_LIST"].split(";")
sass_want = sorted(int(a.replace("+PTX", "").replace(".", "")) for a in want)
ptx_want = sorted(int(a.replace("+PTX", "").replace(".", "")) for a in want if a.endswith("+PTX"))
def listed(flag, kind):
    out = subprocess.run([cuobjdump, flag, lib], capture_output=True, text=True).stdout
    return sorted({int(m) for m in re.findall(kind + r" file\s+\d+:\s+\S*?sm_(\d+)", out)})
sass, ptx = listed("--list-elf", "ELF"), listed("--list-ptx", "PTX")
print(f"check_cuda_extension: cuobjdump: SASS {['sm_%d' % a for a in sass]}, "
      f"PTX {['compute_%d' % a for a in ptx]}")
errors = []
if sass != sass_want:
    errors.append(f"SASS {sass} != TORCH_CUDA_ARCH_LIST {sass_want}")
if ptx != ptx_want:
    errors.append(f"PTX {ptx} != the +PTX archs {ptx_want}")
from ifm import _cuda_arch
info = _cuda_arch.build_info() or {}
rec = (sorted(int(c[3:]) for c in info.get("sass", [])),
       sorted(int(c[8:]) for c in info.get("ptx", [])))
if rec != (sass, ptx):
    errors.append(f"ifm._build_info records SASS/PTX {rec}, the library holds {(sass, ptx)}")
if errors:
    sys.exit("check_cuda_extension: " + "; ".join(errors))
PY
  )
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ] && built_ok; then
  echo "check_cuda_extension: sources unchanged since the last successful build; reusing it"
else
  rm -f "$STAMP"
  SRC="$(mktemp -d)"
  trap 'rm -rf "$SRC"' EXIT
  # tracked and untracked-but-not-ignored files: exactly what a commit of this tree would build
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
      (cd "$ROOT" && xargs -0 -I{} sh -c '[ -f "{}" ] && cp --parents "{}" "'"$SRC"'"' || true)
  else
    cp -r "$ROOT"/. "$SRC"/
  fi
  echo "check_cuda_extension: building ifm with CUDA kernels (IFM_FORCE_CUDA=1," \
    "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST) in $SRC"
  start=$(date +%s)
  if ! (cd "$SRC" && IFM_FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-2}" \
        "$PY" -m pip install --no-build-isolation --no-deps -v . >"$SRC/build.log" 2>&1); then
    grep -E -B2 -A12 'error|Error' "$SRC/build.log" | tail -80 >&2 || tail -80 "$SRC/build.log" >&2
    fail "building the CUDA extension (log above)"
  fi
  echo "check_cuda_extension: built in $(( $(date +%s) - start )) s"
  built_ok || fail "the built extension does not register every kernel"
  echo "$hash" >"$STAMP"
fi

# 3. with a GPU: the CUDA backend tests against this build
if "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  echo "check_cuda_extension: GPU visible: running tests/test_cuda_backend.py"
  (cd "$ROOT/tests" && "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT/tests" \
     test_cuda_backend.py -k "gpu") || fail "GPU tests"
else
  echo "check_cuda_extension: no GPU visible: GPU tests not run (build and registration only)"
fi
echo "check_cuda_extension: PASS"
