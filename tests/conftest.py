"""Test configuration shared by every test file.

* Turns the Triton interpreter on when no GPU is present, before anything imports triton, so the
  Triton kernels are judged by the same parity tests as the other backends.
* ``backend`` fixture: every backend that runs on this machine for CPU tensors (and CUDA tensors
  when a GPU is present); ``parity_backend``: each of them with each dtype, but the reference in
  float64 (the float64 oracle itself). Triton also runs as ``triton-f32coef``: float32 data with
  the float32 coefficient pass that GPUs with slow float64 get (``Plan.coef_f32``), forced on
  whatever the device.
"""

import dataclasses
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import ifm  # noqa: E402


def _backend_params():
    params = []
    for name in ifm.available_backends():
        device = "cuda" if name == "cuda" else "cpu"
        if name == "triton" and torch.cuda.is_available():
            device = "cuda"
        params.append(pytest.param((name, device), id=f"{name}-{device}"))
    return params


BACKEND_PARAMS = _backend_params()
# the float32 coefficient pass of the Triton kernels (float32 data only)
F32COEF_PARAMS = [
    pytest.param((*p.values[0], "f32coef"), id=f"{p.id}-f32coef")
    for p in BACKEND_PARAMS
    if p.values[0][0] == "triton"
]


def force_f32_coefficients(monkeypatch):
    """Make the Triton launchers plan as on a GPU with slow float64 (same device otherwise):
    float32 data then gets the float32 coefficient pass."""
    from ifm_kernels import _launch

    profile_of = _launch.device_profile
    monkeypatch.setattr(
        _launch,
        "device_profile",
        lambda device: dataclasses.replace(profile_of(device), fast_fp64=False),
    )


@pytest.fixture(params=BACKEND_PARAMS + F32COEF_PARAMS)
def backend(request, monkeypatch):
    """``(backend_name, device)`` for every backend available here (Triton also with the float32
    coefficient pass: use float32 data with it)."""
    name, device, *flag = request.param
    if flag:
        force_f32_coefficients(monkeypatch)
    return name, device


DTYPES = {"f32": torch.float32, "f64": torch.float64}


def _parity_params():
    params = []
    for p in BACKEND_PARAMS:
        for dname, dtype in DTYPES.items():
            if p.values[0][0] == "reference" and dtype == torch.float64:
                continue
            params.append(pytest.param((*p.values[0], dtype), id=f"{p.id}-{dname}"))
    for p in F32COEF_PARAMS:
        name, device, flag = p.values[0]
        params.append(pytest.param((name, device, torch.float32, flag), id=p.id))
    return params


@pytest.fixture(params=_parity_params())
def parity_backend(request, monkeypatch):
    """``(backend_name, device, dtype)`` for every backend and dtype whose comparison with the
    float64 oracle can fail. The reference in float64 is left out: it is the oracle (the same
    computation), so tests/test_reference.py compares it with an independent scalar
    transcription of FIELDS.md instead. The reference in float32 computes in float64 and is
    compared like every backend (its stand-in is the float32 arithmetic of tests/modes.py).
    ``triton-f32coef``: Triton with float32 data and the float32 coefficient pass."""
    name, device, dtype, *flag = request.param
    if flag:
        force_f32_coefficients(monkeypatch)
    return name, device, dtype
