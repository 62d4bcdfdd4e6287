"""No device-to-host sync in a default call on CUDA tensors (docs/INPUTS.md, "Value checks").

Proved without a GPU: the public API runs under ``FakeTensorMode`` on fake CUDA tensors (fake
tensors hold no values, so any host read of one raises there) while a dispatch mode counts
``aten._local_scalar_dense`` (what ``float(t)``, ``bool(t)`` and ``t.item()`` dispatch to), and a
spy asserts that the value-reading checks are not even entered. On CPU tensors the value checks
run by default (a CPU read is no sync), and never with ``check_finite=False``.
"""

import math

import pytest
import torch
from modes import COULOMB_MODE_IDS, COULOMB_MODES, STRING_MODE_IDS, STRING_MODES
from torch._subclasses import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import ifm
from ifm import _checks, _ops, fields

SCALAR_READS = (
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.item.default,
)


class CountHostReads(TorchDispatchMode):
    """Counts the dispatches that copy a tensor value to the host."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SCALAR_READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def spy_value_checks(monkeypatch):
    calls = []
    real = _checks.check_values

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(_checks, "check_values", spy)
    return calls


def _triton_available():
    return fields._triton_module() is not None


def _cuda_backends():
    """Backends that can take (fake) CUDA tensors here, with a skip reason otherwise."""
    cuda_kernels = _ops.has_kernel("string_field", "CUDA") and _ops.has_kernel(
        "coulomb_field", "CUDA"
    )
    return [
        pytest.param("auto", id="auto"),
        pytest.param(
            "triton",
            id="triton",
            marks=pytest.mark.skipif(not _triton_available(), reason="triton is not installed"),
        ),
        pytest.param(
            "cuda",
            id="cuda",
            marks=pytest.mark.skipif(
                not cuda_kernels,
                reason="ifm._C has no CUDA kernels (this torch/build is CPU-only; "
                "scripts/gpu.sh builds them)",
            ),
        ),
    ]


# the published modes, plus the public defaults (plate_gamma and eps not given)
COULOMB_CALLS = list(zip(COULOMB_MODE_IDS, COULOMB_MODES, strict=False)) + [
    ("defaults", {}),
    ("defaults-norm", dict(normalize=True)),
]


def _calls(p, q, a, **extra):
    """Every normalisation mode and ``stable`` of both fields (``extra``: more keywords)."""
    for name, kw in zip(STRING_MODE_IDS, STRING_MODES, strict=False):
        yield (
            f"string-{name}",
            lambda be, kw=kw: fields.string_field(
                p, q, a, L=6.0, sigma0=1.0, K=10.0, backend=be, **kw, **extra
            ),
        )
    for name, kw in COULOMB_CALLS:
        yield (
            f"coulomb2-{name}",
            lambda be, kw=kw: fields.coulomb_field(p, q, a, backend=be, **kw, **extra),
        )
        yield (
            f"coulomb1-{name}",
            lambda be, kw=kw: fields.coulomb_field(p, q, None, backend=be, **kw, **extra),
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("backend", _cuda_backends())
def test_default_call_on_cuda_reads_nothing(backend, dtype, spy_value_checks):
    if backend == "auto" and not (_triton_available() or _ops.has_kernel("string_field", "CUDA")):
        pytest.skip("no compiled backend for CUDA tensors (auto falls back to the reference)")
    with FakeTensorMode(allow_non_fake_inputs=False):
        p = torch.empty(9, 5, device="cuda", dtype=dtype)
        q = torch.empty(7, 5, device="cuda", dtype=dtype)
        a = torch.empty(7, 5, device="cuda", dtype=dtype)
        for name, call in _calls(p, q, a):
            with CountHostReads() as counter:
                out = call(backend)
            assert counter.reads == [], (name, counter.reads)
            assert out.shape == p.shape and out.dtype == dtype and out.device.type == "cuda"
    assert spy_value_checks == []


def test_modes_cover_every_mode():
    assert {(kw["normalize"], kw["stable"]) for kw in STRING_MODES} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }
    assert {kw.get("normalize", False) for _, kw in COULOMB_CALLS} == {False, True, "pfgm"}


def _cpu_case():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 4, generator=g) * 6
    q = torch.randn(5, 4, generator=g)
    q[:, 0] = 0
    a = torch.randn(5, 4, generator=g)
    a[:, 0] = 6.0
    return p, q, a


@pytest.mark.parametrize("backend", [b for b in ifm.available_backends("cpu")])
def test_cpu_without_value_checks_reads_nothing(backend):
    p, q, a = _cpu_case()
    for name, call in _calls(p, q, a, check_finite=False):
        with CountHostReads() as counter:
            out = call(backend)
        assert counter.reads == [], (name, counter.reads)
        assert out.shape == p.shape


def test_cpu_default_runs_the_value_checks(spy_value_checks):
    p, q, a = _cpu_case()
    fields.string_field(p, q, a, L=6.0, sigma0=1.0, K=10.0)
    fields.coulomb_field(p, q, a)
    assert len(spy_value_checks) == 2
    with pytest.raises(ValueError, match="non-finite"):
        fields.string_field(torch.where(p > 3, math.nan, p), q, a, L=6.0, sigma0=1.0, K=10.0)


# --------------------------------------------------------------------------------------------
# the switch: check_finite argument and IFM_CHECK_FINITE
# --------------------------------------------------------------------------------------------
def _nan_points():
    p, q, a = _cpu_case()
    p[2, 1] = math.nan
    return p, q, a


def test_env_zero_turns_the_cpu_checks_off(monkeypatch):
    monkeypatch.setenv(_checks.ENV_SWITCH, "0")
    out = fields.string_field(*_nan_points(), L=6.0, sigma0=1.0, K=10.0)
    assert out.shape == (6, 4)
    monkeypatch.setenv(_checks.ENV_SWITCH, "1")
    with pytest.raises(ValueError, match="non-finite"):
        fields.string_field(*_nan_points(), L=6.0, sigma0=1.0, K=10.0)


def test_argument_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(_checks.ENV_SWITCH, "0")
    with pytest.raises(ValueError, match="non-finite"):
        fields.coulomb_field(*_nan_points(), check_finite=True)
    monkeypatch.setenv(_checks.ENV_SWITCH, "1")
    assert fields.coulomb_field(*_nan_points(), check_finite=False).shape == (6, 4)


def test_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv(_checks.ENV_SWITCH, "yes")
    with pytest.raises(ValueError, match="IFM_CHECK_FINITE"):
        fields.string_field(*_cpu_case(), L=6.0, sigma0=1.0, K=10.0)


def test_env_one_checks_cuda_tensors(monkeypatch):
    """IFM_CHECK_FINITE=1 turns the value checks on for CUDA tensors: on fake CUDA tensors,
    which hold no values, that is the error that says so."""
    with FakeTensorMode():
        p = torch.empty(4, 3, device="cuda")
        monkeypatch.setenv(_checks.ENV_SWITCH, "1")
        with pytest.raises(ValueError, match="fake tensors"):
            fields.coulomb_field(p, p, p, backend="auto")
        with pytest.raises(ValueError, match="check_finite=False"):
            fields.string_field(p, p, p, L=6.0, sigma0=1.0, K=10.0, check_finite=True)
        monkeypatch.setenv(_checks.ENV_SWITCH, "0")
        assert fields.coulomb_field(p, p, p).shape == p.shape
    monkeypatch.delenv(_checks.ENV_SWITCH, raising=False)
    assert _checks.value_checks(None, torch.empty(2, 3)) is True
    assert _checks.value_checks(None, torch.empty(2, 3, device="meta")) is False


def test_explicit_true_while_tracing_is_an_error():
    p, q, a = _cpu_case()

    def step(p, q, a):
        return fields.coulomb_field(p, q, a, check_finite=True)

    with pytest.raises(Exception, match="check_finite=True reads tensor values"):
        torch.compile(step, backend="eager", fullgraph=True)(p, q, a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (real CUDA tensors)")
def test_real_cuda_default_makes_no_sync():
    """On a GPU: a default call with torch.cuda.set_sync_debug_mode("error") raises on any
    synchronising operation."""
    p, q, a = (t.cuda() for t in _cpu_case())
    fields.string_field(p, q, a, L=6.0, sigma0=1.0, K=10.0)  # warm-up (compilation, imports)
    fields.coulomb_field(p, q, a)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for normalize in (False, True):
            fields.string_field(p, q, a, L=6.0, sigma0=1.0, K=10.0, normalize=normalize)
            fields.coulomb_field(p, q, a, normalize=normalize)
        fields.coulomb_field(p, q, None, normalize="pfgm")
    finally:
        torch.cuda.set_sync_debug_mode("default")
