"""Pure-PyTorch reference fields: the oracle every backend is tested against.

The code follows ``FIELDS.md`` (the contract shipped in the repository's docs) line by line.
:func:`string_field` and :func:`coulomb_field` compute in ``compute_dtype`` (default: the dtype
of ``points``) and return the dtype of ``points``. Evaluated in float64 they are the test
oracle; ``backend="reference"`` of :mod:`ifm.fields` evaluates float32 inputs with
``compute_dtype=torch.float64``, so that only its inputs and output are float32 and it meets the
parity rule (tests/data/golden/README.md); in float32 arithmetic they are the parity rule's
float32 stand-in for randomised cases.

Layout is z-first everywhere: an augmented point is ``(z, x)`` with ``z`` in column 0, so
tensors are ``[n, D + 1]``.

Three formulations are kept:

* :func:`string_field` -- vectorised, chunked over queries and pairs so that the largest
  temporary is ``[chunk_b, chunk_B, D]`` (bounded memory). Supports the ``stable``
  (log-domain) mode.
* :func:`string_field_loop` -- the authors' formulation: a Python loop over the pairs with
  per-pair masks, in the input dtype. It is slow on purpose: it is the baseline the benchmarks
  compare against.
* :func:`coulomb_field` -- Coulomb field of one or two plates, coefficients as a log-domain
  softmax (equal to the authors' stabilised and unstabilised weights wherever those are
  finite, and finite where they are not), chunked over queries.
* :func:`coulomb_field_materialized` -- the authors' ``[b, B, D+1]`` formulation with their
  stabilised / unstabilised weights, in the input dtype, kept as a baseline.

These functions do not validate their inputs; :mod:`ifm.fields` does.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "string_field",
    "string_field_loop",
    "coulomb_field",
    "coulomb_field_materialized",
    "normalize_rows",
    "combine_plates",
    "string_pair_terms",
    "string_offsets",
    "tube_width",
    "tube_slope",
    "STRING_R_EPS",
    "STRING_COS_EPS",
    "STRING_DEN_EPS",
    "STRING_TAN_EPS",
    "COULOMB_D_EPS",
]

# Constants of the authors' code (FIELDS.md §2, §3). Every backend uses the same values.
STRING_TAN_EPS = 1e-5  # kappa = K / (tan(K z) + 1e-5) on the left end region
STRING_R_EPS = 1e-11  # sin(alpha) / (r + 1e-11)
STRING_COS_EPS = 1e-8  # (cos(alpha) + 1e-8) * (s / sigma0)^D
STRING_DEN_EPS = 1e-2  # ... + 1e-2 in the weight's denominator
COULOMB_D_EPS = 1e-7  # (d + 1e-7) in the Coulomb weights


def _chunk(n: int, per_item: int, budget: int) -> int:
    return max(1, min(n, budget // max(per_item, 1)))


def tube_width(z: torch.Tensor, L: float, sigma0: float, K: float, d: float) -> torch.Tensor:
    """Tube width s(z) of FIELDS.md §2 (zero outside [0, L]).

    The right end uses ``sigma0 * sin(K (L - z))`` (equal to the authors'
    ``sigma0 * cos(K (z - L + d))`` because ``d = pi / (2K)``), which is exactly zero at ``z = L``.
    """
    left = z < d
    right = z > L - d
    s = torch.full_like(z, sigma0)
    s = torch.where(left, sigma0 * torch.sin(K * z), s)
    s = torch.where(right & ~left, sigma0 * torch.sin(K * (L - z)), s)
    inside = (z >= 0) & (z <= L)
    return torch.where(inside, s, torch.zeros_like(s))


def tube_slope(z: torch.Tensor, L: float, K: float, d: float) -> torch.Tensor:
    """Slope kappa(z) with tan(alpha) = r * kappa (FIELDS.md §2).

    Left end: ``K / (tan(K z) + 1e-5)``; straight middle: 0; right end: ``-K / tan(K (L - z))``
    (the well-conditioned form of the authors' ``K tan(pi - K (z - L + d))``; ``-inf`` at z = L).
    """
    left = z < d
    right = (z > L - d) & ~left
    zero = torch.zeros_like(z)
    kl = K / (torch.tan(K * torch.where(left, z, zero)) + STRING_TAN_EPS)
    kr = -K / torch.tan(K * torch.where(right, L - z, zero + 1.0))
    return torch.where(left, kl, torch.where(right, kr, zero))


def string_pair_terms(r2, s, kappa, sigma0, D):
    """Per-(query, pair) terms of FIELDS.md §2.

    Returns ``(expo, den, cos_a, sr)``: the pair weight is ``w = exp(expo) / den``, ``cos_a`` is
    the cosine of the slope angle and ``sr = sin(alpha) / (r + 1e-11)``. ``s``, ``kappa``
    are ``[b, 1]``; ``r2`` is ``[b, B]``.
    """
    r = torch.sqrt(r2)
    t = torch.where(r2 > 0, r * kappa, torch.zeros_like(r))  # tan(alpha); avoids 0 * inf
    cos_a = torch.rsqrt(1.0 + t * t)  # 0 where t is infinite
    sin_a = torch.where(torch.isinf(t), torch.sign(t), t * cos_a)
    sr = sin_a / (r + STRING_R_EPS)
    # exponent -r^2 / (2 s^2): at s == 0 (query on a plate) the limit is 0 for r == 0, -inf else
    s2 = 2.0 * s * s
    expo = torch.where(
        s2 > 0,
        -r2 / torch.where(s2 > 0, s2, torch.ones_like(s2)),
        torch.where(r2 > 0, torch.full_like(r2, -math.inf), torch.zeros_like(r2)),
    )
    den = (cos_a + STRING_COS_EPS) * (s / sigma0) ** D + STRING_DEN_EPS
    return expo, den, cos_a, sr


def string_offsets(x, tau, A, Delta):
    """rho_ij = x_i - (1 - tau_i) A_j - tau_i C_j, evaluated as ``(x_i - A_j) - tau_i Delta_j``.

    That order is the authors': near z = 0 (where the slope amplifies rho by ~1/z) ``x - A`` is
    exact in floating point, so float32 keeps the digits the field needs.
    """
    return (x[:, None, :] - A[None]) - tau[:, :, None] * Delta[None]


def normalize_rows(E: torch.Tensor, scale: float, eps: float) -> torch.Tensor:
    """``scale * E / (||E|| + eps)`` row-wise (FIELDS.md §4); a zero row stays zero (also for
    ``eps = 0``, where the formula is 0 / 0)."""
    norm = torch.linalg.vector_norm(E, dim=1, keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(E), scale * E / (norm + eps))


def string_field(
    points: torch.Tensor,
    quarks: torch.Tensor,
    antiquarks: torch.Tensor,
    *,
    L: float,
    sigma0: float,
    K: float,
    d: float | None = None,
    normalize: bool = False,
    eps: float = 1e-5,
    stable: bool = False,
    norm_scale: float | None = None,
    memory_budget: int = 1 << 24,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """String (IFM) field, vectorised and chunked. See :func:`ifm.fields.string_field`.

    ``memory_budget`` bounds the number of elements of the ``[chunk_b, chunk_B, D]`` temporary.
    In ``stable`` mode the raw field is returned in units of the row's largest pair weight
    (``E_i / max_j w_ij``, computed in the log domain), so its direction survives where every
    float weight underflows. The arithmetic is in ``compute_dtype`` (default the dtype of
    ``points``; the inputs are cast to it once); the result has the dtype of ``points``.
    """
    out_dtype = points.dtype
    work = out_dtype if compute_dtype is None else compute_dtype
    points, quarks, antiquarks = (t.to(work) for t in (points, quarks, antiquarks))
    if d is None:
        d = math.pi / (2.0 * K)
    b, DIM = points.shape
    D = DIM - 1
    z = points[:, :1]
    x = points[:, 1:]
    A = quarks[:, 1:]
    C = antiquarks[:, 1:]
    Delta = C - A
    nrm = torch.sqrt(L * L + (Delta * Delta).sum(1))  # ||(L, Delta_j)||
    nu = 1.0 / nrm
    tau = z / L
    s = tube_width(z, L, sigma0, K, d)
    kappa = tube_slope(z, L, K, d)
    inside = (z >= 0) & (z <= L)

    B = A.shape[0]
    cb = _chunk(b, B * max(D, 1), memory_budget)
    rows = []
    for i0 in range(0, b, cb):
        sl = slice(i0, i0 + cb)
        xi, ti = x[sl], tau[sl]
        cB = _chunk(B, xi.shape[0] * max(D, 1), memory_budget)
        # pass 1: r^2 from direct differences
        r2_parts = []
        for j0 in range(0, B, cB):
            rho = string_offsets(xi, ti, A[j0 : j0 + cB], Delta[j0 : j0 + cB])
            r2_parts.append((rho * rho).sum(-1))
        r2 = torch.cat(r2_parts, 1)
        expo, den, cos_a, sr = string_pair_terms(r2, s[sl], kappa[sl], sigma0, D)
        ins = inside[sl]
        if stable:
            logw = torch.where(ins, expo - torch.log(den), torch.full_like(expo, -math.inf))
            m = logw.amax(1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            w = torch.exp(logw - m)
        else:
            w = torch.where(ins, torch.exp(expo) / den, torch.zeros_like(expo))
        c1 = w * cos_a * nu[None, :]
        c2 = w * sr
        # pass 2: sums over pairs
        Ez = L * c1.sum(1, keepdim=True)
        Ex = c1 @ Delta
        for j0 in range(0, B, cB):
            rho = string_offsets(xi, ti, A[j0 : j0 + cB], Delta[j0 : j0 + cB])
            Ex = Ex + (c2[:, j0 : j0 + cB, None] * rho).sum(1)
        rows.append(torch.cat([Ez, Ex], 1))
    E = torch.cat(rows, 0)
    if normalize:
        E = normalize_rows(E, math.sqrt(DIM) if norm_scale is None else norm_scale, eps)
    return E.to(out_dtype)


def string_field_loop(
    points: torch.Tensor,
    quarks: torch.Tensor,
    antiquarks: torch.Tensor,
    *,
    L: float,
    sigma0: float,
    K: float,
    d: float | None = None,
    normalize: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The authors' formulation: a Python loop over the B pairs, each with boolean masks for
    the three z-regions and ``[b, D]`` temporaries. Same numbers as :func:`string_field`
    (up to rounding); kept as the benchmarks' baseline.
    """
    if d is None:
        d = math.pi / (2.0 * K)
    b, DIM = points.shape
    D = DIM - 1
    z = points[:, 0]
    x = points[:, 1:]
    E = torch.zeros_like(points)
    for j in range(quarks.shape[0]):
        A = quarks[j, 1:]
        C = antiquarks[j, 1:]
        n = torch.cat([points.new_tensor([L]), C - A])
        n = n / torch.linalg.vector_norm(n)
        tau = (z / L)[:, None]
        rho = (x - A) - tau * (C - A)
        r = torch.linalg.vector_norm(rho, dim=1)
        for region in ("left", "middle", "right"):
            if region == "left":
                mask = (z >= 0) & (z < d)
            elif region == "middle":
                mask = (z >= d) & (z <= L - d)
            else:
                mask = (z > L - d) & (z <= L) & ~(z < d)
            if not bool(mask.any()):
                continue
            zm, rm = z[mask], r[mask]
            if region == "left":
                s = sigma0 * torch.sin(K * zm)
                kappa = K / (torch.tan(K * zm) + STRING_TAN_EPS)
            elif region == "middle":
                s = torch.full_like(zm, sigma0)
                kappa = torch.zeros_like(zm)
            else:
                s = sigma0 * torch.sin(K * (L - zm))
                kappa = -K / torch.tan(K * (L - zm))
            expo, den, cos_a, sr = string_pair_terms(
                (rm * rm)[:, None], s[:, None], kappa[:, None], sigma0, D
            )
            w = (torch.exp(expo) / den)[:, 0]
            E[mask] += (w * cos_a[:, 0])[:, None] * n[None, :]
            E[mask, 1:] += (w * sr[:, 0])[:, None] * rho[mask]
    if normalize:
        E = normalize_rows(E, math.sqrt(DIM), eps)
    return E


def _plate_field(points, charges, sum_eps, memory_budget):
    """One plate's term ``sum_j coeff_ij (y_j - x_i)`` with the log-domain softmax of
    ``-DIM * log(d_ij + 1e-7)``, distances and sum from the same direct differences."""
    b, DIM = points.shape
    cb = _chunk(b, charges.shape[0] * DIM, memory_budget)
    out = []
    for i0 in range(0, b, cb):
        diff = charges[None, :, :] - points[i0 : i0 + cb, None, :]  # y_j - x_i
        logit = -DIM * torch.log(torch.sqrt((diff * diff).sum(-1)) + COULOMB_D_EPS)
        e = torch.exp(logit - logit.amax(1, keepdim=True))
        coeff = e / (e.sum(1, keepdim=True) + sum_eps)
        out.append(torch.bmm(coeff[:, None, :], diff)[:, 0])
    return torch.cat(out, 0)


def combine_plates(
    Ep: torch.Tensor, En: torch.Tensor | None, DIM: int, plate_gamma: float | None
) -> torch.Tensor:
    """The Coulomb target from the plate terms (FIELDS.md §3): each term first normalised to
    ``sqrt(DIM) E / (||E|| + plate_gamma)`` unless ``plate_gamma`` is None, then ``E+`` (one
    plate, ``En`` None) or ``-E+ + E-``."""
    if plate_gamma is not None:
        Ep = normalize_rows(Ep, math.sqrt(DIM), plate_gamma)
        if En is not None:
            En = normalize_rows(En, math.sqrt(DIM), plate_gamma)
    return Ep if En is None else En - Ep


def coulomb_field(
    points: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    plate_gamma: float | None = None,
    sum_eps: float = 0.0,
    normalize: bool = False,
    norm_scale: float | None = None,
    eps: float = 1e-5,
    memory_budget: int = 1 << 24,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Coulomb field (FIELDS.md §3) with log-domain softmax coefficients.

    Two plates: ``-E+ + E-`` (each plate term first normalised with ``plate_gamma`` unless it is
    None). One plate (``negative is None``): ``E+`` itself, pointing toward the charges.
    ``sum_eps`` is added to the softmax denominator (PFGM adds 1e-7 there, relative to a largest
    weight of 1). ``normalize`` applies ``norm_scale * E / (||E|| + eps)``; ``norm_scale``
    defaults to sqrt(D + 1). The arithmetic is in ``compute_dtype`` (default the dtype of
    ``points``; the inputs are cast to it once); the result has the dtype of ``points``.
    """
    out_dtype = points.dtype
    work = out_dtype if compute_dtype is None else compute_dtype
    points, positive = points.to(work), positive.to(work)
    negative = None if negative is None else negative.to(work)
    DIM = points.shape[1]
    Ep = _plate_field(points, positive, sum_eps, memory_budget)
    En = None if negative is None else _plate_field(points, negative, sum_eps, memory_budget)
    E = combine_plates(Ep, En, DIM, plate_gamma)
    if normalize:
        E = normalize_rows(E, math.sqrt(DIM) if norm_scale is None else norm_scale, eps)
    return E.to(out_dtype)


def coulomb_field_materialized(
    points: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    stability: bool = True,
    plate_gamma: float | None = None,
    sum_eps: float = 0.0,
) -> torch.Tensor:
    """The authors' ``[b, B, D+1]`` formulation with their weights, kept as a baseline.

    Stabilised: ``(min_k d_ik / (d_ij + 1e-7))^DIM``; unstabilised: ``(1 / (d_ij + 1e-7))^DIM``.
    In float32 this returns NaN where those weights all underflow or overflow (FIELDS.md §7);
    :func:`coulomb_field` does not.
    """
    DIM = points.shape[1]

    def plate(charges):
        diff = charges[None, :, :] - points[:, None, :]
        dist = torch.sqrt((diff * diff).sum(-1))
        if stability:
            w = (dist.amin(1, keepdim=True) / (dist + COULOMB_D_EPS)) ** DIM
        else:
            w = (1.0 / (dist + COULOMB_D_EPS)) ** DIM
        coeff = w / (w.sum(1, keepdim=True) + sum_eps)
        return (coeff[:, :, None] * diff).sum(1)

    Ep = plate(positive)
    En = None if negative is None else plate(negative)
    return combine_plates(Ep, En, DIM, plate_gamma)
