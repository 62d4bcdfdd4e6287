"""The scripts in examples/ run end to end (tiny sizes)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_efm_exact_field_example_runs():
    pytest.importorskip("ot")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "efm_exact_field.py"), "--L", "6", "40"]
    cmd += ["--charges", "64", "--samples", "40", "--behind-steps", "3", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("L=")]
    assert [line.split()[0] for line in lines] == ["L=6", "L=40"], out
    for line in lines:
        w_gen, w_src = map(float, re.search(r"generated (\S+), source (\S+)", line).groups())
        assert 0 < w_gen < 100 and w_src > 0, line
        assert "0 non-finite" in line and "floor" in line, line
        # floor(L / 0.5) steps in the gap, one evaluation to pick the samples that go behind,
        # then at most 3 behind the plate
        nfe = int(re.search(r"(\d+) field evaluations", line).group(1))
        L = float(line.split()[0][2:])
        assert int(L / 0.5) + 1 <= nfe <= int(L / 0.5) + 4, line


def test_efm_exact_field_example_rejects_bad_shrink():
    cmd = [sys.executable, os.path.join(ROOT, "examples", "efm_exact_field.py"), "--shrink", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--shrink must be > 0" in res.stderr
