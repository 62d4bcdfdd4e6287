"""Mode tables, golden-input builders and reference evaluations shared by every parity test (one
place for each). The public -> kernel argument mapping is ``ifm.fields.string_kernel_args`` /
``coulomb_kernel_args``; the helpers here call it, so no test retypes ``sqrt(D)``, ``1e-7`` or
``eps=5``."""

from __future__ import annotations

import torch

import ifm
from ifm import reference

# every (normalize, stable) mode of the string field
STRING_MODES = [
    dict(normalize=False, stable=False),
    dict(normalize=True, stable=False),
    dict(normalize=False, stable=True),
    dict(normalize=True, stable=True),
]
STRING_MODE_IDS = ["raw", "norm", "stable", "stable-norm"]

# the Coulomb modes of the published runs: IFM repository's copy (no plate normalisation), EFM
# toys (plate gamma 1e-7), EFM images (plate gamma 5, normalised), PFGM
COULOMB_MODES = [
    dict(plate_gamma=None, normalize=False),
    dict(plate_gamma=1e-7, normalize=False),
    dict(plate_gamma=5.0, normalize=True),
    dict(plate_gamma=None, normalize="pfgm"),
]
COULOMB_MODE_IDS = ["raw", "plate1e-7", "plate5-norm", "pfgm"]

# keyword arguments of ifm.fields.string_field that are geometry, not mode
STRING_GEOMETRY = ("L", "sigma0", "K", "d")


def coulomb_reference_kwargs(width: int, mode: dict, two_plates: bool) -> dict:
    """Keyword arguments of :func:`ifm.reference.coulomb_field` for a public Coulomb ``mode``
    (the mapping of :func:`ifm.fields.coulomb_kernel_args`)."""
    return ifm.fields.coulomb_kernel_args(width, two_plates=two_plates, **mode)


def string_reference_kwargs(width: int, mode: dict) -> dict:
    """Keyword arguments of :func:`ifm.reference.string_field` for a public string ``mode``."""
    kw = ifm.fields.string_kernel_args(
        width, normalize=mode.get("normalize", False), eps=mode.get("eps", 1e-5)
    )
    return dict(kw, stable=mode.get("stable", False))


def reference_field(field: str, tensors, compute_dtype: torch.dtype = torch.float64, **public):
    """``ifm.reference.<field>_field`` on ``tensors`` ((points, quarks, antiquarks) or (points,
    positive, negative-or-None)) with the kernel arguments ``ifm.fields`` derives from the public
    keyword arguments ``public`` (string: geometry and mode; Coulomb: mode)."""
    width = tensors[0].shape[1]
    if field == "string":
        geometry = {k: v for k, v in public.items() if k in STRING_GEOMETRY}
        mode = {k: v for k, v in public.items() if k not in STRING_GEOMETRY}
        return reference.string_field(
            *tensors,
            **geometry,
            **string_reference_kwargs(width, mode),
            compute_dtype=compute_dtype,
        )
    points, positive, negative = tensors
    kw = coulomb_reference_kwargs(width, public, two_plates=negative is not None)
    return reference.coulomb_field(points, positive, negative, **kw, compute_dtype=compute_dtype)


def _as(dtype, tensors):
    return [None if t is None else t.to(dtype) for t in tensors]


def oracle_and_standin(field: str, tensors, **public):
    """The pair the parity rule compares a backend with on randomised inputs: the float64 oracle
    (the reference on ``tensors`` in float64) and the float32 stand-in (the same formulas in
    float32 arithmetic on the float32-rounded tensors, tests/data/golden/README.md)."""
    oracle = reference_field(field, _as(torch.float64, tensors), **public)
    standin = reference_field(
        field, _as(torch.float32, tensors), compute_dtype=torch.float32, **public
    )
    return oracle, standin


def golden_string_inputs(data):
    """(points, quarks, antiquarks) of a string golden file, antiquarks in the authors' pairing."""
    antiquarks = data["antiquarks"]
    if "pairing" in data:
        antiquarks = antiquarks[data["pairing"].long()]
    return data["points"], data["quarks"], antiquarks


def golden_coulomb_inputs(data):
    """(points, positive, negative) of a Coulomb golden file."""
    return data["points"], data["positive"], data["negative"]


def golden_call(meta: dict, data: dict):
    """``(tensors, public)`` of a golden file: the authors' input tensors and the keyword
    arguments of ``ifm.fields.<field>_field`` that ask for what they computed (the raw field)."""
    if meta["field"] == "string":
        return golden_string_inputs(data), {k: meta[k] for k in STRING_GEOMETRY}
    return golden_coulomb_inputs(data), dict(plate_gamma=meta["plate_gamma"])


def golden_oracle(meta: dict, data: dict) -> torch.Tensor:
    """The float64 oracle of a golden file (the reference on its inputs in float64)."""
    tensors, public = golden_call(meta, data)
    return reference_field(meta["field"], _as(torch.float64, tensors), **public)


def string_op_args(device, dtype=torch.float32, normalize=True, stable=False):
    """Positional arguments of the ``ifm::string_field`` schema (the CPU/CUDA op and the Triton
    op share it) for a small toy case."""
    import math

    from cases import string_case

    p, q, a, prm = string_case(9, 7, 5, "toy", seed=0)
    kw = ifm.fields.string_kernel_args(p.shape[1], normalize=normalize)
    d = math.pi / (2 * prm["K"])
    return (
        p.to(device, dtype),
        q.to(device, dtype),
        a.to(device, dtype),
        prm["L"],
        prm["sigma0"],
        prm["K"],
        d,
        stable,
        kw["normalize"],
        kw["norm_scale"],
        kw["eps"],
    )


def coulomb_op_args(device, dtype=torch.float32, two_plates=True, normalize=True):
    """Positional arguments of the ``ifm::coulomb_field`` schema for a small case."""
    from cases import coulomb_case

    p, pos, neg = coulomb_case(9, 7, 5, 5, L=6.0, seed=0)
    kw = ifm.fields.coulomb_kernel_args(p.shape[1], two_plates=two_plates, normalize=normalize)
    return (
        p.to(device, dtype),
        pos.to(device, dtype),
        neg.to(device, dtype) if two_plates else None,
        kw["plate_gamma"],
        kw["sum_eps"],
        kw["normalize"],
        kw["norm_scale"],
        kw["eps"],
    )
