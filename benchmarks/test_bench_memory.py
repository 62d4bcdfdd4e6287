"""Memory bound of the CPU backend: at the CelebA-128 shape (D = 49152, b = B = 64, L = 20,
sigma0 = 1, K = pi/20) one call needs at most 1.5x its inputs of extra memory.

Method (one fresh process per measurement, so nothing earlier in the session counts):

1. the child builds the float32 inputs (``points`` [64, 49153], two plates [64, 49153]: 37.7 MB),
2. warms the code path up on a slice (4 queries, 8 pairs, same D: library load, OpenMP pool),
3. records its resident set size ``VmRSS`` and resets the kernel's high-water mark
   (``echo 5 > /proc/self/clear_refs``),
4. makes one full call (the output, 12.6 MB, is part of what it needs) and reads ``VmHWM``.

``peak_extra = VmHWM - VmRSS before the call``. Where ``clear_refs`` is not writable the
high-water mark includes everything before (``hwm_reset`` False): the figure is then an upper
bound. Recorded in ``benchmark.extra_info``; asserted <= 1.5 x input bytes. This is a memory
bound, not a timing (``pedantic``, one round).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

SHAPE = dict(D=49152, b=64, B=64)
PARAMS = dict(L=20.0, sigma0=1.0, K=math.pi / 20)
BOUND = 1.5  # peak extra memory <= BOUND x input bytes


def _inputs(D, b, B, L, **_):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(B, D, generator=gen).tanh()
    C = torch.randn(B, D, generator=gen)
    z = 1e-3 + (L - 2e-3) * torch.rand(b, 1, generator=gen)
    points = torch.cat([z, (1 - z / L) * A[:b] + (z / L) * C[:b]], 1)
    plates = (torch.cat([torch.zeros(B, 1), A], 1), torch.cat([torch.full((B, 1), L), C], 1))
    return points, plates


def _call(kind, backend, points, plates):
    import ifm

    if kind == "string":
        return ifm.fields.string_field(points, *plates, **PARAMS, backend=backend)
    return ifm.fields.coulomb_field(points, *plates, backend=backend)


def child(kind: str, backend: str) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _memory import peak_extra

    points, plates = _inputs(**SHAPE, **PARAMS)
    _call(kind, backend, points[:4], [t[:8] for t in plates])  # warm-up
    mem = peak_extra(lambda: _call(kind, backend, points, plates))
    input_bytes = sum(t.numel() * t.element_size() for t in (points, *plates))
    return {
        "kind": kind,
        "backend": backend,
        "shape": SHAPE,
        "threads": torch.get_num_threads(),
        "input_mb": input_bytes / 2**20,
        "output_mb": points.numel() * points.element_size() / 2**20,
        "rss_before_call_mb": mem["rss_inputs_mb"],
        "peak_extra_mb": mem["peak_extra_mb"],
        "hwm_reset": mem["hwm_reset"],
    }


def measure(kind: str, backend: str = "cpu") -> dict:
    path = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), kind, backend],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["string", "coulomb"])
def test_celeba128_peak_extra_memory(benchmark, kind):
    import ifm

    if "cpu" not in ifm.available_backends("cpu"):
        pytest.skip("the CPU backend is not built (pip install --no-build-isolation -e .)")
    benchmark.group = "memory CelebA-128"
    info = benchmark.pedantic(measure, args=(kind,), rounds=1, iterations=1, warmup_rounds=0)
    info["bound_mb"] = BOUND * info["input_mb"]
    benchmark.extra_info.update(info)
    assert info["peak_extra_mb"] <= info["bound_mb"], (
        f"{kind}: peak extra {info['peak_extra_mb']:.1f} MB > {BOUND} x inputs "
        f"({info['input_mb']:.1f} MB)"
    )


if __name__ == "__main__":
    print(json.dumps(child(*sys.argv[1:3])))
