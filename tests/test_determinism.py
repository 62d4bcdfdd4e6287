"""Bitwise determinism on every backend available here (docs/INPUTS.md, "Determinism"):
repeated calls, 1 vs 2 threads, and a fresh process all produce the same bytes."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import ifm

from cases import coulomb_case, string_case

TESTS = pathlib.Path(__file__).resolve().parent


def _shape(bname):
    """Large enough to split over threads on the compiled backends; small for the interpreter."""
    return {"triton": (9, 7, 40), "reference": (17, 23, 100)}.get(bname, (37, 53, 300))


def outputs(bname: str, device: str) -> dict:
    """Every field mode on fixed float32 inputs (both plates, near-plate and coincident rows)."""
    b, B, D = _shape(bname)
    points, quarks, antiquarks, params = string_case(b, B, D, "cifar", seed=7)
    f32 = [t.to(device, torch.float32) for t in (points, quarks, antiquarks)]
    out = {}
    for stable in (False, True):
        for normalize in (False, True):
            out[f"string-stable{int(stable)}-norm{int(normalize)}"] = ifm.fields.string_field(
                *f32, **params, stable=stable, normalize=normalize, backend=bname)
    cp, pos, neg = (t.to(device, torch.float32) for t in coulomb_case(b, B, B + 3, D, 20.0, seed=7))
    out["coulomb-efm"] = ifm.fields.coulomb_field(cp, pos, neg, backend=bname)
    out["coulomb-raw"] = ifm.fields.coulomb_field(cp, pos, neg, plate_gamma=None, backend=bname)
    out["coulomb-pfgm"] = ifm.fields.coulomb_field(cp, pos, normalize="pfgm", backend=bname)
    return out


def digests(out: dict) -> dict:
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for k, v in out.items()}


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_repeated_calls_are_bitwise_identical(backend):
    first = digests(outputs(*backend))
    for _ in range(2):
        assert digests(outputs(*backend)) == first


def test_thread_count_does_not_change_bits(backend, restore_threads):
    torch.set_num_threads(1)
    one = digests(outputs(*backend))
    torch.set_num_threads(2)
    two = digests(outputs(*backend))
    assert one == two


def test_fresh_process_gives_the_same_bytes(backend):
    bname, device = backend
    code = (f"import sys, json; sys.path.insert(0, {str(TESTS)!r}); import conftest; "
            "import test_determinism as t; "
            f"print(json.dumps(t.digests(t.outputs({bname!r}, {device!r}))))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)   # same ifm as this process
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child == digests(outputs(bname, device))
