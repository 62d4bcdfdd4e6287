"""Does the compiled extension hold code for this GPU?

setup.py records in the generated module ``ifm._build_info`` the SASS archs (``sm_XY``) and PTX
(``compute_XY``) it compiled the CUDA kernels for, or why it skipped them. The record is read here
instead of asking the CUDA driver about the kernels so that the answer needs no GPU call and no
C++ entry point (and no ``cuobjdump``, which users do not have).

A GPU of compute capability X.Y runs SASS ``sm_XW`` with W <= Y (same major; ``sm_XYa`` only on
X.Y itself) and JIT-compiles PTX ``compute_VW`` with VW <= XY.
"""

from __future__ import annotations

import functools
import re
import sysconfig
import warnings

import torch

_warned = set()


@functools.cache
def build_info() -> dict | None:
    """This interpreter's entry of ``ifm._build_info`` (None when the module is absent)."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return _build_info.BUILDS.get(sysconfig.get_config_var("EXT_SUFFIX"))


def _arch(code: str):
    """``"sm_90a"`` -> ``(90, "a")``."""
    m = re.fullmatch(r"(?:sm|compute)_(\d+)([a-z]?)", code)
    return (int(m.group(1)), m.group(2)) if m else (None, "")


def runs_on(capability: int, sass, ptx) -> bool:
    """True when SASS ``sass`` or PTX ``ptx`` (lists of ``sm_XY`` / ``compute_XY``) run on a GPU
    of compute capability ``capability`` (e.g. 90)."""
    for code in sass:
        cc, suffix = _arch(code)
        if cc is None:
            continue
        if suffix and cc == capability:
            return True
        if not suffix and cc // 10 == capability // 10 and cc <= capability:
            return True
    for code in ptx:
        cc, suffix = _arch(code)
        if cc is not None and (cc == capability if suffix else cc <= capability):
            return True
    return False


@functools.cache
def _capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def unusable_reason(device: torch.device) -> str | None:
    """Why the CUDA kernels cannot run on ``device`` (None when they can, or when the build
    recorded nothing)."""
    info = build_info()
    if info is None:
        return None
    if not info.get("cuda"):
        skipped = info.get("cuda_skipped")
        return (
            f"ifm was built without CUDA kernels ({skipped})"
            if skipped
            else "ifm was built without CUDA kernels (torch was a CPU build)"
        )
    index = _device_index(device)
    cc = _capability(index)
    if runs_on(cc, info.get("sass", []), info.get("ptx", [])):
        return None
    built = ", ".join(info.get("sass", [])) or "none"
    ptx = ", ".join(info.get("ptx", [])) or "none"
    return (
        f"ifm's CUDA kernels have no code for GPU {index} "
        f"({torch.cuda.get_device_name(index)}, sm_{cc}): the extension was built for "
        f"SASS {built} and PTX {ptx}. Rebuild for it: TORCH_CUDA_ARCH_LIST="
        f'"{cc // 10}.{cc % 10}" pip install --no-build-isolation -e . '
        "(or use backend='triton')"
    )


def usable(device: torch.device) -> bool:
    """For ``backend="auto"``: can the CUDA kernels run on ``device``? When not, warns once per
    reason and returns False so that the next backend is used."""
    reason = unusable_reason(device)
    if reason is None:
        return True
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(
            f"{reason}; backend='auto' uses the next backend (Triton when installed)",
            RuntimeWarning,
            stacklevel=4,
        )
    return False


def check(device: torch.device) -> None:
    """For ``backend="cuda"`` on CUDA tensors: raise a clear error when the extension has CUDA
    kernels but none that runs on ``device``."""
    info = build_info()
    if info is None or not info.get("cuda"):
        return  # no CUDA kernels at all: the caller's own error says so
    reason = unusable_reason(device)
    if reason is not None:
        raise RuntimeError(reason)
