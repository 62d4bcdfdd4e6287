"""String (IFM) field in Triton: FIELDS.md §2 and §4, semantics of ``csrc/field_math.h``.

Launches (docs/DESIGN.md, "Numerics every kernel follows"; kernels of passes 1, 3 and 4 are in
``_common.py``):

1. ``distance_kernel`` (string form): partial ``r^2`` and ``||Delta_j||^2`` per column slice.
2. ``string_coeff_kernel``: per block of query rows, in float64: ``r^2`` (slices summed in
   order), ``logw, cos_a, sr`` (``string_pair``), the row maximum ``m``; then
   ``w = exp(logw)`` (default) or ``exp(logw - m)`` (stable), zero below ``skip_ratio`` of the
   row's largest weight, ``c1 = w cos_a nu_j``, ``c2 = w sr`` into ``[b, B]`` buffers and
   ``E_z = L sum_j c1`` straight into column 0 of the output.
3. ``pair_sums_kernel``: ``E_x = sum_j c2 rho + c1 Delta`` from differences.
4. ``finalize_kernel`` (only with ``normalize``): ``norm_scale E / (||E|| + eps)``.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _common as C

# Launch plans depend only on ints and the (hashable, frozen) device profile: computed once per
# shape and device kind.
_plan = functools.lru_cache(maxsize=1024)(C.make_plan)


@triton.jit
def string_coeff_kernel(p_ptr, part_ptr, nsq_ptr, c1_ptr, c2_ptr, out_ptr,
                        rows, n, width, nslices,
                        L: tl.float64, sigma0: tl.float64, K: tl.float64, d: tl.float64,
                        log_skip: tl.float64,
                        STABLE: tl.constexpr, BR: tl.constexpr, BJ: tl.constexpr):
    """Grid ``(ceil(b / BR),)``: the ``[b, B]`` coefficient pass of one block of rows."""
    offs_i = tl.program_id(0) * BR + tl.arange(0, BR)
    mi = offs_i < rows
    prow = offs_i.to(tl.int64) * width
    z = tl.load(p_ptr + prow, mask=mi, other=0.0).to(tl.float64)
    D = (width - 1).to(tl.float64)
    inside, s, inv_2s2, kappa, pow_s = C.string_query(z, L, sigma0, K, d, D)
    inside = inside[:, None]
    s = s[:, None]
    inv_2s2 = inv_2s2[:, None]
    kappa = kappa[:, None]
    pow_s = pow_s[:, None]

    # row maximum of the log-weights
    m = tl.full([BR], -C._INF, tl.float64)
    for j0 in range(0, n, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mask = mi[:, None] & (offs_j < n)[None, :]
        r2 = C.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logw, cos_a, sr = C.string_pair(inside, s, inv_2s2, kappa, pow_s, r2)
        m = tl.maximum(m, tl.max(tl.where(mask, logw, -C._INF), axis=1))
    if STABLE:
        shift = tl.where(m > -C._INF, m, 0.0)
    else:
        shift = tl.zeros([BR], dtype=tl.float64)
    floor = (m + log_skip)[:, None]

    # coefficients
    dt = c1_ptr.dtype.element_ty
    ez = tl.zeros([BR], dtype=tl.float64)
    crow = offs_i.to(tl.int64) * n
    for j0 in range(0, n, BJ):
        offs_j = j0 + tl.arange(0, BJ)
        mj = offs_j < n
        mask = mi[:, None] & mj[None, :]
        r2 = C.summed_partials(part_ptr, nslices, rows, n, offs_i, offs_j, mask)
        logw, cos_a, sr = C.string_pair(inside, s, inv_2s2, kappa, pow_s, r2)
        nsq = tl.zeros([BJ], dtype=tl.float64)
        for sl in range(0, nslices):
            nsq += tl.load(nsq_ptr + sl * n + offs_j, mask=mj, other=0.0).to(tl.float64)
        nu = 1.0 / tl.sqrt(L * L + nsq)
        keep = mask & (logw >= floor) & (logw > -C._INF)
        w = tl.exp(tl.where(keep, logw - shift[:, None], -C._INF))
        c1 = w * cos_a * nu[None, :]
        c2 = w * sr
        ez += tl.sum(c1, axis=1)
        idx = crow[:, None] + offs_j[None, :]
        tl.store(c1_ptr + idx, c1.to(dt), mask=mask)
        tl.store(c2_ptr + idx, c2.to(dt), mask=mask)
    tl.store(out_ptr + prow, (L * ez).to(dt), mask=mi)


def string_field(points: torch.Tensor, quarks: torch.Tensor, antiquarks: torch.Tensor, *,
                 L: float, sigma0: float, K: float, d: float, stable: bool, normalize: bool,
                 norm_scale: float, eps: float) -> torch.Tensor:
    """String (IFM) field target ``[b, D+1]`` (docs/DESIGN.md, "Triton launchers").

    Inputs: validated, contiguous, float32 or float64, same device (CUDA, or CPU under
    ``TRITON_INTERPRET=1``); ``points [b, D+1]``, ``quarks``/``antiquarks [B, D+1]`` z-first.
    Extra memory: ``partial [S, b, B]``, ``nsq [S, B]`` and the coefficients ``c1, c2 [b, B]``
    in the data precision (``S`` from :func:`ifm_kernels._common.make_plan`).
    """
    points, quarks, antiquarks = (t.contiguous() for t in (points, quarks, antiquarks))
    b, width = points.shape
    B = quarks.shape[0]
    D = width - 1
    out = torch.empty_like(points)
    if b == 0:
        return out
    if B == 0 or D == 0:
        return out.zero_()
    plan = _plan(b, B, D, width, C.device_profile(points.device), points.element_size())
    with C.launch_guard(points.device):
        part, nsq = C.launch_distance(plan, points, quarks, antiquarks, b, B, 1, D, L,
                                      string=True)
        c1 = torch.empty((b, B), dtype=points.dtype, device=points.device)
        c2 = torch.empty_like(c1)
        C.launch(string_coeff_kernel, plan.coef_grid,
                 (points, part, nsq, c1, c2, out, b, B, width, plan.nslices, float(L),
                  float(sigma0), float(K), float(d), C.log_skip_ratio(points.dtype)),
                 dict(STABLE=bool(stable), BR=plan.coef_br, BJ=plan.coef_bj), plan.num_warps)
        C.launch_pair_sums(plan, points, quarks, antiquarks, c1, c2, out, b, B, 1, D, L,
                           string=True)
        if normalize:
            C.launch_finalize(plan, out, None, out, plate_gamma=None, normalize=True,
                              norm_scale=norm_scale, eps=eps)
    return out

