"""Randomised inputs for the parity tests: odd sizes, every z edge of FIELDS.md §2, both plates."""

from __future__ import annotations

import math

import torch

# (L, sigma0, K) of the published runs (FIELDS.md §2 table)
STRING_GEOMETRIES = {
    "toy": (6.0, 1.0, 10.0),
    "toy-L40": (40.0, 1.0, 10.0),
    "cifar": (20.0, 1.0, math.pi / 20.0),
    "w2s": (20.0, 10.0, math.pi / 20.0),
    "cmnist": (40.0, 10.0, 5.0),
}


def string_case(b: int, B: int, D: int, geometry: str, seed: int = 0):
    """float64 (points, quarks, antiquarks, params) with queries near the pairs' segments and
    z values at 0, 1e-3, d, L/2, L-d, L-1e-3, L and outside [0, L]."""
    L, sigma0, K = STRING_GEOMETRIES[geometry]
    d = math.pi / (2 * K)
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, D, generator=g, dtype=torch.float64)
    C = torch.randn(B, D, generator=g, dtype=torch.float64) + 0.5
    special = torch.tensor(
        [0.0, 1e-3, d, L / 2, L - d, L - 1e-3, L, -0.5, L + 0.5, 2 * d], dtype=torch.float64
    )
    z = torch.rand(b, generator=g, dtype=torch.float64) * L
    z[: min(b, special.numel())] = special[: min(b, special.numel())]
    idx = torch.arange(b) % B
    tau = (z / L)[:, None]
    spread = sigma0 * torch.rand(b, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(b, D, generator=g, dtype=torch.float64)
    x = (1 - tau) * A[idx] + tau * C[idx] + spread * noise
    if b > 11:  # a query exactly on its pair's segment (r = 0) and one exactly on a quark
        x[10] = (1 - tau[10]) * A[idx[10]] + tau[10] * C[idx[10]]
        z[11] = 0.0
        x[11] = A[idx[11]]
    points = torch.cat([z[:, None], x], 1)
    quarks = torch.cat([torch.zeros(B, 1, dtype=torch.float64), A], 1)
    antiquarks = torch.cat([torch.full((B, 1), L, dtype=torch.float64), C], 1)
    return points, quarks, antiquarks, dict(L=L, sigma0=sigma0, K=K)


def coulomb_case(b: int, Bp: int, Bn: int, D: int, L: float, seed: int = 0):
    """float64 (points, positive, negative) with queries anywhere, one on a charge and one within
    1e-7 of a charge."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat(
        [
            torch.zeros(Bp, 1, dtype=torch.float64),
            torch.randn(Bp, D, generator=g, dtype=torch.float64),
        ],
        1,
    )
    neg = torch.cat(
        [
            torch.full((Bn, 1), L, dtype=torch.float64),
            torch.randn(Bn, D, generator=g, dtype=torch.float64) + 1.0,
        ],
        1,
    )
    z = torch.rand(b, 1, generator=g, dtype=torch.float64) * (L + 2) - 1
    x = torch.randn(b, D, generator=g, dtype=torch.float64) * 1.5
    points = torch.cat([z, x], 1)
    if b > 2:
        points[1] = pos[0]
        points[2] = neg[-1] + 1e-7
    return points, pos, neg
