"""ifm.matchers: IFMMatcher / EFMMatcher (plan -> points -> fused target)."""

import math

import pytest
import torch

import ifm
from ifm import matchers, plans, points

L = 6.0


def _batches(B=32, shape=(2,), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, *shape, generator=g, dtype=dtype),
        torch.randn(B, *shape, generator=g, dtype=dtype) + 2.0,
    )


def _plates(a, c):
    a, c = a.reshape(a.shape[0], -1), c.reshape(c.shape[0], -1)
    return (
        torch.cat([torch.zeros_like(a[:, :1]), a], 1),
        torch.cat([torch.full_like(c[:, :1], L), c], 1),
    )


@pytest.mark.parametrize("plan", ["independent", "ot"])
def test_ifm_matches_manual_pipeline(plan):
    x0, x1 = _batches(32)
    m = matchers.IFMMatcher(L, 1.0, 10.0, plan=plan, b=12, backend="reference")
    z, xt, target, pairing = m.sample_location_and_target(
        x0, x1, generator=torch.Generator().manual_seed(7), return_pairing=True
    )
    assert torch.equal(pairing, plans.get_plan(plan)(x0, x1))
    c = x1[pairing]
    q = points.uniform(x0, c, L=L, b=12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(z, q[:, 0]) and torch.equal(xt, q[:, 1:])
    lo, hi = _plates(x0, c)
    ref = ifm.fields.string_field(
        q, lo, hi, L=L, sigma0=1.0, K=10.0, normalize=True, backend="reference"
    )
    assert torch.allclose(target.flat(), ref)
    # normalised: sqrt(D+1) * E / (|E| + 1e-5)
    assert torch.allclose(target.flat().norm(dim=1), torch.full((12,), math.sqrt(3.0)), atol=1e-3)


def test_efm_matches_manual_pipeline():
    x0, x1 = _batches(32, seed=1)
    m = matchers.EFMMatcher(L, plate_gamma=1e-7, b=10, backend="reference")
    g = torch.Generator().manual_seed(3)
    z, xt, target = m.sample_location_and_target(x0, x1, generator=g)
    q = points.efm(x0, x1, L=L, b=10, generator=torch.Generator().manual_seed(3))
    lo, hi = _plates(x0, x1)
    ref = ifm.fields.coulomb_field(q, lo, hi, plate_gamma=1e-7, normalize=True, backend="reference")
    assert torch.allclose(target.flat(), ref)
    # the EFM target points from the z = 0 plate to the z = L plate between them
    assert (target.z > 0).all()


def test_image_shapes_and_loss():
    x0, x1 = _batches(16, shape=(3, 2, 2))
    m = matchers.IFMMatcher(L, 1.0, 10.0, b=5, generator=torch.Generator().manual_seed(0))
    z, xt, target = m.sample_location_and_target(x0, x1)
    assert z.shape == (5,) and xt.shape == (5, 3, 2, 2)
    assert target.z.shape == (5,) and target.x.shape == (5, 3, 2, 2)
    assert target.flat().shape == (5, 13)
    # loss = mean over b * (D+1) entries, for a pair or a flat prediction
    pred = (torch.zeros(5), torch.zeros(5, 3, 2, 2))
    expected = (target.flat() ** 2).sum() / (5 * 13)
    assert torch.allclose(m.loss(pred, target), expected)
    assert torch.allclose(m.loss(torch.zeros(5, 13), target.flat()), expected)
    assert m.loss(target, target) == 0
    # gradients flow into the prediction only
    p = torch.zeros(5, 13, requires_grad=True)
    m.loss(p, target).backward()
    assert torch.allclose(p.grad, -2 * target.flat() / (5 * 13))


def test_default_b_and_repeatability():
    x0, x1 = _batches(20)
    m1 = matchers.IFMMatcher(L, 1.0, 10.0, generator=torch.Generator().manual_seed(1))
    m2 = matchers.IFMMatcher(L, 1.0, 10.0, generator=torch.Generator().manual_seed(1))
    a, b = m1.sample_location_and_target(x0, x1), m2.sample_location_and_target(x0, x1)
    assert a[0].shape == (20,)
    assert all(torch.equal(u, v) for u, v in zip(a[:2], b[:2], strict=False))


def test_noised_points_and_kwargs_pass_through():
    x0, x1 = _batches(64)
    m = matchers.IFMMatcher(
        L,
        1.0,
        10.0,
        points="noised",
        points_kwargs={"noise_scale": 0.0},
        plan="ot",
        plan_kwargs={"cost": "sqeuclidean"},
    )
    z, xt, _, pairing = m.sample_location_and_target(x0, x1, return_pairing=True)
    assert torch.equal(pairing, plans.ot_pairing(x0, x1, cost="sqeuclidean"))
    t = (z / L)[:, None]
    assert torch.allclose(xt, (1 - t) * x0 + t * x1[pairing], atol=1e-5)


def test_default_K_is_pi_over_L():
    m = matchers.IFMMatcher(20.0)
    assert m.K == pytest.approx(math.pi / 20.0)


@pytest.mark.parametrize(
    "make, call, exc, word",
    [
        (lambda: matchers.IFMMatcher(-1.0), None, ValueError, "L"),
        (lambda: matchers.IFMMatcher(L, 1.0, 10.0, b=0), None, ValueError, "b"),
        (lambda: matchers.IFMMatcher(L, 1.0, 10.0, backend="gpu"), None, ValueError, "backend"),
        (lambda: matchers.IFMMatcher(L, 1.0, 0.1), None, ValueError, "d"),
        (lambda: matchers.IFMMatcher(L, -1.0, 10.0), None, ValueError, "sigma0"),
        (lambda: matchers.IFMMatcher(L, 1.0, 10.0, plan="best"), None, ValueError, "plan"),
        (lambda: matchers.IFMMatcher(L, 1.0, 10.0, points="grid"), None, ValueError, "sampler"),
        (lambda: matchers.EFMMatcher(L, plate_gamma=-1.0), None, ValueError, "plate_gamma"),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0, b=64),
            lambda m, a, c: m.sample_location_and_target(a, c),
            ValueError,
            "b=64",
        ),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0),
            lambda m, a, c: m.sample_location_and_target(a, c[:4]),
            ValueError,
            "x0 and x1",
        ),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0),
            lambda m, a, c: m.sample_location_and_target(a, c.double()),
            TypeError,
            "x1",
        ),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0),
            lambda m, a, c: m.loss(torch.zeros(3), torch.zeros(3, 3)),
            ValueError,
            "prediction",
        ),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0),
            lambda m, a, c: m.loss(torch.zeros(2, 3), torch.zeros(3, 3)),
            ValueError,
            "prediction",
        ),
        (
            lambda: matchers.IFMMatcher(L, 1.0, 10.0),
            lambda m, a, c: m.loss("x", torch.zeros(3, 3)),
            TypeError,
            "prediction",
        ),
    ],
)
def test_bad_inputs(make, call, exc, word):
    x0, x1 = _batches(32)
    with pytest.raises(exc, match=word):
        m = make()
        call(m, x0, x1)


def test_group_arguments_are_checked():
    """``group=`` / ``strategy=`` / ``global_plan=`` (the distributed runs are in
    test_distributed.py): bad values are rejected when the matcher is built."""
    with pytest.raises(ValueError, match="global_plan=True .* pass group="):
        matchers.IFMMatcher(L, 1.0, 10.0, global_plan=True)
    with pytest.raises(TypeError, match="global_plan must be a bool"):
        matchers.EFMMatcher(L, group="world", global_plan="yes")
    with pytest.raises(TypeError, match="group must be None"):
        matchers.IFMMatcher(L, 1.0, 10.0, group=0)
    with pytest.raises(ValueError, match="strategy must be one of .*'queries'"):
        matchers.EFMMatcher(L, group="world", strategy="tree")


def test_group_needs_a_process_group_at_call_time():
    x0, x1 = _batches(8)
    m = matchers.IFMMatcher(L, 1.0, 10.0, group="world")
    with pytest.raises(RuntimeError, match="init_process_group"):
        m.sample_location_and_target(x0, x1)


def test_no_group_is_the_local_batch():
    x0, x1 = _batches(16, seed=4)
    kw = dict(b=6, backend="reference")
    a = matchers.EFMMatcher(L, **kw).sample_location_and_target(
        x0, x1, generator=torch.Generator().manual_seed(2)
    )
    b = matchers.EFMMatcher(L, group=None, strategy="ring", **kw).sample_location_and_target(
        x0, x1, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(a[2].flat(), b[2].flat())
