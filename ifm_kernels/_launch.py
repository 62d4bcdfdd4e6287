"""Host side of the launches shared by both fields: the device's plan profile, the launch guard,
and one launch helper per shared pass (every launch of the package goes through :func:`launch`,
which :func:`ifm_kernels._introspect.record_launches` can intercept)."""

from __future__ import annotations

import math
import threading

import torch

from . import _introspect, _passes
from ._plan import INTERPRETER_PROFILE, Plan, Profile, fast_fp64, gpu_profile

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
            profile = _GPU_PROFILES[index] = gpu_profile(
                props.multi_processor_count, fast_fp64(props.major, props.minor)
            )
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
        rec.launches.append((kernel, grid, args, constexprs, num_warps, maxnreg))
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


# Every region of the workspace starts on a multiple of ALIGN bytes: region pointers stay 64-byte
# aligned and their offsets keep Triton's divisible-by-16 specialisation (one compiled variant
# whatever the shapes).
ALIGN = 64


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class PlanArgs:
    """What the shared passes' launches take from a plan and the shapes, computed once per plan
    (the field modules cache it with their plans): grids, constexpr dicts, the integer (and
    width-derived) arguments, and the layout of the call's workspace.

    Workspace: one byte buffer per call (one allocation instead of one per buffer); each kernel
    takes it as a ``uint8`` pointer and reinterprets its regions (byte offsets, ``*_off``):

    * data precision: ``partial[S, rows, n]`` at 0; string: ``nsq[S, n]``, the queries'
      ``t[rows]``, ``c1[rows, n]``, ``c2[rows, n]``; Coulomb: ``coeff[rows, n]`` at ``c1_off``;
    * float64 (float32 with ``plan.coef_f32``): the coefficient pass's statistics at
      ``stats_off`` (string: the chunks' row maxima ``[rows, chunks]``; Coulomb:
      ``[3, rows, chunks]``); string: the queries' tube terms ``q[4, rows]``; float64: string
      ``ez[rows, chunks]``;
    * int32: the live-block lists ``list[tiles_i, list_stride]`` and their counts
      ``count[tiles_i, chunks]``;
    * int8, string: the queries' from-antiquark flags ``fa[rows]``.

    ``layout`` maps each region's name to ``(byte offset, element type, shape)`` (element type
    None: the data precision); the ``*_off`` offsets come from it, and are 0 for the regions a
    form does not have (never read). :func:`regions` gives named views; the regions never
    overlap (tests/test_triton_kernels.py)."""

    __slots__ = (
        "plan",
        "layout",
        "ws_bytes",
        "nsq_off",
        "t_off",
        "c1_off",
        "c2_off",
        "stats_off",
        "ez_off",
        "list_off",
        "cnt_off",
        "fa_off",
        "q_off",
        "dist_ints",
        "dist_cx",
        "sums_ints",
        "sums_cx",
        "fin_ints",
        "fin_cx",
    )

    def __init__(self, plan: Plan, rows, n, width, col0, ncols, string: bool, itemsize: int):
        rows, n, width, col0, ncols = int(rows), int(n), int(width), int(col0), int(ncols)
        self.plan = plan
        tiles_i, chunks, S = plan.sums_tiles[0], plan.coef_chunks, plan.nslices
        # the regions in workspace order; the string form's own ones only for it
        specs = [("partial", None, (S, rows, n))]
        if string:
            specs += [("nsq", None, (S, n)), ("t", None, (rows,))]
        specs.append(("c1", None, (rows, n)))
        if string:
            specs.append(("c2", None, (rows, n)))
        # float32 with the float32 coefficient pass (Coulomb: nearest d^2, sum, contribution)
        stats_dt = torch.float32 if plan.coef_f32 else torch.float64
        specs.append(("stats", stats_dt, (rows, chunks) if string else (3, rows, chunks)))
        if string:
            specs.append(("ez", torch.float64, (rows, chunks)))
            # the queries' string_query terms (s, or -1 outside the plates; 1 / (2 s^2); kappa;
            # (s / sigma0)^D) in the coefficient pass's precision, from the stats kernel or,
            # with the float32 coefficient pass, string_query_kernel
            specs.append(("q", stats_dt, (4, rows)))
        specs += [
            ("list", torch.int32, (tiles_i, plan.list_stride)),
            ("count", torch.int32, (tiles_i, chunks)),
        ]
        if string:
            specs.append(("fa", torch.int8, (rows,)))
        self.layout, at = {}, 0
        for name, dt, shape in specs:
            self.layout[name] = (at, dt, shape)
            at += _aligned((itemsize if dt is None else dt.itemsize) * math.prod(shape))
        self.ws_bytes = at

        def off(name):
            return self.layout[name][0] if name in self.layout else 0

        self.nsq_off, self.t_off, self.c1_off, self.c2_off = (
            off(k) for k in ("nsq", "t", "c1", "c2")
        )
        self.stats_off, self.ez_off, self.list_off, self.cnt_off, self.fa_off, self.q_off = (
            off(k) for k in ("stats", "ez", "list", "count", "fa", "q")
        )

        self.dist_ints = (
            rows,
            n,
            width,
            col0,
            ncols,
            plan.cols_per_slice,
            self.nsq_off,
            self.t_off,
            self.fa_off,
        )
        self.dist_cx = dict(STRING=string, BI=plan.dist_bi, BJ=plan.dist_bj, BK=plan.dist_bk)
        self.sums_ints = (
            rows,
            n,
            width,
            col0,
            ncols,
            chunks,
            plan.seg_len,
            plan.list_stride,
            self.c1_off,
            self.c2_off,
            self.t_off,
            self.ez_off,
            self.list_off,
            self.cnt_off,
            self.fa_off,
        )
        # the sums pass's pair offsets in int64 only where int32 could overflow
        wide = n * width >= 2**31
        self.sums_cx = dict(
            STRING=string, BI=plan.sums_bi, BJ=plan.sums_bj, BK=plan.sums_bk, WIDE=wide
        )
        self.fin_ints = (rows, width, math.sqrt(width))
        # indexed by 4 HAS_NEG + 2 PLATE_NORM + NORMALIZE
        self.fin_cx = tuple(
            dict(
                HAS_NEG=bool(k & 4),
                PLATE_NORM=bool(k & 2),
                NORMALIZE=bool(k & 1),
                BR=plan.fin_br,
                BW=plan.fin_bw,
                F32=plan.coef_f32,
            )
            for k in range(8)
        )


def workspace(nbytes: int, device):
    """The call's workspace (``uint8``, ``nbytes`` from :class:`PlanArgs`; a two-plate call
    passes the larger plate's: the plates run one after the other in stream order and share
    it)."""
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


def regions(pa: PlanArgs, ws, dtype) -> dict:
    """Named views of the workspace's regions (``pa.layout``; for tests, introspection and the
    Coulomb partial op, which reads the stats), ``dtype`` the data precision. Each entry is
    ``(offset in bytes, view)``."""
    out = {}
    for name, (off, dt, shape) in pa.layout.items():
        dt = dtype if dt is None else dt
        view = ws[off : off + dt.itemsize * math.prod(shape)].view(dt).view(shape)
        out[name] = (off, view)
    return out


def launch_distance(plan: Plan, points, y0, y1, ws, L, pa: PlanArgs):
    """Pass 1 into the workspace ``ws`` (partials; string: also ``nsq``, ``t`` and the queries'
    plate flags) at ``pa``'s offsets; ``y1`` None for the Coulomb form."""
    launch(
        _passes.distance_kernel,
        plan.dist_grid,
        (points, y0, y1 if y1 is not None else y0, ws) + pa.dist_ints + (L,),
        pa.dist_cx,
        plan.num_warps,
    )


def launch_pair_sums(plan: Plan, points, y0, y1, ws, out, L, pa: PlanArgs):
    """Pass 2 into ``out`` (columns ``col0 .. col0 + ncols - 1``; string: also column 0 from the
    chunks' ``ez``) from the coefficients and live-block lists in the workspace; ``L`` a float,
    ``y1`` None for the Coulomb form."""
    launch(
        _passes.pair_sums_kernel,
        plan.sums_grid,
        (points, y0, y1 if y1 is not None else y0, ws, out) + pa.sums_ints + (L,),
        pa.sums_cx,
        plan.num_warps,
        plan.sums_maxnreg,
    )


def launch_finalize(
    plan: Plan, ep, en, out, *, plate_gamma, normalize, norm_scale, eps, pa: PlanArgs
):
    """Finalisation (``finalize_kernel``); a no-op when there is nothing to do. ``plate_gamma``
    (or None), ``norm_scale`` and ``eps`` are floats."""
    plate_norm = plate_gamma is not None
    if en is None and not plate_norm and not normalize:
        if ep is not out:
            out.copy_(ep)
        return
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
