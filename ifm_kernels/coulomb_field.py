"""Coulomb field (EFM two plates, PFGM one plate) in Triton: FIELDS.md §3 and §4.

Per plate (docs/DESIGN.md, "Numerics every kernel follows"; passes 1, 3 and 4 are in
``_common.py``):

1. ``distance_kernel`` (plain form): partial ``d^2`` over all D + 1 columns per column slice.
2. ``coulomb_coeff_kernel``: per block of query rows, in float64, the log-domain softmax of
   ``-DIM log(d + 1e-7)`` with a running row maximum (online rescaling of the sum), then
   ``coeff = e / (sum e + sum_eps)`` (``e`` relative to the row's largest), zero where the
   charge's contribution ``e_j d_j`` is below ``skip_ratio`` of the largest ``e_k d_k`` (a
   weight-only test would drop every other charge when the query sits on a charge, whose own
   term is 0); coefficients into a ``[b, B]`` buffer.
3. ``pair_sums_kernel``: ``E = sum_j coeff_ij (y_j - x_i)`` from differences.

Then one ``finalize_kernel`` launch: per-plate normalisation (``plate_gamma``), ``-E+ + E-``,
final normalisation; skipped for one plate without any normalisation.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common as C

# Launch plans depend only on ints and the (hashable, frozen) device profile: computed once per
# shape and device kind.
_plan = functools.lru_cache(maxsize=1024)(C.make_plan)


@triton.jit
def _log_contribution(logit, d2):
    """``log(w_j ||y_j - x_i||)`` up to the row's constant: the skip test compares a charge's
    contribution (not its weight) with the largest one, so that a query sitting on a charge (whose
    term ``y_j - x_i`` is 0 however large its weight) keeps the other charges' terms."""
    pos = d2 > 0.0
    return tl.where(pos, logit + 0.5 * tl.log(tl.where(pos, d2, 1.0)), -C._INF)


@triton.jit
def coulomb_coeff_kernel(part_ptr, c_ptr, rows, n, nslices, dim: tl.float64,
                         sum_eps: tl.float64, log_skip: tl.float64,
                         BR: tl.constexpr, BJ: tl.constexpr):
    """Grid ``(ceil(b / BR),)``: softmax coefficients of one block of rows (float64)."""
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    mi = offs_i < rows
    # running maximum and sum of exp(logit - max); largest log-contribution logit + log d
    m = tl.full([BR], -C._INF, tl.float64)
    acc = tl.zeros([BR], dtype=tl.float64)
    g_max = tl.full([BR], -C._INF, tl.float64)
    for j0 in range(0, n, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < n)[None, :]
        d2 = C.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logit = tl.where(mask, C.coulomb_logit(d2, dim), -C._INF)
        m_new = tl.maximum(m, tl.max(logit, axis=1))
        m_safe = tl.where(m_new > -C._INF, m_new, 0.0)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(logit - m_safe[:, None]), axis=1)
        m = m_new
        g_max = tl.maximum(g_max, tl.max(_log_contribution(logit, d2), axis=1))
    m_safe = tl.where(m > -C._INF, m, 0.0)
    inv = 1.0 / tl.where(mi, acc + sum_eps, 1.0)  # acc >= 1 on real rows
    dt = c_ptr.dtype.element_ty
    crow = offs_i.to(tl.int64) * n
    for j0 in range(0, n, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < n)[None, :]
        d2 = C.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logit = C.coulomb_logit(d2, dim)
        keep = mask & (_log_contribution(logit, d2) >= (g_max + log_skip)[:, None])
        coeff = tl.exp(tl.where(keep, logit - m_safe[:, None], -C._INF)) * inv[:, None]
        tl.store(c_ptr + crow[:, None] + offs_j[None, :], coeff.to(dt), mask=mask)


def _plate_field(plan: C.Plan, points: torch.Tensor, charges: torch.Tensor, sum_eps: float,
                 dest: torch.Tensor) -> None:
    """One plate's raw field ``sum_j coeff_ij (y_j - x_i)`` into ``dest [b, D+1]``."""
    b, width = points.shape
    n = charges.shape[0]
    part, _ = C.launch_distance(plan, points, charges, None, b, n, 0, width, 0.0, string=False)
    coeff = torch.empty((b, n), dtype=points.dtype, device=points.device)
    C.launch(coulomb_coeff_kernel, plan.coef_grid,
             (part, coeff, b, n, plan.nslices, float(width), float(sum_eps),
              C.log_skip_ratio(points.dtype)),
             dict(BR=plan.coef_br, BJ=plan.coef_bj), plan.num_warps)
    C.launch_pair_sums(plan, points, charges, None, coeff, None, dest, b, n, 0, width, 0.0,
                       string=False)


def coulomb_field(points: torch.Tensor, positive: torch.Tensor,
                  negative: Optional[torch.Tensor], *, plate_gamma: Optional[float],
                  sum_eps: float, normalize: bool, norm_scale: float,
                  eps: float) -> torch.Tensor:
    """Coulomb field target ``[b, D+1]`` (docs/DESIGN.md, "Triton launchers").

    One plate (``negative is None``): ``E+`` (toward the charges); two plates: ``-E+ + E-``.
    ``plate_gamma`` not None: each plate term becomes ``sqrt(D+1) E / (||E|| + plate_gamma)``
    first. ``normalize``: ``norm_scale E / (||E|| + eps)`` last. Extra memory per plate:
    ``partial [S, b, B]`` and ``coeff [b, B]``; with two plates one ``[b, D+1]`` buffer for E-.
    """
    points, positive = points.contiguous(), positive.contiguous()
    negative = negative.contiguous() if negative is not None else None
    b, width = points.shape
    out = torch.empty_like(points)
    if b == 0:
        return out
    profile = C.device_profile(points.device)
    with C.launch_guard(points.device):
        plan_p = _plan(b, positive.shape[0], width, width, profile, points.element_size())
        _plate_field(plan_p, points, positive, sum_eps, out)
        en = None
        if negative is not None:
            en = torch.empty_like(points)
            plan_n = _plan(b, negative.shape[0], width, width, profile, points.element_size())
            _plate_field(plan_n, points, negative, sum_eps, en)
        C.launch_finalize(plan_p, out, en, out, plate_gamma=plate_gamma, normalize=normalize,
                          norm_scale=norm_scale, eps=eps)
    return out
