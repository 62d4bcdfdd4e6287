"""The runner shared by test_bench_string.py and test_bench_coulomb.py: per (case,
implementation) it times the call with pytest-benchmark and records in ``benchmark.extra_info``
``peak_extra_mb`` (peak RSS of a fresh process during one call minus its RSS after the inputs were
created and the code path was warmed up, see ``_memory.py``), ``max_row_rel_err`` /
``max_row_rel_err_near_plates`` (largest ``||E_i - R_i|| / ||R_i||`` against the float64
reference on the sampler's queries and on queries at 1e-3..0.5 from either plate), and for the
fused kernel ``gflop_needed``, ``gflops`` and ``pct_of_matmul_peak`` (the arithmetic an exact
evaluation needs, PERFORMANCE.md)."""

from __future__ import annotations

import math
import time

import _memory
import baselines
import environment  # noqa: F401  (thread count before torch starts its pools)
import pytest
import torch
from cases import CASES, Case, call_args, make_inputs
from environment import HEAVY, MEMORY, QUICK, THREADS
from machine import cpu_info, matmul_peak_gflops, mem_available_gb

from ifm import reference


def reference64(case: Case, points, inputs):
    """The float64 oracle (chunked reference) on float64 copies of the float32 inputs."""
    p = points.double()
    a = {k: v.double() for k, v in call_args(inputs).items()}
    if case.kind == "string":
        return reference.string_field(p, a["quarks"], a["antiquarks"], **case.params)
    return reference.coulomb_field(p, a["positive"], a.get("negative"), **case.kernel_args())


def max_row_rel_err(out, ref) -> float:
    """``max_i ||out_i - ref_i|| / ||ref_i||`` (0/0 = 0, x/0 = inf; NaN -> inf)."""
    diff = (out.double() - ref).norm(dim=1)
    den = ref.norm(dim=1)
    unbounded = torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff))
    err = torch.where(den > 0, diff / den.clamp_min(1e-300), unbounded)
    err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    return float(err.max())


def needed_gflop(case: Case, inputs) -> float:
    """Arithmetic an exact evaluation needs (PERFORMANCE.md "Arithmetic floor")."""
    p = inputs["points"]
    if case.kind == "string":
        nz = baselines.string_nonzero_pairs(
            p, inputs["quarks"], inputs["antiquarks"], **case.params
        )
        return (5.0 * case.b * case.B * case.D + 6.0 * nz * case.D) / 1e9
    sig = baselines.coulomb_significant_pairs(p, inputs["positive"], inputs.get("negative"))
    return 3.0 * (case.b * case.B * case.plates + sig) * (case.D + 1) / 1e9


def _rounds(t0: float) -> int:
    """Rounds for a function whose single call took ``t0`` seconds (~2 s per benchmark)."""
    return int(min(50, max(3 if t0 > 0.5 else 5, 2.0 / max(t0, 1e-6))))


def heavy_reason(case: Case, impl: str) -> str | None:
    """Reason to skip a call that needs many GB (the authors' PFGM form), or None."""
    if not (impl == "authors-materialising" and case.name == "PFGM" and not QUICK):
        return None
    if not HEAVY:
        return (
            "the authors' PFGM form holds three 6.4 GB [b, B, D+1] tensors; set "
            "IFM_BENCH_HEAVY=1 on a quiet machine with >= 16 GB available"
        )
    if mem_available_gb() < 16:
        return f"only {mem_available_gb():.1f} GB available (< 16 GB) for the authors' PFGM form"
    return None


class Runner:
    def __init__(self):
        self._inputs = {}
        self._refs = {}
        self.peaks = []  # float32 matmul GFLOP/s, measured next to each fused-kernel case
        self.results = []  # one dict per measured (case, implementation)

    def inputs(self, case: Case):
        key = (case.kind, case.name)
        if key not in self._inputs:
            self._inputs.clear()  # keep one case's tensors at a time
            self._inputs[key] = make_inputs(case)
        return self._inputs[key]

    def ref(self, case: Case, which: str):
        key = (case.kind, case.name, which)
        if key not in self._refs:
            inp = self.inputs(case)
            self._refs[key] = reference64(case, inp[which], inp)
        return self._refs[key]

    def run(self, benchmark, kind: str, name: str, impl: str):
        case = CASES[f"{kind}-{name}"]
        benchmark.group = f"{kind} {name}"
        reason = baselines.unavailable(impl) or heavy_reason(case, impl)
        if reason:
            pytest.skip(reason)
        inp = self.inputs(case)
        points = inp["points"]

        def fn():
            return baselines.run_impl(case, impl, points, inp)

        t = time.perf_counter()
        try:
            out = fn()  # warm-up (JIT, thread pool, caches); kept for accuracy
        except Exception as exc:  # noqa: BLE001
            if impl == "keops":
                pytest.skip(f"KeOps failed to compile or run: {exc!r}"[:300])
            raise
        t0 = time.perf_counter() - t
        heavy = case.name == "PFGM" and impl == "authors-materialising"
        rounds = 1 if heavy else _rounds(t0)
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else t0
        best = stats.stats.min if stats is not None else t0

        info = {
            "case": name,
            "kind": kind,
            "impl": impl,
            "rounds": rounds,
            "threads": THREADS,
            "shape": f"D={case.D} b={case.b} B={case.B}",
            "input_mb": case.input_bytes() / 2**20,
            "max_row_rel_err": max_row_rel_err(out, self.ref(case, "points")),
        }
        del out
        if not heavy:
            near = baselines.run_impl(case, impl, inp["near"], inp)
            info["max_row_rel_err_near_plates"] = max_row_rel_err(near, self.ref(case, "near"))
        if impl == "ifm-cpu":
            # the practical peak, measured right after the kernel (same load on a shared machine)
            peak = matmul_peak_gflops()
            self.peaks.append(peak)
            gflop = needed_gflop(case, inp)
            info.update(
                {
                    "gflop_needed": gflop,
                    "gflops": gflop / median,
                    "gflops_best": gflop / best,
                    "matmul_peak_gflops": peak,
                    "theoretical_gflops": cpu_info().get("theoretical_gflops"),
                    "pct_of_matmul_peak": 100.0 * gflop / median / peak,
                    "pct_of_matmul_peak_best": 100.0 * gflop / best / peak,
                }
            )
        if MEMORY:
            info.update(_memory.measure(kind, name, impl))
        benchmark.extra_info.update(info)
        self.results.append(dict(info, median_s=median, min_s=best))


RUNNER = Runner()  # the session's runner (conftest.py's ``bench`` fixture)
