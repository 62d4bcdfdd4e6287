"""Host overhead of the call path (no GPU needed), one pytest-benchmark group per question:

* ``api-string`` / ``api-coulomb``: a tiny call (b = B = 1, D = 1, float32, CPU) through
  ``ifm.fields`` beside the raw ``torch.ops.ifm.*`` op it ends in; the difference is the Python
  API's cost (target <= 15 us per call). ``fields-default`` runs the CPU value checks
  (check_finite=None), ``fields-unchecked`` passes ``check_finite=False`` (what a CUDA call does
  by default); ``check-op`` is the compiled value checker ``torch.ops.ifm.check_values`` alone on
  the same tensors (the part of ``fields-default`` that reads the values).
* ``triton-host-string`` / ``triton-host-coulomb2``: host time of one Triton call with its kernel
  launches stubbed (``ifm_kernels._introspect.record_launches`` with the H200 profile, 132 SMs): the
  plan (cached), the buffers and the launch arguments; the Triton binding of each launch on a
  GPU is not included. ``op-cpu`` calls ``torch.ops.ifm.*_triton`` (what ``ifm.fields`` calls),
  ``launcher-cpu`` the launcher function itself, both on CPU tensors (CPU allocations stand in
  for the CUDA caching allocator); ``make-plan`` is one uncached plan, the cost the cache saves.
  Targets: <= 15 us (string), <= 30 us (two-plate Coulomb), for ``op-cpu``.

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_overhead.py --benchmark-only``.
Self-contained (imports no helper of this directory); runs without ``TRITON_INTERPRET``.
"""

import math

import pytest
import torch

import ifm
from ifm import _checks, _ops

needs_ext = pytest.mark.skipif(
    not _ops.extension_loaded(), reason=f"ifm._C not built: {_ops.LOAD_ERROR}"
)

GEOMETRY = dict(L=2.0, sigma0=1.0, K=2.0)
H200_SMS = 132
SHAPES = {"toy": (256, 256, 2), "cifar": (128, 128, 3072)}  # (b, B, D)


def _tiny():
    p = torch.tensor([[1.0, 0.5]])
    q = torch.tensor([[0.0, 0.1]])
    a = torch.tensor([[GEOMETRY["L"], 0.3]])
    return p, q, a


def _per_call_us(benchmark):
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    if stats is not None:
        benchmark.extra_info["min_us"] = stats.min * 1e6
        benchmark.extra_info["median_us"] = stats.median * 1e6


def _check_op(benchmark, tensors, plate_z):
    op = _checks._check_op()
    if op is None:
        pytest.skip("ifm._C built without ifm::check_values")
    bound = _checks.magnitude_bound(tensors[0].dtype, tensors[0].shape[1])
    assert op(tensors, bound, plate_z) == 0
    benchmark(op, tensors, bound, plate_z)


@needs_ext
@pytest.mark.parametrize("path", ["raw-op", "fields-default", "fields-unchecked", "check-op"])
def test_api_string(benchmark, path):
    benchmark.group = "api-string"
    p, q, a = _tiny()
    width = p.shape[1]
    if path == "check-op":
        _check_op(benchmark, [p, q, a], [_checks.NO_PLATE, 0.0, GEOMETRY["L"]])
    elif path == "raw-op":
        kw = ifm.fields.string_kernel_args(width)
        op = torch.ops.ifm.string_field.default
        args = _string_op_args(p, q, a, kw)
        benchmark(op, *args)
    else:
        extra = {} if path == "fields-default" else dict(check_finite=False)
        benchmark(ifm.fields.string_field, p, q, a, **GEOMETRY, **extra)
    _per_call_us(benchmark)


@needs_ext
@pytest.mark.parametrize("path", ["raw-op", "fields-default", "fields-unchecked", "check-op"])
def test_api_coulomb(benchmark, path):
    benchmark.group = "api-coulomb"
    p, q, a = _tiny()
    if path == "check-op":
        _check_op(benchmark, [p, q, a], [_checks.NO_PLATE, 0.0, _checks.PLATE_AT_ROW_0])
    elif path == "raw-op":
        kw = ifm.fields.coulomb_kernel_args(p.shape[1], two_plates=True)
        op = torch.ops.ifm.coulomb_field.default
        benchmark(
            op,
            p,
            q,
            a,
            kw["plate_gamma"],
            kw["sum_eps"],
            kw["normalize"],
            kw["norm_scale"],
            kw["eps"],
        )
    else:
        extra = {} if path == "fields-default" else dict(check_finite=False)
        benchmark(ifm.fields.coulomb_field, p, q, a, **extra)
    _per_call_us(benchmark)


# --------------------------------------------------------------------------------------------
# Triton host time with stubbed launches
# --------------------------------------------------------------------------------------------
def _triton():
    return pytest.importorskip("ifm_kernels")


def _tensors(shape, device):
    b, B, D = shape
    g = torch.Generator().manual_seed(0)
    p = torch.rand(b, D + 1, generator=g)
    q = torch.randn(B, D + 1, generator=g)
    q[:, 0] = 0
    a = torch.randn(B, D + 1, generator=g)
    a[:, 0] = GEOMETRY["L"]
    return p.to(device), q.to(device), a.to(device)


def _string_op_args(p, q, a, kw):
    """Positional arguments of the ``ifm::string_field`` schema (also the Triton op's)."""
    g = GEOMETRY
    d = math.pi / (2 * g["K"])
    return (
        p,
        q,
        a,
        g["L"],
        g["sigma0"],
        g["K"],
        d,
        False,
        kw["normalize"],
        kw["norm_scale"],
        kw["eps"],
    )


def _stubbed(benchmark, call):
    from ifm_kernels import _introspect, _plan

    with _introspect.record_launches(_plan.gpu_profile(H200_SMS)) as launches:

        def run():
            call()
            launches.clear()

        benchmark(run)
        call()
        benchmark.extra_info["launches"] = len(launches)
        launches.clear()
    _per_call_us(benchmark)


@pytest.mark.parametrize("path", ["launcher-cpu", "op-cpu", "make-plan"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_triton_host_string(benchmark, shape, path):
    kernels = _triton()
    from ifm_kernels import _plan

    benchmark.group = f"triton-host-string-{shape}"
    p, q, a = _tensors(SHAPES[shape], "cpu")
    width = p.shape[1]
    kw = ifm.fields.string_kernel_args(width, normalize=True)
    d = math.pi / (2 * GEOMETRY["K"])
    if path == "make-plan":
        b, B, D = SHAPES[shape]
        profile = _plan.gpu_profile(H200_SMS)
        benchmark(_plan.make_plan, b, B, D, width, profile, 4, string=True)
        _per_call_us(benchmark)
        return
    if path == "launcher-cpu":

        def call():
            kernels.string_field(p, q, a, d=d, stable=False, **GEOMETRY, **kw)
    else:
        op = torch.ops.ifm.string_field_triton.default
        args = _string_op_args(p, q, a, kw)

        def call():
            op(*args)

    _stubbed(benchmark, call)


@pytest.mark.parametrize("path", ["launcher-cpu", "op-cpu", "make-plan"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_triton_host_coulomb2(benchmark, shape, path):
    kernels = _triton()
    from ifm_kernels import _plan

    benchmark.group = f"triton-host-coulomb2-{shape}"
    p, pos, neg = _tensors(SHAPES[shape], "cpu")
    kw = ifm.fields.coulomb_kernel_args(p.shape[1], two_plates=True, normalize=True)
    if path == "make-plan":
        b, B, D = SHAPES[shape]
        profile = _plan.gpu_profile(H200_SMS)
        benchmark(_plan.make_plan, b, B, D + 1, D + 1, profile, 4)
        _per_call_us(benchmark)
        return
    if path == "launcher-cpu":

        def call():
            kernels.coulomb_field(p, pos, neg, **kw)
    else:
        op = torch.ops.ifm.coulomb_field_triton.default

        def call():
            op(
                p,
                pos,
                neg,
                kw["plate_gamma"],
                kw["sum_eps"],
                kw["normalize"],
                kw["norm_scale"],
                kw["eps"],
            )

    _stubbed(benchmark, call)
