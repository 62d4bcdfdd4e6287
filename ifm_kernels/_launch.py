"""Host side of the launches shared by both fields: the device's plan profile, the launch guard,
and one launch helper per shared pass (every launch of the package goes through :func:`launch`,
which :func:`ifm_kernels._introspect.record_launches` can intercept)."""

from __future__ import annotations

import math
import threading

import torch

from . import _introspect, _passes
from ._plan import INTERPRETER_PROFILE, Plan, Profile, gpu_profile

# Launch constants per (kind, plan): plans come from lru caches, so a plan object lives as long
# as its cache entry; the identity check guards against a reused id() after an eviction.
_PER_PLAN: dict = {}


def per_plan(factory, plan: Plan, *args):
    """``factory(plan, *args)``, built once per plan object (``args`` are derived from the plan's
    own shapes, so they are not part of the key)."""
    key = (factory, id(plan))
    value = _PER_PLAN.get(key)
    if value is None or value.plan is not plan:
        if len(_PER_PLAN) > 2048:
            _PER_PLAN.clear()
        value = _PER_PLAN[key] = factory(plan, *args)
    return value


# GPU profile per CUDA device index (the SM count is fixed for the life of the process).
_GPU_PROFILES: dict = {}


def device_profile(device: torch.device) -> Profile:
    """The GPU profile of ``device``'s GPU, the interpreter's for CPU tensors (or the profile
    given to :func:`~ifm_kernels._introspect.record_launches` while recording)."""
    rec = _introspect.recording()
    if rec is not None:
        return rec.profile
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        profile = _GPU_PROFILES.get(index)
        if profile is None:
            props = torch.cuda.get_device_properties(index)
            profile = _GPU_PROFILES[index] = gpu_profile(props.multi_processor_count)
        return profile
    return INTERPRETER_PROFILE


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


def launch(kernel, grid, args, constexprs, num_warps, maxnreg: int = 0):
    """Every launch of the package goes through here (or is recorded); ``maxnreg`` caps the
    registers per thread (0: the compiler's choice; ignored by the interpreter). ``grid`` and
    ``args`` are tuples; ``constexprs`` may be a plan's shared dict (never modified here)."""
    rec = _introspect._RECORD  # recording(), read without the call
    if rec is not None:
        rec.launches.append(
            _introspect.LaunchRecord(kernel, grid, args, dict(constexprs), num_warps, maxnreg)
        )
        return
    if maxnreg and not _interpreting():
        kernel[grid](
            *args, num_warps=num_warps, enable_fp_fusion=True, maxnreg=maxnreg, **constexprs
        )
    else:
        kernel[grid](*args, num_warps=num_warps, enable_fp_fusion=True, **constexprs)


_INTERPRETING = []


def _interpreting() -> bool:
    """Whether Triton interprets the kernels (``TRITON_INTERPRET=1``, read once: Triton reads it
    when the kernels are defined, at import)."""
    if not _INTERPRETING:
        import os

        _INTERPRETING.append(os.environ.get("TRITON_INTERPRET") == "1")
    return _INTERPRETING[0]


class PlanArgs:
    """What the shared passes' launches take from a plan and the shapes, computed once per plan
    (the field modules cache it with their plans): buffer shapes, grids, constexpr dicts and
    the integer (and width-derived) arguments."""

    __slots__ = (
        "plan",
        "part_shape",
        "nsq_shape",
        "rows_shape",
        "lst_shape",
        "cnt_shape",
        "dist_ints",
        "dist_cx",
        "sums_ints",
        "sums_cx",
        "fin_ints",
        "fin_cx",
    )

    def __init__(self, plan: Plan, rows, n, width, col0, ncols, string: bool):
        rows, n, width, col0, ncols = int(rows), int(n), int(width), int(col0), int(ncols)
        self.plan = plan
        self.part_shape = (plan.nslices, rows, n)
        self.nsq_shape = (plan.nslices, n)
        self.rows_shape = (rows,)
        self.lst_shape = (plan.sums_grid[0], plan.list_stride)
        self.cnt_shape = (plan.sums_grid[0], plan.coef_chunks)
        self.dist_ints = (rows, n, width, col0, ncols, plan.cols_per_slice)
        self.dist_cx = dict(STRING=string, BI=plan.dist_bi, BJ=plan.dist_bj, BK=plan.dist_bk)
        self.sums_ints = (
            rows,
            n,
            width,
            col0,
            ncols,
            plan.coef_chunks,
            plan.seg_len,
            plan.list_stride,
        )
        self.sums_cx = dict(STRING=string, BI=plan.sums_bi, BJ=plan.sums_bj, BK=plan.sums_bk)
        self.fin_ints = (rows, width, math.sqrt(width))
        # indexed by 4 HAS_NEG + 2 PLATE_NORM + NORMALIZE
        self.fin_cx = tuple(
            dict(
                HAS_NEG=bool(k & 4),
                PLATE_NORM=bool(k & 2),
                NORMALIZE=bool(k & 1),
                BR=plan.fin_br,
                BW=plan.fin_bw,
            )
            for k in range(8)
        )


def launch_distance(
    plan: Plan, points, y0, y1, rows, n, col0, ncols, L, string: bool, pa: PlanArgs = None
):
    """Pass 1; returns ``(partial[S, rows, n], nsq[S, n], (t[rows], fa[rows]))`` (the last two
    None for the Coulomb form). ``pa``: the plan's :class:`PlanArgs` (built when not given)."""
    if pa is None:
        pa = PlanArgs(plan, rows, n, points.shape[1], col0, ncols, string)
    dt, dev = points.dtype, points.device
    part = torch.empty(size=pa.part_shape, dtype=dt, device=dev)
    if string:
        nsq = torch.empty(size=pa.nsq_shape, dtype=dt, device=dev)
        tq = torch.empty(size=pa.rows_shape, dtype=dt, device=dev)
        fa = torch.empty(size=pa.rows_shape, dtype=torch.int8, device=dev)
    else:
        nsq, tq, fa = part, part, part
    launch(
        _passes.distance_kernel,
        plan.dist_grid,
        (points, y0, y1 if y1 is not None else y0, part, nsq, tq, fa) + pa.dist_ints + (L,),
        pa.dist_cx,
        plan.num_warps,
    )
    if not string:
        return part, None, None
    return part, nsq, (tq, fa)


def live_lists(plan: Plan, device, pa: PlanArgs = None):
    """``(list[tiles_i, chunks * seg_len], count[tiles_i, chunks])`` int32 buffers of the live
    pair blocks per block of rows of the sums pass, one segment per chunk of the coefficient
    pass (written by it)."""
    if pa is None:
        lst_shape = (plan.sums_grid[0], plan.list_stride)
        cnt_shape = (plan.sums_grid[0], plan.coef_chunks)
    else:
        lst_shape, cnt_shape = pa.lst_shape, pa.cnt_shape
    lst = torch.empty(size=lst_shape, dtype=torch.int32, device=device)
    cnt = torch.empty(size=cnt_shape, dtype=torch.int32, device=device)
    return lst, cnt


def launch_pair_sums(
    plan: Plan,
    points,
    y0,
    y1,
    c1,
    c2,
    lists,
    out,
    rows,
    n,
    col0,
    ncols,
    L,
    string: bool,
    ez=None,
    queries=None,
    pa: PlanArgs = None,
):
    """Pass 2 into ``out`` (columns ``col0 .. col0 + ncols - 1``; string: also column 0 from the
    chunks' ``ez``, with the queries' ``(t, fa)`` from pass 1) over the live blocks
    ``lists = (list, count)``; ``L`` a float."""
    if pa is None:
        pa = PlanArgs(plan, rows, n, points.shape[1], col0, ncols, string)
    tq, fa = queries if queries is not None else (c1, c1)
    launch(
        _passes.pair_sums_kernel,
        plan.sums_grid,
        (
            points,
            y0,
            y1 if y1 is not None else y0,
            c1,
            c2 if c2 is not None else c1,
            ez if ez is not None else c1,
            tq,
            fa,
            lists[0],
            lists[1],
            out,
        )
        + pa.sums_ints
        + (L,),
        pa.sums_cx,
        plan.num_warps,
        plan.sums_maxnreg,
    )


def launch_finalize(
    plan: Plan, ep, en, out, *, plate_gamma, normalize, norm_scale, eps, pa: PlanArgs = None
):
    """Finalisation (``finalize_kernel``); a no-op when there is nothing to do. ``plate_gamma``
    (or None), ``norm_scale`` and ``eps`` are floats."""
    plate_norm = plate_gamma is not None
    if en is None and not plate_norm and not normalize:
        if ep is not out:
            out.copy_(ep)
        return
    if pa is None:
        rows, width = out.shape
        pa = PlanArgs(plan, rows, 0, width, 0, 0, False)
    has_neg = en is not None
    launch(
        _passes.finalize_kernel,
        plan.fin_grid,
        (ep, en if has_neg else ep, out)
        + pa.fin_ints
        + (plate_gamma if plate_norm else 0.0, norm_scale, eps),
        pa.fin_cx[4 * has_neg + 2 * plate_norm + bool(normalize)],
        plan.num_warps,
    )
