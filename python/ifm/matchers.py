"""torchcfm-style matchers: one call turns a pair of minibatches into a regression problem.

::

    matcher = ifm.matchers.IFMMatcher(L=6.0, sigma0=1.0, K=10.0)
    z, x_tilde, target = matcher.sample_location_and_target(x0, x1)
    f_x, f_z = net(x_tilde, z)                 # the network (ifm.sampling signature): x part first
    loss = matcher.loss((f_z, f_x), target)    # the loss: z part first, like Target(z, x)

The two orders differ on purpose: the network follows :mod:`ifm.sampling` (``net(x, z) ->
(f_x, f_z)``), while predictions and targets follow the z-first layout of :mod:`ifm.fields`
(``Target(z, x)``; a z-first ``[b, D+1]`` tensor is accepted as well). Passing ``(f_x, f_z)``
to ``loss`` is rejected unless the shapes happen to match, so keep the z part first.

``x0`` is the batch on the plate z = 0 (P: quarks / positive charges) and ``x1`` the batch on the
plate z = L (Q: antiquarks / negative charges); both ``[B, ...]`` with the same per-sample shape
(``[B, D]`` vectors or ``[B, C, H, W]`` images: flattened to ``D = C*H*W`` for the field and
restored on return). One call:

1. pairs the batches with the plan (``plan=``: ``"independent"``, ``"ot"``, ``"sinkhorn"`` or a
   callable, see :mod:`ifm.plans`): ``x1 <- x1[pairing]``;
2. draws ``b`` query points from the first ``b`` pairs with the point sampler (``points=``, see
   :mod:`ifm.points`);
3. evaluates the normalised target at the queries with the fused field (``backend=`` passes
   through to :mod:`ifm.fields`; ``"auto"`` picks the compiled kernel when it is built), using all
   ``B`` pairs (IFM) or charges (EFM).

Return shapes of ``sample_location_and_target`` (``data_shape = x0.shape[1:]``):

* ``z``: ``[b]`` -- the queries' z;
* ``x_tilde``: ``[b, *data_shape]`` -- the queries' x part, in the inputs' shape;
* ``target``: a :class:`Target` named tuple ``(z, x)`` with ``target.z`` ``[b]`` and ``target.x``
  ``[b, *data_shape]``; ``target.flat()`` is the z-first ``[b, D+1]`` tensor that
  :mod:`ifm.fields` returned.

With ``return_pairing=True`` a fourth element, the ``[B]`` pairing, is returned.

Distributed training (``group=``, see :mod:`ifm.distributed`): each rank passes its own batches;
the queries are drawn from the rank's own pairs and their targets superpose the pairs (IFM) or
charges (EFM) of every rank of the group, so the Monte Carlo field is a sum over the global batch.
The plan stays per rank by default: a minibatch plan is what IFM-MB prescribes, each rank's pairing
is already a coupling of its batch (their union one of the global batch), and it costs no
communication, whereas a plan on the gathered batch needs the ``[W B, W B]`` cost matrix and a
solve whose cost grows with the world size (``O((W B)^3)`` for exact OT) on the critical path of
every step. ``global_plan=True`` gathers both batches, solves the plan on the group's first rank,
broadcasts it, and pairs each rank's ``x0`` with its partners from the gathered ``x1``; the
returned pairing then indexes the gathered ``x1`` (rank order).

``loss(prediction, target)`` is the mean squared error over all ``b * (D+1)`` entries; the
prediction is a ``(z part, x part)`` pair shaped like the target -- ``(f_z, f_x)``, the reverse
of the network's return order -- or a z-first ``[b, D+1]`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import _checks, fields, plans
from . import points as _points
from .distributed import STRATEGIES as _STRATEGIES

_WORLD = "world"

__all__ = ["Target", "IFMMatcher", "EFMMatcher", "zfirst"]


class Target(NamedTuple):
    """Normalised field target: ``z`` ``[b]`` and ``x`` ``[b, *data_shape]``."""

    z: torch.Tensor
    x: torch.Tensor

    def flat(self) -> torch.Tensor:
        """The z-first ``[b, D+1]`` tensor."""
        return zfirst(self.z, self.x)


def zfirst(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[b, D+1]`` from ``z`` ``[b]`` (or ``[b, 1]``) and ``x`` ``[b, ...]``."""
    return torch.cat([z.reshape(-1, 1).to(x.dtype), x.reshape(x.shape[0], -1)], dim=1)


def _as_flat(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dim() != 2:
            raise ValueError(
                f"{name} must be a z-first [b, D+1] tensor or a (z, x) pair, got "
                f"shape {tuple(value.shape)}"
            )
        return value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, torch.Tensor) for v in value)
    ):
        z, x = value
        if z.numel() != x.shape[0]:
            raise ValueError(
                f"{name}: the z part has {z.numel()} entries but the x part has {x.shape[0]} rows"
            )
        return zfirst(z, x)
    raise TypeError(
        f"{name} must be a (z, x) pair of tensors or a z-first [b, D+1] tensor, got "
        f"{type(value).__name__}"
    )


def _is_process_group(group) -> bool:
    return torch.distributed.is_available() and isinstance(group, torch.distributed.ProcessGroup)


class _FieldMatcher:
    """Shared plan -> points -> target pipeline; subclasses define :meth:`_field`."""

    default_points = "uniform"

    def __init__(
        self,
        L: float,
        *,
        plan: str | Callable = "independent",
        points: str | Callable | None = None,
        b: int | None = None,
        plan_kwargs: dict | None = None,
        points_kwargs: dict | None = None,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        group=None,
        strategy: str = "auto",
        global_plan: bool = False,
    ):
        if (
            isinstance(L, bool)
            or not isinstance(L, (int, float))
            or not (L > 0)
            or not math.isfinite(L)
        ):
            raise ValueError(f"L must be a positive finite number, got {L!r}")
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ValueError(f"b (queries per batch) must be a positive int or None, got {b!r}")
        if not isinstance(backend, str) or backend not in ("auto",) + fields.BACKENDS:
            raise ValueError(
                f"backend must be one of {('auto',) + fields.BACKENDS}, got {backend!r}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if not isinstance(global_plan, bool):
            raise TypeError(f"global_plan must be a bool, got {global_plan!r}")
        if global_plan and group is None:
            raise ValueError(
                "global_plan=True solves the plan on the batch gathered over a "
                'process group: pass group= ("world" or a ProcessGroup)'
            )
        if group is not None and not (group == _WORLD or _is_process_group(group)):
            raise TypeError(
                f'group must be None (this process only), "world" or a '
                f"torch.distributed ProcessGroup, got {group!r}"
            )
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        self.group, self.strategy, self.global_plan = group, strategy, global_plan
        self.L = float(L)
        self.b = b
        self.backend = backend
        self.generator = generator
        self.plan = plans.get_plan(plan, **(plan_kwargs or {}))
        self.point_sampler = _points.get_point_sampler(
            points if points is not None else self.default_points, **(points_kwargs or {})
        )

    # ------------------------------------------------------------------------------------
    def _field(self, queries: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):
        raise NotImplementedError

    def _field_kwargs(self) -> dict:
        """``group`` / ``strategy`` for :mod:`ifm.distributed` (empty without a group)."""
        if self.group is None:
            return {}
        return dict(group=None if self.group == _WORLD else self.group, strategy=self.strategy)

    def _pair(self, a: torch.Tensor, c: torch.Tensor):
        """``(pairing, partners of a)``: per rank, or on the gathered batch (``global_plan``)."""
        if not self.global_plan:
            pairing = self.plan(a, c)
            return pairing, c[pairing]
        from . import distributed

        group = distributed.resolve_group(None if self.group == _WORLD else self.group)
        a_all, counts = distributed.all_gather_rows(a, group)
        c_all, _ = distributed.all_gather_rows(c, group)
        pairing_all = distributed.broadcast_from_first(
            # on the CPU: a CUDA tensor in an object collective is unpickled on rank 0's GPU
            lambda: torch.as_tensor(self.plan(a_all, c_all), dtype=torch.long).cpu(),
            group,
        )
        rank = torch.distributed.get_rank(group)
        start = sum(counts[:rank])
        pairing = pairing_all[start : start + a.shape[0]].to(a.device)
        return pairing, c_all[pairing]

    def _check_batches(self, x0, x1):
        _points.check_batch("x0", x0)
        _points.check_partner("x1", x1, "x0", x0)
        if self.b is not None and self.b > x0.shape[0]:
            raise ValueError(f"b={self.b} query points need at least b pairs, got B={x0.shape[0]}")

    def sample_location_and_target(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        return_pairing: bool = False,
    ):
        """``(z [b], x_tilde [b, *data_shape], Target)`` (see the module docstring)."""
        self._check_batches(x0, x1)
        data_shape = x0.shape[1:]
        B = x0.shape[0]
        a = x0.reshape(B, -1)
        c = x1.reshape(B, -1)
        pairing, c = self._pair(a, c)
        gen = generator if generator is not None else self.generator
        b = self.b if self.b is not None else B
        q = self.point_sampler(a, c, L=self.L, b=b, generator=gen)
        lower = torch.cat([torch.zeros_like(a[:, :1]), a], dim=1)
        upper = torch.cat([torch.full_like(c[:, :1], self.L), c], dim=1)
        t = self._field(q, lower, upper)
        z = q[:, 0]
        x_tilde = q[:, 1:].reshape(b, *data_shape)
        target = Target(t[:, 0], t[:, 1:].reshape(b, *data_shape))
        if return_pairing:
            return z, x_tilde, target, pairing
        return z, x_tilde, target

    @staticmethod
    def loss(prediction, target) -> torch.Tensor:
        """Mean squared error over all ``b * (D+1)`` entries (z and x parts together)."""
        p = _as_flat("prediction", prediction)
        t = _as_flat("target", target)
        if p.shape != t.shape:
            raise ValueError(
                f"prediction has {tuple(p.shape)} entries (z-first) but target has {tuple(t.shape)}"
            )
        return torch.mean((p - t.to(p.dtype)) ** 2)


class IFMMatcher(_FieldMatcher):
    """Interaction Field Matching: the string field target (FIELDS.md §2), normalised (§4).

    Args:
        L: plate distance. sigma0: string width. K or d: end-region curvature (``d = pi/(2K)``).
        plan: ``"independent"`` (default), ``"ot"`` (IFM-MB), ``"sinkhorn"`` or a callable
            ``(x0, x1) -> pairing``; ``plan_kwargs`` go to it (e.g. ``{"cost": "sqeuclidean"}``).
        points: query sampler, default ``"uniform"`` (FIELDS.md §5); ``"noised"`` is the paper's
            noised interpolation; ``points_kwargs`` go to it.
        b: queries per batch (default: all B pairs). stable, eps: see
            :func:`ifm.fields.string_field`. backend: passes through to :mod:`ifm.fields`.
        generator: default ``torch.Generator`` for the query sampler.
        group: ``None`` (default): this process's batch only. ``"world"`` or a
            ``torch.distributed`` ProcessGroup: targets over the group's global batch
            (:mod:`ifm.distributed`; module docstring above). strategy: ``"auto"`` (default),
            ``"allgather"``, ``"ring"`` or ``"queries"``, see :mod:`ifm.distributed`.
            global_plan: solve the plan on the gathered batch instead of per rank (default
            ``False``; why: module docstring).
    """

    def __init__(
        self,
        L: float,
        sigma0: float = 1.0,
        K: float | None = None,
        d: float | None = None,
        *,
        stable: bool = False,
        eps: float = 1e-5,
        **kwargs,
    ):
        super().__init__(L, **kwargs)
        if K is None and d is None:
            K = math.pi / self.L  # tube s = sigma0 sin(pi z / L) over the whole gap
        self.sigma0, self.K, self.d = sigma0, K, d
        self.stable, self.eps = stable, eps
        # validate the geometry once, with a clear error naming the argument
        _checks.string_geometry(self.L, sigma0, K, d)

    def _field(self, queries, lower, upper):
        field = fields.string_field
        if self.group is not None:
            from . import distributed

            field = distributed.string_field
        return field(
            queries,
            lower,
            upper,
            L=self.L,
            sigma0=self.sigma0,
            K=self.K,
            d=self.d,
            normalize=True,
            eps=self.eps,
            stable=self.stable,
            backend=self.backend,
            **self._field_kwargs(),
        )


class EFMMatcher(_FieldMatcher):
    """Electrostatic Field Matching: two-plate Coulomb target ``-E+ + E-`` (FIELDS.md §3),
    normalised (§4); positive charges ``x0`` at z = 0, negative charges ``x1`` at z = L.

    Query points (default ``points="efm"``): ``z ~ U(eps, L - eps)`` and the interpolation of the
    pair plus isotropic Gaussian noise ``sigma * N(0, I_D)`` on x, ``sigma = 1`` by default
    (``points_kwargs={"sigma": ...}``), so the queries also cover the region around the segments
    where the Coulomb lines bend. The target superposes all B charges of each plate.

    Args:
        L: plate distance. plate_gamma: per-plate normalisation constant (``None``: the IFM
            repository's copy without it); default 5.0 (EFM images), the EFM toys use 1e-7.
        eps: final normalisation constant. Others (``group``, ``strategy``, ``global_plan``
            included) as :class:`IFMMatcher`.
    """

    default_points = "efm"

    def __init__(
        self,
        L: float,
        *,
        plate_gamma: float | None = fields.EFM_PLATE_GAMMA,
        eps: float = 1e-5,
        **kwargs,
    ):
        super().__init__(L, **kwargs)
        if plate_gamma is not None:
            plate_gamma = _checks.check_scalar("plate_gamma", plate_gamma, allow_zero=True)
        self.plate_gamma, self.eps = plate_gamma, eps

    def _field(self, queries, lower, upper):
        field = fields.coulomb_field
        if self.group is not None:
            from . import distributed

            field = distributed.coulomb_field
        return field(
            queries,
            lower,
            upper,
            plate_gamma=self.plate_gamma,
            normalize=True,
            eps=self.eps,
            backend=self.backend,
            **self._field_kwargs(),
        )
