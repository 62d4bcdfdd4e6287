"""Shared Triton pieces of both fields: the per-pair math, the two O(b * B * D) passes, the row
finalisation and the launch plan.

Per-pair math (``string_query``, ``string_pair``, ``coulomb_logit``, ``normalize_factor``) is the
Triton mirror of ``csrc/field_math.h`` (Triton cannot include a C header; this is the one other
copy, tested against the same float64 reference). All of it works in float64, whatever the data
precision (FIELDS.md §7, "Logit precision"): it runs in the cheap ``[b, B]`` coefficient pass.

Both fields are computed in the same steps (docs/DESIGN.md, "Numerics every kernel follows"):

1. ``distance_kernel``: squared distances of every (query, pair or charge) from direct
   differences, accumulated in the data precision, as ``S`` partial sums over slices of the
   columns (``partial[S, b, B]``; ``S`` grows only while the tiles alone cannot fill the GPU). The
   string form also writes the slices' partial ``||Delta_j||^2`` (``nsq[S, B]``).
2. per field (``string_field.py``/``coulomb_field.py``): one program per block of query rows adds
   the ``S`` partials in slice order in float64, evaluates the coefficients in float64, takes the
   row maximum, zeroes the pairs whose weight (string) or contribution ``weight * distance``
   (Coulomb) is below ``skip_ratio`` of the row's largest and stores the coefficients
   (``[b, B]``, data precision).
3. ``pair_sums_kernel``: for each (block of rows, block of columns) the weighted sum over all
   pairs, from differences; a block of pairs whose coefficients are all zero for the block's
   rows is skipped (exact: it adds 0). Each output element is written by exactly one program.
4. ``finalize_kernel``: per-plate normalisation, ``-E+ + E-``, final normalisation (row norms in
   float64).

No atomics anywhere: every reduction has a fixed order for given launch parameters, so results are
deterministic (bitwise reproducible for the same shapes and device).
"""
from __future__ import annotations

import dataclasses
import math
import threading

import torch
import triton
import triton.language as tl

# ----------------------------------------------------------------------------------------------
# constants: the values of csrc/field_math.h (and ifm.reference)
# ----------------------------------------------------------------------------------------------
STRING_TAN_EPS = tl.constexpr(1e-5)   # kappa = K / (tan(K z) + 1e-5) on the left end
STRING_R_EPS = tl.constexpr(1e-11)    # sin(alpha) / (r + 1e-11)
STRING_COS_EPS = tl.constexpr(1e-8)   # (cos(alpha) + 1e-8) * (s / sigma0)^D
STRING_DEN_EPS = tl.constexpr(1e-2)   # ... + 1e-2
COULOMB_D_EPS = tl.constexpr(1e-7)    # (d + 1e-7) in the Coulomb weights
_INF = tl.constexpr(float("inf"))


def skip_ratio(dtype: torch.dtype) -> float:
    """Pairs whose weight is below this fraction of the row's largest weight are skipped
    (``field_math.h: skip_ratio``): 2^-80 for float64 data, 2^-44 for float32."""
    return 2.0 ** -80 if dtype == torch.float64 else 2.0 ** -44


def log_skip_ratio(dtype: torch.dtype) -> float:
    return math.log(skip_ratio(dtype))


# ----------------------------------------------------------------------------------------------
# per-pair math (float64), mirror of csrc/field_math.h
# ----------------------------------------------------------------------------------------------
@triton.jit
def _tan(a):
    return tl.sin(a) / tl.cos(a)


@triton.jit
def string_offset_params(z, L):
    """``(from_antiquark, t)`` of ``field_math.h: string_query``: offsets are taken from the
    nearer plate, ``rho = (x - base) - t * Delta`` with ``base = A, t = z / L`` for ``z <= L/2``
    and ``base = C, t = -(L - z) / L`` otherwise. ``z`` float64."""
    from_anti = z > 0.5 * L
    t = tl.where(from_anti, -(L - z) / L, z / L)
    return from_anti, t


@triton.jit
def string_query(z, L, sigma0, K, d, D):
    """Everything about a query that depends on its z only (``field_math.h: string_query``).

    Returns ``(inside, s, inv_2s2, kappa, pow_s)``: inside ``0 <= z <= L``, tube width ``s``
    (0 outside), ``1 / (2 s^2)`` (0 when s == 0), slope ``kappa`` (``-inf`` at z == L) and
    ``(s / sigma0)^D``. ``z`` is a float64 tensor; the parameters are float64 scalars.
    """
    inside = (z >= 0.0) & (z <= L)
    left = z < d
    right = (z > L - d) & (~left)
    zl = tl.where(left, z, 0.0)
    zr = tl.where(right, L - z, 0.0)
    s_left = sigma0 * tl.sin(K * zl)
    kappa_left = K / (_tan(K * zl) + STRING_TAN_EPS)
    # sigma0 * sin(K (L - z)) == sigma0 * cos(K (z - L + d)) since d = pi / (2K);
    # -K / tan(K (L - z)) is the well-conditioned form of the authors' K * tan(pi - K (z - L + d)).
    s_right = sigma0 * tl.sin(K * zr)
    tr = _tan(K * zr)
    kappa_right = tl.where(tr > 0.0, -K / tl.where(tr > 0.0, tr, 1.0), -_INF)
    s = tl.where(left, s_left, tl.where(right, s_right, sigma0))
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
    inf_t = tl.abs(tan_a) == _INF
    tan_f = tl.where(inf_t, 0.0, tan_a)
    cos_f = 1.0 / tl.sqrt(1.0 + tan_f * tan_f)
    cos_a = tl.where(inf_t, 0.0, cos_f)
    sin_a = tl.where(inf_t, tl.where(tan_a > 0.0, 1.0, -1.0), tan_f * cos_f)
    sr = sin_a / (r + STRING_R_EPS)
    expo = -r2 * inv_2s2  # 0 when s == 0 and r == 0 (the limit)
    den = (cos_a + STRING_COS_EPS) * pow_s + STRING_DEN_EPS
    logw = expo - tl.log(den)
    dead = (~inside) | ((s == 0.0) & (r2 > 0.0))
    logw = tl.where(dead, -_INF, logw)
    cos_a = tl.where(dead, 1.0, cos_a)
    sr = tl.where(dead, 0.0, sr)
    return logw, cos_a, sr


@triton.jit
def coulomb_logit(d2, dim):
    """``log((1 / (d + 1e-7))^DIM)`` (``field_math.h: coulomb_logit``), float64."""
    return -dim * tl.log(tl.sqrt(d2) + COULOMB_D_EPS)


@triton.jit
def normalize_factor(norm2, scale, eps):
    """Row scale of ``scale * E / (||E|| + eps)``; 0 for a zero row, also at eps = 0
    (``field_math.h: normalize_factor``)."""
    return tl.where(norm2 == 0.0, 0.0, scale / (tl.sqrt(norm2) + eps))


@triton.jit
def summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask):
    """``sum_s partial[s, i, j]`` in slice order, in float64 (``[R, J]`` tile)."""
    idx = offs_i.to(tl.int64)[:, None] * n + offs_j[None, :]
    acc = tl.zeros(idx.shape, dtype=tl.float64)
    for s in range(0, nslices):
        acc += tl.load(part_ptr + (s * rows * n + idx), mask=mask, other=0.0).to(tl.float64)
    return acc


# ----------------------------------------------------------------------------------------------
# tiles shared by the two O(b B D) passes
# ----------------------------------------------------------------------------------------------
@triton.jit
def _query_offsets(p_ptr, prow, mi, L, STRING: tl.constexpr):
    """``(from_antiquark, t)`` of a block of queries in the data precision (string); all
    False / 0 for the Coulomb form (unused there)."""
    if STRING:
        z = tl.load(p_ptr + prow, mask=mi, other=0.0).to(tl.float64)
        fa, t64 = string_offset_params(z, L)
        t = t64.to(p_ptr.dtype.element_ty)
    else:
        fa = prow < 0
        t = tl.zeros(prow.shape, dtype=p_ptr.dtype.element_ty)
    return fa, t


@triton.jit
def _offset_tile(x, y0_ptr, y1_ptr, yrow, cols, ymask, fa, t, STRING: tl.constexpr):
    """Loads the pair rows ``yrow`` x columns ``cols`` and returns ``(delta, r)``: string
    ``delta = C - A`` (``[BJ, BK]``) and ``r = rho = (x - base) - t * delta`` (``[BI, BJ, BK]``);
    Coulomb ``r = x - y`` (``delta`` is ``y``, unused)."""
    a = tl.load(y0_ptr + yrow[:, None] + cols[None, :], mask=ymask, other=0.0)
    if STRING:
        cc = tl.load(y1_ptr + yrow[:, None] + cols[None, :], mask=ymask, other=0.0)
        delta = cc - a
        base = tl.where(fa[:, None, None], cc[None, :, :], a[None, :, :])
        r = (x[:, None, :] - base) - t[:, None, None] * delta[None, :, :]
    else:
        delta = a
        r = x[:, None, :] - a[None, :, :]
    return delta, r


# ----------------------------------------------------------------------------------------------
# pass 1: partial squared distances
# ----------------------------------------------------------------------------------------------
@triton.jit
def distance_kernel(p_ptr, y0_ptr, y1_ptr, part_ptr, nsq_ptr,
                    rows, n, width, col0, ncols, cols_per_slice, L: tl.float64,
                    STRING: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
                    BK: tl.constexpr):
    """Grid ``(tiles_i * tiles_j, S)``: program -> (BI queries, BJ pairs, one column slice).

    String (STRING): ``y0`` = quarks A, ``y1`` = antiquarks C, columns 1..D,
    ``rho = (x - base) - t * (C - A)`` (base/t from the nearer plate); also the slice's partial
    ``sum_k (C - A)^2`` into ``nsq[slice, j]`` (written by the programs of the first query
    tile). Coulomb: ``y0`` = the charges, all D + 1 columns, ``x - y``.
    ``partial[slice, i, j]`` receives the slice's sum.
    """
    tiles_j = tl.cdiv(n, BJ)
    pid = tl.program_id(0)
    sl = tl.program_id(1)
    ib = pid // tiles_j
    jb = pid % tiles_j
    offs_i = ib * BI + tl.arange(0, BI)
    offs_j = jb * BJ + tl.arange(0, BJ)
    mi = offs_i < rows
    mj = offs_j < n
    prow = offs_i.to(tl.int64) * width
    yrow = offs_j.to(tl.int64) * width
    dt = p_ptr.dtype.element_ty
    acc = tl.zeros([BI, BJ], dtype=dt)
    nsq = tl.zeros([BJ], dtype=dt)
    fa, t = _query_offsets(p_ptr, prow, mi, L, STRING)
    c_begin = sl * cols_per_slice
    c_end = tl.minimum(ncols, c_begin + cols_per_slice)
    for c in range(c_begin, c_end, BK):
        ks = c + tl.arange(0, BK)
        mk = ks < c_end
        cols = col0 + ks
        x = tl.load(p_ptr + prow[:, None] + cols[None, :], mask=mi[:, None] & mk[None, :],
                    other=0.0)
        delta, r = _offset_tile(x, y0_ptr, y1_ptr, yrow, cols, mj[:, None] & mk[None, :], fa, t,
                                STRING)
        if STRING:
            nsq += tl.sum(delta * delta, axis=1)
        acc += tl.sum(r * r, axis=2)
    out = part_ptr + (sl * rows + offs_i).to(tl.int64)[:, None] * n + offs_j[None, :]
    tl.store(out, acc, mask=mi[:, None] & mj[None, :])
    if STRING:
        if ib == 0:
            tl.store(nsq_ptr + sl * n + offs_j, nsq, mask=mj)


# ----------------------------------------------------------------------------------------------
# pass 2: weighted sums over the pairs, from differences
# ----------------------------------------------------------------------------------------------
@triton.jit
def pair_sums_kernel(p_ptr, y0_ptr, y1_ptr, c1_ptr, c2_ptr, out_ptr,
                     rows, n, width, col0, ncols, L: tl.float64,
                     STRING: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
                     BK: tl.constexpr):
    """Grid ``(tiles_i, tiles_k)``: program -> (BI query rows, BK columns), loop over all pairs
    in blocks of BJ (in pair order).

    String: ``out[i, 1 + k] = sum_j c2_ij rho_ijk + c1_ij Delta_jk`` (``c1 = w cos_a nu_j``,
    ``c2 = w sr``); Coulomb: ``out[i, k] = sum_j c1_ij (y_jk - x_ik)``.
    """
    ib = tl.program_id(0)
    kb = tl.program_id(1)
    offs_i = ib * BI + tl.arange(0, BI)
    mi = offs_i < rows
    ks = kb * BK + tl.arange(0, BK)
    mk = ks < ncols
    cols = col0 + ks
    prow = offs_i.to(tl.int64) * width
    xmask = mi[:, None] & mk[None, :]
    x = tl.load(p_ptr + prow[:, None] + cols[None, :], mask=xmask, other=0.0)
    fa, t = _query_offsets(p_ptr, prow, mi, L, STRING)
    acc = tl.zeros([BI, BK], dtype=p_ptr.dtype.element_ty)
    crow = offs_i.to(tl.int64) * n
    for j0 in range(0, n, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mj = offs_j < n
        cmask = mi[:, None] & mj[None, :]
        c1 = tl.load(c1_ptr + crow[:, None] + offs_j[None, :], mask=cmask, other=0.0)
        live = tl.max(tl.max(tl.abs(c1), axis=1), axis=0)
        if STRING:
            c2 = tl.load(c2_ptr + crow[:, None] + offs_j[None, :], mask=cmask, other=0.0)
            live = live + tl.max(tl.max(tl.abs(c2), axis=1), axis=0)
        if live > 0:
            delta, r = _offset_tile(x, y0_ptr, y1_ptr, offs_j.to(tl.int64) * width, cols,
                                    mj[:, None] & mk[None, :], fa, t, STRING)
            if STRING:
                term = c2[:, :, None] * r + c1[:, :, None] * delta[None, :, :]
            else:
                term = c1[:, :, None] * (-r)  # coeff (y - x)
            acc += tl.sum(term, axis=1)
    tl.store(out_ptr + prow[:, None] + cols[None, :], acc, mask=xmask)


# ----------------------------------------------------------------------------------------------
# pass 3: per-plate and final normalisation
# ----------------------------------------------------------------------------------------------
@triton.jit
def _combined(ep_ptr, en_ptr, idx, mask, fp, fn, HAS_NEG: tl.constexpr):
    """``fn * en - fp * ep`` (two plates) or ``fp * ep``, float64 ``[R, W]`` tile."""
    v = fp[:, None] * tl.load(ep_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    if HAS_NEG:
        v = fn[:, None] * tl.load(en_ptr + idx, mask=mask, other=0.0).to(tl.float64) - v
    return v


@triton.jit
def finalize_kernel(ep_ptr, en_ptr, out_ptr, rows, width, plate_scale: tl.float64,
                    plate_gamma: tl.float64, norm_scale: tl.float64, eps: tl.float64,
                    HAS_NEG: tl.constexpr, PLATE_NORM: tl.constexpr, NORMALIZE: tl.constexpr,
                    BR: tl.constexpr, BW: tl.constexpr):
    """Grid ``(tiles_r,)``. For each row: ``v = fn * en - fp * ep`` (``HAS_NEG``) or ``fp * ep``
    with ``fp, fn = plate_scale / (||e|| + plate_gamma)`` when ``PLATE_NORM`` (else 1); then
    ``out = norm_scale * v / (||v|| + eps)`` when ``NORMALIZE`` (else ``v``). Norms in
    float64, columns in blocks of BW in order. ``ep`` may alias ``out``."""
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    mi = offs_i < rows
    prow = offs_i.to(tl.int64) * width
    fp = tl.full([BR], 1.0, tl.float64)
    fn = tl.full([BR], 1.0, tl.float64)
    if PLATE_NORM:
        sp = tl.zeros([BR], dtype=tl.float64)
        sn = tl.zeros([BR], dtype=tl.float64)
        for c in range(0, width, BW):
            ks = c + tl.arange(0, BW)
            m = mi[:, None] & (ks < width)[None, :]
            idx = prow[:, None] + ks[None, :]
            e = tl.load(ep_ptr + idx, mask=m, other=0.0).to(tl.float64)
            sp += tl.sum(e * e, axis=1)
            if HAS_NEG:
                e = tl.load(en_ptr + idx, mask=m, other=0.0).to(tl.float64)
                sn += tl.sum(e * e, axis=1)
        fp = normalize_factor(sp, plate_scale, plate_gamma)
        fn = normalize_factor(sn, plate_scale, plate_gamma)
    f = tl.full([BR], 1.0, tl.float64)
    if NORMALIZE:
        sv = tl.zeros([BR], dtype=tl.float64)
        for c in range(0, width, BW):
            ks = c + tl.arange(0, BW)
            m = mi[:, None] & (ks < width)[None, :]
            v = _combined(ep_ptr, en_ptr, prow[:, None] + ks[None, :], m, fp, fn, HAS_NEG)
            sv += tl.sum(v * v, axis=1)
        f = normalize_factor(sv, norm_scale, eps)
    for c in range(0, width, BW):
        ks = c + tl.arange(0, BW)
        m = mi[:, None] & (ks < width)[None, :]
        idx = prow[:, None] + ks[None, :]
        v = _combined(ep_ptr, en_ptr, idx, m, fp, fn, HAS_NEG) * f[:, None]
        tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------------------------
# launch plan
# ----------------------------------------------------------------------------------------------
def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


@dataclasses.dataclass(frozen=True)
class Profile:
    """Constants of the block-size rule for one kind of device.

    ``tile_bytes``: bytes of data in the largest 3-D register tile ``[BI, BJ, BK]`` of the two
    O(b B D) passes (elements = ``tile_bytes // itemsize``); ``row_budget``: elements of the 2-D
    float64 tiles of the coefficient and finalisation passes; ``target_programs``: programs
    wanted per launch to fill the device.
    """

    name: str
    tile_bytes: int
    row_budget: int
    dist_bi_max: int
    dist_bj_max: int
    sums_bi_max: int
    sums_bj_max: int
    sums_bk_max: int
    min_steps_per_slice: int
    target_programs: int
    num_warps: int


def gpu_profile(sm_count: int) -> Profile:
    """GPU: 4 warps (128 threads) per program and a 16 KB 3-D tile (4096 float32 elements, 32 per
    thread); target 4 programs per SM. With these caps the float32 kernels compile to <= 128
    registers per thread for sm_90 (4 resident programs per SM by registers; see
    BENCHMARKS.md (GPU roofline section) for the measured numbers)."""
    return Profile("gpu", tile_bytes=16384, row_budget=256, dist_bi_max=16, dist_bj_max=32,
                   sums_bi_max=4, sums_bj_max=256, sums_bk_max=64, min_steps_per_slice=8,
                   target_programs=4 * max(int(sm_count), 1), num_warps=4)


# The interpreter runs programs one after another with numpy: few, large programs are fast.
INTERPRETER_PROFILE = Profile("interpreter", tile_bytes=1 << 19, row_budget=1 << 17,
                              dist_bi_max=64, dist_bj_max=64, sums_bi_max=64,
                              sums_bj_max=1 << 17, sums_bk_max=1 << 14, min_steps_per_slice=1,
                              target_programs=1, num_warps=1)


def device_profile(device: torch.device) -> Profile:
    """The GPU profile of ``device``'s GPU, the interpreter's for CPU tensors (or the profile
    given to :func:`record_launches` while recording)."""
    if _RECORD is not None:
        return _RECORD.profile
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return gpu_profile(props.multi_processor_count)
    return INTERPRETER_PROFILE


@dataclasses.dataclass(frozen=True)
class Plan:
    """Launch parameters of one plate / pair set (see :func:`make_plan`)."""

    # distance pass
    dist_bi: int
    dist_bj: int
    dist_bk: int
    nslices: int
    cols_per_slice: int
    dist_grid: tuple
    # coefficient pass (per field)
    coef_br: int
    coef_bj: int
    coef_grid: tuple
    # weighted sums
    sums_bi: int
    sums_bj: int
    sums_bk: int
    sums_grid: tuple
    # finalisation
    fin_br: int
    fin_bw: int
    fin_grid: tuple
    num_warps: int


def make_plan(rows: int, n: int, ncols: int, width: int, profile: Profile,
              itemsize: int = 4) -> Plan:
    """Block sizes from the shapes (all powers of two):

    ``budget = tile_bytes // itemsize`` elements for the 3-D tiles.

    * distance: ``BI = min(np2(b), dist_bi_max)``, ``BJ = min(np2(B), dist_bj_max)``,
      ``BK = clamp(budget // (BI BJ), 1, np2(ncols))``; column slices
      ``S = clamp(ceil(target_programs / tiles), 1, max(1, steps // min_steps_per_slice))``
      (``steps = ceil(ncols / BK)``): D is split only while the (query, pair) tiles alone give
      fewer programs than the target, so the partial buffer ``[S, b, B]`` holds at most
      ``(target_programs + tiles) BI BJ`` elements, O(b B) for a given device.
    * coefficients: ``BR = clamp(np2(ceil(b / target_programs)), 1, 8)`` on a GPU (one program per
      row up to the target), ``min(np2(b), 64)`` under the interpreter;
      ``BJ = clamp(row_budget // BR, 1, np2(B))``.
    * sums: ``BK = min(np2(ncols), sums_bk_max)``; ``BI = min(np2(b), sums_bi_max)``, halved
      while ``ceil(b / BI) ceil(ncols / BK) < target_programs``;
      ``BJ = clamp(budget // (BI BK), 1, min(np2(B), sums_bj_max))``.
    * finalisation: ``BR`` as for the coefficients, ``BW = clamp(row_budget // BR, 1, np2(width))``.
    """
    p = profile
    cdiv = triton.cdiv
    budget = max(p.tile_bytes // itemsize, 1)
    # distance
    bi = min(next_pow2(rows), p.dist_bi_max)
    bj = min(next_pow2(n), p.dist_bj_max)
    bk = _clamp(budget // (bi * bj), 1, next_pow2(ncols))
    tiles = cdiv(rows, bi) * cdiv(n, bj)
    steps = max(cdiv(ncols, bk), 1)
    s = _clamp(cdiv(p.target_programs, tiles), 1, max(1, steps // p.min_steps_per_slice))
    cols_per_slice = cdiv(steps, s) * bk
    nslices = max(cdiv(ncols, cols_per_slice), 1)
    # coefficients and finalisation
    if p.name == "gpu":
        br = _clamp(next_pow2(cdiv(rows, p.target_programs)), 1, 8)
    else:
        br = min(next_pow2(rows), 64)
    cbj = _clamp(p.row_budget // br, 1, next_pow2(n))
    fbw = _clamp(p.row_budget // br, 1, next_pow2(width))
    # sums
    sbk = min(next_pow2(ncols), p.sums_bk_max)
    sbi = min(next_pow2(rows), p.sums_bi_max)
    while sbi > 1 and cdiv(rows, sbi) * cdiv(ncols, sbk) < p.target_programs:
        sbi //= 2
    sbj = _clamp(budget // (sbi * sbk), 1, min(next_pow2(n), p.sums_bj_max))
    return Plan(dist_bi=bi, dist_bj=bj, dist_bk=bk, nslices=nslices,
                cols_per_slice=cols_per_slice, dist_grid=(tiles, nslices),
                coef_br=br, coef_bj=cbj, coef_grid=(cdiv(rows, br),),
                sums_bi=sbi, sums_bj=sbj, sums_bk=sbk,
                sums_grid=(cdiv(rows, sbi), max(cdiv(ncols, sbk), 1)),
                fin_br=br, fin_bw=fbw, fin_grid=(cdiv(rows, br),), num_warps=p.num_warps)


# ----------------------------------------------------------------------------------------------
# host helpers shared by the two launchers
# ----------------------------------------------------------------------------------------------
# Triton's interpreter (triton 3.9 runtime/interpreter.py) patches triton.language globally and
# keeps the grid index in a global builder for the length of each launch: launches from several
# Python threads at once break each other. Under the interpreter, one field call holds this lock.
_INTERPRETER_LOCK = threading.Lock()


def launch_guard(device: torch.device):
    """Context of one field call: on a GPU, make the tensors' device current (Triton launches on
    the current CUDA device); under the interpreter (CPU tensors), serialise the calls."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return _INTERPRETER_LOCK


@dataclasses.dataclass
class LaunchRecord:
    """One kernel launch as :func:`launch` would issue it."""

    kernel: object
    grid: tuple
    args: tuple
    constexprs: dict
    num_warps: int

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__


@dataclasses.dataclass
class _Recording:
    profile: Profile
    launches: list


_RECORD = None


class record_launches:
    """``with record_launches(profile) as rec:`` -- the launchers plan with ``profile`` and,
    instead of running kernels, append a :class:`LaunchRecord` per launch to ``rec``. Tensors
    may live on the ``meta`` device. For tests and the resource report (not thread-safe)."""

    def __init__(self, profile: Profile):
        self._rec = _Recording(profile, [])

    def __enter__(self):
        global _RECORD
        _RECORD = self._rec
        return self._rec.launches

    def __exit__(self, *exc):
        global _RECORD
        _RECORD = None
        return False


def launch(kernel, grid, args, constexprs, num_warps):
    """Every launch of the package goes through here (or is recorded, see above)."""
    if _RECORD is not None:
        _RECORD.launches.append(LaunchRecord(kernel, tuple(grid), tuple(args), dict(constexprs),
                                             num_warps))
        return
    kernel[tuple(grid)](*args, num_warps=num_warps, enable_fp_fusion=True, **constexprs)


def launch_distance(plan: Plan, points, y0, y1, rows, n, col0, ncols, L, string: bool):
    """Pass 1; returns ``(partial[S, rows, n], nsq[S, n] or None)``."""
    dt, dev = points.dtype, points.device
    part = torch.empty((plan.nslices, rows, n), dtype=dt, device=dev)
    nsq = torch.empty((plan.nslices, n), dtype=dt, device=dev) if string else part
    launch(distance_kernel, plan.dist_grid,
           (points, y0, y1 if y1 is not None else y0, part, nsq,
            rows, n, points.shape[1], col0, ncols, plan.cols_per_slice, float(L)),
           dict(STRING=string, BI=plan.dist_bi, BJ=plan.dist_bj, BK=plan.dist_bk),
           plan.num_warps)
    return part, (nsq if string else None)


def launch_pair_sums(plan: Plan, points, y0, y1, c1, c2, out, rows, n, col0, ncols, L,
                     string: bool):
    """Pass 2 into ``out`` (columns ``col0 .. col0 + ncols - 1``)."""
    launch(pair_sums_kernel, plan.sums_grid,
           (points, y0, y1 if y1 is not None else y0, c1, c2 if c2 is not None else c1, out,
            rows, n, points.shape[1], col0, ncols, float(L)),
           dict(STRING=string, BI=plan.sums_bi, BJ=plan.sums_bj, BK=plan.sums_bk),
           plan.num_warps)


def launch_finalize(plan: Plan, ep, en, out, *, plate_gamma, normalize, norm_scale, eps):
    """Pass 3 (see :func:`finalize_kernel`); a no-op when there is nothing to do."""
    plate_norm = plate_gamma is not None
    if en is None and not plate_norm and not normalize:
        if ep is not out:
            out.copy_(ep)
        return
    rows, width = out.shape
    launch(finalize_kernel, plan.fin_grid,
           (ep, en if en is not None else ep, out, rows, width, math.sqrt(width),
            float(plate_gamma) if plate_norm else 0.0, float(norm_scale), float(eps)),
           dict(HAS_NEG=en is not None, PLATE_NORM=plate_norm, NORMALIZE=bool(normalize),
                BR=plan.fin_br, BW=plan.fin_bw),
           plan.num_warps)


# ----------------------------------------------------------------------------------------------
# resources of a compiled launch (no GPU needed)
# ----------------------------------------------------------------------------------------------
_PTR_TYPES = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16",
              torch.bfloat16: "*bf16"}


def launch_signature(rec: LaunchRecord) -> dict:
    """Triton signature of a recorded launch (what the JIT would derive from its arguments)."""
    sig = {}
    args = iter(rec.args)
    for param in rec.kernel.params:
        if param.is_constexpr:
            sig[param.name] = "constexpr"
            continue
        value = next(args)
        if isinstance(value, torch.Tensor):
            sig[param.name] = _PTR_TYPES[value.dtype]
        elif isinstance(value, bool):
            sig[param.name] = "i1"
        elif isinstance(value, int):
            sig[param.name] = "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
        else:
            sig[param.name] = param.annotation_type or "fp32"
    return sig


def compile_resources(rec: LaunchRecord, arch: int = 90) -> dict:
    """Compile a recorded launch for ``sm_<arch>`` without a GPU (Triton's bundled ptxas) and
    return ``{"registers", "shared_bytes", "spill", "num_warps"}`` (registers per thread from
    ``cuobjdump --dump-resource-usage``; shared memory = the launch's dynamic shared memory).
    Needs a process where ``TRITON_INTERPRET`` is not set."""
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=rec.kernel, signature=launch_signature(rec), constexprs=rec.constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": rec.num_warps, "enable_fp_fusion": True})
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(compiled.asm["cubin"])
        fh.flush()
        text = subprocess.run([tool, "--dump-resource-usage", fh.name], check=True,
                              capture_output=True, text=True).stdout
    regs = int(re.search(r"REG:(\d+)", text).group(1))
    local = int(re.search(r"LOCAL:(\d+)", text).group(1))
    return {"registers": regs, "shared_bytes": int(compiled.metadata.shared),
            "local_bytes": local, "num_warps": rec.num_warps}
