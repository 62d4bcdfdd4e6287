"""The Triton launchers as operators (``torch.ops.ifm.string_field_triton`` /
``coulomb_field_triton`` / ``coulomb_plate_partial_triton``): schema, fake kernels and dispatch
by ``opcheck``, one op per call in a profile, and launch plans computed once per shape and device
kind."""

import importlib
import math
import os

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)
pytest.importorskip("triton")

import ifm  # noqa: E402
import ifm_kernels  # noqa: E402
from ifm import _checks  # noqa: E402
from ifm_kernels import _introspect, _launch, _plan  # noqa: E402

# the launcher modules (the package's attributes of these names are the functions)
string_mod = importlib.import_module("ifm_kernels.string_field")
coulomb_mod = importlib.import_module("ifm_kernels.coulomb_field")

import modes  # noqa: E402
from cases import string_case  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STRING_OP = torch.ops.ifm.string_field_triton
COULOMB_OP = torch.ops.ifm.coulomb_field_triton


def _string_args(dtype=torch.float32, normalize=True, stable=False):
    return modes.string_op_args(DEVICE, dtype, normalize=normalize, stable=stable)


def _coulomb_args(dtype=torch.float32, two_plates=True, normalize=True):
    return modes.coulomb_op_args(DEVICE, dtype, two_plates=two_plates, normalize=normalize)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    torch.library.opcheck(STRING_OP, _string_args(dtype))
    torch.library.opcheck(STRING_OP, _string_args(dtype, normalize=False, stable=True))
    torch.library.opcheck(COULOMB_OP, _coulomb_args(dtype))
    torch.library.opcheck(COULOMB_OP, _coulomb_args(dtype, two_plates=False, normalize="pfgm"))
    torch.library.opcheck(torch.ops.ifm.coulomb_plate_partial_triton, _coulomb_args(dtype)[:2])


def test_op_equals_the_launcher():
    args = _string_args()
    want = ifm_kernels.string_field(
        *args[:3],
        L=args[3],
        sigma0=args[4],
        K=args[5],
        d=args[6],
        stable=args[7],
        normalize=args[8],
        norm_scale=args[9],
        eps=args[10],
    )
    assert torch.equal(STRING_OP(*args), want)
    cargs = _coulomb_args()
    want = ifm_kernels.coulomb_field(
        *cargs[:3],
        plate_gamma=cargs[3],
        sum_eps=cargs[4],
        normalize=cargs[5],
        norm_scale=cargs[6],
        eps=cargs[7],
    )
    assert torch.equal(COULOMB_OP(*cargs), want)


def test_public_triton_backend_calls_the_op():
    p, q, a, prm = string_case(5, 4, 3, "toy", seed=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ifm.fields.string_field(p.to(DEVICE), q.to(DEVICE), a.to(DEVICE), backend="triton", **prm)
        ifm.fields.coulomb_field(p.to(DEVICE), q.to(DEVICE), None, backend="triton")
    names = [e.name for e in prof.events()]
    assert names.count("ifm::string_field_triton") == 1, names
    assert names.count("ifm::coulomb_field_triton") == 1, names
    # A default call on CPU tensors also runs the compiled value check (docs/INPUTS.md), one op
    # before each field; on CUDA tensors no value check runs.
    check = ["ifm::check_values"] if DEVICE == "cpu" and _checks._check_op() is not None else []
    assert [n for n in names if n.startswith("ifm::")] == (
        check + ["ifm::string_field_triton"] + check + ["ifm::coulomb_field_triton"]
    )


def test_fake_kernels_give_shapes_without_running():
    with torch._subclasses.FakeTensorMode():
        p = torch.empty(11, 4, device="cuda", dtype=torch.float16)
        q = torch.empty(3, 4, device="cuda", dtype=torch.float16)
        out = STRING_OP(p, q, q, 6.0, 1.0, 10.0, math.pi / 20, False, True, 2.0, 1e-5)
        assert out.shape == (11, 4) and out.dtype == torch.float16 and out.is_cuda
        out = COULOMB_OP(p, q, None, None, 0.0, False, 2.0, 1e-5)
        assert out.shape == (11, 4) and out.device.type == "cuda"


def test_plans_are_cached_per_shape_and_profile():
    string_mod._cached_plan.cache_clear()
    coulomb_mod._cached_plan.cache_clear()
    args = _string_args()
    for _ in range(3):
        STRING_OP(*args)
    assert string_mod._cached_plan.cache_info().misses == 1
    assert string_mod._cached_plan.cache_info().hits == 2
    cargs = _coulomb_args()
    for _ in range(2):
        COULOMB_OP(*cargs)
    info = coulomb_mod._cached_plan.cache_info()  # one plan per plate (7 and 5 charges)
    assert info.misses == 2 and info.hits == 2
    # another shape or another device profile is another plan
    b, width = args[0].shape
    here = _launch.device_profile(args[0].device)
    plan = string_mod._cached_plan(
        b, args[1].shape[0], width - 1, width, here, args[0].element_size(), string=True
    )
    assert plan == _plan.make_plan(
        b, args[1].shape[0], width - 1, width, here, args[0].element_size(), string=True
    )
    gpu = string_mod._cached_plan(
        b, args[1].shape[0], width - 1, width, _plan.gpu_profile(132), 4, string=True
    )
    assert gpu == _plan.make_plan(
        b, args[1].shape[0], width - 1, width, _plan.gpu_profile(132), 4, string=True
    )
    assert gpu != plan


def test_recorded_launches_use_the_requested_profile():
    """record_launches plans with its own profile although plans are cached."""
    args = _string_args()
    STRING_OP(*args)  # a cached plan for this device's profile
    small = _plan.gpu_profile(2)
    with _introspect.record_launches(small) as launches:
        ifm_kernels.string_field(
            *args[:3],
            L=args[3],
            sigma0=args[4],
            K=args[5],
            d=args[6],
            stable=False,
            normalize=True,
            norm_scale=args[9],
            eps=args[10],
        )
    b, width = args[0].shape
    want = _plan.make_plan(
        b, args[1].shape[0], width - 1, width, small, args[0].element_size(), string=True
    )
    assert launches[0].grid == want.dist_grid
