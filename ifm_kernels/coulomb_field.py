"""Coulomb field (EFM two plates, PFGM one plate) in Triton: FIELDS.md §3 and §4.

Per plate (docs/DESIGN.md, "Numerics every kernel follows"; the shared kernels are in
``_passes.py``):

1. ``distance_kernel`` (plain form): partial ``d^2`` over all D + 1 columns per column slice.
2. ``coulomb_stats_kernel``: per (block of query rows, chunk of charges), in float64: the
   chunk's largest logit ``-DIM log(d + 1e-7)``, its sum of exponentials (running maximum,
   online rescaling) and its largest log-contribution; chunks split the charges so that the
   coefficient pass fills the GPU.
   ``coulomb_coeff_kernel``: same grid: the row's maximum and sum from the chunks', then
   ``coeff = e / (sum e + sum_eps)`` (``e`` relative to the row's largest), zero where the
   charge's contribution ``e_j d_j`` is below ``skip_ratio`` of the largest ``e_k d_k`` (a
   weight-only test would drop every other charge when the query sits on a charge, whose own
   term is 0); coefficients into a ``[b, B]`` buffer (data precision), and per block of rows of
   the sums pass the list of live charge blocks.
3. ``pair_sums_kernel``: ``E = sum_j coeff_ij (y_j - x_i)`` from differences over the live
   charge blocks, accumulated in the data precision.

Then one ``finalize_kernel`` launch: per-plate normalisation (``plate_gamma``), ``-E+ + E-``,
final normalisation; skipped for one plate without any normalisation.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _field_math as fm
from . import _launch, _passes, _plan

# Launch plans depend only on ints and the (hashable, frozen) device profile: computed once per
# shape and device kind.
_cached_plan = functools.lru_cache(maxsize=1024)(_plan.make_plan)


@triton.jit
def _log_contribution(logit, d2):
    """``log(w_j ||y_j - x_i||)`` up to the row's constant: the skip test compares a charge's
    contribution (not its weight) with the largest one, so that a query sitting on a charge (whose
    term ``y_j - x_i`` is 0 however large its weight) keeps the other charges' terms."""
    pos = d2 > 0.0
    return tl.where(pos, logit + 0.5 * tl.log(tl.where(pos, d2, 1.0)), -fm.INF)


@triton.jit
def coulomb_stats_kernel(
    part_ptr,
    stats_ptr,
    rows,
    n,
    nslices,
    chunk_len,
    nchunks,
    dim: tl.float64,
    BR: tl.constexpr,
    BJ: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: per row, over one chunk of ``chunk_len`` charges
    (float64): the largest logit ``m``, ``sum exp(logit - m)`` (running maximum with online
    rescaling) and the largest log-contribution ``logit + log d``, into
    ``stats[0 | 1 | 2, row, chunk]``."""
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    ch = tl.program_id(1)
    mi = offs_i < rows
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    m = tl.full([BR], -fm.INF, tl.float64)
    acc = tl.zeros([BR], dtype=tl.float64)
    g_max = tl.full([BR], -fm.INF, tl.float64)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        d2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logit = tl.where(mask, fm.coulomb_logit(d2, dim), -fm.INF)
        m_new = tl.maximum(m, tl.max(logit, axis=1))
        m_safe = tl.where(m_new > -fm.INF, m_new, 0.0)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(logit - m_safe[:, None]), axis=1)
        m = m_new
        g_max = tl.maximum(g_max, tl.max(_log_contribution(logit, d2), axis=1))
    at = offs_i.to(tl.int64) * nchunks + ch
    plane = rows * nchunks
    tl.store(stats_ptr + at, m, mask=mi)
    tl.store(stats_ptr + plane + at, acc, mask=mi)
    tl.store(stats_ptr + 2 * plane + at, g_max, mask=mi)


@triton.jit
def coulomb_coeff_kernel(
    part_ptr,
    stats_ptr,
    c_ptr,
    list_ptr,
    count_ptr,
    rows,
    n,
    nslices,
    chunk_len,
    nchunks,
    list_stride,
    dim: tl.float64,
    sum_eps: tl.float64,
    log_skip: tl.float64,
    BR: tl.constexpr,
    BJ: tl.constexpr,
    SBJ: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: softmax coefficients (float64) of one block of rows over
    one chunk of charges, the row's maximum, sum and largest contribution combined from all
    chunks' ``stats`` in chunk order; the chunk's live charge blocks (of SBJ charges; BJ is a
    multiple of SBJ, ``chunk_len`` of BJ) into the row block's list."""
    rb = tl.program_id(0)
    ch = tl.program_id(1)
    offs_i = rb * BR + tl.arange(0, BR)
    mi = offs_i < rows
    srow = offs_i.to(tl.int64) * nchunks
    plane = rows * nchunks
    m = tl.full([BR], -fm.INF, tl.float64)
    g_max = tl.full([BR], -fm.INF, tl.float64)
    for c in range(0, nchunks):
        m = tl.maximum(m, tl.load(stats_ptr + srow + c, mask=mi, other=-fm.INF))
        g_max = tl.maximum(g_max, tl.load(stats_ptr + 2 * plane + srow + c, mask=mi, other=-fm.INF))
    m_safe = tl.where(m > -fm.INF, m, 0.0)
    acc = tl.zeros([BR], dtype=tl.float64)
    for c in range(0, nchunks):
        mc = tl.load(stats_ptr + srow + c, mask=mi, other=-fm.INF)
        sc = tl.load(stats_ptr + plane + srow + c, mask=mi, other=0.0)
        acc += tl.where(mc > -fm.INF, sc * tl.exp(mc - m_safe), 0.0)
    inv = 1.0 / tl.where(mi, acc + sum_eps, 1.0)  # acc >= 1 on real rows
    dt = c_ptr.dtype.element_ty
    crow = offs_i.to(tl.int64) * n
    cnt = rb * 0
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    seg = list_ptr + ch * (chunk_len // SBJ)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        d2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logit = fm.coulomb_logit(d2, dim)
        keep = mask & (_log_contribution(logit, d2) >= (g_max + log_skip)[:, None])
        coeff = tl.exp(tl.where(keep, logit - m_safe[:, None], -fm.INF)) * inv[:, None]
        coeff = coeff.to(dt)
        tl.store(c_ptr + crow[:, None] + offs_j[None, :], coeff, mask=mask)
        live = (mask & (coeff != 0.0)).to(tl.int32)
        cnt = _passes.live_blocks(seg, rb, list_stride, j0, live, cnt, BJ // SBJ, SBJ, BR)
    tl.store(count_ptr + rb * nchunks + ch, cnt)


def _plate_field(
    plan: _plan.Plan,
    points: torch.Tensor,
    charges: torch.Tensor,
    sum_eps: float,
    dest: torch.Tensor,
) -> None:
    """One plate's raw field ``sum_j coeff_ij (y_j - x_i)`` into ``dest [b, D+1]``."""
    b, width = points.shape
    n = charges.shape[0]
    part, _, _ = _launch.launch_distance(
        plan, points, charges, None, b, n, 0, width, 0.0, string=False
    )
    coeff = torch.empty((b, n), dtype=points.dtype, device=points.device)
    stats = torch.empty((3, b, plan.coef_chunks), dtype=torch.float64, device=points.device)
    lists = _launch.live_lists(plan, points.device)
    _launch.launch(
        coulomb_stats_kernel,
        plan.coef_grid,
        (part, stats, b, n, plan.nslices, plan.coef_chunk_len, plan.coef_chunks, float(width)),
        dict(BR=plan.coef_br, BJ=plan.coef_bj),
        plan.num_warps,
    )
    _launch.launch(
        coulomb_coeff_kernel,
        plan.coef_grid,
        (
            part,
            stats,
            coeff,
            lists[0],
            lists[1],
            b,
            n,
            plan.nslices,
            plan.coef_chunk_len,
            plan.coef_chunks,
            plan.list_stride,
            float(width),
            float(sum_eps),
            fm.log_skip_ratio(points.dtype),
        ),
        dict(BR=plan.coef_br, BJ=plan.coef_bj, SBJ=plan.sums_bj),
        plan.num_warps,
    )
    _launch.launch_pair_sums(
        plan, points, charges, None, coeff, None, lists, dest, b, n, 0, width, 0.0, string=False
    )


def coulomb_field(
    points: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    *,
    plate_gamma: float | None,
    sum_eps: float,
    normalize: bool,
    norm_scale: float,
    eps: float,
) -> torch.Tensor:
    """Coulomb field target ``[b, D+1]`` (docs/DESIGN.md, "Triton launchers").

    One plate (``negative is None``): ``E+`` (toward the charges); two plates: ``-E+ + E-``.
    ``plate_gamma`` not None: each plate term becomes ``sqrt(D+1) E / (||E|| + plate_gamma)``
    first. ``normalize``: ``norm_scale E / (||E|| + eps)`` last. Extra memory per plate:
    ``partial [S, b, B]``, ``coeff [b, B]``, ``stats [3, b, chunks]`` and the live-block
    lists; with two plates one ``[b, D+1]`` buffer for E-.
    """
    points, positive = points.contiguous(), positive.contiguous()
    negative = negative.contiguous() if negative is not None else None
    b, width = points.shape
    out = torch.empty_like(points)
    if b == 0:
        return out
    profile = _launch.device_profile(points.device)
    with _launch.launch_guard(points.device):
        plan_p = _cached_plan(b, positive.shape[0], width, width, profile, points.element_size())
        _plate_field(plan_p, points, positive, sum_eps, out)
        en = None
        if negative is not None:
            en = torch.empty_like(points)
            plan_n = _cached_plan(
                b, negative.shape[0], width, width, profile, points.element_size()
            )
            _plate_field(plan_n, points, negative, sum_eps, en)
        _launch.launch_finalize(
            plan_p,
            out,
            en,
            out,
            plate_gamma=plate_gamma,
            normalize=normalize,
            norm_scale=norm_scale,
            eps=eps,
        )
    return out
