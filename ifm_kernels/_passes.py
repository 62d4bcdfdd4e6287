"""The Triton kernels shared by both fields: pass 1 (partial squared distances), pass 2 (weighted
sums over the live pair blocks) and the finalisation kernel ``finalize_kernel``; plus the
helpers of the coefficient pass (``summed_partials``, ``live_blocks``), whose kernels are per
field (``string_field.py``, ``coulomb_field.py``).

Steps of a field call (docs/DESIGN.md, "Numerics every kernel follows"):

* pass 1, ``distance_kernel``: squared distances of every (query, pair or charge) from direct
  differences, accumulated in the data precision in a ``[BI, BJ, BK]`` register accumulator
  (one running sum per lane, reduced over BK once after the loop), as ``S`` partial sums over
  slices of the columns (``partial[S, b, B]``). The string form also writes the slices'
  partial ``||Delta_j||^2`` (``nsq[S, B]``).
* coefficient pass, per field, two kernels over (block of query rows, chunk of pairs): the first
  adds the ``S`` partials in slice order in float64, evaluates the log-weights in float64
  (``_field_math.py``; both in float32 for float32 data on a GPU with slow float64,
  ``Plan.coef_f32``) and keeps the chunk's row maxima (and sums); the second combines the
  chunks in order, evaluates the coefficients again, zeroes the pairs below ``skip_ratio`` of
  the row's largest and stores the coefficients (``[b, B]``, data precision) and, per block of
  rows of the sums pass, the ordered list of pair blocks with a non-zero coefficient
  (``live_blocks``).
* pass 2, ``pair_sums_kernel``: for each (block of rows, block of columns) the weighted sum over the
  live pair blocks of its rows only, from differences, in the data precision in a
  ``[BI, BJ, BK]`` accumulator reduced over BJ after the loop. A pair block outside the list
  has only zero coefficients for these rows: leaving it out is exact. Each output element is
  written by exactly one program.
* ``finalize_kernel``: per-plate normalisation, ``-E+ + E-``, final normalisation (row norms in
  float64).

No atomics anywhere: every reduction has a fixed order for given launch parameters, so results are
deterministic (bitwise reproducible for the same shapes, device and launch plan).
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import _field_math as fm


@triton.jit
def region(ws_ptr, off, dtype: tl.constexpr):
    """The region of the byte workspace ``ws`` at byte offset ``off`` as a ``dtype`` pointer
    (layout: :class:`ifm_kernels._launch.PlanArgs`)."""
    return (ws_ptr + off).to(tl.pointer_type(dtype), bitcast=True)


@triton.jit
def summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask, F32: tl.constexpr):
    """``sum_s partial[s, i, j]`` in slice order (``[R, J]`` tile), in float64, or in float32
    when ``F32`` (the float32 coefficient pass of float32 data)."""
    idx = offs_i.to(tl.int64)[:, None] * n + offs_j[None, :]
    dt: tl.constexpr = tl.float32 if F32 else tl.float64
    acc = tl.zeros(idx.shape, dtype=dt)
    for s in range(0, nslices):
        acc += tl.load(part_ptr + (s * rows * n + idx), mask=mask, other=0.0).to(dt)
    return acc


# ----------------------------------------------------------------------------------------------
# tiles shared by the two O(b B D) passes
# ----------------------------------------------------------------------------------------------
@triton.jit
def _query_offsets(p_ptr, prow, mi, L, STRING: tl.constexpr):
    """``(from_antiquark, t)`` of a block of queries (string), computed in the data precision
    with correctly rounded divisions (the row vectors live in every thread of the 3-D tile's
    layout: float64 here would cost ~20 float64 instructions per row in every program); all
    False / 0 for the Coulomb form (unused there)."""
    if STRING:
        z = tl.load(p_ptr + prow, mask=mi, other=0.0)
        fa, t = fm.string_offset_params(z, tl.full([], L, p_ptr.dtype.element_ty))
    else:
        fa = prow < 0
        t = tl.zeros(prow.shape, dtype=p_ptr.dtype.element_ty)
    return fa, t


@triton.jit
def _offset_tile(
    x, y0_ptr, y1_ptr, yrow, cols, ymask, fa, t, STRING: tl.constexpr, MASKED: tl.constexpr
):
    """Loads the pair rows ``yrow`` x columns ``cols`` (masked by ``ymask`` when ``MASKED``;
    otherwise every address must be in bounds) and returns ``(delta, r)``: string
    ``delta = C - A`` (``[BJ, BK]``) and ``r = rho = (x - base) - t * delta`` (``[BI, BJ, BK]``);
    Coulomb ``r = x - y`` (``delta`` is ``y``, unused)."""
    yp = yrow[:, None] + cols[None, :]
    if MASKED:
        a = tl.load(y0_ptr + yp, mask=ymask, other=0.0)
    else:
        a = tl.load(y0_ptr + yp)
    if STRING:
        if MASKED:
            cc = tl.load(y1_ptr + yp, mask=ymask, other=0.0)
        else:
            cc = tl.load(y1_ptr + yp)
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
def distance_kernel(
    p_ptr,
    y0_ptr,
    y1_ptr,
    ws_ptr,
    rows,
    n,
    width,
    col0,
    ncols,
    cols_per_slice,
    nsq_off,
    t_off,
    fa_off,
    L: tl.float64,
    STRING: tl.constexpr,
    BI: tl.constexpr,
    BJ: tl.constexpr,
    BK: tl.constexpr,
):
    """Grid ``(tiles_i * tiles_j, S)``: program -> (BI queries, BJ pairs, one column slice).

    String (STRING): ``y0`` = quarks A, ``y1`` = antiquarks C, columns 1..D,
    ``rho = (x - base) - t * (C - A)`` (base/t from the nearer plate); also the slice's partial
    ``sum_k (C - A)^2`` into ``nsq[slice, j]`` (written by the programs of the first query
    tile), and each query's ``t`` (data precision) and from-antiquark flag into ``t[i]``,
    ``fa[i]`` for pass 2 (written by the programs of the first pair tile and slice).
    Coulomb: ``y0`` = the charges, all D + 1 columns, ``x - y``. ``partial[slice, i, j]``
    receives the slice's sum. The buffers are regions of the byte workspace ``ws`` at their
    offsets (:class:`ifm_kernels._launch.PlanArgs`; ``partial`` at 0).
    """
    dt = p_ptr.dtype.element_ty
    part_ptr = region(ws_ptr, 0, dt)
    # query tiles fastest: the programs resident at once share each pair tile (read from HBM
    # once, then from L2) and the query rows stay in L2
    tiles_i = tl.cdiv(rows, BI)
    pid = tl.program_id(0)
    sl = tl.program_id(1)
    ib = pid % tiles_i
    jb = pid // tiles_i
    offs_i = ib * BI + tl.arange(0, BI)
    offs_j = jb * BJ + tl.arange(0, BJ)
    mi = offs_i < rows
    mj = offs_j < n
    # rows past the end read the last row (in bounds, discarded at the store): no row masks
    prow = tl.minimum(offs_i, rows - 1).to(tl.int64) * width
    yrow = tl.minimum(offs_j, n - 1).to(tl.int64) * width
    # one running sum per (query, pair, lane of BK): no cross-lane reduction inside the loop
    acc3 = tl.zeros([BI, BJ, BK], dtype=dt)
    nsq2 = tl.zeros([BJ, BK], dtype=dt)
    fa, t = _query_offsets(p_ptr, prow, mi, L, STRING)
    c_begin = sl * cols_per_slice
    c_end = tl.minimum(ncols, c_begin + cols_per_slice)
    c_full = c_begin + (c_end - c_begin) // BK * BK
    # whole BK steps without masks, then one masked step for the remainder
    for c in range(c_begin, c_full, BK):
        cols = col0 + c + tl.arange(0, BK)
        x = tl.load(p_ptr + prow[:, None] + cols[None, :])
        delta, r = _offset_tile(x, y0_ptr, y1_ptr, yrow, cols, None, fa, t, STRING, False)
        if STRING:
            nsq2 += delta * delta
        acc3 += r * r
    if c_full < c_end:
        ks = c_full + tl.arange(0, BK)
        mk = ks < c_end
        cols = col0 + ks
        x = tl.load(p_ptr + prow[:, None] + cols[None, :], mask=mk[None, :], other=0.0)
        delta, r = _offset_tile(x, y0_ptr, y1_ptr, yrow, cols, mk[None, :], fa, t, STRING, True)
        if STRING:
            nsq2 += delta * delta
        acc3 += r * r
    acc = tl.sum(acc3, axis=2)
    out = part_ptr + (sl * rows + offs_i).to(tl.int64)[:, None] * n + offs_j[None, :]
    tl.store(out, acc, mask=mi[:, None] & mj[None, :])
    if STRING:
        if ib == 0:
            nsq_ptr = region(ws_ptr, nsq_off, dt)
            tl.store(nsq_ptr + sl * n + offs_j, tl.sum(nsq2, axis=1), mask=mj)
        if (jb == 0) & (sl == 0):
            tl.store(region(ws_ptr, t_off, dt) + offs_i, t, mask=mi)
            tl.store(region(ws_ptr, fa_off, tl.int8) + offs_i, fa.to(tl.int8), mask=mi)


# ----------------------------------------------------------------------------------------------
# pass 2: weighted sums over the live pair blocks, from differences
# ----------------------------------------------------------------------------------------------
@triton.jit
def pair_sums_kernel(
    p_ptr,
    y0_ptr,
    y1_ptr,
    ws_ptr,
    out_ptr,
    rows,
    n,
    width,
    col0,
    ncols,
    nchunks,
    seg_len,
    stride,
    c1_off,
    c2_off,
    t_off,
    ez_off,
    list_off,
    cnt_off,
    fa_off,
    L: tl.float64,
    STRING: tl.constexpr,
    BI: tl.constexpr,
    BJ: tl.constexpr,
    BK: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Grid ``(tiles_i, tiles_k)``, the column blocks in slices of at most 65535 along axis 2
    past D ~ 1M (CUDA's limit on axis 1): program -> (BI query rows, BK columns), loop over
    the live blocks of BJ pairs of its rows in pair order: per chunk ``c`` of pairs, the
    block indices ``list[ib, c * seg_len : c * seg_len + count[ib, c]]``.

    String: ``out[i, 1 + k] = sum_j c2_ij rho_ijk + c1_ij Delta_jk`` (``c1 = w cos_a nu_j``,
    ``c2 = w sr``), and ``out[i, 0] = L sum_chunks ez[i, chunk]`` from the programs of the first
    column block; Coulomb: ``out[i, k] = sum_j c1_ij (y_jk - x_ik)``. The buffers are regions of
    the byte workspace ``ws`` at their offsets (:class:`ifm_kernels._launch.PlanArgs`).

    ``WIDE``: ``n width`` is past the int32 range (the pair tile's element offsets in int64).
    """
    dt = p_ptr.dtype.element_ty
    c1_ptr = region(ws_ptr, c1_off, dt)
    c2_ptr = region(ws_ptr, c2_off, dt)
    list_ptr = region(ws_ptr, list_off, tl.int32)
    count_ptr = region(ws_ptr, cnt_off, tl.int32)
    ib = tl.program_id(0)
    kb = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)
    if (kb > 0) & (kb * BK >= ncols):  # past the last column block (the last slice's tail)
        return
    offs_i = ib * BI + tl.arange(0, BI)
    mi = offs_i < rows
    ks = kb * BK + tl.arange(0, BK)
    mk = ks < ncols
    cols = col0 + ks
    prow = offs_i.to(tl.int64) * width
    xmask = mi[:, None] & mk[None, :]
    # columns and pairs past the end read the last one (in bounds): their coefficient is 0
    # (masked load) and their columns are not stored, so the pair tile needs no mask
    lcols = col0 + tl.minimum(ks, ncols - 1)
    x = tl.load(p_ptr + prow[:, None] + lcols[None, :], mask=mi[:, None], other=0.0)
    # float32: the base of rho, A or C by the query's plate, is picked with integer bit
    # operations (exact, on the integer pipe, no predicate register per row; the float32 loop
    # is bound by the FP32 pipe on an A100). float64 keeps a select: its loop is bound by the
    # FP64 pipe, and 64-bit masks cost more outside the loop than they save in it
    BITSEL: tl.constexpr = dt.primitive_bitwidth == 32
    if STRING:
        # the queries' t and plate from pass 1 (computed once per query there); with BITSEL
        # the plate as a bit mask (all ones: from the antiquark)
        t = tl.load(region(ws_ptr, t_off, dt) + offs_i, mask=mi, other=0.0)
        fa = tl.load(region(ws_ptr, fa_off, tl.int8) + offs_i, mask=mi, other=0)
        if BITSEL:
            fam = -(fa.to(tl.int32))
        else:
            fam = fa != 0
    else:
        fam = offs_i < 0
        t = tl.zeros([BI], dtype=p_ptr.dtype.element_ty)
    # one running sum per (query, column, pair lane) in a [BI, BK, BJ] tile: the pairs are the
    # fastest dimension (lanes), so a thread holds several columns of a query and loads each
    # coefficient once for them; reduced over BJ after the loop
    acc3 = tl.zeros([BI, BK, BJ], dtype=p_ptr.dtype.element_ty)
    # rows past the end read the last row's coefficients (in bounds, finite; their sums are not
    # stored), so the coefficient mask is over the pairs only
    crow = tl.minimum(offs_i, rows - 1).to(tl.int64) * n
    for ch in range(0, nchunks):
        count = tl.load(count_ptr + ib * nchunks + ch)
        seg = list_ptr + ib * stride + ch * seg_len
        for q in range(0, count):
            jb = tl.load(seg + q)
            offs_j = jb * BJ + tl.arange(0, BJ)
            cmask = (offs_j < n)[None, :]
            # element offsets of the pair tile: int32 (one multiply-add per element) unless
            # n width is past the int32 range
            jl = tl.minimum(offs_j, n - 1)
            if WIDE:
                jl = jl.to(tl.int64)
            yp = jl[None, :] * width + lcols[:, None]
            c1 = tl.load(c1_ptr + crow[:, None] + offs_j[None, :], mask=cmask, other=0.0)
            a = tl.load(y0_ptr + yp)  # [BK, BJ]
            if STRING:
                c2 = tl.load(c2_ptr + crow[:, None] + offs_j[None, :], mask=cmask, other=0.0)
                cc = tl.load(y1_ptr + yp)
                delta = cc - a
                if BITSEL:
                    # base = C where the mask is all ones, else A: A ^ ((A ^ C) & mask)
                    ai = a.to(tl.int32, bitcast=True)
                    d = ai ^ cc.to(tl.int32, bitcast=True)
                    base = ai[None, :, :] ^ (d[None, :, :] & fam[:, None, None])
                    base = base.to(dt, bitcast=True)
                else:
                    base = tl.where(fam[:, None, None], cc[None, :, :], a[None, :, :])
                r = (x[:, :, None] - base) - t[:, None, None] * delta[None, :, :]
                acc3 += c2[:, None, :] * r
                acc3 += c1[:, None, :] * delta[None, :, :]
            else:
                acc3 -= c1[:, None, :] * (x[:, :, None] - a[None, :, :])  # coeff (y - x)
    acc = tl.sum(acc3, axis=2)
    tl.store(out_ptr + prow[:, None] + cols[None, :], acc, mask=xmask)
    if STRING:
        if kb == 0:
            # E_z = L sum_j c1: the chunks' float64 sums in chunk order, into column 0
            ez = tl.zeros([BI], dtype=tl.float64)
            ez_ptr = region(ws_ptr, ez_off, tl.float64)
            for ch in range(0, nchunks):
                ez += tl.load(ez_ptr + offs_i.to(tl.int64) * nchunks + ch, mask=mi, other=0.0)
            tl.store(out_ptr + prow, (L * ez).to(out_ptr.dtype.element_ty), mask=mi)


@triton.jit
def live_blocks(
    seg_ptr, rb, stride, j0, live, cnt, NSUB: tl.constexpr, SBJ: tl.constexpr, BR: tl.constexpr
):
    """Appends to row block ``rb``'s segment of the list (``seg_ptr + rb * stride``, one segment
    per chunk of pairs) the pair blocks (of SBJ pairs) of the coefficient tile starting at pair
    ``j0`` that have a non-zero coefficient; ``live`` is the tile's ``[BR, NSUB * SBJ]``
    non-zero mask (int32). Returns the new count ``cnt``."""
    sub = tl.max(tl.max(tl.reshape(live, (BR, NSUB, SBJ)), axis=2), axis=0)
    pos = cnt + tl.cumsum(sub, axis=0) - sub
    ids = j0 // SBJ + tl.arange(0, NSUB)
    tl.store(seg_ptr + rb * stride + pos, ids, mask=sub > 0)
    return cnt + tl.sum(sub, axis=0)


# ----------------------------------------------------------------------------------------------
# finalisation: per-plate and final normalisation
# ----------------------------------------------------------------------------------------------
@triton.jit
def _combined(ep_ptr, en_ptr, idx, mask, fp, fn, HAS_NEG: tl.constexpr):
    """``fn * en - fp * ep`` (two plates) or ``fp * ep``, ``[R, W]`` tile in the type of
    ``fp`` (the finalisation's compute type)."""
    ct = fp.dtype
    v = fp[:, None] * tl.load(ep_ptr + idx, mask=mask, other=0.0).to(ct)
    if HAS_NEG:
        v = fn[:, None] * tl.load(en_ptr + idx, mask=mask, other=0.0).to(ct) - v
    return v


@triton.jit
def finalize_kernel(
    ep_ptr,
    en_ptr,
    out_ptr,
    rows,
    width,
    plate_scale: tl.float64,
    plate_gamma: tl.float64,
    norm_scale: tl.float64,
    eps: tl.float64,
    HAS_NEG: tl.constexpr,
    PLATE_NORM: tl.constexpr,
    NORMALIZE: tl.constexpr,
    BR: tl.constexpr,
    BW: tl.constexpr,
    F32: tl.constexpr,
):
    """Grid ``(tiles_r,)``. For each row: ``v = fn * en - fp * ep`` (``HAS_NEG``) or ``fp * ep``
    with ``fp, fn = plate_scale / (||e|| + plate_gamma)`` when ``PLATE_NORM`` (else 1); then
    ``out = norm_scale * v / (||v|| + eps)`` when ``NORMALIZE`` (else ``v``). Norms and the
    combination in float64, or in float32 when ``F32`` (float32 data on GPUs with slow float64:
    a row norm's relative error stays ~1e-6 there); columns in blocks of BW in order. ``ep``
    may alias ``out``."""
    ct: tl.constexpr = tl.float32 if F32 else tl.float64
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    mi = offs_i < rows
    prow = offs_i.to(tl.int64) * width
    fp = tl.full([BR], 1.0, ct)
    fn = tl.full([BR], 1.0, ct)
    if PLATE_NORM:
        sp = tl.zeros([BR], dtype=ct)
        sn = tl.zeros([BR], dtype=ct)
        for c in range(0, width, BW):
            ks = c + tl.arange(0, BW)
            m = mi[:, None] & (ks < width)[None, :]
            idx = prow[:, None] + ks[None, :]
            e = tl.load(ep_ptr + idx, mask=m, other=0.0).to(ct)
            sp += tl.sum(e * e, axis=1)
            if HAS_NEG:
                e = tl.load(en_ptr + idx, mask=m, other=0.0).to(ct)
                sn += tl.sum(e * e, axis=1)
        fp = fm.normalize_factor(sp, tl.full([], plate_scale, ct), tl.full([], plate_gamma, ct))
        fn = fm.normalize_factor(sn, tl.full([], plate_scale, ct), tl.full([], plate_gamma, ct))
    f = tl.full([BR], 1.0, ct)
    if NORMALIZE:
        sv = tl.zeros([BR], dtype=ct)
        for c in range(0, width, BW):
            ks = c + tl.arange(0, BW)
            m = mi[:, None] & (ks < width)[None, :]
            v = _combined(ep_ptr, en_ptr, prow[:, None] + ks[None, :], m, fp, fn, HAS_NEG)
            sv += tl.sum(v * v, axis=1)
        f = fm.normalize_factor(sv, tl.full([], norm_scale, ct), tl.full([], eps, ct))
    for c in range(0, width, BW):
        ks = c + tl.arange(0, BW)
        m = mi[:, None] & (ks < width)[None, :]
        idx = prow[:, None] + ks[None, :]
        v = _combined(ep_ptr, en_ptr, idx, m, fp, fn, HAS_NEG) * f[:, None]
        tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=m)
