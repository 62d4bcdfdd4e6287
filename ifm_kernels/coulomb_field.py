"""Coulomb field (EFM two plates, PFGM one plate) in Triton: FIELDS.md §3 and §4.

Per plate (docs/DESIGN.md, "Numerics every kernel follows"; the shared kernels are in
``_passes.py``):

1. ``distance_kernel`` (plain form): partial ``d^2`` over all D + 1 columns per column slice.
2. ``coulomb_stats_kernel``: per (block of query rows, chunk of charges), in float64: the
   chunk's largest logit ``-DIM log(d + 1e-7)``, its sum of exponentials (running maximum,
   online rescaling) and its largest log-contribution; chunks split the charges so that the
   coefficient pass fills the GPU. For float32 data on a GPU with slow float64
   (``Plan.coef_f32``) the terms are evaluated in float32 relative to the nearest charge
   (``_field_math.coulomb_rel_logit``), and so are the statistics.
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
def _chunk_stats_f64(part_ptr, nslices, rows, n, offs_i, mi, j_begin, j_end, dim, BR, BJ):
    """``(m, sum, g_max)`` of :func:`coulomb_stats_kernel` over one chunk, in float64."""
    m = tl.full([BR], -fm.INF, tl.float64)
    acc = tl.zeros([BR], dtype=tl.float64)
    g2 = tl.full([BR, BJ], -fm.INF, tl.float64)  # per (row, lane); reduced after the loop
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        d2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, False)
        logit = tl.where(mask, fm.coulomb_logit(d2, dim), -fm.INF)
        m_new = tl.maximum(m, tl.max(logit, axis=1))
        m_safe = tl.where(m_new > -fm.INF, m_new, 0.0)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(logit - m_safe[:, None]), axis=1)
        m = m_new
        g2 = tl.maximum(g2, _log_contribution(logit, d2))
    return m, acc, tl.max(g2, axis=1)


@triton.jit
def _chunk_stats_f32(part_ptr, nslices, rows, n, offs_i, mi, j_begin, j_end, half_dim, BR, BJ):
    """``(d2_min, sum, g_rel)`` over one chunk in float32: the smallest ``d^2`` (the largest
    logit's charge), ``sum exp(logit - logit(d2_min))`` and the largest log-contribution
    relative to ``logit(d2_min)``, with the logits relative to the running nearest charge
    (:func:`ifm_kernels._field_math.coulomb_rel_logit`, online rescaling; ``half_dim`` =
    DIM / 2, a float32 argument)."""
    ref = tl.full([BR], fm.INF, tl.float32)
    acc = tl.zeros([BR], dtype=tl.float32)
    g_rel = tl.full([BR], -fm.INF, tl.float32)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        d2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, True)
        ref_new = tl.minimum(ref, tl.min(tl.where(mask, d2, fm.INF), axis=1))
        r_safe = tl.where(ref_new < fm.INF, ref_new, 0.0)  # inf only on rows past the end
        # the old terms, relative to the old nearest charge, moved to the new one
        had = ref < fm.INF
        old = tl.where(had, fm.coulomb_rel_logit(tl.where(had, ref, 0.0), r_safe, half_dim), 0.0)
        rel = tl.where(mask, fm.coulomb_rel_logit(d2, r_safe[:, None], half_dim), -fm.INF)
        acc = acc * tl.exp(old) + tl.sum(tl.exp(rel), axis=1)
        g_rel = tl.maximum(g_rel + old, tl.max(_log_contribution(rel, d2), axis=1))
        ref = ref_new
    return ref, acc, g_rel


@triton.jit
def _row_stats_f32(stats_ptr, srow, plane, nchunks, mi, half_dim, sum_eps, BR):
    """The row's ``(d2_min, 1 / (sum + sum_eps), largest log-contribution)`` from the chunks'
    float32 statistics (:func:`_chunk_stats_f32`), in chunk order, all relative to the row's
    nearest charge; float32 throughout."""
    ref = tl.full([BR], fm.INF, tl.float32)
    for c in range(0, nchunks):
        ref = tl.minimum(ref, tl.load(stats_ptr + srow + c, mask=mi, other=fm.INF))
    ref = tl.where(mi, ref, 0.0)
    acc = tl.zeros([BR], dtype=tl.float32)
    g = tl.full([BR], -fm.INF, tl.float32)
    for c in range(0, nchunks):
        rc = tl.load(stats_ptr + srow + c, mask=mi, other=0.0)
        sc = tl.load(stats_ptr + plane + srow + c, mask=mi, other=0.0)
        gc = tl.load(stats_ptr + 2 * plane + srow + c, mask=mi, other=-fm.INF)
        shift = fm.coulomb_rel_logit(rc, ref, half_dim)
        acc += sc * tl.exp(shift)
        g = tl.maximum(g, gc + shift)
    inv = 1.0 / tl.where(mi, acc + tl.full([], sum_eps, tl.float32), 1.0)
    return ref, inv, g


@triton.jit
def coulomb_stats_kernel(
    p_ptr,
    ws_ptr,
    rows,
    n,
    nslices,
    chunk_len,
    nchunks,
    stats_off,
    dim: tl.float64,
    half_dim: tl.float32,
    BR: tl.constexpr,
    BJ: tl.constexpr,
    F32: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: per row, over one chunk of ``chunk_len`` charges
    (float64): the largest logit ``m``, ``sum exp(logit - m)`` (running maximum with online
    rescaling) and the largest log-contribution ``logit + log d``, into
    ``stats[0 | 1 | 2, row, chunk]``. With ``F32`` (float32 statistics): the chunk's smallest
    ``d^2`` instead of ``m``, and the sum and contribution relative to its logit
    (:func:`_chunk_stats_f32`). ``partial`` and ``stats`` are regions of the byte workspace
    ``ws`` (:class:`ifm_kernels._launch.PlanArgs`); ``p`` (the queries) gives the data
    precision only."""
    part_ptr = _passes.region(ws_ptr, 0, p_ptr.dtype.element_ty)
    stats_ptr = _passes.region(ws_ptr, stats_off, tl.float32 if F32 else tl.float64)
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    ch = tl.program_id(1)
    mi = offs_i < rows
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    at = offs_i.to(tl.int64) * nchunks + ch
    plane = rows * nchunks
    if F32:
        m, acc, g_max = _chunk_stats_f32(
            part_ptr, nslices, rows, n, offs_i, mi, j_begin, j_end, half_dim, BR, BJ
        )
    else:
        m, acc, g_max = _chunk_stats_f64(
            part_ptr, nslices, rows, n, offs_i, mi, j_begin, j_end, dim, BR, BJ
        )
    tl.store(stats_ptr + at, m, mask=mi)
    tl.store(stats_ptr + plane + at, acc, mask=mi)
    tl.store(stats_ptr + 2 * plane + at, g_max, mask=mi)


@triton.jit
def coulomb_coeff_kernel(
    p_ptr,
    ws_ptr,
    rows,
    n,
    nslices,
    chunk_len,
    nchunks,
    stats_off,
    list_stride,
    c_off,
    list_off,
    cnt_off,
    dim: tl.float64,
    half_dim: tl.float32,
    sum_eps: tl.float64,
    log_skip: tl.float64,
    BR: tl.constexpr,
    BJ: tl.constexpr,
    SBJ: tl.constexpr,
    F32: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: softmax coefficients (float64; float32 relative to the
    row's nearest charge when ``F32``) of one block of rows over one chunk of charges, the
    row's maximum, sum and largest contribution combined from all chunks' ``stats`` in chunk
    order; the chunk's live charge blocks (of SBJ charges; BJ is a multiple of SBJ,
    ``chunk_len`` of BJ) into the row block's list. The buffers are regions of the byte
    workspace ``ws`` at their offsets (:class:`ifm_kernels._launch.PlanArgs`); ``p`` (the
    queries) gives the data precision only."""
    dt = p_ptr.dtype.element_ty
    part_ptr = _passes.region(ws_ptr, 0, dt)
    stats_ptr = _passes.region(ws_ptr, stats_off, tl.float32 if F32 else tl.float64)
    c_ptr = _passes.region(ws_ptr, c_off, dt)
    list_ptr = _passes.region(ws_ptr, list_off, tl.int32)
    count_ptr = _passes.region(ws_ptr, cnt_off, tl.int32)
    rb = tl.program_id(0)
    ch = tl.program_id(1)
    offs_i = rb * BR + tl.arange(0, BR)
    mi = offs_i < rows
    srow = offs_i.to(tl.int64) * nchunks
    plane = rows * nchunks
    if F32:
        # float32 statistics relative to each chunk's nearest charge, moved to the row's
        ref, inv, floor = _row_stats_f32(stats_ptr, srow, plane, nchunks, mi, half_dim, sum_eps, BR)
        ref = ref[:, None]
        floor = (floor + tl.full([], log_skip, tl.float32))[:, None]
    else:
        m = tl.full([BR], -fm.INF, tl.float64)
        g_max = tl.full([BR], -fm.INF, tl.float64)
        for c in range(0, nchunks):
            m = tl.maximum(m, tl.load(stats_ptr + srow + c, mask=mi, other=-fm.INF))
            g_max = tl.maximum(
                g_max, tl.load(stats_ptr + 2 * plane + srow + c, mask=mi, other=-fm.INF)
            )
        m_safe = tl.where(m > -fm.INF, m, 0.0)
        acc = tl.zeros([BR], dtype=tl.float64)
        for c in range(0, nchunks):
            mc = tl.load(stats_ptr + srow + c, mask=mi, other=-fm.INF)
            sc = tl.load(stats_ptr + plane + srow + c, mask=mi, other=0.0)
            acc += tl.where(mc > -fm.INF, sc * tl.exp(mc - m_safe), 0.0)
        inv = 1.0 / tl.where(mi, acc + sum_eps, 1.0)  # acc >= 1 on real rows
    crow = offs_i.to(tl.int64) * n
    cnt = rb * 0
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    seg = list_ptr + ch * (chunk_len // SBJ)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        d2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, F32)
        if F32:
            rel = fm.coulomb_rel_logit(d2, ref, half_dim)
            keep = mask & (_log_contribution(rel, d2) >= floor)
            coeff = tl.exp(tl.where(keep, rel, -fm.INF)) * inv[:, None]
        else:
            logit = fm.coulomb_logit(d2, dim)
            keep = mask & (_log_contribution(logit, d2) >= (g_max + log_skip)[:, None])
            coeff = tl.exp(tl.where(keep, logit - m_safe[:, None], -fm.INF)) * inv[:, None]
        coeff = coeff.to(dt)
        tl.store(c_ptr + crow[:, None] + offs_j[None, :], coeff, mask=mask)
        live = (mask & (coeff != 0.0)).to(tl.int32)
        cnt = _passes.live_blocks(seg, rb, list_stride, j0, live, cnt, BJ // SBJ, SBJ, BR)
    tl.store(count_ptr + rb * nchunks + ch, cnt)


class _Spec:
    """A plate plan's launch constants for its shape (cached with the plan): the shared passes'
    :class:`~ifm_kernels._launch.PlanArgs`, and the integer (and width-derived) arguments and
    constexpr dicts of the stats and coefficient passes."""

    __slots__ = (
        "plan",
        "pa",
        "stats_args",
        "stats_cx",
        "coeff_ints",
        "coeff_cx",
    )

    def __init__(self, plan, b, n, width, itemsize):
        self.plan = plan
        pa = self.pa = _launch.PlanArgs(plan, b, n, width, 0, width, False, itemsize)
        self.stats_args = (
            b,
            n,
            plan.nslices,
            plan.coef_chunk_len,
            plan.coef_chunks,
            pa.stats_off,
            float(width),
            0.5 * width,
        )
        self.stats_cx = dict(BR=plan.coef_br, BJ=plan.coef_bj, F32=plan.coef_f32)
        self.coeff_ints = (
            b,
            n,
            plan.nslices,
            plan.coef_chunk_len,
            plan.coef_chunks,
            pa.stats_off,
            plan.list_stride,
            pa.c1_off,
            pa.list_off,
            pa.cnt_off,
            float(width),
            0.5 * width,
        )
        self.coeff_cx = dict(BR=plan.coef_br, BJ=plan.coef_bj, SBJ=plan.sums_bj, F32=plan.coef_f32)


def _plate_spec(b: int, n: int, width: int, profile, itemsize: int) -> _Spec:
    """The cached launch constants of one plate of ``n`` charges for ``b`` queries."""
    plan = _cached_plan(b, n, width, width, profile, itemsize)
    return _launch.per_plan(_Spec, plan, b, n, width, itemsize)


def _plate_field(spec: _Spec, points, charges, sum_eps: float, dest, ws, log_skip: float) -> None:
    """One plate's raw field ``sum_j coeff_ij (y_j - x_i)`` into ``dest [b, D+1]``
    (``sum_eps`` a float), in the call's byte workspace ``ws``."""
    plan, pa = spec.plan, spec.pa
    _launch.launch_distance(plan, points, charges, None, ws, 0.0, pa)
    _launch.launch(
        coulomb_stats_kernel,
        plan.coef_grid,
        (points, ws) + spec.stats_args,
        spec.stats_cx,
        plan.num_warps,
    )
    _launch.launch(
        coulomb_coeff_kernel,
        plan.coef_grid,
        (points, ws) + spec.coeff_ints + (sum_eps, log_skip),
        spec.coeff_cx,
        plan.num_warps,
    )
    _launch.launch_pair_sums(plan, points, charges, None, ws, dest, 0.0, pa)


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
    first. ``normalize``: ``norm_scale E / (||E|| + eps)`` last. Extra memory, in one workspace
    shared by the plates (:class:`ifm_kernels._launch.PlanArgs`; sized for the larger plate):
    ``partial [S, b, B]``, ``coeff [b, B]``, ``stats [3, b, chunks]`` and the live-block lists;
    with two plates one ``[b, D+1]`` buffer for E-.
    """
    return coulomb_field_op(
        points, positive, negative, plate_gamma, sum_eps, normalize, norm_scale, eps
    )


def coulomb_field_op(points, positive, negative, plate_gamma, sum_eps, normalize, norm_scale, eps):
    """:func:`coulomb_field` with positional arguments (the op's schema order)."""
    if not points.is_contiguous():
        points = points.contiguous()
    if not positive.is_contiguous():
        positive = positive.contiguous()
    if negative is not None and not negative.is_contiguous():
        negative = negative.contiguous()
    b, width = points.shape
    out = torch.empty_like(points)
    if b == 0:
        return out
    dev = points.device
    profile = _launch.device_profile(dev)
    itemsize = points.element_size()
    sum_eps = float(sum_eps)
    log_skip = fm.log_skip_ratio(points.dtype)
    with _launch.launch_guard(dev):
        spec_p = _plate_spec(b, positive.shape[0], width, profile, itemsize)
        spec_n = en = None
        if negative is not None:
            en = torch.empty_like(points)
            spec_n = _plate_spec(b, negative.shape[0], width, profile, itemsize)
        # the plates run one after the other in stream order: they share the workspace
        nbytes = spec_p.pa.ws_bytes
        if spec_n is not None and spec_n.pa.ws_bytes > nbytes:
            nbytes = spec_n.pa.ws_bytes
        ws = _launch.workspace(nbytes, dev)
        _plate_field(spec_p, points, positive, sum_eps, out, ws, log_skip)
        if spec_n is not None:
            _plate_field(spec_n, points, negative, sum_eps, en, ws, log_skip)
        _launch.launch_finalize(
            spec_p.plan,
            out,
            en,
            out,
            plate_gamma=float(plate_gamma) if plate_gamma is not None else None,
            normalize=normalize,
            norm_scale=float(norm_scale),
            eps=float(eps),
            pa=spec_p.pa,
        )
    return out


def coulomb_plate_partial_op(points, charges):
    """One plate's softmax-weighted mean field ``[b, D+1]`` (no plate or final normalisation,
    ``sum_eps`` 0) and per row the float64 ``(max_j l_ij, log sum_j e^(l_ij))`` ``[b, 2]``,
    combined in torch from the stats pass's per-chunk maxima and sums in chunk order (no host
    sync): the schema of ``ifm::coulomb_plate_partial`` (docs/DESIGN.md, "Op schemas")."""
    if not points.is_contiguous():
        points = points.contiguous()
    if not charges.is_contiguous():
        charges = charges.contiguous()
    b, width = points.shape
    out = torch.empty_like(points)
    if b == 0:
        return out, points.new_empty(0, 2, dtype=torch.float64)
    dev = points.device
    itemsize = points.element_size()
    with _launch.launch_guard(dev):
        spec = _plate_spec(b, charges.shape[0], width, _launch.device_profile(dev), itemsize)
        ws = _launch.workspace(spec.pa.ws_bytes, dev)
        _plate_field(spec, points, charges, 0.0, out, ws, fm.log_skip_ratio(points.dtype))
        stats = _launch.regions(spec.pa, ws, points.dtype)["stats"][1]
    if spec.plan.coef_f32:
        # float32 statistics: the chunks' nearest d^2 and sums relative to its logit
        stats = stats.double()
        m_chunk = -width * torch.log(torch.sqrt(stats[0]) + fm.COULOMB_D_EPS.value)
    else:
        m_chunk = stats[0]
    s_chunk = stats[1]
    m = m_chunk.amax(1)
    finite = m > -float("inf")
    m_safe = torch.where(finite, m, torch.zeros_like(m))
    live = m_chunk > -float("inf")
    scaled = torch.where(live, s_chunk * torch.exp(m_chunk - m_safe[:, None]), 0.0)
    lse = torch.where(finite, m_safe + torch.log(scaled.sum(1)), m)
    return out, torch.stack([m, lse], 1)
