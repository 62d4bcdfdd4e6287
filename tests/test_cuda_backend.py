"""The CUDA backend (csrc/cuda/).

Three groups:

* GPU tests (``gpu`` marker below): the parity rule of tests/parity.py on CUDA tensors (golden
  files, random odd sizes that cross every tile / split / chunk boundary, both dtypes, every
  mode), bitwise determinism across calls, the caller's stream, and the binding's device checks.
  Skipped with the reason when torch sees no GPU or ifm was built without CUDA kernels.
* Emulation tests: the same .cu sources compiled with g++ against tests/cuda_emu/cuda_emu.h (a
  CPU emulation of blocks, threads, __syncthreads and shared memory) and held to the same parity
  rule on this GPU-less machine. They check the kernels' arithmetic, indexing, tiling, reductions
  and compaction, not the GPU toolchain (scripts/check_cuda_compile.sh and
  scripts/check_cuda_extension.sh do that).
* The error ``ifm.fields.*_cuda`` raises when it cannot run (no CUDA kernels, or CPU tensors).
"""
from __future__ import annotations

import ctypes
import math
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

import ifm
from ifm import _ops, reference

from cases import coulomb_case, string_case
from parity import assert_parity, golden_names, load_golden

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float64]
STRING_MODES = [dict(normalize=False, stable=False), dict(normalize=True, stable=False),
                dict(normalize=False, stable=True), dict(normalize=True, stable=True)]
COULOMB_MODES = [dict(plate_gamma=None, normalize=False), dict(plate_gamma=1e-7, normalize=False),
                 dict(plate_gamma=5.0, normalize=True), dict(plate_gamma=None, normalize="pfgm")]


def _mode_id(m):
    return "-".join(f"{k}{v}" for k, v in m.items())


def _string_inputs(data):
    antiquarks = data["antiquarks"]
    if "pairing" in data:
        antiquarks = antiquarks[data["pairing"].long()]
    return data["points"], data["quarks"], antiquarks


def _golden_case(name):
    """(kind, inputs, params, oracle, golden field) of one golden file."""
    meta, data = load_golden(name)
    if meta["field"] == "string":
        inputs = _string_inputs(data)
        params = dict(L=meta["L"], sigma0=meta["sigma0"], K=meta["K"], d=meta["d"])
        oracle = reference.string_field(*(t.double() for t in inputs), **params)
        return "string", inputs, params, oracle, data["field"]
    inputs = (data["points"], data["positive"], data["negative"])
    params = dict(plate_gamma=meta["plate_gamma"])
    oracle = reference.coulomb_field(*(t.double() for t in inputs), **params)
    return "coulomb", inputs, params, oracle, data["field"]


def _coulomb_reference(points, pos, neg, mode):
    """Oracle arguments of reference.coulomb_field for one public-API mode."""
    pfgm = mode["normalize"] == "pfgm"
    DIM = points.shape[1]
    return reference.coulomb_field(points, pos, neg, plate_gamma=mode["plate_gamma"],
                                   sum_eps=1e-7 if pfgm else 0.0,
                                   normalize=mode["normalize"] is not False,
                                   norm_scale=math.sqrt(DIM - 1 if pfgm else DIM),
                                   eps=5.0 if pfgm else 1e-5)


def _string_oracles(points, quarks, antiquarks, params, mode):
    """(float64 oracle, float32 stand-in) of the string field, as tests/test_fields_parity.py."""
    oracle = reference.string_field(points, quarks, antiquarks, **params, **mode)
    standin = reference.string_field(points.float(), quarks.float(), antiquarks.float(),
                                     **params, **mode)
    return oracle, standin


def _coulomb_oracles(points, pos, neg, mode):
    """(float64 oracle, float32 stand-in) of the Coulomb field."""
    return (_coulomb_reference(points, pos, neg, mode),
            _coulomb_reference(points.float(), pos.float(), None if neg is None else neg.float(),
                               mode))


# Sizes that cross the kernels' boundaries: 64-query x 64-pair tiles, 32/16-column staging
# chunks, split-D slices, the 256-column blocks of the sum pass and its lane layout (D < 256).
STRING_SIZES = [(1, 1, 1), (5, 37, 5), (37, 5, 123), (65, 129, 33), (70, 3, 700), (3, 70, 1000)]
COULOMB_SIZES = [(1, 1, 1, 1), (7, 5, 3, 2), (65, 130, 64, 37), (5, 6, 9, 600)]
# The emulation runs every thread as a fiber on one core: the same boundaries, smaller D.
EMU_STRING_SIZES = STRING_SIZES[:4] + [(66, 3, 300)]


# --------------------------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------------------------
HAS_GPU = torch.cuda.is_available()
HAS_CUDA_KERNELS = _ops.has_kernel("string_field", "CUDA") and _ops.has_kernel("coulomb_field",
                                                                                "CUDA")
_GPU_SKIP = ("torch.cuda.is_available() is False: no GPU on this machine" if not HAS_GPU else
             "ifm was built without CUDA kernels (rebuild with a CUDA torch, or IFM_FORCE_CUDA=1)")
gpu = pytest.mark.skipif(not (HAS_GPU and HAS_CUDA_KERNELS), reason=_GPU_SKIP)


def _twice(fn):
    """Run fn twice; the CUDA backend must give bitwise identical results."""
    first, second = fn(), fn()
    assert torch.equal(first, second), "CUDA results differ between two identical calls"
    return first


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", golden_names())
def test_gpu_golden(name, dtype):
    kind, inputs, params, oracle, field = _golden_case(name)
    dev = [t.to("cuda", dtype) for t in inputs]
    fn = ifm.fields.string_field_cuda if kind == "string" else ifm.fields.coulomb_field_cuda
    out = _twice(lambda: fn(*dev, **params))
    assert out.dtype == dtype and out.is_cuda
    assert_parity(out, oracle, field, what=f"{name}/cuda/{dtype}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", STRING_MODES, ids=_mode_id)
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
@pytest.mark.parametrize("shape", STRING_SIZES, ids=lambda s: "b{}-B{}-D{}".format(*s))
def test_gpu_string_random(shape, geometry, mode, dtype):
    points, quarks, antiquarks, params = string_case(*shape, geometry, seed=sum(shape))
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, mode)
    dev = [t.to("cuda", dtype) for t in (points, quarks, antiquarks)]
    out = _twice(lambda: ifm.fields.string_field_cuda(*dev, **params, **mode))
    assert_parity(out, oracle, standin, what=f"cuda string {shape} {geometry} {mode}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=_mode_id)
@pytest.mark.parametrize("shape", COULOMB_SIZES, ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s))
def test_gpu_coulomb_random(shape, mode, plates, dtype):
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=sum(shape))
    neg = neg if plates == 2 else None
    oracle, standin = _coulomb_oracles(points, pos, neg, mode)
    dev = [None if t is None else t.to("cuda", dtype) for t in (points, pos, neg)]
    out = _twice(lambda: ifm.fields.coulomb_field_cuda(*dev, **mode))
    assert_parity(out, oracle, standin, what=f"cuda coulomb {shape} {mode} plates={plates}")


@gpu
def test_gpu_published_shapes():
    """CIFAR-sized string and PFGM-sized Coulomb calls run and agree with the float64 oracle."""
    points, quarks, antiquarks, params = string_case(64, 256, 3072, "cifar", seed=1)
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, dict(normalize=True))
    out = ifm.fields.string_field_cuda(*(t.cuda().float() for t in (points, quarks, antiquarks)),
                                       **params, normalize=True)
    assert_parity(out, oracle, standin, what="cuda string cifar")
    points, pos, _ = coulomb_case(128, 1024, 1, 3072, L=100.0, seed=2)
    mode = dict(plate_gamma=None, normalize="pfgm")
    oracle, standin = _coulomb_oracles(points, pos, None, mode)
    out = ifm.fields.coulomb_field_cuda(points.cuda().float(), pos.cuda().float(), **mode)
    assert_parity(out, oracle, standin, what="cuda coulomb pfgm")


@gpu
def test_gpu_largest_dimension():
    """D = 49152 (CelebA 128x128) with a few queries."""
    points, quarks, antiquarks, params = string_case(3, 4, 49152, "w2s", seed=3)
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, {})
    out = ifm.fields.string_field_cuda(*(t.cuda().float() for t in (points, quarks, antiquarks)),
                                       **params)
    assert_parity(out, oracle, standin, what="cuda string D=49152")


@gpu
def test_gpu_uses_the_current_stream():
    points, quarks, antiquarks, params = string_case(40, 70, 300, "cifar", seed=4)
    dev = [t.cuda().float() for t in (points, quarks, antiquarks)]
    expected = ifm.fields.string_field_cuda(*dev, **params)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = ifm.fields.string_field_cuda(*dev, **params)
    side.synchronize()
    assert torch.equal(out, expected)


@gpu
def test_gpu_op_rejects_mixed_devices():
    points, quarks, antiquarks, params = string_case(4, 5, 6, "toy", seed=5)
    d = math.pi / (2 * params["K"])
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        torch.ops.ifm.string_field(points.cuda(), quarks, antiquarks.cuda(), params["L"],
                                   params["sigma0"], params["K"], d, False, False, 1.0, 1e-5)
    pts, pos, neg = coulomb_case(4, 5, 6, 3, L=6.0)
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        torch.ops.ifm.coulomb_field(pts.cuda(), pos.cuda(), neg, None, 0.0, False, 1.0, 1e-5)


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gpu_second_device():
    points, quarks, antiquarks, params = string_case(9, 11, 40, "cifar", seed=6)
    on0 = ifm.fields.string_field_cuda(*(t.to("cuda:0") for t in (points, quarks, antiquarks)),
                                       **params)
    on1 = ifm.fields.string_field_cuda(*(t.to("cuda:1") for t in (points, quarks, antiquarks)),
                                       **params)
    assert on1.device == torch.device("cuda:1")
    assert torch.equal(on0.cpu(), on1.cpu())


# --------------------------------------------------------------------------------------------
# Runs here: the error of the pinned CUDA entry points
# --------------------------------------------------------------------------------------------
def test_cuda_entry_points_explain_why_they_cannot_run():
    points, quarks, antiquarks, params = string_case(3, 4, 5, "toy")
    pts, pos, neg = coulomb_case(3, 4, 5, 2, L=6.0)
    if not HAS_CUDA_KERNELS:
        with pytest.raises(RuntimeError, match="without CUDA kernels"):
            ifm.fields.string_field_cuda(points, quarks, antiquarks, **params)
        with pytest.raises(RuntimeError, match="without CUDA kernels"):
            ifm.fields.coulomb_field_cuda(pts, pos, neg)
    else:
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            ifm.fields.string_field_cuda(points, quarks, antiquarks, **params)
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            ifm.fields.coulomb_field_cuda(pts, pos, neg)


# --------------------------------------------------------------------------------------------
# Runs here: the kernels under the CPU emulation of CUDA
# --------------------------------------------------------------------------------------------
class _Emulated:
    """ctypes front end of tests/cuda_emu/capi.cpp (the .cu launchers compiled for the CPU)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        i64, f64, ci, vp = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
        self.lib.ifm_emu_string_field.argtypes = [ci, vp, vp, vp, i64, i64, i64, f64, f64, f64,
                                                  f64, ci, ci, f64, f64, vp, i64, i64, ci]
        self.lib.ifm_emu_coulomb_field.argtypes = [ci, vp, i64, vp, i64, vp, i64, i64, ci, f64,
                                                   f64, ci, f64, f64, vp, i64, i64, ci]
        self.lib.ifm_emu_launches.restype = ctypes.c_long

    @staticmethod
    def _arr(t, dtype):
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype))

    def string_field(self, points, quarks, antiquarks, *, L, sigma0, K, d=None, normalize=False,
                     stable=False, eps=1e-5, dtype=torch.float64, chunk=0, target_blocks=0,
                     workspace=False):
        npd = np.float64 if dtype == torch.float64 else np.float32
        d = math.pi / (2 * K) if d is None else d
        p, q, a = (self._arr(t, npd) for t in (points, quarks, antiquarks))
        out = np.full_like(p, np.nan)
        b, width = p.shape
        rc = self.lib.ifm_emu_string_field(
            int(npd == np.float64), p.ctypes.data, q.ctypes.data, a.ctypes.data, b, q.shape[0],
            width - 1, L, sigma0, K, d, int(stable), int(normalize), math.sqrt(width), eps,
            out.ctypes.data, chunk, target_blocks, int(workspace))
        assert rc == 0, f"string_field launcher returned cudaError {rc}"
        return torch.from_numpy(out)

    def coulomb_field(self, points, positive, negative=None, *, plate_gamma=None,
                      normalize=False, dtype=torch.float64, chunk=0, target_blocks=0,
                      workspace=False):
        npd = np.float64 if dtype == torch.float64 else np.float32
        pfgm = normalize == "pfgm"
        p, pos = self._arr(points, npd), self._arr(positive, npd)
        neg = None if negative is None else self._arr(negative, npd)
        out = np.full_like(p, np.nan)
        b, width = p.shape
        rc = self.lib.ifm_emu_coulomb_field(
            int(npd == np.float64), p.ctypes.data, b, pos.ctypes.data, pos.shape[0],
            None if neg is None else neg.ctypes.data, 0 if neg is None else neg.shape[0],
            width - 1, int(plate_gamma is not None), plate_gamma or 0.0, 1e-7 if pfgm else 0.0,
            int(normalize is not False), math.sqrt(width - 1 if pfgm else width),
            5.0 if pfgm else 1e-5, out.ctypes.data, chunk, target_blocks, int(workspace))
        assert rc == 0, f"coulomb_field launcher returned cudaError {rc}"
        return torch.from_numpy(out)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    lib = tmp_path_factory.mktemp("cuda_emu") / "libifm_cuda_emu.so"
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wno-unknown-pragmas", "-U_FORTIFY_SOURCE",
           "-shared", "-fPIC",
           "-DIFM_CUDA_EMULATION", "-include", str(ROOT / "tests/cuda_emu/cuda_emu.h"),
           "-x", "c++", str(ROOT / "tests/cuda_emu/capi.cpp"), "-o", str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"building the CUDA emulation failed:\n{res.stderr}"
    return _Emulated(lib)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", golden_names())
def test_emulated_golden(emu, name, dtype):
    kind, inputs, params, oracle, field = _golden_case(name)
    if kind == "string":
        out = emu.string_field(*inputs, **params, dtype=dtype)
    else:
        out = emu.coulomb_field(*inputs, **params, dtype=dtype)
    assert_parity(out, oracle, field, what=f"{name}/emulated-cuda/{dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", STRING_MODES, ids=_mode_id)
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
@pytest.mark.parametrize("shape", EMU_STRING_SIZES, ids=lambda s: "b{}-B{}-D{}".format(*s))
def test_emulated_string_random(emu, shape, geometry, mode, dtype):
    points, quarks, antiquarks, params = string_case(*shape, geometry, seed=sum(shape))
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, mode)
    out = emu.string_field(points, quarks, antiquarks, **params, **mode, dtype=dtype)
    assert_parity(out, oracle, standin, what=f"emulated string {shape} {geometry} {mode}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=_mode_id)
@pytest.mark.parametrize("shape", COULOMB_SIZES, ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s))
def test_emulated_coulomb_random(emu, shape, mode, plates, dtype):
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=sum(shape))
    neg = neg if plates == 2 else None
    oracle, standin = _coulomb_oracles(points, pos, neg, mode)
    out = emu.coulomb_field(points, pos, neg, **mode, dtype=dtype)
    assert_parity(out, oracle, standin, what=f"emulated coulomb {shape} {mode} plates={plates}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_emulated_chunking_and_split_do_not_change_the_field(emu, dtype):
    """Query chunks (tiny max_pairs_per_chunk), split-D slices (many target blocks) and a
    caller-given, misaligned workspace reproduce the default launch within rounding, and each
    configuration is bitwise reproducible."""
    points, quarks, antiquarks, params = string_case(20, 33, 1300, "w2s", seed=7)
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, dict(normalize=True))
    configs = [dict(), dict(chunk=33 * 8, target_blocks=1), dict(target_blocks=10_000),
               dict(chunk=1, workspace=True)]
    for cfg in configs:
        run = lambda: emu.string_field(points, quarks, antiquarks, **params, normalize=True,
                                       dtype=dtype, **cfg)
        out = run()
        assert torch.equal(out, run()), f"not reproducible with {cfg}"
        assert_parity(out, oracle, standin, what=f"emulated string {cfg}")
    pts, pos, neg = coulomb_case(20, 40, 20, 700, L=6.0, seed=8)
    mode = dict(plate_gamma=5.0, normalize=True)
    oracle, standin = _coulomb_oracles(pts, pos, neg, mode)
    for cfg in configs:
        out = emu.coulomb_field(pts, pos, neg, **mode, dtype=dtype, **cfg)
        assert_parity(out, oracle, standin, what=f"emulated coulomb {cfg}")
