"""ifm.compat: the authors' config layouts and call forms, against outputs recorded from their
code (tests/data/authors/README.md) and the golden files."""

import json
import math
import pathlib
import types

import numpy as np
import pytest
import torch

import ifm
from ifm import compat

DATA = pathlib.Path(__file__).parent / "data"
NS = types.SimpleNamespace


def _image_config(L=6.0, SCALE=1.0, K=10.0, DIM=3, plan_type="Independent", name="toy", **training):
    t = NS(field_type="Shifted", plan_type=plan_type, stability=True, gamma=1e-7)
    for k, v in training.items():
        setattr(t, k, v)
    return NS(L=L, SCALE=SCALE, K=K, D=math.pi / (2 * K), DIM=DIM, training=t, data=NS(name=name))


def _toy_config(L=6.0, plan_type="Independent", name="3d_mixture"):
    """Their toy notebook: SCALE, K, D, plan_type, field_type, name under config.ifm."""
    return NS(
        L=L,
        DIM=3,
        ifm=NS(
            name=name,
            field_type="Shifted",
            field_form="exponential",
            plan_type=plan_type,
            SCALE=1.0,
            K=10.0,
            D=math.pi / 20,
        ),
        efm=NS(training=NS(stability=True, gamma=1e-7), dist_behind=10.0),
    )


def _rec(name):
    return {k: torch.tensor(v) for k, v in np.load(DATA / "authors" / f"{name}.npz").items()}


def _golden(name):
    d = np.load(DATA / "golden" / f"{name}.npz")
    return {k: (json.loads(str(d[k])) if k == "meta" else torch.tensor(d[k])) for k in d.files}


def _rel(out, ref):
    return float(((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-6)).max())


# --------------------------------------------------------------------------------------------
# IFM
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plan", ["Optimal", "Independent"])
def test_ifm_plan_solved_inside_groundtruth_as_theirs(plan):
    d = _rec("ifm_groundtruth_plans")
    ref = d["field_" + plan.lower()]
    for cfg in (_image_config(plan_type=plan), _toy_config(plan_type=plan)):
        out = compat.IFM(cfg).GroundTruth(d["points"], d["quarks"], d["antiquarks"])
        assert _rel(out, ref) < 1e-5, (plan, cfg)
        # their four-argument form func(points, x, y, config) (ToyTrain, BaseODESolver)
        func = compat.ground_truth(cfg)
        assert torch.equal(func(d["points"], d["quarks"], d["antiquarks"], cfg), out)
        assert torch.equal(compat.IFM(cfg)(d["points"], d["quarks"], d["antiquarks"], cfg), out)
    other = d["field_independent" if plan == "Optimal" else "field_optimal"]
    assert _rel(out, other) > 0.1  # the plan changes the field: a skipped plan would show


def test_ifm_2d_discrete_sums_all_pairs_in_chunks():
    d = _rec("ifm_groundtruth_2d_discrete")
    assert d["quarks"].shape[0] != d["antiquarks"].shape[0]
    cfg = _image_config(name="2d_discrete")
    del cfg.training.plan_type  # not read for 2d_discrete, as in theirs
    for chunk in (1, 7, compat.PAIR_CHUNK):
        out = compat.IFM(cfg, pair_chunk=chunk).GroundTruth(
            d["points"], d["quarks"], d["antiquarks"]
        )
        assert float((out - d["field"]).abs().max()) < 1e-5 * float(d["field"].abs().max())


def test_ifm_golden_raw_field_and_pairing():
    d = _golden("string_toy")
    m = d["meta"]
    cfg = _image_config(L=m["L"], SCALE=m["sigma0"], K=m["K"], DIM=m["D"] + 1)
    out = compat.IFM(cfg, backend="reference").GroundTruth(
        d["points"], d["quarks"], d["antiquarks"]
    )
    ref = ifm.fields.string_field(
        d["points"],
        d["quarks"],
        d["antiquarks"],
        L=m["L"],
        sigma0=m["sigma0"],
        K=m["K"],
        backend="reference",
    )
    assert torch.equal(out, ref)
    d = _golden("string_ot_plan")
    m = d["meta"]
    cfg = _image_config(L=m["L"], SCALE=m["sigma0"], K=m["K"], DIM=m["D"] + 1, plan_type="Optimal")
    gt = compat.IFM(cfg, backend="reference")
    assert torch.equal(gt.pair(d["quarks"], d["antiquarks"]), d["antiquarks"][d["pairing"]])
    # unpaired input: GroundTruth pairs it itself
    assert _rel(gt.GroundTruth(d["points"], d["quarks"], d["antiquarks"]), d["field"]) < 1e-3


@pytest.mark.parametrize(
    "edit, word",
    [
        (lambda c: setattr(c, "D", 0.2), "pi / \\(2 K\\)"),
        (lambda c: setattr(c.training, "field_type", "Unshifted"), "Shifted"),
        (lambda c: delattr(c.training, "field_type"), "field_type"),
        (lambda c: delattr(c.training, "plan_type"), "plan_type"),
        (lambda c: setattr(c.training, "plan_type", "Greedy"), "plan_type"),
        (lambda c: delattr(c, "training"), "training"),
        (lambda c: delattr(c, "SCALE"), "SCALE"),
        (lambda c: delattr(c.data, "name"), "name"),
        (lambda c: delattr(c, "DIM"), "DIM"),
        (lambda c: setattr(c, "DIM", 3.0), "DIM"),
    ],
)
def test_ifm_config_values_are_honoured_or_rejected(edit, word):
    cfg = _image_config()
    edit(cfg)
    with pytest.raises(ValueError, match=word):
        compat.IFM(cfg)


def test_ifm_toy_layout_errors_name_the_section():
    cfg = _toy_config()
    del cfg.ifm.SCALE
    with pytest.raises(ValueError, match="config.ifm has no attribute 'SCALE'"):
        compat.IFM(cfg)
    cfg = _toy_config()
    cfg.ifm.D = 1.0
    with pytest.raises(ValueError, match="config.ifm.D"):
        compat.ground_truth(cfg)


def test_ifm_tensor_checks():
    gt = compat.IFM(_image_config())
    with pytest.raises(ValueError, match="DIM"):
        gt.GroundTruth(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="fourth argument"):
        gt(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), _image_config())
    with pytest.raises(TypeError, match="config"):
        compat.IFM(None)
    with pytest.raises(ValueError, match="kind"):
        compat.ground_truth(_image_config(), "pfgm")


# --------------------------------------------------------------------------------------------
# EFM
# --------------------------------------------------------------------------------------------
def _efm_config(DIM=3, stability=True, gamma=1e-7):
    return NS(L=6.0, DIM=DIM, training=NS(stability=stability, gamma=gamma))


@pytest.mark.parametrize("stability", [True, False])
def test_efm_keyword_call_and_stability_at_toy_d(stability):
    d = _rec("efm_groundtruth_toy")
    ref = d[f"field_stability_{stability}"]
    toy = _toy_config()
    toy.efm.training.stability = stability
    for cfg in (_efm_config(stability=stability), toy):
        efm = compat.EFM(cfg)
        out = efm.GroundTruth(
            perturbed_samples_vec=d["points"], p_samples=d["positive"], q_samples=d["negative"]
        )
        assert _rel(out, ref) < 1e-5
        assert torch.equal(efm(d["points"], d["positive"], d["negative"]), out)
        assert torch.equal(
            compat.ground_truth(cfg, "efm")(d["points"], d["positive"], d["negative"], cfg), out
        )


def test_efm_unstabilised_underflow_is_their_stabilised_result():
    d = _rec("efm_groundtruth_underflow")
    theirs_false = d["field_stability_False"]
    assert bool(torch.isnan(theirs_false).any())  # their stability=False underflows to NaN here
    for st in (True, False):
        out = compat.EFM(_efm_config(DIM=d["points"].shape[1], stability=st)).GroundTruth(
            d["points"], d["positive"], d["negative"]
        )
        assert bool(torch.isfinite(out).all())
        assert _rel(out, d["field_stability_True"]) < 1e-4


def test_efm_golden_and_plate_norm():
    for name in ("coulomb_efm_toy", "coulomb_ifmrepo_toy"):
        d = _golden(name)
        m = d["meta"]
        gamma = m.get("plate_gamma")
        cfg = NS(
            L=m.get("L", 6.0),
            DIM=m["D"] + 1,
            training=NS(stability=True, gamma=gamma if gamma is not None else 5.0),
        )
        out = compat.EFM(cfg, plate_norm=gamma is not None, backend="reference").GroundTruth(
            d["points"], d["positive"], d["negative"]
        )
        assert _rel(out, d["field"]) < 1e-3


@pytest.mark.parametrize(
    "edit, word",
    [
        (lambda c: delattr(c.training, "gamma"), "gamma"),
        (lambda c: setattr(c.training, "gamma", -1.0), "gamma"),
        (lambda c: delattr(c.training, "stability"), "stability"),
        (lambda c: setattr(c.training, "stability", "yes"), "stability"),
        (lambda c: setattr(c, "dist_behind", -2.0), "dist_behind"),
        (lambda c: delattr(c, "DIM"), "DIM"),
    ],
)
def test_efm_config_values_are_honoured_or_rejected(edit, word):
    cfg = _efm_config()
    edit(cfg)
    with pytest.raises(ValueError, match=word):
        compat.EFM(cfg)


def test_efm_gamma_and_dist_behind_are_read():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.rand(4, 1, generator=g) * 6, torch.randn(4, 2, generator=g)], 1)
    pos = torch.cat([torch.zeros(8, 1), torch.randn(8, 2, generator=g)], 1)
    neg = torch.cat([torch.full((8, 1), 6.0), torch.randn(8, 2, generator=g)], 1)
    a = compat.EFM(_efm_config(gamma=1e-7))(pts, pos, neg)
    b = compat.EFM(_efm_config(gamma=5.0))(pts, pos, neg)
    ref = ifm.fields.coulomb_field(pts, pos, neg, plate_gamma=5.0)
    assert torch.equal(b, ref) and not torch.allclose(a, b)
    assert compat.EFM(_toy_config()).dist_behind == 10.0
    with pytest.raises(ValueError, match="DIM"):
        compat.EFM(_efm_config()).GroundTruth(torch.zeros(2, 4), pos, neg)
