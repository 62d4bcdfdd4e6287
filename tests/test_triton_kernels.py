"""Triton-specific tests of ``ifm_kernels``: the launch plan derived from the shapes, launch
counts, edge sizes (b = 1, B = 1, sizes that are not multiples of the blocks, D up to 49152 with
tiny b and B), the GPU code paths (several column slices, many tiles, the H100 and A100 plans
themselves) run under the interpreter, the live-block lists of the sums pass, determinism, the
constants of the field_math.h mirror against the header, and an offline compile of every kernel
for sm_80 and sm_90.

The launchers are called directly (the public API's parity is tests/test_fields_parity.py).
Without a GPU, tests/conftest.py turns Triton's interpreter on; shapes stay small there.
"""

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

from cases import coulomb_case, string_case  # noqa: E402
from parity import assert_parity  # noqa: E402

import ifm  # noqa: E402
import ifm_kernels  # noqa: E402
from ifm import reference  # noqa: E402
from ifm_kernels import _field_math as fm  # noqa: E402
from ifm_kernels import _introspect, _launch  # noqa: E402
from ifm_kernels import _plan as P  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float64]
H100 = P.gpu_profile(132)
A100 = P.gpu_profile(108)
RTX4090 = P.gpu_profile(128, fast_fp64=False)  # float32 data: the float32 coefficient pass

# published shapes (FIELDS.md tables): (name, b, B, ncols) with ncols = D (string) or D + 1
PUBLISHED = [
    ("string toy", 1024, 4096, 2),
    ("string CIFAR", 64, 256, 3072),
    ("string W2S", 64, 256, 12288),
    ("string CelebA-64", 64, 64, 12288),
    ("string CelebA-128", 64, 64, 49152),
    ("string CMNIST", 128, 128, 3072),
    ("coulomb EFM-CIFAR", 64, 1024, 3073),
    ("coulomb PFGM", 128, 4096, 3073),
    ("coulomb toy", 1024, 4096, 3),
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _string(points, quarks, antiquarks, params, dtype, stable=False, normalize=False):
    args = [t.to(DEVICE, dtype) for t in (points, quarks, antiquarks)]
    return ifm_kernels.string_field(
        *args,
        **params,
        d=math.pi / (2 * params["K"]),
        stable=stable,
        **ifm.fields.string_kernel_args(points.shape[1], normalize=normalize),
    )


def check_string(points, quarks, antiquarks, params, dtype, **mode):
    oracle = reference.string_field(points, quarks, antiquarks, **params, **mode)
    standin = reference.string_field(
        points.float(), quarks.float(), antiquarks.float(), **params, **mode
    )
    out = _string(points, quarks, antiquarks, params, dtype, **mode)
    assert out.dtype == dtype and out.shape == points.shape
    assert_parity(out, oracle, standin, what=f"triton string {tuple(points.shape)} {mode}")
    return out


def check_coulomb(points, pos, neg, dtype, plate_gamma=None, normalize=False, sum_eps=0.0):
    kw = ifm.fields.coulomb_kernel_args(
        points.shape[1], two_plates=neg is not None, plate_gamma=plate_gamma, normalize=normalize
    )
    kw["sum_eps"] = sum_eps  # the raw sum's epsilon on its own (PFGM adds it to the weights)
    oracle = reference.coulomb_field(points, pos, neg, **kw)
    standin = reference.coulomb_field(
        points.float(), pos.float(), None if neg is None else neg.float(), **kw
    )
    on = [None if t is None else t.to(DEVICE, dtype) for t in (points, pos, neg)]
    out = ifm_kernels.coulomb_field(*on, **kw)
    assert out.dtype == dtype and out.shape == points.shape
    assert_parity(out, oracle, standin, what=f"triton coulomb {tuple(points.shape)}")
    return out


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


def _record_string(b, B, D, profile=H100, dtype=torch.float32, normalize=True):
    with _introspect.record_launches(profile) as rec:
        ifm_kernels.string_field(
            _meta(b, D + 1, dtype=dtype),
            _meta(B, D + 1, dtype=dtype),
            _meta(B, D + 1, dtype=dtype),
            L=20.0,
            sigma0=1.0,
            K=math.pi / 20,
            d=10.0,
            stable=False,
            normalize=normalize,
            norm_scale=1.0,
            eps=1e-5,
        )
    return rec


def _record_coulomb(b, Bp, Bn, D, profile=H100, plate_gamma=5.0, normalize=False):
    with _introspect.record_launches(profile) as rec:
        ifm_kernels.coulomb_field(
            _meta(b, D + 1),
            _meta(Bp, D + 1),
            None if Bn is None else _meta(Bn, D + 1),
            plate_gamma=plate_gamma,
            sum_eps=0.0,
            normalize=normalize,
            norm_scale=1.0,
            eps=1e-5,
        )
    return rec


# ----------------------------------------------------------------------------------------------
# launch plan
# ----------------------------------------------------------------------------------------------
def _pow2(v):
    return v >= 1 and (v & (v - 1)) == 0


@pytest.mark.parametrize(
    "profile",
    [H100, A100, RTX4090, P.INTERPRETER_PROFILE],
    ids=["H100", "A100", "RTX4090", "interpreter"],
)
@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize(
    "case",
    PUBLISHED + [("tiny", 1, 1, 1), ("odd", 37, 5, 123), ("tall", 2, 3, 49152)],
    ids=lambda c: c[0],
)
def test_plan_derivation(case, profile, itemsize):
    """Block sizes are powers of two within the profile's caps and budget, grids cover the
    shapes, column slices tile the columns, and the partial buffer stays O(b B)."""
    name, b, B, ncols = case
    string = not name.startswith("coulomb")
    p = P.make_plan(b, B, ncols, ncols + 1, profile, itemsize, string=string)
    dist_budget = (
        profile.dist_tile_bytes if string else profile.coulomb_dist_tile_bytes
    ) // itemsize
    sums_budget = profile.sums_tile_bytes // itemsize
    sizes = [
        p.dist_bi,
        p.dist_bj,
        p.dist_bk,
        p.coef_br,
        p.coef_bj,
        p.sums_bi,
        p.sums_bj,
        p.sums_bk,
        p.fin_br,
        p.fin_bw,
    ]
    assert all(_pow2(v) for v in sizes), sizes
    if string:
        assert p.dist_bi <= profile.dist_bi_max and p.dist_bj <= profile.dist_bj_max
    else:
        assert p.dist_bi <= profile.coulomb_dist_bi_max
        assert p.dist_bj <= profile.coulomb_dist_bj_max
    assert p.dist_bi * p.dist_bj * p.dist_bk <= max(dist_budget, p.dist_bi * p.dist_bj)
    assert p.sums_bi * p.sums_bj * p.sums_bk <= max(sums_budget, p.sums_bi * p.sums_bk)
    assert p.sums_bk <= profile.sums_bk_max and p.sums_bi <= profile.sums_rows_cap(itemsize)
    assert p.sums_bj <= profile.sums_bj_max
    # the coefficient pass owns whole row blocks of the sums pass and whole pair blocks
    assert p.coef_br == p.sums_bi and p.coef_bj % p.sums_bj == 0
    assert p.coef_bj <= max(profile.row_budget // p.coef_br, p.sums_bj)
    assert p.sums_blocks == triton.cdiv(B, p.sums_bj)
    assert p.coef_chunk_len % p.coef_bj == 0 and p.seg_len * p.sums_bj == p.coef_chunk_len
    assert p.coef_chunks * p.coef_chunk_len >= B > (p.coef_chunks - 1) * p.coef_chunk_len
    assert p.list_stride == p.coef_chunks * p.seg_len
    # never more than needed: a block is at most the next power of two of its extent
    assert p.dist_bi <= P.next_pow2(b) and p.dist_bj <= P.next_pow2(B)
    assert p.dist_bk <= P.next_pow2(ncols) and p.sums_bk <= P.next_pow2(ncols)
    # grids cover the shapes
    tiles = triton.cdiv(b, p.dist_bi) * triton.cdiv(B, p.dist_bj)
    assert p.dist_grid == (tiles, p.nslices)
    assert p.cols_per_slice % p.dist_bk == 0
    assert p.nslices * p.cols_per_slice >= ncols > (p.nslices - 1) * p.cols_per_slice
    assert p.sums_tiles[0] * p.sums_bi >= b and p.sums_tiles[1] * p.sums_bk >= ncols
    assert p.sums_grid[0] == p.sums_tiles[0] and p.sums_grid[1] <= 65535
    assert 0 <= p.sums_grid[1] * p.sums_grid[2] - p.sums_tiles[1] < p.sums_grid[1]
    assert p.coef_grid == (p.sums_tiles[0], p.coef_chunks) and p.fin_grid[0] * p.fin_br >= b
    # D is split only to fill the device: at most 16 waves of programs, partial buffer O(b B)
    assert p.nslices == 1 or tiles * p.nslices <= 16 * profile.slots
    steps = triton.cdiv(ncols, p.dist_bk)
    assert p.nslices <= max(1, steps // profile.min_steps_per_slice)
    if profile is P.INTERPRETER_PROFILE:
        assert p.nslices == 1


@pytest.mark.parametrize("profile", [H100, A100], ids=["H100", "A100"])
@pytest.mark.parametrize("case", PUBLISHED[1:8], ids=lambda c: c[0])
def test_plan_fills_whole_waves(case, profile):
    """At the image shapes pass 1 launches whole waves: the most loaded SM's time
    (``_plan.sm_cost``) is within 12 % of the work spread evenly over the SMs (the
    ``S = ceil(target / tiles)`` rule left 544 programs on 528 slots: 1.45x)."""
    name, b, B, ncols = case
    p = P.make_plan(b, B, ncols, ncols + 1, profile, 4, string=name.startswith("string"))
    progs = p.dist_grid[0] * p.dist_grid[1]
    work = p.cols_per_slice // p.dist_bk
    even = progs * work / profile.sm_count
    assert P.sm_cost(progs, work, profile) <= 1.12 * max(even, work * profile.resident), (
        progs,
        work,
    )


def test_plan_examples_h100():
    """The configurations BENCHMARKS.md's GPU section shows for two published shapes."""
    p = P.make_plan(64, 256, 3072, 3073, H100, 4, string=True)  # string CIFAR
    assert (p.dist_bi, p.dist_bj, p.dist_bk) == (16, 32, 8)
    assert p.dist_grid[0] * p.dist_grid[1] == 512  # one wave of 528 slots
    p = P.make_plan(64, 64, 49152, 49153, H100, 4, string=True)  # string CelebA-128
    assert p.nslices > 1 and p.dist_grid[0] * p.dist_grid[1] <= H100.slots


@pytest.mark.parametrize("string", [True, False])
@pytest.mark.parametrize("D", [2**20, 3 * 1024 * 1024, 2**24])
def test_plan_grids_fit_cuda_limits(D, string):
    """Every launch's grid fits CUDA's limits (axis 0 < 2^31, axes 1 and 2 <= 65535) up to
    D = 16M: past D ~ 1M the sums pass's column blocks are sliced along axis 2."""
    for profile in (H100, A100, RTX4090):
        for b, B in ((64, 64), (1, 2), (128, 4096)):
            p = P.make_plan(b, B, D + (0 if string else 1), D + 1, profile, 4, string=string)
            for grid in (p.dist_grid, p.coef_grid, p.sums_grid, p.fin_grid):
                assert grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), (grid, b, B)


@pytest.mark.parametrize("normalize", [False, True])
def test_string_launch_count(normalize):
    rec = _record_string(64, 256, 3072, normalize=normalize)
    names = [r.name for r in rec]
    assert names == [
        "distance_kernel",
        "string_stats_kernel",
        "string_coeff_kernel",
        "pair_sums_kernel",
    ] + (["finalize_kernel"] if normalize else [])


@pytest.mark.parametrize(
    "Bn,plate_gamma,normalize,count",
    [
        (None, None, False, 4),
        (None, None, True, 5),
        (None, 5.0, False, 5),
        (1024, None, False, 9),
        (1024, 5.0, True, 9),
    ],
)
def test_coulomb_launch_count(Bn, plate_gamma, normalize, count):
    rec = _record_coulomb(64, 1024, Bn, 3072, plate_gamma=plate_gamma, normalize=normalize)
    assert len(rec) == count
    fin = [r for r in rec if r.name == "finalize_kernel"]
    if fin:
        assert fin[0].constexprs["HAS_NEG"] == (Bn is not None)
        assert fin[0].constexprs["PLATE_NORM"] == (plate_gamma is not None)


def test_recorded_grids_match_plan():
    rec = _record_string(37, 5, 123)
    p = P.make_plan(37, 5, 123, 124, H100, 4, string=True)
    assert [r.grid for r in rec] == [p.dist_grid, p.coef_grid, p.coef_grid, p.sums_grid, p.fin_grid]
    assert all(r.num_warps == H100.num_warps for r in rec)


# ----------------------------------------------------------------------------------------------
# edge sizes against the float64 reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (1, 7, 33), (9, 1, 17), (1, 1, 300), (19, 13, 5)],
    ids=lambda s: "b{}-B{}-D{}".format(*s),
)
def test_string_edge_sizes(shape, dtype):
    points, quarks, antiquarks, params = string_case(*shape, "cifar", seed=sum(shape))
    for mode in (dict(stable=False, normalize=False), dict(stable=True, normalize=True)):
        check_string(points, quarks, antiquarks, params, dtype, **mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1), (1, 9, 1, 40), (11, 1, 3, 17), (3, 2, 5, 300)],
    ids=lambda s: "b{}-Bp{}-Bn{}-D{}".format(*s),
)
def test_coulomb_edge_sizes(shape, dtype):
    b, Bp, Bn, D = shape
    points, pos, neg = coulomb_case(b, Bp, Bn, D, L=6.0, seed=b + D)
    check_coulomb(points, pos, neg, dtype, plate_gamma=5.0, normalize=True)
    check_coulomb(points, pos, None, dtype, sum_eps=ifm.fields.PFGM_SUM_EPS)


@pytest.mark.parametrize("D", [4099, 49152])
def test_large_D_tiny_batch(D):
    """Image dimension up to CelebA-128 (D = 49152) with b, B tiny: tiles over D."""
    points, quarks, antiquarks, params = string_case(3, 2, D, "w2s", seed=D)
    check_string(points, quarks, antiquarks, params, torch.float32)
    check_string(points, quarks, antiquarks, params, torch.float32, stable=True, normalize=True)
    points, pos, neg = coulomb_case(3, 2, 2, D, L=20.0, seed=D)
    check_coulomb(points, pos, neg, torch.float32, plate_gamma=5.0)


def test_query_on_a_charge_keeps_the_other_charges():
    """The skip test compares contributions, not weights: a query sitting on a charge (whose term
    y - x is 0 however large its weight) still gets the other charges' (tiny) field."""
    points, pos, _ = coulomb_case(7, 5, 3, 2, L=6.0, seed=9)
    out = check_coulomb(points, pos, None, torch.float32)
    assert out[1].double().norm() > 0


# ----------------------------------------------------------------------------------------------
# GPU code paths under the interpreter: many tiles, several column slices, BI halving
# ----------------------------------------------------------------------------------------------
SMALL_GPU_LIKE = P.Profile(
    "gpu",
    sm_count=4,
    resident=4,
    dist_tile_bytes=256,
    sums_tile_bytes=256,
    row_budget=16,
    dist_bi_max=4,
    dist_bj_max=4,
    coulomb_dist_tile_bytes=256,
    coulomb_dist_bi_max=4,
    coulomb_dist_bj_max=4,
    sums_bi_max=4,
    sums_bj_max=4,
    sums_bk_max=8,
    min_steps_per_slice=1,
    num_warps=1,
)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_small_blocks_many_programs(monkeypatch, dtype):
    """Force a GPU-like plan with tiny blocks (several slices, partial tiles everywhere)."""
    monkeypatch.setattr(_launch, "device_profile", lambda device: SMALL_GPU_LIKE)
    plan = P.make_plan(
        6, 5, 21, 22, SMALL_GPU_LIKE, torch.tensor([], dtype=dtype).element_size(), string=True
    )
    assert plan.nslices > 1 and plan.dist_grid[0] > 1 and plan.sums_tiles[1] > 1
    points, quarks, antiquarks, params = string_case(6, 5, 21, "cmnist", seed=4)
    check_string(points, quarks, antiquarks, params, dtype, stable=True, normalize=True)
    check_string(points, quarks, antiquarks, params, dtype)
    points, pos, neg = coulomb_case(6, 5, 3, 20, L=6.0, seed=4)
    check_coulomb(points, pos, neg, dtype, plate_gamma=1e-7, normalize=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sums_column_blocks_in_slices(monkeypatch, dtype):
    """Past CUDA's 65535 blocks on axis 1 (D ~ 1M) the sums pass's column blocks go in slices
    along axis 2; here forced at small D by a limit of 2 (an odd number of column blocks: the
    last slice's second program is past the end)."""
    import importlib

    mods = [importlib.import_module(f"ifm_kernels.{m}") for m in ("string_field", "coulomb_field")]
    caches = [m._cached_plan for m in mods]
    monkeypatch.setattr(_launch, "device_profile", lambda device: SMALL_GPU_LIKE)
    monkeypatch.setattr(P, "GRID_YZ_MAX", 2)
    for c in caches:
        c.cache_clear()
    try:
        size = torch.tensor([], dtype=dtype).element_size()
        plan = P.make_plan(6, 5, 21, 22, SMALL_GPU_LIKE, size, string=True)
        tk = plan.sums_tiles[1]
        assert tk % 2 == 1 and plan.sums_grid[1:] == (2, (tk + 1) // 2)  # one program past
        points, quarks, antiquarks, params = string_case(6, 5, 21, "cmnist", seed=4)
        check_string(points, quarks, antiquarks, params, dtype, stable=True, normalize=True)
        check_string(points, quarks, antiquarks, params, dtype)
        points, pos, neg = coulomb_case(6, 5, 3, 20, L=6.0, seed=4)
        check_coulomb(points, pos, neg, dtype, plate_gamma=1e-7, normalize=True)
    finally:
        for c in caches:
            c.cache_clear()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("profile", [H100, A100, RTX4090], ids=["H100", "A100", "RTX4090"])
def test_real_gpu_plans_under_the_interpreter(monkeypatch, profile, dtype):
    """The H100, A100 and RTX 4090 plans themselves (their block sizes, slices, live-block
    lists; the RTX 4090's float32 coefficient pass), not only the interpreter's, on small shapes
    that still give several tiles and partial blocks."""
    monkeypatch.setattr(_launch, "device_profile", lambda device: profile)
    plan = P.make_plan(
        10, 70, 20, 21, profile, torch.tensor([], dtype=dtype).element_size(), string=True
    )
    assert plan.dist_grid[0] > 1 and plan.sums_tiles[0] > 1 and plan.sums_blocks > 1
    points, quarks, antiquarks, params = string_case(10, 70, 20, "cifar", seed=5)
    check_string(points, quarks, antiquarks, params, dtype, stable=True, normalize=True)
    points, pos, neg = coulomb_case(10, 70, 21, 20, L=20.0, seed=5)
    check_coulomb(points, pos, neg, dtype, plate_gamma=5.0, normalize=True)


def test_fp64_capability_rule():
    """Float32 data gets the float32 coefficient pass exactly on GPUs without fast float64."""
    assert P.fast_fp64(9, 0) and P.fast_fp64(8, 0) and P.fast_fp64(7, 0)
    assert not any(P.fast_fp64(*cc) for cc in [(7, 5), (8, 6), (8, 9), (12, 0), (8, 7)])
    for profile, f32 in [(H100, False), (A100, False), (RTX4090, True)]:
        assert P.make_plan(64, 256, 3072, 3073, profile, 4).coef_f32 is f32
        assert P.make_plan(64, 256, 3072, 3073, profile, 8).coef_f32 is False
    assert not P.make_plan(64, 256, 3072, 3073, P.INTERPRETER_PROFILE, 4).coef_f32


def _with_profile(monkeypatch, profile, fn):
    monkeypatch.setattr(_launch, "device_profile", lambda device: profile)
    try:
        return fn()
    finally:
        monkeypatch.undo()


def _row_error(out, want):
    out, want = out.double().cpu(), want.double().cpu()
    norm = want.norm(dim=1)
    return ((out - want).norm(dim=1) / torch.where(norm > 0, norm, 1.0)).max().item()


def _fp64_profiles():
    """This device's plan profile with fast float64 (the float64 coefficient pass for float32
    data) and without (the float32 pass)."""
    base = _launch.device_profile(torch.device(DEVICE))
    return (
        dataclasses.replace(base, fast_fp64=True),
        dataclasses.replace(base, fast_fp64=False),
    )


@pytest.mark.parametrize("D", [200, 3072])
@pytest.mark.parametrize("plates", [1, 2])
def test_f32_coulomb_coefficients_track_the_f64_pass(monkeypatch, D, plates):
    """The float32 coefficient pass against the float64 one on the same float32 data (same
    float32 partial distances): it adds ~1e-7 per row. Queries near the segment between the
    plates at image dimension, where logits -DIM log(d) taken in float32 would move the
    weights by ~DIM eps (~3e-5; the parity rule's stand-in is no tighter there, so this test,
    not the parity suite, guards the relative-logit form)."""
    g = torch.Generator().manual_seed(2)
    _, pos, neg = coulomb_case(1, 64, 64, D, L=20.0, seed=1)
    t = torch.rand(12, 1, generator=g, dtype=torch.float64)
    points = (1 - t) * pos[:12] + t * neg[:12] + 0.05 * torch.randn(12, D + 1, generator=g)
    points[0] = pos[3]  # on a charge
    two = plates == 2
    kw = ifm.fields.coulomb_kernel_args(
        D + 1, two_plates=two, plate_gamma=5.0 if two else None, normalize=not two
    )
    args = [x.to(DEVICE, torch.float32) for x in (points, pos, neg)]
    if not two:
        args[2] = None
        kw["sum_eps"] = 1e-7

    def call():
        return ifm_kernels.coulomb_field(*args, **kw)

    fast, slow = _fp64_profiles()
    f32 = _with_profile(monkeypatch, slow, call)
    f64 = _with_profile(monkeypatch, fast, call)
    assert _row_error(f32, f64) < 1e-6
    if not two:
        part = torch.ops.ifm.coulomb_plate_partial_triton
        (e32, ln32) = _with_profile(monkeypatch, slow, lambda: part(*args[:2]))
        (e64, ln64) = _with_profile(monkeypatch, fast, lambda: part(*args[:2]))
        assert _row_error(e32, e64) < 1e-6
        torch.testing.assert_close(ln32, ln64, rtol=1e-7, atol=0)


@pytest.mark.parametrize("stable", [False, True], ids=["default", "stable"])
@pytest.mark.parametrize("geometry", ["toy", "cifar", "w2s", "cmnist"])
def test_f32_string_coefficients_track_the_f64_pass(monkeypatch, geometry, stable):
    """As above for the string field, with a query within 1e-25 of the quark plate exactly on
    its quark: there 1 / (2 s^2) is inf in float32, and r^2 = 0 must still give the limit."""
    D = 2 if geometry == "toy" else 3072
    points, quarks, antiquarks, params = string_case(12, 32, D, geometry, seed=3)
    points[9, 0] = 1e-25
    points[9, 1:] = quarks[9 % 32, 1:]
    kw = dict(params, d=math.pi / (2 * params["K"]), stable=stable)
    kw.update(ifm.fields.string_kernel_args(D + 1, normalize=True))
    args = [x.to(DEVICE, torch.float32) for x in (points, quarks, antiquarks)]

    def call():
        return ifm_kernels.string_field(*args, **kw)

    fast, slow = _fp64_profiles()
    f32 = _with_profile(monkeypatch, slow, call)
    f64 = _with_profile(monkeypatch, fast, call)
    assert torch.isfinite(f32).all()
    assert f64[9].norm() > 1.0
    assert _row_error(f32, f64) < 5e-6


@pytest.mark.parametrize("profile", [None, H100], ids=["interpreter-plan", "H100"])
def test_coulomb_plate_partial_returns_the_lognormalisers(monkeypatch, profile):
    """``ifm::coulomb_plate_partial_triton``: one plate's softmax-weighted mean and the float64
    (max logit, log-sum-exp) combined from the stats pass's chunks (several chunks under the
    H100 plan), against the float64 oracle; what ifm.distributed merges across ranks."""
    if profile is not None:
        monkeypatch.setattr(_launch, "device_profile", lambda device: profile)
        plan = P.make_plan(10, 300, 21, 21, profile, 8)
        assert plan.coef_chunks > 1
    points, pos, _ = coulomb_case(10, 300, 3, 20, L=6.0, seed=6)
    field, lognorm = torch.ops.ifm.coulomb_plate_partial_triton(points.to(DEVICE), pos.to(DEVICE))
    want = reference.coulomb_field(points, pos, None, plate_gamma=None, sum_eps=0.0)
    torch.testing.assert_close(field.cpu(), want, rtol=1e-9, atol=1e-9)
    m, lse = ifm.distributed._coulomb_lognorm(points, pos)
    assert lognorm.dtype == torch.float64 and lognorm.shape == (10, 2)
    torch.testing.assert_close(lognorm.cpu(), torch.stack([m, lse], 1), rtol=1e-12, atol=1e-9)
    empty, empty_ln = torch.ops.ifm.coulomb_plate_partial_triton(
        points[:0].to(DEVICE), pos.to(DEVICE)
    )
    assert empty.shape == (0, 21) and empty_ln.shape == (0, 2)


@pytest.mark.parametrize("profile", [H100, A100], ids=["H100", "A100"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("string", [True, False], ids=["string", "coulomb"])
@pytest.mark.parametrize(
    "case",
    PUBLISHED + [("tiny", 1, 1, 1), ("odd", 37, 5, 123), ("tall", 2, 3, 49152)],
    ids=lambda c: c[0],
)
def test_workspace_regions_are_disjoint_and_aligned(case, string, dtype, profile):
    """Each region of a call's byte workspace lies inside it, starts on a multiple of
    ``_launch.ALIGN`` bytes and overlaps no other region (the kernels write them concurrently)."""
    _name, b, B, D = case
    width = D + 1
    itemsize = torch.tensor([], dtype=dtype).element_size()
    if string:
        plan = P.make_plan(b, B, D, width, profile, itemsize, string=True)
        pa = _launch.PlanArgs(plan, b, B, width, 1, D, True, itemsize)
    else:
        plan = P.make_plan(b, B, width, width, profile, itemsize)
        pa = _launch.PlanArgs(plan, b, B, width, 0, width, False, itemsize)
    ws = torch.empty(pa.ws_bytes, dtype=torch.uint8, device="meta")
    spans = []
    for name, (off, view) in _launch.regions(pa, ws, dtype).items():
        assert off % _launch.ALIGN == 0, name
        end = off + view.numel() * view.element_size()
        assert end <= pa.ws_bytes, name
        spans.append((off, end, name))
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:], strict=False):
        assert e0 <= s1, (n0, n1)
    # the offsets the kernels receive are the layout's
    names = dict(nsq="nsq_off", t="t_off", c1="c1_off", c2="c2_off", stats="stats_off")
    names.update(ez="ez_off", list="list_off", count="cnt_off", fa="fa_off")
    for name, attr in names.items():
        want = pa.layout[name][0] if name in pa.layout else 0
        assert getattr(pa, attr) == want, name


@pytest.mark.parametrize("field", ["string", "coulomb"])
def test_live_block_lists(monkeypatch, field):
    """The coefficient pass lists, per row block of the sums pass, exactly the pair blocks with a
    non-zero coefficient for one of its rows, in pair order; pass 2 visits only those."""
    monkeypatch.setattr(_launch, "device_profile", lambda device: SMALL_GPU_LIKE)
    seen = []
    real = _launch.launch_pair_sums

    def spy(plan, points, y0, y1, ws, out, L, pa):
        r = _launch.regions(pa, ws, points.dtype)
        c2 = r.get("c2")
        seen.append(
            (
                plan,
                r["c1"][1].clone(),
                None if c2 is None else c2[1].clone(),
                r["list"][1].clone(),
                r["count"][1].clone(),
            )
        )
        return real(plan, points, y0, y1, ws, out, L, pa)

    monkeypatch.setattr(_launch, "launch_pair_sums", spy)
    if field == "string":
        # sigma0 = 0.05: most weights underflow, so most pair blocks are dead
        points, quarks, antiquarks, params = string_case(10, 23, 12, "cifar", seed=8)
        params = dict(params, sigma0=0.05)
        check_string(points, quarks, antiquarks, params, torch.float32)
    else:
        points, pos, _ = coulomb_case(10, 23, 3, 12, L=6.0, seed=8)
        check_coulomb(points, pos, None, torch.float32)
    plan, c1, c2, lst, cnt = seen[0]
    assert plan.coef_chunks > 1  # the lists have several segments
    nz = c1 != 0 if c2 is None else (c1 != 0) | (c2 != 0)
    total = 0
    for rb in range(plan.sums_tiles[0]):
        rows = nz[rb * plan.sums_bi : (rb + 1) * plan.sums_bi]
        want = [
            jb
            for jb in range(plan.sums_blocks)
            if rows[:, jb * plan.sums_bj : (jb + 1) * plan.sums_bj].any()
        ]
        got = []
        for ch in range(plan.coef_chunks):
            seg = lst[rb, ch * plan.seg_len : ch * plan.seg_len + int(cnt[rb, ch])].tolist()
            assert all(ch * plan.seg_len <= jb < (ch + 1) * plan.seg_len for jb in seg)
            got += seg
        assert got == want, rb
        total += len(want)
    if field == "string":
        assert total < plan.sums_tiles[0] * plan.sums_blocks  # some blocks are skipped


def test_sums_pass_wide_offsets(monkeypatch):
    """The sums pass takes int64 pair offsets (``WIDE``) exactly where ``n width`` is past the
    int32 range, and that path gives the same bits as the int32 one."""

    def wide(n, width):
        rec = _record_string(8, n, width - 1)
        (r,) = [r for r in rec if r.name == "pair_sums_kernel"]
        return r.constexprs["WIDE"]

    assert not wide(256, 3073)
    assert not wide(2**31 // 3073, 3073)
    assert wide(2**31 // 3073 + 1, 3073)
    points, quarks, antiquarks, params = string_case(6, 37, 21, "cmnist", seed=5)
    cpoints, pos, neg = coulomb_case(6, 37, 9, 20, L=6.0, seed=5)

    def both():
        s = _string(points, quarks, antiquarks, params, torch.float32)
        kw = ifm.fields.coulomb_kernel_args(21, two_plates=True, plate_gamma=5.0)
        on = [t.to(DEVICE, torch.float32) for t in (cpoints, pos, neg)]
        return s, ifm_kernels.coulomb_field(*on, **kw)

    narrow = both()
    launch = _launch.launch

    def force_wide(kernel, grid, args, constexprs, *rest):
        if "WIDE" in constexprs:
            constexprs = {**constexprs, "WIDE": True}
        return launch(kernel, grid, args, constexprs, *rest)

    monkeypatch.setattr(_launch, "launch", force_wide)
    for a, b in zip(narrow, both(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# determinism, interpreter smoke
# ----------------------------------------------------------------------------------------------
def test_repeated_calls_are_bitwise_identical():
    points, quarks, antiquarks, params = string_case(9, 7, 30, "toy", seed=2)
    a = _string(points, quarks, antiquarks, params, torch.float32, stable=True)
    b = _string(points, quarks, antiquarks, params, torch.float32, stable=True)
    assert torch.equal(a, b)


def test_interpreter_smoke():
    """One tiny call per field runs and is finite (interpreter: CPU tensors in, CPU out)."""
    points, quarks, antiquarks, params = string_case(2, 2, 3, "toy", seed=0)
    out = _string(points, quarks, antiquarks, params, torch.float32)
    assert out.device.type == DEVICE and torch.isfinite(out).all()
    points, pos, neg = coulomb_case(2, 2, 2, 3, L=6.0, seed=0)
    out = ifm_kernels.coulomb_field(
        points.float().to(DEVICE),
        pos.float().to(DEVICE),
        None,
        plate_gamma=None,
        sum_eps=0.0,
        normalize=False,
        norm_scale=1.0,
        eps=1e-5,
    )
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# offline compile for real GPUs (no GPU needed: Triton's bundled ptxas)
# ----------------------------------------------------------------------------------------------
_COMPILE_SCRIPT = textwrap.dedent("""
    import json, math, os, sys
    import torch
    import ifm_kernels
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(ifm_kernels.__file__)),
                                    "benchmarks"))
    import gpu_sass
    from ifm_kernels import _introspect, _plan
    out = {}
    for arch, sms, fast in ((90, 132, True), (80, 108, True), (89, 128, False)):
        prof = _plan.gpu_profile(sms, fast)
        meta = lambda *s, dt: torch.empty(*s, dtype=dt, device="meta")
        for dt in (torch.float32, torch.float64):
            with _introspect.record_launches(prof) as rec:
                ifm_kernels.string_field(meta(64, 3073, dt=dt), meta(256, 3073, dt=dt),
                                         meta(256, 3073, dt=dt), L=20.0, sigma0=1.0,
                                         K=math.pi / 20, d=10.0, stable=True, normalize=True,
                                         norm_scale=1.0, eps=1e-5)
                ifm_kernels.coulomb_field(meta(64, 3073, dt=dt), meta(1024, 3073, dt=dt),
                                          meta(1024, 3073, dt=dt), plate_gamma=5.0, sum_eps=0.0,
                                          normalize=True, norm_scale=1.0, eps=1e-5)
            seen = set()
            for r in rec:
                key = (r.name, tuple(sorted(r.constexprs.items())))
                if key in seen:
                    continue
                seen.add(key)
                res = _introspect.compile_resources(r, arch=arch)
                if r.constexprs.get("F32"):
                    cubin = _introspect.compile_kernel(r, arch).asm["cubin"]
                    summary = gpu_sass.kernel_summary(cubin)
                    res["fp64"] = summary["classes"].get("fp64", 0)
                if r.constexprs.get("F32") and r.name.endswith(("_stats_kernel", "_coeff_kernel")):
                    # float64 instructions in the pair loops (those holding the slice loop)
                    loops = summary["loops"]
                    pair = [lp for lp in loops if lp["depth"] == 0 and any(
                        o["depth"] == 1 and lp["start"] <= o["start"] and o["end"] <= lp["end"]
                        for o in loops)]
                    res["pair_loops"] = len(pair)
                    res["fp64_in_pair_loops"] = sum(lp["classes"].get("fp64", 0) for lp in pair)
                out[f"sm{arch}/{dt}/{r.name}/{r.constexprs}"] = res
    json.dump(out, sys.stdout)
""")


def test_kernels_compile_for_sm80_sm89_and_sm90():
    """Every kernel variant of a CIFAR-size string call and an EFM two-plate call compiles for
    sm_80, sm_90 and sm_89 (float32 and float64; sm_89 with the float32 coefficient pass)
    without register spills."""
    nvidia = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(nvidia, "ptxas")):
        pytest.skip("this triton build has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root, os.path.join(root, "python"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    res = json.loads(proc.stdout)
    assert len(res) >= 3 * 2 * 6
    for key, r in res.items():
        assert not r["spill"] and r["local_bytes"] == 0, f"{key} spills: {r}"
        assert r["registers"] <= 255 and r["shared_bytes"] <= 160 * 1024, (key, r)
    # the float32 coefficient pass: no float64 instruction left in the per-pair loops
    f32 = {k: r for k, r in res.items() if "fp64_in_pair_loops" in r}
    assert len(f32) == 4, sorted(res)  # string and Coulomb, stats and coefficients
    for key, r in f32.items():
        assert r["pair_loops"] >= 1 and r["fp64_in_pair_loops"] == 0, (key, r)
    # there the string query terms (float64) have their own one-warp kernel, the stats kernel
    # loads them, and the finalisation runs in float32
    fp64 = {}  # kernel name -> float64 instruction counts of its float32-pass variants
    for k, r in res.items():
        if "fp64" in r:
            fp64.setdefault(k.split("/")[2], []).append(r["fp64"])
    assert fp64.get("string_query_kernel") and min(fp64["string_query_kernel"]) > 0, fp64
    for name in ("string_stats_kernel", "finalize_kernel"):
        assert fp64.get(name) and max(fp64[name]) == 0, (name, fp64)


def _header_constants() -> dict:
    """``constexpr double kName = value;`` lines and the ``skip_ratio`` hex literals of
    csrc/field_math.h, parsed from the header itself."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "csrc", "field_math.h")).read()
    consts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"constexpr\s+double\s+(k\w+)\s*=\s*([-+0-9.eE]+)\s*;", text)
    }
    m = re.search(
        r"skip_ratio\(bool is_double\)\s*\{\s*return is_double \? (0x[0-9a-fp.+-]+) : "
        r"(0x[0-9a-fp.+-]+);",
        text,
    )
    assert m, "skip_ratio not found in csrc/field_math.h"
    consts["skip_ratio_f64"] = float.fromhex(m.group(1))
    consts["skip_ratio_f32"] = float.fromhex(m.group(2))
    return consts


def test_constants_mirror_the_header():
    """``_field_math.py`` mirrors csrc/field_math.h: every constant of the header has its value
    here (parsed from the header), and both agree with ifm.reference."""
    h = _header_constants()
    mirror = {
        "kStringTanEps": fm.STRING_TAN_EPS.value,
        "kStringREps": fm.STRING_R_EPS.value,
        "kStringCosEps": fm.STRING_COS_EPS.value,
        "kStringDenEps": fm.STRING_DEN_EPS.value,
        "kCoulombDEps": fm.COULOMB_D_EPS.value,
        "skip_ratio_f64": fm.skip_ratio(torch.float64),
        "skip_ratio_f32": fm.skip_ratio(torch.float32),
    }
    assert set(h) == set(mirror), f"header constants {sorted(h)} vs mirror {sorted(mirror)}"
    for name, value in h.items():
        assert mirror[name] == value, f"{name}: field_math.h {value}, _field_math.py {mirror[name]}"
    assert fm.STRING_TAN_EPS.value == reference.STRING_TAN_EPS
    assert fm.STRING_R_EPS.value == reference.STRING_R_EPS
    assert fm.STRING_COS_EPS.value == reference.STRING_COS_EPS
    assert fm.STRING_DEN_EPS.value == reference.STRING_DEN_EPS
    assert fm.COULOMB_D_EPS.value == reference.COULOMB_D_EPS


# ----------------------------------------------------------------------------------------------
# the static model's SASS helpers and estimator (benchmarks/gpu_sass.py, gpu_model.py)
# ----------------------------------------------------------------------------------------------
_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   FADD R2, R3, -R4 ;
        /*0020*/                   FFMA R5, R2, R2, R5 ;
.L_x_2:
        /*0030*/                   LDG.E R6, desc[UR4][R8.64] ;
        /*0040*/              @P0  BRA `(.L_x_2) ;
        /*0050*/              @P1  BRA `(.L_x_1) ;
        /*0060*/                   EXIT ;
.L_x_3:
        /*0070*/                   BRA `(.L_x_3);
"""


def _bench_module(name):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.join(root, "benchmarks") not in sys.path:
        sys.path.insert(0, os.path.join(root, "benchmarks"))
    import importlib

    return importlib.import_module(name)


def test_sass_loops():
    """Loops from backward branches, nesting, per-class counts of the own instructions."""
    gpu_sass = _bench_module("gpu_sass")
    loops = gpu_sass.loop_summary(_SASS)
    outer, inner, trap = loops
    assert (outer["instructions"], outer["own"], outer["depth"], outer["inner"]) == (5, 3, 0, 1)
    assert (inner["instructions"], inner["depth"]) == (2, 1)
    assert outer["classes"] == {"fp32": 2, "branch": 1}
    assert inner["classes"] == {"mem_global": 1, "branch": 1}
    assert trap["instructions"] == 1


_GUARDED_SASS = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   S2R R2, SR_CTAID.X ;
        /*0020*/                   ISETP.NE.AND P0, PT, R0, RZ, PT ;
        /*0030*/                   ISETP.GT.U32.AND P1, PT, R0, 0x3f, PT ;
        /*0040*/              @P0  BRA `(.L_x_1) ;
        /*0050*/                   DMUL R4, R4, R4 ;
        /*0060*/                   CALL.REL.NOINC `($slow_path) ;
.L_x_1:
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/              @P1  BRA `(.L_x_2) ;
        /*0090*/                   FADD R6, R6, R6 ;
.L_x_2:
        /*00a0*/                   IADD3 R0, R0, 0x1, RZ ;
        /*00b0*/                   ISETP.NE.AND P2, PT, R0, RZ, PT ;
        /*00c0*/              @P2  BRA `(.L_x_3) ;
        /*00d0*/                   FMUL R6, R6, R6 ;
.L_x_3:
        /*00e0*/                   S2R R8, SR_TID.X ;
        /*00f0*/                   ISETP.NE.OR P3, PT, R8, RZ, !P4 ;
        /*0100*/                   ISETP.NE.AND P5, PT, R8, RZ, P4 ;
        /*0110*/              @P3  BRA `(.L_x_4) ;
        /*0120*/                   FMUL R7, R7, R7 ;
.L_x_4:
        /*0130*/              @P5  BRA `(.L_x_5) ;
        /*0140*/                   FMUL R7, R7, R7 ;
.L_x_5:
        /*0150*/                   EXIT ;
$slow_path:
        /*0160*/                   DADD R4, R4, R4 ;
        /*0170*/                   RET.REL.NODEC R20 `(k) ;
"""


def test_sass_thread_guarded_code():
    """Straight-line code under a comparison of threadIdx.x runs in the first threads only:
    `tid == 0` (1 thread, with the subroutine it calls), `tid <= 63` (64 threads), `tid == 0 &&
    q` (skip on `tid != 0 || !q`); a comparison of a register no longer holding the thread
    index guards nothing, nor does a skip on `tid != 0 && q` (tid != 0 runs where q is false)."""
    gpu_sass = _bench_module("gpu_sass")
    instrs = gpu_sass.parse_sass(_GUARDED_SASS)
    guarded = gpu_sass.thread_guarded(instrs)
    by_addr = {i.address: guarded.get(i.index) for i in instrs}
    assert by_addr[0x50] == 1 and by_addr[0x60] == 1 and by_addr[0x160] == 1
    assert by_addr[0x90] == 64
    assert by_addr[0x120] == 1
    assert by_addr[0x70] is None and by_addr[0xD0] is None and by_addr[0x140] is None


def test_cuda_model_charges_one_copy_of_the_first_row_loop():
    """ptxas compiles a coefficient kernel's first row loop in copies (with and without the
    slice fold, unswitched ones): one runs per block. The trips function is asked about loops
    of a fresh profile (new objects), as the estimator does."""
    model = _bench_module("gpu_model_cuda")

    def loops():
        def lp(start, end, depth, inner, own, ldg, lds, shared=False):
            cls = {"mem_shared": 1} if shared else {}
            return dict(start=start, end=end, depth=depth, inner=inner, own=own, ldg=ldg, lds=lds,
                        classes=cls)  # fmt: skip

        return [
            lp(10, 50, 0, 1, 200, 8, 0),  # with the fold
            lp(20, 30, 1, 0, 40, 4, 0),  # the fold
            lp(60, 90, 0, 0, 150, 2, 0),  # without the fold
            lp(95, 99, 0, 0, 10, 0, 2, shared=True),  # the reduction tree
            lp(120, 160, 0, 0, 100, 2, 0),  # a later row loop
        ]

    for nslices, charged in ((1, 60), (4, 10)):
        trips = model._coef_trips(loops(), 1024, 4, nslices)
        got = {lp["start"]: trips(lp) for lp in loops()}
        assert got[charged] == 4 and got[120] == 4 and got[95] == 8
        assert got[10 if charged == 60 else 60] == 0
        assert got[20] == (0 if charged == 60 else 4 * 3 / 4)


def test_model_charges_a_tail_wave():
    """544 blocks of 4 warps (128 registers: 4 resident per SM) on 132 SMs: 16 SMs run a fifth
    block alone, at a quarter of the issue rate (4 warps for 4 schedulers, SAT_WARPS = 4);
    512 blocks take one round: the model's issue time doubles for 6 % more work."""
    gpu_model = _bench_module("gpu_model")
    arch = gpu_model.ARCHS["sm_90"]

    def k(grid):
        return {
            "name": "k",
            "grid": grid,
            "threads": 128,
            "registers": 128,
            "shared_bytes": 0,
            "warp_instructions": 4 * grid * 1000.0,
            "dram_bytes": 0.0,
            "l2_bytes": 0.0,
        }

    full, tail = gpu_model.issue_us(k(512), arch), gpu_model.issue_us(k(544), arch)
    assert gpu_model.resident_blocks(k(1), arch) == 4
    assert tail / full == pytest.approx(2.0)
    assert gpu_model.issue_us(k(528), arch) == pytest.approx(full)
