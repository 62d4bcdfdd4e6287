"""Drop-in replacements of the authors' field objects (their config object, their call forms).

One line swaps the field in any of their trainers::

    field = ifm.compat.IFM(config)              # instead of their IFM(config)
    E = field.GroundTruth(points, quarks, anti_quarks)
    func = ifm.compat.ground_truth(config)      # their ToyTrain / BaseODESolver form:
    E = func(points, x, y, config)              #   func(points, x, y, config)
    efm = ifm.compat.EFM(config)                # EFM notebooks and src/ode.py:
    E = efm.GroundTruth(perturbed_samples_vec=p, p_samples=x, q_samples=y)

Every result is the **raw** field their ``GroundTruth`` returns (they normalise it themselves),
computed by the fused kernels on z-first ``[n, D+1]`` tensors; it agrees with theirs within
their float32 error (tests against outputs recorded from their code, ``tests/data/authors/``).

Config layouts
--------------
Both of their layouts are read; every value their code reads is honoured or rejected with an
error naming it, never replaced by a default:

* image notebooks (IFM repository): ``config.L``, ``config.SCALE``, ``config.K``, ``config.D``,
  ``config.DIM``, ``config.training.field_type``, ``config.training.plan_type``,
  ``config.data.name``;
* toy notebook (IFM repository): ``config.L``, ``config.DIM`` and, under ``config.ifm``,
  ``SCALE``, ``K``, ``D``, ``field_type``, ``plan_type``, ``name``;
* EFM: ``config.L``, ``config.DIM``, ``config.training.stability`` / ``.gamma`` (EFM
  repository) or ``config.efm.training.stability`` / ``.gamma`` (the IFM toy notebook).

Values
------
* ``DIM`` must equal the tensors' width ``D + 1`` (their exponents and shapes use it).
* ``D`` (end-region length) must equal ``pi / (2K)``: the fused field derives it from ``K``;
  their code would use both, and a config where they differ has a kink at ``z = D`` that the
  kernels do not model, so it is rejected. When ``D`` is absent it is ``pi / (2K)``.
* ``field_type`` must be ``"Shifted"`` (their ``"Unshifted"`` branch ends in their own
  ``ValueError``, so it never returns a field).
* ``plan_type``: ``"Independent"`` uses the pairs as given; ``"Optimal"`` solves the plan inside
  ``GroundTruth`` as theirs does: exact EMD with the unsquared Euclidean cost between the
  z-augmented rows (``ifm.plans.ot_pairing(cost="augmented", z_first=True)``), then pairs
  ``quarks[j]`` with ``anti_quarks[pairing[j]]`` (their barycentric map of a permutation plan).
* ``name == "2d_discrete"``: the sum over **all** ``B1 x B2`` quark-antiquark pairs (``B1`` and
  ``B2`` may differ; ``plan_type`` is then not read, as in theirs), computed by the fused kernel
  on chunks of at most ``pair_chunk`` pairs whose raw fields are summed, so memory stays
  ``O(pair_chunk * (D+1))``, never ``B1 * B2``. Normalise after the sum, as their trainer does.
* EFM ``stability``: ``True`` or ``False`` are both accepted. Their two branches compute the same
  weights ``w_j / sum_k w_k`` with ``w_j = ||x - y_j||^-(D+1)``, scaled by each row's minimum
  distance or not, which is the same softmax in exact arithmetic; the kernels always compute it
  in the log domain, so both give one result. Where their unstabilised weights underflow (at
  large D every ``w_j`` rounds to 0 and they return NaN) ours stays finite and equals their
  stabilised result: accepting ``False`` never returns a different number where theirs is
  defined (checked against their recorded outputs at D = 2, both flags, and at D = 64 where
  theirs is NaN).
* EFM ``gamma``: the per-plate normalisation ``sqrt(D+1) E / (||E|| + gamma)`` of the EFM
  repository. ``plate_norm=False`` is the copy inside the IFM repository, which skips it (and
  does not read ``gamma``).
* ``device`` is not read: the result is on the inputs' device (their code allocates on
  ``config.device`` and fails when the inputs are elsewhere). ``field_form`` is read by none of
  their functions.
* ``dist_behind`` (``config.efm.dist_behind`` in their toy notebook) is read by none of their
  functions; it is checked to be a positive number when present and kept as ``.dist_behind``,
  for a solver such as :func:`ifm.sampling.dipole_efm` (their behind-plate continuation is set
  by ``config.ode.behind_step`` / ``behind_num_steps``).
"""

from __future__ import annotations

import math

import torch

from . import fields, plans

__all__ = ["IFM", "EFM", "ground_truth", "PAIR_CHUNK"]

#: pairs per fused call in the ``"2d_discrete"`` sum
PAIR_CHUNK = 1 << 16


def _has(obj, name: str) -> bool:
    return obj is not None and hasattr(obj, name)


def _get(obj, name: str, where: str):
    if not _has(obj, name):
        raise ValueError(f"{where} has no attribute {name!r} (the authors' code reads it)")
    return getattr(obj, name)


def _number(value, where: str, *, positive: bool = True) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and not value > 0)
        or (not positive and value < 0)
    ):
        raise ValueError(
            f"{where} must be a {'positive' if positive else 'non-negative'} finite "
            f"number, got {value!r}"
        )
    return float(value)


def _dim(config) -> int:
    dim = _get(config, "DIM", "config")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"config.DIM must be an int >= 2 (D + 1), got {dim!r}")
    return dim


def _check_tensors(dim: int, **tensors):
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name} must be a z-first torch.Tensor [n, D+1], got {type(t).__name__}"
            )
        if t.dim() != 2 or t.shape[1] != dim:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but config.DIM = {dim} "
                "(z-first [n, D+1] tensors, DIM = D + 1)"
            )


class IFM:
    """The authors' IFM field object: ``GroundTruth(points, quarks, anti_quarks)`` returns the
    raw string field of their ``"Shifted"`` form (module docstring for the config values).

    Calling the object also accepts their four-argument form ``(points, quarks, anti_quarks,
    config)``; the fourth argument must be this object's config (:func:`ground_truth` gives a
    function that reads the config passed at each call)."""

    def __init__(self, config, *, backend: str = "auto", pair_chunk: int = PAIR_CHUNK):
        if config is None:
            raise TypeError(
                "config must be the authors' config object (L, DIM and SCALE, K, D, "
                "field_type, plan_type, name), got None"
            )
        if isinstance(pair_chunk, bool) or not isinstance(pair_chunk, int) or pair_chunk < 1:
            raise ValueError(f"pair_chunk must be a positive int, got {pair_chunk!r}")
        self.config = config
        self.backend = backend
        self.pair_chunk = pair_chunk
        toy = _has(config, "ifm")
        sec, where = (config.ifm, "config.ifm") if toy else (config, "config")
        self.layout = "toy" if toy else "image"
        self.L = _number(_get(config, "L", "config"), "config.L")
        self.DIM = _dim(config)
        self.SCALE = _number(_get(sec, "SCALE", where), f"{where}.SCALE")
        self.K = _number(_get(sec, "K", where), f"{where}.K")
        self.d = math.pi / (2 * self.K)
        if _has(sec, "D"):
            D = _number(sec.D, f"{where}.D")
            if not math.isclose(D, self.d, rel_tol=1e-9, abs_tol=0.0):
                raise ValueError(
                    f"{where}.D = {D!r} but pi / (2 K) = {self.d!r} with K = "
                    f"{self.K!r}: the fused field derives the end region from K "
                    "(set D = pi / (2 K))"
                )
        train, twhere = (
            (sec, where) if toy else (_get(config, "training", "config"), "config.training")
        )
        data, dwhere = (sec, where) if toy else (_get(config, "data", "config"), "config.data")
        self.name = _get(data, "name", dwhere)
        self.field_type = _get(train, "field_type", twhere)
        if self.field_type != "Shifted":
            raise ValueError(
                f"{twhere}.field_type must be 'Shifted' (the authors' 'Unshifted' "
                f"branch raises in their own code), got {self.field_type!r}"
            )
        self.discrete = self.name == "2d_discrete"
        self.plan_type = None
        if not self.discrete or _has(train, "plan_type"):
            self.plan_type = _get(train, "plan_type", twhere)
            if self.plan_type not in ("Independent", "Optimal"):
                raise ValueError(
                    f"{twhere}.plan_type must be 'Independent' or 'Optimal', got {self.plan_type!r}"
                )

    def _field(self, points, quarks, anti_quarks):
        return fields.string_field(
            points,
            quarks,
            anti_quarks,
            L=self.L,
            sigma0=self.SCALE,
            K=self.K,
            normalize=False,
            backend=self.backend,
        )

    def pair(self, quarks: torch.Tensor, anti_quarks: torch.Tensor) -> torch.Tensor:
        """``anti_quarks`` reordered by ``plan_type`` as their ``GroundTruth`` does."""
        if self.plan_type != "Optimal":
            return anti_quarks
        if quarks.shape[0] != anti_quarks.shape[0]:
            raise ValueError(
                f"plan_type='Optimal' needs as many quarks as anti_quarks, got "
                f"{quarks.shape[0]} and {anti_quarks.shape[0]}"
            )
        return anti_quarks[plans.ot_pairing(quarks, anti_quarks, cost="augmented", z_first=True)]

    def _all_pairs(self, points, quarks, anti_quarks):
        B1, B2 = quarks.shape[0], anti_quarks.shape[0]
        rows = max(1, self.pair_chunk // B2)  # quarks per chunk
        total = torch.zeros_like(points)
        for i in range(0, B1, rows):
            q = quarks[i : i + rows]
            qq = q.repeat_interleave(B2, dim=0)
            aa = anti_quarks.repeat(q.shape[0], 1)
            total += self._field(points, qq, aa)
        return total

    def GroundTruth(
        self,
        points: torch.Tensor,
        quarks: torch.Tensor,  # noqa: N802 (their name)
        anti_quarks: torch.Tensor,
    ) -> torch.Tensor:
        _check_tensors(self.DIM, points=points, quarks=quarks, anti_quarks=anti_quarks)
        if self.discrete:
            return self._all_pairs(points, quarks, anti_quarks)
        if quarks.shape[0] != anti_quarks.shape[0]:
            raise ValueError(
                f"quarks and anti_quarks must have the same number of rows, got "
                f"{quarks.shape[0]} and {anti_quarks.shape[0]}"
            )
        return self._field(points, quarks, self.pair(quarks, anti_quarks))

    def __call__(self, points, quarks, anti_quarks, config=None):
        if config is not None and config is not self.config:
            raise ValueError(
                "the fourth argument must be the config this IFM was built from; "
                "use ifm.compat.ground_truth(config) for a per-call config"
            )
        return self.GroundTruth(points, quarks, anti_quarks)


class EFM:
    """The authors' EFM field object: ``GroundTruth(perturbed_samples_vec, p_samples,
    q_samples)`` (positional or by their keyword names) returns the raw two-plate target
    ``-E+ + E-`` with their per-plate normalisation (``plate_norm=False``: the IFM repository's
    copy, without it). Module docstring for the config values."""

    def __init__(self, config, *, plate_norm: bool = True, backend: str = "auto"):
        if config is None:
            raise TypeError(
                "config must be the authors' config object (L, DIM, training), got None"
            )
        if not isinstance(plate_norm, bool):
            raise TypeError(f"plate_norm must be a bool, got {plate_norm!r}")
        self.config = config
        self.backend = backend
        toy = _has(config, "efm")
        sec, where = (config.efm, "config.efm") if toy else (config, "config")
        self.layout = "toy" if toy else "image"
        self.L = _number(_get(config, "L", "config"), "config.L")
        self.DIM = _dim(config)
        training = _get(sec, "training", where)
        self.stability = _get(training, "stability", f"{where}.training")
        if not isinstance(self.stability, bool):
            raise ValueError(
                f"{where}.training.stability must be True or False, got {self.stability!r}"
            )
        self.gamma: float | None = None
        if plate_norm:
            self.gamma = _number(
                _get(training, "gamma", f"{where}.training"),
                f"{where}.training.gamma",
                positive=False,
            )
        self.dist_behind: float | None = None
        if _has(sec, "dist_behind"):
            self.dist_behind = _number(sec.dist_behind, f"{where}.dist_behind")

    def GroundTruth(
        self,
        perturbed_samples_vec: torch.Tensor,  # noqa: N802 (their name)
        p_samples: torch.Tensor,
        q_samples: torch.Tensor,
    ) -> torch.Tensor:
        _check_tensors(
            self.DIM,
            perturbed_samples_vec=perturbed_samples_vec,
            p_samples=p_samples,
            q_samples=q_samples,
        )
        return fields.coulomb_field(
            perturbed_samples_vec,
            p_samples,
            q_samples,
            plate_gamma=self.gamma,
            normalize=False,
            backend=self.backend,
        )

    def __call__(self, points, p_samples, q_samples, config=None):
        if config is not None and config is not self.config:
            raise ValueError(
                "the fourth argument must be the config this EFM was built from; "
                "use ifm.compat.ground_truth(config, 'efm') for a per-call config"
            )
        return self.GroundTruth(points, p_samples, q_samples)


def ground_truth(config=None, kind: str = "ifm", **kwargs):
    """Their field function ``func(points, x, y, config)`` (``ToyTrain``, ``Train``,
    ``BaseODESolver``) for ``kind="ifm"`` (string field) or ``"efm"`` (Coulomb). The config is
    read at each call (``config`` here is the one used when a call passes none); ``kwargs``
    (``backend``, ``plate_norm``, ...) go to :class:`IFM` / :class:`EFM`."""
    if not isinstance(kind, str) or kind.lower() not in ("ifm", "efm"):
        raise ValueError(f"kind must be 'ifm' or 'efm', got {kind!r}")
    cls = IFM if kind.lower() == "ifm" else EFM
    cache = {}

    def func(points, x, y, config_=None):
        cfg = config_ if config_ is not None else config
        if cfg is None:
            raise TypeError("func(points, x, y, config): no config given")
        obj = cache.get(id(cfg))
        if obj is None or obj.config is not cfg:
            obj = cache[id(cfg)] = cls(cfg, **kwargs)
        return obj.GroundTruth(points, x, y)

    if config is not None:
        cls(config, **kwargs)  # reject a bad config now, not at the first call
    return func
