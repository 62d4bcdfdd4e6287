"""Every backend against the float64 oracle, by the parity rule of tests/parity.py:
the authors' golden outputs and randomised cases, float32 and float64, every mode."""

import pytest
import torch
from cases import coulomb_case, string_case
from modes import (
    COULOMB_MODE_IDS,
    COULOMB_MODES,
    STRING_MODE_IDS,
    STRING_MODES,
    golden_call,
    golden_oracle,
    oracle_and_standin,
    reference_field,
)
from parity import assert_parity, golden_names, load_golden

import ifm

FIELDS = {"string": ifm.fields.string_field, "coulomb": ifm.fields.coulomb_field}


@pytest.mark.parametrize("name", golden_names())
def test_golden(parity_backend, name):
    """Backends reproduce the authors' own outputs (raw field, normalize=False)."""
    bname, device, dtype = parity_backend
    meta, data = load_golden(name)
    tensors, public = golden_call(meta, data)
    out = FIELDS[meta["field"]](*(t.to(device, dtype) for t in tensors), **public, backend=bname)
    assert out.dtype == dtype and out.device.type == torch.device(device).type
    assert_parity(out, golden_oracle(meta, data), data["field"], what=f"{name}/{bname}/{dtype}")


STRING_SHAPES = [(1, 1, 1), (5, 37, 5), (37, 5, 123), (13, 17, 37), (12, 3, 2)]


@pytest.mark.parametrize("mode", STRING_MODES, ids=STRING_MODE_IDS)
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
@pytest.mark.parametrize("shape", STRING_SHAPES, ids=lambda s: "b{}-B{}-D{}".format(*s))
def test_string_random(parity_backend, shape, geometry, mode):
    bname, device, dtype = parity_backend
    points, quarks, antiquarks, params = string_case(*shape, geometry, seed=sum(shape))
    tensors = (points, quarks, antiquarks)
    oracle, standin = oracle_and_standin("string", tensors, **params, **mode)
    out = ifm.fields.string_field(
        *(t.to(device, dtype) for t in tensors), **params, **mode, backend=bname
    )
    assert_parity(out, oracle, standin, what=f"string {shape} {geometry} {mode}")


@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=COULOMB_MODE_IDS)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1), (7, 5, 3, 2), (13, 37, 11, 37), (5, 6, 9, 200)],
    ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s),
)
def test_coulomb_random(parity_backend, shape, mode, plates):
    bname, device, dtype = parity_backend
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=b + D)
    tensors = (points, pos, neg if plates == 2 else None)
    oracle, standin = oracle_and_standin("coulomb", tensors, **mode)
    out = ifm.fields.coulomb_field(
        *(None if t is None else t.to(device, dtype) for t in tensors), **mode, backend=bname
    )
    assert_parity(out, oracle, standin, what=f"coulomb {shape} {mode} plates={plates}")


@pytest.mark.parametrize("geometry", ["cifar", "cmnist"])
def test_stable_mode_recovers_underflowed_rows(backend, geometry):
    """Queries far from every string: the default returns ~0 (every float weight underflows,
    as in the authors' code); the stable mode returns the float64 log-domain direction."""
    bname, device = backend
    points, quarks, antiquarks, params = string_case(6, 4, 37, geometry, seed=3)
    points = points.clone()
    points[:, 0] = torch.tensor([0.3, 2.0, 5.0, 10.0, 15.0, 19.5])
    points[:, 1:] += 40.0 * params["sigma0"]  # far outside every tube
    f32 = [t.to(device, torch.float32) for t in (points, quarks, antiquarks)]
    default = ifm.fields.string_field(*f32, **params, normalize=True, backend=bname)
    assert default.double().norm(dim=1).max() < 1e-6
    stable = ifm.fields.string_field(*f32, **params, normalize=True, stable=True, backend=bname)
    oracle = reference_field(
        "string", (points, quarks, antiquarks), **params, normalize=True, stable=True
    )
    assert (oracle.norm(dim=1) > 1.0).all()
    cos = torch.nn.functional.cosine_similarity(stable.double().cpu(), oracle, dim=1)
    assert (cos > 1 - 1e-4).all(), cos
