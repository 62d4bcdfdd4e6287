"""The Triton launchers as PyTorch operators: ``torch.ops.ifm.string_field_triton``,
``torch.ops.ifm.coulomb_field_triton`` and ``torch.ops.ifm.coulomb_plate_partial_triton``.

Registered with :class:`torch.library.Library` (``define`` + ``impl`` for the CPU and CUDA keys,
as the compiled ops are) and a fake (shape-only) implementation, so that
torch.compile traces a call as one opaque node (``fullgraph=True``), FakeTensorMode and export
see shapes without running Triton, a profile shows one op per call, and the op takes part in
CUDA-graph capture like any other. Schemas: those of ``ifm::string_field`` /
``ifm::coulomb_field`` / ``ifm::coulomb_plate_partial`` (docs/DESIGN.md, "Op schemas").

Neither ``torch.library.custom_op`` (its Python autograd and dynamo-disable wrappers cost
about 20 us of host time per call, more than the whole launcher) nor
``torch.library.triton_op``: it uses the launcher itself as the fake kernel and
decomposes it under AOTAutograd, which requires every kernel launch to go through
``torch.library.wrap_triton``. The launches go through the shared launch helper (the distance,
pair-sum and finalisation passes), and under ``TRITON_INTERPRET=1`` the kernels are interpreted
functions that ``wrap_triton`` cannot trace, so a fake call would run them on fake tensors.
"""

from __future__ import annotations

import torch

from .coulomb_field import coulomb_field_op as _coulomb_field
from .coulomb_field import coulomb_plate_partial_op as _coulomb_plate_partial
from .string_field import string_field_op as _string_field

__all__ = ["LIB", "SCHEMAS"]

# The schemas of the compiled ops (csrc/ops.cpp) under the names of the Triton ops.
SCHEMAS = {
    "string_field_triton": "(Tensor points, Tensor quarks, Tensor antiquarks, float L, "
    "float sigma0, float K, float d, bool stable, bool normalize, "
    "float norm_scale, float eps) -> Tensor",
    "coulomb_field_triton": "(Tensor points, Tensor positive, Tensor? negative, "
    "float? plate_gamma, float sum_eps, bool normalize, "
    "float norm_scale, float eps) -> Tensor",
    "coulomb_plate_partial_triton": "(Tensor points, Tensor charges) -> (Tensor, Tensor)",
}


def _string_field_fake(
    points, quarks, antiquarks, L, sigma0, K, d, stable, normalize, norm_scale, eps
):
    torch._check(quarks.shape[0] == antiquarks.shape[0])
    torch._check(quarks.shape[1] == points.shape[1])
    torch._check(antiquarks.shape[1] == points.shape[1])
    return torch.empty_like(points, memory_format=torch.contiguous_format)


def _coulomb_field_fake(
    points, positive, negative, plate_gamma, sum_eps, normalize, norm_scale, eps
):
    torch._check(positive.shape[1] == points.shape[1])
    if negative is not None:
        torch._check(negative.shape[1] == points.shape[1])
    return torch.empty_like(points, memory_format=torch.contiguous_format)


def _coulomb_plate_partial_fake(points, charges):
    torch._check(charges.shape[1] == points.shape[1])
    field = torch.empty_like(points, memory_format=torch.contiguous_format)
    return field, points.new_empty(points.shape[0], 2, dtype=torch.float64)


LIB = torch.library.Library("ifm", "FRAGMENT")
for _name, _impl, _fake in (
    ("string_field_triton", _string_field, _string_field_fake),
    ("coulomb_field_triton", _coulomb_field, _coulomb_field_fake),
    ("coulomb_plate_partial_triton", _coulomb_plate_partial, _coulomb_plate_partial_fake),
):
    LIB.define(_name + SCHEMAS[_name])
    # CUDA tensors on a GPU; CPU tensors run only under TRITON_INTERPRET=1 (ifm.fields checks)
    LIB.impl(_name, _impl, "CPU")
    LIB.impl(_name, _impl, "CUDA")
    torch.library.register_fake(f"ifm::{_name}", _fake, lib=LIB)
