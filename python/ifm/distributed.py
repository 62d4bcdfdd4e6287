"""Field targets over the global batch of a ``torch.distributed`` group (DDP training).

Each rank passes its own queries and its own pairs (string field) or charges (Coulomb field);
:func:`string_field` / :func:`coulomb_field` return that rank's targets for its queries against
the pairs or charges of **every** rank of ``group`` (default: the world), i.e. the rows of the
single-process call on the concatenated batch that belong to this rank. Keyword arguments are
those of :mod:`ifm.fields`. All communication is ``torch.distributed`` (NCCL on GPUs, Gloo on
CPUs); see docs/DISTRIBUTED.md for the costs.

Strategies (``strategy=``):

* ``"auto"`` (default): ``"queries"`` where it moves fewer rows than gathering the charges and its
  partial fields merge without the extra pass below (the raw string field; the Coulomb field on
  the compiled kernels, which return their log-normalisers), else ``"allgather"``.
* ``"allgather"``: every rank gathers all pairs / charges and makes one fused call
  (NCCL: ``all_gather_into_tensor`` of the rows padded to the largest rank's count; Gloo:
  ``batch_isend_irecv`` of each rank's block to every other rank, several times faster there).
  Memory per rank: the whole global batch of charges.
* ``"queries"``: every rank gathers all queries (``W b`` rows instead of ``W B`` pairs or
  charges), evaluates them against its own charges in one fused call and sends each rank the
  partial fields of its rows (Gloo: ``batch_isend_irecv``; NCCL: ``all_to_all_single``); each
  rank merges the ``W`` partials of its rows in rank order (plain sums, or log-sum-exp with the
  log-normalisers as for the ring), then normalises. Memory per rank: its charges plus ``W b``
  queries and partial fields.
* ``"ring"``: the charges travel around the ring of ranks (``batch_isend_irecv``); each rank
  evaluates its queries against the chunk it holds while the next chunk is in flight. Memory per
  rank: its own charges plus two chunks, at any world size. The fused kernels return the finished
  field of one chunk; the raw string field is a plain sum over chunks, while the Coulomb plate
  term (a softmax over the plate's charges) and the ``stable`` string mode (``E_i / max_j w_ij``)
  need each chunk's log-normaliser, merged online (log-sum-exp). The compiled kernels return
  the Coulomb one with the field (``torch.ops.ifm.coulomb_plate_partial[_triton]``); on the
  reference backend, and for
  ``stable``, this module computes it with torch from the chunk's distances in float64 (memory
  O(b x chunk); one extra GEMM-sized pass per chunk). Normalisation is applied after the last
  chunk.

Every call first exchanges a small metadata record (one int64 row per rank: the outcome of the
argument checks, row counts and a hash of the keyword arguments, widths, dtypes and devices; the
full records follow with ``all_gather_object`` only when something differs or failed): a bad
argument on any rank raises the same error on every rank, before any heavy collective.

In a steady loop the ``"queries"`` strategy's metadata row travels with the queries: every rank
remembers, per group and function, the layout of the previous call's queries (rows per rank,
width, compute dtype; the same on every rank, as it follows from the metadata they agreed on).
The next call sends its row followed by its queries in one message sized from that layout, so a
call makes two exchanges (row with queries, partial fields) instead of three. Each row carries a
flag saying whether its queries fit the layout; every rank reads every row, so when one rank's
counts, width or dtype changed, its checks failed or the hashes differ, every rank sees it and
proceeds as without the cache (the same error on every rank, or a separate gather of the
queries). A call that takes another strategy forgets the layout. A rank
that fails later (inside the heavy collectives) makes its peers raise when the process group's
timeout (``init_process_group(timeout=...)``) expires or its connection drops, instead of hanging
forever.

Targets are not differentiated: no gradients flow through the collectives and the result does
not require grad.
"""

from __future__ import annotations

import hashlib
import math
import struct
import weakref

import torch
import torch.distributed as dist

from . import _checks, _ops, fields, reference

__all__ = [
    "string_field",
    "coulomb_field",
    "STRATEGIES",
    "resolve_group",
    "all_gather_rows",
    "broadcast_from_first",
]

STRATEGIES = ("auto", "allgather", "ring", "queries")
# all_gather_into_tensor under its newer name where torch has it
_gather_single = getattr(dist, "all_gather_single", None) or getattr(
    dist, "all_gather_into_tensor", None
)
_CANCEL = 1e-6  # squared distances below this fraction of their scale are recomputed exactly
_PAIR_BLOCK = 1 << 20  # elements of the exact-recompute temporary


# --------------------------------------------------------------------------------------------
# group and metadata
# --------------------------------------------------------------------------------------------
def resolve_group(group):
    """The process group to use: ``None`` is the world; raises when torch.distributed is not
    initialised."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "ifm.distributed needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group, e.g. under torchrun)"
        )
    return dist.group.WORLD if group is None else group


_RAISED = {"TypeError": TypeError, "ValueError": ValueError, "RuntimeError": RuntimeError}


def _describe(exc: BaseException) -> tuple:
    kind = type(exc).__name__
    if kind in _RAISED:
        return kind, str(exc)
    return "RuntimeError", f"{kind}: {exc}"


# Metadata every rank must agree on (compared by one hash) and the numbers each rank reports.
_SAME_KEYS = ("width", "dtype", "device", "kwargs", "negative")


def _digest(record: dict) -> int:
    text = repr(tuple(record.get(k) for k in _SAME_KEYS)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little", signed=True)


def _encode(record: dict, numbers: tuple) -> list[int]:
    """``[failed, digest, (kind, value) per number]``: kind 0 ``None``, 1 int, 2 float (bits)."""
    row = [int(record["error"] is not None), _digest(record)]
    for key in numbers:
        v = record.get(key)
        if v is None:
            row += [0, 0]
        elif isinstance(v, float):
            row += [2, struct.unpack("<q", struct.pack("<d", v))[0]]
        else:
            row += [1, int(v)]
    return row


def _decode(row: list[int], numbers: tuple) -> dict:
    rec = {}
    for k, key in enumerate(numbers):
        kind, v = row[2 + 2 * k], row[3 + 2 * k]
        rec[key] = (
            None if kind == 0 else v if kind == 1 else struct.unpack("<d", struct.pack("<q", v))[0]
        )
    return rec


def _meta_device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_nccl_device(group, fn_name: str, named) -> None:
    """With NCCL, the collectives run on the current CUDA device, so every CUDA input must be
    there. A script that places its data on ``cuda:{local_rank}`` without calling
    ``torch.cuda.set_device`` would otherwise run every rank's collectives on cuda:0 (an NCCL
    error or a hang). Raised on this rank, before any collective."""
    if dist.get_backend(group) != "nccl":
        return
    current = torch.cuda.current_device()
    for name, t in named:
        dev = getattr(t, "device", None)  # a non-tensor is the checks' business (every rank)
        if not isinstance(dev, torch.device) or dev.type != "cuda":
            continue
        if (dev.index if dev.index is not None else current) != current:
            raise ValueError(
                f"ifm.distributed.{fn_name}: with the NCCL backend, {name} must be on the "
                f"current CUDA device (cuda:{current}), got {dev}; call "
                f"torch.cuda.set_device({dev}) (e.g. the LOCAL_RANK of torchrun) before the "
                f"first collective"
            )


class _Agreed:
    """What :func:`_exchange` returns: every rank's ``records`` (its numbers, in rank order),
    ``queries`` (every rank's queries, concatenated in rank order, when they came with the
    metadata; else ``None``) and ``fusable`` (every rank can send its queries with its
    metadata: see :func:`_remember`)."""

    __slots__ = ("records", "queries", "fusable")

    def __init__(self, records, queries, fusable):
        self.records, self.queries, self.fusable = records, queries, fusable


# Per process group and function, the layout of the queries of the group's previous call that
# took the "queries" strategy: (queries per rank, width, compute dtype). Every rank stores the
# same layout (it follows from the metadata all ranks agreed on), so every rank sizes the next
# call's fused messages alike. Weak keys: the entry goes with its group.
_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _remember(group, fn_name: str, agreed: _Agreed, strategy: str, width: int, cd) -> None:
    """Keeps the layout of this call's queries for the next call on ``group`` when it took the
    ``"queries"`` strategy and every rank can fuse (its queries live on the device of the
    group's metadata); else the next call starts with the plain metadata exchange. Called on
    every rank with the same arguments, so every rank's cache stays the same."""
    if strategy == "queries" and agreed.fusable:
        qcounts = tuple(rec["b"] for rec in agreed.records)
        _LAYOUTS.setdefault(group, {})[fn_name] = (qcounts, int(width), cd)


def _exchange(group, fn_name: str, check, meta: dict, numbers: tuple, queries=None) -> _Agreed:
    """Run ``check()`` locally (it returns this rank's ``numbers``: row counts, a plate's z),
    gather every rank's outcome and raise the same error on every rank when any rank failed or
    the ranks' ``_SAME_KEYS`` differ; returns every rank's numbers, in rank order (``_Agreed``).

    One exchange of a small int64 row per rank (the outcome, a hash of the metadata, the
    numbers, and two flags: this rank can fuse, this rank's queries follow); only when some rank
    failed or the hashes differ are the full records gathered (``all_gather_object``, a few
    times slower) to build the message.

    **Fused exchange.** When the previous call on ``group`` took the ``"queries"`` strategy
    (:func:`_remember`), every rank appends its queries (``queries()``: this rank's rows in the
    compute dtype) to its row, in a message sized from the remembered layout: ``len(row)``
    int64 plus the remembered rows of this rank, padded to whole int64. A rank whose queries do
    not fit that layout (other count, width or dtype, a failed check, another device) sends the
    row and zeros, with its flag clear. Every rank reads every row, so every rank knows whether
    all queries came (then the caller skips the gather of the queries) or not (then it gathers
    them as without a cache); errors are detected and raised as on the plain exchange.
    """
    layout = _LAYOUTS.get(group, {}).pop(fn_name, None)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    device = _meta_device(group)
    payload = None
    try:
        extra = check()
        err = None
        if queries is not None:
            payload = queries()
    except Exception as exc:  # noqa: BLE001  (sent to every rank and raised there)
        extra, err, payload = {}, _describe(exc), None
    record = dict(meta, **(extra or {}), error=err)
    fusable = payload is not None and payload.device == device
    valid = (
        fusable
        and layout is not None
        and (int(payload.shape[0]), int(payload.shape[1]), payload.dtype)
        == (layout[0][rank], layout[1], layout[2])
    )
    row = _encode(record, numbers) + [int(fusable), int(valid)]
    head = len(row)
    sizes = [head] * world
    if layout is not None:  # the fused message: the row, then the queries the layout says
        qcounts, width, dtype = layout
        sizes = [head + -(-c * width * dtype.itemsize // 8) for c in qcounts]
    msg = torch.zeros(sizes[rank], dtype=torch.int64, device=device)
    msg[:head] = torch.tensor(row, dtype=torch.int64)
    if valid:
        msg[head:].view(payload.dtype)[: payload.numel()] = payload.reshape(-1)
    out = _start_gather([msg[:, None]], [sizes], group)()[0][:, 0]
    offs = [sum(sizes[:r]) for r in range(world)]
    rows = torch.cat([out[o : o + head] for o in offs]).cpu().view(world, head).tolist()
    if all(r[0] == 0 and r[1] == rows[0][1] for r in rows):
        gathered = None
        if layout is not None and all(r[-1] for r in rows):
            pdtype = payload.dtype
            gathered = torch.cat(
                [
                    out[o + head : o + n].view(pdtype)[: c * layout[1]].view(c, layout[1])
                    for o, n, c in zip(offs, sizes, layout[0], strict=False)
                ]
            )
        records = [_decode(r, numbers) for r in rows]
        return _Agreed(records, gathered, all(r[-2] for r in rows))
    records = [None] * world
    dist.all_gather_object(records, record, group=group)
    for rank, rec in enumerate(records):
        if rec["error"] is not None:
            kind, text = rec["error"]
            raise _RAISED[kind](f"ifm.distributed.{fn_name}: rank {rank} of the group: {text}")
    for key in _SAME_KEYS:
        values = [rec.get(key) for rec in records]
        if any(v != values[0] for v in values):
            detail = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(
                f"ifm.distributed.{fn_name}: {key} must be the same on every rank "
                f"of the group, got {detail}"
            )
    return _Agreed([{key: rec.get(key) for key in numbers} for rec in records], None, False)


def _check_rows(name: str, t, width: int | None = None) -> None:
    """:func:`ifm._checks.check_matrix`, also accepting zero rows (a rank may hold none)."""
    if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[0] == 0:
        t = t.new_zeros(1, t.shape[1]) if t.dtype in _checks.FLOAT_DTYPES else t
    _checks.check_matrix(name, t, width=width)


def _choose(strategy: str, query_rows: int, charge_rows: int, partials: int, exact: bool) -> str:
    """``"auto"``: ``"queries"`` when it moves fewer rows than gathering the charges (the queries
    plus ``partials`` partial fields per query, against every charge row) and its partial
    fields merge without the extra pass (``exact``), else ``"allgather"``. Every input is the
    same on every rank, so is the choice."""
    if strategy != "auto":
        return strategy
    return "queries" if exact and query_rows * (1 + partials) < charge_rows else "allgather"


def _check_strategy(strategy) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def _tensor_meta(points) -> dict:
    if isinstance(points, torch.Tensor) and points.dim() == 2:
        return dict(width=int(points.shape[1]), dtype=str(points.dtype), device=points.device.type)
    return {}


def _values(named, plate_z, check_finite) -> bool:
    """The value checks of :func:`ifm.fields` (same switch: ``check_finite`` / IFM_CHECK_FINITE)
    on this rank's non-empty tensors; ``plate_z`` as in :func:`ifm._checks.check_values`.
    Returns whether they ran."""
    _checks.check_same_kind(named)
    if not _checks.value_checks(check_finite, named[0][1]):
        return False
    keep = [(nt, z) for nt, z in zip(named, plate_z, strict=False) if nt[1].shape[0] > 0]
    if keep:
        _checks.check_values([nt for nt, _ in keep], [z for _, z in keep])
    return True


# --------------------------------------------------------------------------------------------
# communication
# --------------------------------------------------------------------------------------------
# Backends whose all_gather is slower than exchanging the blocks point to point: Gloo's gathers
# 25 MB blocks between 2 CPU ranks 3-5x slower than batch_isend_irecv (BENCHMARKS.md).
P2P_GATHER_BACKENDS = ("gloo",)


def _gather(parts: list[torch.Tensor], counts: list[list[int]], group) -> list[torch.Tensor]:
    """For each ``parts[k]`` (this rank's ``[n, w]`` rows; ``counts[k][r]`` rows on rank r), the
    concatenation over the group's ranks in rank order (:func:`_start_gather`, waited for)."""
    return _start_gather(parts, counts, group)()


def _start_gather(parts: list[torch.Tensor], counts: list[list[int]], group):
    """Starts the gather of :func:`_gather` and returns the function that waits for it and
    returns the concatenations (the caller computes in between).

    Gloo: every rank sends its blocks to every other rank (``batch_isend_irecv``), received in
    place into the result. Other backends (NCCL): one ``all_gather_into_tensor`` per part of the
    rows padded to the largest count.
    """
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if dist.get_backend(group) not in P2P_GATHER_BACKENDS:
        pending = [
            _start_allgather_padded(t, c, group) for t, c in zip(parts, counts, strict=False)
        ]
        return lambda: [finish() for finish in pending]
    outs, ops = [], []
    for tag, (t, cnt) in enumerate(zip(parts, counts, strict=False)):
        offs = [sum(cnt[:r]) for r in range(world)]
        out = t.new_empty(sum(cnt), t.shape[1])
        out[offs[rank] : offs[rank] + cnt[rank]] = t
        outs.append(out)
        for k in range(1, world):
            dst, src = (rank + k) % world, (rank - k) % world
            if cnt[rank] > 0:
                ops.append(_p2p(dist.isend, t.contiguous(), dst, group, tag))
            if cnt[src] > 0:
                ops.append(_p2p(dist.irecv, out[offs[src] : offs[src] + cnt[src]], src, group, tag))
    reqs = _start(ops, "the gather")

    def finish():
        _wait(reqs, "the gather")
        return outs

    return finish


def _p2p(op, t, peer, group, tag=0):
    return dist.P2POp(op, t, dist.get_global_rank(group, peer), group=group, tag=tag)


def _start(ops, what):
    if not ops:
        return []
    with _peers(what):
        return dist.batch_isend_irecv(ops)


def _wait(reqs, what):
    with _peers(what):
        for req in reqs:
            req.wait()


def _all_to_all(parts: list[torch.Tensor], counts: list[int], group) -> list[torch.Tensor]:
    """The transpose of a gather: ``parts[k]`` holds rows for every rank (``counts[r]`` rows for
    rank r, in rank order); returns for each k the ``[world, counts[rank], w]`` blocks that
    every rank (in rank order) holds for this rank. Gloo: ``batch_isend_irecv``; other backends:
    ``all_to_all_single``."""
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    offs = [sum(counts[:r]) for r in range(world)]
    mine = counts[rank]
    outs = [t.new_empty(world, mine, t.shape[1]) for t in parts]
    if dist.get_backend(group) not in P2P_GATHER_BACKENDS:
        with _peers("the exchange of partial fields"):
            for t, out in zip(parts, outs, strict=False):
                dist.all_to_all_single(
                    out.view(world * mine, t.shape[1]),
                    t.contiguous(),
                    output_split_sizes=[mine] * world,
                    input_split_sizes=counts,
                    group=group,
                )
        return outs
    ops = []
    for tag, (t, out) in enumerate(zip(parts, outs, strict=False)):
        out[rank] = t[offs[rank] : offs[rank] + mine]
        for k in range(1, world):
            dst, src = (rank + k) % world, (rank - k) % world
            if counts[dst] > 0:
                block = t[offs[dst] : offs[dst] + counts[dst]].contiguous()
                ops.append(_p2p(dist.isend, block, dst, group, tag))
            if mine > 0:
                ops.append(_p2p(dist.irecv, out[src], src, group, tag))
    _wait(_start(ops, "the exchange of partial fields"), "the exchange of partial fields")
    return outs


class _peers:
    """Context for a heavy collective: a failure there (a peer raised or left, or the process
    group's timeout expired) is re-raised as a RuntimeError that says so."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if (
            kind is not None
            and issubclass(kind, RuntimeError)
            and not str(exc).startswith("ifm.distributed")
        ):
            raise RuntimeError(
                f"ifm.distributed: {self.what} with the group's other ranks failed "
                f"(a rank raised or left, or the process group's timeout "
                f"expired): {exc}"
            ) from exc
        return False


def _start_allgather_padded(t: torch.Tensor, counts: list[int], group):
    """Starts the concatenation over the group's ranks of ``t`` (``counts[r]`` rows on rank r),
    one ``all_gather_into_tensor`` of the rows padded to the largest count; returns the function
    that waits for it and returns the concatenation."""
    world = len(counts)
    top = max(counts)
    send = t.contiguous()
    if any(c != top for c in counts):
        send = t.new_zeros(top, t.shape[1])
        send[: t.shape[0]] = t
    out = t.new_empty(world * top, t.shape[1])
    with _peers("the gather"):
        work = _gather_single(out, send, group=group, async_op=True)

    def finish():
        _wait([work], "the gather")
        if all(c == top for c in counts):
            return out
        return torch.cat([out[r * top : r * top + counts[r]] for r in range(world)], 0)

    return finish


def _ring(own: torch.Tensor, counts: list[int], group, consume) -> None:
    """Pass ``own`` (this rank's rows; ``counts[r]`` rows on rank r) around the ring; call
    ``consume(chunk, origin)`` on each of the ``world`` chunks while the next is in flight."""
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    nxt_peer = dist.get_global_rank(group, (rank + 1) % world)
    prv_peer = dist.get_global_rank(group, (rank - 1) % world)
    cur = own
    for step in range(world):
        origin = (rank - step) % world
        reqs, incoming = [], None
        if step < world - 1:
            ops = []
            if counts[origin] > 0:
                ops.append(dist.P2POp(dist.isend, cur, nxt_peer, group=group))
            src = (rank - step - 1) % world
            incoming = own.new_empty(counts[src], own.shape[1])
            if counts[src] > 0:
                ops.append(dist.P2POp(dist.irecv, incoming, prv_peer, group=group))
            if ops:
                with _peers("the ring exchange"):
                    reqs = dist.batch_isend_irecv(ops)
        if counts[origin] > 0:
            consume(cur, origin)
        with _peers("the ring exchange"):
            for req in reqs:
                req.wait()
        if incoming is not None:
            cur = incoming


def all_gather_rows(t: torch.Tensor, group=None):
    """``(concatenation over the group's ranks of the rows of t, per-rank row counts)``; ranks
    may hold different numbers of rows (zero included) of the same width and dtype."""
    group = resolve_group(group)
    _check_nccl_device(group, "all_gather_rows", [("t", t)])
    records = [None] * dist.get_world_size(group)
    dist.all_gather_object(
        records, (int(t.shape[0]), tuple(t.shape[1:]), str(t.dtype)), group=group
    )
    if len({r[1:] for r in records}) > 1:
        detail = ", ".join(f"rank {i}: {r[1]} {r[2]}" for i, r in enumerate(records))
        raise ValueError(
            f"ifm.distributed.all_gather_rows: every rank must pass rows of one "
            f"shape and dtype, got {detail}"
        )
    counts = [r[0] for r in records]
    flat = t.detach().reshape(t.shape[0], -1)
    return _gather([flat], [counts], group)[0].reshape(-1, *t.shape[1:]), counts


def broadcast_from_first(fn, group=None):
    """``fn()`` evaluated on the group's first rank and broadcast to every rank (an exception
    there is raised on every rank)."""
    group = resolve_group(group)
    box = [None]
    if dist.get_rank(group) == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001  (re-raised on every rank below)
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(
            f"ifm.distributed.broadcast_from_first: the group's first rank raised {value}"
        )
    return value


# --------------------------------------------------------------------------------------------
# log-normalisers of one chunk (float64, from the chunk's distances)
# --------------------------------------------------------------------------------------------
def _offset_sqnorm(x, A, tau=None, Delta=None):
    """``||(x_i - A_j) - tau_i Delta_j||^2`` ``[b, B]`` in float64 (``tau``/``Delta`` omitted:
    ``||x_i - A_j||^2``): GEMM expansion, with the entries that lose digits to cancellation
    recomputed from the differences."""
    x, A = x.double(), A.double()
    xx = (x * x).sum(1, keepdim=True)
    AA = (A * A).sum(1)[None]
    r2 = torch.addmm(xx + AA, x, A.T, alpha=-2.0)
    scale = xx.sqrt() + AA.sqrt()
    if Delta is not None:
        Delta = Delta.double()
        tau = tau.double().reshape(-1, 1)
        DD = (Delta * Delta).sum(1)[None]
        r2 += tau * (tau * DD + 2.0 * (A * Delta).sum(1)[None] - 2.0 * (x @ Delta.T))
        scale = scale + tau.abs() * DD.sqrt()
    redo = (r2 < _CANCEL * scale * scale).nonzero()
    step = max(1, _PAIR_BLOCK // max(x.shape[1], 1))
    for k in range(0, redo.shape[0], step):
        i, j = redo[k : k + step, 0], redo[k : k + step, 1]
        rho = x[i] - A[j]
        if Delta is not None:
            rho = rho - tau[i] * Delta[j]
        r2[i, j] = (rho * rho).sum(1)
    return r2.clamp_min(0.0)


def _coulomb_lognorm(points, charges):
    """``(max_j l_ij, logsumexp_j l_ij)`` of the Coulomb logits ``l = -DIM log(d + 1e-7)``."""
    DIM = points.shape[1]
    logit = -DIM * torch.log(_offset_sqnorm(points, charges).sqrt() + reference.COULOMB_D_EPS)
    return logit.amax(1), torch.logsumexp(logit, 1)


def _string_logmax(points, quarks, antiquarks, L, sigma0, K, d):
    """``max_j log w_ij`` of the string weights (``-inf`` where a row has no weight)."""
    p = points.double()
    z, x = p[:, :1], p[:, 1:]
    A = quarks[:, 1:].double()
    Delta = antiquarks[:, 1:].double() - A
    r2 = _offset_sqnorm(x, A, z / L, Delta)
    s = reference.tube_width(z, L, sigma0, K, d)
    kappa = reference.tube_slope(z, L, K, d)
    expo, den, _, _ = reference.string_pair_terms(r2, s, kappa, sigma0, points.shape[1] - 1)
    inside = (z >= 0) & (z <= L)
    logw = torch.where(inside, expo - torch.log(den), torch.full_like(expo, -math.inf))
    return logw.amax(1)


def _partial_op(backend: str, device: torch.device):
    """The compiled op that returns a plate's field with its Coulomb log-normalisers
    (``ifm::coulomb_plate_partial`` on the CPU and CUDA kernels,
    ``ifm::coulomb_plate_partial_triton``), or ``None`` for the reference backend: then
    :func:`_plate_partial` computes them with torch."""
    which = fields._resolve_backend(backend, device, "coulomb_field")
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(which)
    if key is not None and _ops.has_kernel("coulomb_plate_partial", key):
        return torch.ops.ifm.coulomb_plate_partial.default
    if which == "triton" and hasattr(torch.ops.ifm, "coulomb_plate_partial_triton"):
        return torch.ops.ifm.coulomb_plate_partial_triton.default
    return None


def _plate_partial(rows, charges, backend: str, op):
    """One plate's softmax-weighted mean field at ``rows`` (no plate or final normalisation,
    ``sum_eps`` 0) and its ``[n, 2]`` float64 ``(max_j l_ij, logsumexp_j l_ij)``; zeros and
    ``-inf`` without rows or charges."""
    n = rows.shape[0]
    if n == 0 or charges.shape[0] == 0:
        return rows.new_zeros(n, rows.shape[1]), torch.full(
            (n, 2), -math.inf, dtype=torch.float64, device=rows.device
        )
    if op is not None:
        return op(rows, charges)
    # the single-plate field of ifm.fields wants its charges at z = 0: shifting queries and
    # charges by the plate's z keeps every difference p - c as the kernel computes it
    # (fl(z_p - z_c) either way)
    shift = torch.cat([charges[:1, :1], torch.zeros_like(charges[:1, 1:])], 1)
    ps, cs = rows - shift, charges - shift
    part = fields.coulomb_field(
        ps, cs, None, plate_gamma=None, normalize=False, backend=backend, check_finite=False
    )
    m, lse = _coulomb_lognorm(ps, cs)
    return part, torch.stack([m, lse], 1)


def _by_queries(p, qcounts: list[int], group, partial, allq=None) -> list[torch.Tensor]:
    """The ``"queries"`` strategy's communication: gathers every rank's queries, evaluates
    ``partial(rows)`` (a list of ``[n, k]`` tensors: this rank's charges' partial fields at
    ``rows``) at all of them in one call and sends each rank its rows. Returns per tensor of
    ``partial`` the ``[world, b, k]`` blocks that every rank (in rank order) computed for this
    rank's queries.

    The gather is waited for before computing: on a machine whose cores all compute (one rank
    per core), a transfer left in flight waits for a free core, and one call over all rows is
    faster than two over their halves. ``allq``: the queries when they came with the metadata
    (the fused exchange of :func:`_exchange`), then not gathered again. The partial fields
    travel as one message per pair of ranks: packed side by side in the queries' dtype (float64
    columns reinterpreted)."""
    if allq is None:
        allq = _gather([p], [qcounts], group)[0]
    parts = partial(allq)
    views = [t.contiguous().view(p.dtype) for t in parts]
    block = _all_to_all([torch.cat(views, 1)], qcounts, group)[0]
    out, col = [], 0
    for t, v in zip(parts, views, strict=False):
        k = v.shape[1]
        # a fresh copy starts at offset 0, so float64 columns reinterpret at any width
        out.append(
            block[:, :, col : col + k].clone(memory_format=torch.contiguous_format).view(t.dtype)
        )
        col += k
    return out


def _rescale(acc, m_acc, part, m_part):
    """Online merge of ``acc * exp(m_acc)`` and ``part * exp(m_part)`` in units of the larger
    exponent; rows whose exponents are both ``-inf`` stay zero."""
    m = torch.maximum(m_acc, m_part)
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    a = torch.where(torch.isfinite(m_acc), torch.exp(m_acc - safe), torch.zeros_like(m_acc))
    b = torch.where(torch.isfinite(m_part), torch.exp(m_part - safe), torch.zeros_like(m_part))
    return acc * a[:, None] + part * b[:, None], m


def _average(acc, lse_acc, part, lse_part):
    """Online merge of two softmax-weighted averages with log total weights ``lse_acc`` and
    ``lse_part``: the average over the union and its log total weight."""
    lse = torch.logaddexp(lse_acc, lse_part)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    a = torch.where(torch.isfinite(lse_acc), torch.exp(lse_acc - safe), torch.zeros_like(lse))
    b = torch.where(torch.isfinite(lse_part), torch.exp(lse_part - safe), torch.zeros_like(lse))
    return acc * a[:, None] + part * b[:, None], lse


# --------------------------------------------------------------------------------------------
# string field
# --------------------------------------------------------------------------------------------
def string_field(
    points: torch.Tensor,
    quarks: torch.Tensor,
    antiquarks: torch.Tensor,
    *,
    L: float,
    sigma0: float,
    K: float | None = None,
    d: float | None = None,
    normalize: bool = False,
    eps: float = 1e-5,
    stable: bool = False,
    backend: str = "auto",
    check_finite: bool | None = None,
    group=None,
    strategy: str = "auto",
) -> torch.Tensor:
    """:func:`ifm.fields.string_field` of this rank's ``points`` against the pairs of every rank
    of ``group`` (default: the world), in rank order.

    Ranks may hold different numbers of queries and pairs (zero included; the group needs at
    least one pair). Keyword arguments must be equal on every rank. ``strategy``:
    ``"auto"`` (default), ``"allgather"``, ``"queries"`` or ``"ring"`` (module docstring).
    Returns ``[b, D+1]`` (this rank's rows).
    """
    group = resolve_group(group)
    _check_nccl_device(
        group, "string_field", [("points", points), ("quarks", quarks), ("antiquarks", antiquarks)]
    )
    public = dict(
        L=L,
        sigma0=sigma0,
        K=K,
        d=d,
        normalize=normalize,
        eps=eps,
        stable=stable,
        backend=backend,
        check_finite=check_finite,
        strategy=strategy,
    )

    def check():
        _check_strategy(strategy)
        _check_rows("points", points)
        width = points.shape[1]
        _check_rows("quarks", quarks, width=width)
        _check_rows("antiquarks", antiquarks, width=width)
        if quarks.shape[0] != antiquarks.shape[0]:
            raise ValueError(
                f"quarks and antiquarks must have the same number of rows "
                f"(index-aligned pairs), got {quarks.shape[0]} and "
                f"{antiquarks.shape[0]}"
            )
        geo = _checks.string_geometry(L, sigma0, K, d)
        _checks.check_scalar("eps", eps, allow_zero=True)
        for name, v in (("normalize", normalize), ("stable", stable)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {v!r}")
        named = [("points", points), ("quarks", quarks), ("antiquarks", antiquarks)]
        _values(named, [_checks.NO_PLATE, 0.0, geo[0]], check_finite)
        cd = _checks.compute_dtype(points.dtype)
        _checks.check_params_fit(cd, L=geo[0], sigma0=geo[1], K=geo[2], d=geo[3], eps=eps)
        fields._resolve_backend(backend, points.device, "string_field")
        return dict(b=int(points.shape[0]), B=int(quarks.shape[0]))

    agreed = _exchange(
        group,
        "string_field",
        check,
        dict(_tensor_meta(points), kwargs=repr(sorted(public.items()))),
        ("b", "B"),
        queries=lambda: points.detach().to(_checks.compute_dtype(points.dtype)),
    )
    records = agreed.records
    counts = [rec["B"] for rec in records]
    if sum(counts) == 0:
        raise ValueError(
            "ifm.distributed.string_field: quarks must have at least one row on "
            "some rank of the group, every rank has zero pairs"
        )
    width = points.shape[1]
    cd = _checks.compute_dtype(points.dtype)
    kw = dict(L=L, sigma0=sigma0, K=K, d=d, eps=eps, backend=backend, check_finite=False)
    strategy = _choose(strategy, sum(r["b"] for r in records), 2 * sum(counts), 1, not stable)
    _remember(group, "string_field", agreed, strategy, width, cd)
    with torch.no_grad():
        p = points.detach().to(cd)
        if strategy == "allgather":
            q, a = _gather([quarks.detach(), antiquarks.detach()], [counts, counts], group)
            if p.shape[0] == 0:
                return points.new_zeros(0, width)
            return fields.string_field(
                p, q.to(cd), a.to(cd), normalize=normalize, stable=stable, **kw
            ).to(points.dtype)
        Lc, sigma0c, Kc, dc = _checks.string_geometry(L, sigma0, K, d)
        Lc = float(torch.tensor(Lc, dtype=cd))
        dc = min(dc, Lc / 2.0)
        geo = (Lc, sigma0c, Kc, dc)
        E = torch.zeros(p.shape[0], width, dtype=torch.float64, device=p.device)
        m = torch.full((p.shape[0],), -math.inf, dtype=torch.float64, device=p.device)
        if strategy == "queries":
            qo, ao = quarks.detach().to(cd), antiquarks.detach().to(cd)
            qcounts = [rec["b"] for rec in records]
            blocks = _by_queries(
                p,
                qcounts,
                group,
                lambda rows: _string_partial(rows, qo, ao, stable, kw, geo),
                agreed.queries,
            )
            for r in range(len(qcounts)):
                E, m = _add_string(E, m, [blk[r] for blk in blocks], stable)
        else:  # ring: raw sums (or stable units) per chunk, merged online
            state = {"E": E, "m": m}

            def consume(chunk, origin):
                n = counts[origin]
                part = _string_partial(p, chunk[:n].to(cd), chunk[n:].to(cd), stable, kw, geo)
                state["E"], state["m"] = _add_string(state["E"], state["m"], part, stable)

            own = torch.cat([quarks.detach(), antiquarks.detach()], 0)
            _ring(own, [2 * c for c in counts], group, consume)
            E = state["E"]
        if normalize:
            norm = fields.string_kernel_args(width, normalize=True, eps=eps)
            E = reference.normalize_rows(E, norm["norm_scale"], norm["eps"])
        return E.to(points.dtype)


def _add_string(E, m, part, stable):
    """``(E, m)`` with one :func:`_string_partial` result merged in: a plain sum (raw field) or
    the online rescaling of ``stable`` units."""
    if stable:
        return _rescale(E, m, part[0].double(), part[1][:, 0])
    return E + part[0].double(), m


def _string_partial(rows, quarks, antiquarks, stable, kw, geo) -> list[torch.Tensor]:
    """The raw string field at ``rows`` of one set of pairs, ``[E]`` (``stable``:
    ``[E / max_j w_ij, max_j log w_ij as a column]``); zeros (and ``-inf``) without rows or
    pairs."""
    n = rows.shape[0]
    if n == 0 or quarks.shape[0] == 0:
        E = rows.new_zeros(n, rows.shape[1])
        m = torch.full((n, 1), -math.inf, dtype=torch.float64, device=rows.device)
    else:
        E = fields.string_field(rows, quarks, antiquarks, normalize=False, stable=stable, **kw)
        m = _string_logmax(rows, quarks, antiquarks, *geo)[:, None] if stable else None
    return [E, m] if stable else [E]


# --------------------------------------------------------------------------------------------
# Coulomb field
# --------------------------------------------------------------------------------------------
def coulomb_field(
    points: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    plate_gamma=fields._DEFAULT,
    normalize=False,
    eps: float | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
    group=None,
    strategy: str = "auto",
) -> torch.Tensor:
    """:func:`ifm.fields.coulomb_field` of this rank's ``points`` against the charges of every
    rank of ``group`` (default: the world), in rank order.

    Ranks may hold different numbers of queries and charges per plate (zero included; each plate
    needs at least one charge in the group); ``negative`` is ``None`` on every rank or on none.
    ``strategy``: ``"auto"`` (default), ``"allgather"``, ``"queries"`` or ``"ring"`` (module
    docstring). Returns ``[b, D+1]``.
    """
    group = resolve_group(group)
    _check_nccl_device(
        group, "coulomb_field", [("points", points), ("positive", positive), ("negative", negative)]
    )
    two = negative is not None
    public = dict(
        plate_gamma=None if plate_gamma is fields._DEFAULT else plate_gamma,
        default_gamma=plate_gamma is fields._DEFAULT,
        normalize=normalize,
        eps=eps,
        backend=backend,
        check_finite=check_finite,
        strategy=strategy,
    )

    def check():
        _check_strategy(strategy)
        _check_rows("points", points)
        width = points.shape[1]
        _check_rows("positive", positive, width=width)
        named = [("points", points), ("positive", positive)]
        if two:
            _check_rows("negative", negative, width=width)
            named.append(("negative", negative))
        if plate_gamma is not fields._DEFAULT and plate_gamma is not None:
            _checks.check_scalar("plate_gamma", plate_gamma, allow_zero=True)
        if not isinstance(normalize, (bool, str)) or normalize not in (False, True, "pfgm"):
            raise ValueError(f"normalize must be False, True or 'pfgm', got {normalize!r}")
        if eps is not None:
            _checks.check_scalar("eps", eps, allow_zero=True)
        kw = fields.coulomb_kernel_args(
            width, two_plates=two, plate_gamma=plate_gamma, normalize=normalize, eps=eps
        )
        zs = [_checks.NO_PLATE, 0.0] + ([_checks.PLATE_AT_ROW_0] if two else [])
        checked = _values(named, zs, check_finite)
        cd = _checks.compute_dtype(points.dtype)
        _checks.check_params_fit(cd, eps=kw["eps"], plate_gamma=kw["plate_gamma"])
        plate_z = None  # the ranks' plates are compared when the value checks run
        if checked and two and negative.shape[0] > 0:
            plate_z = _checks.round_to(float(negative[0, 0]), cd)
        return dict(
            exact=int(_partial_op(backend, points.device) is not None),
            b=int(points.shape[0]),
            Bp=int(positive.shape[0]),
            Bn=int(negative.shape[0]) if two else 0,
            neg_z=plate_z,
        )

    agreed = _exchange(
        group,
        "coulomb_field",
        check,
        dict(_tensor_meta(points), kwargs=repr(sorted(public.items())), negative=two),
        ("b", "Bp", "Bn", "neg_z", "exact"),
        queries=lambda: points.detach().to(_checks.compute_dtype(points.dtype)),
    )
    records = agreed.records
    cp = [rec["Bp"] for rec in records]
    cn = [rec["Bn"] for rec in records]
    zs = sorted({rec["neg_z"] for rec in records if rec["neg_z"] is not None})
    if len(zs) > 1:
        raise ValueError(
            f"ifm.distributed.coulomb_field: negative: column 0 (the plate z = L) "
            f"must be the same on every rank, got {zs}"
        )
    if sum(cp) == 0 or (two and sum(cn) == 0):
        name = "positive" if sum(cp) == 0 else "negative"
        raise ValueError(
            f"ifm.distributed.coulomb_field: {name} must have at least one row on "
            f"some rank of the group, every rank has zero charges"
        )
    width = points.shape[1]
    cd = _checks.compute_dtype(points.dtype)
    kw = fields.coulomb_kernel_args(
        width, two_plates=two, plate_gamma=plate_gamma, normalize=normalize, eps=eps
    )
    counts = [a + b for a, b in zip(cp, cn, strict=False)]
    op = _partial_op(backend, points.device)
    # every rank's kernels must return the log-normalisers for "auto" to take "queries" (a
    # rank's backend may differ from its peers': GPU arch, Triton installed)
    exact = all(r["exact"] for r in records)
    strategy = _choose(strategy, sum(r["b"] for r in records), sum(counts), 1 + two, exact)
    _remember(group, "coulomb_field", agreed, strategy, width, cd)
    with torch.no_grad():
        p = points.detach().to(cd)
        if strategy == "allgather":
            if two:
                pos, neg = _gather([positive.detach(), negative.detach()], [cp, cn], group)
            else:
                (pos,), neg = _gather([positive.detach()], [cp], group), None
            if p.shape[0] == 0:
                return points.new_zeros(0, width)
            out = fields.coulomb_field(
                p,
                pos.to(cd),
                None if neg is None else neg.to(cd),
                plate_gamma=plate_gamma,
                normalize=normalize,
                eps=eps,
                backend=backend,
                check_finite=False,
            )
            return out.to(points.dtype)
        b = p.shape[0]
        f64 = dict(dtype=torch.float64, device=p.device)
        plates = [
            {
                "E": torch.zeros(b, width, **f64),
                "m": torch.full((b,), -math.inf, **f64),
                "lse": torch.full((b,), -math.inf, **f64),
            }
            for _ in range(1 + two)
        ]

        def merge(st, part, lognorm):
            st["E"], st["lse"] = _average(st["E"], st["lse"], part.double(), lognorm[:, 1])
            st["m"] = torch.maximum(st["m"], lognorm[:, 0])

        if strategy == "queries":
            own = [positive.detach().to(cd)] + ([negative.detach().to(cd)] if two else [])

            def partial(rows):
                return [t for ch in own for t in _plate_partial(rows, ch, backend, op)]

            qcounts = [rec["b"] for rec in records]
            blocks = _by_queries(p, qcounts, group, partial, agreed.queries)
            for r in range(len(qcounts)):
                for k, st in enumerate(plates):
                    merge(st, blocks[2 * k][r], blocks[2 * k + 1][r])
        else:  # ring

            def consume(chunk, origin):
                if b == 0:
                    return
                chunk = chunk.to(cd)
                for k, part in enumerate((chunk[: cp[origin]], chunk[cp[origin] :])[: 1 + two]):
                    if part.shape[0] > 0:
                        merge(plates[k], *_plate_partial(p, part, backend, op))

            own = (
                positive.detach()
                if not two
                else torch.cat([positive.detach(), negative.detach()], 0)
            )
            _ring(own, counts, group, consume)
        terms = []
        for st in plates:
            # the kernel's sum_eps is relative to the largest weight: Z / (Z + sum_eps)
            Z = torch.exp(st["lse"] - st["m"])
            terms.append(st["E"] * (Z / (Z + kw["sum_eps"]))[:, None])
        E = reference.combine_plates(terms[0], terms[1] if two else None, width, kw["plate_gamma"])
        if kw["normalize"]:
            E = reference.normalize_rows(E, kw["norm_scale"], kw["eps"])
        return E.to(points.dtype)
