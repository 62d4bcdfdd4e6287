"""Introspection of the launches, for tests and the static performance model (no GPU needed).

* :class:`record_launches`: the launchers plan with a given :class:`~ifm_kernels._plan.Profile`
  and record each launch (:class:`LaunchRecord`) instead of running it; tensors may live on the
  ``meta`` device.
* :func:`compile_kernel`, :func:`compile_resources`: compile a recorded launch for
  ``sm_<arch>`` with Triton's bundled ptxas and report its registers, shared memory and spills.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile

import torch
import triton


@dataclasses.dataclass
class LaunchRecord:
    """One kernel launch as :func:`ifm_kernels._launch.launch` would issue it."""

    kernel: object
    grid: tuple
    args: tuple
    constexprs: dict
    num_warps: int
    maxnreg: int = 0

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__

    def arg(self, name: str):
        """The value passed for the kernel's (non-constexpr) parameter ``name``."""
        names = [p.name for p in self.kernel.params if not p.is_constexpr]
        return self.args[names.index(name)]


class _Launches(list):
    """The recorded launches: stored as plain tuples (what :func:`ifm_kernels._launch.launch`
    appends costs no object construction, so host-time measurements with stubbed launches count
    the call path, not the recorder), read as :class:`LaunchRecord` objects."""

    @staticmethod
    def _record(t):
        kernel, grid, args, constexprs, num_warps, maxnreg = t
        return LaunchRecord(kernel, grid, args, dict(constexprs), num_warps, maxnreg)

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if isinstance(i, slice):
            return [self._record(t) for t in item]
        return self._record(item)

    def __iter__(self):
        return (self._record(t) for t in super().__iter__())


@dataclasses.dataclass
class _Recording:
    profile: object
    launches: _Launches


_RECORD = None


def recording():
    """The active recording, or None."""
    return _RECORD


class record_launches:
    """``with record_launches(profile) as rec:`` -- the launchers plan with ``profile`` and,
    instead of running kernels, append a :class:`LaunchRecord` per launch to ``rec``. Tensors
    may live on the ``meta`` device. For tests and the performance model (not thread-safe)."""

    def __init__(self, profile):
        self._rec = _Recording(profile, _Launches())

    def __enter__(self):
        global _RECORD
        _RECORD = self._rec
        return self._rec.launches

    def __exit__(self, *exc):
        global _RECORD
        _RECORD = None
        return False


_PTR_TYPES = {
    torch.float32: "*fp32",
    torch.float64: "*fp64",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
    torch.int8: "*i8",
    torch.uint8: "*u8",
    torch.int32: "*i32",
    torch.int64: "*i64",
}


def launch_signature(rec: LaunchRecord) -> dict:
    """Triton signature of a recorded launch (what the JIT would derive from its arguments)."""
    sig = {}
    args = iter(rec.args)
    for param in rec.kernel.params:
        if param.is_constexpr:
            sig[param.name] = "constexpr"
            continue
        value = next(args)
        if isinstance(value, torch.Tensor):
            sig[param.name] = _PTR_TYPES[value.dtype]
        elif isinstance(value, bool):
            sig[param.name] = "i1"
        elif isinstance(value, int):
            sig[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            sig[param.name] = param.annotation_type or "fp32"
    return sig


def compile_kernel(rec: LaunchRecord, arch: int = 90):
    """Triton's compiled kernel of a recorded launch for ``sm_<arch>`` (no GPU needed; run in a
    process where ``TRITON_INTERPRET`` is not set)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=rec.kernel, signature=launch_signature(rec), constexprs=rec.constexprs)
    options = {"num_warps": rec.num_warps, "enable_fp_fusion": True}
    if rec.maxnreg:
        options["maxnreg"] = rec.maxnreg
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def cubin_resources(cubin: bytes) -> dict:
    """``{"registers", "local_bytes", "spill"}`` of a cubin from ``cuobjdump
    --dump-resource-usage``: registers per thread, local memory per thread (bytes) and whether
    the kernel spills registers to local memory (``local_bytes > 0``; these kernels have no
    local arrays, so local memory is spill)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", fh.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    regs = int(re.search(r"REG:(\d+)", text).group(1))
    local = int(re.search(r"LOCAL:(\d+)", text).group(1))
    return {"registers": regs, "local_bytes": local, "spill": local > 0}


def compile_resources(rec: LaunchRecord, arch: int = 90) -> dict:
    """Compile a recorded launch for ``sm_<arch>`` and return ``{"registers", "shared_bytes",
    "local_bytes", "spill", "num_warps"}``: registers and local (spill) bytes per thread from
    ``cuobjdump --dump-resource-usage``, ``spill`` = ``local_bytes > 0``, shared memory = the
    launch's dynamic shared memory (Triton's metadata)."""
    compiled = compile_kernel(rec, arch)
    res = cubin_resources(compiled.asm["cubin"])
    res.update({"shared_bytes": int(compiled.metadata.shared), "num_warps": rec.num_warps})
    return res
