"""Test configuration shared by every test file.

* Turns the Triton interpreter on when no GPU is present, before anything imports triton, so the
  Triton kernels are judged by the same parity tests as the other backends.
* ``backend`` fixture: every backend that runs on this machine for CPU tensors (and CUDA tensors
  when a GPU is present); ``parity_backend``: each of them with each dtype, but the reference in
  float64 (the float64 oracle itself).
"""

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


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """``(backend_name, device)`` for every backend available here."""
    return request.param


DTYPES = {"f32": torch.float32, "f64": torch.float64}


def _parity_params():
    params = []
    for p in BACKEND_PARAMS:
        for dname, dtype in DTYPES.items():
            if p.values[0][0] == "reference" and dtype == torch.float64:
                continue
            params.append(pytest.param((*p.values[0], dtype), id=f"{p.id}-{dname}"))
    return params


@pytest.fixture(params=_parity_params())
def parity_backend(request):
    """``(backend_name, device, dtype)`` for every backend and dtype whose comparison with the
    float64 oracle can fail. The reference in float64 is left out: it is the oracle (the same
    computation), so tests/test_reference.py compares it with an independent scalar
    transcription of FIELDS.md instead. The reference in float32 computes in float64 and is
    compared like every backend (its stand-in is the float32 arithmetic of tests/modes.py)."""
    return request.param
