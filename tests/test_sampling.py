"""ifm.sampling: Euler along z, both directions, plate landing, the f_z guard."""

import math
import pathlib

import numpy as np
import pytest
import torch

from ifm import sampling

L = 6.0


def _straight_field(A, C):
    """Exact field of straight lines from A_i (z = 0) to C_i (z = L): at height z a point on
    line i is (1 - z/L) A_i + (z/L) C_i; the lines are parallel translates when C - A is the same
    for all i, so the field is known everywhere: f = (L, C - A) (any positive scale)."""
    delta = (C - A)[0]

    def net(x, z):
        scale = 1.0 + z[:, None] ** 2  # a non-unit, z-dependent magnitude must not matter
        return delta.expand_as(x) * scale, L * scale[:, 0]

    return net


def _curved_field():
    """Lines x(z) = x0 * exp(z/L): f = (x / L, 1), curved, so Euler is first order; the end
    points are x0 * e (forward) and x_L / e (backward)."""

    def net(x, z):
        return x / L, torch.ones_like(z)

    return net


def _data(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return A, A + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(steps=7),
        dict(step_size=0.35),
        dict(steps=1),
        dict(grid=sampling.plate_refined_grid(L, 5, 0.2, 3)),
    ],
)
def test_straight_lines_both_directions(kwargs):
    A, C = _data()
    net = _straight_field(A, C)
    fwd = sampling.euler(net, A, L=L, direction="forward", **kwargs)
    assert torch.allclose(fwd.samples, C, atol=1e-12)
    assert torch.all(fwd.z == L)
    bwd = sampling.euler(net, C, L=L, direction="backward", **kwargs)
    assert torch.allclose(bwd.samples, A, atol=1e-12)
    assert torch.all(bwd.z == 0)
    assert fwd.guarded == 0 and bwd.guarded == 0


def test_step_counting_and_last_step_clipped():
    A, C = _data()
    net = _straight_field(A, C)
    r = sampling.euler(net, A, L=L, step_size=0.25)
    assert r.nfe == 24 and torch.all(r.calls_per_sample == 24)
    r = sampling.euler(net, A, L=L, step_size=0.7)  # 8 full steps + a clipped 0.4 step
    assert r.nfe == math.ceil(L / 0.7) == 9
    assert torch.allclose(r.samples, C, atol=1e-12) and torch.all(r.z == L)
    r = sampling.euler(net, A, L=L, steps=100, return_trajectory=True)
    assert r.nfe == 100 and r.trajectory.shape == (101, 7, 4)
    zs = r.trajectory[:, 0, 0]
    assert torch.allclose(zs, torch.linspace(0, L, 101, dtype=zs.dtype), atol=1e-9)


def test_each_sample_stops_on_its_plate():
    A, C = _data(5)
    net = _straight_field(A, C)
    z0 = torch.tensor([0.0, 1.0, 2.5, 5.9, 6.0], dtype=torch.float64)
    start = A + (z0 / L)[:, None] * (C - A)
    r = sampling.euler(net, start, L=L, step_size=1.0, z_start=z0)
    assert torch.allclose(r.samples, C, atol=1e-12) and torch.all(r.z == L)
    assert r.calls_per_sample.tolist() == [6, 5, 4, 1, 0]
    assert r.nfe == 6
    rb = sampling.euler(net, start, L=L, step_size=1.0, z_start=z0, direction="backward")
    assert torch.allclose(rb.samples, A, atol=1e-12) and torch.all(rb.z == 0)
    assert rb.calls_per_sample.tolist() == [0, 1, 3, 6, 6]


def test_euler_converges_on_curved_field():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    net = _curved_field()
    errs = []
    for steps in (10, 20, 40):
        r = sampling.euler(net, x0, L=L, steps=steps)
        errs.append(float((r.samples - math.e * x0).abs().max()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.02 * math.e * float(x0.abs().max())
    assert errs[0] / errs[1] == pytest.approx(2.0, rel=0.15)  # first order
    rb = sampling.euler(net, math.e * x0, L=L, steps=400, direction="backward")
    assert torch.allclose(rb.samples, x0, atol=5e-3)


def test_guard_small_and_reversed_fz():
    x = torch.zeros(4, 2, dtype=torch.float64)

    def net(x, z):  # rows: healthy, f_z = 0, reversed (f_z < 0), whole output zero
        f_x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=x.dtype)
        f_z = torch.tensor([1.0, 0.0, -2.0, 0.0], dtype=x.dtype)
        keep = torch.isin(torch.arange(4), net.active)
        return f_x[keep], f_z[keep]

    net.active = torch.arange(4)
    r = sampling.euler(net, x, L=L, steps=3, min_cos=0.1)
    assert r.guarded == 3 * 3 and r.guarded_per_sample.tolist() == [0, 3, 3, 3]  # zero counts
    assert r.reversed == 3
    assert torch.all(torch.isfinite(r.samples)) and torch.all(r.z == L)
    assert r.samples[0, 0].item() == pytest.approx(L)  # slope 1
    # f_z = 0: |f_z| clamped to min_cos * ||f|| = 0.1 -> slope 10
    assert r.samples[1, 0].item() == pytest.approx(10 * L)
    # reversed: sign forced, |f_z| = 2 kept -> slope 0.5 in the travel direction
    assert r.samples[2, 0].item() == pytest.approx(0.5 * L)
    assert r.samples[3].abs().max() == 0  # zero output: straight along z
    # orientation=-1 flips which sign is healthy
    r2 = sampling.euler(net, x, L=L, steps=3, min_cos=0.1, orientation=-1)
    assert r2.guarded_per_sample.tolist() == [3, 3, 0, 3]


def test_zfirst_net_adapter_and_images():
    model = torch.nn.Linear(5, 5).double()
    net = sampling.zfirst_net(model)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    f_x, f_z = net(x, torch.zeros(3, dtype=torch.float64))
    assert f_x.shape == x.shape and f_z.shape == (3,)

    def img_net(x, z):
        return torch.ones_like(x), torch.ones_like(z) * L

    r = sampling.euler(img_net, x, L=L, steps=4)
    assert r.samples.shape == x.shape and torch.allclose(r.samples, x + 1)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(L=-1.0, steps=3), ValueError, "L"),
        (dict(L=L), ValueError, "steps"),
        (dict(L=L, steps=3, step_size=0.1), ValueError, "steps"),
        (dict(L=L, steps=0), ValueError, "steps"),
        (dict(L=L, step_size=-0.5), ValueError, "step_size"),
        (dict(L=L, steps=3, direction="up"), ValueError, "direction"),
        (dict(L=L, steps=3, min_cos=0.0), ValueError, "min_cos"),
        (dict(L=L, steps=3, orientation=2), ValueError, "orientation"),
        (dict(L=L, grid=[0.0, 3.0, 2.0, 6.0]), ValueError, "grid"),
        (dict(L=L, grid=[0.0, 3.0]), ValueError, "grid"),
        (dict(L=L, steps=3, z_start=torch.tensor([7.0, 0.0])), ValueError, "z_start"),
    ],
)
def test_bad_inputs(kwargs, exc, word):
    x = torch.zeros(2, 2)

    def net(x, z):
        return torch.zeros_like(x), torch.ones_like(z)

    with pytest.raises(exc, match=word):
        sampling.euler(net, x, **kwargs)


def test_bad_net_output():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="f_x"):
        sampling.euler(lambda x, z: (torch.zeros(2, 3), torch.ones(2)), x, L=L, steps=2)
    with pytest.raises(TypeError, match="net"):
        sampling.euler("net", x, L=L, steps=2)


# --------------------------------------------------------------------------------------------
# the authors' solvers: outputs recorded from their code (tests/data/authors/README.md)
# --------------------------------------------------------------------------------------------
AUTHORS = pathlib.Path(__file__).parent / "data" / "authors"


def _rec(name):
    return {k: torch.tensor(v) for k, v in np.load(AUTHORS / f"{name}.npz").items()}


def _lin(x, z):
    A = torch.tensor([[0.1, -0.3], [0.2, 0.05]])
    return x @ A.T + 0.2, 1 + 0.1 * z


def test_fixed_step_euler_reproduces_their_learned_ode_solver():
    d = _rec("ifm_solvers")
    init = d["euler_init"]
    r = sampling.fixed_step_euler(
        _lin, init[:, 1:], L=float(d["L"]), step=float(d["euler_step"]), z_start=init[:, 0]
    )
    assert r.nfe == int(d["euler_steps"])
    assert torch.allclose(torch.cat([r.z[:, None], r.samples], 1), d["euler_mapped"], atol=1e-5)
    # backward (their image solver) retraces the same fixed steps of this affine-in-x field
    back = sampling.fixed_step_euler(
        lambda x, z: (-x, torch.ones_like(z)),
        r.samples,
        L=6.0,
        step=0.5,
        direction="backward",
        z_start=r.z,
    )
    assert bool((back.z <= 1e-3).all()) and back.nfe == 12


def test_rk45_log_z_reproduces_their_pfgm_sampler():
    d = _rec("ifm_solvers")

    def net(x, z):
        return 0.3 * x - 0.1, 2.0 + 0.05 * z

    r = sampling.rk45(
        net, d["rk45_y"], L=float(d["rk45_L"]), direction="backward", variable="log_z"
    )
    assert r.nfe == int(d["rk45_nfe"])  # their defaults: RK45, rtol = atol = 1e-4, eps = 1e-3
    assert torch.allclose(r.samples, d["rk45_out"], atol=1e-4)
    assert float(r.z[0]) == pytest.approx(1e-3)


def test_rk45_in_z_is_accurate_on_a_curved_field():
    A, _ = _data()
    r = sampling.rk45(_curved_field(), A, L=L, rtol=1e-8, atol=1e-8)
    assert torch.allclose(r.samples, A * math.e, atol=1e-6)
    back = sampling.rk45(
        _curved_field(), r.samples, L=L, direction="backward", rtol=1e-8, atol=1e-8
    )
    assert torch.allclose(back.samples, A, atol=1e-6)
    # default tolerances (theirs) are far coarser than Euler's error with few steps
    assert r.nfe < 200


def _dip(x, z):
    return torch.stack([-0.5 * torch.ones_like(z), 0.2 * x[:, 1]], 1), 6.6 - z + 0.3 * x[:, 0]


def test_dipole_efm_reproduces_their_behind_plate_solver():
    d = _rec("efm_dipole_solver")
    init = d["init"]
    r = sampling.dipole_efm(
        _dip,
        init[:, 1:],
        L=float(d["L"]),
        step=float(d["step"]),
        z_start=init[:, 0],
        behind_step=float(d["behind_step"]),
        behind_num_steps=int(d["behind_num_steps"]),
    )
    out = torch.cat([r.z[:, None], r.samples], 1)
    assert torch.allclose(out, d["mapped"], atol=1e-5)
    moved = (d["mapped"][:, 0] - (float(d["L"]) + 0.3)).abs() > 1e-4
    assert bool(moved.any()) and not bool(moved.all())  # the continuation did act, on some
    row = sampling.dipole_efm(
        _dip,
        init[:, 1:],
        L=6.0,
        step=0.5,
        z_start=init[:, 0],
        behind_step=0.05,
        behind_num_steps=40,
        behind_norm="row",
    )
    assert not torch.allclose(row.samples, r.samples)


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda x: sampling.rk45(_lin, x, L=6.0, variable="t"), ValueError, "variable"),
        (lambda x: sampling.rk45(_lin, x, L=6.0, variable="log_z", z_from=0.0), ValueError, "> 0"),
        (lambda x: sampling.fixed_step_euler(_lin, x, L=6.0, step=0.0), ValueError, "step"),
        (
            lambda x: sampling.dipole_efm(_dip, x, L=6.0, step=0.5, behind_norm="max"),
            ValueError,
            "behind_norm",
        ),
        (
            lambda x: sampling.dipole_efm(_dip, x, L=6.0, step=0.5, behind_num_steps=-1),
            ValueError,
            "behind_num_steps",
        ),
    ],
)
def test_authors_solvers_bad_inputs(call, exc, word):
    with pytest.raises(exc, match=word):
        call(torch.zeros(3, 2))
