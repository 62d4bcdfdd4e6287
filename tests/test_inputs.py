"""Bad inputs get a TypeError/ValueError that names the argument and the expectation."""

import math

import pytest
import torch

import ifm

L, SIGMA0, K = 6.0, 1.0, 10.0


def good_string(b=4, B=5, D=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    points = torch.rand(b, D + 1, generator=g, dtype=dtype)
    points[:, 0] *= L
    quarks = torch.randn(B, D + 1, generator=g, dtype=dtype)
    quarks[:, 0] = 0
    antiquarks = torch.randn(B, D + 1, generator=g, dtype=dtype)
    antiquarks[:, 0] = L
    return points, quarks, antiquarks


def call_string(points=None, quarks=None, antiquarks=None, **kw):
    p, q, a = good_string()
    params = dict(L=L, sigma0=SIGMA0, K=K)
    params.update(kw)
    return ifm.fields.string_field(
        p if points is None else points,
        q if quarks is None else quarks,
        a if antiquarks is None else antiquarks,
        **params,
    )


def call_coulomb(points=None, positive=None, negative="default", **kw):
    p, q, a = good_string()
    return ifm.fields.coulomb_field(
        p if points is None else points,
        q if positive is None else positive,
        a if isinstance(negative, str) else negative,
        **kw,
    )


P, Q, A = good_string()
STRING_BAD = [
    # (case id, kwargs, exception, words the message must contain)
    ("points rank 1", dict(points=P[0]), ValueError, ["points", "2-D"]),
    ("points rank 3", dict(points=P[None]), ValueError, ["points", "2-D"]),
    ("quarks width", dict(quarks=Q[:, :3]), ValueError, ["quarks", "4 columns"]),
    ("antiquarks width", dict(antiquarks=A[:, :2]), ValueError, ["antiquarks", "4 columns"]),
    ("pair counts differ", dict(antiquarks=A[:3]), ValueError, ["same number of rows"]),
    ("empty points", dict(points=P[:0]), ValueError, ["points", "at least one row"]),
    (
        "empty pairs",
        dict(quarks=Q[:0], antiquarks=A[:0]),
        ValueError,
        ["quarks", "at least one row"],
    ),
    (
        "D = 0",
        dict(points=P[:, :1], quarks=Q[:, :1], antiquarks=A[:, :1]),
        ValueError,
        ["points", "D+1 >= 2"],
    ),
    ("integer points", dict(points=P.long()), TypeError, ["points", "floating dtype"]),
    ("bool quarks", dict(quarks=Q > 0), TypeError, ["quarks", "floating dtype"]),
    ("numpy points", dict(points=P.numpy()), TypeError, ["points", "torch.Tensor"]),
    ("mixed dtypes", dict(quarks=Q.double()), TypeError, ["quarks", "dtype"]),
    ("quarks not on z = 0", dict(quarks=Q + 1), ValueError, ["quarks", "column 0", "z = 0"]),
    (
        "antiquarks not on z = L",
        dict(antiquarks=A.roll(1, dims=1)),
        ValueError,
        ["antiquarks", "column 0", "z = 6"],
    ),
    ("z-last quarks", dict(quarks=Q.roll(-1, dims=1)), ValueError, ["quarks", "z-first"]),
    (
        "nan in points",
        dict(points=torch.where(torch.arange(4)[:, None] == 2, float("nan"), P)),
        ValueError,
        ["points", "non-finite", "(2, 0)"],
    ),
    (
        "inf in antiquarks",
        dict(antiquarks=torch.cat([A[:4], A[4:].clone().fill_(float("inf"))])),
        ValueError,
        ["antiquarks", "non-finite"],
    ),
    ("L <= 0", dict(L=0.0), ValueError, ["L", "> 0"]),
    ("L negative", dict(L=-6.0), ValueError, ["L", "> 0"]),
    ("L nan", dict(L=float("nan")), ValueError, ["L", "finite"]),
    ("L string", dict(L="6"), TypeError, ["L", "real number"]),
    ("sigma0 <= 0", dict(sigma0=0.0), ValueError, ["sigma0", "> 0"]),
    ("sigma0 inf", dict(sigma0=float("inf")), ValueError, ["sigma0", "finite"]),
    ("K <= 0", dict(K=-1.0), ValueError, ["K", "> 0"]),
    ("K and d missing", dict(K=None), ValueError, ["K", "d"]),
    ("d > L/2", dict(K=None, d=3.5), ValueError, ["d", "L / 2"]),
    ("K too small (d > L/2)", dict(K=0.2), ValueError, ["d", "L / 2"]),
    ("K and d inconsistent", dict(d=1.0), ValueError, ["d", "pi / (2K)"]),
    ("eps negative", dict(eps=-1.0), ValueError, ["eps", ">= 0"]),
    ("normalize not bool", dict(normalize="yes"), TypeError, ["normalize"]),
    ("stable not bool", dict(stable=1), TypeError, ["stable"]),
    ("unknown backend", dict(backend="gpu"), ValueError, ["backend", "'gpu'"]),
]


COULOMB_BAD = [
    ("positive width", dict(positive=Q[:, :2]), ValueError, ["positive", "4 columns"]),
    ("negative width", dict(negative=A[:, :2]), ValueError, ["negative", "4 columns"]),
    ("empty negative", dict(negative=A[:0]), ValueError, ["negative", "at least one row"]),
    ("positive not on z = 0", dict(positive=Q + 0.5), ValueError, ["positive", "column 0"]),
    (
        "negative plate not constant",
        dict(negative=torch.cat([A[:2], A[2:] + torch.tensor([1.0, 0, 0, 0])])),
        ValueError,
        ["negative", "column 0"],
    ),
    ("negative plate at z <= 0", dict(negative=Q), ValueError, ["negative", "z = L > 0"]),
    ("mixed dtypes", dict(negative=A.double()), TypeError, ["negative", "dtype"]),
    ("plate_gamma negative", dict(plate_gamma=-1.0), ValueError, ["plate_gamma"]),
    ("plate_gamma nan", dict(plate_gamma=float("nan")), ValueError, ["plate_gamma", "finite"]),
    ("normalize unknown", dict(normalize="efm"), ValueError, ["normalize", "'pfgm'"]),
    ("eps nan", dict(eps=float("nan")), ValueError, ["eps", "finite"]),
    ("integer points", dict(points=P.int()), TypeError, ["points", "floating dtype"]),
]


BAD = [pytest.param(call_string, case, id=f"string-{case[0]}") for case in STRING_BAD] + [
    pytest.param(call_coulomb, case, id=f"coulomb-{case[0]}") for case in COULOMB_BAD
]


@pytest.mark.parametrize("call, case", BAD)
def test_bad_input(call, case):
    """The original hand-written table; docs/INPUTS.md (tests/test_inputs_table.py) extends it."""
    _, kwargs, exc, words = case
    with pytest.raises(exc) as info:
        call(**kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_pinned_backend_rejects_backend_kwarg():
    p, q, a = good_string()
    with pytest.raises(TypeError, match="fixes backend='reference'"):
        ifm.fields.string_field_reference(p, q, a, L=L, sigma0=SIGMA0, K=K, backend="cpu")


def test_cuda_pinned_names_explain_why_they_cannot_run():
    p, q, a = good_string()
    if torch.cuda.is_available() and "cuda" in ifm.available_backends():
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            ifm.fields.string_field_cuda(p, q, a, L=L, sigma0=SIGMA0, K=K)
    else:
        with pytest.raises((RuntimeError, ValueError), match="string_field_cuda"):
            ifm.fields.string_field_cuda(p, q, a, L=L, sigma0=SIGMA0, K=K)
        with pytest.raises((RuntimeError, ValueError), match="coulomb_field_cuda"):
            ifm.fields.coulomb_field_cuda(p, q, a)


def test_check_finite_false_skips_the_check():
    p, q, a = good_string()
    p = p.clone()
    p[1, 2] = float("nan")
    out = ifm.fields.string_field(
        p, q, a, L=L, sigma0=SIGMA0, K=K, check_finite=False, backend="reference"
    )
    assert out.shape == p.shape


def test_half_inputs_computed_in_float32():
    p, q, a = good_string()
    out = ifm.fields.string_field(p.half(), q.half(), a.half(), L=L, sigma0=SIGMA0, K=K)
    assert out.dtype == torch.float16
    want = ifm.fields.string_field(
        p.half().float(), q.half().float(), a.half().float(), L=L, sigma0=SIGMA0, K=K
    )
    assert torch.allclose(out.float(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())


def test_d_alone_sets_k():
    p, q, a = good_string()
    by_d = ifm.fields.string_field(p, q, a, L=L, sigma0=SIGMA0, d=math.pi / (2 * K))
    by_k = ifm.fields.string_field(p, q, a, L=L, sigma0=SIGMA0, K=K)
    assert torch.equal(by_d, by_k)


def test_requires_grad_inputs_give_a_constant_target():
    p, q, a = good_string()
    p.requires_grad_(True)
    out = ifm.fields.string_field(p, q, a, L=L, sigma0=SIGMA0, K=K)
    assert not out.requires_grad


def test_parameters_outside_float32_are_rejected():
    with pytest.raises(ValueError, match="outside the range of torch.float32"):
        call_string(sigma0=1e-300, backend="reference")


@pytest.mark.parametrize("value", [0.3, 6.0, 1e-30, 3.4e38, 1 / 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plate_position_rounding_matches_torch(value, dtype):
    """L is rounded to the compute dtype on the host (no tensor, no sync) as torch rounds it."""
    from ifm import _checks

    assert _checks.round_to(value, dtype) == torch.tensor(value, dtype=dtype).item()
