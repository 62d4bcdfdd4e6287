"""Property-based tests (hypothesis) over shapes, parameters and inputs, on every backend:

* agreement with the float64 reference by the parity rule (tests/parity.py), float32 and float64;
* no NaN or inf for finite inputs: coincident points, queries on a plate or outside [0, L],
  D = 1, D = 49152, coordinates up to the documented magnitude bound (docs/INPUTS.md);
* invariance under a joint permutation of the pairs (string) or of each plate's charges
  (Coulomb), up to summation-order rounding;
* the ``stable`` string mode points where the default points, wherever the default is not
  all-underflow.
"""

import pytest
import torch
from cases import STRING_GEOMETRIES, coulomb_case, string_case
from conftest import DTYPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modes import COULOMB_MODES, STRING_MODES, oracle_and_standin
from parity import FLOOR, assert_parity, row_errors

import ifm
from ifm import _checks, reference


def run(backend, test, examples: int = 25):
    """Run the hypothesis ``test`` with fewer examples on the (slow) Triton interpreter."""
    if backend[0] == "triton":
        examples = max(3, examples // 5)
    settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )(test)()


# ---- inputs ----------------------------------------------------------------------------------
def _representable(*tensors):
    """float64 copies of float32-rounded values, so that the oracle, the float32 stand-in and
    every backend see the same inputs (z = 1e-102 would be 0 in float32 only)."""
    return [t.float().double() for t in tensors]


@st.composite
def string_inputs(draw, max_b=9, max_B=7, max_D=12):
    """float64 (points, quarks, antiquarks, params) from ``cases.string_case`` (every z edge),
    then hypothesis-chosen hazards: z on a plate / outside [0, L] / arbitrary, a query on a
    quark or an antiquark, duplicated pairs, a data scale."""
    b, B = draw(st.integers(1, max_b)), draw(st.integers(1, max_B))
    D = draw(st.sampled_from([1, 2, 3, max_D]))
    geometry = draw(st.sampled_from(sorted(STRING_GEOMETRIES)))
    seed = draw(st.integers(0, 999))
    points, quarks, antiquarks, params = string_case(b, B, D, geometry, seed=seed)
    L = params["L"]
    i = draw(st.integers(0, b - 1))
    j = draw(st.integers(0, B - 1))
    hazard = draw(st.sampled_from(["none", "z", "on-quark", "on-antiquark", "same-pair", "scale"]))
    if hazard == "z":
        points[i, 0] = draw(
            st.one_of(
                st.sampled_from([0.0, L, -0.0, 1e-30, L - 1e-6, -1e-6, L + 1e-6, 2 * L, -L]),
                st.floats(-1.0, L + 1.0),
            )
        )
    elif hazard == "on-quark":
        points[i] = quarks[j]
    elif hazard == "on-antiquark":
        points[i] = antiquarks[j]
    elif hazard == "same-pair" and B > 1:
        quarks[(j + 1) % B], antiquarks[(j + 1) % B] = quarks[j], antiquarks[j]
    elif hazard == "scale":
        s = draw(st.sampled_from([1e-3, 1e-1, 10.0, 100.0]))
        points[:, 1:] *= s
        quarks[:, 1:] *= s
        antiquarks[:, 1:] *= s
    return (*_representable(points, quarks, antiquarks), params)


@st.composite
def coulomb_inputs(draw, max_b=9, max_B=7, max_D=12):
    b = draw(st.integers(1, max_b))
    Bp, Bn = draw(st.integers(1, max_B)), draw(st.integers(1, max_B))
    D = draw(st.sampled_from([1, 2, 3, max_D]))
    L = draw(st.sampled_from([1.0, 6.0, 100.0]))
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L, seed=draw(st.integers(0, 999)))
    i = draw(st.integers(0, b - 1))
    hazard = draw(st.sampled_from(["none", "on-positive", "on-negative", "near", "z0", "far"]))
    if hazard == "on-positive":
        points[i] = pos[draw(st.integers(0, Bp - 1))]
    elif hazard == "on-negative":
        points[i] = neg[draw(st.integers(0, Bn - 1))]
    elif hazard == "near":
        points[i] = pos[0] + draw(st.sampled_from([1e-12, 1e-9, 1e-7, 1e-5]))
    elif hazard == "z0":
        points[i, 0] = 0.0
    elif hazard == "far":
        points[i, 1:] += draw(st.sampled_from([1e2, 1e4]))
    return points, pos, neg, L


def _on(device, dtype, *tensors):
    return [None if t is None else t.to(device, dtype) for t in tensors]


# ---- parity ----------------------------------------------------------------------------------
def test_string_parity(parity_backend):
    bname, device, dtype = parity_backend

    @given(string_inputs(), st.booleans(), st.booleans())
    def check(inputs, normalize, stable):
        points, quarks, antiquarks, params = inputs
        mode = dict(params, normalize=normalize, stable=stable)
        oracle, standin = oracle_and_standin("string", (points, quarks, antiquarks), **mode)
        out = ifm.fields.string_field(
            *_on(device, dtype, points, quarks, antiquarks), **mode, backend=bname
        )
        assert out.dtype == dtype
        assert_parity(out, oracle, standin, what=f"string {mode}")

    run(parity_backend, check)


def test_coulomb_parity(parity_backend):
    bname, device, dtype = parity_backend

    @given(coulomb_inputs(), st.sampled_from(COULOMB_MODES), st.booleans())
    def check(inputs, mode, two_plates):
        points, pos, neg, _ = inputs
        neg = neg if two_plates else None
        oracle, standin = oracle_and_standin("coulomb", (points, pos, neg), **mode)
        out = ifm.fields.coulomb_field(*_on(device, dtype, points, pos, neg), **mode, backend=bname)
        assert_parity(out, oracle, standin, what=f"coulomb {mode} two_plates={two_plates}")

    run(parity_backend, check)


# ---- permutation invariance ------------------------------------------------------------------
def assert_equal_up_to_summation_order(permuted, out, scale, n_terms, what):
    """Reordering a sum of ``n_terms`` terms changes it by at most ``2 (n - 1) u sum_j ||term_j||``
    (u: unit roundoff); ``scale`` is that sum of term norms per row (float64)."""
    u = torch.finfo(out.dtype).eps / 2
    diff = (permuted.double() - out.double()).norm(dim=1).cpu()
    allowed = 4.0 * max(n_terms, 2) * u * scale + 1e-300
    assert torch.isfinite(permuted).all(), what
    assert (diff <= allowed).all(), f"{what}: row diffs {diff.tolist()} > {allowed.tolist()}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_string_joint_permutation(backend, dtype):
    """Raw default field: permuting quarks and antiquarks together reorders the sum over pairs;
    the per-pair terms (and which pairs a kernel skips) do not depend on the order."""
    bname, device = backend

    @given(string_inputs(), st.randoms(use_true_random=False))
    def check(inputs, rnd):
        points, quarks, antiquarks, params = inputs
        B = quarks.shape[0]
        perm = list(range(B))
        rnd.shuffle(perm)
        p, q, a = _on(device, DTYPES[dtype], points, quarks, antiquarks)
        out = ifm.fields.string_field(p, q, a, **params, backend=bname)
        permuted = ifm.fields.string_field(p, q[perm], a[perm], **params, backend=bname)
        scale = sum(
            reference.string_field(points, quarks[j : j + 1], antiquarks[j : j + 1], **params).norm(
                dim=1
            )
            for j in range(B)
        )
        assert_equal_up_to_summation_order(permuted, out, scale, B, f"string perm {perm}")

    run(backend, check)


@pytest.mark.parametrize("dtype", DTYPES)
def test_coulomb_plate_permutations(backend, dtype):
    """Raw field of one or two plates, each plate's charges permuted: the softmax coefficients
    sum to 1 per plate, so each plate's sum is bounded by its largest distance to the query."""
    bname, device = backend

    @given(coulomb_inputs(), st.randoms(use_true_random=False), st.booleans())
    def check(inputs, rnd, two_plates):
        points, pos, neg, _ = inputs
        plates = [pos, neg] if two_plates else [pos]
        perms = [list(range(t.shape[0])) for t in plates]
        for perm in perms:
            rnd.shuffle(perm)
        mode = dict(plate_gamma=None, normalize=False, backend=bname)
        p, *ys = _on(device, DTYPES[dtype], points, *plates)
        out = ifm.fields.coulomb_field(p, *ys, **mode)
        permuted = ifm.fields.coulomb_field(
            p, *(y[perm] for y, perm in zip(ys, perms, strict=False)), **mode
        )
        scale = sum(torch.cdist(points, y).amax(dim=1) for y in plates)
        assert_equal_up_to_summation_order(
            permuted, out, scale, max(t.shape[0] for t in plates), f"coulomb perms {perms}"
        )

    run(backend, check)


# ---- stable vs default -----------------------------------------------------------------------
def test_stable_points_where_default_points(backend):
    """Raw float32 fields; rows where the default is not all-underflow (norm > 1e-30): the unit
    vectors agree within the sum of both modes' parity allowances (by the float32 stand-ins)."""
    bname, device = backend

    @given(string_inputs(), st.sampled_from([1.0, 5.0, 20.0]))
    def check(inputs, far):
        points, quarks, antiquarks, params = inputs
        points[::2, 1:] += far * params["sigma0"]  # push some rows toward underflow
        p, q, a = _on(device, torch.float32, points, quarks, antiquarks)
        default = ifm.fields.string_field(p, q, a, **params, backend=bname).double().cpu()
        stable = ifm.fields.string_field(p, q, a, **params, stable=True, backend=bname)
        stable = stable.double().cpu()
        assert torch.isfinite(stable).all() and torch.isfinite(default).all()
        allowed = 0
        for st_mode in (False, True):
            oracle, standin = oracle_and_standin(
                "string", (points, quarks, antiquarks), **params, stable=st_mode
            )
            allowed = allowed + torch.clamp(2 * row_errors(standin, oracle), min=FLOOR)
        rows = default.norm(dim=1) > 1e-30
        unit = lambda e: e[rows] / e[rows].norm(dim=1, keepdim=True)  # noqa: E731
        diff = (unit(default) - unit(stable)).norm(dim=1)
        assert (diff <= 2 * allowed[rows]).all(), (diff, allowed[rows])

    run(backend, check, examples=30)


# ---- edges of float32 ------------------------------------------------------------------------
def _coincident_string(D, dtype=torch.float64):
    """Queries on a quark (z = 0), on an antiquark (z = L), on a segment, at the same x as a
    duplicated pair, and outside [0, L]; the CelebA geometry (L = 20, K = pi / 20)."""
    points, quarks, antiquarks, params = string_case(8, 3, D, "cifar", seed=D)
    quarks[2], antiquarks[2] = quarks[0], antiquarks[0]  # a duplicated pair
    L = params["L"]
    points[0] = quarks[1]
    points[1] = antiquarks[1]
    tau = torch.tensor([1e-6, 0.5, 1 - 1e-6], dtype=dtype)[:, None]
    points[2:5, 0] = L * tau[:, 0]
    points[2:5, 1:] = (1 - tau) * quarks[0, 1:] + tau * antiquarks[0, 1:]
    points[5, 0], points[6, 0], points[7, 0] = -1e-3, L + 1e-3, L
    return points, quarks, antiquarks, params


@pytest.mark.parametrize("D", [1, 49152])
def test_string_coincident_points_and_large_D(backend, D):
    """D = 49152 (CelebA 128x128) with b = 8, B = 3; D = 1. Every mode finite and in parity."""
    bname, device = backend
    points, quarks, antiquarks, params = _coincident_string(D)
    for string_mode in STRING_MODES:
        mode = dict(params, **string_mode)
        oracle, standin = oracle_and_standin("string", (points, quarks, antiquarks), **mode)
        out = ifm.fields.string_field(
            *_on(device, torch.float32, points, quarks, antiquarks), **mode, backend=bname
        )
        assert_parity(out, oracle, standin, what=f"string D={D} {mode}")
        assert out[5:7].norm() == 0, "queries outside [0, L] must get zero rows"


@pytest.mark.parametrize("D", [1, 49152])
def test_coulomb_coincident_points_and_large_D(backend, D):
    bname, device = backend
    points, pos, neg = coulomb_case(6, 3, 2, D, L=20.0, seed=D)
    points[0], points[3], points[4] = pos[1], neg[0], pos[2] + 1e-9
    pos[2] = pos[0]  # two coincident charges
    for mode in COULOMB_MODES:
        for plates in (pos, neg), (pos, None):
            oracle, standin = oracle_and_standin("coulomb", (points, *plates), **mode)
            out = ifm.fields.coulomb_field(
                *_on(device, torch.float32, points, *plates), **mode, backend=bname
            )
            assert_parity(out, oracle, standin, what=f"coulomb D={D} {mode}")


@pytest.mark.parametrize("field", ["string", "coulomb"])
def test_finite_up_to_the_magnitude_bound(backend, field):
    """Coordinates just below the bound that ``check_finite`` enforces (docs/INPUTS.md,
    ``huge-points``) give finite results; just above it they are rejected."""
    bname, device = backend
    D = 3
    bound = _checks.magnitude_bound(torch.float32, D + 1)
    big = 0.45 * bound  # |x - y| <= 0.9 bound
    if field == "string":
        points, quarks, antiquarks, params = string_case(6, 4, D, "toy", seed=1)
        quarks[:, 1:] = big * torch.sign(quarks[:, 1:])
        antiquarks[:, 1:] = -big * torch.sign(antiquarks[:, 1:])
        points[:, 1:] = big * torch.sign(points[:, 1:])
        call = lambda p: ifm.fields.string_field(  # noqa: E731
            p, *_on(device, torch.float32, quarks, antiquarks), **params, backend=bname
        )
    else:
        points, pos, neg = coulomb_case(6, 4, 3, D, L=6.0, seed=1)
        pos[:, 1:] = big * torch.sign(pos[:, 1:])
        neg[:, 1:] = -big * torch.sign(neg[:, 1:])
        points[:, 1:] = big * torch.sign(points[:, 1:])
        call = lambda p: ifm.fields.coulomb_field(  # noqa: E731
            p, *_on(device, torch.float32, pos, neg), backend=bname
        )
    p = points.to(device, torch.float32)
    assert torch.isfinite(call(p)).all()
    p[1, 2] = 1.01 * bound
    with pytest.raises(ValueError, match="too large"):
        call(p)
