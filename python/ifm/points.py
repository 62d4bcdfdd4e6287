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

Images (``[B, C, H, W]``) may be passed directly: they are flattened to ``[B, D]``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Union

import torch

from ._checks import check_scalar as _real

__all__ = ["EPS", "uniform", "noised", "pfgm", "efm", "get_point_sampler", "SAMPLERS",
           "uniform_on_sphere", "noise_sigma"]

EPS = 1e-3
PFGM_SIGMA_END = 0.1
PFGM_M = 191
PFGM_TAU = 0.03


# --------------------------------------------------------------------------------------------
# checks and helpers
# --------------------------------------------------------------------------------------------
def check_batch(name: str, t, what: str = "B") -> None:
    """``t`` is a floating tensor ``[n, ...]`` with ``n >= 1`` and at least 2 dims."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [{what}, D] (or [{what}, C, H, W]), got "
                        f"{type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.dim() < 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be [{what}, D] (or [{what}, C, H, W]) with {what} >= 1, "
                         f"got shape {tuple(t.shape)}")


def check_partner(name: str, t, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` is a tensor with the shape, dtype and device of ``ref`` (aligned pairs)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped like {ref_name}, got "
                        f"{type(t).__name__}")
    if t.shape != ref.shape:
        raise ValueError(f"{ref_name} and {name} must have the same shape (aligned pairs), got "
                         f"{tuple(ref.shape)} and {tuple(t.shape)}")
    if t.dtype != ref.dtype or t.device != ref.device:
        raise TypeError(f"{name} ({t.dtype}, {t.device}) must have {ref_name}'s dtype and device "
                        f"({ref.dtype}, {ref.device})")


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
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device} but the data is on {device}")


def _rand(shape, like, generator):
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _randn(shape, like, generator):
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def uniform_on_sphere(n: int, D: int, like: torch.Tensor,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
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
def uniform(x0: torch.Tensor, x1: torch.Tensor, *, L: float, b: Optional[int] = None,
            eps: float = EPS, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``z ~ U(eps, L - eps)``, ``x = (1 - z/L) A + (z/L) C``: ``[b, D+1]`` z-first points."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    a, c, b = _pairs(x0, x1, b)
    _check_generator(generator, a.device)
    z = _uniform_z(b, L, eps, a, generator)
    return torch.cat([z[:, None], _interpolate(a, c, z, L)], dim=1)


def noised(x0: torch.Tensor, x1: torch.Tensor, *, L: float, b: Optional[int] = None,
           eps: float = EPS, noise_scale: float = 1.0,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
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


def pfgm(x0: torch.Tensor, x1: Optional[torch.Tensor] = None, *, L: float,
         b: Optional[int] = None, eps: float = EPS, sigma_end: float = PFGM_SIGMA_END,
         M: float = PFGM_M, tau: float = PFGM_TAU,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PFGM-style perturbation around the data plate z = 0 (module docstring); ``x1`` unused."""
    L = _real("L", L)
    eps = _real("eps", eps, allow_zero=True)
    sigma_end = _real("sigma_end", sigma_end)
    M = _real("M", M, allow_zero=True)
    tau = _real("tau", tau)
    a, _, b = _pairs(x0, x1, b, need_x1=False)
    _check_generator(generator, a.device)
    if not (2 * eps < L):
        raise ValueError(f"eps must be < L/2, got eps={eps}, L={L}")
    D = a.shape[1]
    m = M * _randn((b,), a, generator)
    # (1 + tau)^m in float64: exp(191 * 5 * log 1.03) overflows float32 for rare m
    factor = torch.exp(m.double() * math.log1p(tau))
    z = (sigma_end * _randn((b,), a, generator).abs()).double() * factor
    z = z.clamp(eps, L - eps)
    radius = (sigma_end * _randn((b, D), a, generator)).norm(dim=1).double() * factor
    u = uniform_on_sphere(b, D, a, generator)
    x = a + u * radius.to(a.dtype)[:, None]
    return torch.cat([z.to(a.dtype)[:, None], x], dim=1)


def efm(x0: torch.Tensor, x1: torch.Tensor, *, L: float, b: Optional[int] = None,
        eps: float = EPS, sigma: float = 1.0, z_noise: bool = False,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
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


SAMPLERS = {"uniform": uniform, "noised": noised, "pfgm": pfgm, "efm": efm}


def get_point_sampler(sampler: Union[str, Callable] = "uniform", **kwargs) -> Callable:
    """A sampler ``fn(x0, x1, *, L, b, generator) -> [b, D+1]`` from a name in
    :data:`SAMPLERS` or a callable, with ``kwargs`` (e.g. ``noise_scale=0.5``) bound."""
    if callable(sampler):
        fn = sampler
    elif isinstance(sampler, str) and sampler.lower() in SAMPLERS:
        fn = SAMPLERS[sampler.lower()]
    else:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)} or a callable, got "
                         f"{sampler!r}")
    return functools.partial(fn, **kwargs) if kwargs else fn
