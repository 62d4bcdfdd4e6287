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
import os
import pathlib
import shutil
import subprocess

import modes
import numpy as np
import pytest
import torch
from cases import coulomb_case, string_case
from parity import assert_parity, golden_names, load_golden, row_errors

import ifm
from ifm import _checks, _ops, reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float64]
STRING_MODES, STRING_MODE_IDS = modes.STRING_MODES, modes.STRING_MODE_IDS
COULOMB_MODES, COULOMB_MODE_IDS = modes.COULOMB_MODES, modes.COULOMB_MODE_IDS


def _golden_case(name):
    """(kind, inputs, params, oracle, golden field) of one golden file."""
    meta, data = load_golden(name)
    if meta["field"] == "string":
        inputs = modes.golden_string_inputs(data)
        params = dict(L=meta["L"], sigma0=meta["sigma0"], K=meta["K"], d=meta["d"])
        oracle = reference.string_field(*(t.double() for t in inputs), **params)
        return "string", inputs, params, oracle, data["field"]
    inputs = modes.golden_coulomb_inputs(data)
    params = dict(plate_gamma=meta["plate_gamma"])
    oracle = reference.coulomb_field(*(t.double() for t in inputs), **params)
    return "coulomb", inputs, params, oracle, data["field"]


def _coulomb_reference(points, pos, neg, mode):
    """Oracle of one public-API Coulomb mode (the mapping of ifm.fields.coulomb_kernel_args)."""
    kw = modes.coulomb_reference_kwargs(points.shape[1], mode, two_plates=neg is not None)
    return reference.coulomb_field(points, pos, neg, **kw)


def _string_oracles(points, quarks, antiquarks, params, mode):
    """(float64 oracle, float32 stand-in) of the string field, as tests/test_fields_parity.py."""
    kw = modes.string_reference_kwargs(points.shape[1], mode)
    oracle = reference.string_field(points, quarks, antiquarks, **params, **kw)
    standin = reference.string_field(
        points.float(), quarks.float(), antiquarks.float(), **params, **kw
    )
    return oracle, standin


def _coulomb_oracles(points, pos, neg, mode):
    """(float64 oracle, float32 stand-in) of the Coulomb field."""
    return (
        _coulomb_reference(points, pos, neg, mode),
        _coulomb_reference(points.float(), pos.float(), None if neg is None else neg.float(), mode),
    )


# Sizes that cross the kernels' boundaries: 64-query x 64-pair tiles, 32/16-column staging
# chunks, split-D slices, the 256-column blocks of the sum pass and its lane layout (D < 256).
STRING_SIZES = [(1, 1, 1), (5, 37, 5), (37, 5, 123), (65, 129, 33), (70, 3, 700), (3, 70, 1000)]
COULOMB_SIZES = [(1, 1, 1, 1), (7, 5, 3, 2), (65, 130, 64, 37), (5, 6, 9, 600)]
# The emulation runs every thread as a fiber on one core: the same boundaries, smaller D.
EMU_STRING_SIZES = STRING_SIZES[:4] + [(66, 3, 300)]
# (data dtype, coefficient path) of the emulated launches: float32 data on the double path (what
# A100 / H100-class GPUs run) and on the float32 coefficient path (Tuning::coef_f32: GPUs with
# slow FP64), float64 data (always the double path).
EMU_PRECISIONS = [(torch.float32, "f64"), (torch.float32, "f32"), (torch.float64, "f64")]
EMU_PRECISION_IDS = ["f32", "f32-coef32", "f64"]


# --------------------------------------------------------------------------------------------
# GPU tests
# --------------------------------------------------------------------------------------------
HAS_GPU = torch.cuda.is_available()
HAS_CUDA_KERNELS = _ops.has_kernel("string_field", "CUDA") and _ops.has_kernel(
    "coulomb_field", "CUDA"
)
_GPU_SKIP = (
    "torch.cuda.is_available() is False: no GPU on this machine"
    if not HAS_GPU
    else "ifm was built without CUDA kernels (rebuild with a CUDA torch, or IFM_FORCE_CUDA=1)"
)
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
@pytest.mark.parametrize("mode", STRING_MODES, ids=STRING_MODE_IDS)
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
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=COULOMB_MODE_IDS)
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
    out = ifm.fields.string_field_cuda(
        *(t.cuda().float() for t in (points, quarks, antiquarks)), **params, normalize=True
    )
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
    out = ifm.fields.string_field_cuda(
        *(t.cuda().float() for t in (points, quarks, antiquarks)), **params
    )
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
    L, sigma0, K, d = _checks.string_geometry(params["L"], params["sigma0"], params["K"], None)
    kw = ifm.fields.string_kernel_args(points.shape[1])
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        torch.ops.ifm.string_field(
            points.cuda(),
            quarks,
            antiquarks.cuda(),
            L,
            sigma0,
            K,
            d,
            False,
            kw["normalize"],
            kw["norm_scale"],
            kw["eps"],
        )
    pts, pos, neg = coulomb_case(4, 5, 6, 3, L=6.0)
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        ck = ifm.fields.coulomb_kernel_args(pts.shape[1], two_plates=True)
        torch.ops.ifm.coulomb_field(
            pts.cuda(),
            pos.cuda(),
            neg,
            ck["plate_gamma"],
            ck["sum_eps"],
            ck["normalize"],
            ck["norm_scale"],
            ck["eps"],
        )


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gpu_second_device():
    points, quarks, antiquarks, params = string_case(9, 11, 40, "cifar", seed=6)
    on0 = ifm.fields.string_field_cuda(
        *(t.to("cuda:0") for t in (points, quarks, antiquarks)), **params
    )
    on1 = ifm.fields.string_field_cuda(
        *(t.to("cuda:1") for t in (points, quarks, antiquarks)), **params
    )
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
    """ctypes front end of tests/cuda_emu/capi.cpp (the .cu launchers compiled for the CPU).

    Every call checks the emulator's report: a shared-memory race, a read of uninitialised
    shared memory, a divergent barrier or an invalid launch fails the call with its message."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        i64, f64, ci, vp = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
        self.lib.ifm_emu_string_field.argtypes = [
            ci,
            vp,
            vp,
            vp,
            i64,
            i64,
            i64,
            f64,
            f64,
            f64,
            f64,
            ci,
            ci,
            f64,
            f64,
            vp,
            i64,
            i64,
            ci,
            ci,
        ]
        self.lib.ifm_emu_coulomb_field.argtypes = [
            ci,
            vp,
            i64,
            vp,
            i64,
            vp,
            i64,
            i64,
            ci,
            f64,
            f64,
            ci,
            f64,
            f64,
            vp,
            i64,
            i64,
            ci,
            ci,
        ]
        self.lib.ifm_emu_coulomb_plate_partial.argtypes = [
            ci,
            vp,
            i64,
            vp,
            i64,
            i64,
            vp,
            vp,
            i64,
            ci,
        ]
        self.lib.ifm_emu_launches.restype = ctypes.c_long
        self.lib.ifm_emu_set_schedule.argtypes = [ci, ctypes.c_uint64]
        self.lib.ifm_emu_report.restype = ctypes.c_char_p
        self.lib.ifm_emu_violations.restype = ctypes.c_long

    def schedule(self, mode: str, seed: int = 1):
        """Thread order between barriers for the following calls: forward, reverse, random
        (seeded) or mixed (each block one of the three; the default)."""
        self.lib.ifm_emu_set_schedule(SCHEDULES[mode], seed)

    def _check(self, rc, what):
        report = self.lib.ifm_emu_report().decode()
        self.lib.ifm_emu_clear_report()
        assert rc == 0 and not report, f"{what} launcher returned cudaError {rc}:\n{report}"

    @staticmethod
    def _arr(t, dtype):
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype))

    def string_field(
        self,
        points,
        quarks,
        antiquarks,
        *,
        L,
        sigma0,
        K,
        d=None,
        normalize=False,
        stable=False,
        eps=1e-5,
        dtype=torch.float64,
        chunk=0,
        target_blocks=0,
        workspace=False,
        coef="f64",
    ):
        npd = np.float64 if dtype == torch.float64 else np.float32
        L, sigma0, K, d = _checks.string_geometry(L, sigma0, K, d)
        p, q, a = (self._arr(t, npd) for t in (points, quarks, antiquarks))
        out = np.full_like(p, np.nan)
        b, width = p.shape
        kw = ifm.fields.string_kernel_args(width, normalize=normalize, eps=eps)
        rc = self.lib.ifm_emu_string_field(
            int(npd == np.float64),
            p.ctypes.data,
            q.ctypes.data,
            a.ctypes.data,
            b,
            q.shape[0],
            width - 1,
            L,
            sigma0,
            K,
            d,
            int(stable),
            int(kw["normalize"]),
            kw["norm_scale"],
            kw["eps"],
            out.ctypes.data,
            chunk,
            target_blocks,
            int(workspace),
            _coef_flag(coef),
        )
        self._check(rc, "string_field")
        return torch.from_numpy(out)

    def coulomb_field(
        self,
        points,
        positive,
        negative=None,
        *,
        plate_gamma=None,
        normalize=False,
        dtype=torch.float64,
        chunk=0,
        target_blocks=0,
        workspace=False,
        coef="f64",
    ):
        npd = np.float64 if dtype == torch.float64 else np.float32
        p, pos = self._arr(points, npd), self._arr(positive, npd)
        neg = None if negative is None else self._arr(negative, npd)
        out = np.full_like(p, np.nan)
        b, width = p.shape
        kw = ifm.fields.coulomb_kernel_args(
            width, two_plates=neg is not None, plate_gamma=plate_gamma, normalize=normalize
        )
        gamma = kw["plate_gamma"]
        rc = self.lib.ifm_emu_coulomb_field(
            int(npd == np.float64),
            p.ctypes.data,
            b,
            pos.ctypes.data,
            pos.shape[0],
            None if neg is None else neg.ctypes.data,
            0 if neg is None else neg.shape[0],
            width - 1,
            int(gamma is not None),
            gamma or 0.0,
            kw["sum_eps"],
            int(kw["normalize"]),
            kw["norm_scale"],
            kw["eps"],
            out.ctypes.data,
            chunk,
            target_blocks,
            int(workspace),
            _coef_flag(coef),
        )
        self._check(rc, "coulomb_field")
        return torch.from_numpy(out)

    def coulomb_plate_partial(self, points, charges, *, dtype=torch.float64, chunk=0, coef="f64"):
        """``(field, lognorm)`` of the launcher ``coulomb_plate_partial``."""
        npd = np.float64 if dtype == torch.float64 else np.float32
        p, c = self._arr(points, npd), self._arr(charges, npd)
        out = np.full_like(p, np.nan)
        lognorm = np.full((p.shape[0], 2), np.nan)
        rc = self.lib.ifm_emu_coulomb_plate_partial(
            int(npd == np.float64),
            p.ctypes.data,
            p.shape[0],
            c.ctypes.data,
            c.shape[0],
            p.shape[1] - 1,
            out.ctypes.data,
            lognorm.ctypes.data,
            chunk,
            _coef_flag(coef),
        )
        self._check(rc, "coulomb_plate_partial")
        return torch.from_numpy(out), torch.from_numpy(lognorm)


SCHEDULES = dict(forward=0, reverse=1, random=2, mixed=3)


def _coef_flag(coef: str) -> int:
    """Tuning::coef_f32 of the emulated launch: "f64" the double coefficient path (float64 data,
    fast-FP64 GPUs), "f32" the float32 coefficient path (float32 data on slow-FP64 GPUs; float64
    data ignores it)."""
    assert coef in ("f64", "f32"), coef
    return int(coef == "f32")


def _build_emulation(out, source, extra_flags=()):
    """g++ build of an emulated .cu translation unit as a shared library (IFM_EMU_CXXFLAGS adds
    flags, e.g. the sanitizers of scripts/check_sanitizers.sh)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    cmd = [
        cxx,
        "-std=c++17",
        "-O2",
        "-Wall",
        "-Wno-unknown-pragmas",
        "-U_FORTIFY_SOURCE",
        "-shared",
        "-fPIC",
        *extra_flags,
        *os.environ.get("IFM_EMU_CXXFLAGS", "").split(),
        "-DIFM_CUDA_EMULATION",
        "-include",
        str(ROOT / "tests/cuda_emu/cuda_emu.h"),
        "-x",
        "c++",
        str(source),
        "-o",
        str(out),
    ]
    # the compiler runs without the sanitizer runtimes the test process may have preloaded
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"building the CUDA emulation failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    lib = tmp_path_factory.mktemp("cuda_emu") / "libifm_cuda_emu.so"
    return _Emulated(_build_emulation(lib, ROOT / "tests/cuda_emu/capi.cpp"))


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
@pytest.mark.parametrize("name", golden_names())
def test_emulated_golden(emu, name, dtype, coef):
    kind, inputs, params, oracle, field = _golden_case(name)
    if kind == "string":
        out = emu.string_field(*inputs, **params, dtype=dtype, coef=coef)
    else:
        out = emu.coulomb_field(*inputs, **params, dtype=dtype, coef=coef)
    assert_parity(out, oracle, field, what=f"{name}/emulated-cuda/{dtype}/coef-{coef}")


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
@pytest.mark.parametrize("mode", STRING_MODES, ids=STRING_MODE_IDS)
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
@pytest.mark.parametrize("shape", EMU_STRING_SIZES, ids=lambda s: "b{}-B{}-D{}".format(*s))
def test_emulated_string_random(emu, shape, geometry, mode, dtype, coef):
    points, quarks, antiquarks, params = string_case(*shape, geometry, seed=sum(shape))
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, mode)
    out = emu.string_field(points, quarks, antiquarks, **params, **mode, dtype=dtype, coef=coef)
    assert_parity(out, oracle, standin, what=f"emulated string {shape} {geometry} {mode} {coef}")


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
@pytest.mark.parametrize("plates", [1, 2])
@pytest.mark.parametrize("mode", COULOMB_MODES, ids=COULOMB_MODE_IDS)
@pytest.mark.parametrize("shape", COULOMB_SIZES, ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s))
def test_emulated_coulomb_random(emu, shape, mode, plates, dtype, coef):
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=sum(shape))
    neg = neg if plates == 2 else None
    oracle, standin = _coulomb_oracles(points, pos, neg, mode)
    out = emu.coulomb_field(points, pos, neg, **mode, dtype=dtype, coef=coef)
    assert_parity(
        out, oracle, standin, what=f"emulated coulomb {shape} {mode} plates={plates} {coef}"
    )


def _check_plate_partial(emu, points, pos, dtype, coef, chunk=0):
    """The partial launcher against the float64 oracle: the field by the parity rule (float64:
    1e-9), the log-normalisers (max logit, log-sum-exp) within float64 rounding, or for float32
    data within DIM * 2^-17 (the logits amplify the float rounding of d2 by DIM / 2), computed
    on the float32-rounded inputs the launcher sees."""
    from ifm import distributed

    if dtype == torch.float32:
        points, pos = points.float().double(), pos.float().double()
    field, lognorm = emu.coulomb_plate_partial(points, pos, dtype=dtype, chunk=chunk, coef=coef)
    want = reference.coulomb_field(points, pos, None, plate_gamma=None, sum_eps=0.0)
    m, lse = distributed._coulomb_lognorm(points, pos)
    if dtype == torch.float64:
        torch.testing.assert_close(field, want, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(lognorm, torch.stack([m, lse], 1), rtol=1e-12, atol=1e-9)
        return
    standin = reference.coulomb_field(
        points.float(), pos.float(), None, plate_gamma=None, sum_eps=0.0
    )
    assert_parity(field, want, standin, what=f"emulated plate partial {coef}")
    tol = points.shape[1] * 2.0**-17
    torch.testing.assert_close(lognorm, torch.stack([m, lse], 1), rtol=0.0, atol=tol)


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
@pytest.mark.parametrize("chunk", [0, 40], ids=["one-chunk", "query-chunks"])
def test_emulated_coulomb_plate_partial(emu, chunk, dtype, coef):
    """The partial launcher: one plate's softmax-weighted mean and the float64 (max logit,
    log-sum-exp) per row (what ifm.distributed merges), also over several query chunks."""
    points, pos, _ = coulomb_case(9, 7, 3, 5, L=6.0, seed=8)
    _check_plate_partial(emu, points, pos, dtype, coef, chunk=chunk)


def _competing(y0, y1, dlam, dim):
    """A point off the axis of charges y0, y1 (at a quarter of their distance) whose logits
    -DIM log d differ by ``dlam`` (weights 1 : e^-dlam): its field moves with the logits'
    difference, d E / E ~ dlam-sized weights x their error."""
    delta = y1 - y0
    length = delta.norm()
    axis = delta / length
    side = torch.zeros_like(y0)
    side[1] = 1.0
    side -= (side @ axis) * axis
    side /= side.norm()
    h = 0.25 * length
    lo, hi = 0.0, 0.5 * float(length)  # the logit difference falls from > dlam to 0 on [0, L/2]
    for _ in range(200):
        t = 0.5 * (lo + hi)
        d0, d1 = t * t + h * h, (length - t) ** 2 + h * h
        lo, hi = (t, hi) if 0.5 * dim * torch.log(d1 / d0) > dlam else (lo, t)
    return y0 + lo * axis + h * side


def _image_coulomb_case(D=3071, b=12, Bp=40, Bn=24, seed=11, scale=1.0):
    """float64 Coulomb inputs at image dimension (DIM = D + 1 = 3072) with queries at many
    distances: on a charge, within 1e-6, 1e-4, 1e-2, 0.3 and 3 of one, between two charges whose
    logits differ by 0.7 to 3 (not multiples of 2^-10, where the float32 reference's logits would
    round to the exact difference; the softmax's accuracy shows), near the other plate and far from
    both (the logits span DIM * log(d_max / d_min), thousands); every coordinate times
    ``scale`` (|log d| and so the logits' own size grow with it)."""
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=100.0, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(b, D + 1, generator=g, dtype=torch.float64)
    noise /= noise.norm(dim=1, keepdim=True)
    points[0] = pos[3]
    for i, r in zip(range(1, 6), [1e-6, 1e-4, 1e-2, 0.3, 3.0], strict=True):
        points[i] = pos[i + 3] + r * noise[i]
    points[7] = neg[2] + 1e-3 * noise[7]
    points[8:10] *= 30.0  # far from both plates
    for i, (j, k, dlam) in zip(
        [6, 10, 11], [(0, 1, 0.7371), (10, 12, 1.3119), (13, 14, 3.0807)], strict=True
    ):
        points[i] = _competing(pos[j], pos[k], dlam, D + 1)
    return points * scale, pos * scale, neg * scale


@pytest.mark.parametrize("scale", [1.0, 100.0, 0.01])
def test_emulated_coulomb_image_dimension(emu, scale):
    """float32 data at DIM = 3072 under both coefficient paths, every mode and plate form and
    the partial op, by the parity rule; and the float32 path as accurate as the double one (per
    row within max(2e-4, 4 x its error)): its relative logits keep the softmax at float32
    accuracy where -DIM log(d) itself is ~1e4 (a float32 logit, as the float32 reference's,
    loses ~1e-3 there and fails this)."""
    points, pos, neg = _image_coulomb_case(scale=scale)
    points, pos, neg = (t.float().double() for t in (points, pos, neg))
    for plates in (1, 2):
        n = neg if plates == 2 else None
        for mode in COULOMB_MODES:
            oracle, standin = _coulomb_oracles(points, pos, n, mode)
            err = {}
            for coef in ("f64", "f32"):
                out = emu.coulomb_field(points, pos, n, **mode, dtype=torch.float32, coef=coef)
                what = f"emulated coulomb DIM 3072 x{scale} {mode} plates={plates} coef-{coef}"
                assert_parity(out, oracle, standin, what=what)
                err[coef] = row_errors(out, oracle)
            bad = err["f32"] > torch.clamp(4.0 * err["f64"], min=2e-4)
            assert not bad.any(), (
                f"{what}: rows {bad.nonzero().flatten().tolist()} err {err['f32'][bad].tolist()}"
                f" vs the double path's {err['f64'][bad].tolist()}"
            )
    for coef in ("f64", "f32"):
        _check_plate_partial(emu, points, pos, torch.float32, coef)


def _near_plate_string_case(geometry="cifar", B=20, D=40, seed=12):
    """float32-exact string inputs with queries within 1e-6 of a plate (tiny tube width s), on
    both sides, and at z = 1e-22, where 1 / (2 s^2) overflows float32 (inf) but not float64 and
    the query sits exactly on a degenerate pair (A = C) so that r^2 == 0: the float path must give
    exp(0), not 0 * inf."""
    points, quarks, antiquarks, params = string_case(12, B, D, geometry, seed=seed)
    L = params["L"]
    A, Cq = quarks[:, 1:], antiquarks[:, 1:]
    Cq[5] = A[5]  # a degenerate pair
    z = (
        torch.tensor(
            [
                1e-6,
                5e-7,
                1e-7,
                3e-7,
                1e-9,
                L - 2.0**-19 * 2,
                L - 2.0**-19,
                1e-22,
                4e-7,
                2e-6,
                1e-6,
                8e-7,
            ],
            dtype=torch.float64,
        )
        .float()
        .double()
    )
    idx = torch.arange(12) % B
    tau = (z / L)[:, None]
    x = (1 - tau) * A[idx] + tau * Cq[idx]
    x[7] = A[5]  # on the degenerate pair at z = 1e-22: r^2 == 0 exactly
    x[10] += 1e-5  # off the segment by more than s
    points = torch.cat([z[:, None], x], 1)
    quarks = torch.cat([quarks[:, :1], A], 1)
    antiquarks = torch.cat([antiquarks[:, :1], Cq], 1)
    return [t.float().double() for t in (points, quarks, antiquarks)], params


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
@pytest.mark.parametrize("mode", STRING_MODES, ids=STRING_MODE_IDS)
def test_emulated_string_near_plate(emu, mode, dtype, coef):
    """Queries within 1e-6 of a plate (s ~ 1e-8 and below; 1 / (2 s^2) = inf in float32 at
    z = 1e-22) under every path."""
    for geometry in ("cifar", "toy"):
        (points, quarks, antiquarks), params = _near_plate_string_case(geometry)
        oracle, standin = _string_oracles(points, quarks, antiquarks, params, mode)
        out = emu.string_field(points, quarks, antiquarks, **params, **mode, dtype=dtype, coef=coef)
        assert_parity(out, oracle, standin, what=f"emulated string near plate {geometry} {coef}")


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
def test_emulated_chunking_and_split_do_not_change_the_field(emu, dtype, coef):
    """Query chunks (tiny max_pairs_per_chunk), split-D slices (many target blocks) and a
    caller-given, misaligned workspace reproduce the default launch within rounding, and each
    configuration is bitwise reproducible."""
    points, quarks, antiquarks, params = string_case(20, 33, 1300, "w2s", seed=7)
    oracle, standin = _string_oracles(points, quarks, antiquarks, params, dict(normalize=True))
    configs = [
        dict(),
        dict(chunk=33 * 8, target_blocks=1),
        dict(target_blocks=10_000),
        dict(chunk=1, workspace=True),
    ]
    for cfg in configs:

        def run(cfg=cfg):
            return emu.string_field(
                points, quarks, antiquarks, **params, normalize=True, dtype=dtype, coef=coef, **cfg
            )

        out = run()
        assert torch.equal(out, run()), f"not reproducible with {cfg}"
        assert_parity(out, oracle, standin, what=f"emulated string {cfg}")
    pts, pos, neg = coulomb_case(20, 40, 20, 700, L=6.0, seed=8)
    mode = dict(plate_gamma=5.0, normalize=True)
    oracle, standin = _coulomb_oracles(pts, pos, neg, mode)
    for cfg in configs:
        out = emu.coulomb_field(pts, pos, neg, **mode, dtype=dtype, coef=coef, **cfg)
        assert_parity(out, oracle, standin, what=f"emulated coulomb {cfg}")


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
def test_emulated_schedules_agree(emu, dtype, coef):
    """Forward, reverse and seeded random thread orders between barriers give bitwise identical
    fields (rows with more than one block-wide chunk of pairs, so the compaction scan and its
    buffers are reused within a block)."""
    points, quarks, antiquarks, params = string_case(6, 300, 40, "cifar", seed=9)
    pts, pos, neg = coulomb_case(5, 290, 270, 20, L=6.0, seed=10)
    oracle_s, standin_s = _string_oracles(
        points, quarks, antiquarks, params, dict(normalize=True, stable=True)
    )
    cmode = dict(plate_gamma=5.0, normalize=True)
    oracle_c, standin_c = _coulomb_oracles(pts, pos, neg, cmode)
    results = {}
    try:
        for sched, seed in [
            ("forward", 1),
            ("reverse", 1),
            ("random", 1),
            ("random", 2),
            ("mixed", 3),
        ]:
            emu.schedule(sched, seed)
            results[sched, seed] = (
                emu.string_field(
                    points,
                    quarks,
                    antiquarks,
                    **params,
                    normalize=True,
                    stable=True,
                    dtype=dtype,
                    coef=coef,
                ),
                emu.coulomb_field(pts, pos, neg, **cmode, dtype=dtype, coef=coef),
            )
    finally:
        emu.schedule("mixed", 1)
    ((s0, c0),) = [results["forward", 1]]
    assert_parity(s0, oracle_s, standin_s, what="emulated string, forward schedule")
    assert_parity(c0, oracle_c, standin_c, what="emulated coulomb, forward schedule")
    for key, (s, c) in results.items():
        assert torch.equal(s, s0), f"string field differs between forward and {key} schedules"
        assert torch.equal(c, c0), f"coulomb field differs between forward and {key} schedules"


@pytest.mark.parametrize("dtype,coef", EMU_PRECISIONS, ids=EMU_PRECISION_IDS)
def test_emulated_long_rows(emu, dtype, coef):
    """Rows of more pairs than threads: the coefficient kernels give each thread runs of 4 or 16
    consecutive pairs (common.cuh coefficient_run; here a short last run of 4, and a second
    compaction step past 16 x 256 pairs), keep the parity rule and are bitwise the same under
    forward, reverse and random thread orders (the runs read scratch the compaction overwrites)."""
    cases = []
    for B, geometry in [(1001, "toy"), (4100, "cifar")]:
        points, quarks, antiquarks, params = string_case(3, B, 3, geometry, seed=B)
        mode = dict(normalize=True, stable=True)
        oracle, standin = _string_oracles(points, quarks, antiquarks, params, mode)

        def run_string(points=points, quarks=quarks, antiquarks=antiquarks, p=params, m=mode):
            return emu.string_field(points, quarks, antiquarks, **p, **m, dtype=dtype, coef=coef)

        cases.append((f"string B={B}", run_string, oracle, standin))
    pts, pos, neg = coulomb_case(3, 4100, 1001, 3, L=6.0, seed=11)
    cmode = dict(plate_gamma=5.0, normalize=True)
    oracle_c, standin_c = _coulomb_oracles(pts, pos, neg, cmode)

    def run_coulomb():
        return emu.coulomb_field(pts, pos, neg, **cmode, dtype=dtype, coef=coef)

    cases.append(("coulomb Bp=4100 Bn=1001", run_coulomb, oracle_c, standin_c))
    try:
        for what, run, oracle, standin in cases:
            emu.schedule("forward", 1)
            first = run()
            assert_parity(first, oracle, standin, what=f"emulated {what}")
            for sched, seed in [("reverse", 1), ("random", 5)]:
                emu.schedule(sched, seed)
                assert torch.equal(run(), first), f"{what}: forward and {sched} schedules differ"
    finally:
        emu.schedule("mixed", 1)


# (kernel of tests/cuda_emu/selftest.cpp, schedule, expected words of the report)
PLANTED = [
    (0, "reverse", "write/read race"),
    (1, "forward", "write/write race"),
    (2, "mixed", "uninitialised"),
    (3, "forward", "read/write race"),
    (3, "reverse", "write/read race"),
    (4, "mixed", "divergent __syncthreads"),
    (5, "mixed", "static shared memory"),
]


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    lib = tmp_path_factory.mktemp("cuda_emu_selftest") / "libifm_cuda_emu_selftest.so"
    lib = ctypes.CDLL(str(_build_emulation(lib, ROOT / "tests/cuda_emu/selftest.cpp")))
    lib.ifm_emu_selftest.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.ifm_emu_report.restype = ctypes.c_char_p
    lib.ifm_emu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
    return lib


def _run_planted(lib, which, defect, threads=0, blocks=1):
    out = np.zeros(2048, dtype=np.float32)
    rc = lib.ifm_emu_selftest(which, int(defect), out.ctypes.data, threads, blocks)
    report = lib.ifm_emu_report().decode()
    lib.ifm_emu_clear_report()
    return rc, report, out


@pytest.mark.parametrize(
    "which,sched,words", PLANTED, ids=[f"{k}-{s}-{w.split()[0]}" for k, s, w in PLANTED]
)
def test_emulator_reports_planted_defects(selftest, which, sched, words):
    """Each planted shared-memory / barrier defect is reported and fails the launch; the same
    kernel without the defect is clean."""
    selftest.ifm_emu_set_schedule(SCHEDULES[sched], 1)
    try:
        rc, report, _ = _run_planted(selftest, which, defect=False)
        assert rc == 0 and report == "", f"clean variant of kernel {which} reported:\n{report}"
        rc, report, _ = _run_planted(selftest, which, defect=True)
    finally:
        selftest.ifm_emu_set_schedule(SCHEDULES["mixed"], 1)
    assert rc != 0 and words in report, (
        f"kernel {which}: expected '{words}', got rc={rc}:\n{report}"
    )


def test_emulator_checks_launch_limits(selftest):
    for threads, blocks in [(1025, 1), (2048, 1), (128, 0)]:
        rc, report, _ = _run_planted(selftest, 4, defect=False, threads=threads, blocks=blocks)
        assert rc == 9 and "invalid launch configuration" in report, (threads, blocks, report)
    rc, report, _ = _run_planted(selftest, 4, defect=False, threads=1024, blocks=3)
    assert rc == 0 and report == ""


def test_emulator_schedules_expose_order_dependence(selftest):
    """A global-memory last-writer race gives different results under forward and reverse
    thread orders (the schedules are real), and the race-free variant does not."""
    outs = {}
    try:
        for defect in (False, True):
            for sched in ("forward", "reverse"):
                selftest.ifm_emu_set_schedule(SCHEDULES[sched], 1)
                outs[defect, sched] = _run_planted(selftest, 6, defect)[2][0]
    finally:
        selftest.ifm_emu_set_schedule(SCHEDULES["mixed"], 1)
    assert outs[False, "forward"] == outs[False, "reverse"] == 7.0
    assert outs[True, "forward"] != outs[True, "reverse"]
