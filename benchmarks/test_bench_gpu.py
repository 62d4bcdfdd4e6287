"""GPU benchmarks: ``backend="triton"`` and ``backend="cuda"`` at the published shapes
(benchmarks/bench_cases.py cases, FIELDS.md tables), timed with CUDA events around each call
(synchronised), each output held to the parity rule (tests/parity.py) against the float64
reference.

Run on a GPU machine (scripts/gpu.sh does)::

    pytest benchmarks/test_bench_gpu.py --benchmark-only

Every test skips, with the reason, when ``torch.cuda.is_available()`` is False (or the backend is
not built / triton is not installed). Per (shape, backend), ``benchmark.extra_info`` holds the
CUDA-event median and minimum in microseconds, the static model's estimate and bound for this
GPU where it models it (``benchmarks/gpu_model.py``: H100 sm_90, A100 sm_80, RTX 4090 sm_89),
and the largest row error against the float64 reference. The backends are called below the
public API (``ifm_kernels.*`` and ``torch.ops.ifm.*`` on validated tensors), so the timing is the
kernels' and not the input checks' (which sync the host).

The static model needs no GPU: ``python benchmarks/gpu_model.py``.
"""

from __future__ import annotations

import math
import os
import statistics
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, os.path.join(ROOT, "python"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
if os.path.join(ROOT, "tests") not in sys.path:  # tests/parity.py (after benchmarks/)
    sys.path.append(os.path.join(ROOT, "tests"))

import cases as bench_cases  # noqa: E402
import runner  # noqa: E402
from parity import assert_parity  # noqa: E402

from ifm import fields, reference  # noqa: E402

ARCH_OF_CAPABILITY = {(9, 0): "sm_90", (8, 0): "sm_80", (8, 9): "sm_89"}


def gpu_cases() -> dict:
    """The published shapes (benchmarks/gpu_model.py: benchmarks/cases.py plus CelebA-128 and
    CMNIST); under IFM_BENCH_QUICK=1 its shrunk cases."""
    if bench_cases.QUICK:
        return dict(bench_cases.CASES)
    import gpu_model

    return gpu_model.published_cases()


CASES = gpu_cases()


def _kernel_args(case) -> dict:
    """Kernel-level arguments of a case (the public -> kernel mapping of ``ifm.fields``)."""
    width = case.D + 1
    if case.kind == "string":
        return dict(case.params, stable=False, **fields.string_kernel_args(width))
    return fields.coulomb_kernel_args(
        width,
        two_plates=case.plates == 2,
        plate_gamma=case.params["plate_gamma"],
        normalize=case.params["normalize"],
    )


def reference_at(case, inputs: dict, dtype) -> torch.Tensor:
    """The reference evaluated on ``dtype`` copies of the (CPU) inputs: float64 is the oracle,
    float32 the stand-in of the parity rule."""
    t = {k: v.to(dtype) for k, v in bench_cases.call_args(inputs).items()}
    p = inputs["points"].to(dtype)
    if case.kind == "string":
        return reference.string_field(p, t["quarks"], t["antiquarks"], **case.params)
    kw = _kernel_args(case)
    return reference.coulomb_field(
        p,
        t["positive"],
        t.get("negative"),
        plate_gamma=kw["plate_gamma"],
        sum_eps=kw["sum_eps"],
        normalize=kw["normalize"],
        norm_scale=kw["norm_scale"],
        eps=kw["eps"],
    )


def _skip_reason(backend: str) -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False (GPU benchmarks need a GPU)"
    if backend == "triton":
        try:
            import ifm_kernels  # noqa: F401
        except ImportError as exc:
            return f"triton backend unavailable: {exc}"
        return None
    from ifm import _ops

    if not _ops.has_kernel("string_field", "CUDA"):
        return "ifm was built without CUDA kernels (rebuild with IFM_FORCE_CUDA=1)"
    return None


def backend_fn(case, backend: str, dev: dict):
    kw = _kernel_args(case)
    if backend == "triton":
        import ifm_kernels

        if case.kind == "string":
            return lambda: ifm_kernels.string_field(
                dev["points"], dev["quarks"], dev["antiquarks"], **kw
            )
        return lambda: ifm_kernels.coulomb_field(
            dev["points"], dev["positive"], dev.get("negative"), **kw
        )
    if case.kind == "string":
        return lambda: torch.ops.ifm.string_field(
            dev["points"],
            dev["quarks"],
            dev["antiquarks"],
            kw["L"],
            kw["sigma0"],
            kw["K"],
            kw["d"],
            kw["stable"],
            kw["normalize"],
            kw["norm_scale"],
            kw["eps"],
        )
    return lambda: torch.ops.ifm.coulomb_field(
        dev["points"],
        dev["positive"],
        dev.get("negative"),
        kw["plate_gamma"],
        kw["sum_eps"],
        kw["normalize"],
        kw["norm_scale"],
        kw["eps"],
    )


def cuda_event_times_us(fn, reps: int = 50, warmup: int = 3) -> list:
    """Per-call times (µs) from CUDA events recorded around each call on the current stream,
    each waited for (synchronised) before the next call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return times


def model_estimate(case, backend: str) -> dict:
    """The static model's estimate for this GPU, or {} where it does not model it."""
    arch = ARCH_OF_CAPABILITY.get(torch.cuda.get_device_capability())
    if arch is None or bench_cases.QUICK:
        return {}
    import gpu_model

    e = gpu_model.estimate(case.kind, f"{case.kind}-{case.name}", backend, torch.float32, arch)
    return {
        "model_arch": arch,
        "model_us": e["us"],
        "model_bound_us": e["bound_us"],
        "model_torch_form_us": e["torch_us"],
    }


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("key", list(CASES))
def test_gpu_field(benchmark, key, backend):
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    case = CASES[key]
    benchmark.group = f"gpu {case.kind} {case.name}"
    inputs = bench_cases.make_inputs(case)
    dev = {k: v.cuda() for k, v in inputs.items()}
    fn = backend_fn(case, backend, dev)
    out = fn()
    torch.cuda.synchronize()
    oracle = reference_at(case, inputs, torch.float64)
    assert_parity(
        out, oracle, reference_at(case, inputs, torch.float32), what=f"gpu {backend} {key}"
    )
    times = cuda_event_times_us(fn)

    def timed():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=20, iterations=1, warmup_rounds=2)
    info = {
        "backend": backend,
        "shape": f"b={case.b} B={case.B} D={case.D}",
        "cuda_event_median_us": statistics.median(times),
        "cuda_event_min_us": min(times),
        "max_row_rel_err": runner.max_row_rel_err(out.cpu(), oracle),
        "device": torch.cuda.get_device_name(),
    }
    info.update(model_estimate(case, backend))
    benchmark.extra_info.update(info)
    assert math.isfinite(info["max_row_rel_err"])
