"""Hand-written PyTorch (and KeOps) baselines, written as a user of the method would write them.

Every function takes z-first tensors (``[b, D+1]`` queries, ``[B, D+1]`` plates) and returns the
raw ``[b, D+1]`` field of FIELDS.md §2/§3 (Coulomb: with the per-plate and final normalisation
the case asks for). The per-pair coefficient formulas are the reference's (``ifm.reference``), so
the baselines differ from the package only in *how* the O(b·B·D) passes are organised:

* :func:`string_materialising` -- one ``[b, B, D]`` offset tensor, reductions over it.
* :func:`string_gemm` -- the "two-pass form" of FIELDS.md §2 with ``r²`` expanded as
  ``||x||² + ||A||² + tau²||Delta||² - 2 x.A - 2 tau x.Delta + 2 tau A.Delta`` and the sums as
  matrix products; run in float32 (fast, cancels near the plates, FIELDS.md §7) or float64.
* :func:`coulomb_cdist` -- ``torch.cdist`` + ``softmax`` + ``matmul``.
* :func:`coulomb_keops` -- a KeOps ``LazyTensor`` softmax-weighted sum (needs ``pykeops``).

``IMPLEMENTATIONS`` maps the implementation names used in the benchmark tables to callables
``fn(case, points, inputs)`` (``case`` is a :class:`cases.Case`); :func:`run_impl` calls one.
The Coulomb baselines take the kernel arguments ``ifm.fields.coulomb_kernel_args`` derives from
the case (``Case.kernel_args``).
"""

from __future__ import annotations

import math

import torch
from cases import call_args

import ifm
from ifm import reference

# ----------------------------------------------------------------------------------------------
# string field
# ----------------------------------------------------------------------------------------------


def string_coefficients(r2, z, nu, *, D, L, sigma0, K, d):
    """Coefficients ``(c1 * nu_j, c2, w)`` of the two-pass form (FIELDS.md §2) from
    ``r2 [b, B]``."""
    s = reference.tube_width(z, L, sigma0, K, d)
    kappa = reference.tube_slope(z, L, K, d)
    expo, den, cos_a, sr = reference.string_pair_terms(r2, s, kappa, sigma0, D)
    inside = (z >= 0) & (z <= L)
    w = torch.where(inside, torch.exp(expo) / den, torch.zeros_like(expo))
    return w * cos_a * nu[None, :], w * sr, w


def _string_setup(points, quarks, antiquarks, L):
    z = points[:, :1]
    x = points[:, 1:]
    A = quarks[:, 1:]
    Delta = antiquarks[:, 1:] - A
    nu = 1.0 / torch.sqrt(L * L + (Delta * Delta).sum(1))
    return z, x, A, Delta, nu, z / L


def string_materialising(points, quarks, antiquarks, *, L, sigma0, K, d):
    """Vectorised over everything: one ``[b, B, D]`` offset tensor (and its temporaries)."""
    z, x, A, Delta, nu, tau = _string_setup(points, quarks, antiquarks, L)
    rho = (x[:, None, :] - A[None]) - tau[:, :, None] * Delta[None]
    r2 = (rho * rho).sum(-1)
    c1n, c2, _ = string_coefficients(r2, z, nu, D=x.shape[1], L=L, sigma0=sigma0, K=K, d=d)
    Ex = (c2[:, :, None] * rho).sum(1) + c1n @ Delta
    return torch.cat([L * c1n.sum(1, keepdim=True), Ex], 1)


def string_r2_gemm(x, A, Delta, tau):
    """``r²_ij`` through the dot-product expansion (two matrix products)."""
    r2 = (
        (x * x).sum(1, keepdim=True)
        + (A * A).sum(1)[None]
        - 2.0 * (x @ A.T)
        + tau * tau * (Delta * Delta).sum(1)[None]
        - 2.0 * tau * (x @ Delta.T)
        + 2.0 * tau * (A * Delta).sum(1)[None]
    )
    return r2.clamp_min_(0.0)


def string_gemm(points, quarks, antiquarks, *, L, sigma0, K, d, dtype=None):
    """The two-pass form with both O(b·B·D) passes as matrix products, in ``dtype``.

    ``dtype=torch.float64`` casts the float32 inputs (the cast is part of the cost) and casts
    the result back.
    """
    out_dtype = points.dtype
    if dtype is not None:
        points, quarks, antiquarks = (t.to(dtype) for t in (points, quarks, antiquarks))
    z, x, A, Delta, nu, tau = _string_setup(points, quarks, antiquarks, L)
    r2 = string_r2_gemm(x, A, Delta, tau)
    c1n, c2, _ = string_coefficients(r2, z, nu, D=x.shape[1], L=L, sigma0=sigma0, K=K, d=d)
    Ex = c2.sum(1, keepdim=True) * x - c2 @ A - tau * (c2 @ Delta) + c1n @ Delta
    return torch.cat([L * c1n.sum(1, keepdim=True), Ex], 1).to(out_dtype)


def string_nonzero_pairs(points, quarks, antiquarks, *, L, sigma0, K, d):
    """Number of (query, pair) weights that are non-zero in float32 (r² in float64)."""
    p, q, a = (t.double() for t in (points, quarks, antiquarks))
    z, x, A, Delta, nu, tau = _string_setup(p, q, a, L)
    r2 = string_r2_gemm(x, A, Delta, tau)
    w = string_coefficients(r2, z, nu, D=x.shape[1], L=L, sigma0=sigma0, K=K, d=d)[2]
    return int((w.float() != 0).sum())


# ----------------------------------------------------------------------------------------------
# Coulomb field
# ----------------------------------------------------------------------------------------------


def _coulomb_finish(
    points, plate_fn, positive, negative, *, plate_gamma, normalize, norm_scale, eps
):
    DIM = points.shape[1]
    Ep = plate_fn(positive)
    En = None if negative is None else plate_fn(negative)
    E = reference.combine_plates(Ep, En, DIM, plate_gamma)
    if normalize:
        E = reference.normalize_rows(E, norm_scale, eps)
    return E


def coulomb_cdist(points, positive, negative=None, *, sum_eps, **norm):
    """``cdist`` + ``softmax(-DIM log(d + 1e-7))`` + ``coeff @ Y - x`` per plate; ``sum_eps``
    (added to the sum of the weights relative to the largest one) rescales the softmax."""
    DIM = points.shape[1]

    def plate(Y):
        dist = torch.cdist(points, Y)
        logit = -DIM * torch.log(dist + reference.COULOMB_D_EPS)
        coeff = torch.softmax(logit, dim=1)
        if sum_eps:
            shift = logit.amax(1, keepdim=True) - torch.logsumexp(logit, 1, keepdim=True)
            coeff = coeff / (1.0 + sum_eps * torch.exp(shift))
        return coeff @ Y - points

    return _coulomb_finish(points, plate, positive, negative, **norm)


def coulomb_keops(points, positive, negative=None, *, sum_eps, **norm):
    """KeOps: ``LazyTensor`` distances, ``sumsoftmaxweight`` of ``y_j - x_i`` per plate.
    ``sum_eps`` (PFGM's 1e-7 relative to the largest weight) has no slot in KeOps' softmax
    reduction and is left out: a relative change below 1e-7, under float32's resolution."""
    del sum_eps
    from pykeops.torch import LazyTensor

    DIM = points.shape[1]
    X = LazyTensor(points[:, None, :])

    def plate(Y):
        Yj = LazyTensor(Y[None, :, :])
        dist = ((X - Yj) ** 2).sum(-1).sqrt()
        logit = -DIM * (dist + reference.COULOMB_D_EPS).log()
        return logit.sumsoftmaxweight(Yj - X, axis=1)

    return _coulomb_finish(points, plate, positive, negative, **norm)


def coulomb_materialising(
    points, positive, negative=None, *, plate_gamma, sum_eps, normalize, norm_scale, eps
):
    """The authors' ``[b, B, D+1]`` form (``ifm.reference.coulomb_field_materialized``)."""
    E = reference.coulomb_field_materialized(
        points, positive, negative, stability=True, plate_gamma=plate_gamma, sum_eps=sum_eps
    )
    if normalize:
        E = reference.normalize_rows(E, norm_scale, eps)
    return E


def coulomb_significant_pairs(points, positive, negative=None, rel=2.0**-44):
    """Number of (query, charge) terms ``coeff_ij d_ij`` above ``rel`` of their row's largest:
    the terms pass 2 adds (the kernels' skip rule, ``skip_ratio`` of csrc/field_math.h: 2^-44
    for float32 data). Sizes in the log domain: ``logit_ij + log d_ij`` up to a row constant."""
    DIM = points.shape[1]
    p = points.double()
    total = 0
    for Y in (positive, negative):
        if Y is None:
            continue
        dist = torch.cdist(p, Y.double())
        size = -DIM * torch.log(dist + reference.COULOMB_D_EPS) + torch.log(dist)
        total += int((size - size.amax(1, keepdim=True) >= math.log(rel)).sum())
    return total


# ----------------------------------------------------------------------------------------------
# registry: name -> fn(case, points, inputs)
# ----------------------------------------------------------------------------------------------


def _string(fn, **extra):
    return lambda case, p, inp: fn(p, inp["quarks"], inp["antiquarks"], **case.params, **extra)


def _coulomb(fn):
    return lambda case, p, inp: fn(p, inp["positive"], inp.get("negative"), **case.kernel_args())


def _ifm_string(backend):
    return lambda case, p, inp: ifm.fields.string_field(
        p, inp["quarks"], inp["antiquarks"], backend=backend, **case.params
    )


def _ifm_coulomb(backend):
    return lambda case, p, inp: ifm.fields.coulomb_field(
        p, inp["positive"], inp.get("negative"), backend=backend, **case.api_args()
    )


STRING_IMPLEMENTATIONS = {
    "ifm-cpu": _ifm_string("cpu"),
    "ifm-reference": _ifm_string("reference"),
    "authors-loop": _string(reference.string_field_loop),
    "materialising": _string(string_materialising),
    "gemm-fp32": _string(string_gemm),
    "gemm-fp64": _string(string_gemm, dtype=torch.float64),
}

COULOMB_IMPLEMENTATIONS = {
    "ifm-cpu": _ifm_coulomb("cpu"),
    "ifm-reference": _ifm_coulomb("reference"),
    "authors-materialising": _coulomb(coulomb_materialising),
    "cdist-softmax-matmul": _coulomb(coulomb_cdist),
    "keops": _coulomb(coulomb_keops),
}

IMPLEMENTATIONS = {"string": STRING_IMPLEMENTATIONS, "coulomb": COULOMB_IMPLEMENTATIONS}


def run_impl(case, impl: str, points, inputs: dict):
    """Implementation ``impl`` of ``case``'s field at ``points``, with the plate tensors of
    ``inputs`` (``cases.make_inputs``)."""
    return IMPLEMENTATIONS[case.kind][impl](case, points, call_args(inputs))


def unavailable(name):
    """Reason why implementation ``name`` cannot run here, or None."""
    if name == "ifm-cpu" and "cpu" not in ifm.available_backends("cpu"):
        return "the fused CPU backend is not built (pip install --no-build-isolation -e .)"
    if name == "keops":
        try:
            import pykeops  # noqa: F401
        except Exception as exc:  # noqa: BLE001 -- any import failure means "absent"
            return f"pykeops is not installed or does not import ({exc})"
    return None
