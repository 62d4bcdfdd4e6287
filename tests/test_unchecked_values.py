"""Without the value checks (``check_finite=False``, or CUDA tensors by default) the kernels stay
safe for any values: no crash, no hang, the output has the right shape, and a non-finite value
reaches only the rows that read it (docs/INPUTS.md, "Value checks")."""

import math

import pytest
import torch

from ifm import fields

L = 6.0


def _case(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    p = torch.rand(6, 4, generator=g, dtype=dtype) * L
    q = torch.randn(5, 4, generator=g, dtype=dtype)
    q[:, 0] = 0
    a = torch.randn(5, 4, generator=g, dtype=dtype)
    a[:, 0] = L
    return p, q, a


def _put(t, i, j, v):
    t = t.clone()
    t[i, j] = v
    return t


def _fields(p, q, a, bname):
    kw = dict(check_finite=False, backend=bname)
    return {
        "string": fields.string_field(p, q, a, L=L, sigma0=1.0, K=10.0, normalize=True, **kw),
        "coulomb2": fields.coulomb_field(p, q, a, **kw),
        "coulomb1": fields.coulomb_field(p, q, None, normalize="pfgm", **kw),
    }


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the Triton interpreter
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e30])
@pytest.mark.parametrize("col", [0, 2])
def test_bad_query_touches_only_its_row(backend, value, col):
    bname, device = backend
    p, q, a = (t.to(device) for t in _case())
    clean = _fields(p, q, a, bname)
    bad = _fields(_put(p, 2, col, value), q, a, bname)
    others = [0, 1, 3, 4, 5]
    for name in clean:
        assert bad[name].shape == p.shape
        assert torch.equal(bad[name][others], clean[name][others]), name
        if not math.isfinite(value) and col != 0:  # a non-finite coordinate: a non-finite row
            assert not torch.isfinite(bad[name][2]).all(), name


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_bad_charge_gives_non_finite_rows(backend, value):
    bname, device = backend
    p, q, a = (t.to(device) for t in _case())
    out = _fields(p, _put(q, 1, 2, value), _put(a, 3, 1, value), bname)
    for name, t in out.items():
        assert t.shape == p.shape
        assert not torch.isfinite(t).all(dim=1).any(), (name, t)
