"""GPU benchmarks (issue 4): ``backend="triton"`` and ``backend="cuda"`` at the published shapes
(FIELDS.md tables), timed with CUDA events around each call (synchronised), plus the roofline of
BENCHMARKS.md (GPU roofline section).

Run on a GPU machine (scripts/gpu.sh does)::

    pytest benchmarks/test_bench_gpu.py --benchmark-only

Every test skips, with the reason, when ``torch.cuda.is_available()`` is False (or the backend is
not built / triton is not installed). Per (shape, backend), ``benchmark.extra_info`` holds the
CUDA-event median and minimum in microseconds, the kernel launches per call, the GFLOP the
exact evaluation needs (FLOP model below), the achieved GFLOP/s, the H100 roofline bound and the
largest row error against the float64 reference. The backends are called below the public API
(``ifm_kernels.*`` and ``torch.ops.ifm.*`` on validated tensors), so the timing is the kernels'
and not the input checks' (which sync the host).

Roofline tables without a GPU (offline compile with Triton's bundled ptxas for the register and
shared-memory numbers)::

    python benchmarks/test_bench_gpu.py --roofline      # Markdown for BENCHMARKS.md (GPU roofline section)
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
from typing import Optional

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, os.path.join(ROOT, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

H100_FP32_FLOPS = 67e12     # FP32 on CUDA cores, H100 SXM
H100_HBM_BYTES = 3.35e12    # HBM3 bandwidth, H100 SXM
H100_SMS = 132
LAUNCH_US = 3.0             # back-to-back launch cost assumed for the floor (PERFORMANCE.md: 3-5)
EPS_Z = 1e-3


# ----------------------------------------------------------------------------------------------
# published shapes
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str          # "string" or "coulomb"
    name: str
    D: int
    b: int
    B: int             # pairs (string) or charges per plate (Coulomb)
    plates: int = 2    # Coulomb: 1 (PFGM) or 2 (EFM)
    L: float = 20.0
    sigma0: float = 1.0
    K: float = math.pi / 20
    plate_gamma: Optional[float] = None
    pfgm: bool = False

    @property
    def d(self):
        return math.pi / (2 * self.K)

    @property
    def label(self):
        return f"{self.kind} {self.name}"


SHAPES = [
    Shape("string", "toy", 2, 1024, 4096, L=6.0, sigma0=1.0, K=10.0),
    Shape("string", "CIFAR", 3072, 64, 256),
    Shape("string", "W2S", 12288, 64, 256, sigma0=10.0),
    Shape("string", "CelebA-64", 12288, 64, 64),
    Shape("string", "CelebA-128", 49152, 64, 64),
    Shape("string", "CMNIST", 3072, 128, 128, L=40.0, sigma0=10.0, K=5.0),
    Shape("coulomb", "EFM-CIFAR", 3072, 64, 1024, plates=2, L=100.0, plate_gamma=5.0),
    Shape("coulomb", "PFGM", 3072, 128, 4096, plates=1, L=40.0, pfgm=True),
    Shape("coulomb", "toy", 2, 1024, 4096, plates=2, L=6.0, plate_gamma=1e-7),
]


# ----------------------------------------------------------------------------------------------
# FLOP and byte model of the kernels (see BENCHMARKS.md (GPU roofline section))
# ----------------------------------------------------------------------------------------------
def work(shape: Shape, itemsize: int = 4) -> dict:
    """FLOPs and HBM bytes of one call.

    * pass 1 (distances): string 5 flop per (query, pair, column): ``x - base``, FMA
      ``- t * Delta``, FMA ``r * r + acc`` (``Delta = C - A`` is shared by the tile's queries);
      Coulomb 3 per (query, charge, column) over D + 1 columns: subtract, FMA.
    * pass 2 (sums): string 8 per live (query, pair, column) (``Delta``, ``x - base``,
      FMA ``t Delta``, two FMAs for ``c2 rho + c1 Delta``); Coulomb 3 (``y - x``, FMA). Given
      as the dense upper bound (every pair live) and the sparse case (one live pair block per
      query block, the published sigma0 = 1 string runs and nearest-charge dominated softmax).
    * bytes: inputs read once, output written once, plus the O(b B) buffers (partials written
      and read, coefficients written and read); the re-reads of the pair tiles by every query
      tile are assumed to hit L2 (50 MB on H100).
    """
    b, B, D = shape.b, shape.B, shape.D
    if shape.kind == "string":
        ncols, plates, per1, per2 = D, 1, 5, 8
        rows_in = b + 2 * B
    else:
        ncols, plates, per1, per2 = D + 1, shape.plates, 3, 3
        rows_in = b + shape.plates * B
    f1 = per1 * b * B * ncols * plates
    f2_dense = per2 * b * B * ncols * plates
    bytes_io = (rows_in + b) * (D + 1) * itemsize
    return {"pass1_flop": f1, "pass2_flop_dense": f2_dense, "bytes_io": bytes_io,
            "ncols": ncols, "plates": plates, "per2": per2}


# ----------------------------------------------------------------------------------------------
# launch records and compiled resources (no GPU needed)
# ----------------------------------------------------------------------------------------------
def _call_launcher(shape: Shape, tensors: dict):
    import ifm_kernels

    if shape.kind == "string":
        return ifm_kernels.string_field(
            tensors["points"], tensors["quarks"], tensors["antiquarks"], L=shape.L,
            sigma0=shape.sigma0, K=shape.K, d=shape.d, stable=False, normalize=False,
            norm_scale=math.sqrt(shape.D + 1), eps=1e-5)
    return ifm_kernels.coulomb_field(tensors["points"], tensors["positive"],
                                     tensors.get("negative"), **_coulomb_kwargs(shape))


def _coulomb_kwargs(shape: Shape) -> dict:
    if shape.pfgm:
        return dict(plate_gamma=None, sum_eps=1e-7, normalize=True,
                    norm_scale=math.sqrt(shape.D), eps=5.0)
    return dict(plate_gamma=shape.plate_gamma, sum_eps=0.0, normalize=False,
                norm_scale=math.sqrt(shape.D + 1), eps=1e-5)


def _shaped(shape: Shape, device, dtype=torch.float32) -> dict:
    def t(n):
        return torch.empty(n, shape.D + 1, dtype=dtype, device=device)

    if shape.kind == "string":
        return {"points": t(shape.b), "quarks": t(shape.B), "antiquarks": t(shape.B)}
    out = {"points": t(shape.b), "positive": t(shape.B)}
    if shape.plates == 2:
        out["negative"] = t(shape.B)
    return out


def recorded_launches(shape: Shape, sm_count: int = H100_SMS):
    """The launches one float32 call makes on a GPU with ``sm_count`` SMs."""
    from ifm_kernels import _common as C

    with C.record_launches(C.gpu_profile(sm_count)) as rec:
        _call_launcher(shape, _shaped(shape, "meta"))
    return rec


def buffer_bytes(shape: Shape, rec, itemsize: int = 4) -> int:
    """Traffic of the O(b B) buffers of one call: partial distances ``[S, b, B]`` written once
    and read twice (the coefficient pass's two sweeps), coefficients (string: c1 and c2;
    Coulomb: one per plate) written once and read by each column block of the sums pass."""
    total = 0
    dists = [r for r in rec if r.name == "distance_kernel"]
    sums = [r for r in rec if r.name == "pair_sums_kernel"]
    ncoef = 2 if shape.kind == "string" else 1
    for dist, sm in zip(dists, sums):
        slices = dist.grid[1]
        col_blocks = sm.grid[1]
        total += 3 * slices * shape.b * shape.B * itemsize
        total += ncoef * shape.b * shape.B * itemsize * (1 + col_blocks)
    return total


def _tile(rec) -> str:
    c = rec.constexprs
    if "BK" in c:
        return f"{c['BI']}×{c['BJ']}×{c['BK']}"
    if "BW" in c:
        return f"{c['BR']}×{c['BW']}"
    return f"{c['BR']}×{c['BJ']}"


def _resident(regs: int, shared: int, warps: int) -> int:
    """Programs per SM allowed by registers (64K per SM, allocated per warp in units of 256)
    and shared memory (228 KB per SM, 1 KB reserved per block), at most 32 per SM."""
    per_warp = ((regs * 32 + 255) // 256) * 256
    by_regs = 65536 // max(per_warp * warps, 1)
    by_shared = (228 * 1024) // (shared + 1024)
    return max(0, min(by_regs, by_shared, 32))


def roofline_markdown(arch: int = 90) -> str:
    from ifm_kernels import _common as C

    lines = ["| shape | b | B | D | launches | pass 1 GFLOP | pass 2 GFLOP (sparse – dense) | "
             "in + out MB | [b,B] buffers MB | compute bound µs (sparse – dense) | "
             "memory bound µs (in+out – all via HBM) | launch floor µs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    res_lines = ["| shape | kernel | grid (programs) | tile | warps | registers/thread | "
                 "shared B | programs/SM |", "|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES:
        rec = recorded_launches(shape)
        w = work(shape)
        sums = [r for r in rec if r.name == "pair_sums_kernel"][0].constexprs
        # sparse pass 2: per query block one live block of BJ pairs
        f2_sparse = w["per2"] * shape.b * sums["BJ"] * w["ncols"] * w["plates"]
        f2_sparse = min(f2_sparse, w["pass2_flop_dense"])
        lo = (w["pass1_flop"] + f2_sparse) / H100_FP32_FLOPS * 1e6
        hi = (w["pass1_flop"] + w["pass2_flop_dense"]) / H100_FP32_FLOPS * 1e6
        buf = buffer_bytes(shape, rec)
        mem = w["bytes_io"] / H100_HBM_BYTES * 1e6
        mem_all = (w["bytes_io"] + buf) / H100_HBM_BYTES * 1e6
        two = "×2" if shape.kind == "coulomb" and shape.plates == 2 else ""
        lines.append(
            f"| {shape.label} | {shape.b} | {shape.B}{two} | {shape.D} | {len(rec)} | "
            f"{w['pass1_flop'] / 1e9:.3g} | "
            f"{f2_sparse / 1e9:.2g} – {w['pass2_flop_dense'] / 1e9:.3g} | "
            f"{w['bytes_io'] / 1e6:.3g} | {buf / 1e6:.3g} | {lo:.3g} – {hi:.3g} | "
            f"{mem:.2g} – {mem_all:.2g} | {len(rec) * LAUNCH_US:.0f} |")
        seen = set()
        for r in rec:
            key = (r.name, tuple(sorted(r.constexprs.items())), r.grid)
            if key in seen:
                continue
            seen.add(key)
            res = C.compile_resources(r, arch=arch)
            progs = math.prod(r.grid)
            res_lines.append(
                f"| {shape.label} | {r.name} | {'×'.join(map(str, r.grid))} ({progs}) | "
                f"{_tile(r)} | {r.num_warps} | {res['registers']} | {res['shared_bytes']} | "
                f"{_resident(res['registers'], res['shared_bytes'], r.num_warps)} |")
    return "\n".join(lines) + "\n\n" + "\n".join(res_lines) + "\n"


# ----------------------------------------------------------------------------------------------
# inputs (FIELDS.md §5 samplers, float32 on the GPU)
# ----------------------------------------------------------------------------------------------
def make_inputs(shape: Shape, device, seed: int = 20240531) -> dict:
    """Images as uniform [-1, 1] pixels (toys: standard normal), noise N(0, I); string and EFM
    queries on the segment between the i-th pair (Uniform sampler, z ~ U(eps, L - eps)); PFGM
    queries are perturbed data points with z ~ |N(0, 1)| * 5."""
    g = torch.Generator().manual_seed(seed)
    b, B, D, L = shape.b, shape.B, shape.D, shape.L
    data = (torch.randn(B, D, generator=g) if D <= 2 else
            2 * torch.rand(B, D, generator=g) - 1)
    noise = torch.randn(B, D, generator=g)
    z = EPS_Z + (L - 2 * EPS_Z) * torch.rand(b, 1, generator=g)
    interp = torch.cat([z, (1 - z / L) * data[:b] + (z / L) * noise[:b]], 1)
    if shape.kind == "string":
        out = {"points": interp, "quarks": torch.cat([torch.zeros(B, 1), data], 1),
               "antiquarks": torch.cat([torch.full((B, 1), L), noise], 1)}
    elif shape.pfgm:
        zp = 5 * torch.randn(b, 1, generator=g).abs()
        xp = data[:b] + torch.randn(b, D, generator=g) * zp / math.sqrt(D)
        out = {"points": torch.cat([zp, xp], 1),
               "positive": torch.cat([torch.zeros(B, 1), data], 1)}
    else:
        out = {"points": interp, "positive": torch.cat([torch.zeros(B, 1), data], 1),
               "negative": torch.cat([torch.full((B, 1), L), noise], 1)}
    return {k: v.to(device).contiguous() for k, v in out.items()}


def reference64(shape: Shape, inputs: dict) -> torch.Tensor:
    from ifm import reference

    t = {k: v.double() for k, v in inputs.items()}
    if shape.kind == "string":
        return reference.string_field(t["points"], t["quarks"], t["antiquarks"], L=shape.L,
                                      sigma0=shape.sigma0, K=shape.K, d=shape.d)
    kw = _coulomb_kwargs(shape)
    return reference.coulomb_field(t["points"], t["positive"], t.get("negative"),
                                   plate_gamma=kw["plate_gamma"], sum_eps=kw["sum_eps"],
                                   normalize=kw["normalize"], norm_scale=kw["norm_scale"],
                                   eps=kw["eps"])


def max_row_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (out.double() - ref).norm(dim=1)
    den = ref.norm(dim=1)
    err = torch.where(den > 0, diff / den.clamp_min(1e-300), diff)
    return float(torch.nan_to_num(err, nan=math.inf).max())


# ----------------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------------
def _skip_reason(backend: str) -> Optional[str]:
    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False (GPU benchmarks need a GPU)"
    if backend == "triton":
        try:
            import ifm_kernels  # noqa: F401
        except ImportError as exc:
            return f"triton backend unavailable: {exc}"
        return None
    try:
        from ifm import _ops
    except ImportError as exc:
        return f"ifm not importable: {exc}"
    if not _ops.has_kernel("string_field", "CUDA"):
        return "ifm was built without CUDA kernels (rebuild with IFM_FORCE_CUDA=1)"
    return None


def backend_fn(shape: Shape, backend: str, inputs: dict):
    if backend == "triton":
        return lambda: _call_launcher(shape, inputs)
    import ifm  # noqa: F401  (registers torch.ops.ifm)

    if shape.kind == "string":
        return lambda: torch.ops.ifm.string_field(
            inputs["points"], inputs["quarks"], inputs["antiquarks"], shape.L, shape.sigma0,
            shape.K, shape.d, False, False, math.sqrt(shape.D + 1), 1e-5)
    kw = _coulomb_kwargs(shape)
    return lambda: torch.ops.ifm.coulomb_field(
        inputs["points"], inputs["positive"], inputs.get("negative"), kw["plate_gamma"],
        kw["sum_eps"], kw["normalize"], kw["norm_scale"], kw["eps"])


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


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label.replace(" ", "-"))
def test_gpu_field(benchmark, shape, backend):
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    benchmark.group = f"gpu {shape.label}"
    inputs = make_inputs(shape, "cuda")
    fn = backend_fn(shape, backend, inputs)
    out = fn()
    torch.cuda.synchronize()
    err = max_row_rel_err(out, reference64(shape, inputs))
    times = cuda_event_times_us(fn)

    def timed():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=20, iterations=1, warmup_rounds=2)
    w = work(shape)
    median = statistics.median(times)
    gflop = (w["pass1_flop"]) / 1e9
    info = {"backend": backend, "shape": f"b={shape.b} B={shape.B} D={shape.D}",
            "cuda_event_median_us": median, "cuda_event_min_us": min(times),
            "pass1_gflop": gflop, "pass1_gflops_achieved": gflop / (median * 1e-6),
            "compute_bound_us": w["pass1_flop"] / H100_FP32_FLOPS * 1e6,
            "memory_bound_us": w["bytes_io"] / H100_HBM_BYTES * 1e6,
            "max_row_rel_err": err, "device": torch.cuda.get_device_name()}
    if backend == "triton":
        info["launches"] = len(recorded_launches(
            shape, torch.cuda.get_device_properties(0).multi_processor_count))
    benchmark.extra_info.update(info)
    assert math.isfinite(err)


if __name__ == "__main__":
    if "--roofline" in sys.argv:
        os.environ.pop("TRITON_INTERPRET", None)
        os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        print(roofline_markdown())
    else:
        print(__doc__)
