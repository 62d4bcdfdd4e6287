"""ifm.points: query-point samplers of FIELDS.md §5."""

import math
import pathlib

import numpy as np
import pytest
import torch

from ifm import points

L = 6.0


def _pairs(B=4000, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g) + 5.0


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


KWARGS = {"mesh": {"ranges": [(0.0, L)] + [(-3.0, 3.0)] * 3, "num_points": 5}}


@pytest.mark.parametrize("name", list(points.SAMPLERS))
def test_shape_dtype_and_repeatable(name):
    a, c = _pairs(64)
    fn = points.get_point_sampler(name, **KWARGS.get(name, {}))
    p1 = fn(a, c, L=L, b=10, generator=_gen())
    p2 = fn(a, c, L=L, b=10, generator=_gen())
    p3 = fn(a, c, L=L, b=10, generator=_gen(2))
    assert p1.shape == (10, 4) and p1.dtype == a.dtype
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    p64 = fn(a.double(), c.double(), L=L, b=10, generator=_gen())
    assert p64.dtype == torch.float64


def test_uniform_is_on_the_segments_of_the_first_b_pairs():
    a, c = _pairs(100)
    p = points.uniform(a, c, L=L, b=40, generator=_gen())
    z = p[:, 0]
    assert z.min() >= points.EPS and z.max() <= L - points.EPS
    t = (z / L)[:, None]
    assert torch.allclose(p[:, 1:], (1 - t) * a[:40] + t * c[:40], atol=1e-5)
    big = points.uniform(*_pairs(20000), L=L, generator=_gen())
    assert big[:, 0].mean().item() == pytest.approx(L / 2, abs=0.05)


def test_noised_variance_profile():
    a, c = _pairs(20000, D=3)
    p = points.noised(a, c, L=L, generator=_gen())
    z = p[:, 0]
    t = (z / L)[:, None]
    noise = p[:, 1:] - ((1 - t) * a + t * c)
    var = L / 2 - (L / 2 - z).abs()
    # per-coordinate variance sigma^2(z): E[noise^2 / sigma^2] = 1 in each coordinate
    ratio = (noise**2 / var[:, None]).mean(0)
    assert torch.allclose(ratio, torch.ones(3), atol=0.05)
    # zero at the plates, largest at L/2
    near_plate = (z < 0.05) | (z > L - 0.05)
    middle = (z - L / 2).abs() < 0.1
    assert noise[near_plate].pow(2).mean() < 0.05
    assert noise[middle].pow(2).mean() == pytest.approx(L / 2, rel=0.15)
    # direction uniform on the sphere: mean direction ~ 0
    u = noise / noise.norm(dim=1, keepdim=True)
    assert u.mean(0).norm() < 0.03
    # noise_scale scales the standard deviation
    p2 = points.noised(a, c, L=L, noise_scale=0.5, generator=_gen())
    noise2 = p2[:, 1:] - ((1 - t) * a + t * c)
    assert torch.allclose(noise2, 0.5 * noise, atol=1e-5)


def test_pfgm_mixing():
    a, c = _pairs(20000, D=8)
    p = points.pfgm(a, c, L=40.0, generator=_gen())
    z, x = p[:, 0], p[:, 1:]
    assert z.min() >= points.EPS - 1e-9 and z.max() <= 40.0 - points.EPS + 1e-5
    # both clamps are hit (m = 191 N(0,1) spans many decades)
    assert (z <= points.EPS + 1e-7).float().mean() > 0.1
    assert (z >= 40.0 - points.EPS - 1e-4).float().mean() > 0.1
    # median of z unclamped: |N(0, 0.01)| median 0.0674 times (1.03)^m, m median 0 -> ~0.0674
    assert z.median().item() == pytest.approx(0.1 * 0.6745, rel=0.5)
    # x perturbs the quark A only, isotropically; log-radius / log-z ratio grows together
    r = (x - a).norm(dim=1)
    ok = r > 0  # radii below float32 resolution of A leave x == A
    assert ok.float().mean() > 0.5
    assert ((x - a)[ok] / r[ok, None]).mean(0).norm() < 0.05
    mid = (z > 1e-2) & (z < 30) & (r > 1e-3)
    corr = torch.corrcoef(torch.stack([r[mid].log(), z[mid].log()]))[0, 1]
    assert corr > 0.9
    # without x1
    assert points.pfgm(a, None, L=40.0, b=5, generator=_gen()).shape == (5, 9)


def test_efm_sampler_noise():
    a, c = _pairs(20000, D=2)
    p = points.efm(a, c, L=L, sigma=0.5, generator=_gen())
    t = (p[:, 0] / L)[:, None]
    noise = p[:, 1:] - ((1 - t) * a + t * c)
    assert noise.std().item() == pytest.approx(0.5, rel=0.05)
    pz = points.efm(a, c, L=L, sigma=0.5, z_noise=True, generator=_gen())
    assert (pz[:, 0] < 0).any()


def test_images_are_flattened():
    g = _gen(3)
    a, c = torch.randn(6, 1, 2, 2, generator=g), torch.randn(6, 1, 2, 2, generator=g)
    p = points.uniform(a, c, L=L, generator=_gen())
    assert p.shape == (6, 5)


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda a, c: points.uniform(a, c, L=-1.0), ValueError, "L"),
        (lambda a, c: points.uniform(a, c, L=L, b=0), ValueError, "b"),
        (lambda a, c: points.uniform(a, c, L=L, b=100), ValueError, "b"),
        (lambda a, c: points.uniform(a, c[:3], L=L), ValueError, "x1"),
        (lambda a, c: points.uniform(a.numpy(), c, L=L), TypeError, "x0"),
        (lambda a, c: points.uniform(a, c, L=L, generator=1), TypeError, "generator"),
        (lambda a, c: points.uniform(a, c, L=L, eps=4.0), ValueError, "eps"),
        (lambda a, c: points.noised(a, c, L=L, noise_scale=-1.0), ValueError, "noise_scale"),
        (lambda a, c: points.pfgm(a, c, L=L, tau=0.0), ValueError, "tau"),
        (lambda a, c: points.get_point_sampler("gauss"), ValueError, "sampler"),
    ],
)
def test_bad_inputs(call, exc, word):
    a, c = _pairs(8)
    with pytest.raises(exc, match=word):
        call(a, c)


# --------------------------------------------------------------------------------------------
# the authors' samplers against outputs recorded from their code (tests/data/authors/)
# --------------------------------------------------------------------------------------------
AUTHORS = pathlib.Path(__file__).parent / "data" / "authors"


def _rec(name):
    return {k: torch.tensor(v) for k, v in np.load(AUTHORS / f"{name}.npz").items()}


@pytest.mark.parametrize(
    "key, call",
    [
        ("both_side_toy", lambda d, g: points.both_side(d["x0"], d["x1"], L=6.0, generator=g(10))),
        (
            "both_side_image",
            lambda d, g: points.both_side(
                d["xi0"], d["xi1"], L=6.0, eps=1e-3, form="image", generator=g(11)
            ),
        ),
        (
            "uniform_noised_cos",
            lambda d, g: points.noised_cos(
                d["xi0"], d["xi1"], L=6.0, eps=1e-3, mltp=0.7, generator=g(12)
            ),
        ),
        (
            "uniform",
            lambda d, g: points.uniform(d["xi0"], d["xi1"], L=6.0, eps=1e-3, generator=g(13)),
        ),
        (
            "uniform_mixing",
            lambda d, g: points.uniform_mixing(d["xi0"], d["xi1"], L=20.0, generator=g(14)),
        ),
        ("gaussian_mixing", lambda d, g: points.pfgm(d["xi0"], d["xi1"], L=20.0, generator=g(15))),
        (
            "gaussian_mixing_restrict",
            lambda d, g: points.pfgm(d["xi0"], d["xi1"], L=20.0, restrict_M=True, generator=g(16)),
        ),
    ],
)
def test_authors_samplers_reproduce_their_points(key, call):
    d = _rec("ifm_samplers")
    out = call(d, _gen)
    ref = d[key]
    assert out.shape == ref.shape
    # same draws in the same order; pfgm's (1 + tau)^m is float64 here, float32 in theirs
    err = (out - ref).abs() / ref.abs().clamp_min(1.0)
    assert float(err.max()) < (1e-4 if key.startswith("gaussian") else 1e-6), key


def test_pfgm_efm_form_reproduces_the_efm_repository():
    d = _rec("efm_gaussian_mixing")
    out = points.pfgm(
        d["xi0"], d["xi1"], L=float(d["L"]), form="efm", generator=_gen(int(d["seed"]))
    )
    ref = d["points"]
    assert float(((out - ref).abs() / ref.abs().clamp_min(1.0)).max()) < 1e-4
    other = points.pfgm(d["xi0"], d["xi1"], L=float(d["L"]), generator=_gen(int(d["seed"])))
    assert not torch.allclose(other, ref)  # the two repositories' forms differ


def test_mesh_reproduces_their_points():
    d = _rec("efm_mesh")
    out = points.mesh(
        b=int(d["b"]),
        ranges=[d["range_col0"], d["range_col1"], d["range_col2"]],
        num_points=int(d["num_points"]),
        generator=_gen(int(d["seed"])),
    )
    assert torch.equal(out, d["points"])


def test_both_side_toy_profile():
    a, c = _pairs(4000, D=2)
    p = points.both_side(a, c, L=L, b=4000, generator=_gen())
    z = p[:, 0]
    assert float(z.min()) >= 0.5 and float(z.max()) <= L - 0.5
    w = ((z - 0.5) / L)[:, None]
    assert torch.allclose(p[:, 1:], (1 - w) * a + w * c, atol=1e-5)
    # half the queries start near each plate: at most sigma_end * 1.03^4 * 4 sigma from it
    near = (z < 0.5 + 4 * 0.8 * 1.03**4) | (z > L - 0.5 - 4 * 0.8 * 1.03**4)
    assert float(near.float().mean()) > 0.5
    with pytest.raises(ValueError, match="even"):
        points.both_side(a, c, L=L, b=5)
    with pytest.raises(ValueError, match="form"):
        points.both_side(a, c, L=L, b=4, form="left")


def test_noised_cos_radius_is_deterministic():
    a, c = _pairs(500, D=3)
    p = points.noised_cos(a, c, L=L, b=500, mltp=0.5, generator=_gen())
    z = p[:, 0]
    t = (z / L)[:, None]
    r = (p[:, 1:] - ((1 - t) * a + t * c)).norm(dim=1)
    expect = 0.5 * (1 + torch.cos(2 * math.pi / L * (z - L / 2)))
    assert torch.allclose(r, expect, atol=1e-5)


def test_mesh_is_a_shuffled_grid():
    out = points.mesh(
        b=27, ranges=[(0.0, 2.0), (-1.0, 1.0), (5.0, 6.0)], num_points=3, generator=_gen()
    )
    grid = torch.cartesian_prod(
        torch.linspace(0, 2, 3), torch.linspace(-1, 1, 3), torch.linspace(5, 6, 3)
    )
    assert sorted(map(tuple, out.tolist())) == sorted(map(tuple, grid.tolist()))
    with pytest.raises(ValueError, match="b must be"):
        points.mesh(b=28, ranges=[(0.0, 2.0)] * 3, num_points=3)
    with pytest.raises(TypeError, match="ranges"):
        points.mesh(b=2, ranges=[1.0, 2.0], num_points=3)
