"""Test configuration shared by every test file.

* Turns the Triton interpreter on when no GPU is present, before anything imports triton, so the
  Triton kernels are judged by the same parity tests as the other backends.
* ``backend`` fixture: every backend that runs on this machine for CPU tensors (and CUDA tensors
  when a GPU is present); ``kernel_backend``: the same without the reference.
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


@pytest.fixture(params=[p for p in BACKEND_PARAMS if p.values[0][0] != "reference"])
def kernel_backend(request):
    """Like ``backend`` without the reference: for parity checks whose float32 stand-in is the
    reference itself (comparing the reference with itself could not fail)."""
    return request.param
