"""docs/INPUTS.md is executable: every row of its two tables is parsed and checked here, on every
backend available, so the documented behaviour cannot drift from the code."""

import math
import pathlib
import re

import numpy as np
import pytest
import torch
from test_inputs import SIGMA0, K, L, good_string

import ifm

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "INPUTS.md"


def _table(heading: str):
    """Rows of the first Markdown table after ``## heading`` as dicts keyed by column name."""
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]  # noqa: E731
    header = split(lines[0])
    return [dict(zip(header, split(ln), strict=False)) for ln in lines[2:]]


def _code(cell: str) -> str:
    return cell.strip().strip("`")


def _words(cell: str):
    return re.findall(r"`([^`]*)`", cell)


REJECTED = _table("Rejected inputs")
ACCEPTED = _table("Accepted inputs (not errors)")


def test_tables_are_well_formed():
    assert len(REJECTED) >= 60 and len(ACCEPTED) >= 15
    ids = [r["Id"] for r in REJECTED + ACCEPTED]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    for row in REJECTED:
        assert row["Entry"] in ("string", "coulomb", "both", "pinned"), row
        assert row["Raises"] in ("TypeError", "ValueError"), row
        assert row["Reads values"] in ("yes", ""), row
        assert _words(row["Message contains"]), row
    for row in ACCEPTED:
        assert row["Entry"] in ("string", "coulomb", "both"), row


def _put(t, i, j, v):
    t = t.clone()
    t[i, j] = v
    return t


def _namespace(device):
    P, Q, A = (t.to(device) for t in good_string())
    other = (
        "cpu"
        if torch.device(device).type != "cpu"
        else ("cuda" if torch.cuda.is_available() else "meta")
    )
    return dict(
        P=P,
        Q=Q,
        A=A,
        OTHER=other,
        put=_put,
        nan=math.nan,
        inf=math.inf,
        math=math,
        np=np,
        torch=torch,
    )


def _kwargs(example: str, ns) -> dict:
    return eval(f"dict({_code(example)})", dict(ns))  # noqa: S307 (the doc's own examples)


def _call(entry: str, kwargs: dict, ns, bname: str):
    kw = dict(kwargs)
    if entry == "pinned":
        fn, tensors = ifm.fields.string_field_reference, ("points", "quarks", "antiquarks")
        defaults = dict(L=L, sigma0=SIGMA0, K=K)
    else:
        kw.setdefault("backend", bname)
        if entry == "string":
            fn, tensors = ifm.fields.string_field, ("points", "quarks", "antiquarks")
            defaults = dict(L=L, sigma0=SIGMA0, K=K)
        else:
            fn, tensors = ifm.fields.coulomb_field, ("points", "positive", "negative")
            defaults = {}
            for plate, alias in (("quarks", "positive"), ("antiquarks", "negative")):
                if plate in kw:  # `both` rows name the string's plates
                    kw[alias] = kw.pop(plate)
    args = [
        kw.pop(name, default)
        for name, default in zip(tensors, (ns["P"], ns["Q"], ns["A"]), strict=False)
    ]
    return fn(*args, **{**defaults, **kw})


def _entries(row):
    return ["string", "coulomb"] if row["Entry"] == "both" else [row["Entry"]]


def _cases(rows):
    return [
        pytest.param(row, entry, id=f"{row['Id']}-{entry}")
        for row in rows
        for entry in _entries(row)
    ]


@pytest.mark.filterwarnings("ignore:Sparse CSR")
@pytest.mark.parametrize("row, entry", _cases(REJECTED))
def test_rejected_row(backend, row, entry):
    bname, device = backend
    ns = _namespace(device)
    exc = {"TypeError": TypeError, "ValueError": ValueError}[row["Raises"]]
    kwargs = _kwargs(row["Example"], ns)
    if row["Reads values"] == "yes" and torch.device(device).type != "cpu":
        kwargs.setdefault("check_finite", True)  # off by default there (no device sync)
    with pytest.raises(exc) as info:
        _call(entry, kwargs, ns, bname)
    assert type(info.value) is exc, f"{row['Id']}: {type(info.value).__name__}: {info.value}"
    for word in _words(row["Message contains"]):
        assert word in str(info.value), f"{row['Id']}: {word!r} not in {str(info.value)!r}"


VALUE_ROWS = [row for row in REJECTED if row["Reads values"] == "yes"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the Triton interpreter
@pytest.mark.parametrize("row, entry", _cases(VALUE_ROWS))
def test_value_rows_are_skipped_by_check_finite_false(backend, row, entry):
    """Every "Reads values" row is a value check: check_finite=False turns it off (and what
    the kernels then do with the values is tests/test_unchecked_values.py's subject)."""
    bname, device = backend
    ns = _namespace(device)
    kwargs = dict(_kwargs(row["Example"], ns), check_finite=False)
    out = _call(entry, kwargs, ns, bname)
    assert out.shape == ns["P"].shape


def _contiguous_copies(kw):
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _detached(kw):
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


@pytest.mark.parametrize("row, entry", _cases(ACCEPTED))
def test_accepted_row(backend, row, entry):
    bname, device = backend
    ns = _namespace(device)
    kw = _kwargs(row["Example"], ns)
    behaviour = row["Behaviour"]
    out = _call(entry, kw, ns, bname)
    assert out.shape == ns["P"].shape and out.device == ns["P"].device
    if behaviour == "no error":
        return
    assert torch.isfinite(out).all(), f"{row['Id']}: non-finite output"
    if behaviour == "identical to contiguous copies":
        tensors = [v for v in kw.values() if isinstance(v, torch.Tensor)]
        assert any(not t.is_contiguous() or t.storage_offset() for t in tensors), (
            f"{row['Id']}: the example has no strided view"
        )
        want = _call(entry, _contiguous_copies(kw), ns, bname)
    elif behaviour == "no grad; identical to detached inputs":
        assert any(isinstance(v, torch.Tensor) and v.requires_grad for v in kw.values())
        assert not out.requires_grad and out.grad_fn is None
        want = _call(entry, _detached(kw), ns, bname)
    elif behaviour == "computed in float32":
        dtype = next(v.dtype for v in kw.values() if isinstance(v, torch.Tensor))
        assert out.dtype == dtype
        want = _call(entry, {k: v.float() for k, v in kw.items()}, ns, bname).to(dtype)
    elif behaviour.startswith("identical to `"):
        want = _call(entry, _kwargs(_words(behaviour)[0], ns), ns, bname)
    else:
        raise AssertionError(f"{row['Id']}: unknown behaviour {behaviour!r}")
    assert out.dtype == want.dtype
    assert torch.equal(out, want), f"{row['Id']}: max diff {(out - want).abs().max().item()}"
