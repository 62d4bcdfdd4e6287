"""Run-time check that the build holds code for the GPU (ifm._cuda_arch), with the build record
and the GPU's compute capability simulated (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from ifm import _cuda_arch, _ops, fields

SASS = ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    "cc,sass,ptx,runs",
    [
        (90, SASS, ["compute_120"], True),
        (86, ["sm_80"], [], True),  # same major, newer minor: the sm_80 SASS runs
        (75, ["sm_80", "sm_90"], [], False),  # older GPU
        (100, ["sm_80", "sm_90"], [], False),  # newer major without PTX
        (120, ["sm_80", "sm_90"], ["compute_90"], True),  # PTX JIT-compiles on newer GPUs
        (80, ["sm_90"], ["compute_90"], False),  # PTX of a newer arch does not run
        (90, ["sm_90a"], [], True),
        (100, ["sm_90a"], ["compute_90a"], False),  # arch-specific code runs on that arch only
    ],
)
def test_runs_on(cc, sass, ptx, runs):
    assert _cuda_arch.runs_on(cc, sass, ptx) is runs


@pytest.fixture
def simulated_gpu(monkeypatch):
    """A CUDA build for sm_80 / sm_90 (no PTX) and a GPU of compute capability 7.5."""
    info = dict(cuda=True, cuda_skipped=None, sass=["sm_80", "sm_90"], ptx=[])
    monkeypatch.setattr(_cuda_arch, "build_info", lambda: info)
    monkeypatch.setattr(_cuda_arch, "_capability", lambda index: 75)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4")
    monkeypatch.setattr(_cuda_arch, "_warned", set())
    monkeypatch.setattr(_ops, "has_kernel", lambda op, key: True)
    monkeypatch.setattr(fields, "_triton_module", lambda: object())
    monkeypatch.setattr(fields, "_RESOLVED", {})  # backend choices are cached per device
    return info


def test_cuda_call_on_a_gpu_without_code_names_both_archs(simulated_gpu):
    with pytest.raises(
        RuntimeError,
        match=r"no code for GPU 0 \(Tesla T4, sm_75\).*"
        r"SASS sm_80, sm_90 and PTX none",
    ):
        fields._resolve_backend("cuda", torch.device("cuda", 0), "string_field")


def test_auto_uses_triton_on_a_gpu_without_code(simulated_gpu):
    with pytest.warns(RuntimeWarning, match="sm_75.*backend='auto' uses the next backend"):
        assert fields._resolve_backend("auto", torch.device("cuda", 0), "coulomb_field") == "triton"


def test_auto_uses_cuda_when_the_build_covers_the_gpu(simulated_gpu, monkeypatch):
    monkeypatch.setattr(_cuda_arch, "_capability", lambda index: 89)  # sm_80 SASS runs on 8.9
    assert fields._resolve_backend("auto", torch.device("cuda", 0), "string_field") == "cuda"
    _cuda_arch.check(torch.device("cuda", 0))


def test_degraded_build_warns_its_reason_on_a_gpu(simulated_gpu, monkeypatch):
    info = dict(
        cuda=False,
        cuda_skipped="nvcc at /x is CUDA 12.4 but torch was built with CUDA 13.0",
        sass=[],
        ptx=[],
    )
    monkeypatch.setattr(_cuda_arch, "build_info", lambda: info)
    with pytest.warns(RuntimeWarning, match="built without CUDA kernels .nvcc at /x is CUDA 12.4"):
        assert fields._resolve_backend("auto", torch.device("cuda", 0), "string_field") == "triton"


def test_this_build_is_recorded():
    info = _cuda_arch.build_info()
    assert info is not None, "python/ifm/_build_info.py has no entry for this interpreter"
    assert info["cuda"] == _ops.has_kernel("string_field", "CUDA")
