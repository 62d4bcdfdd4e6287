"""Python side of the ``torch.ops.ifm`` operators: loading the extension and fake kernels.

The schemas and the CPU/CUDA kernels are registered in C++ (``csrc/ops.cpp``,
``csrc/cuda/bindings_cuda.cpp``). This module imports the compiled library and registers the
fake (meta) implementations that let ``torch.compile`` trace a trainer calling the ops.
"""

from __future__ import annotations

import importlib

import torch

OPS = ("string_field", "coulomb_field", "coulomb_plate_partial")
LOAD_ERROR: Exception | None = None
try:  # the compiled extension registers torch.ops.ifm.* on import
    importlib.import_module("ifm._C")
except ImportError as exc:  # pragma: no cover - exercised only without a build
    LOAD_ERROR = exc


def extension_loaded() -> bool:
    """True when the compiled extension ``ifm._C`` was imported."""
    return LOAD_ERROR is None


def _kernels() -> dict:
    if LOAD_ERROR is not None:
        return {}
    return {
        (op, key): bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"ifm::{op}", key))
        for op in OPS
        for key in ("CPU", "CUDA")
    }


_KERNELS = _kernels()  # registered once, on import; a dict lookup is free and traceable


def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``torch.ops.ifm.<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return _KERNELS.get((op, dispatch_key), False)


# The overloads ifm.fields calls per backend (an OpOverload is called without the packet's
# overload resolution). "triton" is added when ifm_kernels registers its ops.
STRING_OPS = {}
COULOMB_OPS = {}
if LOAD_ERROR is None:
    STRING_OPS["cpu"] = STRING_OPS["cuda"] = torch.ops.ifm.string_field.default
    COULOMB_OPS["cpu"] = COULOMB_OPS["cuda"] = torch.ops.ifm.coulomb_field.default


if LOAD_ERROR is None:

    @torch.library.register_fake("ifm::string_field")
    def _string_field_fake(
        points, quarks, antiquarks, L, sigma0, K, d, stable, normalize, norm_scale, eps
    ):
        torch._check(quarks.shape[0] == antiquarks.shape[0])
        torch._check(quarks.shape[1] == points.shape[1])
        torch._check(antiquarks.shape[1] == points.shape[1])
        return torch.empty_like(points, memory_format=torch.contiguous_format)

    @torch.library.register_fake("ifm::coulomb_field")
    def _coulomb_field_fake(
        points, positive, negative, plate_gamma, sum_eps, normalize, norm_scale, eps
    ):
        torch._check(positive.shape[1] == points.shape[1])
        if negative is not None:
            torch._check(negative.shape[1] == points.shape[1])
        return torch.empty_like(points, memory_format=torch.contiguous_format)

    @torch.library.register_fake("ifm::coulomb_plate_partial")
    def _coulomb_plate_partial_fake(points, charges):
        torch._check(charges.shape[1] == points.shape[1])
        field = torch.empty_like(points, memory_format=torch.contiguous_format)
        return field, points.new_empty(points.shape[0], 2, dtype=torch.float64)
