"""Static performance model of the GPU kernels (no GPU needed).

Kernel estimate contract
------------------------
Both backends describe a field call as a list of kernel launches, one dict per launch::

    {
      "name": str,                 # kernel name
      "grid": int,                 # blocks (programs) in the launch
      "threads": int,              # threads per block
      "registers": int,            # registers per thread (cuobjdump --dump-resource-usage)
      "shared_bytes": int,         # shared memory per block (static + dynamic)
      "warp_instructions": float,  # warp instructions issued by the whole launch
      "dram_bytes": float,         # bytes to/from HBM (unique data, writes, L2 misses)
      "l2_bytes": float,           # bytes served by L2 (re-reads of data already on chip)
      # optional:
      "by_class": {cls: float},    # warp instructions per opcode class (gpu_sass.CLASSES:
                                   # "fp32", "fp64", "mufu", "int", ...); pipes slower than one
                                   # warp instruction per cycle and scheduler are charged from it
      "local_bytes": int,          # spill bytes per thread (0 expected)
      "note": str,
    }

The CUDA backend provides ``benchmarks/gpu_model_cuda.py: kernel_estimates(field, case, dtype,
arch) -> list[dict]`` (imported if present); the Triton side is :func:`triton_kernel_estimates`
(same arguments). ``field`` is ``"string"`` or ``"coulomb"``, ``case`` a ``conftest.Case``,
``dtype`` a torch dtype, ``arch`` a key of :data:`ARCHS` (``"sm_90"`` H100, ``"sm_80"`` A100,
``"sm_89"`` RTX 4090).

Entry points
------------
* ``estimate(field, case_name, backend, dtype=torch.float32, arch="sm_90") -> dict`` with
  ``us`` (the model's time of one call), ``bound_us`` (the design bound below), ``launches``,
  ``kernels`` (per-kernel breakdown) -- what ``scripts/gpu.sh`` prints beside a measured time.
* ``python benchmarks/gpu_model.py [--arch sm_90] [--markdown]`` prints the table of every
  published shape (``benchmarks/conftest.py``) and backend, float32 and float64.

Per kernel
----------
* issue: per SM and scheduler, a warp instruction takes ``max(1, pipe cycles)``; the cycles of a
  block are ``max(total, fp32 * c_fp32, fp64 * c_fp64, mufu * c_mufu, int * c_int)`` warp
  instructions over its warps' schedulers. Blocks go round-robin to the SMs; each SM runs them
  in rounds of up to ``resident`` blocks (limited by registers, shared memory, threads, 32
  blocks); a round with fewer than ``SAT_WARPS`` warps per scheduler issues at that fraction of
  the peak (latency not hidden). This is where a tail wave costs: 544 blocks on 132 SMs x 4
  leave 16 SMs a fifth round of one block at a quarter of the issue rate.
* memory: ``dram_bytes / HBM + l2_bytes / L2`` bandwidth.
* kernel time = ``max(issue, memory) + LAUNCH_US`` (one launch gap per kernel).

Bound
-----
``bound = max(useful FLOP / FP32 peak, (inputs + output) bytes / HBM) + LAUNCH_US x (fewest
launches the design needs)``; useful FLOP: string ``3 b B D`` for the distances (``x - base - t
Delta`` as one FMA after the shared subtraction, and ``r r + acc``) plus ``4 per kept (query,
pair, column)`` for the sums; Coulomb ``3 b B (D + 1)`` per plate for the distances and
``2 per kept (query, charge, column)``; kept pairs from the published inputs in float64.
Fewest launches: string 3 (distances, coefficients, sums; +1 when normalising), Coulomb
3 per plate + 1 finalisation when the plates are normalised or combined.

The PyTorch form a user would run instead is estimated from the same figures: cuBLAS SGEMM at
``GEMM_FRACTION`` of FP32 peak, every elementwise / reduction kernel at HBM bandwidth over its
``[b, B]`` or ``[b, D]`` tensors, ``LAUNCH_US`` per launch (:func:`torch_form_estimate`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT, os.path.join(ROOT, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

LAUNCH_US = 3.0        # back-to-back launch gap per kernel (PERFORMANCE.md: 3-5 us)
SAT_WARPS = 4          # warps per scheduler that hide the latency of a loop body
GEMM_FRACTION = 0.7    # cuBLAS SGEMM (no TF32) at the published shapes, of FP32 peak


@dataclasses.dataclass(frozen=True)
class Arch:
    """One GPU: ``c_*`` are scheduler cycles per warp instruction of that pipe."""

    name: str
    sm: int              # compute capability x 10 (Triton / ptxas target)
    sms: int
    clock_ghz: float     # stated clock the model uses (boost)
    fp32_tflops: float   # FP32 on CUDA cores
    hbm_tbs: float
    l2_tbs: float
    l2_mb: float
    c_fp32: float
    c_fp64: float
    c_mufu: float
    c_int: float
    regs_per_sm: int = 65536
    shared_per_sm: int = 228 * 1024
    threads_per_sm: int = 2048
    schedulers: int = 4


ARCHS: Dict[str, Arch] = {
    # H100 SXM5: 132 SMs, 1.98 GHz boost, 128 FP32 / 64 FP64 / 16 MUFU lanes per SM, 3.35 TB/s
    "sm_90": Arch("H100 SXM", 90, 132, 1.98, 67.0, 3.35, 7.0, 50.0,
                  c_fp32=1, c_fp64=2, c_mufu=8, c_int=2),
    # A100 SXM4: 108 SMs, 1.41 GHz, 64 FP32 / 32 FP64 lanes per SM, 2.04 TB/s (80 GB)
    "sm_80": Arch("A100 SXM", 80, 108, 1.41, 19.5, 2.04, 4.5, 40.0,
                  c_fp32=2, c_fp64=4, c_mufu=8, c_int=2, shared_per_sm=164 * 1024),
    # RTX 4090 (sm_89): 128 SMs, 2.52 GHz boost, FP64 at 1/64 of FP32, 1.01 TB/s
    "sm_89": Arch("RTX 4090", 89, 128, 2.52, 82.6, 1.01, 3.5, 72.0,
                  c_fp32=1, c_fp64=64, c_mufu=8, c_int=2, shared_per_sm=100 * 1024,
                  threads_per_sm=1536),
}


# ----------------------------------------------------------------------------------------------
# the estimator shared by both backends
# ----------------------------------------------------------------------------------------------
def resident_blocks(k: dict, arch: Arch) -> int:
    """Blocks per SM allowed by registers (allocated per warp in units of 256), shared memory
    (1 KB reserved per block), threads and the 32-block limit."""
    warps = max(1, math.ceil(k["threads"] / 32))
    per_warp = ((max(k["registers"], 1) * 32 + 255) // 256) * 256
    by_regs = arch.regs_per_sm // (per_warp * warps)
    by_shared = arch.shared_per_sm // (int(k.get("shared_bytes", 0)) + 1024)
    by_threads = arch.threads_per_sm // (warps * 32)
    return max(1, min(by_regs, by_shared, by_threads, 32))


def block_cycles(k: dict, arch: Arch) -> float:
    """Scheduler cycles of one block's warp instructions (summed over its warps): the issued
    count, or a slower pipe's cycles (``by_class`` x ``c_<class>``) when those are more."""
    grid = max(int(k["grid"]), 1)
    per_block = k["warp_instructions"] / grid
    cls = k.get("by_class") or {}
    return max([per_block] + [cls.get(c, 0.0) / grid * getattr(arch, "c_" + c)
                              for c in ("fp32", "fp64", "mufu", "int")])


def issue_us(k: dict, arch: Arch) -> float:
    """Issue-bound time of a launch: the most loaded SM (``ceil(grid / SMs)`` blocks) runs its
    blocks in rounds of up to ``resident``; a round of ``m`` blocks issues ``m x cycles`` at
    ``schedulers x min(1, warps in flight / (schedulers x SAT_WARPS))`` per clock."""
    grid = max(int(k["grid"]), 1)
    warps = max(1, math.ceil(k["threads"] / 32))
    res = resident_blocks(k, arch)
    cyc = block_cycles(k, arch)
    t, left = 0.0, math.ceil(grid / arch.sms)
    while left > 0:
        m = min(left, res)
        eff = min(1.0, m * warps / (arch.schedulers * SAT_WARPS))
        t += m * cyc / (arch.schedulers * eff)
        left -= m
    return t / (arch.clock_ghz * 1e3)


def memory_us(k: dict, arch: Arch) -> float:
    return (k.get("dram_bytes", 0.0) / (arch.hbm_tbs * 1e6)
            + k.get("l2_bytes", 0.0) / (arch.l2_tbs * 1e6))


def kernel_time(k: dict, arch: Arch) -> dict:
    iss, mem = issue_us(k, arch), memory_us(k, arch)
    res = resident_blocks(k, arch)
    waves = math.ceil(max(int(k["grid"]), 1) / (arch.sms * res))
    return {"name": k["name"], "grid": int(k["grid"]), "resident": res, "waves": waves,
            "issue_us": iss, "memory_us": mem, "us": max(iss, mem) + LAUNCH_US,
            "registers": k["registers"]}


def call_time(kernels: List[dict], arch: Arch) -> dict:
    per = [kernel_time(k, arch) for k in kernels]
    return {"us": sum(p["us"] for p in per), "launches": len(per), "kernels": per}


# ----------------------------------------------------------------------------------------------
# published shapes and their kept pairs
# ----------------------------------------------------------------------------------------------
def published_cases() -> dict:
    """``{"string-CIFAR": Case, ...}``: the full-size cases of benchmarks/conftest.py."""
    import conftest

    return {f"{c.kind}-{c.name}": c for c in conftest._FULL_CASES}


_LIVE_CACHE: dict = {}


def live_mask(case, plate: int = 0):
    """``[b, B]`` bool: the (query, pair or charge) terms the kernels keep for the published
    float32 inputs (non-zero float32 coefficient, not below ``skip_ratio`` of the row's
    largest weight / contribution); float64 arithmetic, r^2 from the dot-product expansion in
    float64 (enough to decide liveness)."""
    key = (case.kind, case.name, plate)
    if key in _LIVE_CACHE:
        return _LIVE_CACHE[key]
    import torch

    import baselines
    import conftest
    from ifm import reference

    inp = conftest.make_inputs(case)
    p = inp["points"].double()
    if case.kind == "string":
        q, a = inp["quarks"].double(), inp["antiquarks"].double()
        z, x, A, Delta, nu, tau = baselines._string_setup(p, q, a, case.params["L"])
        r2 = baselines.string_r2_gemm(x, A, Delta, tau)
        c1, c2, w = baselines.string_coefficients(r2, z, nu, D=x.shape[1], **case.params)
        keep = w >= w.amax(1, keepdim=True) * 2.0 ** -44
        live = keep & ((c1.float() != 0) | (c2.float() != 0))
    else:
        Y = (inp["positive"] if plate == 0 else inp["negative"]).double()
        d = torch.cdist(p, Y)
        logit = -p.shape[1] * torch.log(d + reference.COULOMB_D_EPS)
        coeff = torch.softmax(logit, dim=1)
        contrib = torch.where(d > 0, logit + torch.log(d.clamp_min(1e-300)),
                              torch.full_like(d, -math.inf))
        keep = contrib >= contrib.amax(1, keepdim=True) + math.log(2.0 ** -44)
        live = keep & (coeff.float() != 0)
    _LIVE_CACHE[key] = live
    return live


def _block_counts(live, bi: int, bj: int) -> list:
    """Per block of ``bi`` rows: the number of blocks of ``bj`` columns with a live term."""
    import torch

    b, n = live.shape
    rb, cb = -(-b // bi), -(-n // bj)
    pad = torch.zeros(rb * bi, cb * bj, dtype=torch.bool)
    pad[:b, :n] = live
    return pad.view(rb, bi, cb, bj).any(3).any(1).sum(1).tolist()


# ----------------------------------------------------------------------------------------------
# Triton side: record the launches, compile them, count the SASS
# ----------------------------------------------------------------------------------------------
_SASS_CACHE: dict = {}


def _compiled_summary(rec, sm: int) -> dict:
    import gpu_sass
    from ifm_kernels import _introspect

    key = (rec.name, tuple(sorted(rec.constexprs.items())), rec.num_warps, sm,
           tuple(str(v.dtype) for v in rec.args if hasattr(v, "dtype")))
    if key not in _SASS_CACHE:
        compiled = _introspect.compile_kernel(rec, sm)
        summary = gpu_sass.kernel_summary(compiled.asm["cubin"])
        summary["shared_bytes"] = int(compiled.metadata.shared)
        _SASS_CACHE[key] = summary
    return _SASS_CACHE[key]


def _call(case, dtype, sms: int):
    """Record the launches of one call of ``case`` on a GPU with ``sms`` SMs."""
    import torch

    import ifm_kernels
    from ifm import fields
    from ifm_kernels import _introspect, _plan

    D = case.D

    def t(n):
        return torch.empty(n, D + 1, dtype=dtype, device="meta")

    with _introspect.record_launches(_plan.gpu_profile(sms)) as rec:
        if case.kind == "string":
            kw = fields.string_kernel_args(D + 1)
            ifm_kernels.string_field(t(case.b), t(case.B), t(case.B), **case.params,
                                     stable=False, **kw)
        else:
            kw = fields.coulomb_kernel_args(D + 1, two_plates=case.plates == 2,
                                            **_coulomb_public(case))
            ifm_kernels.coulomb_field(t(case.b), t(case.B),
                                      t(case.B) if case.plates == 2 else None, **kw)
    return rec


def _coulomb_public(case) -> dict:
    return {"plate_gamma": case.params["plate_gamma"], "normalize": case.params["normalize"]}


def _loops(summary: dict) -> list:
    """Loops of a kernel without the end-of-code trap (``BRA`` to itself)."""
    return [lp for lp in summary["loops"]
            if not (lp["instructions"] <= 2 and set(lp["classes"]) <= {"branch"})]


def _sub(a: dict, b: dict, k: float = 1.0) -> dict:
    out = dict(a)
    for key, v in b.items():
        out[key] = out.get(key, 0.0) - k * v
    return out


def _add(a: dict, b: dict, k: float = 1.0) -> dict:
    return _sub(a, b, -k)


def _program_count(summary: dict, top_trips, inner_trip: float):
    """``(instructions, by_class)`` one warp issues in one program: the straight-line code once,
    each top-level loop ``top_trips[i]`` times (loops past the list once), each loop nested in
    one ``inner_trip`` times per outer iteration (split evenly over its siblings: Triton peels
    and unrolls a runtime-bounded loop into a main and a remainder loop)."""
    loops = _loops(summary)
    top = [lp for lp in loops if lp["depth"] == 0]
    straight_cls = dict(summary["classes"])
    for lp in loops:
        straight_cls = _sub(straight_cls, lp["classes"])
    total_cls = dict(straight_cls)
    for i, lp in enumerate(top):
        trips = top_trips[i] if i < len(top_trips) else 1.0
        inner = [o for o in loops if o["depth"] == 1 and lp["start"] <= o["start"]
                 and o["end"] <= lp["end"]]
        body = dict(lp["classes"])
        for o in inner:
            body = _add(body, o["classes"], inner_trip / len(inner))
        total_cls = _add(total_cls, body, trips)
    return sum(total_cls.values()), total_cls


def _itemsize(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def triton_kernel_estimates(field: str, case, dtype, arch: str) -> List[dict]:
    """Per launch of one Triton call: the dict of the contract at the top of this module."""
    a = ARCHS[arch]
    rec = _call(case, dtype, a.sms)
    it = _itemsize(dtype)
    b, D = case.b, case.D
    out = []
    plate = 0
    for r in rec:
        s = _compiled_summary(r, a.sm)
        c = r.constexprs
        grid = math.prod(r.grid)
        warps = r.num_warps
        name = r.name
        if name == "distance_kernel":
            rows, n, ncols, cps = r.args[5], r.args[6], r.args[9], r.args[10]
            ns = r.grid[1]
            full = [max(0, min(ncols, (k + 1) * cps) - k * cps) // c["BK"] for k in range(ns)]
            trips = sum(full) / ns
            ny = 2 if c["STRING"] else 1
            tiles_i, tiles_j = -(-rows // c["BI"]), -(-n // c["BJ"])
            unique = (rows + ny * n) * ncols * it
            reads = (rows * tiles_j + ny * n * tiles_i) * ncols * it
            dram = unique + ns * rows * n * it + (ns * n * it if c["STRING"] else 0)
            l2 = max(reads - unique, 0)
            if unique > a.l2_mb * 1e6 / 2:     # re-reads do not stay in L2
                dram, l2 = dram + l2, 0.0
            per, cls = _program_count(s, [trips], 0)
        elif name.endswith("_stats_kernel") or name.endswith("_coeff_kernel"):
            string = name.startswith("string")
            stats = name.endswith("_stats_kernel")
            pos = {("string", True): (3, 4, 6, 7), ("string", False): (9, 10, 12, 13),
                   ("coulomb", True): (2, 3, 4, 5), ("coulomb", False): (5, 6, 7, 8)}
            ir, in_, ins, icl = pos[("string" if string else "coulomb", stats)]
            rows, n, nslices, chunk_len = (r.args[k] for k in (ir, in_, ins, icl))
            chunks = r.grid[1]
            steps = -(-n // c["BJ"]) / chunks
            combine = [] if stats else [chunks] * (1 if string else 2)
            per, cls = _program_count(s, combine + [steps], nslices)
            l2 = nslices * rows * n * it                     # the partials, read once here
            if stats:
                dram = rows * chunks * 8 * (1 if string else 3)
            else:
                ncoef = 2 if string else 1
                dram = ncoef * rows * n * it
        elif name == "pair_sums_kernel":
            rows, n, ncols = r.args[9], r.args[10], r.args[13]
            chunks = r.args[14]
            live = live_mask(case, plate)
            counts = _block_counts(live, c["BI"], c["BJ"])
            plate += 1
            tiles_k = r.grid[1]
            total_iters = tiles_k * sum(counts)
            loops = _loops(s)
            top = [lp for lp in loops if lp["depth"] == 0]
            straight = dict(s["classes"])
            for lp in loops:
                straight = _sub(straight, lp["classes"])
            cls = {k: v * grid for k, v in straight.items()}
            for lp in top:
                inner = [o for o in loops if o["depth"] == 1 and lp["start"] <= o["start"]
                         and o["end"] <= lp["end"]]
                cls = _add(cls, lp["classes"], chunks * grid)
                for o in inner:
                    cls = _add(cls, o["classes"], total_iters / len(inner))
            cls = {k: v / grid for k, v in cls.items()}
            per = sum(cls.values())
            ny = 2 if c["STRING"] else 1
            l2 = total_iters * (ny * c["BJ"] * c["BK"] + ny * c["BI"] * c["BJ"]) * it
            dram = 2 * rows * ncols * it + min(l2, ny * n * ncols * it)
            l2 = max(l2 - ny * n * ncols * it, 0.0)
        else:  # finalize_kernel
            rows, width = r.args[3], r.args[4]
            bw = c["BW"]
            sweeps = -(-width // bw)
            per, cls = _program_count(s, [sweeps] * 3, 0)
            reads = (1 + int(c["PLATE_NORM"]) + int(c["NORMALIZE"])) * (2 if c["HAS_NEG"] else 1)
            dram = (reads + 1) * rows * width * it
            l2 = 0.0
        out.append({"name": name, "grid": grid, "threads": 32 * warps,
                    "registers": s["registers"], "shared_bytes": s["shared_bytes"],
                    "local_bytes": s["local_bytes"],
                    "warp_instructions": per * grid * warps,
                    "by_class": {k: v * grid * warps for k, v in cls.items()},
                    "dram_bytes": float(dram), "l2_bytes": float(l2),
                    "note": "x".join(f"{c[k]}" for k in ("BI", "BJ", "BK", "BR", "BW") if k in c)})
    return out
