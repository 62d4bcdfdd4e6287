"""Query-point samplers between the plates (FIELDS.md §5).

Every sampler takes the aligned pairs ``A = x0`` (data on the plate z = 0: quarks / positive
charges) and ``C = x1`` (data on the plate z = L: antiquarks / negative charges), both ``[B, D]``
(row ``i`` of ``x1`` is the partner of row ``i`` of ``x0``; apply the plan first), and returns
``b`` z-first query points ``[b, D+1]`` (column 0 = z) built from the **first** ``b`` pairs, in
the inputs' dtype and on their device. Randomness comes only from the ``generator`` argument (a
``torch.Generator`` on the inputs' device, or ``None`` for torch's global generator), so a seeded
generator makes every sampler repeatable.

Samplers
--------
* :func:`uniform` -- FIELDS.md §5 "Uniform" (all published image runs):
  ``z ~ U(eps, L - eps)``, ``x = (1 - z/L) A + (z/L) C``, no noise; ``eps = 1e-3``.
* :func:`noised` -- the paper's noised interpolation (IFM §3, EFM Alg. 1). Reading used here:
  the same ``z`` and interpolation as :func:`uniform`, plus a noise vector in the **data
  coordinates only** (z stays as sampled, so the query keeps its place between the plates):
  ``eps(z) = sigma(z) * ||g|| * u`` with ``g ~ N(0, I_D)`` and ``u`` uniform on the unit sphere
  S^{D-1}, independent of ``g``, and ``sigma^2(z) = noise_scale^2 * (L/2 - |L/2 - z|)``. This is
  distributed exactly as ``N(0, sigma^2(z) I_D)``: **per-coordinate** variance ``sigma^2(z)`` (zero
  at the plates, ``L/2`` at the middle), direction uniform on the sphere (the EFM slides' form
  ``||eps|| m / ||m||``). ``noise_scale`` (default 1) multiplies the standard deviation.
* :func:`pfgm` -- the PFGM-style mixing used for Colored-MNIST:
  ``m = M * N(0, 1)``, ``z = |N(0, sigma_end^2)| (1 + tau)^m`` clamped to ``[eps, L - eps]``;
  ``x = A + u * ||N(0, sigma_end^2 I_D)|| * (1 + tau)^m`` with ``u`` uniform on the sphere;
  ``sigma_end = 0.1``, ``M = 191``, ``tau = 0.03``. Only ``z`` is clamped; the radius of ``x``
  uses the unclamped ``(1 + tau)^m`` (as the authors' code; the golden
  ``string_cmnist_pfgm_points.npz`` shows radii far larger than L). ``C`` is not used.
* :func:`efm` -- the query sampler the EFM matcher uses by default: the paper's noised
  interpolation (``noised``) with a constant, not z-dependent, noise ``sigma`` (default 1) so that
  queries also land near the plates and beyond the segments, where Coulomb lines curve. ``z`` may
  leave ``[0, L]`` (EFM's field exists everywhere) only when ``z_noise=True``.

The authors' samplers, under their names, drawing random numbers in their order (a generator
seeded like their global one reproduces their points; ``tests/data/authors/``):

* :func:`both_side` -- ``interpolation="both_side"``. ``form="toy"`` (their ``ToyTrain``, the
  toy checkpoints): half the queries near each plate, ``z = eps + |N(0, sigma_end^2)| (1 +
  tau)^m`` and ``z = L - eps - |N(0, sigma_end^2)| (1 + tau)^m``, ``m ~ U(0, M)``; queries past
  ``[eps, L - eps]`` are redrawn uniform in it; ``x = (1 - w) A + w C`` with their weight
  ``w = (z - eps) / L``; toy defaults ``eps = 0.5``, ``sigma_end = 0.8``, ``M = 4``,
  ``tau = 0.03``; ``b`` must be even. ``form="image"`` (their image trainer's one-sided form):
  ``z = eps + |N(0, sigma_end^2)| (1 + tau)^m`` for all queries, the same redraw, ``w = z / L``.
* :func:`uniform_mixing` -- ``"Uniform_mixing"``: ``z = clamp(|N(0, sigma_end^2)| (1 +
  tau)^m, eps, L - eps)``, ``m ~ U(0, M)``, ``x = (1 - z/L) A + (z/L) C``, no noise (their noised
  branch of this sampler reads an undefined variable).
* :func:`noised_cos` -- ``"Uniform"`` with ``noised_interpolation=True``, the code's noised form:
  :func:`uniform` plus ``mltp * (1 + cos(2 pi (z - L/2) / L)) * u``, ``u`` uniform on the sphere
  (a deterministic radius, 2 mltp at the middle, 0 at the plates), beside the paper's
  :func:`noised`.
* :func:`pfgm` -- ``"Gaussian_mixing"`` of the IFM repository (above; ``form="efm"``: the EFM
  repository's, with ``m ~ U(0, M)`` and z not clamped), in their order: ``m``, ``|z|``, the
  ``restrict_M`` redraw, the direction, then the radius.
* :func:`mesh` -- ``"mesh"`` (EFM toy): a shuffled regular grid of z-first points, the first
  ``b`` of a random permutation of the ``num_points^(D+1)`` grid points.

Images (``[B, C, H, W]``) may be passed directly: they are flattened to ``[B, D]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ._batch import check_batch, check_partner  # noqa: F401 (re-exported for matchers)
from ._checks import check_scalar as _real

__all__ = [
    "EPS",
    "uniform",
    "noised",
    "noised_cos",
    "pfgm",
    "efm",
    "both_side",
    "uniform_mixing",
    "mesh",
    "get_point_sampler",
    "SAMPLERS",
    "uniform_on_sphere",
    "noise_sigma",
]

EPS = 1e-3
PFGM_SIGMA_END = 0.1
PFGM_M = 191
PFGM_TAU = 0.03


# --------------------------------------------------------------------------------------------
# checks and helpers
# --------------------------------------------------------------------------------------------
def _pairs(x0, x1, b, *, need_x1: bool = True):
    check_batch("x0", x0)
    a = x0.reshape(x0.shape[0], -1)
    c = None
    if need_x1 or x1 is not None:
        check_partner("x1", x1, "x0", x0)
        c = x1.reshape(x1.shape[0], -1)
    B = a.shape[0]
    if b is None:
        b = B
    if isinstance(b, bool) or not isinstance(b, int) or not (1 <= b <= B):
        raise ValueError(f"b (number of query points) must be an int in [1, B={B}], got {b!r}")
    return a[:b], (c[:b] if c is not None else None), b


def _check_generator(generator, device):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device} but the data is on {device}")


def _rand(shape, like, generator):
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _randn(shape, like, generator):
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _check_bool(name, v):
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {v!r}")


def _restrict_m(m, z0, M, like, generator):
    """Their ``restrict_M``: ``m ~ U(0, int(0.7 M))`` where ``z0 < 0.005``."""
    idx = z0 < 0.005
    m = m.clone()
    m[idx] = _rand((int(idx.sum()),), like, generator) * int(M * 0.7)
    return m


def _redraw_outside(z, L, eps, like, generator):
    """Their redraw: ``z > L - eps`` first, then ``z < eps``, each ``U(eps, L - eps)``."""
    for outside in (lambda v: v > L - eps, lambda v: v < eps):
        idx = outside(z).nonzero().flatten()
        z[idx] = eps + _rand((idx.numel(),), like, generator) * (L - 2 * eps)
    return z


def uniform_on_sphere(
    n: int, D: int, like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[n, D]`` unit vectors, uniform on S^{D-1} (normalised Gaussians)."""
    g = _randn((n, D), like, generator)
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def noise_sigma(z: torch.Tensor, L: float) -> torch.Tensor:
    """Standard deviation of the paper's noise: ``sqrt(L/2 - |L/2 - z|)`` (0 at the plates)."""
    return torch.sqrt((L / 2 - (L / 2 - z).abs()).clamp_min(0))


def _uniform_z(b, L, eps, like, generator):
    if not (2 * eps < L):
        raise ValueError(f"eps must be < L/2 (z ~ U(eps, L - eps)), got eps={eps}, L={L}")
    return eps + (L - 2 * eps) * _rand((b,), like, generator)


def _interpolate(a, c, z, L):
    t = (z / L)[:, None]
    return (1 - t) * a + t * c


# --------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------
def uniform(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``z ~ U(eps, L - eps)``, ``x = (1 - z/L) A + (z/L) C``: ``[b, D+1]`` z-first points."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    z = _uniform_z(b, L, eps, a, generator)
    return torch.cat([z[:, None], _interpolate(a, c, z, L)], dim=1)


def noised(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    noise_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Paper's noised interpolation: :func:`uniform` plus ``N(0, sigma^2(z) I_D)`` on x,
    ``sigma^2(z) = noise_scale^2 (L/2 - |L/2 - z|)`` (module docstring)."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    noise_scale = _real("noise_scale", noise_scale, allow_zero=True)
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    z = _uniform_z(b, L, eps, a, generator)
    D = a.shape[1]
    radius = _randn((b, D), a, generator).norm(dim=1, keepdim=True)
    u = uniform_on_sphere(b, D, a, generator)
    x = _interpolate(a, c, z, L) + noise_scale * noise_sigma(z, L)[:, None] * radius * u
    return torch.cat([z[:, None], x], dim=1)


def pfgm(
    x0: torch.Tensor,
    x1: torch.Tensor | None = None,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    sigma_end: float = PFGM_SIGMA_END,
    M: float = PFGM_M,
    tau: float = PFGM_TAU,
    restrict_M: bool = False,
    form: str = "ifm",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PFGM-style perturbation around the data plate z = 0 (module docstring); ``x1`` unused.
    ``restrict_M=True``: queries with ``|N(0, sigma_end^2)| < 0.005`` redraw
    ``m ~ U(0, int(0.7 M))`` (their ``restrict_M``). ``form="ifm"``: the IFM repository's
    ``Gaussian_mixing`` (``m = M N(0, 1)``, z clamped to ``[eps, L - eps]``); ``form="efm"``: the
    EFM repository's (``m ~ U(0, M)``, z not clamped)."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    sigma_end = _real("sigma_end", sigma_end)
    M = _real("M", M, allow_zero=True)
    tau = _real("tau", tau)
    _check_bool("restrict_M", restrict_M)
    if form not in ("ifm", "efm"):
        raise ValueError(
            f"form must be 'ifm' or 'efm' (whose repository's Gaussian_mixing), got {form!r}"
        )
    a, _, b = _pairs(x0, x1, b, need_x1=False)
    _check_generator(generator, a.device)
    if not (2 * eps < L):
        raise ValueError(f"eps must be < L/2, got eps={eps}, L={L}")
    D = a.shape[1]
    m = (_randn if form == "ifm" else _rand)((b,), a, generator) * M
    z0 = (_randn((b,), a, generator) * sigma_end).abs()
    if restrict_M:
        m = _restrict_m(m, z0, M, a, generator)
    # (1 + tau)^m in float64: exp(191 * 5 * log 1.03) overflows float32 for rare m
    factor = torch.exp(m.double() * math.log1p(tau))
    z = z0.double() * factor
    if form == "ifm":
        z = z.clamp(eps, L - eps)
    u = uniform_on_sphere(b, D, a, generator)
    radius = (_randn((b, D), a, generator) * sigma_end).norm(dim=1).double() * factor
    x = a + u * radius.to(a.dtype)[:, None]
    return torch.cat([z.to(a.dtype)[:, None], x], dim=1)


def efm(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    sigma: float = 1.0,
    z_noise: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EFM queries: ``z ~ U(eps, L - eps)``, ``x = (1 - z/L) A + (z/L) C + sigma * N(0, I_D)``;
    with ``z_noise=True`` z also gets ``sigma * N(0, 1)`` (queries may leave the gap)."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    sigma = _real("sigma", sigma, allow_zero=True)
    if not isinstance(z_noise, bool):
        raise TypeError(f"z_noise must be a bool, got {z_noise!r}")
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    z = _uniform_z(b, L, eps, a, generator)
    x = _interpolate(a, c, z, L) + sigma * _randn(a.shape, a, generator)
    if z_noise:
        z = z + sigma * _randn((b,), a, generator)
    return torch.cat([z[:, None], x], dim=1)


def noised_cos(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    mltp: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The authors' code's noised interpolation (``"Uniform"`` with ``noised_interpolation``):
    :func:`uniform` plus ``mltp * (1 + cos(2 pi (z - L/2) / L)) * u``, ``u`` uniform on the
    sphere; ``mltp`` is their ``noised_interpolation_mltp``."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    mltp = _real("mltp", mltp, allow_zero=True)
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    z = _uniform_z(b, L, eps, a, generator)
    t = (z / L)[:, None]
    x = c * t + (1 - t) * a
    u = uniform_on_sphere(b, a.shape[1], a, generator)
    x = x + mltp * u * (1 + torch.cos(2 * math.pi / L * (z - L / 2)))[:, None]
    return torch.cat([z[:, None], x], dim=1)


def both_side(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = 0.5,
    sigma_end: float = 0.8,
    M: float = 4.0,
    tau: float = 0.03,
    form: str = "toy",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The authors' ``both_side`` queries (module docstring); ``form="toy"`` (their
    ``ToyTrain``, defaults of their toy notebook) or ``"image"`` (one-sided image form)."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    sigma_end = _real("sigma_end", sigma_end)
    M = _real("M", M, allow_zero=True)
    tau = _real("tau", tau, allow_zero=True)
    if form not in ("toy", "image"):
        raise ValueError(f"form must be 'toy' (their ToyTrain) or 'image', got {form!r}")
    if not (2 * eps < L):
        raise ValueError(f"eps must be < L/2, got eps={eps}, L={L}")
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    if form == "toy":
        if b % 2:
            raise ValueError(
                f"b must be even for form='toy' (half the queries at each plate), got {b}"
            )
        h = b // 2
        sides = []
        for sign, base in ((1.0, eps), (-1.0, L - eps)):
            mult = (1 + tau) ** (_rand((h,), a, generator) * M)
            offset = (_randn((h,), a, generator) * sigma_end).abs()
            sides.append(base + sign * offset * mult)
        z = _redraw_outside(torch.cat(sides), L, eps, a, generator)
        w = ((z - eps) / L)[:, None]
    else:
        mult = (1 + tau) ** (_rand((b,), a, generator) * M)
        z = (_randn((b,), a, generator) * sigma_end).abs() * mult + eps
        z = _redraw_outside(z, L, eps, a, generator)
        w = (z / L)[:, None]
    x = c * w + (1 - w) * a
    return torch.cat([z[:, None], x], dim=1)


def uniform_mixing(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    L: float,
    b: int | None = None,
    eps: float = EPS,
    sigma_end: float = PFGM_SIGMA_END,
    M: float = PFGM_M,
    tau: float = PFGM_TAU,
    restrict_M: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The authors' ``Uniform_mixing`` (module docstring)."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    sigma_end = _real("sigma_end", sigma_end)
    M = _real("M", M, allow_zero=True)
    tau = _real("tau", tau)
    _check_bool("restrict_M", restrict_M)
    if not (2 * eps < L):
        raise ValueError(f"eps must be < L/2, got eps={eps}, L={L}")
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    m = _rand((b,), a, generator) * M
    z0 = (_randn((b,), a, generator) * sigma_end).abs()
    if restrict_M:
        m = _restrict_m(m, z0, M, a, generator)
    z = (z0 * (1 + tau) ** m).clamp(eps, L - eps)
    t = (z / L)[:, None]
    return torch.cat([z[:, None], c * t + (1 - t) * a], dim=1)


def mesh(
    x0: torch.Tensor | None = None,
    x1: torch.Tensor | None = None,
    *,
    L: float | None = None,
    b: int,
    ranges,
    num_points: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The EFM toy's ``"mesh"`` queries: the regular grid of ``num_points`` values per z-first
    column over ``ranges = [(lo_0, hi_0), (lo_1, hi_1), ...]`` (column 0 = z; the first column
    varies slowest), shuffled by a random permutation, first ``b`` points. Their ``KV`` dict maps
    to ``ranges=[KV["x"], KV["y"], KV["z"]]`` (their mesh puts ``KV["x"]`` in column 0). The data
    and ``L`` are not used (they may be passed for the common signature); dtype and device come
    from ``x0`` when given (float32 on the CPU otherwise)."""
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be a positive int, got {num_points!r}")
    try:
        rng = [(float(lo), float(hi)) for lo, hi in ranges]
    except (TypeError, ValueError):
        raise TypeError(
            "ranges must be a sequence of (lo, hi) pairs, one per z-first column"
        ) from None
    if len(rng) < 2:
        raise ValueError(
            f"ranges needs one (lo, hi) pair per z-first column (>= 2), got {len(rng)}"
        )
    like = x0 if isinstance(x0, torch.Tensor) else torch.empty(0)
    total = num_points ** len(rng)
    if isinstance(b, bool) or not isinstance(b, int) or not (1 <= b <= total):
        raise ValueError(f"b must be an int in [1, {total}] (grid points), got {b!r}")
    _check_generator(generator, like.device)
    axes = [
        torch.linspace(lo, hi, num_points, dtype=like.dtype, device=like.device) for lo, hi in rng
    ]
    grid = torch.cartesian_prod(*axes)
    perm = torch.randperm(total, generator=generator, device=like.device)
    return grid[perm][:b]


SAMPLERS = {
    "uniform": uniform,
    "noised": noised,
    "noised_cos": noised_cos,
    "pfgm": pfgm,
    "efm": efm,
    "both_side": both_side,
    "uniform_mixing": uniform_mixing,
    "mesh": mesh,
}


def get_point_sampler(sampler: str | Callable = "uniform", **kwargs) -> Callable:
    """A sampler ``fn(x0, x1, *, L, b, generator) -> [b, D+1]`` from a name in
    :data:`SAMPLERS` or a callable, with ``kwargs`` (e.g. ``noise_scale=0.5``) bound."""
    if callable(sampler):
        fn = sampler
    elif isinstance(sampler, str) and sampler.lower() in SAMPLERS:
        fn = SAMPLERS[sampler.lower()]
    else:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)} or a callable, got {sampler!r}")
    return functools.partial(fn, **kwargs) if kwargs else fn
