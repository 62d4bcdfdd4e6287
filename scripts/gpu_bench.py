"""GPU benchmarks of scripts/gpu.sh: the published shapes, per backend, beside the best PyTorch
form on the same GPU and the static model's estimate.

Per shape of ``benchmarks/test_bench_gpu.py`` (``SHAPES``, float32): the CUDA and Triton
backends (called below the public API, as that file does), timed with CUDA events around each
call (``cuda_event_times_us``), and the PyTorch forms of ``benchmarks/baselines.py`` (string:
the GEMM form in float32 and float64; Coulomb: cdist + softmax + matmul); the fastest
of those with a row error <= 1e-3 is "best PyTorch". Each result's largest row error against
the float64 reference is recorded.
When ``benchmarks/gpu_model.py`` exists, its ``estimate(field, case_name, backend, dtype, arch)``
gives the model's time (``us``) beside the measured one.

``--dry-run`` (no GPU needed): the shapes, their FLOP counts and the model's estimates only.
Writes everything to ``--json``. Needs no pytest-benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402

REPS, WARMUP = 20, 3
ACCURATE = 1e-3  # largest row error of a PyTorch form counted as "best"


def model_estimate(model, shape, backend, arch):
    """``(us, note)`` from benchmarks/gpu_model.py's ``estimate``; ``(None, why)`` without."""
    if model is None:
        return None, "no benchmarks/gpu_model.py"
    try:
        est = model.estimate(shape.kind, shape.name, backend, dtype=torch.float32, arch=arch)
        us = est["us"] if isinstance(est, dict) else float(est)
        return float(us), None
    except Exception as exc:  # the model is optional: report why it gave nothing
        return None, f"{type(exc).__name__}: {exc}"


def baselines(case, inputs):
    """name -> callable of the PyTorch forms for ``case`` (benchmarks/cases.py)."""
    import baselines as bl

    if case.kind == "string":
        p, q, a = inputs["points"], inputs["quarks"], inputs["antiquarks"]
        kw = dict(case.params)
        return {
            "gemm-fp32": lambda: bl.string_gemm(p, q, a, **kw),
            "gemm-fp64": lambda: bl.string_gemm(p, q, a, **kw, dtype=torch.float64),
        }
    kw = case.kernel_args()
    p, pos, neg = inputs["points"], inputs["positive"], inputs.get("negative")
    return {"cdist-softmax-matmul": lambda: bl.coulomb_cdist(p, pos, neg, **kw)}


def measure(fn, ref):
    out = fn()
    torch.cuda.synchronize()
    import runner
    import test_bench_gpu as g

    err = None if ref is None else runner.max_row_rel_err(out.cpu(), ref)
    del out
    times = g.cuda_event_times_us(fn, reps=REPS, warmup=WARMUP)
    return dict(median_us=statistics.median(times), min_us=min(times), max_row_rel_err=err)


def measure_shape(g, key, shape, row, failures):
    """Time both backends and the PyTorch forms at one shape into ``row``."""
    import cases as bench_cases

    host = bench_cases.make_inputs(shape)
    inputs = {k: v.cuda() for k, v in host.items()}
    try:
        ref = g.reference_at(shape, host, torch.float64)
    except Exception as exc:  # e.g. out of memory: time the calls without the error
        ref, row["reference_error"] = None, f"{type(exc).__name__}: {exc}"
    for backend in ("cuda", "triton"):
        reason = g._skip_reason(backend)
        if reason:
            row["backends"][backend] = dict(skipped=reason)
            continue
        try:
            row["backends"][backend] = measure(g.backend_fn(shape, backend, inputs), ref)
        except Exception as exc:
            row["backends"][backend] = dict(error=f"{type(exc).__name__}: {exc}")
            failures.append(f"{key} {backend}: {exc}")
    for name, fn in baselines(shape, inputs).items():
        try:
            row["baselines"][name] = measure(fn, ref)
        except Exception as exc:  # e.g. out of memory for a form that materialises
            row["baselines"][name] = dict(error=f"{type(exc).__name__}: {exc}")
    timed = {k: v["median_us"] for k, v in row["baselines"].items() if "median_us" in v}
    # best: the fastest form accurate to ACCURATE (the float32 GEMM form cancels near the
    # plates), the fastest of all when none is
    accurate = {
        k: t
        for k, t in timed.items()
        if (row["baselines"][k]["max_row_rel_err"] or 0.0) <= ACCURATE
    }
    if timed:
        pool = accurate or timed
        best = min(pool, key=pool.get)
        row["best_pytorch"] = dict(
            name=best,
            median_us=timed[best],
            max_row_rel_err=row["baselines"][best]["max_row_rel_err"],
        )
        for r in row["backends"].values():
            if "median_us" in r:
                r["speedup_vs_best_pytorch"] = timed[best] / r["median_us"]
    del inputs, host, ref
    torch.cuda.empty_cache()
    print(
        f"gpu_bench: {key}: "
        + ", ".join(
            f"{k} {v.get('median_us', float('nan')):.1f} us"
            for k, v in {**row["backends"], **row["baselines"]}.items()
        ),
        flush=True,
    )


def write(path, device, arch, gpu, model, t0, rows, failures):
    """The JSON of every shape so far (written after each shape: a killed run keeps them)."""
    result = dict(
        device=device,
        arch=arch,
        reps=REPS,
        warmup=WARMUP,
        dtype="float32",
        measured=gpu,
        model=None if model is None else "benchmarks/gpu_model.py",
        seconds=round(time.monotonic() - t0, 1),
        shapes=rows,
        torch=torch.__version__,
        failures=failures,
    )
    with open(f"{path}.tmp", "w") as f:
        json.dump(
            result,
            f,
            indent=1,
            default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o),
        )
    os.replace(f"{path}.tmp", path)  # a run killed while writing keeps the previous file


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: shapes and model only")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=210.0,
        help="stop measuring new shapes after this many seconds",
    )
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    import test_bench_gpu as g

    try:
        import gpu_model as model
    except ImportError:
        model = None
    gpu = torch.cuda.is_available() and not a.dry_run
    arch = "sm_90"
    device = None
    if gpu:
        cap = torch.cuda.get_device_capability(0)
        arch = f"sm_{cap[0]}{cap[1]}"
        device = torch.cuda.get_device_name(0)
    rows, failures = [], []
    for key, shape in g.CASES.items():
        row = dict(
            kind=shape.kind,
            name=shape.name,
            b=shape.b,
            B=shape.B,
            D=shape.D,
            plates=shape.plates,
            useful_gflop=None if model is None else model.useful_flop(shape) / 1e9,
            backends={},
            baselines={},
            model_us={},
            model_note={},
        )
        for backend in ("cuda", "triton"):
            us, note = model_estimate(model, shape, backend, arch)
            row["model_us"][backend] = us
            if note:
                row["model_note"][backend] = note
        rows.append(row)
        if not gpu:
            continue
        if time.monotonic() - t0 > a.budget_s:
            row["skipped"] = f"time budget of {a.budget_s:.0f} s spent"
            continue
        try:
            measure_shape(g, key, shape, row, failures)
        except Exception as exc:  # e.g. a sticky CUDA error: keep what was measured
            row["error"] = f"{type(exc).__name__}: {exc}"
            failures.append(f"{key}: {exc}")
        write(a.json, device, arch, gpu, model, t0, rows, failures)
    write(a.json, device, arch, gpu, model, t0, rows, failures)
    print(f"gpu_bench: {'measured' if gpu else 'dry run'}: {len(rows)} shapes -> {a.json}")
    for f in failures:
        print(f"gpu_bench: FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
