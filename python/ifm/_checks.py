"""Argument checks shared by every backend of :mod:`ifm.fields`.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape
or value) with a message that names the argument and what was expected.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
from collections.abc import Sequence

import torch
from torch._subclasses.fake_tensor import FakeTensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)


def check_scalar(name: str, value, *, positive: bool = True, allow_zero: bool = False) -> float:
    """A finite real number (``> 0`` when ``positive``; ``>= 0`` with ``allow_zero``)."""
    if type(value) is float or type(value) is int:  # the common case, without the ABC check
        value = float(value)
        if math.isfinite(value) and (not positive or value > 0 or (allow_zero and value == 0)):
            return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_matrix(name: str, t, *, width: int | None = None) -> None:
    """A floating 2-D tensor ``[n, D+1]`` with ``n >= 1`` and ``D >= 1``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [n, D+1], got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, got layout {t.layout}; "
            "call .to_dense() first"
        )
    if t.dtype not in _FLOAT_DTYPE_SET:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32, float64), "
            f"got {t.dtype}"
        )
    shape = t.shape
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D [n, D+1] (z in column 0), got shape {tuple(t.shape)}")
    if shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(t.shape)}")
    if width is None and shape[1] < 2:
        raise ValueError(
            f"{name} must have D+1 >= 2 columns (z, then the data), got shape {tuple(t.shape)}"
        )
    if width is not None and shape[1] != width:
        raise ValueError(
            f"{name} must have {width} columns (D+1, like points), got shape {tuple(t.shape)}"
        )


def check_same_kind(named: Sequence[tuple]) -> None:
    """All tensors share the first one's dtype and device."""
    first_name, first = named[0]
    dtype, cpu = first.dtype, first.is_cpu
    for name, t in named[1:]:
        if t.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                "pass all tensors in one dtype"
            )
        if not (cpu and t.is_cpu) and t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; "
                "pass all tensors on one device"
            )
    if first.is_meta:
        raise ValueError(
            f"{first_name} is on the meta device, which holds no values; pass CPU or "
            "CUDA tensors (shape-only tracing: call torch.ops.ifm.* directly)"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: half inputs are computed in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_FINFO = {dt: torch.finfo(compute_dtype(dt)) for dt in FLOAT_DTYPES}


def magnitude_bound(dtype: torch.dtype, width: int) -> float:
    """Largest |value| for which no squared distance over ``width`` columns can overflow:
    two points with coordinates below it have ``sum_k (x_k - y_k)^2 < 4 width bound^2 = max``."""
    bound = _BOUNDS.get((dtype, width))
    if bound is None:
        bound = _BOUNDS[(dtype, width)] = math.sqrt(_FINFO[dtype].max / (4.0 * width))
    return bound


_BOUNDS = {}


def check_params_fit(dtype: torch.dtype, **params) -> None:
    """Every non-zero parameter is a normal number of the compute dtype (float32 for half
    inputs): e.g. ``sigma0 = 1e-300`` is 0 in float32 and would turn ``s / sigma0`` into 0/0."""
    info = _FINFO[dtype]
    lo, hi = info.tiny, info.max
    for name, value in params.items():
        if value is not None and value != 0 and not lo <= abs(value) <= hi:
            raise ValueError(
                f"{name} = {value:g} is outside the range of {compute_dtype(dtype)} "
                f"(normal numbers {info.tiny:.3g} .. {info.max:.3g}), the precision "
                "of the tensors; rescale the problem or pass float64 tensors"
            )


ENV_SWITCH = "IFM_CHECK_FINITE"
_ENV_VALUES = {"": None, "auto": None, "1": True, "0": False}


def _env_raw() -> str:
    """``os.environ.get(ENV_SWITCH, "")``, read from ``os.environ``'s own dict where CPython
    has one (it is what ``os.environ[...] = ...`` and ``monkeypatch.setenv`` update), which
    skips the key encoding of the ``Mapping`` interface (about 0.5 us a call)."""
    if _ENV_DATA is None or os.environ is not _ENVIRON:
        return os.environ.get(ENV_SWITCH, "")
    raw = _ENV_DATA.get(_ENV_KEY)
    return "" if raw is None else os.environ.decodevalue(raw)


_ENVIRON = os.environ
try:
    _ENV_DATA, _ENV_KEY = os.environ._data, os.environ.encodekey(ENV_SWITCH)
except AttributeError:  # another Python implementation
    _ENV_DATA = _ENV_KEY = None


def _env_default():
    raw = _env_raw()
    if not raw:
        return None
    try:
        return _ENV_VALUES[raw.strip().lower()]
    except KeyError:
        raise ValueError(
            f"environment variable {ENV_SWITCH} must be 1 (value checks on every "
            f"device), 0 (none) or unset/auto (CPU tensors only), got {raw!r}"
        ) from None


def _tracing(t: torch.Tensor) -> bool:
    """True while torch.compile or torch.export traces, or a CUDA graph captures on ``t``'s
    device (a host read would end the capture)."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def value_checks(check_finite, t: torch.Tensor) -> bool:
    """Whether the checks that read tensor values (finite values, plate columns) run.

    ``check_finite``: ``None`` (default) takes the environment variable ``IFM_CHECK_FINITE``:
    unset or ``auto`` checks CPU tensors only (free of device syncs), ``1`` every device, ``0``
    none. ``True``/``False`` force it. While tracing or capturing (:func:`_tracing`) nothing
    runs; an explicit ``True`` is then an error rather than a skipped check. Fake tensors hold
    no values: a check wanted on them is an error.
    """
    if check_finite is None:
        env = _env_default()
        if not (t.is_cpu if env is None else env):
            return False
    elif check_finite is False:
        return False
    elif check_finite is not True:
        raise TypeError(
            f"check_finite must be a bool or None (default: {ENV_SWITCH}, CPU "
            f"tensors only), got {check_finite!r}"
        )
    if _tracing(t):
        if check_finite:
            raise ValueError(
                "check_finite=True reads tensor values on the host, which cannot "
                "happen while torch.compile or torch.export traces or a CUDA graph "
                "captures; pass check_finite=None (the default) there"
            )
        return False
    if type(t) is not torch.Tensor and isinstance(t, FakeTensor):
        raise ValueError(
            f"the value checks (check_finite={check_finite}, {ENV_SWITCH}="
            f"{os.environ.get(ENV_SWITCH, '')!r}) read tensor values, which fake "
            f"tensors ({t.device.type}) do not hold; pass check_finite=False"
        )
    return True


_CHECK_OP = []  # [torch.ops.ifm.check_values.default or None], looked up once


def _check_op():
    """The compiled CPU checker ``ifm::check_values`` (csrc/value_checks.cpp), or None when the
    extension is missing or was built without it."""
    if not _CHECK_OP:
        from . import _ops

        op = None
        if _ops.extension_loaded():
            try:
                op = torch.ops.ifm.check_values.default
            except (AttributeError, RuntimeError):
                op = None
            else:  # the overload's builtin, without OpOverload.__call__'s Python frame
                op = getattr(op, "_op", op)
        _CHECK_OP.append(op)
    return _CHECK_OP[0]


NO_PLATE = math.inf  # check_values: the tensor is no plate
PLATE_AT_ROW_0 = math.nan  # check_values: the plate's position is column 0 of row 0


def check_values(named: Sequence[tuple], plate_z: Sequence[float]) -> None:
    """The checks that read tensor values: one compiled pass on CPU tensors, else one batched
    reduction (``_foreach_norm``, max |v|; NaN propagates through it).

    ``named``: ``(name, tensor)``, all of one dtype and width: no NaN/inf and no value so large
    that a squared distance overflows. ``plate_z``: one entry per tensor: :data:`NO_PLATE`, or
    the plate position ``z`` that column 0 must equal, or :data:`PLATE_AT_ROW_0`: the position
    is column 0 of row 0, which must be > 0 and shared by every row. Errors name the first
    offending argument (values of every tensor before plates).

    CPU tensors go through the compiled ``ifm::check_values`` (csrc/value_checks.cpp) first, one
    pass that only says whether every check passes; when one fails (or on other devices, or
    without the extension) the reductions below find the argument and index and raise.
    """
    first = named[0][1]
    bound = magnitude_bound(first.dtype, first.shape[1])
    if first.is_cpu:
        op = _CHECK_OP[0] if _CHECK_OP else _check_op()
        if op is not None and op([t for _, t in named], bound, plate_z) == 0:
            return
    plates = [
        (name, t, None if z != z else z)
        for (name, t), z in zip(named, plate_z, strict=False)
        if z != NO_PLATE
    ]
    tensors = [t.detach() for _, t in named]
    cols = []
    for name, t, z in plates:
        col = t.detach().select(1, 0)
        if z is None:
            z = float(col[0])
            if not (math.isfinite(z) and z > 0):
                check_finite_values(named, bound)
                raise ValueError(
                    f"{name}: column 0 must be the plate position z = L > 0 "
                    f"(z-first layout [n, D+1]), got {z:g} in row 0"
                )
        cols.append((name, col, z))
        tensors.append(col - z if z else col)
    norms = torch._foreach_norm(tensors, math.inf)
    if not all(float(n) < bound for n in norms[: len(named)]):
        check_finite_values(named, bound)
    for (name, col, z), n in zip(cols, norms[len(named) :], strict=False):
        if not float(n) <= 1e-5 * max(1.0, abs(z)):  # NaN included
            col = col.double()
            lo, hi = float(col.min()), float(col.max())
            raise ValueError(
                f"{name}: column 0 must be the plate position z = {z:g} for every row (z-first "
                f"layout [n, D+1]); found values in [{lo:g}, {hi:g}]. If your tensors are "
                f"z-last, move the last column first (e.g. t.roll(1, dims=1))."
            )


def check_finite_values(named: Sequence[tuple], bound: float) -> None:
    """Raise for the first tensor with a non-finite value or one whose magnitude reaches
    ``bound`` (naming the argument and the index)."""
    for name, t in named:
        t = t.detach()
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
            raise ValueError(
                f"{name} has a non-finite value {t[idx].item()} at index {idx}; "
                "pass check_finite=False to skip this check"
            )
        big = t.abs() >= bound
        if bool(big.any()):
            idx = tuple(int(i) for i in big.nonzero()[0].tolist())
            raise ValueError(
                f"{name} has a value {t[idx].item():g} at index {idx} too large for "
                f"{compute_dtype(t.dtype)} arithmetic: squared distances over {t.shape[1]} "
                f"columns overflow unless every |value| < {bound:.3g} "
                "(sqrt(finfo.max / (4 (D+1)))); rescale the data, or pass check_finite=False "
                "to skip this check"
            )


def round_to(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (float32 or float64), on the host without a tensor."""
    if dtype == torch.float64:
        return value
    return struct.unpack("f", struct.pack("f", value))[0]


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
        raise ValueError(
            f"d must equal pi / (2K) = {math.pi / (2.0 * K):g} for K = {K:g}, "
            f"got d = {d:g}; give only one of K and d"
        )
    if d > L / 2.0 * (1.0 + 1e-12):
        raise ValueError(
            f"d = pi / (2K) must be at most L / 2 = {L / 2.0:g} (the two end regions "
            f"may not overlap), got d = {d:g} (K = {K:g})"
        )
    return L, sigma0, K, min(d, L / 2.0)
