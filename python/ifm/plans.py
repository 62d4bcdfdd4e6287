"""Transport plans between the two plates' minibatches (FIELDS.md §5).

A plan pairs the ``B`` quarks (plate z = 0) with the ``B`` antiquarks (plate z = L). Every function
here returns the **pairing**: a ``torch.long`` permutation index ``pairing`` of the second batch
such that ``x1[pairing]`` are the partners of ``x0`` (row ``j`` of ``x0`` is paired with row
``pairing[j]`` of ``x1``), on the inputs' device. Feed the fields
``ifm.fields.string_field(points, quarks, antiquarks[pairing], ...)``.

Inputs
------
``x0`` and ``x1`` are ``[B, ...]`` tensors of **data** (images ``[B, C, H, W]`` are flattened to
``[B, D]``). With ``z_first=True`` they are z-first ``[B, D+1]`` plate tensors and column 0 (z) is
dropped before the cost is computed: the cost is always a function of the data part only (the
plate offset enters only through ``cost="augmented"``, below).

Costs (``cost=``)
-----------------
* ``"euclidean"`` (default): ``||x0_i - x1_j||`` -- the **unsquared** Euclidean cost on the data
  part, the plan FIELDS.md §5 calls intended (IFM-MB).
* ``"sqeuclidean"``: ``||x0_i - x1_j||^2``.
* ``"augmented"``: ``sqrt(L^2 + ||x0_i - x1_j||^2)``, the unsquared Euclidean cost between the
  z-augmented vectors ``(0, x0_i)`` and ``(L, x1_j)``. This is what the authors' code actually
  solves last (their trainer solves twice, on x and then on the z-augmented vectors, and keeps the
  second); it reproduces ``tests/data/golden/string_ot_plan.npz``'s ``pairing``. It is **not** the
  Euclidean cost on x shifted by a constant: ``sqrt(L^2 + r^2) ~ L + r^2 / (2L)`` for ``r << L``,
  so for large ``L`` it behaves like the *squared* cost (on the golden case, L = 20, the squared
  cost gives the same pairing and the unsquared cost on x does not). Needs ``L`` (or
  ``z_first=True`` inputs, from whose z columns ``L`` is read).

Solvers
-------
* :func:`independent_pairing` -- the pairs as drawn (``arange(B)``).
* :func:`ot_pairing` -- exact EMD (POT's network simplex, ``ot.emd``) with uniform weights. For
  equal batches with uniform weights the optimal plan has a vertex that is a permutation matrix
  (scaled by 1/B) and the network simplex returns such a vertex; the permutation is read off as the
  row-wise argmax. Should the returned plan not be a permutation (e.g. the iteration limit was hit),
  the assignment maximising the plan's mass is solved on it instead (``scipy``'s
  ``linear_sum_assignment``). ``num_itermax`` defaults to 10^7 (POT's own default, 10^5, is hit
  at B ~ 1000-2000); when POT still reports the limit, an :class:`OTConvergenceWarning` is issued.
* :func:`sinkhorn_pairing` -- entropic OT (``ot.sinkhorn``, log-domain stabilised). The cost is
  divided by its maximum first, so ``reg`` is relative to the largest cost (scale-free). The
  Sinkhorn plan is dense; it is turned into a permutation by solving the linear assignment problem
  that maximises the total plan mass of the chosen entries (``linear_sum_assignment(P,
  maximize=True)``): every row gets exactly one partner, no conflicts, and when the plan is close
  to a permutation this is that permutation.

All costs are evaluated in float64 on the CPU (POT's solvers are CPU float64); with
``return_plan=True`` the solvers also return the ``[B, B]`` plan cast back to the inputs' dtype and
device.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ._batch import check_batch

__all__ = [
    "COSTS",
    "PLANS",
    "OTConvergenceWarning",
    "cost_matrix",
    "independent_pairing",
    "ot_pairing",
    "sinkhorn_pairing",
    "get_plan",
    "apply_plan",
]

COSTS = ("euclidean", "sqeuclidean", "augmented")
PLANS = ("independent", "ot", "sinkhorn")
DEFAULT_NUM_ITERMAX = 10_000_000


class OTConvergenceWarning(UserWarning):
    """POT stopped at its iteration limit before reaching the optimal plan."""


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_batches(x0, x1, z_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x0", x0), ("x1", x1)):
        check_batch(name, t)
    if not isinstance(z_first, bool):
        raise TypeError(f"z_first must be a bool, got {z_first!r}")
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(
            f"x0 and x1 must have the same batch size B (a plan here is a "
            f"permutation), got {x0.shape[0]} and {x1.shape[0]}"
        )
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x0 and x1 must have the same per-sample shape, got "
            f"{tuple(x0.shape[1:])} and {tuple(x1.shape[1:])}"
        )
    if x0.device != x1.device:
        raise ValueError(f"x1 is on {x1.device} but x0 is on {x0.device}")
    a, b = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
    if z_first:
        if x0.dim() != 2 or x0.shape[1] < 2:
            raise ValueError(
                f"with z_first=True, x0 and x1 must be z-first [B, D+1] tensors, got "
                f"shape {tuple(x0.shape)}"
            )
    return a, b


def _check_cost(cost: str) -> str:
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    return cost


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------
def cost_matrix(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    cost: str = "euclidean",
    z_first: bool = False,
    L: float | None = None,
) -> torch.Tensor:
    """``[B, B]`` float64 CPU cost matrix between ``x0`` and ``x1`` (see the module docstring).

    Differences are accumulated directly (``torch.cdist`` in float64), not through the
    ``|a|^2 + |b|^2 - 2ab`` expansion in the inputs' precision.
    """
    a, b = _check_batches(x0, x1, z_first)
    cost = _check_cost(cost)
    if z_first and cost == "augmented" and L is None:
        L = float((b[:, 0].double() - a[:, 0].double()).mean())
    if cost == "augmented":
        if L is None:
            raise ValueError("cost='augmented' needs the plate distance L (or z_first=True inputs)")
        if isinstance(L, bool) or not isinstance(L, (int, float)) or not math.isfinite(L):
            raise TypeError(f"L must be a finite real number, got {L!r}")
    if z_first:
        a, b = a[:, 1:], b[:, 1:]
    a64 = a.detach().to("cpu", torch.float64)
    b64 = b.detach().to("cpu", torch.float64)
    if not (torch.isfinite(a64).all() and torch.isfinite(b64).all()):
        raise ValueError("x0 and x1 must be finite (found NaN or inf)")
    sq = (
        ((a64[:, None, :] - b64[None, :, :]) ** 2).sum(-1)
        if a64.shape[0] <= 256
        else torch.cdist(a64, b64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    )
    if cost == "sqeuclidean":
        return sq
    if cost == "augmented":
        return torch.sqrt(sq + float(L) ** 2)
    return torch.sqrt(sq)


# --------------------------------------------------------------------------------------------
# plan -> permutation
# --------------------------------------------------------------------------------------------
def _assignment_on_plan(plan: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(plan, maximize=True)
    perm = np.empty(plan.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def _permutation_from_plan(plan: np.ndarray) -> np.ndarray:
    perm = plan.argmax(axis=1)
    B = plan.shape[0]
    is_perm = np.unique(perm).size == B and np.allclose(
        plan[np.arange(B), perm], 1.0 / B, rtol=1e-6, atol=1e-12
    )
    return perm.astype(np.int64) if is_perm else _assignment_on_plan(plan)


def _finish(perm: np.ndarray, plan: np.ndarray, like: torch.Tensor, return_plan: bool):
    pairing = torch.as_tensor(perm, dtype=torch.long, device=like.device)
    if return_plan:
        return pairing, torch.as_tensor(plan).to(device=like.device, dtype=like.dtype)
    return pairing


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------
def independent_pairing(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    z_first: bool = False,
    return_plan: bool = False,
    **unused,
):
    """Independent plan: the pairs as drawn, ``pairing = arange(B)``.

    Extra keyword arguments (``cost``, ``L``, ...) are accepted and ignored, so every plan can be
    called the same way.
    """
    _check_batches(x0, x1, z_first)
    B = x0.shape[0]
    pairing = torch.arange(B, device=x0.device)
    if return_plan:
        plan = torch.eye(B, dtype=x0.dtype, device=x0.device) / B
        return pairing, plan
    return pairing


def ot_pairing(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    cost: str = "euclidean",
    z_first: bool = False,
    L: float | None = None,
    num_itermax: int = DEFAULT_NUM_ITERMAX,
    return_plan: bool = False,
):
    """Minibatch OT plan (IFM-MB): exact EMD with uniform weights (see the module docstring).

    Returns ``pairing`` (``torch.long [B]``, ``x1[pairing]`` are the partners of ``x0``) or, with
    ``return_plan=True``, ``(pairing, plan)`` with the ``[B, B]`` plan in the inputs' dtype.
    Warns with :class:`OTConvergenceWarning` if POT hits ``num_itermax``.
    """
    import ot

    num_itermax = _check_positive_int("num_itermax", num_itermax)
    M = cost_matrix(x0, x1, cost=cost, z_first=z_first, L=L).numpy()
    B = M.shape[0]
    w = np.full(B, 1.0 / B)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, log = ot.emd(w, w, M, numItermax=num_itermax, log=True)
    hit = log.get("warning") is not None or any("numItermax" in str(c.message) for c in caught)
    for c in caught:
        if "numItermax" not in str(c.message):
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    if hit:
        warnings.warn(
            f"ifm.plans.ot_pairing: POT's EMD solver stopped at num_itermax="
            f"{num_itermax} before reaching the optimal plan (B={B}, "
            f"status: {log.get('warning')}); the pairing may be sub-optimal. Raise "
            "num_itermax.",
            OTConvergenceWarning,
            stacklevel=2,
        )
    return _finish(_permutation_from_plan(plan), plan, x0, return_plan)


def sinkhorn_pairing(
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    reg: float = 0.05,
    cost: str = "euclidean",
    z_first: bool = False,
    L: float | None = None,
    num_itermax: int = 10_000,
    stop_threshold: float = 1e-9,
    return_plan: bool = False,
):
    """Entropic (Sinkhorn) plan turned into a permutation (see the module docstring).

    ``reg`` is the entropic regularisation relative to the largest cost (the cost matrix is divided
    by its maximum). The dense plan is rounded to the permutation that maximises the total plan
    mass of the chosen entries (linear assignment on the plan). Warns with
    :class:`OTConvergenceWarning` if Sinkhorn did not converge within ``num_itermax``.
    """
    import ot

    if (
        isinstance(reg, bool)
        or not isinstance(reg, (int, float))
        or not (reg > 0)
        or not math.isfinite(reg)
    ):
        raise ValueError(f"reg must be a positive finite number, got {reg!r}")
    num_itermax = _check_positive_int("num_itermax", num_itermax)
    M = cost_matrix(x0, x1, cost=cost, z_first=z_first, L=L).numpy()
    B = M.shape[0]
    scale = M.max()
    if scale > 0:
        M = M / scale
    w = np.full(B, 1.0 / B)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = ot.sinkhorn(
            w,
            w,
            M,
            float(reg),
            method="sinkhorn_log",
            numItermax=num_itermax,
            stopThr=stop_threshold,
        )
    not_converged = False
    for c in caught:
        if "converge" in str(c.message).lower() or "numItermax" in str(c.message):
            not_converged = True
        else:
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    if not_converged:
        warnings.warn(
            f"ifm.plans.sinkhorn_pairing: Sinkhorn did not converge within num_itermax="
            f"{num_itermax} (B={B}, reg={reg}); raise num_itermax or reg.",
            OTConvergenceWarning,
            stacklevel=2,
        )
    if not np.isfinite(plan).all():
        raise FloatingPointError(f"Sinkhorn returned a non-finite plan (reg={reg}); raise reg")
    return _finish(_assignment_on_plan(plan), plan, x0, return_plan)


_SOLVERS = {"independent": independent_pairing, "ot": ot_pairing, "sinkhorn": sinkhorn_pairing}
_ALIASES = {
    "independent": "independent",
    "ind": "independent",
    "ot": "ot",
    "emd": "ot",
    "exact": "ot",
    "optimal": "ot",
    "sinkhorn": "sinkhorn",
}


def get_plan(plan: str | Callable = "independent", **kwargs) -> Callable:
    """A pairing function ``fn(x0, x1) -> pairing`` from a name or a callable.

    Names (case-insensitive): ``"independent"``; ``"ot"`` (aliases ``"emd"``, ``"exact"``,
    ``"optimal"`` -- the authors' config says ``"Optimal"``); ``"sinkhorn"``. ``kwargs`` are bound
    (e.g. ``cost="sqeuclidean"``, ``reg=0.1``). A callable is returned as is (with kwargs bound).
    """
    if callable(plan):
        fn = plan
    elif isinstance(plan, str) and plan.lower() in _ALIASES:
        fn = _SOLVERS[_ALIASES[plan.lower()]]
    else:
        raise ValueError(
            f"plan must be one of {PLANS} (or 'emd'/'optimal'), or a callable; got {plan!r}"
        )
    return functools.partial(fn, **kwargs) if kwargs else fn


def apply_plan(
    x0: torch.Tensor, x1: torch.Tensor, plan: str | Callable = "independent", **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, x1[pairing])``: the batches aligned row by row under ``plan``."""
    pairing = get_plan(plan, **kwargs)(x0, x1)
    return x0, x1[pairing]
