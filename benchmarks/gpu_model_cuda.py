"""CUDA side of the static GPU model (benchmarks/gpu_model.py): per kernel a call launches, its
grid, registers, shared memory, warp instructions issued and bytes moved, counted from the
compiled code (no GPU needed).

``kernel_estimates(field, case, dtype, arch) -> list[dict]`` follows the contract at the top of
gpu_model.py. How each figure is obtained:

* The kernels are compiled as the extension compiles them (``nvcc -O3 -cubin -arch=sm_XX`` of
  csrc/cuda/*.cu; cached per source hash and arch) and disassembled (gpu_sass: nvdisasm from the
  triton package). Registers and shared memory come from ``cuobjdump --dump-resource-usage``.
* Launch plans are those of the launchers: :func:`plan_distance` mirrors common.cuh's (same
  loop, same constants), query chunks of ``max(1, 2^22 / B)`` rows, pair_sums' lanes x columns.
* Warp instructions = per block (straight-line part + each loop's own instructions x its
  trips) x warps x blocks. Straight-line code that only the first threads of a block run
  (``if (threadIdx.x == 0)``, ``if (tid < 64)``: gpu_sass.thread_guarded) is charged to the
  warps holding those threads. A loop's trips come from what its body processes per iteration,
  read off the SASS: the distance tile's inner loop handles ``LDS / loads-per-column`` staged
  columns, pair_sums' main loop ``LDG / loads-per-pair`` kept pairs, the row loops of the
  norm kernels ``LDG / loads-per-element`` elements per thread; the coefficient kernels' loops
  as :func:`_coef_trips` tells them apart (the instantiation for the row's RUN, block
  reductions' trees at log2(THREADS) levels). Loops that only
  the rare slow paths run (``sin`` / ``tan`` argument reduction, using local memory) and the
  one-instruction trap loop at the end of each kernel are not charged.
* Coefficient path: the one the torch binding picks on the arch's GPU (csrc/cuda/bindings_cuda.cpp:
  ``coef_f32`` when FP32 / FP64 > 4, :data:`FP64_RATIO`): for float32 data on sm_89 (RTX 4090,
  FP64 at 1/64) the float32 coefficient path (the ``<..., float>`` instantiations: float partial
  sums, coefficients and lists, half the bytes), elsewhere and for float64 data the double path.
* Kept pairs per query row: those the coefficient kernels keep for the published float32 inputs
  (string: weight >= skip_ratio x the row's largest; Coulomb: contribution >= skip_ratio x the
  largest), evaluated in float64 by :func:`kept_per_row` (gpu_model.live_mask when present).
* DRAM bytes: each input read once, partial sums / lists written and read once, the output
  written. L2 bytes: the re-reads a kernel makes of data already read by another block (the
  distance tile's staging of rows shared by several tiles, pair_sums' pair rows, once per kept
  (query, pair) and column chunk).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, os.path.join(ROOT, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import gpu_sass  # noqa: E402

THREADS = 256  # kThreads
TILE = 64  # kTile
MAX_PAIRS_PER_CHUNK = 1 << 22
TARGET_BLOCKS = 2376  # Tuning::target_blocks
PLAN_SMS = (132, 108)  # the parts plan_distance balances for
SKIP_RATIO = {4: 2.0**-44, 8: 2.0**-80}
SUM_ROWS = 4  # kSumRows
SUM_WIN = 128  # kSumWin
TILED_MIN_COLS = 128  # kTiledMinCols
# FP32 : FP64 throughput of the modelled GPUs (cudaDevAttrSingleToDoublePrecisionPerfRatio)
FP64_RATIO = {"sm_90": 2, "sm_80": 2, "sm_89": 64}


def coef_f32(itemsize: int, arch: str) -> bool:
    """Whether the binding runs the float32 coefficient path (Tuning::coef_f32) for data of
    ``itemsize`` bytes on ``arch``."""
    return itemsize == 4 and FP64_RATIO.get(arch, 2) > 4


def _chunk_cols(itemsize: int) -> int:
    return 32 if itemsize == 4 else 16


def plan_distance(
    rows: int,
    n: int,
    ncols: int,
    itemsize: int,
    string: bool,
    target_blocks: int = TARGET_BLOCKS,
    csize: int = 8,
) -> dict:
    """The distance pass's slices, as csrc/cuda/common.cuh plan_distance (``csize``: bytes of
    the compute type C, the partial sums' element)."""
    kc = _chunk_cols(itemsize)
    tiles = math.ceil(rows / TILE) * math.ceil(n / TILE)
    chunks = math.ceil(ncols / kc)
    input_bytes = (rows + (2 if string else 1) * n) * ncols * itemsize
    slice_bytes = rows * n * csize
    max_partial = max(0.25 * input_bytes, float(1 << 24))
    best_cps, best = chunks, 0.0
    for cps in range(chunks, 0, -1):
        slices = math.ceil(chunks / cps)
        if cps < chunks and math.ceil(chunks / (cps + 1)) == slices:
            continue
        blocks = tiles * slices
        if slices > 1 and (blocks > max(target_blocks, 1) or slices * slice_bytes > max_partial):
            break
        worst = max(math.ceil(blocks / m) * cps / (tiles * chunks / m) for m in PLAN_SMS)
        if cps == chunks or worst < best * 0.999:
            best, best_cps = worst, cps
    cols = best_cps * kc
    nslices = math.ceil(ncols / cols)
    return {
        "tiles": tiles,
        "chunks": chunks,
        "cols_per_slice": cols,
        "nslices": nslices,
        "blocks": tiles * nslices,
    }


# ----------------------------------------------------------------------------------------------
# compiled code
# ----------------------------------------------------------------------------------------------
SOURCES = {
    "string": "string_field.cu",
    "coulomb": "coulomb_field.cu",
    "finalize": "finalize_rows.cu",
}


def _nvcc() -> str:
    for cand in (os.environ.get("NVCC"), "/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return "nvcc"


def _source_hash() -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(os.path.join(ROOT, "csrc", "cuda"))) + [
        "../field_math.h",
        "../field_params.h",
    ]:
        path = os.path.join(ROOT, "csrc", "cuda", name)
        if os.path.isfile(path):
            h.update(name.encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


@functools.cache
def compiled(source: str, arch: str) -> dict[str, dict]:
    """``{mangled kernel name: {"sass", "registers", "shared_bytes", "local_bytes"}}`` of one
    csrc/cuda source for ``arch`` (e.g. "sm_90")."""
    cache = os.path.join(tempfile.gettempdir(), "ifm_gpu_model_cuda", _source_hash())
    os.makedirs(cache, exist_ok=True)
    cubin = os.path.join(cache, f"{source}.{arch}.cubin")
    if not os.path.exists(cubin):
        subprocess.run(
            [
                _nvcc(),
                "-std=c++17",
                "-O3",
                "-cubin",
                f"-arch={arch}",
                "-o",
                cubin,
                os.path.join(ROOT, "csrc", "cuda", source),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    with open(cubin, "rb") as fh:
        data = fh.read()
    sass = gpu_sass.disassemble(data)
    res_text = gpu_sass._with_file(
        data, lambda f: [gpu_sass.tool("cuobjdump"), "--dump-resource-usage", f]
    )
    res = {}
    for m in re.finditer(
        r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res_text
    ):
        res[m.group(1)] = {
            "registers": int(m.group(2)),
            "shared_bytes": int(m.group(4)),
            "local_bytes": int(m.group(5)),
        }
    parts = re.split(r"^\s*\.text\.(\S+):\s*$", sass, flags=re.M)
    out = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=False):
        out[name] = dict(
            res.get(name, {"registers": 0, "shared_bytes": 0, "local_bytes": 0}), sass=body
        )
    return out


def _kernel(source: str, arch: str, pattern: str) -> dict:
    found = [v for k, v in compiled(source, arch).items() if re.search(pattern, k)]
    if not found:
        raise KeyError(f"no kernel matching {pattern!r} in {source} for {arch}")
    return found[0]


def _profile(k: dict) -> dict:
    """Straight-line instructions and the charged loops (own instruction counts, classes and
    global / shared access counts) of one compiled kernel."""
    instrs = gpu_sass.parse_sass(k["sass"])
    loops = [
        lp
        for lp in gpu_sass.loop_summary(k["sass"])
        if lp["instructions"] > 1 and not lp["classes"].get("mem_local")
    ]
    covered = set()
    for lp in gpu_sass.loop_summary(k["sass"]):
        covered.update(range(lp["start"], lp["end"] + 1))
    straight = [i for i in instrs if i.index not in covered]
    for lp in loops:
        body = instrs[lp["start"] : lp["end"] + 1]
        lp["ldg"] = sum(1 for i in body if i.base == "LDG")
        lp["lds"] = sum(1 for i in body if i.base == "LDS")
    # Straight-line code under `if (threadIdx.x < n)` is issued by the warps holding those
    # threads only: its share per warp of the block is their fraction of the block's warps.
    guarded = gpu_sass.thread_guarded(instrs)
    warps = THREADS // 32
    share = {
        i.index: min(math.ceil(guarded[i.index] / 32), warps) / warps
        for i in straight
        if i.index in guarded
    }
    classes: dict = {}
    for i in straight:
        c = gpu_sass.classify(i.opcode)
        classes[c] = classes.get(c, 0.0) + share.get(i.index, 1.0)
    return {
        "straight": sum(share.get(i.index, 1.0) for i in straight),
        "straight_classes": classes,
        "loops": loops,
    }


def _add_classes(acc: dict, cls: dict, k: float):
    for c, v in cls.items():
        acc[c] = acc.get(c, 0.0) + v * k


def _estimate(name: str, k: dict, grid: int, trips, dram: float, l2: float, note: str = "") -> dict:
    """One launch: ``trips(loop) -> iterations per warp`` of each charged loop."""
    prof = _profile(k)
    per_warp = float(prof["straight"])
    by_class: dict = {}
    _add_classes(by_class, prof["straight_classes"], 1.0)
    for lp in prof["loops"]:
        it = trips(lp)
        per_warp += lp["own"] * it
        _add_classes(by_class, lp["classes"], it)
    warps = grid * (THREADS // 32)
    return {
        "name": name,
        "grid": int(grid),
        "threads": THREADS,
        "registers": k["registers"],
        "shared_bytes": k["shared_bytes"],
        "local_bytes": k["local_bytes"],
        "warp_instructions": per_warp * warps,
        "by_class": {c: v * warps for c, v in by_class.items()},
        "dram_bytes": float(dram),
        "l2_bytes": float(l2),
        "note": note,
    }


# ----------------------------------------------------------------------------------------------
# kept pairs of the published inputs
# ----------------------------------------------------------------------------------------------
_KEPT: dict = {}


def kept_mask(case, plate: int, itemsize: int):
    """[b, B] bool: the (query, pair / charge) terms kept for the published inputs of ``case``."""
    key = (case.kind, case.name, case.b, case.B, case.D, plate, itemsize)
    if key in _KEPT:
        return _KEPT[key]
    import cases as bench_cases
    import torch

    from ifm import reference

    ratio = SKIP_RATIO[itemsize]
    inp = bench_cases.make_inputs(case)
    p = inp["points"].double()
    masks = []
    if case.kind == "string":
        prm = case.params
        A = inp["quarks"].double()[:, 1:]
        C = inp["antiquarks"].double()[:, 1:]
        Delta = C - A
        for i0 in range(0, p.shape[0], 8):
            z, x = p[i0 : i0 + 8, :1], p[i0 : i0 + 8, 1:]
            rho = reference.string_offsets(x, z / prm["L"], A, Delta)
            r2 = (rho * rho).sum(-1)
            s = reference.tube_width(z, prm["L"], prm["sigma0"], prm["K"], prm["d"])
            kappa = reference.tube_slope(z, prm["L"], prm["K"], prm["d"])
            expo, den, _, _ = reference.string_pair_terms(r2, s, kappa, prm["sigma0"], x.shape[1])
            logw = expo - torch.log(den)
            m = logw.amax(1, keepdim=True)
            masks.append((logw > -math.inf) & (logw - m >= math.log(ratio)))
    else:
        Y = (inp["positive"] if plate == 0 else inp["negative"]).double()
        d = torch.cdist(p, Y)
        logit = -p.shape[1] * torch.log(d + reference.COULOMB_D_EPS)
        e = torch.exp(logit - logit.amax(1, keepdim=True))
        size = e * d
        masks.append((e > 0) & (size >= ratio * size.amax(1, keepdim=True)))
    _KEPT[key] = torch.cat(masks, 0)
    return _KEPT[key]


def kept_per_row(case, plate: int, itemsize: int) -> list[int]:
    """Kept terms per query row (see :func:`kept_mask`)."""
    return kept_mask(case, plate, itemsize).sum(1).tolist()


# ----------------------------------------------------------------------------------------------
# per field
# ----------------------------------------------------------------------------------------------
def _tag(itemsize: int) -> str:
    return "f" if itemsize == 4 else "d"


def _two_pass(
    field: str,
    arch: str,
    itemsize: int,
    csize: int,
    rows: int,
    n: int,
    width: int,
    kept: list[int],
    src: str,
    coef_pattern: str,
    coef_name: str,
    case_live=None,
) -> list[dict]:
    string = field == "string"
    ncols = width - (1 if string else 0)
    sets = 2 if string else 1
    t, c = _tag(itemsize), _tag(csize)
    out = []
    # step 1: distance tiles
    plan = plan_distance(rows, n, ncols, itemsize, string, csize=csize)
    kc = _chunk_cols(itemsize)
    cps = plan["cols_per_slice"] // kc
    k = _kernel(src, arch, rf"distance_tilesI{t}Lb{int(string)}E{c}E")
    per_col = 12 if string else 8  # LDS per staged column (4 queries, 4 pairs (x2 string))
    cols_per_chunk = [min(kc, ncols - c) for c in range(0, ncols, kc)]
    mean_kc4 = sum(((c + 3) // 4) * 4 for c in cols_per_chunk) / len(cols_per_chunk)

    def dist_trips(lp):
        if lp["depth"] >= 1 and lp["lds"] >= per_col:
            return cps * mean_kc4 / (lp["lds"] / per_col)
        return cps  # the chunk loop (staging, fold into double)

    q_tiles, p_tiles = math.ceil(rows / TILE), math.ceil(n / TILE)
    staged = plan["nslices"] * (q_tiles * p_tiles) * TILE * (1 + sets) * plan["cols_per_slice"]
    unique = (rows + sets * n) * ncols * itemsize
    partial = plan["nslices"] * rows * n * csize
    out.append(
        _estimate(
            f"distance_tiles<{t},{string},{c}>",
            k,
            plan["blocks"],
            dist_trips,
            dram=unique + partial,
            l2=max(staged * itemsize - unique, 0.0),
            note=f"{plan['nslices']} slices of {cps} chunks",
        )
    )
    # step 2: coefficients, one block per row, the instantiation for RUN = coefficient_run(n)
    run = coefficient_run(n)
    k = _kernel(src, arch, coef_pattern.format(run=run))
    coef_trips = _coef_trips(_profile(k)["loops"], n, run, plan["nslices"])

    lists = sum(kept) * (4 + csize + (csize if string else 0))
    out.append(
        _estimate(
            coef_name,
            k,
            rows,
            coef_trips,
            dram=partial
            + (partial / plan["nslices"] if plan["nslices"] > 1 else 0)
            + lists
            + rows * 4,
            l2=0.0,
        )
    )
    # step 3: pair sums (query-tiled for D >= TILED_MIN_COLS)
    kept_total = sum(kept)
    idx_t = "j" if n * width <= 0xFFFFFFFF else "l"
    if ncols >= TILED_MIN_COLS:
        out.append(
            _tiled_sums(
                arch,
                t,
                string,
                src,
                idx_t,
                rows,
                n,
                ncols,
                width,
                itemsize,
                sets,
                kept,
                lists,
                case_live,
                c,
            )
        )
        return out
    kw = 1
    while kw < ncols and kw < THREADS:
        kw *= 2
    lanes = THREADS // kw
    chunks = math.ceil(ncols / kw)
    k = _kernel(src, arch, rf"pair_sumsI{t}Lb{int(string)}E{c}{idx_t}E")
    per_pair = 5 if string else 3  # LDG per kept pair: idx, c1, (c2), y0, (y1)
    main_trips = sum(math.ceil(c / lanes) for c in kept) * chunks / max(rows * chunks, 1)
    lp_all = _profile(k)["loops"]

    def sums_trips(lp):
        if lp["ldg"] >= per_pair:
            # two main-loop copies (the plate branch of the string field): one runs per block
            return main_trips / (lp["ldg"] / per_pair) / _n_main(lp_all, per_pair)
        return math.log2(lanes) if lp["classes"].get("mem_shared") else 0.0

    pair_bytes = kept_total * ncols * itemsize * sets
    out.append(
        _estimate(
            f"pair_sums<{t},{string},{c}>",
            k,
            rows * chunks,
            sums_trips,
            dram=sets * n * ncols * itemsize + rows * width * itemsize * 2 + lists,
            l2=max(pair_bytes - sets * n * ncols * itemsize, 0.0) + lists * (chunks - 1),
            note=f"{kept_total} kept terms, {lanes} lanes x {kw} columns",
        )
    )
    return out


def coefficient_run(n: int) -> int:
    """Pairs per thread and compaction step of the coefficient kernels (common.cuh)."""
    return 1 if n <= THREADS else (4 if n <= 4 * THREADS else 16)


def _coef_trips(loops: list, n: int, run: int, nslices: int):
    """Trips per warp of each loop of a coefficient kernel (string_coefficients,
    coulomb_coefficients), told apart by what they contain:

    * the fold of the S partial sums (depth >= 1, inside the first row loop): S - 1 partials per
      pair over the loop's loads;
    * the compaction loop (depth 0, loads and the scan's shared-memory traffic): one trip per
      step of RUN x THREADS pairs (its RUN-fold body is unrolled);
    * a block reduction's tree (depth 0, shared memory, no global load): log2(THREADS) levels;
    * the strided row loops (depth 0, global loads): ceil(n / THREADS) pairs per thread. ptxas
      may compile the first of them in several copies, with the fold (S > 1) and without
      (S = 1), and unswitched on a row-invariant condition (the string query inside [0, L] or
      not): of the copies before the first reduction one runs per block, charged as the largest
      copy of this plan's fold kind (with its fold loops; the other copies' are not charged).
    """
    per_thread = math.ceil(n / THREADS)
    steps = math.ceil(n / (run * THREADS))
    top = sorted((lp for lp in loops if lp["depth"] == 0), key=lambda lp: lp["start"])
    trees = [lp for lp in top if lp["ldg"] == 0 and lp["classes"].get("mem_shared")]
    first_tree = trees[0]["start"] if trees else math.inf
    first = [lp for lp in top if lp["ldg"] and lp["lds"] == 0 and lp["start"] < first_tree]
    skipped = []
    if len(first) >= 2:
        with_fold = [lp for lp in first if lp["inner"]]
        without = [lp for lp in first if not lp["inner"]]
        pool = with_fold if (nslices > 1 and with_fold) or not without else without
        keep = max(pool, key=lambda lp: lp["own"])
        skipped = [lp for lp in first if lp is not keep]

    def in_skipped(lp):
        return any(o["start"] <= lp["start"] and lp["end"] <= o["end"] for o in skipped)

    def trips(lp):
        if in_skipped(lp):
            return 0.0
        if lp["depth"] >= 1:
            return per_thread * max(nslices - 1, 0) / max(lp["ldg"], 1)
        if lp["ldg"] and lp["lds"]:
            return steps
        if lp["ldg"] == 0 and lp["classes"].get("mem_shared"):
            return math.log2(THREADS)
        return per_thread

    return trips


def _tiled_sums(
    arch, t, string, src, idx_t, rows, n, ncols, width, itemsize, sets, kept, lists, live, c
):
    """pair_sums_tiled: per block of SUM_ROWS rows, n / SUM_WIN windows (zero, scatter, two
    scans) and one pass of the main loop per pair any of the rows keeps."""
    k = _kernel(src, arch, rf"pair_sums_tiledI{t}Lb{int(string)}E{c}{idx_t}E")
    tiles = math.ceil(rows / SUM_ROWS)
    chunks = math.ceil(ncols / THREADS)
    windows = math.ceil(n / SUM_WIN)
    union = _union_per_tile(live, rows, n, kept)
    per_pair = sets  # LDG per live pair in the main loop (y0, y1)
    loops = _profile(k)["loops"]
    main = max((lp for lp in loops if lp["depth"] >= 1), key=lambda lp: lp["ldg"], default=None)
    n_main = sum(1 for lp in loops if lp["depth"] >= 1 and lp["ldg"] >= per_pair)

    def trips(lp):
        if lp["depth"] == 0:
            return windows
        if main is not None and lp["ldg"] >= per_pair:
            return (sum(union) / tiles) / (lp["ldg"] / per_pair) / max(n_main, 1)
        return windows  # zeroing loop

    live_rows = sum(union) * ncols * itemsize * sets
    unique = sets * n * ncols * itemsize
    return _estimate(
        f"pair_sums_tiled<{t},{string},{c}>",
        k,
        tiles * chunks,
        trips,
        dram=unique + rows * width * itemsize * 2 + lists,
        l2=max(live_rows - unique, 0.0) + lists * (chunks - 1),
        note=f"{sum(kept)} kept terms, {sum(union)} (tile, pair) loads, "
        f"{SUM_ROWS} rows x {THREADS} columns per block",
    )


def _union_per_tile(live, rows, n, kept) -> list[int]:
    """Pairs kept by any row of each tile of SUM_ROWS rows (``live``: [rows, n] bool or None;
    without it every kept term is counted as its own pair, an upper bound)."""
    if live is None:
        return [sum(kept[i : i + SUM_ROWS]) for i in range(0, rows, SUM_ROWS)]
    return [int(live[i : i + SUM_ROWS].any(0).sum()) for i in range(0, rows, SUM_ROWS)]


def _n_main(loops, per_pair) -> int:
    return max(1, sum(1 for lp in loops if lp["ldg"] >= per_pair))


def _row_kernel(
    name: str, k: dict, grid: int, elems: int, loads_per_elem: int, dram: float
) -> dict:
    per_thread = math.ceil(elems / THREADS)

    def trips(lp):
        if lp["ldg"] >= loads_per_elem:
            return per_thread / (lp["ldg"] / loads_per_elem) / max(1, n_big)
        return math.log2(THREADS) if lp["classes"].get("mem_shared") else 0.0

    loops = _profile(k)["loops"]
    n_big = sum(1 for lp in loops if lp["ldg"] >= loads_per_elem)
    return _estimate(name, k, grid, trips, dram=dram, l2=0.0)


def kernel_estimates(field: str, case, dtype, arch: str) -> list[dict]:
    """Every kernel one call of the CUDA backend launches for ``case`` (gpu_model.py contract).
    ``arch``: "sm_90", "sm_80" or "sm_89"."""
    import torch

    itemsize = 8 if dtype == torch.float64 else 4
    csize = 4 if coef_f32(itemsize, arch) else 8
    t, c = _tag(itemsize), _tag(csize)
    b, B, D = case.b, case.B, case.D
    width = D + 1
    out: list[dict] = []
    if field == "string":
        k = _kernel(SOURCES["string"], arch, rf"pair_inv_normsI{t}{c}E")
        out.append(
            _row_kernel(
                f"pair_inv_norms<{t},{c}>", k, B, D, 2, dram=2 * B * width * itemsize + B * csize
            )
        )
        kept = kept_per_row(case, 0, itemsize)
        rc = max(1, min(b, MAX_PAIRS_PER_CHUNK // max(B, 1)))
        for i0 in range(0, b, rc):
            rows = min(rc, b - i0)
            out += _two_pass(
                "string",
                arch,
                itemsize,
                csize,
                rows,
                B,
                width,
                kept[i0 : i0 + rows],
                SOURCES["string"],
                rf"string_coefficientsI{t}{c}Li{{run}}E",
                f"string_coefficients<{t},{c}>",
                kept_mask(case, 0, itemsize)[i0 : i0 + rows],
            )
            if case.params.get("normalize", True):
                k = _kernel(SOURCES["finalize"], arch, rf"finalize_rowsI{t}{c}E")
                out.append(
                    _row_kernel(
                        f"finalize_rows<{t},{c}>",
                        k,
                        rows,
                        width,
                        1,
                        dram=2 * rows * width * itemsize,
                    )
                )
        return out
    plates = [0] if case.plates == 1 else [0, 1]
    rc = max(1, min(b, MAX_PAIRS_PER_CHUNK // max(B, 1)))
    for i0 in range(0, b, rc):
        rows = min(rc, b - i0)
        for plate in plates:
            kept = kept_per_row(case, plate, itemsize)[i0 : i0 + rows]
            out += _two_pass(
                "coulomb",
                arch,
                itemsize,
                csize,
                rows,
                B,
                width,
                kept,
                SOURCES["coulomb"],
                rf"coulomb_coefficientsI{t}{c}Li{{run}}E",
                f"coulomb_coefficients<{t},{c}>",
                kept_mask(case, plate, itemsize)[i0 : i0 + rows],
            )
        if (
            len(plates) == 2
            or case.params.get("plate_gamma") is not None
            or case.params.get("normalize")
        ):
            k = _kernel(SOURCES["finalize"], arch, rf"finalize_rowsI{t}{c}E")
            out.append(
                _row_kernel(
                    f"finalize_rows<{t},{c}>",
                    k,
                    rows,
                    width,
                    len(plates),
                    dram=(len(plates) + 1) * rows * width * itemsize,
                )
            )
    return out


if __name__ == "__main__":
    import gpu_model
    import torch

    cases = gpu_model.published_cases() if hasattr(gpu_model, "published_cases") else None
    if cases is None:
        import cases as bench_cases

        cases = {f"{c.kind}-{c.name}": c for c in bench_cases._FULL_CASES}
    arch_name = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    for key, case in cases.items():
        for dt in (torch.float32, torch.float64):
            ks = kernel_estimates(case.kind, case, dt, arch_name)
            print(key, dt, f"{len(ks)} launches")
            for kd in ks:
                print(
                    f"   {kd['name']:32s} grid {kd['grid']:6d} regs {kd['registers']:3d} "
                    f"smem {kd['shared_bytes']:6d} warp-instr {kd['warp_instructions']:.3e} "
                    f"dram {kd['dram_bytes'] / 1e6:8.2f} MB l2 {kd['l2_bytes'] / 1e6:8.2f} MB "
                    f"{kd.get('note', '')}"
                )
