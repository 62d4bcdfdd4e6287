"""ifm.plans: independent, exact EMD and Sinkhorn pairings."""

import itertools
import pathlib
import warnings

import numpy as np
import pytest
import torch

from ifm import plans

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden" / "string_ot_plan.npz"


def _batches(B, D=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, D, generator=g, dtype=dtype),
        2 * torch.randn(B, D, generator=g, dtype=dtype) + 1,
    )


def _total_cost(x0, x1, pairing, cost="euclidean"):
    M = plans.cost_matrix(x0, x1, cost=cost)
    return float(M[torch.arange(len(pairing)), pairing].sum())


def _is_permutation(p, B):
    return p.dtype == torch.long and sorted(p.tolist()) == list(range(B))


@pytest.mark.parametrize("cost", ["euclidean", "sqeuclidean"])
def test_emd_is_optimal_by_brute_force(cost):
    x0, x1 = _batches(6, seed=3)
    p = plans.ot_pairing(x0, x1, cost=cost)
    assert _is_permutation(p, 6)
    best = min(
        _total_cost(x0, x1, torch.tensor(perm), cost) for perm in itertools.permutations(range(6))
    )
    assert _total_cost(x0, x1, p, cost) == pytest.approx(best, rel=1e-12)


def test_costs_differ_and_squared_differs_from_unsquared():
    # a case where the two costs pick different permutations: a line of points
    x0 = torch.tensor([[0.0], [1.0]])
    x1 = torch.tensor([[1.0], [2.0]])
    # |.|: both pairings cost 2 -> either; |.|^2: identity costs 2, swap costs 4+0=4
    assert plans.ot_pairing(x0, x1, cost="sqeuclidean").tolist() == [0, 1]
    x0 = torch.tensor([[0.0], [0.9]])
    x1 = torch.tensor([[1.0], [3.0]])
    M = plans.cost_matrix(x0, x1, cost="euclidean")
    assert M[0, 1] == pytest.approx(3.0) and M[1, 0] == pytest.approx(0.1)


def test_golden_pairing_reproduced_by_augmented_cost():
    """The authors' kept solve: unsquared Euclidean cost on the z-augmented vectors."""
    d = np.load(GOLDEN)
    q, a = torch.tensor(d["quarks"]), torch.tensor(d["antiquarks"])
    golden = torch.tensor(d["pairing"])
    assert torch.equal(plans.ot_pairing(q, a, cost="augmented", z_first=True), golden)
    # same with plain data + explicit L
    assert torch.equal(plans.ot_pairing(q[:, 1:], a[:, 1:], cost="augmented", L=20.0), golden)
    # sqrt(L^2 + r^2) ~ L + r^2/2L: for L = 20 the squared cost on x gives the same plan ...
    assert torch.equal(plans.ot_pairing(q, a, cost="sqeuclidean", z_first=True), golden)
    # ... the unsquared cost on x (FIELDS.md's intended plan) is a different, cheaper plan for it
    p = plans.ot_pairing(q, a, cost="euclidean", z_first=True)
    assert _is_permutation(p, len(golden))
    assert _total_cost(q[:, 1:], a[:, 1:], p) <= _total_cost(q[:, 1:], a[:, 1:], golden) + 1e-9


def test_augmented_is_not_a_constant_shift():
    x0, x1 = _batches(5, seed=1)
    M = plans.cost_matrix(x0, x1, cost="euclidean")
    Ma = plans.cost_matrix(x0, x1, cost="augmented", L=3.0)
    assert torch.allclose(Ma, torch.sqrt(M**2 + 9.0))
    assert (Ma - M).std() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_device_dtype_and_plan(dtype):
    x0, x1 = _batches(16, dtype=dtype)
    p, P = plans.ot_pairing(x0, x1, return_plan=True)
    assert p.device == x0.device and P.dtype == dtype and P.shape == (16, 16)
    assert torch.allclose(P.sum(1), torch.full((16,), 1 / 16, dtype=dtype))
    assert torch.equal(P.argmax(1), p)
    p2, P2 = plans.sinkhorn_pairing(x0, x1, reg=0.01, return_plan=True)
    assert P2.dtype == dtype and _is_permutation(p2, 16)
    pi, Pi = plans.independent_pairing(x0, x1, return_plan=True)
    assert torch.equal(pi, torch.arange(16)) and Pi.dtype == dtype


def test_images_are_flattened():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 3, 3, generator=g)
    x1 = torch.randn(8, 1, 3, 3, generator=g)
    assert torch.equal(plans.ot_pairing(x0, x1), plans.ot_pairing(x0.flatten(1), x1.flatten(1)))


def test_sinkhorn_small_reg_matches_emd():
    x0, x1 = _batches(32, seed=5)
    p_emd = plans.ot_pairing(x0, x1, cost="sqeuclidean")
    with warnings.catch_warnings():
        warnings.simplefilter("error", plans.OTConvergenceWarning)
        p_sk = plans.sinkhorn_pairing(x0, x1, cost="sqeuclidean", reg=5e-3)
    assert _total_cost(x0, x1, p_sk, "sqeuclidean") == pytest.approx(
        _total_cost(x0, x1, p_emd, "sqeuclidean"), rel=1e-2
    )
    # large reg: a permutation still, but no better than the exact plan
    p_blur = plans.sinkhorn_pairing(x0, x1, cost="sqeuclidean", reg=10.0)
    assert _is_permutation(p_blur, 32)
    assert _total_cost(x0, x1, p_blur, "sqeuclidean") >= _total_cost(x0, x1, p_emd, "sqeuclidean")


def test_emd_converges_at_2048_and_beats_independent():
    x0, x1 = _batches(2048, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", plans.OTConvergenceWarning)
        p = plans.ot_pairing(x0, x1)
    assert _is_permutation(p, 2048)
    assert _total_cost(x0, x1, p) < 0.8 * _total_cost(x0, x1, torch.arange(2048))


def test_iteration_limit_warns():
    x0, x1 = _batches(200, seed=4)
    with pytest.warns(plans.OTConvergenceWarning, match="num_itermax"):
        p = plans.ot_pairing(x0, x1, num_itermax=50)
    assert _is_permutation(p, 200)


def test_get_plan_names_and_kwargs():
    x0, x1 = _batches(10)
    assert torch.equal(plans.get_plan("Optimal")(x0, x1), plans.ot_pairing(x0, x1))
    assert torch.equal(plans.get_plan("independent")(x0, x1), torch.arange(10))
    fn = plans.get_plan("emd", cost="sqeuclidean")
    assert torch.equal(fn(x0, x1), plans.ot_pairing(x0, x1, cost="sqeuclidean"))
    a, b = plans.apply_plan(x0, x1, "ot")
    assert torch.equal(b, x1[plans.ot_pairing(x0, x1)])


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda a, b: plans.ot_pairing(a.numpy(), b), TypeError, "x0"),
        (lambda a, b: plans.ot_pairing(a, b[:5]), ValueError, "batch size"),
        (lambda a, b: plans.ot_pairing(a, b[:, :1]), ValueError, "shape"),
        (lambda a, b: plans.ot_pairing(a, b, cost="cosine"), ValueError, "cost"),
        (lambda a, b: plans.ot_pairing(a, b, cost="augmented"), ValueError, "L"),
        (lambda a, b: plans.ot_pairing(a, b, num_itermax=0), ValueError, "num_itermax"),
        (lambda a, b: plans.sinkhorn_pairing(a, b, reg=0.0), ValueError, "reg"),
        (lambda a, b: plans.ot_pairing(a, b.long()), TypeError, "x1"),
        (lambda a, b: plans.get_plan("magic"), ValueError, "plan"),
        (lambda a, b: plans.ot_pairing(a, b * float("nan")), ValueError, "finite"),
    ],
)
def test_bad_inputs(call, exc, word):
    x0, x1 = _batches(8)
    with pytest.raises(exc, match=word):
        call(x0, x1)
