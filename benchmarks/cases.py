"""The published shapes the CPU benchmarks run (FIELDS.md tables) and their float32 inputs
(fixed seed, realistic distributions)."""

from __future__ import annotations

import dataclasses
import math

import environment  # noqa: F401  (thread count before torch starts its pools)
import torch
from environment import QUICK

import ifm

SEED = 20240531
EPS_Z = 1e-3  # FIELDS.md §5: z ~ U(eps, L - eps)


@dataclasses.dataclass(frozen=True)
class Case:
    """One published shape. ``sides``: what sits on the plates (``image:C,H,W``, ``gauss``,
    ``swissroll``). Coulomb ``sampler``: ``interp`` (FIELDS.md §5 line between the plates) or
    ``pfgm`` (PFGM's perturbation of the data)."""

    kind: str
    name: str
    D: int
    b: int
    B: int
    sides: tuple
    params: dict  # string: L, sigma0, K, d; Coulomb: L, plate_gamma, normalize
    sampler: str = "interp"
    plates: int = 2
    targets: tuple = ()  # (implementation, minimum speed-up of ifm-cpu over it)
    high_d: bool = False  # >= 50 % of the float32 matmul peak expected

    def api_args(self) -> dict:
        """Coulomb: the public keyword arguments of ``ifm.fields.coulomb_field``."""
        return {"plate_gamma": self.params["plate_gamma"], "normalize": self.params["normalize"]}

    def kernel_args(self) -> dict:
        """Coulomb: what ``ifm.fields`` derives from them (``ifm.fields.coulomb_kernel_args``)."""
        return ifm.fields.coulomb_kernel_args(
            self.D + 1, two_plates=self.plates == 2, **self.api_args()
        )

    def input_bytes(self):
        rows = self.b + self.B * (2 if self.kind == "string" else self.plates)
        return rows * (self.D + 1) * 4


def _string_case(name, D, b, B, L, sigma0, K, sides, **kw):
    return Case(
        "string",
        name,
        D,
        b,
        B,
        sides,
        {"L": L, "sigma0": sigma0, "K": K, "d": math.pi / (2 * K)},
        **kw,
    )


_IMAGE_TARGETS_STRING = (("authors-loop", 50.0), ("gemm-fp64", 4.0), ("gemm-fp32", 1.0))
_IMAGE_TARGETS_COULOMB = (
    ("authors-materialising", 200.0),
    ("cdist-softmax-matmul", 1.0),
    ("keops", 10.0),
)

_FULL_CASES = [
    _string_case("toy", 2, 1024, 4096, 6.0, 1.0, 10.0, ("gauss", "swissroll")),
    _string_case(
        "CIFAR",
        3072,
        64,
        256,
        20.0,
        1.0,
        math.pi / 20,
        ("image:3,32,32", "gauss"),
        targets=_IMAGE_TARGETS_STRING,
        high_d=True,
    ),
    _string_case(
        "W2S",
        12288,
        64,
        256,
        20.0,
        10.0,
        math.pi / 20,
        ("image:3,64,64", "image:3,64,64"),
        targets=_IMAGE_TARGETS_STRING,
        high_d=True,
    ),
    _string_case(
        "CelebA-64", 12288, 64, 64, 20.0, 1.0, math.pi / 20, ("image:3,64,64", "gauss"), high_d=True
    ),
    Case(
        "coulomb",
        "EFM-CIFAR",
        3072,
        64,
        1024,
        ("image:3,32,32", "gauss"),
        {"L": 100.0, "plate_gamma": 5.0, "normalize": False},
        targets=_IMAGE_TARGETS_COULOMB,
        high_d=True,
    ),
    Case(
        "coulomb",
        "PFGM",
        3072,
        128,
        4096,
        ("image:3,32,32",),
        {"L": None, "plate_gamma": None, "normalize": "pfgm"},
        sampler="pfgm",
        plates=1,
        targets=_IMAGE_TARGETS_COULOMB,
        high_d=True,
    ),
    Case(
        "coulomb",
        "toy",
        2,
        1024,
        4096,
        ("gauss", "swissroll"),
        {"L": 6.0, "plate_gamma": 1e-7, "normalize": False},
        targets=(("keops", 2.0),),
    ),
]


def _shrink(case: Case) -> Case:
    sides = tuple("image:3,4,4" if s.startswith("image") else s for s in case.sides)
    D = 48 if case.D > 48 else case.D
    return dataclasses.replace(case, D=D, b=min(case.b, 16), B=min(case.B, 64), sides=sides)


CASES: dict[str, Case] = {f"{c.kind}-{c.name}": (_shrink(c) if QUICK else c) for c in _FULL_CASES}


def case_ids(kind):
    return [c.name for c in CASES.values() if c.kind == kind]


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def _side(kind: str, n: int, D: int, gen: torch.Generator, domain: int) -> torch.Tensor:
    """``n`` data-like vectors in R^D.

    * ``image:C,H,W``: smooth random images in [-1, 1]: a coarse (H/8 x W/8) Gaussian field per
      channel, bilinearly upsampled, plus 0.15 pixel noise, through tanh (``domain`` shifts the
      colour balance, e.g. winter vs summer).
    * ``gauss``: N(0, I) (the noise plate of generation).
    * ``swissroll``: 2-D Swiss roll, t ~ U(1.5 pi, 4.5 pi), (t cos t, t sin t) / 5 + N(0, 0.05²).
    """
    if kind.startswith("image:"):
        C, H, W = (int(v) for v in kind[6:].split(","))
        coarse = torch.randn(n, C, max(H // 8, 1), max(W // 8, 1), generator=gen)
        img = torch.nn.functional.interpolate(
            coarse, size=(H, W), mode="bilinear", align_corners=False
        )
        img = img + 0.15 * torch.randn(n, C, H, W, generator=gen)
        shift = 0.3 * domain * torch.linspace(-1, 1, C).view(1, C, 1, 1)
        return torch.tanh(img + shift).reshape(n, C * H * W)
    if kind == "gauss":
        return torch.randn(n, D, generator=gen)
    if kind == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen))
        xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5
        return xy + 0.05 * torch.randn(n, 2, generator=gen)
    raise ValueError(kind)


def _interp(A, C, z, L):
    return torch.cat([z, (1 - z / L) * A + (z / L) * C], 1)


def _near_plate_z(b, L, gen):
    """Half the queries at z in [1e-3, 0.5] (log-spaced), half at L minus those."""
    h = b - b // 2
    near = torch.logspace(-3, math.log10(0.5), h)[:, None]
    z = torch.cat([near, L - near[: b // 2]], 0)
    return z[torch.randperm(b, generator=gen)]


def make_inputs(case: Case) -> dict:
    """Float32 inputs: ``points``, ``near`` (queries near the plates) and the plate tensors."""
    gen = torch.Generator().manual_seed(SEED)
    D, b, B = case.D, case.b, case.B
    sides = [_side(kind, B, D, gen, domain=i) for i, kind in enumerate(case.sides)]
    if case.kind == "string":
        L = case.params["L"]
        A, C = sides
        z = EPS_Z + (L - 2 * EPS_Z) * torch.rand(b, 1, generator=gen)
        return {
            "points": _interp(A[:b], C[:b], z, L),
            "near": _interp(A[:b], C[:b], _near_plate_z(b, L, gen), L),
            "quarks": torch.cat([torch.zeros(B, 1), A], 1),
            "antiquarks": torch.cat([torch.full((B, 1), L), C], 1),
        }
    out = {"positive": torch.cat([torch.zeros(B, 1), sides[0]], 1)}
    if case.sampler == "interp":
        L = case.params["L"]
        Y = sides[1]
        out["negative"] = torch.cat([torch.full((B, 1), L), Y], 1)
        z = EPS_Z + (L - 2 * EPS_Z) * torch.rand(b, 1, generator=gen)
        out["points"] = _interp(sides[0][:b], Y[:b], z, L)
        out["near"] = _interp(sides[0][:b], Y[:b], _near_plate_z(b, L, gen), L)
        return out
    # PFGM's perturbation (CIFAR-10 settings: sigma_end = 0.01, tau = 0.03, M = 291,
    # m ~ U[0, M]): z = |N(0, sigma²)| (1 + tau)^m, x = data + u ||N(0, sigma² I_D)|| (1 + tau)^m
    # with u uniform on the sphere. ``near`` uses m ~ U[0, 30] (queries close to the data).
    data = sides[0][:b]

    def perturb(m):
        scale = (1.0 + 0.03) ** m
        z = (0.01 * torch.randn(b, 1, generator=gen)).abs() * scale
        u = torch.randn(b, D, generator=gen)
        u = u / u.norm(dim=1, keepdim=True)
        radius = (0.01 * torch.randn(b, D, generator=gen)).norm(dim=1, keepdim=True)
        return torch.cat([z, data + u * radius * scale], 1)

    out["points"] = perturb(291.0 * torch.rand(b, 1, generator=gen))
    out["near"] = perturb(30.0 * torch.rand(b, 1, generator=gen))
    return out


def call_args(inputs: dict) -> dict:
    """The plate tensors of ``make_inputs``' result (what an implementation is called with)."""
    return {k: v for k, v in inputs.items() if k not in ("points", "near")}
