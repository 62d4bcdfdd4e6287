"""Following the learned field from one plate to the other (FIELDS.md §6).

Field lines are integrated with **z as the integration variable**: ``dx/dz = f_x / f_z``.

Network signature
-----------------
``net(x, z) -> (f_x, f_z)`` with ``x`` the current positions, shaped like the ``x`` given to
:func:`euler` (``[n, D]``, or e.g. ``[n, C, H, W]`` for images), and ``z`` a ``[n]`` tensor (each
sample's current z). It returns ``f_x`` shaped like ``x`` and ``f_z`` of shape ``[n]`` (``[n, 1]``
is accepted). A network written for z-first ``[n, D+1]`` tensors is adapted with
:func:`zfirst_net`. The network is called under ``torch.no_grad()``.

Orientation and directions
--------------------------
The trained fields point from the plate z = 0 (P: quarks / positive charges) to the plate z = L
(Q: antiquarks / negative charges): ``f_z > 0`` between the plates (``orientation=+1``; pass
``orientation=-1`` for a field trained the other way). Both directions follow the same lines:

* ``direction="forward"`` (P -> Q): from z = 0 up to z = L;
* ``direction="backward"`` (Q -> P): from z = L down to z = 0 (the authors' generation direction).

Steps
-----
Give ``steps`` (number of Euler steps to cross the full gap, step ``L / steps``),
``step_size`` (the last step of each sample is clipped so it lands exactly on the end plate:
``ceil(L / step_size)`` steps), or ``grid``: an increasing 1-D sequence of z values from 0 to L
(both included) whose consecutive differences are the steps, e.g. :func:`plate_refined_grid`,
which resolves the end regions of the string field (width ``d = pi / (2K)``, where the lines bend
onto the charges) with extra steps; a sample between two grid values first steps to the next
one. Each sample carries its own z (``z_start`` may differ per sample,
default: the start plate); a sample whose remaining distance is below the step takes a clipped
step and is then frozen on the plate, so **every sample stops exactly on its own end plate** and
is not evaluated again. Explicit Euler, evaluated at the start of each step:
``x <- x + (f_x / f_z') * dz``, ``z <- z + dz``.

The ``f_z`` guard
-----------------
With ``c = orientation * f_z / ||f||`` (the cosine between the field and the travel axis), a step
is **guarded** when ``c < min_cos`` -- ``f_z`` is near zero or has the wrong sign (a reversed
line). A guarded step uses ``f_z' = orientation * max(|f_z|, min_cos * ||f||)`` instead of
``f_z``: the sign is forced to the field's orientation and the slope is bounded,
``||dx/dz|| <= sqrt(1 / min_cos^2 - 1)`` (about 20 for the default ``min_cos = 0.05``). A sample
whose whole output is zero (``||f|| = 0``) moves straight along z (and counts as guarded). The
result counts guarded
sample-steps in total, per sample, and how many of them had the wrong sign.

The authors' solvers
--------------------
* :func:`rk45` -- adaptive Runge-Kutta 4(5) of ``scipy.integrate.solve_ivp`` (the solver of
  PFGM's and the EFM repository's ``get_rk45_sampler_pfgm``) over all samples at once, defaults
  as theirs: ``rtol = atol = 1e-4``, ``method="RK45"``. ``variable="z"`` integrates
  ``dx/dz = f_x / f_z`` in z (IFM; the same ``f_z`` guard as :func:`euler`);
  ``variable="log_z"`` is their change of variable ``z = exp(t)`` (EFM / PFGM): ``t`` runs from
  ``log(z_from)`` to ``log(z_to)`` with ``dx/dt = z f_x / (f_z + 1e-5)``, ``dz/dt = z``, where
  their sampler goes from ``L`` down to ``eps = 1e-3``.
* :func:`fixed_step_euler` -- their ``LearnedODESolver`` (toys) / ``LearnedImageODESolver``
  (images): every sample moves ``x <- x +/- step / (f_z + gamma) * f`` until all have passed the
  end plate (no clipping: the last step overshoots, as theirs).
* :func:`dipole_efm` -- EFM's ``LearnDippoleEFMODESolver``: ``floor(L / step)`` steps
  ``v <- v + (step / f_z + gamma) f``, then the samples whose field still points forward
  (``f_z > 0``) go on behind the second plate with steps of length ``behind_step`` along the
  field for ``behind_num_steps`` steps, each sample until it is back within ``margin = 0.05`` of
  the plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._batch import check_batch

__all__ = [
    "SampleResult",
    "ODEResult",
    "euler",
    "rk45",
    "fixed_step_euler",
    "dipole_efm",
    "zfirst_net",
    "plate_refined_grid",
]


@dataclass
class SampleResult:
    """Output of :func:`euler`.

    Attributes:
        samples: end points, shaped like the input ``x`` (every sample on the end plate).
        z: ``[n]`` final z of every sample (exactly the end plate's z).
        nfe: number of network calls (batched evaluations).
        calls_per_sample: ``[n]`` long, the Euler steps (network evaluations) each sample took.
        guarded: total number of guarded sample-steps (``f_z`` small or of the wrong sign).
        guarded_per_sample: ``[n]`` long, guarded steps per sample.
        reversed: guarded sample-steps where ``orientation * f_z < 0`` (wrong sign).
        trajectory: with ``return_trajectory=True``, a ``[nfe + 1, n, D+1]`` z-first tensor of the
            states before every call and at the end (frozen samples repeat); else ``None``.
    """

    samples: torch.Tensor
    z: torch.Tensor
    nfe: int
    calls_per_sample: torch.Tensor
    guarded: int
    guarded_per_sample: torch.Tensor
    reversed: int
    trajectory: torch.Tensor | None = field(default=None, repr=False)


def zfirst_net(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """Adapt ``model([n, D+1] z-first) -> [n, D+1]`` to the ``net(x, z) -> (f_x, f_z)`` signature
    (``x`` is flattened to ``[n, D]`` for the model and ``f_x`` restored to ``x``'s shape)."""

    def net(x: torch.Tensor, z: torch.Tensor):
        flat = x.reshape(x.shape[0], -1)
        out = model(torch.cat([z.reshape(-1, 1).to(flat.dtype), flat], dim=1))
        return out[:, 1:].reshape(x.shape), out[:, 0]

    return net


def plate_refined_grid(L: float, steps: int, d: float, end_steps: int) -> torch.Tensor:
    """z grid for :func:`euler`: ``end_steps`` equal steps across each end region ``[0, d]`` and
    ``[L - d, L]`` and ``steps`` equal steps across the middle ``[d, L - d]`` (float64)."""
    for name, v in (("steps", steps), ("end_steps", end_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(L, (int, float)) and L > 0 and math.isfinite(L)):
        raise ValueError(f"L must be a positive finite number, got {L!r}")
    if not (isinstance(d, (int, float)) and 0 < d < L / 2):
        raise ValueError(f"d must be in (0, L/2), got {d!r}")
    L, d = float(L), float(d)
    left = torch.linspace(0.0, d, end_steps + 1, dtype=torch.float64)
    mid = torch.linspace(d, L - d, steps + 1, dtype=torch.float64)
    right = torch.linspace(L - d, L, end_steps + 1, dtype=torch.float64)
    return torch.cat([left, mid[1:], right[1:]])


def _check_grid(grid, L):
    try:
        g = torch.as_tensor(grid, dtype=torch.float64).flatten().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"grid must be a 1-D sequence of z values, got {type(grid).__name__}"
        ) from None
    if g.numel() < 2 or not bool((g[1:] > g[:-1]).all()):
        raise ValueError("grid must be strictly increasing with at least 2 values")
    if abs(float(g[0])) > 1e-9 * L or abs(float(g[-1]) - L) > 1e-9 * L:
        raise ValueError(
            f"grid must start at 0 and end at L={L}, got {float(g[0])} .. {float(g[-1])}"
        )
    g[0], g[-1] = 0.0, L
    return g


def _check_args(net, x, L, direction, steps, step_size, orientation, min_cos):
    if not callable(net):
        raise TypeError(
            f"net must be callable as net(x, z) -> (f_x, f_z), got {type(net).__name__}"
        )
    check_batch("x", x, "n")
    if (
        isinstance(L, bool)
        or not isinstance(L, (int, float))
        or not (L > 0)
        or not math.isfinite(L)
    ):
        raise ValueError(f"L must be a positive finite number, got {L!r}")
    if direction not in ("forward", "backward"):
        raise ValueError(
            f"direction must be 'forward' (P->Q, z: 0 -> L) or 'backward' "
            f"(Q->P, z: L -> 0), got {direction!r}"
        )
    if (steps is None) == (step_size is None):
        raise ValueError("give exactly one of steps (int), step_size (float) and grid")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if step_size is not None and (
        isinstance(step_size, bool)
        or not isinstance(step_size, (int, float))
        or not (step_size > 0)
        or not math.isfinite(step_size)
    ):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    if orientation not in (1, -1):
        raise ValueError(f"orientation must be +1 or -1, got {orientation!r}")
    if isinstance(min_cos, bool) or not isinstance(min_cos, (int, float)) or not (0 < min_cos < 1):
        raise ValueError(f"min_cos must be in (0, 1), got {min_cos!r}")


def _check_output(f_x, f_z, x_active):
    n = x_active.shape[0]
    if not isinstance(f_x, torch.Tensor) or not isinstance(f_z, torch.Tensor):
        raise TypeError("net(x, z) must return a pair of tensors (f_x, f_z)")
    if f_x.shape != x_active.shape:
        raise ValueError(
            f"net returned f_x of shape {tuple(f_x.shape)}, expected x's shape "
            f"{tuple(x_active.shape)}"
        )
    if f_z.numel() != n:
        raise ValueError(f"net returned f_z of shape {tuple(f_z.shape)}, expected [{n}]")


@torch.no_grad()
def euler(
    net: Callable,
    x: torch.Tensor,
    *,
    L: float,
    direction: str = "forward",
    steps: int | None = None,
    step_size: float | None = None,
    grid=None,
    z_start: torch.Tensor | None = None,
    orientation: int = 1,
    min_cos: float = 0.05,
    return_trajectory: bool = False,
) -> SampleResult:
    """Euler integration of ``dx/dz = f_x / f_z`` from one plate to the other (module docstring).

    Args:
        net: ``net(x, z) -> (f_x, f_z)``; ``x`` shaped like the input ``x``, ``z`` ``[n]``.
        x: ``[n, D]`` (or ``[n, C, H, W]``) start positions on the start plate.
        L: plate distance.
        direction: ``"forward"`` (z: 0 -> L) or ``"backward"`` (z: L -> 0).
        steps / step_size / grid: exactly one; ``steps`` per full gap (step ``L / steps``);
            ``grid``: z values 0 = g_0 < ... < g_m = L, the step boundaries.
        z_start: optional ``[n]`` start z per sample (default: the start plate).
        orientation: +1 when the field points from z = 0 to z = L (the package's targets).
        min_cos: guard threshold on ``orientation * f_z / ||f||``.
        return_trajectory: also return the ``[nfe + 1, n, D+1]`` z-first path.
    """
    if grid is not None:
        if steps is not None or step_size is not None:
            raise ValueError("give exactly one of steps (int), step_size (float) and grid")
        steps = 1  # placeholder for the checks below
    _check_args(net, x, L, direction, steps, step_size, orientation, min_cos)
    L = float(L)
    if grid is not None:
        grid = _check_grid(grid, L).to(x.device)
        h = float((grid[1:] - grid[:-1]).min())
    else:
        h = L / steps if steps is not None else float(step_size)
    sign = 1.0 if direction == "forward" else -1.0
    z_end = L if direction == "forward" else 0.0
    n = x.shape[0]
    x = x.clone()
    if z_start is None:
        z = torch.full((n,), L - z_end, dtype=torch.float64, device=x.device)
    else:
        if not isinstance(z_start, torch.Tensor) or z_start.shape != (n,):
            raise ValueError(
                f"z_start must be a [{n}] tensor, got "
                f"{getattr(z_start, 'shape', type(z_start).__name__)}"
            )
        z = z_start.to(dtype=torch.float64, device=x.device).clone()
        if bool(((z < 0) | (z > L)).any()):
            raise ValueError(f"z_start must lie in [0, L={L}]")
    calls = torch.zeros(n, dtype=torch.long, device=x.device)
    guarded_ps = torch.zeros(n, dtype=torch.long, device=x.device)
    n_reversed = 0
    nfe = 0
    traj: list[torch.Tensor] = []

    def snapshot():
        traj.append(torch.cat([z.to(x.dtype)[:, None], x.reshape(n, -1)], dim=1).clone())

    # z is tracked in float64; remainders below tol (round-off) count as arrived
    tol = 1e-9 * h
    max_iter = 10 * (math.ceil(L / h) + 1) + (0 if grid is None else grid.numel())
    while True:
        remaining = (z_end - z) * sign
        active = (remaining > tol).nonzero().flatten()
        if active.numel() == 0:
            break
        if nfe >= max_iter:  # cannot happen with positive steps; guards against a logic error
            raise RuntimeError("euler: integration did not reach the end plate")
        if return_trajectory:
            snapshot()
        xa, za = x[active], z[active]
        f_x, f_z = net(xa, za.to(x.dtype))
        _check_output(f_x, f_z, xa)
        nfe += 1
        f_x = f_x.to(x.dtype)
        f_z = f_z.reshape(-1).to(x.dtype)
        fx_flat = f_x.reshape(f_x.shape[0], -1)
        norm = torch.sqrt(fx_flat.pow(2).sum(1) + f_z.pow(2))
        oriented = orientation * f_z
        floor = min_cos * norm
        guard = (oriented < floor) | (norm == 0)
        n_reversed += int((oriented < 0).sum())
        fz_used = torch.where(guard, orientation * torch.maximum(f_z.abs(), floor), f_z)
        moving = fz_used != 0  # only when the whole output is zero
        if grid is None:
            dz = torch.minimum(remaining[active], torch.full_like(za, h)) * sign
            last = remaining[active] <= h * (1 + 1e-9)
        else:  # next grid value beyond z in the travel direction
            if sign > 0:
                nxt = grid[
                    torch.searchsorted(grid, za + tol, right=True).clamp(max=grid.numel() - 1)
                ]
            else:
                nxt = grid[(torch.searchsorted(grid, za - tol, right=False) - 1).clamp(min=0)]
            dz = nxt - za
            last = nxt == z_end
        slope = torch.where(
            moving[:, None],
            fx_flat / torch.where(moving, fz_used, 1.0)[:, None],
            torch.zeros_like(fx_flat),
        )
        x[active] = xa + (slope * dz.to(x.dtype)[:, None]).reshape(xa.shape)
        # land exactly on the plate on the last step
        z[active] = torch.where(last, torch.full_like(za, z_end), za + dz)
        calls[active] += 1
        guarded_ps[active] += guard.long()
    if return_trajectory:
        snapshot()
    return SampleResult(
        samples=x,
        z=z.to(x.dtype),
        nfe=nfe,
        calls_per_sample=calls,
        guarded=int(guarded_ps.sum()),
        guarded_per_sample=guarded_ps,
        reversed=n_reversed,
        trajectory=torch.stack(traj) if return_trajectory else None,
    )


# --------------------------------------------------------------------------------------------
# the authors' solvers
# --------------------------------------------------------------------------------------------
@dataclass
class ODEResult:
    """Output of :func:`rk45`, :func:`fixed_step_euler` and :func:`dipole_efm`.

    Attributes:
        samples: end points, shaped like the input ``x``.
        z: ``[n]`` final z of every sample.
        nfe: number of network calls (batched evaluations).
        message: the integrator's status message (``rk45``), else ``""``.
    """

    samples: torch.Tensor
    z: torch.Tensor
    nfe: int
    message: str = ""


def _positive(name, v):
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not (v > 0)
        or not math.isfinite(v)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def _check_start(net, x, z_start):
    if not callable(net):
        raise TypeError(
            f"net must be callable as net(x, z) -> (f_x, f_z), got {type(net).__name__}"
        )
    check_batch("x", x, "n")
    n = x.shape[0]
    if z_start is None:
        return None
    if not isinstance(z_start, torch.Tensor) or z_start.shape != (n,):
        raise ValueError(
            f"z_start must be a [{n}] tensor, got "
            f"{getattr(z_start, 'shape', type(z_start).__name__)}"
        )
    return z_start.to(device=x.device, dtype=x.dtype)


def _call(net, x, z):
    f_x, f_z = net(x, z)
    _check_output(f_x, f_z, x)
    return f_x.to(x.dtype).reshape(x.shape[0], -1), f_z.reshape(-1).to(x.dtype)


@torch.no_grad()
def rk45(
    net: Callable,
    x: torch.Tensor,
    *,
    L: float,
    direction: str = "forward",
    variable: str = "z",
    z_from: float | None = None,
    z_to: float | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    method: str = "RK45",
    orientation: int = 1,
    min_cos: float = 0.05,
) -> ODEResult:
    """Adaptive integration of the field lines with ``scipy.integrate.solve_ivp`` (module
    docstring).

    Args:
        net: ``net(x, z) -> (f_x, f_z)``. x: ``[n, D]`` (or ``[n, C, H, W]``) start positions.
        L: plate distance. direction: ``"forward"`` (z: 0 -> L) or ``"backward"`` (z: L -> 0);
            sets the default ``z_from`` / ``z_to``.
        variable: ``"z"`` (integrate in z) or ``"log_z"`` (in ``t = log z``, as their PFGM
            sampler; needs ``z_from, z_to > 0``, default ``z_to = 1e-3`` backward, their
            ``eps``; default ``z_from = 1e-3`` forward).
        z_from, z_to: start and end z (defaults: the plates, see ``variable``).
        rtol, atol, method: passed to ``solve_ivp`` (their defaults 1e-4, 1e-4, ``"RK45"``).
        orientation, min_cos: the ``f_z`` guard of :func:`euler` (``variable="z"`` only).
    """
    from scipy import integrate

    check_batch("x", x, "n")
    if not callable(net):
        raise TypeError(
            f"net must be callable as net(x, z) -> (f_x, f_z), got {type(net).__name__}"
        )
    L = _positive("L", L)
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if variable not in ("z", "log_z"):
        raise ValueError(f"variable must be 'z' or 'log_z', got {variable!r}")
    if orientation not in (1, -1):
        raise ValueError(f"orientation must be +1 or -1, got {orientation!r}")
    if isinstance(min_cos, bool) or not isinstance(min_cos, (int, float)) or not (0 < min_cos < 1):
        raise ValueError(f"min_cos must be in (0, 1), got {min_cos!r}")
    rtol, atol = _positive("rtol", rtol), _positive("atol", atol)
    low = 1e-3 if variable == "log_z" else 0.0
    forward = direction == "forward"
    z0 = float(z_from) if z_from is not None else (low if forward else L)
    z1 = float(z_to) if z_to is not None else (L if forward else low)
    if variable == "log_z" and not (z0 > 0 and z1 > 0):
        raise ValueError(f"variable='log_z' needs z_from, z_to > 0, got {z0}, {z1}")
    if z0 == z1:
        raise ValueError(f"z_from and z_to must differ, got {z0}")
    n, shape, dtype = x.shape[0], x.shape, x.dtype
    nfe = 0

    def fz_guarded(f_x, f_z):
        norm = torch.sqrt(f_x.pow(2).sum(1) + f_z.pow(2))
        floor = min_cos * norm
        guard = (orientation * f_z < floor) | (norm == 0)
        fz = torch.where(guard, orientation * torch.maximum(f_z.abs(), floor), f_z)
        return torch.where(fz == 0, torch.ones_like(fz), fz)

    def rhs(s, y):
        nonlocal nfe
        nfe += 1
        if variable == "z":
            xs = torch.as_tensor(y, dtype=dtype, device=x.device).reshape(shape)
            f_x, f_z = _call(net, xs, torch.full((n,), s, dtype=dtype, device=x.device))
            return (f_x / fz_guarded(f_x, f_z)[:, None]).double().cpu().numpy().reshape(-1)
        z = math.exp(s)
        state = torch.as_tensor(y, dtype=dtype, device=x.device).reshape(n, -1)
        xs = state[:, 1:].reshape(shape)
        f_x, f_z = _call(net, xs, torch.full((n,), z, dtype=dtype, device=x.device))
        drift = torch.cat(
            [torch.full((n, 1), z, dtype=dtype, device=x.device), z * f_x / (f_z + 1e-5)[:, None]],
            dim=1,
        )
        return drift.double().cpu().numpy().reshape(-1)

    flat = x.detach().double().cpu().reshape(n, -1)
    if variable == "z":
        y0, span = flat.numpy().reshape(-1), (z0, z1)
    else:
        y0 = torch.cat([torch.full((n, 1), z0, dtype=torch.float64), flat], 1).numpy().reshape(-1)
        span = (math.log(z0), math.log(z1))
    sol = integrate.solve_ivp(rhs, span, y0, rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"rk45: solve_ivp failed: {sol.message}")
    end = torch.as_tensor(sol.y[:, -1]).reshape(n, -1)
    if variable == "log_z":
        end = end[:, 1:]
    samples = end.to(dtype=dtype, device=x.device).reshape(shape)
    return ODEResult(
        samples=samples,
        z=torch.full((n,), z1, dtype=dtype, device=x.device),
        nfe=nfe,
        message=str(sol.message),
    )


@torch.no_grad()
def fixed_step_euler(
    net: Callable,
    x: torch.Tensor,
    *,
    L: float,
    step: float,
    direction: str = "forward",
    z_start: torch.Tensor | None = None,
    gamma: float = 0.0,
    z_stop: float | None = None,
    max_steps: int = 100_000,
) -> ODEResult:
    """The authors' fixed-step Euler along z (``LearnedODESolver`` forward,
    ``LearnedImageODESolver`` backward): ``v <- v + s * step / (f_z + gamma) * f`` with
    ``s = +1`` forward (until every z >= ``z_stop``, default L) or ``-1`` backward (until every
    z <= ``z_stop``, default their ``epsilon`` 1e-3; theirs tests the first sample only). Every
    sample takes every step (the last one may overshoot the plate, as theirs); ``z_start``
    defaults to the start plate. ``config.ode.step`` / ``config.ode.gamma`` are their
    ``step`` / ``gamma``."""
    z_start = _check_start(net, x, z_start)
    L = _positive("L", L)
    step = _positive("step", step)
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number, got {gamma!r}")
    forward = direction == "forward"
    stop = float(z_stop) if z_stop is not None else (L if forward else 1e-3)
    n = x.shape[0]
    z = (
        z_start
        if z_start is not None
        else torch.full((n,), 0.0 if forward else L, dtype=x.dtype, device=x.device)
    )
    v = torch.cat([z[:, None], x.reshape(n, -1)], dim=1)
    sign = 1.0 if forward else -1.0
    nfe = 0
    while bool((v[:, 0] < stop).any() if forward else (v[:, 0] > stop).any()):
        if nfe >= max_steps:
            raise RuntimeError(f"fixed_step_euler: not past z_stop={stop} after {max_steps} steps")
        f_x, f_z = _call(net, v[:, 1:].reshape(x.shape), v[:, 0].clone())
        nfe += 1
        f = torch.cat([f_z[:, None], f_x], dim=1)
        v = v + sign * (step / (f_z[:, None] + gamma)) * f
    return ODEResult(samples=v[:, 1:].reshape(x.shape), z=v[:, 0], nfe=nfe)


@torch.no_grad()
def dipole_efm(
    net: Callable,
    x: torch.Tensor,
    *,
    L: float,
    step: float,
    z_start: torch.Tensor | None = None,
    gamma: float = 0.0,
    behind_step: float = 1.5,
    behind_num_steps: int = 350,
    margin: float = 0.05,
    behind_norm: str = "batch",
) -> ODEResult:
    """EFM's two-plate solver with its continuation behind the second plate (module
    docstring); defaults ``behind_step = 1.5``, ``behind_num_steps = 350`` as their toy configs.

    ``behind_norm="batch"`` (theirs) divides each step by the norm of the whole
    ``[m, D+1]`` field of the ``m`` samples still moving (so the step shrinks with the batch);
    ``"row"`` divides each sample's field by its own norm (steps of exactly ``behind_step``).
    """
    z_start = _check_start(net, x, z_start)
    L = _positive("L", L)
    step = _positive("step", step)
    behind_step = _positive("behind_step", behind_step)
    if (
        isinstance(behind_num_steps, bool)
        or not isinstance(behind_num_steps, int)
        or behind_num_steps < 0
    ):
        raise ValueError(f"behind_num_steps must be an int >= 0, got {behind_num_steps!r}")
    if behind_norm not in ("batch", "row"):
        raise ValueError(f"behind_norm must be 'batch' (theirs) or 'row', got {behind_norm!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number, got {gamma!r}")
    n = x.shape[0]
    z = z_start if z_start is not None else torch.zeros(n, dtype=x.dtype, device=x.device)
    v = torch.cat([z[:, None], x.reshape(n, -1)], dim=1)
    nfe = 0

    def field(rows):
        nonlocal nfe
        nfe += 1
        f_x, f_z = _call(net, rows[:, 1:].reshape(rows.shape[0], *x.shape[1:]), rows[:, 0].clone())
        return torch.cat([f_z[:, None], f_x], dim=1)

    for _ in range(math.floor(L / step)):
        f = field(v)
        v = v + (step / f[:, :1] + gamma) * f
    f = field(v)
    start = f[:, 0] > 0
    mask = start
    for _ in range(behind_num_steps):
        idx = mask.nonzero().flatten()
        if idx.numel() == 0:
            break
        f_m = field(v[idx])
        scale = f_m.norm() if behind_norm == "batch" else f_m.norm(dim=1, keepdim=True)
        v[idx] = v[idx] + (behind_step / scale) * f_m
        mask = start & (v[:, 0] >= L + margin)
    return ODEResult(samples=v[:, 1:].reshape(x.shape), z=v[:, 0], nfe=nfe)
