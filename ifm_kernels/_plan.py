"""Launch plan of the Triton kernels: block sizes and grids from the shapes and the device.

:func:`make_plan` is a pure function of hashable arguments (ints, a frozen :class:`Profile`), so
a caller may cache it. Every block size is a power of two.
"""

from __future__ import annotations

import dataclasses

GRID_YZ_MAX = 65535  # CUDA: the most blocks along a grid's axis 1 or 2


def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


@dataclasses.dataclass(frozen=True)
class Profile:
    """Constants of the block-size rule for one kind of device.

    ``dist_tile_bytes`` / ``sums_tile_bytes``: bytes of data in the 3-D register tile
    ``[BI, BJ, BK]`` of the distance and the sums pass (elements = bytes // itemsize; each pass
    also holds a 3-D accumulator of that size); ``coulomb_dist_*``: the distance pass of the
    Coulomb form, which loads one pair tensor instead of two and so affords a larger tile (fewer
    L2 re-reads of the queries and charges); ``row_budget``: elements of the 2-D float64
    tiles of the coefficient and finalisation passes; ``sm_count`` x ``resident``: programs
    resident at once (one wave); ``min_steps_per_slice``: fewest BK steps a column slice of the
    distance pass gets; ``sums_maxnreg``: register cap of the sums pass (``maxnreg``; 0 = the
    compiler's choice); ``fast_fp64``: the device runs float64 at half the float32 rate or
    better (False on consumer GPUs, 1/32 to 1/64: float32 data then gets the float32
    coefficient pass, :attr:`Plan.coef_f32`); ``sums_bi_max_f32``: the sums pass's row cap for
    float32 data (0: ``sums_bi_max``).
    """

    name: str
    sm_count: int
    resident: int
    dist_tile_bytes: int
    sums_tile_bytes: int
    row_budget: int
    dist_bi_max: int
    dist_bj_max: int
    coulomb_dist_tile_bytes: int
    coulomb_dist_bi_max: int
    coulomb_dist_bj_max: int
    sums_bi_max: int
    sums_bj_max: int
    sums_bk_max: int
    min_steps_per_slice: int
    num_warps: int
    sums_maxnreg: int = 0
    fast_fp64: bool = True
    sums_bi_max_f32: int = 0

    def __post_init__(self):
        # hashed on every cached-plan lookup: the field tuple's hash, computed once
        object.__setattr__(self, "_hash", hash(dataclasses.astuple(self)))

    def __hash__(self) -> int:
        return self._hash

    def sums_rows_cap(self, itemsize: int) -> int:
        """The sums pass's cap on query rows per program for data of ``itemsize`` bytes."""
        return self.sums_bi_max_f32 if itemsize == 4 and self.sums_bi_max_f32 else self.sums_bi_max

    @property
    def slots(self) -> int:
        """Programs resident on the whole device at once (one wave)."""
        return max(self.sm_count * self.resident, 1)


# CUDA compute capabilities whose FP64 rate is half the FP32 rate (P100, V100, A100/A30, H100/H200,
# B200); every other part (T4, RTX 30xx/40xx/50xx, L4, L40, A10, ...) runs FP64 at 1/32 to 1/64.
FAST_FP64_CAPABILITIES = frozenset({(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)})


def fast_fp64(major: int, minor: int) -> bool:
    """Whether a GPU of compute capability ``major.minor`` runs float64 at half the float32 rate."""
    return (int(major), int(minor)) in FAST_FP64_CAPABILITIES


def gpu_profile(sm_count: int, fast_fp64: bool = True) -> Profile:
    """GPU: 4 warps (128 threads) per program, planned for 4 programs resident per SM, so one
    wave is ``4 x sm_count`` programs (528 on an H100, 432 on an A100). Most float32 kernels
    compile to <= 128 registers per thread on sm_80 / sm_90 (4 resident); the string form of
    the sums pass would take 141 (3 resident) and is capped at 128 (``maxnreg``; no spills, one
    more instruction per loop iteration). benchmarks/gpu_model.py reports each kernel's
    registers and charges the residency they allow. ``fast_fp64``: see :class:`Profile`; the
    consumer parts it is False for also have about half the L2 bandwidth per FP32 FLOP of the
    data-centre parts (RTX 4090: 3.5 TB/s for 83 TFLOP/s; H100: 7 TB/s for 67), so their sums
    pass takes up to 16 query rows per program instead of 8 for float32 data: each pair tile
    read from L2 serves twice the rows (model, RTX 4090: W2S 200 -> 172 us, PFGM 642 -> 575).
    On an H100, and for float64 data (FP64-bound there), the union of 16 rows' live blocks
    costs more issue than the traffic it saves."""
    return Profile(
        "gpu",
        sm_count=max(int(sm_count), 1),
        resident=4,
        dist_tile_bytes=16384,
        sums_tile_bytes=16384,
        row_budget=256,
        dist_bi_max=16,
        dist_bj_max=32,
        coulomb_dist_tile_bytes=32768,
        coulomb_dist_bi_max=32,
        coulomb_dist_bj_max=32,
        sums_bi_max=8,
        sums_bi_max_f32=8 if fast_fp64 else 16,
        sums_bj_max=64,
        sums_bk_max=16,
        min_steps_per_slice=8,
        num_warps=4,
        sums_maxnreg=128,
        fast_fp64=bool(fast_fp64),
    )


# The interpreter runs programs one after another with numpy: few, large programs are fast.
INTERPRETER_PROFILE = Profile(
    "interpreter",
    sm_count=1,
    resident=1,
    dist_tile_bytes=1 << 19,
    sums_tile_bytes=1 << 19,
    row_budget=1 << 17,
    dist_bi_max=64,
    dist_bj_max=64,
    coulomb_dist_tile_bytes=1 << 19,
    coulomb_dist_bi_max=64,
    coulomb_dist_bj_max=64,
    sums_bi_max=64,
    sums_bj_max=1 << 12,
    sums_bk_max=1 << 14,
    min_steps_per_slice=1,
    num_warps=1,
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Launch parameters of one plate / pair set (see :func:`make_plan`)."""

    # distance pass
    dist_bi: int
    dist_bj: int
    dist_bk: int
    nslices: int
    cols_per_slice: int
    dist_grid: tuple
    # coefficient pass (per field): programs (block of sums_bi rows, chunk of coef_chunk_len
    # pairs); the live-block list of a row block has one segment of seg_len per chunk
    coef_br: int
    coef_bj: int
    coef_chunks: int
    coef_chunk_len: int
    coef_grid: tuple
    seg_len: int
    list_stride: int
    # weighted sums; sums_blocks = pair blocks of sums_bj (length of a live-block list)
    sums_bi: int
    sums_bj: int
    sums_bk: int
    sums_blocks: int
    sums_tiles: tuple  # (row blocks, column blocks)
    # finalisation
    fin_br: int
    fin_bw: int
    fin_grid: tuple
    num_warps: int
    sums_maxnreg: int = 0
    # the coefficient pass in float32 (float32 data on a device without fast float64,
    # docs/FIELDS.md §7); else in float64
    coef_f32: bool = False

    @property
    def sums_grid(self) -> tuple:
        """``(row blocks, column blocks, 1)``; past CUDA's 65535 blocks on axis 1 (D ~ 1M) the
        column blocks go in slices of ``GRID_YZ_MAX`` along axis 2."""
        rows, cols = self.sums_tiles
        return (rows, min(cols, GRID_YZ_MAX), cdiv(cols, GRID_YZ_MAX))


def sm_cost(programs: int, work: float, profile: Profile) -> float:
    """Time of the most loaded SM, in units of one program's ``work`` at full issue rate: its
    ``ceil(programs / sm_count)`` programs run in rounds of up to ``resident``; a round with
    fewer than 4 warps per scheduler (4 schedulers per SM) runs at that fraction of the rate
    (latency not hidden). The same rule as benchmarks/gpu_model.py."""
    left, t = cdiv(programs, profile.sm_count), 0.0
    while left > 0:
        m = min(left, profile.resident)
        t += m * work / min(1.0, m * profile.num_warps / 16.0)
        left -= m
    return t


def _slices(tiles: int, steps: int, profile: Profile) -> int:
    """Column slices of the distance pass: the S in ``1 .. steps // min_steps_per_slice``
    with the least :func:`sm_cost` (work ``ceil(steps / S)`` BK steps per program), the
    smallest S within 5 % of the least (fewest partials): whole waves (on 132 SMs x 4, 512
    programs cost one round, 544 a second round of one program per SM at a quarter of the
    rate). At most ``16 x slots`` programs, so the partial buffer stays O(b B) for a device."""
    best, best_cost = 1, None
    top = min(max(1, steps // profile.min_steps_per_slice), max(1, 16 * profile.slots // tiles))
    for s in range(1, top + 1):
        cost = sm_cost(tiles * s, cdiv(steps, s), profile)
        if best_cost is None or cost < best_cost * 0.95:
            best, best_cost = s, cost
    return best


def _sums_blocks(rows: int, ncols: int, budget: int, profile: Profile, bi_max: int):
    """``(BI, BK)`` of the sums pass: among powers of two up to the caps with ``BI BK <=
    budget``, the pair with the least :func:`sm_cost`, a program's work taken as ``BI BK (1 +
    2 / BI + 1 / BK)`` (per element: the FMAs, the pair tile loads shared by BI rows, the
    coefficient loads shared by BK columns); the larger BI on ties. ``bi_max``: the cap on BI."""
    best = None
    bi = min(next_pow2(rows), bi_max)
    while bi >= 1:
        bk = min(next_pow2(ncols), profile.sums_bk_max)
        while bk >= 1:
            if bi * bk <= max(budget, 1):
                progs = cdiv(rows, bi) * cdiv(ncols, bk)
                cost = sm_cost(progs, bi * bk + 2 * bk + bi, profile)
                if best is None or cost < best[0] * (1 - 1e-9):
                    best = (cost, bi, bk)
            bk //= 2
        bi //= 2
    return best[1], best[2]


def make_plan(
    rows: int,
    n: int,
    ncols: int,
    width: int,
    profile: Profile,
    itemsize: int = 4,
    *,
    string: bool = False,
) -> Plan:
    """Block sizes from the shapes (all powers of two); ``string``: the string form (two pair
    tensors), else the Coulomb form.

    * distance: ``BI = min(np2(b), dist_bi_max)``, ``BJ = min(np2(B), dist_bj_max)``,
      ``BK = clamp(dist_budget // (BI BJ), 1, np2(ncols))`` (the ``coulomb_dist_*`` caps for
      the Coulomb form); ``S`` column slices from
      :func:`_slices` (D is split only while the tiles do not fill whole waves, so the partial
      buffer ``[S, b, B]`` stays O(b B) for a device).
    * sums: ``(BI, BK)`` from :func:`_sums_blocks`, ``BJ = clamp(sums_budget // (BI BK), 1,
      min(np2(B), sums_bj_max))``.
    * coefficients: one program per (block of ``sums_bi`` rows, chunk of pairs): it writes the
      row block's live pair blocks of its chunk; ``BJ`` = the largest multiple of the sums' BJ
      within ``row_budget // BR`` (at least one pair block); chunks of a whole number of BJ
      steps, as many as fill the device (``ceil(slots / row blocks)``, at most one per step).
    * finalisation: ``BR = clamp(np2(ceil(b / slots)), 1, 8)`` on a GPU, ``min(np2(b), 64)``
      under the interpreter; ``BW = clamp(row_budget // BR, 1, np2(width))``.
    * ``coef_f32``: float32 data (``itemsize == 4``) on a profile without ``fast_fp64``.
    """
    p = profile
    tile_bytes = p.dist_tile_bytes if string else p.coulomb_dist_tile_bytes
    dist_budget = max(tile_bytes // itemsize, 1)
    sums_budget = max(p.sums_tile_bytes // itemsize, 1)
    # distance
    bi = min(next_pow2(rows), p.dist_bi_max if string else p.coulomb_dist_bi_max)
    bj = min(next_pow2(n), p.dist_bj_max if string else p.coulomb_dist_bj_max)
    bk = _clamp(dist_budget // (bi * bj), 1, next_pow2(ncols))
    tiles = cdiv(rows, bi) * cdiv(n, bj)
    steps = max(cdiv(ncols, bk), 1)
    s = _slices(tiles, steps, p)
    cols_per_slice = cdiv(steps, s) * bk
    nslices = max(cdiv(ncols, cols_per_slice), 1)
    # sums
    sbi, sbk = _sums_blocks(rows, ncols, sums_budget, p, p.sums_rows_cap(itemsize))
    sbj = _clamp(sums_budget // (sbi * sbk), 1, min(next_pow2(n), p.sums_bj_max))
    sblocks = max(cdiv(n, sbj), 1)
    # coefficients: rows of one sums block, columns a multiple of the sums' pair block
    cbr = sbi
    cbj = max(sbj, _clamp(p.row_budget // cbr, 1, next_pow2(n)))
    row_blocks = cdiv(rows, cbr)
    csteps = max(cdiv(n, cbj), 1)
    chunks = _clamp(cdiv(p.slots, row_blocks), 1, csteps)
    chunk_len = cdiv(csteps, chunks) * cbj
    chunks = max(cdiv(n, chunk_len), 1)
    seg_len = chunk_len // sbj
    # finalisation
    if p.name == "interpreter":
        fbr = min(next_pow2(rows), 64)
    else:
        fbr = _clamp(next_pow2(cdiv(rows, p.slots)), 1, 8)
    fbw = _clamp(p.row_budget // fbr, 1, next_pow2(width))
    return Plan(
        dist_bi=bi,
        dist_bj=bj,
        dist_bk=bk,
        nslices=nslices,
        cols_per_slice=cols_per_slice,
        dist_grid=(tiles, nslices),
        coef_br=cbr,
        coef_bj=cbj,
        coef_chunks=chunks,
        coef_chunk_len=chunk_len,
        coef_grid=(row_blocks, chunks),
        seg_len=seg_len,
        list_stride=chunks * seg_len,
        sums_bi=sbi,
        sums_bj=sbj,
        sums_bk=sbk,
        sums_blocks=sblocks,
        sums_tiles=(cdiv(rows, sbi), max(cdiv(ncols, sbk), 1)),
        fin_br=fbr,
        fin_bw=fbw,
        fin_grid=(cdiv(rows, fbr),),
        num_warps=p.num_warps,
        sums_maxnreg=p.sums_maxnreg,
        coef_f32=itemsize == 4 and not p.fast_fp64,
    )
