# Sourced by scripts/test.sh and demo.sh: create (or reuse) the virtual environment
# $IFM_VENV (default: $1), install torch ($2, a pip requirement) and the build tools, then build
# ifm in editable mode without build isolation with the extras $3. Extra environment for the
# build (e.g. IFM_FORCE_CUDA=1) is inherited. IFM_TORCH_INDEX, when set, is the index torch alone is
# installed from (e.g. https://download.pytorch.org/whl/cpu for the CPU build where PyPI would
# serve a CUDA build).
ifm_venv_install() {
  local venv="${IFM_VENV:-$1}" torch_spec="$2" extras="$3"
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  . "$venv/bin/activate"
  python -m pip install -q --upgrade pip
  python -m pip install -q ${IFM_TORCH_INDEX:+--index-url "$IFM_TORCH_INDEX"} "$torch_spec"
  python -m pip install -q setuptools wheel ninja numpy
  python -m pip install -q --no-build-isolation -e ".[$extras]"
}
