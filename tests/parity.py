"""The parity rule every backend is held to (tests/data/golden/README.md).

Per row: relative error against the float64 oracle <= max(2 x the float32 stand-in's relative
error on that row, 1e-4), where the stand-in is the authors' own output (golden files) or a
float32 evaluation of the reference (randomised cases). Rows whose stand-in is exactly zero must
come out with a norm below 1e-6. float64 outputs are held to 1e-9 relative.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

GOLDEN_DIR = pathlib.Path(__file__).parent / "data" / "golden"
FLOOR = 1e-4
F64_TOL = 1e-9
ZERO_NORM = 1e-6


def golden_names():
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.npz"))


def load_golden(name: str):
    z = np.load(GOLDEN_DIR / f"{name}.npz")
    meta = json.loads(str(z["meta"]))
    data = {k: torch.from_numpy(z[k]) for k in z.files if k != "meta"}
    return meta, data


def row_errors(out: torch.Tensor, oracle: torch.Tensor) -> torch.Tensor:
    out, oracle = out.double().cpu(), oracle.double().cpu()
    return (out - oracle).norm(dim=1) / oracle.norm(dim=1).clamp_min(1e-300)


def assert_parity(out: torch.Tensor, oracle: torch.Tensor, standin: torch.Tensor, what: str = ""):
    """``out`` (any dtype) vs the float64 ``oracle``; ``standin`` is the float32 comparison."""
    assert out.shape == oracle.shape, f"{what}: shape {tuple(out.shape)} != {tuple(oracle.shape)}"
    out64 = out.double().cpu()
    assert torch.isfinite(out64).all(), (
        f"{what}: non-finite values in rows "
        f"{(~torch.isfinite(out64)).any(1).nonzero().flatten().tolist()}"
    )
    standin = standin.double().cpu()
    zero = standin.norm(dim=1) == 0
    if zero.any():
        norms = out64[zero].norm(dim=1)
        assert (norms < ZERO_NORM).all(), (
            f"{what}: rows {zero.nonzero().flatten().tolist()} must be ~0, norms {norms.tolist()}"
        )
    keep = ~zero
    err = row_errors(out64, oracle)[keep]
    if out.dtype == torch.float64:
        allowed = torch.full_like(err, F64_TOL)
    else:
        allowed = torch.clamp(2.0 * row_errors(standin, oracle)[keep], min=FLOOR)
    bad = err > allowed
    assert not bad.any(), (
        f"{what}: rows {keep.nonzero().flatten()[bad].tolist()} err {err[bad].tolist()} "
        f"> allowed {allowed[bad].tolist()}"
    )
