"""The compiled CPU value checker ``ifm::check_values`` (csrc/value_checks.cpp).

``ifm._checks.check_values`` asks it first on CPU tensors and runs its own torch reductions (which
name the argument and index in the error) only when it reports a failure. So the op must report
a failure exactly when the Python checks raise: it may not miss one (a bad input would pass) and
may not flag a good input (every call would pay for the slow path). Both directions are tested
here on inputs at the edges of each check; the error messages themselves are tested by
tests/test_inputs.py and the docs/INPUTS.md table.
"""

import math

import pytest
import torch

import ifm
from ifm import _checks

OP = _checks._check_op()
pytestmark = pytest.mark.skipif(OP is None, reason="ifm._C built without ifm::check_values")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
L = 6.0


def _inputs(dtype, b=4, B=5, D=3):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(b, D + 1, generator=g, dtype=torch.float64) * L
    q = torch.randn(B, D + 1, generator=g, dtype=torch.float64)
    q[:, 0] = 0
    a = torch.randn(B, D + 1, generator=g, dtype=torch.float64)
    a[:, 0] = L
    return p.to(dtype), q.to(dtype), a.to(dtype)


NO_PLATE, ROW_0 = _checks.NO_PLATE, _checks.PLATE_AT_ROW_0


def _string_args(p, q, a):
    return [("points", p), ("quarks", q), ("antiquarks", a)], [NO_PLATE, 0.0, L]


def _op_code(named, plates):
    bound = _checks.magnitude_bound(named[0][1].dtype, named[0][1].shape[1])
    return OP([t for _, t in named], bound, plates)


def _python_raises(named, plates, monkeypatch):
    """Whether the torch checks (the path without the compiled op) raise."""
    with monkeypatch.context() as m:
        m.setattr(_checks, "_CHECK_OP", [None])
        try:
            _checks.check_values(named, plates)
        except ValueError:
            return True
    return False


def _agree(named, plates, monkeypatch):
    code = _op_code(named, plates)
    assert (code != 0) == _python_raises(named, plates, monkeypatch), code
    return code


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_valid_inputs_pass(dtype):
    p, q, a = _inputs(dtype)
    assert _op_code(*_string_args(p, q, a)) == 0
    # strided views (a transposed copy, every other row) and a lazily negated tensor
    pt = p.t().contiguous().t()
    assert not pt.is_contiguous()
    assert _op_code(*_string_args(pt, q[::2], a[::2])) == 0
    assert _op_code(*_string_args(torch._neg_view(p), q, a)) == 0
    # one plate at z = row 0 (Coulomb's negative plate)
    assert _op_code([("points", p), ("negative", a)], [NO_PLATE, ROW_0]) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_names_the_tensor(dtype, which, value):
    tensors = list(_inputs(dtype))
    tensors[which] = tensors[which].clone()
    tensors[which][-1, 1] = value
    assert _op_code(*_string_args(*tensors)) == which + 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_magnitude_bound_edges(dtype, monkeypatch):
    p, q, a = _inputs(dtype)
    bound = _checks.magnitude_bound(dtype, p.shape[1])
    below = torch.tensor(bound, dtype=torch.float64).to(dtype)
    if below.double() >= bound:  # the dtype's nearest value rounded up
        below = torch.nextafter(below, torch.zeros_like(below))
    at_or_above = torch.nextafter(below, torch.full_like(below, math.inf))
    for value, bad in [(below, False), (-below, False), (at_or_above, True), (-at_or_above, True)]:
        pp = p.clone()
        pp[2, 3] = value
        assert _agree(*_string_args(pp, q, a), monkeypatch) == (1 if bad else 0), value


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_half_dtypes_use_the_float32_bound(dtype, monkeypatch):
    """The largest value of each dtype: over the bound except for float16 (float32's bound is
    far above float16's range)."""
    p, q, a = _inputs(dtype)
    p = p.clone()
    p[0, 1] = torch.finfo(dtype).max
    assert _agree(*_string_args(p, q, a), monkeypatch) == (0 if dtype == torch.float16 else 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("z", [0.0, L, 0.3, 1e6])
def test_plate_tolerance_edges(dtype, z, monkeypatch):
    """Column 0 within 1e-5 max(1, |z|) of z passes, beyond it fails, rounded as torch rounds."""
    p, q, a = _inputs(dtype)
    tol = 1e-5 * max(1.0, abs(z))
    for offset in [0.0, 0.5 * tol, 0.99 * tol, 1.01 * tol, 2 * tol, 1e3 * tol]:
        plate = a.clone()
        plate[:, 0] = z
        plate[3, 0] = z + offset
        _agree([("points", p), ("antiquarks", plate)], [NO_PLATE, z], monkeypatch)
    if dtype not in (torch.float32, torch.float64):
        return  # z itself may be off the half grid by more than the tolerance (agreement only)
    plate = a.clone()
    plate[:, 0] = z
    assert _op_code([("points", p), ("antiquarks", plate)], [NO_PLATE, z]) == 0
    plate[4, 0] = z + 2 * tol + 1e-2 * max(1.0, abs(z))
    assert _op_code([("points", p), ("antiquarks", plate)], [NO_PLATE, z]) == 4


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_plate_from_row_0(dtype, monkeypatch):
    p, q, a = _inputs(dtype)
    named = lambda neg: [("points", p), ("positive", q), ("negative", neg)]  # noqa: E731
    plates = [NO_PLATE, 0.0, ROW_0]
    assert _agree(named(a), plates, monkeypatch) == 0
    for row0 in [0.0, -1.0, math.nan, math.inf]:
        neg = a.clone()
        neg[0, 0] = row0
        code = _agree(named(neg), plates, monkeypatch)
        assert code == (3 if not math.isfinite(row0) else 6)
    neg = a.clone()
    neg[2, 0] = 7.0
    assert _agree(named(neg), plates, monkeypatch) == 6
    assert _agree(named(q), plates, monkeypatch) == 6  # a "negative" plate at z = 0


def test_quark_plate_off_zero(monkeypatch):
    p, q, a = _inputs(torch.float32)
    assert _agree(*_string_args(p, q + 1, a), monkeypatch) == 5
    assert _agree(*_string_args(p, q, a.roll(1, dims=1)), monkeypatch) == 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_random_perturbations_agree(dtype, monkeypatch):
    """Random inputs with values near every threshold: the op and the torch checks agree."""
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        p, q, a = _inputs(dtype)
        bound = _checks.magnitude_bound(dtype, p.shape[1])
        t = [p.clone(), q.clone(), a.clone()]
        k = int(torch.randint(0, 3, (), generator=g))
        scale = float(torch.rand((), generator=g, dtype=torch.float64)) * 2
        t[k][int(torch.randint(0, t[k].shape[0], (), generator=g)), 1] = bound * scale
        z = (
            float(torch.randint(0, 2, (), generator=g))
            * 1e-5
            * float(torch.rand((), generator=g))
            * 2
        )
        t[2][int(torch.randint(0, 5, (), generator=g)), 0] += z * L
        _agree(*_string_args(*t), monkeypatch)


@pytest.mark.parametrize("field", ["string", "coulomb"])
def test_default_cpu_call_uses_the_op(field, monkeypatch):
    """A valid default call on CPU tensors runs the compiled check only, not the reductions; a
    bad one still raises the message of the torch checks."""

    def boom(*args, **kwargs):
        raise AssertionError("torch reductions ran for valid inputs")

    p, q, a = _inputs(torch.float32)
    call = (
        (lambda *t: ifm.fields.string_field(*t, L=L, sigma0=1.0, K=10.0))
        if field == "string"
        else ifm.fields.coulomb_field
    )
    with monkeypatch.context() as m:
        m.setattr(torch, "_foreach_norm", boom)
        m.setattr(_checks, "check_finite_values", boom)
        call(p, q, a)
    bad = p.clone()
    bad[2, 0] = math.nan
    with pytest.raises(ValueError, match=r"points has a non-finite value nan at index \(2, 0\)"):
        call(bad, q, a)


def test_scalar_memo_keeps_every_check():
    """ifm.fields remembers validated scalar arguments per (arguments, dtype): a remembered set
    still gets the tensor checks, and arguments of another type or value are checked again."""
    from ifm import fields

    p, q, a = _inputs(torch.float32)
    geometry = dict(L=L, sigma0=1.0, K=10.0)
    ref = fields.string_field(p, q, a, **geometry)
    assert torch.equal(fields.string_field(p, q, a, **geometry), ref)
    with pytest.raises(TypeError, match="quarks has dtype"):
        fields.string_field(p, q.double(), a, **geometry)
    with pytest.raises(TypeError, match="sigma0 must be a real number"):
        fields.string_field(p, q, a, L=L, sigma0=True, K=10.0)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        fields.string_field(p, q, a, **geometry, normalize=1)
    with pytest.raises(ValueError, match="sigma0 = 1e-300 is outside the range of torch.float32"):
        fields.string_field(p, q, a, L=L, sigma0=1e-300, K=10.0)
    fields.string_field(p.double(), q.double(), a.double(), L=L, sigma0=1e-300, K=10.0)
    with pytest.raises(ValueError, match="sigma0 = 1e-300 is outside the range of torch.float32"):
        fields.string_field(p, q, a, L=L, sigma0=1e-300, K=10.0)
    for i in range(fields._MEMO_SIZE + 10):
        fields.string_field(p, q, a, L=L, sigma0=1.0 + i * 1e-3, K=10.0)
    assert len(fields._STRING_SCALARS) <= fields._MEMO_SIZE
    ref = fields.coulomb_field(p, q, a)
    assert torch.equal(fields.coulomb_field(p, q, a), ref)
    with pytest.raises(TypeError, match="plate_gamma must be a real number"):
        fields.coulomb_field(p, q, a, plate_gamma=True)
    with pytest.raises(ValueError, match="normalize must be False, True or 'pfgm'"):
        fields.coulomb_field(p, q, a, normalize="yes")
    with pytest.raises(ValueError, match="eps = 1e-300 is outside the range of torch.float32"):
        fields.coulomb_field(p, q, a, eps=1e-300)
