"""Every backend against the float64 oracle, by the parity rule of tests/parity.py:
the authors' golden outputs and randomised cases, float32 and float64, every mode."""
import math

import pytest
import torch

import ifm
from ifm import reference

from cases import coulomb_case, string_case
from parity import assert_parity, golden_names, load_golden

DTYPES = [torch.float32, torch.float64]


def _string_inputs(data):
    quarks, antiquarks = data["quarks"], data["antiquarks"]
    if "pairing" in data:
        antiquarks = antiquarks[data["pairing"].long()]
    return data["points"], quarks, antiquarks


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", golden_names())
def test_golden(backend, name, dtype):
    """Backends reproduce the authors' own outputs (raw field, normalize=False)."""
    bname, device = backend
    meta, data = load_golden(name)
    if meta["field"] == "string":
        inputs = _string_inputs(data)
        params = dict(L=meta["L"], sigma0=meta["sigma0"], K=meta["K"], d=meta["d"])
        oracle = reference.string_field(*(t.double() for t in inputs), **params)
        out = ifm.fields.string_field(*(t.to(device, dtype) for t in inputs), **params,
                                      backend=bname)
    else:
        inputs = (data["points"], data["positive"], data["negative"])
        oracle = reference.coulomb_field(*(t.double() for t in inputs),
                                         plate_gamma=meta["plate_gamma"])
        out = ifm.fields.coulomb_field(*(t.to(device, dtype) for t in inputs),
                                       plate_gamma=meta["plate_gamma"], backend=bname)
    assert out.dtype == dtype and out.device.type == torch.device(device).type
    assert_parity(out, oracle, data["field"], what=f"{name}/{bname}/{dtype}")


STRING_SHAPES = [(1, 1, 1), (5, 37, 5), (37, 5, 123), (13, 17, 37), (12, 3, 2)]
STRING_MODES = [dict(normalize=False, stable=False), dict(normalize=True, stable=False),
                dict(normalize=False, stable=True), dict(normalize=True, stable=True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", STRING_MODES, ids=lambda m: f"norm{int(m['normalize'])}-stable{int(m['stable'])}")
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
@pytest.mark.parametrize("shape", STRING_SHAPES, ids=lambda s: "b{}-B{}-D{}".format(*s))
def test_string_random(kernel_backend, shape, geometry, mode, dtype):
    bname, device = kernel_backend
    points, quarks, antiquarks, params = string_case(*shape, geometry, seed=sum(shape))
    oracle = reference.string_field(points, quarks, antiquarks, **params, **mode)
    standin = reference.string_field(points.float(), quarks.float(), antiquarks.float(),
                                     **params, **mode)
    out = ifm.fields.string_field(points.to(device, dtype), quarks.to(device, dtype),
                                  antiquarks.to(device, dtype), **params, **mode, backend=bname)
    assert_parity(out, oracle, standin, what=f"string {shape} {geometry} {mode}")


COULOMB_MODES = [
    dict(plate_gamma=None, normalize=False),
    dict(plate_gamma=1e-7, normalize=False),
    dict(plate_gamma=5.0, normalize=True),
    dict(plate_gamma=None, normalize="pfgm"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=["raw", "plate1e-7", "plate5-norm", "pfgm"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 5, 3, 2), (13, 37, 11, 37), (5, 6, 9, 200)],
                         ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s))
def test_coulomb_random(kernel_backend, shape, mode, plates, dtype):
    bname, device = kernel_backend
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=b + D)
    if plates == 1:
        neg = None
    sum_eps = 1e-7 if mode["normalize"] == "pfgm" else 0.0
    scale = math.sqrt(D if mode["normalize"] == "pfgm" else D + 1)
    ref_kw = dict(plate_gamma=mode["plate_gamma"], sum_eps=sum_eps,
                  normalize=mode["normalize"] is not False, norm_scale=scale,
                  eps=5.0 if mode["normalize"] == "pfgm" else 1e-5)
    oracle = reference.coulomb_field(points, pos, neg, **ref_kw)
    standin = reference.coulomb_field(points.float(), pos.float(),
                                      None if neg is None else neg.float(), **ref_kw)
    out = ifm.fields.coulomb_field(points.to(device, dtype), pos.to(device, dtype),
                                   None if neg is None else neg.to(device, dtype),
                                   plate_gamma=mode["plate_gamma"], normalize=mode["normalize"],
                                   backend=bname)
    assert_parity(out, oracle, standin, what=f"coulomb {shape} {mode} plates={plates}")


@pytest.mark.parametrize("geometry", ["cifar", "cmnist"])
def test_stable_mode_recovers_underflowed_rows(backend, geometry):
    """Queries far from every string: the default returns ~0 (every float weight underflows,
    as in the authors' code); the stable mode returns the float64 log-domain direction."""
    bname, device = backend
    points, quarks, antiquarks, params = string_case(6, 4, 37, geometry, seed=3)
    points = points.clone()
    points[:, 0] = torch.tensor([0.3, 2.0, 5.0, 10.0, 15.0, 19.5])
    points[:, 1:] += 40.0 * params["sigma0"]     # far outside every tube
    f32 = [t.to(device, torch.float32) for t in (points, quarks, antiquarks)]
    default = ifm.fields.string_field(*f32, **params, normalize=True, backend=bname)
    assert default.double().norm(dim=1).max() < 1e-6
    stable = ifm.fields.string_field(*f32, **params, normalize=True, stable=True, backend=bname)
    oracle = reference.string_field(points, quarks, antiquarks, **params, normalize=True,
                                    stable=True)
    assert (oracle.norm(dim=1) > 1.0).all()
    cos = torch.nn.functional.cosine_similarity(stable.double().cpu(), oracle, dim=1)
    assert (cos > 1 - 1e-4).all(), cos
