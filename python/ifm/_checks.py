"""Argument checks shared by every backend of :mod:`ifm.fields`.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape
or value) with a message that names the argument and what was expected.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_scalar(name: str, value, *, positive: bool = True, allow_zero: bool = False) -> float:
    """A finite real number (``> 0`` when ``positive``; ``>= 0`` with ``allow_zero``)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_matrix(name: str, t, *, width: Optional[int] = None) -> None:
    """A floating 2-D tensor ``[n, D+1]`` with ``n >= 1`` and ``D >= 1``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [n, D+1], got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; "
                        "call .to_dense() first")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), "
                        f"got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n, D+1] (z in column 0), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(t.shape)}")
    if width is None and t.shape[1] < 2:
        raise ValueError(f"{name} must have D+1 >= 2 columns (z, then the data), got shape "
                         f"{tuple(t.shape)}")
    if width is not None and t.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns (D+1, like points), got shape "
                         f"{tuple(t.shape)}")


def check_same_kind(named: Sequence[tuple]) -> None:
    """All tensors share the first one's dtype and device."""
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                            "pass all tensors in one dtype")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; "
                             "pass all tensors on one device")
    if first.device.type == "meta":
        raise ValueError(f"{first_name} is on the meta device, which holds no values; pass CPU or "
                         "CUDA tensors (shape-only tracing: call torch.ops.ifm.* directly)")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: half inputs are computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def magnitude_bound(dtype: torch.dtype, width: int) -> float:
    """Largest |value| for which no squared distance over ``width`` columns can overflow:
    two points with coordinates below it have ``sum_k (x_k - y_k)^2 < 4 width bound^2 = max``."""
    return math.sqrt(torch.finfo(compute_dtype(dtype)).max / (4.0 * width))


def check_params_fit(dtype: torch.dtype, **params) -> None:
    """Every non-zero parameter is a normal number of the compute dtype (float32 for half
    inputs): e.g. ``sigma0 = 1e-300`` is 0 in float32 and would turn ``s / sigma0`` into 0/0."""
    info = torch.finfo(compute_dtype(dtype))
    for name, value in params.items():
        if value is not None and value != 0 and not info.tiny <= abs(value) <= info.max:
            raise ValueError(f"{name} = {value:g} is outside the range of {compute_dtype(dtype)} "
                             f"(normal numbers {info.tiny:.3g} .. {info.max:.3g}), the precision "
                             "of the tensors; rescale the problem or pass float64 tensors")


def check_finite_values(named: Sequence[tuple]) -> None:
    """No NaN/inf, and no value so large that a squared distance overflows (one pass each)."""
    for name, t in named:
        bound = magnitude_bound(t.dtype, t.shape[1])
        lo, hi = (float(v) for v in t.detach().aminmax())   # no temporary; NaN if any is NaN
        biggest = math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)
        if math.isfinite(biggest) and biggest < bound:
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
            raise ValueError(f"{name} has a non-finite value {t[idx].item()} at index {idx}; "
                             "pass check_finite=False to skip this check")
        idx = tuple(int(i) for i in (t.abs() >= bound).nonzero()[0].tolist())
        raise ValueError(
            f"{name} has a value {t[idx].item():g} at index {idx} too large for "
            f"{compute_dtype(t.dtype)} arithmetic: squared distances over {t.shape[1]} columns overflow unless every "
            f"|value| < {bound:.3g} (sqrt(finfo.max / (4 (D+1)))); rescale the data, or pass "
            "check_finite=False to skip this check")


def check_plate_column(name: str, t: torch.Tensor, z: float) -> None:
    """Column 0 of a plate's charges is the plate's z (z-first layout)."""
    col = t[:, 0].double()
    tol = 1e-5 * max(1.0, abs(z))
    if bool(((col - z).abs() > tol).any()):
        lo, hi = float(col.min()), float(col.max())
        raise ValueError(
            f"{name}: column 0 must be the plate position z = {z:g} for every row (z-first "
            f"layout [n, D+1]); found values in [{lo:g}, {hi:g}]. If your tensors are z-last, "
            f"move the last column first (e.g. t.roll(1, dims=1)).")


def plate_position(name: str, t: torch.Tensor) -> float:
    """The z of a plate whose position is not given: column 0, constant and > 0."""
    col = t[:, 0].double()
    z = float(col[0])
    if not math.isfinite(z) or z <= 0:
        raise ValueError(f"{name}: column 0 must be the plate position z = L > 0 (z-first layout "
                         f"[n, D+1]), got {z:g} in row 0")
    check_plate_column(name, t, z)
    return z


def string_geometry(L, sigma0, K, d) -> tuple:
    """Validate (L, sigma0, K, d) and fill in K = pi / (2 d) or d = pi / (2 K)."""
    L = check_scalar("L", L)
    sigma0 = check_scalar("sigma0", sigma0)
    if K is None and d is None:
        raise ValueError("give K (curvature) or d (end-region length, d = pi / (2K))")
    if K is not None:
        K = check_scalar("K", K)
    if d is not None:
        d = check_scalar("d", d)
    if K is None:
        K = math.pi / (2.0 * d)
    if d is None:
        d = math.pi / (2.0 * K)
    elif abs(d - math.pi / (2.0 * K)) > 1e-6 * d:
        raise ValueError(f"d must equal pi / (2K) = {math.pi / (2.0 * K):g} for K = {K:g}, "
                         f"got d = {d:g}; give only one of K and d")
    if d > L / 2.0 * (1.0 + 1e-12):
        raise ValueError(f"d = pi / (2K) must be at most L / 2 = {L / 2.0:g} (the two end regions "
                         f"may not overlap), got d = {d:g} (K = {K:g})")
    return L, sigma0, K, min(d, L / 2.0)
