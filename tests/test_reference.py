"""The reference against the authors' outputs and against a scalar transcription of FIELDS.md,
and every backend on each edge rule of FIELDS.md §2-§4."""
import math

import pytest
import torch

import ifm
from ifm import reference

from cases import string_case
from parity import golden_names, load_golden, row_errors


# ---- a scalar, loop-by-loop transcription of FIELDS.md §2, independent of ifm.reference ------
def spec_string_field(point, quarks, antiquarks, L, sigma0, K):
    """One query; python floats; the authors' right-end forms (cos and tan(pi - ...))."""
    d = math.pi / (2 * K)
    z, x = point[0], point[1:]
    D = len(x)
    E = [0.0] * (D + 1)
    if z < 0 or z > L:
        return E
    if z < d:
        s, kappa = sigma0 * math.sin(K * z), K / (math.tan(K * z) + 1e-5)
    elif z <= L - d:
        s, kappa = sigma0, 0.0
    else:
        s, kappa = sigma0 * math.cos(K * (z - L + d)), K * math.tan(math.pi - K * (z - L + d))
    for q, a in zip(quarks, antiquarks):
        A, C = q[1:], a[1:]
        n = [L] + [c - aa for c, aa in zip(C, A)]
        nn = math.sqrt(sum(v * v for v in n))
        n = [v / nn for v in n]
        rho = [xi - (1 - z / L) * ai - (z / L) * ci for xi, ai, ci in zip(x, A, C)]
        r = math.sqrt(sum(v * v for v in rho))
        cos_a = 1 / math.sqrt(1 + (r * kappa) ** 2)
        sin_a = r * kappa * cos_a
        if s == 0:
            expo = 1.0 if r == 0 else 0.0
        else:
            expo = math.exp(-r * r / (2 * s * s))
        w = expo / ((cos_a + 1e-8) * (s / sigma0) ** D + 1e-2)
        for k in range(D + 1):
            E[k] += w * cos_a * n[k]
        for k in range(D):
            E[k + 1] += w * sin_a / (r + 1e-11) * rho[k]
    return E


def test_oracle_matches_authors_golden():
    """The float64 reference is what the authors' code computes (not a vacuous allowance):
    median row error ~1e-7, worst rows are the ill-conditioned ones near a plate."""
    for name in golden_names():
        meta, data = load_golden(name)
        if meta["field"] == "string":
            ant = data["antiquarks"]
            if "pairing" in data:
                ant = ant[data["pairing"].long()]
            oracle = reference.string_field(data["points"].double(), data["quarks"].double(),
                                            ant.double(), L=meta["L"], sigma0=meta["sigma0"],
                                            K=meta["K"])
        else:
            oracle = reference.coulomb_field(data["points"].double(), data["positive"].double(),
                                             data["negative"].double(),
                                             plate_gamma=meta["plate_gamma"])
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
        want = torch.tensor(spec_string_field(points[i].tolist(), quarks.tolist(),
                                              antiquarks.tolist(), **params), dtype=torch.float64)
        assert torch.allclose(got[i], want, rtol=1e-9, atol=1e-12), (i, got[i], want)


@pytest.mark.parametrize("geometry", ["toy", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_form_matches_vectorised(geometry, dtype):
    points, quarks, antiquarks, params = string_case(20, 9, 6, geometry, seed=2)
    args = [t.to(dtype) for t in (points, quarks, antiquarks)]
    a = reference.string_field_loop(*args, **params)
    b = reference.string_field(*args, **params, memory_budget=64)   # forces many chunks
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(a, b, rtol=tol, atol=tol * a.abs().max().item())


def test_coulomb_softmax_equals_authors_weights():
    from cases import coulomb_case
    points, pos, neg = coulomb_case(9, 11, 7, 3, L=6.0, seed=4)
    for stability in (True, False):
        for gamma in (None, 1e-7, 5.0):
            a = reference.coulomb_field_materialized(points, pos, neg, stability=stability,
                                                     plate_gamma=gamma)
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


EDGE_Z = {"z=0": 0.0, "z=d": None, "z=L/2": "L/2", "z=L-d": "L-d", "z=L": "L",
          "z<0": -1e-3, "z>L": "L+"}


@pytest.mark.parametrize("where", list(EDGE_Z))
@pytest.mark.parametrize("geometry", ["toy", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_rules(backend, where, geometry, dtype):
    """z exactly 0, d, L/2, L-d, L and outside [0, L], with r = 0 and r > 0."""
    bname, device = backend
    L, sigma0, K = {"toy": (6.0, 1.0, 10.0), "cifar": (20.0, 1.0, math.pi / 20)}[geometry]
    d = math.pi / (2 * K)
    z = {None: d, "L/2": L / 2, "L-d": L - d, "L": L, "L+": L + 1e-3}.get(EDGE_Z[where], EDGE_Z[where])
    A, C = [0.5, -1.0], [1.5, 0.25]
    tau = z / L
    on_segment = [(1 - tau) * a + tau * c for a, c in zip(A, C)]
    for x in (on_segment, [v + 0.3 * sigma0 for v in on_segment]):
        p, q, a = _one_pair(z, x, A, C, L)
        want = torch.tensor([spec_string_field(p[0].tolist(), q.tolist(), a.tolist(), L, sigma0, K)],
                            dtype=torch.float64)
        got = ifm.fields.string_field(p.to(device, dtype), q.to(device, dtype),
                                      a.to(device, dtype), L=L, sigma0=sigma0, K=K, backend=bname)
        assert torch.isfinite(got).all()
        if z < 0 or z > L:
            assert got.abs().max() == 0
            continue
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        assert torch.allclose(got.double().cpu(), want, rtol=tol, atol=tol * want.norm().item()), \
            (where, x, got, want)
    # normalisation of the same rows (§4): sqrt(D+1) E / (||E|| + 1e-5)
    got_n = ifm.fields.string_field(p.to(device, dtype), q.to(device, dtype), a.to(device, dtype),
                                    L=L, sigma0=sigma0, K=K, normalize=True, backend=bname)
    raw = ifm.fields.string_field(p.to(device, dtype), q.to(device, dtype), a.to(device, dtype),
                                  L=L, sigma0=sigma0, K=K, backend=bname).double()
    want_n = math.sqrt(3) * raw / (raw.norm(dim=1, keepdim=True) + 1e-5)
    assert torch.allclose(got_n.double(), want_n, rtol=1e-5, atol=1e-6)


def test_all_underflow_row_is_zero(backend):
    """Every float32 weight underflows: the default mode returns a zero row (authors' code)."""
    bname, device = backend
    points, quarks, antiquarks, params = string_case(3, 5, 64, "cifar", seed=5)
    points = points.float()
    points[:, 0] = torch.tensor([1.0, 10.0, 19.0])
    points[:, 1:] += 100.0
    out = ifm.fields.string_field(points.to(device), quarks.float().to(device),
                                  antiquarks.float().to(device), **params, backend=bname)
    assert out.norm(dim=1).max() < 1e-6


def test_ot_pairing_from_golden(backend):
    """The OT golden file is reproduced by feeding antiquarks[pairing] with the index plan, and
    not without the pairing (the test can fail)."""
    bname, device = backend
    meta, data = load_golden("string_ot_plan")
    params = dict(L=meta["L"], sigma0=meta["sigma0"], K=meta["K"])
    ant = data["antiquarks"]
    paired = ifm.fields.string_field(data["points"].to(device), data["quarks"].to(device),
                                     ant[data["pairing"].long()].to(device), **params, backend=bname)
    unpaired = ifm.fields.string_field(data["points"].to(device), data["quarks"].to(device),
                                       ant.to(device), **params, backend=bname)
    err_p = row_errors(paired, data["field"]).max()
    err_u = row_errors(unpaired, data["field"]).max()
    assert err_p < 1e-4 and err_u > 1e-2, (err_p, err_u)


def test_default_normalize_is_raw_field():
    points, quarks, antiquarks, params = string_case(5, 5, 4, "toy", seed=6)
    raw = ifm.fields.string_field(points, quarks, antiquarks, **params, backend="reference")
    assert torch.allclose(raw, reference.string_field(points, quarks, antiquarks, **params))
