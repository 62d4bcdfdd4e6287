"""String (IFM) field in Triton: FIELDS.md §2 and §4, semantics of ``csrc/field_math.h``.

Launches (docs/DESIGN.md, "Numerics every kernel follows"; the shared kernels are in
``_passes.py``):

1. ``distance_kernel`` (string form): partial ``r^2`` and ``||Delta_j||^2`` per column slice.
   With the float32 coefficient pass (``Plan.coef_f32``, GPUs with slow float64) then
   ``string_query_kernel``: the queries' float64 tube terms, once per query.
2. ``string_stats_kernel``: per (block of query rows, chunk of pairs), in float64 (float32 with
   ``coef_f32``): the query terms (computed here, or loaded), ``r^2`` (slices summed in order),
   ``logw`` (``string_pair``) and the chunk's largest ``logw`` per row. Rows are the rows of
   one block of the sums pass; chunks split the pairs so that the coefficient pass fills the
   GPU (``_plan.make_plan``).
3. ``string_coeff_kernel``: same grid: the row maximum ``m`` from the chunks' maxima; then
   ``w = exp(logw)`` (default) or ``exp(logw - m)`` (stable), zero below ``skip_ratio`` of the
   row's largest weight, ``c1 = w cos_a nu_j``, ``c2 = w sr`` into ``[b, B]`` buffers (data
   precision), the chunk's ``sum_j c1`` (float64) and its live pair blocks.
4. ``pair_sums_kernel``: ``E_x = sum_j c2 rho + c1 Delta`` from differences over the live pair
   blocks, accumulated in the data precision; the programs of the first column block also write
   ``E_z = L sum_chunks sum_j c1`` into column 0.
5. ``finalize_kernel`` (only with ``normalize``): ``norm_scale E / (||E|| + eps)``.
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
# rows per program of string_query_kernel: one warp, one row per thread
QUERY_ROWS = 32


@triton.jit
def _query_terms(p_ptr, offs_i, mi, width, L, sigma0, K, d, F32: tl.constexpr):
    """``string_query`` of a block of rows (float64, once per row), in the coefficient pass's
    precision (float32 when ``F32``), as ``[BR]`` vectors."""
    z = tl.load(p_ptr + offs_i.to(tl.int64) * width, mask=mi, other=0.0).to(tl.float64)
    D = (width - 1).to(tl.float64)
    inside, s, inv_2s2, kappa, pow_s = fm.string_query(z, L, sigma0, K, d, D)
    if F32:
        s = s.to(tl.float32)
        inv_2s2 = inv_2s2.to(tl.float32)
        kappa = kappa.to(tl.float32)
        pow_s = pow_s.to(tl.float32)
    return inside, s, inv_2s2, kappa, pow_s


@triton.jit
def _load_query_terms(q_ptr, rows, offs_i, mi):
    """The terms :func:`_store_query_terms` stored (from :func:`string_query_kernel` or the
    stats kernel), as ``[BR, 1]`` columns: ``(inside, s, inv_2s2, kappa, pow_s)``."""
    s = tl.load(q_ptr + offs_i, mask=mi, other=-1.0)
    inv_2s2 = tl.load(q_ptr + rows + offs_i, mask=mi, other=0.0)
    kappa = tl.load(q_ptr + 2 * rows + offs_i, mask=mi, other=0.0)
    pow_s = tl.load(q_ptr + 3 * rows + offs_i, mask=mi, other=0.0)
    inside = s >= 0.0
    s = tl.where(inside, s, 0.0)
    return inside[:, None], s[:, None], inv_2s2[:, None], kappa[:, None], pow_s[:, None]


@triton.jit
def string_query_kernel(
    p_ptr,
    ws_ptr,
    rows,
    width,
    q_off,
    L: tl.float64,
    sigma0: tl.float64,
    K: tl.float64,
    d: tl.float64,
    BR: tl.constexpr,
    F32: tl.constexpr,
):
    """Grid ``ceil(b / BR)``, one warp, one query row per thread: the rows' ``string_query``
    terms (float64), rounded to the coefficient pass's precision, into ``q``
    (:func:`_load_query_terms` reads them). Used where float64 is slow: there the stats kernel's
    programs, whose threads each hold a row vector, would evaluate the float64 terms once per
    chunk and thread holding the row."""
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    mi = offs_i < rows
    inside, s, inv_2s2, kappa, pow_s = _query_terms(p_ptr, offs_i, mi, width, L, sigma0, K, d, F32)
    _store_query_terms(
        _passes.region(ws_ptr, q_off, tl.float32 if F32 else tl.float64),
        rows,
        offs_i,
        mi,
        inside,
        s,
        inv_2s2,
        kappa,
        pow_s,
    )


@triton.jit
def _store_query_terms(q_ptr, rows, offs_i, mask, inside, s, inv_2s2, kappa, pow_s):
    """Stores ``[BR]`` query terms in the layout of :func:`_load_query_terms` (``s = -1``
    outside the plates)."""
    tl.store(q_ptr + offs_i, tl.where(inside, s, -1.0), mask=mask)
    tl.store(q_ptr + rows + offs_i, inv_2s2, mask=mask)
    tl.store(q_ptr + 2 * rows + offs_i, kappa, mask=mask)
    tl.store(q_ptr + 3 * rows + offs_i, pow_s, mask=mask)


@triton.jit
def string_stats_kernel(
    p_ptr,
    ws_ptr,
    rows,
    n,
    width,
    nslices,
    chunk_len,
    nchunks,
    stats_off,
    q_off,
    L: tl.float64,
    sigma0: tl.float64,
    K: tl.float64,
    d: tl.float64,
    BR: tl.constexpr,
    BJ: tl.constexpr,
    F32: tl.constexpr,
    QUERY_STORED: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: the largest log-weight of each row over one chunk of
    ``chunk_len`` pairs into ``stats[row, chunk]`` (float64; float32, evaluated and stored,
    when ``F32``). The rows' ``string_query`` terms: with ``QUERY_STORED`` loaded from ``q``
    (:func:`string_query_kernel` ran first), otherwise computed here and stored into ``q`` for
    the coefficient kernel by the programs of chunk 0. ``partial``, ``stats`` and ``q`` are
    regions of the byte workspace ``ws`` (:class:`ifm_kernels._launch.PlanArgs`)."""
    part_ptr = _passes.region(ws_ptr, 0, p_ptr.dtype.element_ty)
    stats_ptr = _passes.region(ws_ptr, stats_off, tl.float32 if F32 else tl.float64)
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    ch = tl.program_id(1)
    mi = offs_i < rows
    q_ptr = _passes.region(ws_ptr, q_off, tl.float32 if F32 else tl.float64)
    if QUERY_STORED:
        inside, s, inv_2s2, kappa, pow_s = _load_query_terms(q_ptr, rows, offs_i, mi)
    else:
        inside, s, inv_2s2, kappa, pow_s = _query_terms(
            p_ptr, offs_i, mi, width, L, sigma0, K, d, F32
        )
        first = mi & (offs_i * 0 + ch == 0)  # a [BR] mask (ch is a scalar)
        _store_query_terms(q_ptr, rows, offs_i, first, inside, s, inv_2s2, kappa, pow_s)
        inside, s, inv_2s2 = inside[:, None], s[:, None], inv_2s2[:, None]
        kappa, pow_s = kappa[:, None], pow_s[:, None]
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    # one running maximum per (row, lane): reduced across the lanes once, after the loop
    m2 = tl.full([BR, BJ], -fm.INF, tl.float32 if F32 else tl.float64)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < j_end)[None, :]
        r2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, F32)
        logw, cos_a, sr = fm.string_pair(inside, s, inv_2s2, kappa, pow_s, r2)
        m2 = tl.maximum(m2, tl.where(mask, logw, -fm.INF))
    m = tl.max(m2, axis=1)
    tl.store(stats_ptr + offs_i.to(tl.int64) * nchunks + ch, m, mask=mi)


@triton.jit
def string_coeff_kernel(
    p_ptr,
    ws_ptr,
    rows,
    n,
    nslices,
    chunk_len,
    nchunks,
    stats_off,
    q_off,
    list_stride,
    nsq_off,
    c1_off,
    c2_off,
    ez_off,
    list_off,
    cnt_off,
    L: tl.float64,
    log_skip: tl.float64,
    STABLE: tl.constexpr,
    BR: tl.constexpr,
    BJ: tl.constexpr,
    SBJ: tl.constexpr,
    F32: tl.constexpr,
):
    """Grid ``(ceil(b / BR), chunks)``: the coefficients of one block of rows over one chunk of
    pairs, with the row maximum from ``stats`` (all chunks, in order); ``sum_j c1`` of the chunk
    into ``ez[row, chunk]`` (float64) and the chunk's live blocks of SBJ pairs into the row
    block's list (BJ is a multiple of SBJ, ``chunk_len`` of BJ). The queries' terms come from
    ``q`` (the stats kernel); the per-pair terms are evaluated in float64, or in float32 when
    ``F32``. The buffers are regions of the byte workspace ``ws`` at their offsets
    (:class:`ifm_kernels._launch.PlanArgs`)."""
    dt = p_ptr.dtype.element_ty
    part_ptr = _passes.region(ws_ptr, 0, dt)
    nsq_ptr = _passes.region(ws_ptr, nsq_off, dt)
    c1_ptr = _passes.region(ws_ptr, c1_off, dt)
    c2_ptr = _passes.region(ws_ptr, c2_off, dt)
    ct: tl.constexpr = tl.float32 if F32 else tl.float64
    stats_ptr = _passes.region(ws_ptr, stats_off, ct)
    ez_ptr = _passes.region(ws_ptr, ez_off, tl.float64)
    list_ptr = _passes.region(ws_ptr, list_off, tl.int32)
    count_ptr = _passes.region(ws_ptr, cnt_off, tl.int32)
    rb = tl.program_id(0)
    ch = tl.program_id(1)
    offs_i = rb * BR + tl.arange(0, BR)
    mi = offs_i < rows
    inside, s, inv_2s2, kappa, pow_s = _load_query_terms(
        _passes.region(ws_ptr, q_off, ct), rows, offs_i, mi
    )
    srow = offs_i.to(tl.int64) * nchunks
    m = tl.full([BR], -fm.INF, ct)
    for c in range(0, nchunks):
        m = tl.maximum(m, tl.load(stats_ptr + srow + c, mask=mi, other=-fm.INF))
    if STABLE:
        shift = tl.where(m > -fm.INF, m, 0.0)
    else:
        shift = tl.zeros([BR], dtype=ct)
    floor = (m + tl.full([], log_skip, ct))[:, None]
    LL = tl.full([], L * L, ct)

    ez2 = tl.zeros([BR, BJ], dtype=ct)  # per (row, lane), summed over the lanes after the loop
    crow = offs_i.to(tl.int64) * n
    cnt = rb * 0
    j_begin = ch * chunk_len
    j_end = tl.minimum(n, j_begin + chunk_len)
    seg = list_ptr + ch * (chunk_len // SBJ)
    for j0 in range(j_begin, j_end, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mj = offs_j < j_end
        mask = mi[:, None] & mj[None, :]
        r2 = _passes.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, F32)
        logw, cos_a, sr = fm.string_pair(inside, s, inv_2s2, kappa, pow_s, r2)
        nsq = tl.zeros([BJ], dtype=ct)
        for sl in range(0, nslices):
            nsq += tl.load(nsq_ptr + sl * n + offs_j, mask=mj, other=0.0).to(ct)
        nu = 1.0 / tl.sqrt(LL + nsq)
        keep = mask & (logw >= floor) & (logw > -fm.INF)
        w = tl.exp(tl.where(keep, logw - shift[:, None], -fm.INF))
        c1 = w * cos_a * nu[None, :]
        c2 = w * sr
        ez2 += c1
        idx = crow[:, None] + offs_j[None, :]
        c1 = c1.to(dt)
        c2 = c2.to(dt)
        tl.store(c1_ptr + idx, c1, mask=mask)
        tl.store(c2_ptr + idx, c2, mask=mask)
        live = (mask & ((c1 != 0.0) | (c2 != 0.0))).to(tl.int32)
        cnt = _passes.live_blocks(seg, rb, list_stride, j0, live, cnt, BJ // SBJ, SBJ, BR)
    tl.store(ez_ptr + srow + ch, tl.sum(ez2, axis=1).to(tl.float64), mask=mi)
    tl.store(count_ptr + rb * nchunks + ch, cnt)


class _Spec:
    """A string plan's launch constants for its shape (cached with the plan): the shared
    passes' :class:`~ifm_kernels._launch.PlanArgs`, the coefficient buffers' shapes, and the
    integer arguments and constexpr dicts of the stats and coefficient passes."""

    __slots__ = (
        "plan",
        "pa",
        "stats_ints",
        "stats_cx",
        "coeff_ints",
        "coeff_cx",
        "query_grid",
        "query_ints",
        "query_cx",
    )

    def __init__(self, plan, b, B, width, itemsize):
        self.plan = plan
        pa = self.pa = _launch.PlanArgs(plan, b, B, width, 1, width - 1, True, itemsize)
        self.stats_ints = (
            b,
            B,
            width,
            plan.nslices,
            plan.coef_chunk_len,
            plan.coef_chunks,
            pa.stats_off,
            pa.q_off,
        )
        self.stats_cx = dict(
            BR=plan.coef_br, BJ=plan.coef_bj, F32=plan.coef_f32, QUERY_STORED=plan.coef_f32
        )
        # string_query_kernel, launched with the float32 coefficient pass only
        self.query_grid = (triton.cdiv(b, QUERY_ROWS),)
        self.query_ints = (b, width, pa.q_off)
        self.query_cx = dict(BR=QUERY_ROWS, F32=plan.coef_f32)
        self.coeff_ints = (
            b,
            B,
            plan.nslices,
            plan.coef_chunk_len,
            plan.coef_chunks,
            pa.stats_off,
            pa.q_off,
            plan.list_stride,
            pa.nsq_off,
            pa.c1_off,
            pa.c2_off,
            pa.ez_off,
            pa.list_off,
            pa.cnt_off,
        )
        # indexed by STABLE
        self.coeff_cx = tuple(
            dict(STABLE=st, BR=plan.coef_br, BJ=plan.coef_bj, SBJ=plan.sums_bj, F32=plan.coef_f32)
            for st in (False, True)
        )


def string_field(
    points: torch.Tensor,
    quarks: torch.Tensor,
    antiquarks: torch.Tensor,
    *,
    L: float,
    sigma0: float,
    K: float,
    d: float,
    stable: bool,
    normalize: bool,
    norm_scale: float,
    eps: float,
) -> torch.Tensor:
    """String (IFM) field target ``[b, D+1]`` (docs/DESIGN.md, "Triton launchers").

    Inputs: validated, contiguous, float32 or float64, same device (CUDA, or CPU under
    ``TRITON_INTERPRET=1``); ``points [b, D+1]``, ``quarks``/``antiquarks [B, D+1]`` z-first.
    Extra memory, in one workspace (:class:`ifm_kernels._launch.PlanArgs`): ``partial [S, b,
    B]``, ``nsq [S, B]``, ``t [b]`` and the coefficients ``c1, c2 [b, B]`` in the data
    precision, two float64 ``[b, chunks]`` buffers, the live-block lists and the queries' plate
    flags (int32; ``S``, the chunks and the blocks from :func:`ifm_kernels._plan.make_plan`).
    """
    return string_field_op(
        points, quarks, antiquarks, L, sigma0, K, d, stable, normalize, norm_scale, eps
    )


def string_field_op(
    points, quarks, antiquarks, L, sigma0, K, d, stable, normalize, norm_scale, eps
):
    """:func:`string_field` with positional arguments (the op's schema order)."""
    if not points.is_contiguous():
        points = points.contiguous()
    if not quarks.is_contiguous():
        quarks = quarks.contiguous()
    if not antiquarks.is_contiguous():
        antiquarks = antiquarks.contiguous()
    b, width = points.shape
    B = quarks.shape[0]
    out = torch.empty_like(points)
    if b == 0:
        return out
    if B == 0 or width == 1:
        return out.zero_()
    dev, dt = points.device, points.dtype
    plan = _cached_plan(
        b, B, width - 1, width, _launch.device_profile(dev), points.element_size(), string=True
    )
    spec = _launch.per_plan(_Spec, plan, b, B, width, points.element_size())
    pa = spec.pa
    L = float(L)
    params = (L, float(sigma0), float(K), float(d))
    with _launch.launch_guard(dev):
        ws = _launch.workspace(pa.ws_bytes, dev)
        _launch.launch_distance(plan, points, quarks, antiquarks, ws, L, pa)
        if plan.coef_f32:
            _launch.launch(
                string_query_kernel,
                spec.query_grid,
                (points, ws) + spec.query_ints + params,
                spec.query_cx,
                1,
            )
        _launch.launch(
            string_stats_kernel,
            plan.coef_grid,
            (points, ws) + spec.stats_ints + params,
            spec.stats_cx,
            plan.num_warps,
        )
        _launch.launch(
            string_coeff_kernel,
            plan.coef_grid,
            (points, ws) + spec.coeff_ints + (L, fm.log_skip_ratio(dt)),
            spec.coeff_cx[bool(stable)],
            plan.num_warps,
        )
        _launch.launch_pair_sums(plan, points, quarks, antiquarks, ws, out, L, pa)
        if normalize:
            _launch.launch_finalize(
                plan,
                out,
                None,
                out,
                plate_gamma=None,
                normalize=True,
                norm_scale=float(norm_scale),
                eps=float(eps),
                pa=pa,
            )
    return out
