"""Drop-in adapters for the authors' trainers (their config object, their call signatures).

The authors' trainers build a field object from their config and call
``GroundTruth(points, quarks, antiquarks)`` (IFM) or ``GroundTruth(points, positive, negative)``
(EFM) on z-first ``[n, D+1]`` tensors, then normalise the result themselves. The classes here
read the same config and return the same **raw** field (``normalize=False``) from the fused
kernels, so swapping is one line in their trainer::

    field = ifm.compat.IFM(config)          # instead of their IFM(config)
    E = field.GroundTruth(points, quarks, antiquarks)

Config attributes read (``types.SimpleNamespace`` works as a stand-in):

* ``L`` (plate distance), ``SCALE`` (string width sigma0), ``K`` (curvature; the end region is
  ``d = pi / (2K)``), ``DIM`` (= D + 1, checked against the tensors' width when present);
* ``training.plan_type``: ``"Independent"`` or ``"Optimal"`` (used by :meth:`IFM.pair`);
* EFM: ``training.stability`` (stabilised weights flag), ``training.gamma`` (per-plate
  normalisation constant, EFM repository form). ``plate_norm=False`` gives the IFM repository's
  copy of EFM, which skips the per-plate normalisation.

``pair(quarks, antiquarks)`` applies the config's plan the way the authors' code does: for
``"Optimal"`` an exact EMD with the unsquared Euclidean cost on the **z-augmented** vectors (the
solve whose result their trainer keeps; it reproduces ``string_ot_plan.npz``), and returns
``antiquarks[pairing]``. Use :mod:`ifm.plans` directly for the plan on x (FIELDS.md §5).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import fields, plans

__all__ = ["IFM", "EFM", "ground_truth"]


def _attr(obj, name: str, owner: str = "config"):
    if not hasattr(obj, name):
        raise ValueError(f"{owner} has no attribute {name!r} (the authors' config defines it)")
    return getattr(obj, name)


class _Base:
    def __init__(self, config, backend: str):
        if config is None:
            raise TypeError("config must be the authors' config object (attributes L, SCALE, K, "
                            "DIM, training), got None")
        self.config = config
        self.L = float(_attr(config, "L"))
        self.DIM = getattr(config, "DIM", None)
        self.backend = backend
        training = getattr(config, "training", None)
        self.plan_type = getattr(training, "plan_type", "Independent") if training else "Independent"

    def _check_dim(self, points: torch.Tensor):
        if self.DIM is not None and isinstance(points, torch.Tensor) and points.dim() == 2 \
                and points.shape[1] != int(self.DIM):
            raise ValueError(f"points has {points.shape[1]} columns but config.DIM = {self.DIM} "
                             "(z-first [n, D+1] tensors, DIM = D + 1)")

    def pair(self, quarks: torch.Tensor, antiquarks: torch.Tensor) -> torch.Tensor:
        """``antiquarks`` reordered by ``config.training.plan_type`` (z-first ``[B, D+1]``)."""
        kind = str(self.plan_type).lower()
        if kind in ("independent", "ind"):
            return antiquarks
        if kind in ("optimal", "ot", "emd"):
            return antiquarks[plans.ot_pairing(quarks, antiquarks, cost="augmented",
                                               z_first=True)]
        raise ValueError(f"config.training.plan_type must be 'Independent' or 'Optimal', got "
                         f"{self.plan_type!r}")


class IFM(_Base):
    """The authors' IFM field object: ``GroundTruth(points, quarks, antiquarks)`` -> raw string
    field (``ifm.fields.string_field(..., normalize=False)``) with ``L``, ``sigma0 = SCALE``,
    ``K`` from the config."""

    def __init__(self, config, *, backend: str = "auto"):
        super().__init__(config, backend)
        self.SCALE = float(_attr(config, "SCALE"))
        self.K = float(_attr(config, "K"))

    def GroundTruth(self, points: torch.Tensor, quarks: torch.Tensor,  # noqa: N802 (their name)
                    antiquarks: torch.Tensor) -> torch.Tensor:
        self._check_dim(points)
        return fields.string_field(points, quarks, antiquarks, L=self.L, sigma0=self.SCALE,
                                   K=self.K, normalize=False, backend=self.backend)

    __call__ = GroundTruth


class EFM(_Base):
    """The authors' EFM field object: ``GroundTruth(points, positive, negative)`` -> raw two-plate
    Coulomb target ``-E+ + E-`` with ``training.stability`` and per-plate gamma
    ``training.gamma`` (``plate_norm=False``: no per-plate normalisation, the IFM repo's copy)."""

    def __init__(self, config, *, plate_norm: bool = True, backend: str = "auto"):
        super().__init__(config, backend)
        if not isinstance(plate_norm, bool):
            raise TypeError(f"plate_norm must be a bool, got {plate_norm!r}")
        training = _attr(config, "training")
        self.stability = bool(getattr(training, "stability", True))
        self.gamma: Optional[float] = None
        if plate_norm:
            self.gamma = float(_attr(training, "gamma", "config.training"))

    def GroundTruth(self, points: torch.Tensor, positive: torch.Tensor,  # noqa: N802
                    negative: torch.Tensor) -> torch.Tensor:
        self._check_dim(points)
        return fields.coulomb_field(points, positive, negative, plate_gamma=self.gamma, normalize=False, backend=self.backend)

    __call__ = GroundTruth


def ground_truth(config, kind: str = "ifm", **kwargs):
    """``GroundTruth`` callable for ``kind="ifm"`` (string field) or ``"efm"`` (Coulomb)."""
    if not isinstance(kind, str) or kind.lower() not in ("ifm", "efm"):
        raise ValueError(f"kind must be 'ifm' or 'efm', got {kind!r}")
    return (IFM if kind.lower() == "ifm" else EFM)(config, **kwargs).GroundTruth
