"""Triton mirror of ``csrc/field_math.h``: its constants and the per-pair math of both fields.

Triton cannot include a C header, so this is the one other copy of ``field_math.h``
(tests/test_triton_kernels.py parses the header and checks the constants here against it; both
are tested against the same float64 reference). It runs in the ``[b, B]`` coefficient pass,
in float64 whatever the data precision (FIELDS.md §7, "Logit precision"), except for float32 data
on GPUs with slow float64 (:attr:`ifm_kernels._plan.Plan.coef_f32`): there the per-pair functions
run in float32 (they work in the precision of their arguments) and the Coulomb logits are taken
relative to the row's nearest charge (:func:`coulomb_rel_logit`), which float32 keeps accurate.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

# constants: the values of csrc/field_math.h (kStringTanEps, ...) and ifm.reference
STRING_TAN_EPS = tl.constexpr(1e-5)  # kappa = K / (tan(K z) + 1e-5) on the left end
STRING_R_EPS = tl.constexpr(1e-11)  # sin(alpha) / (r + 1e-11)
STRING_COS_EPS = tl.constexpr(1e-8)  # (cos(alpha) + 1e-8) * (s / sigma0)^D
STRING_DEN_EPS = tl.constexpr(1e-2)  # ... + 1e-2
COULOMB_D_EPS = tl.constexpr(1e-7)  # (d + 1e-7) in the Coulomb weights
INF = tl.constexpr(float("inf"))


SKIP_RATIO_F64 = 2.0**-80  # field_math.h: skip_ratio(true)
SKIP_RATIO_F32 = 2.0**-44  # field_math.h: skip_ratio(false)


def skip_ratio(dtype: torch.dtype) -> float:
    """Pairs whose weight (string) or contribution (Coulomb) is below this fraction of the row's
    largest are skipped (``field_math.h: skip_ratio``): 2^-80 for float64 data, 2^-44 else."""
    return SKIP_RATIO_F64 if dtype == torch.float64 else SKIP_RATIO_F32


@functools.cache
def log_skip_ratio(dtype: torch.dtype) -> float:
    """``log(skip_ratio(dtype))``, computed once per dtype (it is on the launch path)."""
    return math.log(skip_ratio(dtype))


@triton.jit
def _f64(x):
    """``x`` as a float64 scalar tensor: the operand of every comparison with a float parameter.
    Triton 3.6's comparison operators turn a Python float operand into a float32 constant
    (rounded) before promoting it, and the interpreter passes ``tl.float64`` arguments as Python
    floats, so ``z < d`` there compares with float32(d). Compiled code receives the argument as
    a float64 scalar already: this is a no-op there (same PTX)."""
    return tl.full([], x, tl.float64)


@triton.jit
def string_offset_params(z, L):
    """``(from_antiquark, t)`` of ``field_math.h: string_query``: offsets are taken from the
    nearer plate, ``rho = (x - base) - t * Delta`` with ``base = A, t = z / L`` for ``z <= L/2``
    and ``base = C, t = -(L - z) / L`` otherwise. ``z`` and ``L`` (a scalar tensor) of one
    precision, that of the result; the quotients are correctly rounded (``L - z`` is exact
    there: Sterbenz), so ``t`` is the float64 quotient of the rounded ``L`` rounded, up to a
    double rounding."""
    from_anti = z > 0.5 * L
    t = tl.where(from_anti, -_div_rn(L - z, L), _div_rn(z, L))
    return from_anti, t


@triton.jit
def _div_rn(a, b):
    """``a / b`` correctly rounded: ``div_rn`` in float32 (Triton's float32 ``/`` is the
    faster approximate division), ``/`` in float64 (IEEE there)."""
    if a.dtype == tl.float32:
        return tl.math.div_rn(a, b)
    else:
        return a / b


@triton.jit
def string_query(z, L, sigma0, K, d, D):
    """Everything about a query that depends on its z only (``field_math.h: string_query``).

    Returns ``(inside, s, inv_2s2, kappa, pow_s)``: inside ``0 <= z <= L``, tube width ``s``
    (0 outside), ``1 / (2 s^2)`` (0 when s == 0), slope ``kappa`` (``-inf`` at z == L) and
    ``(s / sigma0)^D``. ``z`` is a float64 tensor; the parameters are float64 scalars.
    """
    inside = (z >= 0.0) & (z <= _f64(L))
    left = z < _f64(d)
    right = (z > _f64(L - d)) & (~left)
    # one sine and one cosine: the end regions exclude each other, and both take the form
    # sin / tan of K times the distance to their plate (the SIMT lanes evaluate every branch)
    a = K * tl.where(left, z, tl.where(right, L - z, 0.0))
    sin_a = tl.sin(a)
    tan_a = sin_a / tl.cos(a)
    kappa_left = K / (tan_a + STRING_TAN_EPS)
    # sigma0 * sin(K (L - z)) == sigma0 * cos(K (z - L + d)) since d = pi / (2K);
    # -K / tan(K (L - z)) is the well-conditioned form of the authors' K * tan(pi - K (z - L + d)).
    kappa_right = tl.where(tan_a > 0.0, -K / tl.where(tan_a > 0.0, tan_a, 1.0), -INF)
    s = tl.where(left | right, sigma0 * sin_a, sigma0)
    kappa = tl.where(left, kappa_left, tl.where(right, kappa_right, 0.0))
    s = tl.where(inside, s, 0.0)
    kappa = tl.where(inside, kappa, 0.0)
    pos = s > 0.0
    s_safe = tl.where(pos, s, 1.0)
    inv_2s2 = tl.where(pos, 0.5 / (s_safe * s_safe), 0.0)
    # pow(s / sigma0, D) for D >= 1 (exactly 0 at s == 0, exactly 1 at s == sigma0)
    pow_s = tl.where(pos, tl.exp(D * tl.log(s_safe / sigma0)), 0.0)
    return inside, s, inv_2s2, kappa, pow_s


@triton.jit
def string_pair(inside, s, inv_2s2, kappa, pow_s, r2):
    """Coefficients of one (query, pair) term (``field_math.h: string_pair``), float64.

    The query arguments are ``[R, 1]`` (or broadcastable), ``r2`` is ``[R, J]``. Returns
    ``(logw, cos_a, sr)``: the pair field is ``exp(logw) * [cos_a * n_j + sr * (0, rho_ij)]``;
    ``logw`` is ``-inf`` where the pair contributes nothing (outside the plates, or on a plate
    away from the pair's end point).
    """
    r = tl.sqrt(r2)
    use_k = (r2 > 0.0) & (kappa != 0.0)
    tan_a = tl.where(use_k, r * tl.where(use_k, kappa, 0.0), 0.0)
    inf_t = tl.abs(tan_a) == INF
    tan_f = tl.where(inf_t, 0.0, tan_a)
    cos_f = 1.0 / tl.sqrt(1.0 + tan_f * tan_f)
    cos_a = tl.where(inf_t, 0.0, cos_f)
    sin_a = tl.where(inf_t, tl.where(tan_a > 0.0, 1.0, -1.0), tan_f * cos_f)
    sr = sin_a / (r + STRING_R_EPS)
    # 0 when r == 0 (the limit at s == 0); also where float32 rounds 1 / (2 s^2) to inf
    expo = tl.where(r2 > 0.0, -r2 * inv_2s2, 0.0)
    den = (cos_a + STRING_COS_EPS) * pow_s + STRING_DEN_EPS
    logw = expo - tl.log(den)
    dead = (~inside) | ((s == 0.0) & (r2 > 0.0))
    logw = tl.where(dead, -INF, logw)
    cos_a = tl.where(dead, 1.0, cos_a)
    sr = tl.where(dead, 0.0, sr)
    return logw, cos_a, sr


@triton.jit
def coulomb_logit(d2, dim):
    """``log((1 / (d + 1e-7))^DIM)`` (``field_math.h: coulomb_logit``), float64."""
    return -dim * tl.log(tl.sqrt(d2) + COULOMB_D_EPS)


@triton.jit
def log1p_small(x):
    """``log(1 + x)`` for ``x > -1/16`` in the precision of ``x``, to a few ulps of the result
    also for tiny ``x`` (``log(1 + x)`` in float32 keeps only the digits of ``x`` above 2^-24):
    the series through ``x^7`` below 1/16 (truncation below ``x^8 / 8 < 2^-31 x``), else
    ``log(1 + x)``."""
    small = x < 0.0625
    t = tl.where(small, x, 0.0)
    series = t * (
        1.0
        - t
        * (
            0.5
            - t
            * (
                0.3333333333333333
                - t * (0.25 - t * (0.2 - t * (0.16666666666666666 - t * 0.14285714285714285)))
            )
        )
    )
    return tl.where(small, series, tl.log(1.0 + tl.where(small, 0.0, x)))


@triton.jit
def coulomb_rel_logit(d2, d2_ref, half_dim):
    """``coulomb_logit(d2) - coulomb_logit(d2_ref)`` for ``d2 >= d2_ref``, in the precision of
    ``d2``: ``-DIM log((d + 1e-7) / (d_ref + 1e-7)) = -(DIM / 2) log1p(x)`` with
    ``x = (d2 - d2_ref + 2e-7 (d - d_ref)) / (d_ref + 1e-7)^2``. The difference ``d2 - d2_ref``
    is exact for the terms that matter (Sterbenz), so the logit loses ``~ DIM/2 x eps``, below
    30 ulps wherever the weight is above e^-30; the absolute logit ``-DIM log(d + 1e-7)`` in
    float32 would lose ~1e-3 at DIM = 3073 (FIELDS.md §7). ``half_dim`` = DIM / 2."""
    d = tl.sqrt(d2)
    dr = tl.sqrt(d2_ref)
    u = dr + COULOMB_D_EPS
    x = (d2 - d2_ref + 2.0 * COULOMB_D_EPS * (d - dr)) / (u * u)
    return -half_dim * log1p_small(x)


@triton.jit
def normalize_factor(norm2, scale, eps):
    """Row scale of ``scale * E / (||E|| + eps)``; 0 for a zero row, also at eps = 0
    (``field_math.h: normalize_factor``)."""
    return tl.where(norm2 == 0.0, 0.0, scale / (tl.sqrt(norm2) + eps))
