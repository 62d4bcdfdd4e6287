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
SAT_WARPS = 2          # warps per scheduler that hide the latency of a loop body
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
