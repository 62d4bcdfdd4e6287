#!/usr/bin/env bash
# A CUDA build of torch with a toolkit that cannot build the CUDA kernels still installs: one real
# `pip install` against a fake CUDA_HOME whose nvcc reports CUDA 12.4 (torch: 13.0) must succeed
# CPU-only, print the warning with the reason, and record the reason in ifm._build_info; the
# same install with IFM_FORCE_CUDA=1 must fail with the reason. (The other cases, headers missing
# and no nvcc, are checked on setup.py's logic alone in tests/test_build_setup.py.)
#
# Runs in the CUDA venv of scripts/check_cuda_extension.sh (${IFM_CUDA_VENV:-
# $HOME/.cache/ifm-kernels/venv-cu}); installs into a temporary --target, nothing else changes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${IFM_CUDA_VENV:-${IFM_CUDA_CACHE:-$HOME/.cache/ifm-kernels}/venv-cu}"
PY="$VENV/bin/python"
fail() {
  echo "check_degraded_build: FAIL: $*" >&2
  exit 1
}
[ -x "$PY" ] || fail "no venv at $VENV (run scripts/check_cuda_extension.sh first)"
torch_cuda="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
[ -n "$torch_cuda" ] || fail "torch in $VENV is not a CUDA build"
other="$(( ${torch_cuda%%.*} - 1 )).4"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/cuda/bin" "$WORK/src"
cat >"$WORK/cuda/bin/nvcc" <<EOF
#!/bin/sh
echo "nvcc: NVIDIA (R) Cuda compiler driver"
echo "Cuda compilation tools, release $other, V$other.1"
EOF
chmod +x "$WORK/cuda/bin/nvcc"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  (cd "$ROOT" && xargs -0 -I{} sh -c '[ -f "{}" ] && cp --parents "{}" "'"$WORK/src"'"' || true)

echo "check_degraded_build: torch CUDA $torch_cuda, fake nvcc CUDA $other: pip install"
start=$(date +%s)
(cd "$WORK/src" && CUDA_HOME="$WORK/cuda" PATH="$WORK/cuda/bin:$PATH" MAX_JOBS="${MAX_JOBS:-2}" \
   "$PY" -m pip install -v --no-build-isolation --no-deps --target "$WORK/site" . \
   >"$WORK/install.log" 2>&1) || { tail -40 "$WORK/install.log" >&2; fail "pip install failed"; }
echo "check_degraded_build: installed in $(( $(date +%s) - start )) s"
grep -q "WARNING: ifm-kernels is built WITHOUT its CUDA kernels: nvcc at .* is CUDA $other but torch" \
  "$WORK/install.log" || fail "the build log has no warning naming the CUDA version mismatch"
grep "WARNING: ifm-kernels" "$WORK/install.log" | head -1

(cd / && PYTHONPATH="$WORK/site" "$PY" - "$other" <<'PY') || fail "the CPU-only install is wrong"
import sys
from ifm import _cuda_arch, _ops
assert _ops.LOAD_ERROR is None, _ops.LOAD_ERROR
assert _ops.has_kernel("string_field", "CPU"), "no CPU kernel"
assert not _ops.has_kernel("string_field", "CUDA"), "CUDA kernel registered"
info = _cuda_arch.build_info()
assert info and not info["cuda"] and f"CUDA {sys.argv[1]}" in info["cuda_skipped"], info
print(f"check_degraded_build: CPU-only install; recorded reason: {info['cuda_skipped']}")
PY

(cd "$WORK/src" && CUDA_HOME="$WORK/cuda" IFM_FORCE_CUDA=1 \
   "$PY" -m pip install --no-build-isolation --no-deps --target "$WORK/site2" . \
   >"$WORK/forced.log" 2>&1) && fail "IFM_FORCE_CUDA=1 installed although CUDA cannot be built"
grep -q "IFM_FORCE_CUDA=1 but the CUDA kernels cannot be built: nvcc at .* is CUDA $other" \
  "$WORK/forced.log" || { tail -20 "$WORK/forced.log" >&2; fail "forced build: no clear error"; }
echo "check_degraded_build: IFM_FORCE_CUDA=1 fails with the reason"
echo "check_degraded_build: PASS"
