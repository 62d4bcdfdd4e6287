"""Host side of the launches shared by both fields: the device's plan profile, the launch guard,
and one launch helper per shared pass (every launch of the package goes through :func:`launch`,
which :func:`ifm_kernels._introspect.record_launches` can intercept)."""

from __future__ import annotations

import math
import threading

import torch

from . import _introspect, _passes
from ._plan import INTERPRETER_PROFILE, Plan, Profile, gpu_profile


def device_profile(device: torch.device) -> Profile:
    """The GPU profile of ``device``'s GPU, the interpreter's for CPU tensors (or the profile
    given to :func:`~ifm_kernels._introspect.record_launches` while recording)."""
    rec = _introspect.recording()
    if rec is not None:
        return rec.profile
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return gpu_profile(props.multi_processor_count)
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
    registers per thread (0: the compiler's choice; ignored by the interpreter)."""
    rec = _introspect.recording()
    if rec is not None:
        rec.launches.append(
            _introspect.LaunchRecord(
                kernel, tuple(grid), tuple(args), dict(constexprs), num_warps, maxnreg
            )
        )
        return
    extra = {"maxnreg": maxnreg} if maxnreg and not _interpreting() else {}
    kernel[tuple(grid)](*args, num_warps=num_warps, enable_fp_fusion=True, **extra, **constexprs)


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def launch_distance(plan: Plan, points, y0, y1, rows, n, col0, ncols, L, string: bool):
    """Pass 1; returns ``(partial[S, rows, n], nsq[S, n], (t[rows], fa[rows]))`` (the last two
    None for the Coulomb form)."""
    dt, dev = points.dtype, points.device
    part = torch.empty((plan.nslices, rows, n), dtype=dt, device=dev)
    if string:
        nsq = torch.empty((plan.nslices, n), dtype=dt, device=dev)
        tq = torch.empty((rows,), dtype=dt, device=dev)
        fa = torch.empty((rows,), dtype=torch.int8, device=dev)
    else:
        nsq, tq, fa = part, part, part
    launch(
        _passes.distance_kernel,
        plan.dist_grid,
        (
            points,
            y0,
            y1 if y1 is not None else y0,
            part,
            nsq,
            tq,
            fa,
            rows,
            n,
            points.shape[1],
            col0,
            ncols,
            plan.cols_per_slice,
            float(L),
        ),
        dict(STRING=string, BI=plan.dist_bi, BJ=plan.dist_bj, BK=plan.dist_bk),
        plan.num_warps,
    )
    if not string:
        return part, None, None
    return part, nsq, (tq, fa)


def live_lists(plan: Plan, device):
    """``(list[tiles_i, chunks * seg_len], count[tiles_i, chunks])`` int32 buffers of the live
    pair blocks per block of rows of the sums pass, one segment per chunk of the coefficient
    pass (written by it)."""
    lst = torch.empty((plan.sums_grid[0], plan.list_stride), dtype=torch.int32, device=device)
    cnt = torch.empty((plan.sums_grid[0], plan.coef_chunks), dtype=torch.int32, device=device)
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
):
    """Pass 2 into ``out`` (columns ``col0 .. col0 + ncols - 1``; string: also column 0 from the
    chunks' ``ez``, with the queries' ``(t, fa)`` from pass 1) over the live blocks
    ``lists = (list, count)``."""
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
            rows,
            n,
            points.shape[1],
            col0,
            ncols,
            plan.coef_chunks,
            plan.seg_len,
            plan.list_stride,
            float(L),
        ),
        dict(STRING=string, BI=plan.sums_bi, BJ=plan.sums_bj, BK=plan.sums_bk),
        plan.num_warps,
        plan.sums_maxnreg,
    )


def launch_finalize(plan: Plan, ep, en, out, *, plate_gamma, normalize, norm_scale, eps):
    """Finalisation (``finalize_kernel``); a no-op when there is nothing to do."""
    plate_norm = plate_gamma is not None
    if en is None and not plate_norm and not normalize:
        if ep is not out:
            out.copy_(ep)
        return
    rows, width = out.shape
    launch(
        _passes.finalize_kernel,
        plan.fin_grid,
        (
            ep,
            en if en is not None else ep,
            out,
            rows,
            width,
            math.sqrt(width),
            float(plate_gamma) if plate_norm else 0.0,
            float(norm_scale),
            float(eps),
        ),
        dict(
            HAS_NEG=en is not None,
            PLATE_NORM=plate_norm,
            NORMALIZE=bool(normalize),
            BR=plan.fin_br,
            BW=plan.fin_bw,
        ),
        plan.num_warps,
    )
