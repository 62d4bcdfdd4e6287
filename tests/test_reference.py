"""The reference against the authors' outputs and against a scalar transcription of FIELDS.md,
the reference in float32 against the parity rule on a held-out EFM-shaped case, and every backend
on each edge rule of FIELDS.md §2-§4."""

import math

import pytest
import torch
from cases import STRING_GEOMETRIES, coulomb_case, string_case
from modes import COULOMB_MODE_IDS, COULOMB_MODES, golden_call, golden_oracle, reference_field
from parity import assert_parity, golden_names, load_golden, row_errors

import ifm
from ifm import reference


# ---- a scalar, loop-by-loop transcription of FIELDS.md §2, independent of ifm.reference ------
def spec_string_field(point, quarks, antiquarks, L, sigma0, K, with_max_weight=False):
    """One query; python floats; the authors' right-end forms (cos and tan(pi - ...)).
    With ``with_max_weight``: ``(E, max_j w_j)``."""
    d = math.pi / (2 * K)
    z, x = point[0], point[1:]
    D = len(x)
    E = [0.0] * (D + 1)
    wmax = 0.0
    if z < 0 or z > L:
        return (E, wmax) if with_max_weight else E
    if z < d:
        s, kappa = sigma0 * math.sin(K * z), K / (math.tan(K * z) + 1e-5)
    elif z <= L - d:
        s, kappa = sigma0, 0.0
    else:
        s, kappa = sigma0 * math.cos(K * (z - L + d)), K * math.tan(math.pi - K * (z - L + d))
    for q, a in zip(quarks, antiquarks, strict=False):
        A, C = q[1:], a[1:]
        n = [L] + [c - aa for c, aa in zip(C, A, strict=False)]
        nn = math.sqrt(sum(v * v for v in n))
        n = [v / nn for v in n]
        rho = [xi - (1 - z / L) * ai - (z / L) * ci for xi, ai, ci in zip(x, A, C, strict=False)]
        r = math.sqrt(sum(v * v for v in rho))
        cos_a = 1 / math.sqrt(1 + (r * kappa) ** 2)
        sin_a = r * kappa * cos_a
        if s == 0:
            expo = 1.0 if r == 0 else 0.0
        else:
            expo = math.exp(-r * r / (2 * s * s))
        w = expo / ((cos_a + 1e-8) * (s / sigma0) ** D + 1e-2)
        wmax = max(wmax, w)
        for k in range(D + 1):
            E[k] += w * cos_a * n[k]
        for k in range(D):
            E[k + 1] += w * sin_a / (r + 1e-11) * rho[k]
    return (E, wmax) if with_max_weight else E


def spec_coulomb_field(point, positive, negative, plate_gamma, pfgm):
    """One query; python floats; the authors' stabilised weights (min_k d_k / (d_j + 1e-7))^DIM,
    EFM's per-plate normalisation, PFGM's +1e-7 in the sum and sqrt(D) / gamma = 5 scaling
    (typed here from FIELDS.md on purpose: it checks ``ifm.fields.coulomb_kernel_args`` too)."""
    dim = len(point)

    def plate(charges):
        dist = [math.dist(point, y) for y in charges]
        w = [(min(dist) / (dj + 1e-7)) ** dim for dj in dist]
        total = sum(w) + (1e-7 if pfgm else 0.0)
        E = [
            sum(wj / total * (y[k] - point[k]) for wj, y in zip(w, charges, strict=False))
            for k in range(dim)
        ]
        if plate_gamma is not None:
            n = math.sqrt(sum(v * v for v in E))
            E = [math.sqrt(dim) * v / (n + plate_gamma) for v in E]
        return E

    Ep = plate(positive)
    E = Ep if negative is None else [en - ep for ep, en in zip(Ep, plate(negative), strict=False)]
    if pfgm:
        n = math.sqrt(sum(v * v for v in E))
        E = [math.sqrt(dim - 1) * v / (n + 5.0) for v in E]
    return E


def test_oracle_matches_authors_golden():
    """The float64 reference is what the authors' code computes (not a vacuous allowance):
    median row error ~1e-7, worst rows are the ill-conditioned ones near a plate."""
    for name in golden_names():
        meta, data = load_golden(name)
        oracle = golden_oracle(meta, data)
        nonzero = data["field"].norm(dim=1) > 0
        err = row_errors(data["field"], oracle)[nonzero]
        assert err.median() < 2e-6, (name, err.median())
        assert err.max() < 5e-3, (name, err.max())
        assert (oracle[~nonzero].norm(dim=1) < 1e-6).all(), name


@pytest.mark.parametrize("geometry", ["toy", "cifar", "cmnist"])
def test_reference_matches_scalar_spec(geometry):
    points, quarks, antiquarks, params = string_case(12, 7, 3, geometry, seed=1)
    got = reference.string_field(points, quarks, antiquarks, **params)
    for i in range(points.shape[0]):
        want = torch.tensor(
            spec_string_field(points[i].tolist(), quarks.tolist(), antiquarks.tolist(), **params),
            dtype=torch.float64,
        )
        assert torch.allclose(got[i], want, rtol=1e-9, atol=1e-12), (i, got[i], want)


@pytest.mark.parametrize("geometry", ["toy", "cmnist"])
def test_reference_modes_match_scalar_spec(geometry):
    """normalize=True is sqrt(D+1) E / (||E|| + 1e-5); stable is E / max_j w_j
    (FIELDS.md §4, §7)."""
    points, quarks, antiquarks, params = string_case(12, 7, 3, geometry, seed=7)
    got_n = reference.string_field(points, quarks, antiquarks, **params, normalize=True)
    got_s = reference.string_field(points, quarks, antiquarks, **params, stable=True)
    compared = 0
    for i in range(points.shape[0]):
        E, wmax = spec_string_field(
            points[i].tolist(), quarks.tolist(), antiquarks.tolist(), **params, with_max_weight=True
        )
        E = torch.tensor(E, dtype=torch.float64)
        want_n = 2.0 * E / (E.norm() + 1e-5) if E.norm() > 0 else E
        assert torch.allclose(got_n[i], want_n, rtol=1e-9, atol=1e-12), (i, got_n[i], want_n)
        if wmax > 0:  # (where every float64 weight underflows the spec has no direction)
            compared += 1
            assert torch.allclose(got_s[i], E / wmax, rtol=1e-9, atol=1e-12), (i, got_s[i], E)
    assert compared >= 5


@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize(
    "mode",
    [m for m in COULOMB_MODES if m["normalize"] is not True],
    ids=[
        i
        for m, i in zip(COULOMB_MODES, COULOMB_MODE_IDS, strict=False)
        if m["normalize"] is not True
    ],
)
def test_reference_coulomb_matches_scalar_spec(plates, mode):
    """Raw modes and PFGM's, through the public -> kernel argument mapping."""
    points, pos, neg = coulomb_case(9, 6, 5, 3, L=6.0, seed=8)
    points = points[3:]  # queries away from every charge
    neg = neg if plates == 2 else None
    got = reference_field("coulomb", (points, pos, neg), **mode)
    for i in range(points.shape[0]):
        want = torch.tensor(
            spec_coulomb_field(
                points[i].tolist(),
                pos.tolist(),
                None if neg is None else neg.tolist(),
                mode["plate_gamma"],
                mode["normalize"] == "pfgm",
            ),
            dtype=torch.float64,
        )
        assert torch.allclose(got[i], want, rtol=1e-9, atol=1e-12), (i, got[i], want)


# rows of each golden file compared with the scalar transcription (python loops over B * D)
SPEC_ROWS = 4


@pytest.mark.parametrize("name", golden_names())
def test_oracle_matches_scalar_spec_on_golden(name):
    """The reference in float64 (the oracle of the parity rule) against the scalar transcription
    of FIELDS.md on the golden inputs, to 1e-9: the float64 counterpart of test_golden, which
    cannot compare the oracle with itself."""
    meta, data = load_golden(name)
    tensors, public = golden_call(meta, data)
    rows = torch.linspace(0, tensors[0].shape[0] - 1, SPEC_ROWS).round().long().unique()
    got = golden_oracle(meta, data)[rows]
    points = tensors[0][rows].double().tolist()
    plates = [t.double().tolist() for t in tensors[1:]]
    for i, point in enumerate(points):
        if meta["field"] == "string":
            want = spec_string_field(point, *plates, meta["L"], meta["sigma0"], meta["K"])
        else:
            want = spec_coulomb_field(point, *plates, meta["plate_gamma"], pfgm=False)
        want = torch.tensor(want, dtype=torch.float64)
        err = ((got[i] - want).norm() / want.norm().clamp_min(1e-300)).item()
        assert err < 1e-9 or (want.norm() == 0 and got[i].norm() == 0), (name, rows[i], err)


@pytest.mark.parametrize("mode", COULOMB_MODES, ids=COULOMB_MODE_IDS)
def test_reference_f32_meets_parity_on_efm_shape(mode):
    """The reference on float32 inputs (what a user without a compiled backend gets) meets the
    parity rule on a held-out randomised EFM-CIFAR-shaped case (b = 64, Bp = Bn = 128,
    D = 3072, L = 100). No authors' output exists for it; the stand-in is the authors'
    materialising formulation (``coulomb_field_materialized``: their stabilised weights
    ``(min_k d_k / (d_j + 1e-7))^DIM`` on a ``[b, B, D+1]`` tensor) in float32, which shares no
    arithmetic with the reference. The rows on or next to a charge (coulomb_case rows 1, 2) are
    left out: there the authors' float32 weights are 0 / 0 (FIELDS.md §7). The golden files are
    the other half of this check: test_golden[reference-cpu-*-f32] holds the float32 reference to
    the authors' own outputs."""
    points, pos, neg = coulomb_case(67, 128, 128, 3072, L=100.0, seed=3)
    points = points[3:]
    f32 = [t.float() for t in (points, pos, neg)]
    oracle = reference_field("coulomb", (points, pos, neg), **mode)
    kw = ifm.fields.coulomb_kernel_args(points.shape[1], two_plates=True, **mode)
    standin = reference.coulomb_field_materialized(
        *f32, plate_gamma=kw["plate_gamma"], sum_eps=kw["sum_eps"]
    )
    if kw["normalize"]:
        standin = reference.normalize_rows(standin, kw["norm_scale"], kw["eps"])
    assert torch.isfinite(standin).all()
    out = ifm.fields.coulomb_field(*f32, **mode, backend="reference")
    assert out.dtype == torch.float32
    assert_parity(out, oracle, standin, what=f"reference f32 EFM-CIFAR shape {mode}")


@pytest.mark.parametrize("geometry", ["toy", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_form_matches_vectorised(geometry, dtype):
    points, quarks, antiquarks, params = string_case(20, 9, 6, geometry, seed=2)
    args = [t.to(dtype) for t in (points, quarks, antiquarks)]
    a = reference.string_field_loop(*args, **params)
    b = reference.string_field(*args, **params, memory_budget=64)  # forces many chunks
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(a, b, rtol=tol, atol=tol * a.abs().max().item())


def test_coulomb_softmax_equals_authors_weights():
    points, pos, neg = coulomb_case(9, 11, 7, 3, L=6.0, seed=4)
    for stability in (True, False):
        for gamma in (None, 1e-7, 5.0):
            a = reference.coulomb_field_materialized(
                points, pos, neg, stability=stability, plate_gamma=gamma
            )
            b = reference.coulomb_field(points, pos, neg, plate_gamma=gamma)
            # row 1 sits exactly on a charge: the authors' stabilised weights are all 0 (0/0)
            regular = [i for i in range(points.shape[0]) if i != 1]
            assert torch.allclose(a[regular], b[regular], rtol=1e-9, atol=1e-12)
            assert torch.isfinite(b).all()
            if stability:
                assert torch.isnan(a[1]).all()


# ---- every backend on each edge rule ------------------------------------------------------------
def _one_pair(z, x, A, C, L):
    p = torch.tensor([[z] + x], dtype=torch.float64)
    q = torch.tensor([[0.0] + A], dtype=torch.float64)
    a = torch.tensor([[L] + C], dtype=torch.float64)
    return p, q, a


EDGE_Z = {
    "z=0": 0.0,
    "z=d": None,
    "z=L/2": "L/2",
    "z=L-d": "L-d",
    "z=L": "L",
    "z<0": -1e-3,
    "z>L": "L+",
}


@pytest.mark.parametrize("where", list(EDGE_Z))
@pytest.mark.parametrize("geometry", ["toy", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_rules(backend, where, geometry, dtype):
    """z exactly 0, d, L/2, L-d, L and outside [0, L], with r = 0 and r > 0."""
    bname, device = backend
    L, sigma0, K = STRING_GEOMETRIES[geometry]
    d = math.pi / (2 * K)
    named = {None: d, "L/2": L / 2, "L-d": L - d, "L": L, "L+": L + 1e-3}
    z = named.get(EDGE_Z[where], EDGE_Z[where])
    A, C = [0.5, -1.0], [1.5, 0.25]
    tau = z / L
    on_segment = [(1 - tau) * a + tau * c for a, c in zip(A, C, strict=False)]
    for x in (on_segment, [v + 0.3 * sigma0 for v in on_segment]):
        p, q, a = _one_pair(z, x, A, C, L)
        want = spec_string_field(p[0].tolist(), q.tolist(), a.tolist(), L, sigma0, K)
        want = torch.tensor([want], dtype=torch.float64)
        got = ifm.fields.string_field(
            p.to(device, dtype),
            q.to(device, dtype),
            a.to(device, dtype),
            L=L,
            sigma0=sigma0,
            K=K,
            backend=bname,
        )
        assert torch.isfinite(got).all()
        if z < 0 or z > L:
            assert got.abs().max() == 0
            continue
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        assert torch.allclose(got.double().cpu(), want, rtol=tol, atol=tol * want.norm().item()), (
            where,
            x,
            got,
            want,
        )
    # normalisation of the same rows (§4): sqrt(D+1) E / (||E|| + 1e-5), from the spec's E
    got_n = ifm.fields.string_field(
        p.to(device, dtype),
        q.to(device, dtype),
        a.to(device, dtype),
        L=L,
        sigma0=sigma0,
        K=K,
        normalize=True,
        backend=bname,
    )
    want_n = math.sqrt(3) * want / (want.norm(dim=1, keepdim=True) + 1e-5)
    assert torch.allclose(got_n.double().cpu(), want_n, rtol=1e-4, atol=1e-5), (got_n, want_n)


def test_all_underflow_row_is_zero(backend):
    """Every float32 weight underflows: the default mode returns a zero row (authors' code)."""
    bname, device = backend
    points, quarks, antiquarks, params = string_case(3, 5, 64, "cifar", seed=5)
    points = points.float()
    points[:, 0] = torch.tensor([1.0, 10.0, 19.0])
    points[:, 1:] += 100.0
    out = ifm.fields.string_field(
        points.to(device),
        quarks.float().to(device),
        antiquarks.float().to(device),
        **params,
        backend=bname,
    )
    assert out.norm(dim=1).max() < 1e-6


def test_ot_pairing_from_golden(backend):
    """The OT golden file is reproduced by feeding antiquarks[pairing] with the index plan, and
    not without the pairing (the test can fail)."""
    bname, device = backend
    meta, data = load_golden("string_ot_plan")
    params = dict(L=meta["L"], sigma0=meta["sigma0"], K=meta["K"])
    ant = data["antiquarks"]
    paired = ifm.fields.string_field(
        data["points"].to(device),
        data["quarks"].to(device),
        ant[data["pairing"].long()].to(device),
        **params,
        backend=bname,
    )
    unpaired = ifm.fields.string_field(
        data["points"].to(device),
        data["quarks"].to(device),
        ant.to(device),
        **params,
        backend=bname,
    )
    err_p = row_errors(paired, data["field"]).max()
    err_u = row_errors(unpaired, data["field"]).max()
    assert err_p < 1e-4 and err_u > 1e-2, (err_p, err_u)


def test_default_normalize_is_raw_field(backend):
    """Without normalize=..., every backend returns the raw field (the authors' GroundTruth)."""
    bname, device = backend
    points, quarks, antiquarks, params = string_case(5, 5, 4, "toy", seed=6)
    args = [t.to(device) for t in (points, quarks, antiquarks)]
    default = ifm.fields.string_field(*args, **params, backend=bname).cpu()
    oracle = reference.string_field(points, quarks, antiquarks, **params, normalize=False)
    assert torch.allclose(default, oracle, rtol=1e-9, atol=1e-12)
    normalised = ifm.fields.string_field(*args, **params, normalize=True, backend=bname).cpu()
    assert (default - normalised).norm(dim=1).max() > 0.1  # the two are told apart
    default_c = ifm.fields.coulomb_field(*args, backend=bname).cpu()
    oracle_c = reference.coulomb_field(
        points, quarks, antiquarks, plate_gamma=ifm.fields.EFM_PLATE_GAMMA
    )
    assert torch.allclose(default_c, oracle_c, rtol=1e-9, atol=1e-12)


def test_zero_rows_stay_zero_with_eps_zero(backend):
    """eps = 0 / plate_gamma = 0 are accepted: rows whose field is exactly zero (a query outside
    [0, L]; a query on the only charge) stay zero instead of 0 / 0."""
    bname, device = backend
    p, q, a = _one_pair(-0.5, [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], 6.0)
    out = ifm.fields.string_field(
        p.to(device),
        q.to(device),
        a.to(device),
        L=6.0,
        sigma0=1.0,
        K=10.0,
        normalize=True,
        eps=0.0,
        backend=bname,
    )
    assert torch.equal(out.cpu(), torch.zeros_like(p))
    pos = torch.tensor([[0.0, 1.0, 2.0]], device=device)
    neg = torch.tensor([[6.0, 0.0, 0.0]], device=device)
    for gamma, norm in ((0.0, False), (None, True)):
        out = ifm.fields.coulomb_field(
            pos, pos, None, plate_gamma=gamma, normalize=norm, eps=0.0, backend=bname
        )
        assert torch.equal(out.cpu(), torch.zeros(1, 3)), (gamma, norm, out)
    # two plates, per-plate gamma 0: the positive term vanishes, the negative one is normalised
    out = ifm.fields.coulomb_field(pos, pos, neg, plate_gamma=0.0, backend=bname).cpu()
    want = math.sqrt(3) * (neg - pos).cpu() / (neg - pos).norm()
    assert torch.allclose(out, want, rtol=1e-6)


def test_query_on_a_plate_not_representable_in_float32(backend):
    """L = 0.3 is 0.30000001 in float32: a query with the antiquarks' z is on the plate, so its
    own pair contributes (weight 1 / 1e-2), on every backend."""
    bname, device = backend
    L = 0.3
    p, q, a = _one_pair(L, [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], L)
    p, q, a = (t.float().to(device) for t in (p, q, a))
    p[0, 0] = a[0, 0]
    out = ifm.fields.string_field(p, q, a, L=L, sigma0=1.0, K=math.pi / L, backend=bname).cpu()
    assert out.norm() > 50.0, out
