"""ifm.compat: the authors' config object and GroundTruth signature."""
import pathlib
import types

import numpy as np
import pytest
import torch

import ifm
from ifm import compat

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden"


def _config(meta=None, **training):
    meta = meta or {}
    t = types.SimpleNamespace(plan_type="Independent", stability=True, gamma=1e-7)
    for k, v in training.items():
        setattr(t, k, v)
    return types.SimpleNamespace(L=meta.get("L", 6.0), SCALE=meta.get("sigma0", 1.0),
                                 K=meta.get("K", 10.0), DIM=meta.get("D", 2) + 1, training=t)


def _load(name):
    d = np.load(GOLDEN / f"{name}.npz")
    import json
    return {k: (json.loads(str(d[k])) if k == "meta" else torch.tensor(d[k])) for k in d.files}


def test_ifm_groundtruth_reproduces_golden_raw_field():
    d = _load("string_toy")
    m = d["meta"]
    gt = compat.IFM(_config(m), backend="reference")
    out = gt.GroundTruth(d["points"], d["quarks"], d["antiquarks"])
    ref = ifm.fields.string_field(d["points"], d["quarks"], d["antiquarks"], L=m["L"],
                                  sigma0=m["sigma0"], K=m["K"], normalize=False,
                                  backend="reference")
    assert torch.equal(out, ref)
    err = (out - d["field"]).norm(dim=1) / d["field"].norm(dim=1).clamp_min(1e-30)
    assert float(err.max()) < 1e-3
    # the one-line form
    assert torch.equal(compat.ground_truth(_config(m), backend="reference")(
        d["points"], d["quarks"], d["antiquarks"]), out)


def test_ifm_optimal_plan_reproduces_golden_pairing_and_field():
    d = _load("string_ot_plan")
    m = d["meta"]
    gt = compat.IFM(_config(m, plan_type="Optimal"), backend="reference")
    paired = gt.pair(d["quarks"], d["antiquarks"])
    assert torch.equal(paired, d["antiquarks"][d["pairing"]])
    out = gt(d["points"], d["quarks"], paired)
    err = (out - d["field"]).norm(dim=1) / d["field"].norm(dim=1).clamp_min(1e-30)
    assert float(err.max()) < 1e-3
    assert gt.pair.__self__ is gt
    assert torch.equal(compat.IFM(_config(m)).pair(d["quarks"], d["antiquarks"]), d["antiquarks"])


@pytest.mark.parametrize("name", ["coulomb_efm_toy", "coulomb_ifmrepo_toy"])
def test_efm_groundtruth_reproduces_golden(name):
    d = _load(name)
    m = d["meta"]
    gamma = m.get("plate_gamma")
    cfg = _config({"L": m.get("L", 6.0), "D": m["D"]}, stability=m.get("stability", True),
                  gamma=gamma if gamma is not None else 5.0)
    gt = compat.EFM(cfg, plate_norm=gamma is not None, backend="reference")
    out = gt.GroundTruth(d["points"], d["positive"], d["negative"])
    err = (out - d["field"]).norm(dim=1) / d["field"].norm(dim=1).clamp_min(1e-30)
    assert float(err.max()) < 1e-3
    assert torch.equal(compat.ground_truth(cfg, "efm", plate_norm=gamma is not None,
                                           backend="reference")(
        d["points"], d["positive"], d["negative"]), out)


def test_efm_gamma_is_read_from_config():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.rand(4, 1, generator=g) * 6, torch.randn(4, 2, generator=g)], 1)
    pos = torch.cat([torch.zeros(8, 1), torch.randn(8, 2, generator=g)], 1)
    neg = torch.cat([torch.full((8, 1), 6.0), torch.randn(8, 2, generator=g)], 1)
    a = compat.EFM(_config(gamma=1e-7), backend="reference")(pts, pos, neg)
    b = compat.EFM(_config(gamma=5.0), backend="reference")(pts, pos, neg)
    ref = ifm.fields.coulomb_field(pts, pos, neg, plate_gamma=5.0, backend="reference")
    assert torch.equal(b, ref) and not torch.allclose(a, b)


def test_bad_config():
    cfg = _config()
    del cfg.SCALE
    with pytest.raises(ValueError, match="SCALE"):
        compat.IFM(cfg)
    with pytest.raises(TypeError, match="config"):
        compat.IFM(None)
    cfg = _config()
    del cfg.training.gamma
    with pytest.raises(ValueError, match="gamma"):
        compat.EFM(cfg)
    with pytest.raises(ValueError, match="plan_type"):
        compat.IFM(_config(plan_type="Greedy")).pair(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="DIM"):
        compat.IFM(_config()).GroundTruth(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="kind"):
        compat.ground_truth(_config(), "pfgm")
