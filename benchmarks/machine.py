"""The machine a benchmark runs on: CPU description, available memory and the practical float32
matmul peak the fused kernels are compared with."""

from __future__ import annotations

import platform
import time

import environment  # noqa: F401  (thread count before torch starts its pools)
import torch
from environment import QUICK, THREADS


def cpu_info() -> dict:
    info = {"threads": THREADS, "torch": torch.__version__, "python": platform.python_version()}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return info
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k, v)
    flags = set(fields.get("flags", "").split())
    info.update(
        {
            "cpu": fields.get("model name", "?"),
            "mhz": float(fields.get("cpu MHz", "0")),
            "logical_cpus": text.count("processor\t:"),
            "flags": " ".join(
                f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in flags
            ),
        }
    )
    lanes = 16 if "avx512f" in flags else 8
    # cores x GHz x 2 FMA units x lanes x 2 flop (per FMA)
    info["theoretical_gflops"] = THREADS * info["mhz"] / 1e3 * 2 * lanes * 2
    return info


def matmul_peak_gflops(n: int | None = None, reps: int = 7) -> float:
    """Median float32 ``torch.mm`` throughput on ``n x n`` matrices (the practical peak)."""
    n = n or (512 if QUICK else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    c = torch.randn(n, n, generator=gen)
    torch.mm(a, c)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, c)
        times.append(time.perf_counter() - t)
    return 2.0 * n**3 / sorted(times)[len(times) // 2] / 1e9


def mem_available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0
