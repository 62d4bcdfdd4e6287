"""The Triton launchers as PyTorch operators: ``torch.ops.ifm.string_field_triton`` and
``torch.ops.ifm.coulomb_field_triton``.

Registered with :func:`torch.library.custom_op` and a fake (shape-only) implementation, so that
torch.compile traces a call as one opaque node (``fullgraph=True``), FakeTensorMode and export
see shapes without running Triton, a profile shows one op per call, and the op takes part in
CUDA-graph capture like any other. Schemas: those of ``ifm::string_field`` /
``ifm::coulomb_field`` (docs/DESIGN.md, "Op schemas").

Why not ``torch.library.triton_op``: it uses the launcher itself as the fake kernel and
decomposes it under AOTAutograd, which requires every kernel launch to go through
``torch.library.wrap_triton``. The launches go through the shared launch helper (the distance,
pair-sum and finalisation passes), and under ``TRITON_INTERPRET=1`` the kernels are interpreted
functions that ``wrap_triton`` cannot trace, so a fake call would run them on fake tensors.
"""
from __future__ import annotations

from typing import Optional

import torch

from .coulomb_field import coulomb_field as _coulomb_launcher
from .string_field import string_field as _string_launcher

__all__ = ["string_field_op", "coulomb_field_op"]


@torch.library.custom_op("ifm::string_field_triton", mutates_args=())
def string_field_op(points: torch.Tensor, quarks: torch.Tensor, antiquarks: torch.Tensor,
                    L: float, sigma0: float, K: float, d: float, stable: bool, normalize: bool,
                    norm_scale: float, eps: float) -> torch.Tensor:
    return _string_launcher(points, quarks, antiquarks, L=L, sigma0=sigma0, K=K, d=d,
                            stable=stable, normalize=normalize, norm_scale=norm_scale, eps=eps)


@string_field_op.register_fake
def _string_field_fake(points, quarks, antiquarks, L, sigma0, K, d, stable, normalize,
                       norm_scale, eps):
    torch._check(quarks.shape[0] == antiquarks.shape[0])
    torch._check(quarks.shape[1] == points.shape[1])
    torch._check(antiquarks.shape[1] == points.shape[1])
    return torch.empty_like(points, memory_format=torch.contiguous_format)


@torch.library.custom_op("ifm::coulomb_field_triton", mutates_args=())
def coulomb_field_op(points: torch.Tensor, positive: torch.Tensor,
                     negative: Optional[torch.Tensor], plate_gamma: Optional[float],
                     sum_eps: float, normalize: bool, norm_scale: float,
                     eps: float) -> torch.Tensor:
    return _coulomb_launcher(points, positive, negative, plate_gamma=plate_gamma,
                             sum_eps=sum_eps, normalize=normalize, norm_scale=norm_scale,
                             eps=eps)


@coulomb_field_op.register_fake
def _coulomb_field_fake(points, positive, negative, plate_gamma, sum_eps, normalize,
                        norm_scale, eps):
    torch._check(positive.shape[1] == points.shape[1])
    if negative is not None:
        torch._check(negative.shape[1] == points.shape[1])
    return torch.empty_like(points, memory_format=torch.contiguous_format)
