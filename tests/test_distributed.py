"""ifm.distributed on CPU with Gloo: 2-3 processes spawned by torch.multiprocessing.

Each spawned run holds several checks (a process group costs seconds to start). Every rank builds
the same global batch, keeps its slice (unequal sizes, a rank with zero queries, ranks with zero
charges on a plate) and compares its rows with the single-process reference on the concatenated
batch by the parity rule (tests/parity.py), for both strategies and every normalisation mode.
"""

import datetime
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ifm
from ifm import reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import coulomb_case, string_case  # noqa: E402
from modes import (  # noqa: E402
    COULOMB_MODE_IDS,
    COULOMB_MODES,
    STRING_MODE_IDS,
    STRING_MODES,
    coulomb_reference_kwargs,
    string_reference_kwargs,
)
from parity import assert_parity  # noqa: E402

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with Gloo is unavailable",
)

# per-rank sizes of the parity run (world 3): rank 1 has no queries, ranks hold unequal counts
QUERIES = [5, 0, 8]
PAIRS = [4, 7, 1]
POSITIVE = [3, 0, 5]
NEGATIVE = [2, 4, 1]
D = 5
# (backend, dtype): the compiled kernel in float32 (parity rule), the reference in float64 (1e-9)
CONFIGS = [(name, torch.float32) for name in ("cpu",) if name in ifm.available_backends("cpu")] + [
    ("reference", torch.float64)
]


# (strategy, how the allgather and queries strategies exchange rows): Gloo's point-to-point
# exchange, and the padded all_gather_into_tensor / all_to_all_single that other backends (NCCL)
# use
VARIANTS = [
    ("allgather", ("gloo",)),
    ("allgather", ()),
    ("ring", ("gloo",)),
    ("queries", ("gloo",)),
    ("queries", ()),
    ("auto", ("gloo",)),
]


def _variants():
    for strategy, p2p in VARIANTS:
        ifm.distributed.P2P_GATHER_BACKENDS = p2p
        yield strategy, f"{strategy}{'' if p2p else '-padded'}"
    ifm.distributed.P2P_GATHER_BACKENDS = ("gloo",)


def _init(rank, world, init_file, seconds=60):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=seconds),
    )


def _spawn(fn, world, tmp_path, *args):
    mp.spawn(fn, args=(world, str(tmp_path / "pg_init"), *args), nprocs=world, join=True)


def _mine(t, sizes, rank):
    o = sum(sizes[:rank])
    return t[o : o + sizes[rank]]


def _check(out, oracle, standin, what):
    assert out.shape == oracle.shape, f"{what}: shape {tuple(out.shape)} != {tuple(oracle.shape)}"
    if oracle.shape[0]:
        assert_parity(out, oracle, standin, what)


# --------------------------------------------------------------------------------------------
# parity: both fields, every mode, both strategies
# --------------------------------------------------------------------------------------------
def _parity_worker(rank, world, init_file):
    _init(rank, world, init_file)
    width = D + 1
    for geometry in ("toy", "cifar", "cmnist"):
        pts, q, a, params = string_case(sum(QUERIES), sum(PAIRS), D, geometry, seed=11)
        mine = [_mine(t, s, rank) for t, s in ((pts, QUERIES), (q, PAIRS), (a, PAIRS))]
        for mode, mode_id in zip(STRING_MODES, STRING_MODE_IDS, strict=False):
            kw = string_reference_kwargs(width, mode)
            oracle = _mine(reference.string_field(pts, q, a, **params, **kw), QUERIES, rank)
            standin = _mine(
                reference.string_field(pts.float(), q.float(), a.float(), **params, **kw),
                QUERIES,
                rank,
            )
            for bname, dtype in CONFIGS:
                for strategy, sid in _variants():
                    out = ifm.distributed.string_field(
                        *(t.to(dtype) for t in mine),
                        **params,
                        **mode,
                        backend=bname,
                        strategy=strategy,
                    )
                    assert out.dtype == dtype
                    _check(
                        out,
                        oracle,
                        standin,
                        f"rank {rank} string {geometry} {mode_id} {bname} {sid}",
                    )
    for case in ("random", "near-tie"):
        _coulomb_parity(rank, case)
    # an odd width: the packed float32 partials hold float64 log-normaliser columns at odd offsets
    _coulomb_parity(rank, "random", dim=2, strategies=("queries", "auto"))
    # no gradients through the collectives: inputs that require grad are read as constants
    pts, pos, neg = _coulomb_inputs("random")
    mine = [_mine(t, s, rank) for t, s in ((pts, QUERIES), (pos, POSITIVE), (neg, NEGATIVE))]
    p = mine[0].float().requires_grad_()
    out = ifm.distributed.coulomb_field(p, mine[1].float(), mine[2].float(), strategy="ring")
    assert not out.requires_grad
    dist.destroy_process_group()


def _coulomb_inputs(case, dim=D):
    """``random``: tests/cases.py; ``near-tie``: far from the origin (x ~ 100) with query 0 on the
    plate at 1e-4 and 2e-4 from charges held by ranks 0 and 2, so the two chunks' weights compete
    and their log-normalisers need distances free of cancellation."""
    pts, pos, neg = coulomb_case(sum(QUERIES), sum(POSITIVE), sum(NEGATIVE), dim, 3.0, seed=5)
    if case == "near-tie":
        for t in (pts, pos, neg):
            t[:, 1:] += 100.0
        pts[0, 0] = 0.0
        pos[0, 1:] = pts[0, 1:]
        pos[0, 1] += 1e-4
        k = POSITIVE[0] + POSITIVE[1]
        pos[k, 1:] = pts[0, 1:]
        pos[k, 2] -= 2e-4
    return pts, pos, neg


def _coulomb_parity(rank, case, configs=None, strategies=None, dim=D):
    width = dim + 1
    pts, pos, neg = _coulomb_inputs(case, dim)
    mine = [_mine(t, s, rank) for t, s in ((pts, QUERIES), (pos, POSITIVE), (neg, NEGATIVE))]
    for two in (False, True):
        for mode, mode_id in zip(COULOMB_MODES, COULOMB_MODE_IDS, strict=False):
            kw = coulomb_reference_kwargs(width, mode, two)
            nn = neg if two else None
            oracle = _mine(reference.coulomb_field(pts, pos, nn, **kw), QUERIES, rank)
            standin = _mine(
                reference.coulomb_field(
                    pts.float(), pos.float(), None if nn is None else nn.float(), **kw
                ),
                QUERIES,
                rank,
            )
            for bname, dtype in configs or CONFIGS:
                for strategy, sid in _variants():
                    if strategies is not None and sid not in strategies:
                        continue
                    p, pp, ng = (t.to(dtype) for t in mine)
                    out = ifm.distributed.coulomb_field(
                        p, pp, ng if two else None, **mode, backend=bname, strategy=strategy
                    )
                    _check(
                        out,
                        oracle,
                        standin,
                        f"rank {rank} coulomb {case} plates={1 + two} {mode_id} {bname} {sid}",
                    )


def test_parity_both_fields_every_mode(tmp_path):
    _spawn(_parity_worker, 3, tmp_path)


def _triton_worker(rank, world, init_file):
    """The Triton kernels' log-normalisers in the merging strategies (Coulomb, every mode)."""
    _init(rank, world, init_file)
    _coulomb_parity(
        rank, "random", configs=[("triton", torch.float32)], strategies=("queries", "ring")
    )
    dist.destroy_process_group()


@pytest.mark.skipif(
    "triton" not in ifm.available_backends("cpu"), reason="Triton (interpreter) unavailable"
)
def test_parity_triton_log_normalisers(tmp_path):
    _spawn(_triton_worker, 3, tmp_path)


# --------------------------------------------------------------------------------------------
# errors: bad input on one rank, a rank failing mid-call; matchers with group=
# --------------------------------------------------------------------------------------------
def _same_error_everywhere(fn, expected_type, *needles):
    """``fn()`` raises ``expected_type`` on this rank; every rank saw the same message."""
    try:
        fn()
    except expected_type as exc:
        msg = str(exc)
    else:
        raise AssertionError(f"no {expected_type.__name__} raised")
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    msgs = [None] * dist.get_world_size()
    dist.all_gather_object(msgs, msg)
    assert len(set(msgs)) == 1, msgs
    return msg


def _string_inputs(rank, n=6, B=5):
    pts, q, a, params = string_case(2 * n, 2 * B, D, "toy", seed=2)
    return (
        pts[rank * n : (rank + 1) * n].float(),
        q[rank * B : (rank + 1) * B].float(),
        a[rank * B : (rank + 1) * B].float(),
        params,
    )


def _error_worker(rank, world, init_file):
    _init(rank, world, init_file)
    p, q, a, params = _string_inputs(rank)
    # wrong width on rank 1 only
    bad_q = q[:, :-1] if rank == 1 else q
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(p, bad_q, a, **params),
        ValueError,
        "rank 1 of the group",
        "quarks must have 6 columns",
    )
    # a NaN on rank 0 only
    bad_p = p.clone()
    if rank == 0:
        bad_p[2, 3] = float("nan")
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(bad_p, q, a, **params, strategy="ring"),
        ValueError,
        "rank 0 of the group",
        "points has a non-finite value",
    )
    # keyword arguments that differ between ranks
    other = dict(params, sigma0=params["sigma0"] * (1 + rank))
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(p, q, a, **other),
        ValueError,
        "kwargs must be the same on every rank",
    )
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(
            p, q, a, **params, strategy="tree" if rank else "ring"
        ),
        ValueError,
    )
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(p, q, a, **params, normalize="yes" if rank else True),
        TypeError,
        "rank 1 of the group",
        "normalize must be a bool",
    )
    # a failure that is not a ValueError: a backend rank 1 cannot run
    _same_error_everywhere(
        lambda: ifm.distributed.string_field(p, q, a, **params, backend="cuda" if rank else "auto"),
        RuntimeError,
        "rank 1 of the group",
        "backend='cuda'",
    )
    pts, pos, neg = coulomb_case(8, 6, 6, D, 3.0, seed=1)
    mine = (
        pts[4 * rank : 4 * rank + 4].float(),
        pos[3 * rank : 3 * rank + 3].float(),
        neg[3 * rank : 3 * rank + 3].float(),
    )
    _same_error_everywhere(
        lambda: ifm.distributed.coulomb_field(mine[0], mine[1], mine[2] if rank == 0 else None),
        ValueError,
        "negative must be the same on every rank",
    )
    shifted = mine[2].clone()
    shifted[:, 0] += rank
    _same_error_everywhere(
        lambda: ifm.distributed.coulomb_field(mine[0], mine[1], shifted),
        ValueError,
        "must be the same on every rank",
    )
    _same_error_everywhere(
        lambda: ifm.distributed.coulomb_field(mine[0], mine[1][:0], mine[2]),
        ValueError,
        "positive must have at least one row",
    )
    _same_error_everywhere(
        lambda: ifm.distributed.coulomb_field(
            mine[0].double() if rank else mine[0], mine[1], mine[2]
        ),
        TypeError,
        "rank 1 of the group",
    )
    # the group is still usable after the collective errors
    out = ifm.distributed.string_field(p, q, a, **params, normalize=True)
    full = string_case(12, 10, D, "toy", seed=2)
    ref = ifm.fields.string_field(p, full[1].float(), full[2].float(), **params, normalize=True)
    torch.testing.assert_close(out, ref)
    # half-precision inputs: computed in float32, returned in their dtype, by both strategies
    for dtype in (torch.float16, torch.bfloat16):
        outs = [
            ifm.distributed.string_field(
                p.to(dtype), q.to(dtype), a.to(dtype), **params, normalize=True, strategy=s
            )
            for s in ifm.distributed.STRATEGIES
        ]
        assert all(o.dtype == dtype for o in outs)
        torch.testing.assert_close(outs[1].float(), outs[0].float(), rtol=1e-2, atol=1e-2)
    _matcher_checks(rank, world)
    _failure_checks(rank, world)


def _matcher_checks(rank, world):
    from ifm import matchers, plans, points

    L = 6.0
    g = torch.Generator().manual_seed(3)
    x0_all, x1_all = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g) + 2.0
    x0, x1 = x0_all[8 * rank : 8 * rank + 8], x1_all[8 * rank : 8 * rank + 8]
    for plan, global_plan in (("independent", False), ("ot", False), ("ot", True)):
        for strategy in ifm.distributed.STRATEGIES:
            m = matchers.IFMMatcher(
                L,
                1.0,
                10.0,
                plan=plan,
                b=5,
                group="world",
                global_plan=global_plan,
                strategy=strategy,
            )
            z, xt, target, pairing = m.sample_location_and_target(
                x0, x1, generator=torch.Generator().manual_seed(7 + rank), return_pairing=True
            )
            if global_plan:
                full = plans.get_plan(plan)(x0_all, x1_all)
                assert torch.equal(pairing, full[8 * rank : 8 * rank + 8])
                c_mine = x1_all[pairing]
                c_all = x1_all[full]
            else:
                assert torch.equal(pairing, plans.get_plan(plan)(x0, x1))
                c_mine = x1[pairing]
                parts = [None] * world
                dist.all_gather_object(parts, c_mine)
                c_all = torch.cat(parts)
            q = points.uniform(
                x0, c_mine, L=L, b=5, generator=torch.Generator().manual_seed(7 + rank)
            )
            assert torch.equal(z, q[:, 0])
            lo = torch.cat([torch.zeros(16, 1), x0_all], 1)
            hi = torch.cat([torch.full((16, 1), L), c_all], 1)
            ref = ifm.fields.string_field(q, lo, hi, L=L, sigma0=1.0, K=10.0, normalize=True)
            torch.testing.assert_close(target.flat(), ref, rtol=1e-4, atol=1e-5)
    m = matchers.EFMMatcher(L, plate_gamma=1e-7, b=4, group="world", strategy="ring")
    z, xt, target = m.sample_location_and_target(x0, x1, generator=torch.Generator().manual_seed(1))
    q = points.efm(x0, x1, L=L, b=4, generator=torch.Generator().manual_seed(1))
    lo = torch.cat([torch.zeros(16, 1), x0_all], 1)
    hi = torch.cat([torch.full((16, 1), L), x1_all], 1)
    ref = ifm.fields.coulomb_field(q, lo, hi, plate_gamma=1e-7, normalize=True)
    torch.testing.assert_close(target.flat(), ref, rtol=1e-4, atol=1e-5)


FAIL_TIMEOUT = 3.0


def _failure_checks(rank, world):
    """Rank 1 raises after the metadata exchange (before its heavy collective); rank 0 must
    raise within the group's timeout. Each case runs in a fresh group with a short timeout."""
    p, q, a, params = _string_inputs(rank)
    for strategy, target in (
        ("allgather", "_gather"),
        ("ring", "_ring"),
        ("queries", "_all_to_all"),
    ):
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=FAIL_TIMEOUT))
        original = getattr(ifm.distributed, target)
        if rank == 1:

            def boom(*args, **kwargs):
                raise MemoryError("simulated failure on rank 1")

            setattr(ifm.distributed, target, boom)
        t0 = time.monotonic()
        try:
            ifm.distributed.string_field(p, q, a, **params, group=group, strategy=strategy)
        except MemoryError:
            assert rank == 1
            time.sleep(FAIL_TIMEOUT + 3)  # stay alive: the peer must give up by its timeout
        except RuntimeError as exc:
            assert rank == 0, exc
            assert "with the group's other ranks failed" in str(exc), exc
            elapsed = time.monotonic() - t0
            assert elapsed < FAIL_TIMEOUT + 10, elapsed
        else:
            raise AssertionError(f"rank {rank}: no error for a failing peer ({strategy})")
        finally:
            setattr(ifm.distributed, target, original)


def test_errors_matchers_and_failing_rank(tmp_path):
    _spawn(_error_worker, 2, tmp_path)


def test_needs_process_group():
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ifm.distributed.string_field(x, x, x, L=1.0, sigma0=1.0, K=2.0)


def test_auto_strategy_rule():
    """``"auto"``: the queries strategy where it moves fewer rows and merges exactly."""
    choose = ifm.distributed._choose
    # string CIFAR per 2 ranks: 64 queries (+ 64 partial rows) against 2 x 256 pair rows
    assert choose("auto", 64, 512, 1, True) == "queries"
    assert choose("auto", 64, 512, 1, False) == "allgather"  # stable: would need the extra pass
    assert choose("auto", 256, 512, 1, True) == "allgather"  # b = B: no fewer rows
    assert choose("auto", 64, 384, 2, True) == "queries"  # EFM: two partials per query
    assert choose("auto", 64, 192, 2, True) == "allgather"
    for s in ("allgather", "ring", "queries"):
        assert choose(s, 64, 512, 1, True) == s  # an explicit strategy is kept


def test_metadata_row_round_trip():
    """The metadata row carries counts, ``None`` and floats exactly; the hash covers the
    fields every rank must share."""
    numbers = ("b", "Bp", "Bn", "neg_z")
    rec = dict(width=6, dtype="torch.float32", device="cpu", kwargs="k", negative=True)
    rec.update(b=5, Bp=0, Bn=7, neg_z=6.000000000000001, error=None)
    row = ifm.distributed._encode(rec, numbers)
    assert row[0] == 0
    assert ifm.distributed._decode(row, numbers) == dict(b=5, Bp=0, Bn=7, neg_z=6.000000000000001)
    none = ifm.distributed._decode(ifm.distributed._encode(dict(rec, neg_z=None), numbers), numbers)
    assert none["neg_z"] is None
    assert ifm.distributed._encode(dict(rec, error=("ValueError", "x")), numbers)[0] == 1
    for key, other in (("kwargs", "k2"), ("width", 7), ("dtype", "torch.float64")):
        assert ifm.distributed._encode(dict(rec, **{key: other}), numbers)[1] != row[1]


# --------------------------------------------------------------------------------------------
# the fused exchange: metadata and queries in one message when the previous call's layout holds
# --------------------------------------------------------------------------------------------
def _counting_gathers():
    """Wraps ``_start_gather`` (the metadata exchange, the gathers of queries or charges) to
    count its calls; returns the list each call appends to and the function that restores it."""
    calls = []
    original = ifm.distributed._start_gather

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    ifm.distributed._start_gather = counted
    return calls, lambda: setattr(ifm.distributed, "_start_gather", original)


def _string_call(rank, sizes, pairs, dtype=torch.float32, group=None, nan_on=None, **extra):
    """``(this rank's output, its rows of the single-process field)`` of the raw string field
    with ``sizes[r]`` queries and ``pairs[r]`` pairs on rank r (strategy ``queries``); rank
    ``nan_on`` puts a NaN in its quarks."""
    pts, q, a, params = string_case(sum(sizes), sum(pairs), D, "toy", seed=4)
    mine = [_mine(t, s, rank).to(dtype) for t, s in ((pts, sizes), (q, pairs), (a, pairs))]
    if rank == nan_on:
        mine[1][0, 2] = float("nan")
    kw = dict(params, normalize=True, strategy="queries")
    kw.update(extra)
    out = ifm.distributed.string_field(*mine, **kw, group=group)
    ref = ifm.fields.string_field(pts.to(dtype), q.to(dtype), a.to(dtype), **params, normalize=True)
    return out, _mine(ref, sizes, rank)


def _fused_worker(rank, world, init_file):
    _init(rank, world, init_file)
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=FAIL_TIMEOUT))
    layouts = ifm.distributed._LAYOUTS
    calls, restore = _counting_gathers()
    try:
        # first call: the metadata row, then the queries; the second, with the same counts
        # (unequal, rank 1 without queries): one fused message; the same rows, bitwise
        first, ref = _string_call(rank, QUERIES, PAIRS, group=group)
        assert len(calls) == 2, calls
        assert layouts[group]["string_field"] == (tuple(QUERIES), D + 1, torch.float32)
        calls.clear()
        second, _ = _string_call(rank, QUERIES, PAIRS, group=group)
        assert len(calls) == 1, calls
        assert torch.equal(first, second)
        torch.testing.assert_close(second, ref, rtol=1e-4, atol=1e-5)
        # other query counts: the fused message's queries do not fit, every rank gathers them
        other = [4, 2, 8]
        calls.clear()
        out, ref = _string_call(rank, other, PAIRS, group=group)
        assert len(calls) == 2, calls
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert layouts[group]["string_field"][0] == tuple(other)
        calls.clear()
        out, ref = _string_call(rank, other, PAIRS, group=group)  # fused again
        assert len(calls) == 1, calls
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        # other pair counts only: the queries still fit, fused
        calls.clear()
        out, ref = _string_call(rank, other, [2, 9, 3], group=group)
        assert len(calls) == 1, calls
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        # another dtype with the same counts: gathered again, in float64
        calls.clear()
        out, ref = _string_call(rank, other, PAIRS, dtype=torch.float64, group=group)
        assert len(calls) == 2, calls
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
        # the padded all-gather (NCCL's path) carries the fused message too
        ifm.distributed.P2P_GATHER_BACKENDS = ()
        try:
            for _ in range(2):
                calls.clear()
                out, ref = _string_call(rank, QUERIES, PAIRS, group=group)
                torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
            assert len(calls) == 1, calls
        finally:
            ifm.distributed.P2P_GATHER_BACKENDS = ("gloo",)
        # another strategy clears the layout: the next call starts with the plain exchange
        _string_call(rank, QUERIES, PAIRS, group=group, strategy="allgather")
        assert "string_field" not in layouts[group]
        # keyword arguments that differ on one rank after a fused call: the same error everywhere
        _string_call(rank, QUERIES, PAIRS, group=group)
        _same_error_everywhere(
            lambda: _string_call(rank, QUERIES, PAIRS, group=group, eps=1e-5 * (1 + (rank == 2))),
            ValueError,
            "kwargs must be the same on every rank",
        )
        assert "string_field" not in layouts[group]
        # a rank failing its checks after a fused call (its metadata hash unchanged): the same
        # error, naming it, everywhere
        _string_call(rank, QUERIES, PAIRS, group=group)
        _string_call(rank, QUERIES, PAIRS, group=group)
        _same_error_everywhere(
            lambda: _string_call(rank, QUERIES, PAIRS, group=group, nan_on=1),
            ValueError,
            "rank 1 of the group",
            "quarks has a non-finite value",
        )
        assert "string_field" not in layouts[group]
        # and the group works again afterwards, fused from the second call on
        for n in (2, 1):
            calls.clear()
            out, ref = _string_call(rank, QUERIES, PAIRS, group=group)
            assert len(calls) == n, calls
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        # the Coulomb field with two plates: fused from the second call on, same rows
        pts, pos, neg = _coulomb_inputs("random")
        mine = [_mine(t, s, rank) for t, s in ((pts, QUERIES), (pos, POSITIVE), (neg, NEGATIVE))]
        ref = _mine(ifm.fields.coulomb_field(pts, pos, neg), QUERIES, rank)
        outs = []
        for n in (2, 1):
            calls.clear()
            outs.append(
                ifm.distributed.coulomb_field(*(t.float() for t in mine), strategy="queries")
            )
            assert len(calls) == n, calls
        assert torch.equal(outs[0], outs[1])
        torch.testing.assert_close(outs[1].double(), ref, rtol=1e-4, atol=1e-5)
    finally:
        restore()
    # a rank failing inside the collectives after a fused call: its peers raise by the timeout
    _string_call(rank, QUERIES, PAIRS, group=group)
    original = ifm.distributed._all_to_all
    if rank == 1:

        def boom(*args, **kwargs):
            raise MemoryError("simulated failure on rank 1")

        ifm.distributed._all_to_all = boom
    t0 = time.monotonic()
    try:
        _string_call(rank, QUERIES, PAIRS, group=group)
    except MemoryError:
        assert rank == 1
        time.sleep(FAIL_TIMEOUT + 3)  # stay alive: the peers must give up by their timeout
    except RuntimeError as exc:
        assert rank != 1, exc
        assert "with the group's other ranks failed" in str(exc), exc
        assert time.monotonic() - t0 < FAIL_TIMEOUT + 10
    else:
        raise AssertionError(f"rank {rank}: no error for a failing peer")
    finally:
        ifm.distributed._all_to_all = original


def test_fused_metadata_and_queries(tmp_path):
    _spawn(_fused_worker, 3, tmp_path)


def test_nccl_inputs_must_be_on_the_current_device(monkeypatch):
    """With NCCL the collectives run on the current CUDA device: an input on another one (no
    torch.cuda.set_device in the script) is a clear error on this rank, before any collective.
    No GPU here: the backend and the device are stubbed (the check reads only ``.device``)."""
    from types import SimpleNamespace

    from ifm import distributed as D

    monkeypatch.setattr(D.dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(D.torch.cuda, "current_device", lambda: 0)
    on = lambda i: SimpleNamespace(device=torch.device("cuda", i))  # noqa: E731
    D._check_nccl_device(None, "string_field", [("points", on(0)), ("quarks", on(None))])
    D._check_nccl_device(None, "coulomb_field", [("negative", None), ("points", torch.ones(1))])
    with pytest.raises(ValueError, match=r"quarks must be on the current CUDA device \(cuda:0\)"):
        D._check_nccl_device(None, "string_field", [("points", on(0)), ("quarks", on(1))])
    monkeypatch.setattr(D.dist, "get_backend", lambda group=None: "gloo")
    D._check_nccl_device(None, "string_field", [("points", on(1))])
