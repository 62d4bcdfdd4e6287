"""`ifm demo --quick`: runs end to end and writes the figures and a parseable summary."""

import json
import math
import os
import subprocess
import sys

import pytest

from ifm import __main__ as cli
from ifm import demo


def test_quick_demo_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--seed", "3", "--no-progress"]) == 0
    for name in ("samples.png", "field_lines.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "samples.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert {(r["method"], r["L"]) for r in runs} == {
        (m, L) for m in ("IFM", "EFM", "IFM (exact field)") for L in (6.0, 40.0)
    }
    q = demo.QUICK
    for r in runs:
        assert math.isfinite(r["w2_generated_target"]) and r["w2_generated_target"] > 0
        assert r["w2_source_target"] > 0 and r["train_time_s"] > 0
        if r["method"] == "IFM (exact field)":  # Euler in the end regions, RK45 between them
            assert r["network_calls_per_sample"] > 2 * q.exact_end_steps
        else:
            assert r["network_calls_per_sample"] == q.euler_steps + 2 * q.end_steps
        assert r["ratio"] == pytest.approx(r["w2_generated_target"] / r["w2_source_target"])
    exact = [r for r in runs if r["method"] == "IFM (exact field)"]
    assert all(r["train_steps"] == 0 and r["batches"] == q.exact_batches for r in exact)
    assert all(r["pairs"] == q.exact_batches * q.B for r in exact)
    assert summary["seed"] == 3 and summary["quick"] is True and summary["w2_floor"] > 0
    md = (out / "summary.md").read_text()
    assert md.count("| IFM |") == 2 and md.count("| EFM |") == 2
    assert md.count("| IFM (exact field) |") == 2
    assert "ifm demo --quick" in md


def test_stretched_target_is_the_same_direction_field():
    import torch

    net = demo.FieldNet(40.0, math.pi / 20, hidden=8)
    g = torch.Generator().manual_seed(0)
    z = torch.rand(50, generator=g) * 40
    t_z, t_x = torch.rand(50, generator=g) + 0.5, torch.randn(50, 2, generator=g) * 0.05
    s_z, s_x = net.stretch(z, t_z, t_x)
    assert torch.allclose(s_z**2 + (s_x**2).sum(1), t_z**2 + (t_x**2).sum(1))
    zero = net.stretch(z[:2], torch.tensor([0.0, 1e-25]), torch.tensor([[0.0, 0.0], [1e-25, 0.0]]))
    assert float(zero[0].abs().max()) <= 1e-25 and float(zero[1].abs().max()) <= 1e-25
    # back in z coordinates (x part / s(z)), the slope dx/dz is the target's
    s = net.scale(z)
    assert torch.allclose((s_x / s) / s_z[:, None], t_x / t_z[:, None], rtol=1e-4)
    assert float(net.scale(torch.tensor([0.0]))) == 1.0
    assert float(net.scale(torch.tensor([20.0]))) == pytest.approx(40.0, rel=1e-6)


def test_swiss_roll_and_seed_repeatable():
    import torch

    a = demo.swiss_roll(500, torch.Generator().manual_seed(0))
    b = demo.swiss_roll(500, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (500, 2)
    r = a.norm(dim=1) * demo.SWISS_SCALE
    assert r.min() > 1.5 * math.pi - 2.5 and r.max() < 4.5 * math.pi + 2.5
    assert demo.w2(a, a) == pytest.approx(0.0, abs=1e-6)
    assert demo.w2(a, a + 1.0) == pytest.approx(math.sqrt(2.0), rel=1e-6)


def test_python_m_ifm_help():
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        os.path.dirname(os.path.dirname(demo.__file__)) + os.pathsep + env.get("PYTHONPATH", "")
    )
    res = subprocess.run(
        [sys.executable, "-m", "ifm", "demo", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0 and "--quick" in res.stdout and "--out" in res.stdout


def test_plate_weighted_queries_put_their_share_in_the_end_regions():
    import torch

    g = torch.Generator().manual_seed(0)
    a, c = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + 3.0
    L, d = 40.0, math.pi / (2 * demo.K)
    q = demo.plate_weighted(a, c, L=L, b=400, generator=g, end_fraction=0.5, scale=0.0)
    z = q[:, 0]
    in_end = (z <= d) | (z >= L - d)
    assert int(in_end[:200].sum()) == 200 and int((z[:200] <= d).sum()) == 100
    # the rest is uniform over the gap: about 2d/L of it in the end regions
    assert int(in_end[200:].sum()) < 20
    # without noise the x part is the pair's interpolation at the query's z
    t = (z / L)[:, None]
    assert torch.allclose(q[:, 1:], (1 - t) * a + t * c, atol=1e-5)
    with pytest.raises(ValueError, match="end_fraction"):
        demo.plate_weighted(a, c, L=L, b=10, end_fraction=1.5)
