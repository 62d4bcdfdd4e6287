"""Static performance model of the GPU kernels (no GPU needed).

Kernel estimate contract
------------------------
Both backends describe a field call as a list of kernel launches, one dict per launch::

    {
      "name": str,                 # kernel name
      "grid": int,                 # blocks (programs) in the launch
      "threads": int,              # threads per block
      "registers": int,            # registers per thread (cuobjdump --dump-resource-usage)
      "shared_bytes": int,         # shared memory per block (static + dynamic)
      "warp_instructions": float,  # warp instructions issued by the whole launch
      "dram_bytes": float,         # bytes to/from HBM (unique data, writes, L2 misses)
      "l2_bytes": float,           # bytes served by L2 (re-reads of data already on chip)
      # optional:
      "by_class": {cls: float},    # warp instructions per opcode class (gpu_sass.CLASSES:
                                   # "fp32", "fp64", "mufu", "int", ...); pipes slower than one
                                   # warp instruction per cycle and scheduler are charged from it
      "local_bytes": int,          # spill bytes per thread (0 expected)
      "note": str,
    }

The CUDA backend provides ``benchmarks/gpu_model_cuda.py: kernel_estimates(field, case, dtype,
arch) -> list[dict]`` (imported if present); the Triton side is :func:`triton_kernel_estimates`
(same arguments). ``field`` is ``"string"`` or ``"coulomb"``, ``case`` a ``cases.Case``,
``dtype`` a torch dtype, ``arch`` a key of :data:`ARCHS` (``"sm_90"`` H100, ``"sm_80"`` A100,
``"sm_89"`` RTX 4090).

Entry points
------------
* ``estimate(field, case_name, backend, dtype=torch.float32, arch="sm_90") -> dict`` with
  ``us`` (the model's time of one call), ``bound_us`` (the design bound below), ``launches``,
  ``kernels`` (per-kernel breakdown) -- what ``scripts/gpu.sh`` prints beside a measured time.
* ``python benchmarks/gpu_model.py [--arch sm_90] [--markdown]`` prints the table of every
  published shape (``benchmarks/cases.py``) and backend, float32 and float64.

Per kernel
----------
* issue: per SM and scheduler, a warp instruction takes ``max(1, pipe cycles)``; the cycles of a
  block are ``max(total, fp32 * c_fp32, fp64 * c_fp64, mufu * c_mufu, int * c_int)`` warp
  instructions over its warps' schedulers. Blocks go round-robin to the SMs; each SM runs them
  in rounds of up to ``resident`` blocks (limited by registers, shared memory, threads, 32
  blocks); a round with fewer than ``SAT_WARPS`` warps per scheduler issues at that fraction of
  the peak (latency not hidden). This is where a tail wave costs: 544 blocks on 132 SMs x 4
  leave 16 SMs a fifth round of one block at a quarter of the issue rate.
* memory: ``dram_bytes / HBM + l2_bytes / L2`` bandwidth.
* kernel time = ``max(issue, memory) + LAUNCH_US`` (one launch gap per kernel).

Bound
-----
``bound = max(useful FLOP / FP32 peak, (inputs + output) bytes / HBM) + LAUNCH_US x (fewest
launches the design needs)``; useful FLOP: string ``3 b B D`` for the distances (``x - base - t
Delta`` as one FMA after the shared subtraction, and ``r r + acc``) plus ``4 per kept (query,
pair, column)`` for the sums; Coulomb ``3 b B (D + 1)`` per plate for the distances and
``2 per kept (query, charge, column)``; kept pairs from the published inputs in float64.
Fewest launches: string 3 (distances, coefficients, sums; +1 when normalising), Coulomb
3 per plate + 1 finalisation when the plates are normalised or combined.

The PyTorch form a user would run instead is estimated from the same figures: cuBLAS SGEMM at
``GEMM_FRACTION`` of FP32 peak, every elementwise / reduction kernel at HBM bandwidth over its
``[b, B]`` or ``[b, D]`` tensors, ``LAUNCH_US`` per launch (:func:`torch_form_estimate`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT, os.path.join(ROOT, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

LAUNCH_US = 3.0  # back-to-back launch gap per kernel (PERFORMANCE.md: 3-5 us)
SAT_WARPS = 4  # warps per scheduler that hide the latency of a loop body
GEMM_FRACTION = 0.7  # cuBLAS SGEMM (no TF32) at the published shapes, of FP32 peak


@dataclasses.dataclass(frozen=True)
class Arch:
    """One GPU: ``c_*`` are scheduler cycles per warp instruction of that pipe."""

    name: str
    sm: int  # compute capability x 10 (Triton / ptxas target)
    sms: int
    clock_ghz: float  # stated clock the model uses (boost)
    fp32_tflops: float  # FP32 on CUDA cores
    hbm_tbs: float
    l2_tbs: float
    l2_mb: float
    c_fp32: float
    c_fp64: float
    c_mufu: float
    c_int: float
    regs_per_sm: int = 65536
    shared_per_sm: int = 228 * 1024
    threads_per_sm: int = 2048
    schedulers: int = 4


ARCHS: dict[str, Arch] = {
    # H100 SXM5: 132 SMs, 1.98 GHz boost, 128 FP32 / 64 FP64 / 16 MUFU lanes per SM, 3.35 TB/s
    "sm_90": Arch(
        "H100 SXM", 90, 132, 1.98, 67.0, 3.35, 7.0, 50.0, c_fp32=1, c_fp64=2, c_mufu=8, c_int=2
    ),
    # A100 SXM4: 108 SMs, 1.41 GHz, 64 FP32 / 32 FP64 lanes per SM, 2.04 TB/s (80 GB)
    "sm_80": Arch(
        "A100 SXM",
        80,
        108,
        1.41,
        19.5,
        2.04,
        4.5,
        40.0,
        c_fp32=2,
        c_fp64=4,
        c_mufu=8,
        c_int=2,
        shared_per_sm=164 * 1024,
    ),
    # RTX 4090 (sm_89): 128 SMs, 2.52 GHz boost, FP64 at 1/64 of FP32, 1.01 TB/s
    "sm_89": Arch(
        "RTX 4090",
        89,
        128,
        2.52,
        82.6,
        1.01,
        3.5,
        72.0,
        c_fp32=1,
        c_fp64=64,
        c_mufu=8,
        c_int=2,
        shared_per_sm=100 * 1024,
        threads_per_sm=1536,
    ),
}


# ----------------------------------------------------------------------------------------------
# the estimator shared by both backends
# ----------------------------------------------------------------------------------------------
def resident_blocks(k: dict, arch: Arch) -> int:
    """Blocks per SM allowed by registers (allocated per warp in units of 256), shared memory
    (1 KB reserved per block), threads and the 32-block limit."""
    warps = max(1, math.ceil(k["threads"] / 32))
    per_warp = ((max(k["registers"], 1) * 32 + 255) // 256) * 256
    by_regs = arch.regs_per_sm // (per_warp * warps)
    by_shared = arch.shared_per_sm // (int(k.get("shared_bytes", 0)) + 1024)
    by_threads = arch.threads_per_sm // (warps * 32)
    return max(1, min(by_regs, by_shared, by_threads, 32))


def block_cycles(k: dict, arch: Arch) -> float:
    """Scheduler cycles of one block's warp instructions (summed over its warps): the issued
    count, or a slower pipe's cycles (``by_class`` x ``c_<class>``) when those are more."""
    grid = max(int(k["grid"]), 1)
    per_block = k["warp_instructions"] / grid
    cls = k.get("by_class") or {}
    return max(
        [per_block]
        + [
            cls.get(c, 0.0) / grid * getattr(arch, "c_" + c)
            for c in ("fp32", "fp64", "mufu", "int")
        ]
    )


def issue_us(k: dict, arch: Arch) -> float:
    """Issue-bound time of a launch: the most loaded SM (``ceil(grid / SMs)`` blocks) runs its
    blocks in rounds of up to ``resident``; a round of ``m`` blocks issues ``m x cycles`` at
    ``schedulers x min(1, warps in flight / (schedulers x SAT_WARPS))`` per clock."""
    grid = max(int(k["grid"]), 1)
    warps = max(1, math.ceil(k["threads"] / 32))
    res = resident_blocks(k, arch)
    cyc = block_cycles(k, arch)
    t, left = 0.0, math.ceil(grid / arch.sms)
    while left > 0:
        m = min(left, res)
        eff = min(1.0, m * warps / (arch.schedulers * SAT_WARPS))
        t += m * cyc / (arch.schedulers * eff)
        left -= m
    return t / (arch.clock_ghz * 1e3)


def memory_us(k: dict, arch: Arch) -> float:
    return k.get("dram_bytes", 0.0) / (arch.hbm_tbs * 1e6) + k.get("l2_bytes", 0.0) / (
        arch.l2_tbs * 1e6
    )


def kernel_time(k: dict, arch: Arch) -> dict:
    iss, mem = issue_us(k, arch), memory_us(k, arch)
    res = resident_blocks(k, arch)
    waves = math.ceil(max(int(k["grid"]), 1) / (arch.sms * res))
    return {
        "name": k["name"],
        "grid": int(k["grid"]),
        "resident": res,
        "waves": waves,
        "issue_us": iss,
        "memory_us": mem,
        "us": max(iss, mem) + LAUNCH_US,
        "registers": k["registers"],
    }


def call_time(kernels: list[dict], arch: Arch) -> dict:
    per = [kernel_time(k, arch) for k in kernels]
    return {"us": sum(p["us"] for p in per), "launches": len(per), "kernels": per}


# ----------------------------------------------------------------------------------------------
# published shapes and their kept pairs
# ----------------------------------------------------------------------------------------------
def published_cases() -> dict:
    """``{"string-CIFAR": Case, ...}``: the full-size cases of benchmarks/cases.py plus the
    two published string shapes only the GPU benchmarks run (FIELDS.md: CelebA-128, CMNIST)."""
    import math as _m

    import cases as bench_cases

    cases = {f"{c.kind}-{c.name}": c for c in bench_cases._FULL_CASES}
    extra = [
        bench_cases._string_case(
            "CelebA-128",
            49152,
            64,
            64,
            20.0,
            1.0,
            _m.pi / 20,
            ("image:3,128,128", "gauss"),
            high_d=True,
        ),
        bench_cases._string_case(
            "CMNIST",
            3072,
            128,
            128,
            40.0,
            10.0,
            5.0,
            ("image:3,32,32", "image:3,32,32"),
            high_d=True,
        ),
    ]
    for c in extra:
        cases.setdefault(f"{c.kind}-{c.name}", c)
    order = [
        "string-toy",
        "string-CIFAR",
        "string-W2S",
        "string-CelebA-64",
        "string-CelebA-128",
        "string-CMNIST",
    ]
    return {k: cases[k] for k in order + [k for k in cases if k not in order]}


_LIVE_CACHE: dict = {}


def live_mask(case, plate: int = 0):
    """``[b, B]`` bool: the (query, pair or charge) terms the kernels keep for the published
    float32 inputs (non-zero float32 coefficient, not below ``skip_ratio`` of the row's
    largest weight / contribution); float64 arithmetic, r^2 from the dot-product expansion in
    float64 (enough to decide liveness)."""
    key = (case.kind, case.name, plate)
    if key in _LIVE_CACHE:
        return _LIVE_CACHE[key]
    import baselines
    import cases as bench_cases
    import torch

    from ifm import reference

    inp = bench_cases.make_inputs(case)
    p = inp["points"].double()
    if case.kind == "string":
        q, a = inp["quarks"].double(), inp["antiquarks"].double()
        z, x, A, Delta, nu, tau = baselines._string_setup(p, q, a, case.params["L"])
        r2 = baselines.string_r2_gemm(x, A, Delta, tau)
        c1, c2, w = baselines.string_coefficients(r2, z, nu, D=x.shape[1], **case.params)
        keep = w >= w.amax(1, keepdim=True) * 2.0**-44
        live = keep & ((c1.float() != 0) | (c2.float() != 0))
    else:
        Y = (inp["positive"] if plate == 0 else inp["negative"]).double()
        d = torch.cdist(p, Y)
        logit = -p.shape[1] * torch.log(d + reference.COULOMB_D_EPS)
        coeff = torch.softmax(logit, dim=1)
        contrib = torch.where(
            d > 0, logit + torch.log(d.clamp_min(1e-300)), torch.full_like(d, -math.inf)
        )
        keep = contrib >= contrib.amax(1, keepdim=True) + math.log(2.0**-44)
        live = keep & (coeff.float() != 0)
    _LIVE_CACHE[key] = live
    return live


def _block_counts(live, bi: int, bj: int, seg: int | None = None) -> list:
    """Per block of ``bi`` rows: the number of blocks of ``bj`` columns with a live term; with
    ``seg``, per (row block, chunk of ``seg`` column blocks), flattened."""
    import torch

    b, n = live.shape
    rb, cb = -(-b // bi), -(-n // bj)
    pad = torch.zeros(rb * bi, cb * bj, dtype=torch.bool)
    pad[:b, :n] = live
    blocks = pad.view(rb, bi, cb, bj).any(3).any(1)
    if seg is None:
        return blocks.sum(1).tolist()
    nch = -(-cb // seg)
    per = torch.zeros(rb, nch * seg, dtype=torch.bool)
    per[:, :cb] = blocks
    return per.view(rb, nch, seg).sum(2).flatten().tolist()


def _nested(loops: list, lp: dict) -> list:
    """The loops one level inside the top-level loop ``lp``."""
    return [
        o for o in loops if o["depth"] == 1 and lp["start"] <= o["start"] and o["end"] <= lp["end"]
    ]


def _unrolled_trips(inner: list, counts: list, reps: int) -> list:
    """Trips of the sibling loops ptxas made of one runtime-bounded loop run ``counts[k]`` times
    (``reps`` times over): a main loop unrolled ``u`` times (u from the ratio of the bodies'
    sizes) and a remainder loop, ``c // u`` and ``c % u`` trips for a count ``c``; one loop,
    or siblings of like size, share the iterations evenly."""
    total = reps * sum(counts)
    if len(inner) != 2:
        return [total / max(len(inner), 1)] * len(inner)
    sizes = [o["instructions"] for o in inner]
    big = 0 if sizes[0] >= sizes[1] else 1
    u = max(1, round(sizes[big] / max(sizes[1 - big], 1)))
    if u == 1:
        return [total / 2, total / 2]
    trips = [0.0, 0.0]
    trips[big] = reps * sum(c // u for c in counts)
    trips[1 - big] = reps * sum(c % u for c in counts)
    return trips


# ----------------------------------------------------------------------------------------------
# Triton side: record the launches, compile them, count the SASS
# ----------------------------------------------------------------------------------------------
_SASS_CACHE: dict = {}


def _cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ifm-gpu-model", "sass.json")


def _load_cache() -> None:
    if _SASS_CACHE:
        return
    try:
        import json

        with open(_cache_path()) as fh:
            _SASS_CACHE.update(json.load(fh))
    except (OSError, ValueError):
        pass


def _save_cache() -> None:
    import json

    path = _cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(_SASS_CACHE, fh)
    os.replace(path + ".tmp", path)


def _compiled_summary(rec, sm: int) -> dict:
    """SASS summary (``gpu_sass.kernel_summary``) of a recorded launch compiled for ``sm``;
    cached on disk by the kernel's source hash, constexprs, signature, warps and target."""
    import gpu_sass

    from ifm_kernels import _introspect

    _load_cache()
    sig = _introspect.launch_signature(rec)
    key = repr(
        (
            rec.name,
            rec.kernel.cache_key,
            sorted(rec.constexprs.items()),
            sorted(sig.items()),
            rec.num_warps,
            rec.maxnreg,
            sm,
        )
    )
    if key not in _SASS_CACHE:
        compiled = _introspect.compile_kernel(rec, sm)
        summary = gpu_sass.kernel_summary(compiled.asm["cubin"])
        summary["shared_bytes"] = int(compiled.metadata.shared)
        _SASS_CACHE[key] = summary
        _save_cache()
    return _SASS_CACHE[key]


def _call(case, dtype, sms: int, fast_fp64: bool = True):
    """Record the launches of one call of ``case`` on a GPU with ``sms`` SMs (``fast_fp64``:
    float64 at half the float32 rate; else float32 data gets the float32 coefficient pass)."""
    import torch

    import ifm_kernels
    from ifm import fields
    from ifm_kernels import _introspect, _plan

    D = case.D

    def t(n):
        return torch.empty(n, D + 1, dtype=dtype, device="meta")

    with _introspect.record_launches(_plan.gpu_profile(sms, fast_fp64)) as rec:
        if case.kind == "string":
            kw = fields.string_kernel_args(D + 1)
            ifm_kernels.string_field(
                t(case.b), t(case.B), t(case.B), **case.params, stable=False, **kw
            )
        else:
            kw = fields.coulomb_kernel_args(
                D + 1, two_plates=case.plates == 2, **_coulomb_public(case)
            )
            ifm_kernels.coulomb_field(
                t(case.b), t(case.B), t(case.B) if case.plates == 2 else None, **kw
            )
    return rec


def _coulomb_public(case) -> dict:
    return {"plate_gamma": case.params["plate_gamma"], "normalize": case.params["normalize"]}


def _loops(summary: dict) -> list:
    """Loops of a kernel without the end-of-code trap (``BRA`` to itself)."""
    return [
        lp
        for lp in summary["loops"]
        if not (lp["instructions"] <= 2 and set(lp["classes"]) <= {"branch"})
    ]


def _sub(a: dict, b: dict, k: float = 1.0) -> dict:
    out = dict(a)
    for key, v in b.items():
        out[key] = out.get(key, 0.0) - k * v
    return out


def _add(a: dict, b: dict, k: float = 1.0) -> dict:
    return _sub(a, b, -k)


def _program_count(summary: dict, top_trips, inner_trip: float):
    """``(instructions, by_class)`` one warp issues in one program: the straight-line code once,
    each top-level loop ``top_trips[i]`` times (loops past the list once), each loop nested in
    one ``inner_trip`` times per outer iteration (split evenly over its siblings: Triton peels
    and unrolls a runtime-bounded loop into a main and a remainder loop)."""
    loops = _loops(summary)
    top = [lp for lp in loops if lp["depth"] == 0]
    straight_cls = dict(summary["classes"])
    for lp in loops:
        straight_cls = _sub(straight_cls, lp["classes"])
    total_cls = dict(straight_cls)
    for i, lp in enumerate(top):
        trips = top_trips[i] if i < len(top_trips) else 1.0
        inner = [
            o
            for o in loops
            if o["depth"] == 1 and lp["start"] <= o["start"] and o["end"] <= lp["end"]
        ]
        body = dict(lp["classes"])
        for o in inner:
            body = _add(body, o["classes"], inner_trip / len(inner))
        total_cls = _add(total_cls, body, trips)
    return sum(total_cls.values()), total_cls


def _coef_trips(summary: dict, stats: bool, string: bool, f32: bool, chunks, steps) -> list:
    """Trips of each top-level loop of a stats or coefficient kernel, in code order: the pair
    loops (those holding the loop over the partials' slices) ``steps`` in all, the other loops
    (the coefficient kernels' loops over the chunks' statistics: string 1, Coulomb 2, or 3
    with the float32 pass) ``chunks`` each, split evenly over the loops the compiler made of
    them (it peels and unrolls a runtime-bounded loop into a main and a remainder loop); the
    local-memory loops of the rare slow paths of ``sin`` / ``tan`` once."""
    loops = _loops(summary)
    top = [lp for lp in loops if lp["depth"] == 0]

    def holds_inner(lp):
        return any(
            o["depth"] == 1 and lp["start"] <= o["start"] and o["end"] <= lp["end"] for o in loops
        )

    kinds = [
        "pair" if holds_inner(lp) else "slow" if lp["classes"].get("mem_local") else "combine"
        for lp in top
    ]
    logical = 0 if stats else 1 if string else 3 if f32 else 2
    n_pair = max(kinds.count("pair"), 1)
    n_comb = max(kinds.count("combine"), 1)
    trips = {"pair": steps / n_pair, "combine": logical * chunks / n_comb, "slow": 1.0}
    return [trips[k] for k in kinds]


def _itemsize(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def triton_kernel_estimates(field: str, case, dtype, arch: str) -> list[dict]:
    """Per launch of one Triton call: the dict of the contract at the top of this module."""
    a = ARCHS[arch]
    from ifm_kernels import _plan

    rec = _call(case, dtype, a.sms, _plan.fast_fp64(a.sm // 10, a.sm % 10))
    it = _itemsize(dtype)
    _b, _D = case.b, case.D
    out = []
    plate = 0
    for r in rec:
        s = _compiled_summary(r, a.sm)
        c = r.constexprs
        grid = math.prod(r.grid)
        warps = r.num_warps
        name = r.name
        if name == "distance_kernel":
            rows, n, ncols, cps = (r.arg(k) for k in ("rows", "n", "ncols", "cols_per_slice"))
            ns = r.grid[1]
            full = [max(0, min(ncols, (k + 1) * cps) - k * cps) // c["BK"] for k in range(ns)]
            trips = sum(full) / ns
            ny = 2 if c["STRING"] else 1
            tiles_i, tiles_j = -(-rows // c["BI"]), -(-n // c["BJ"])
            unique = (rows + ny * n) * ncols * it
            reads = (rows * tiles_j + ny * n * tiles_i) * ncols * it
            # query tiles run fastest: each pair tile comes from HBM once and is re-read from
            # L2 by the other query tiles resident at the same time; the queries stay in L2
            dram = unique + ns * rows * n * it + (ns * n * it if c["STRING"] else 0)
            l2 = max(reads - unique, 0)
            per, cls = _program_count(s, [trips], 0)
        elif name.endswith("_stats_kernel") or name.endswith("_coeff_kernel"):
            string = name.startswith("string")
            stats = name.endswith("_stats_kernel")
            rows, n, nslices, chunk_len = (r.arg(k) for k in ("rows", "n", "nslices", "chunk_len"))
            chunks = r.grid[1]
            steps = -(-n // c["BJ"]) / chunks
            per, cls = _program_count(
                s, _coef_trips(s, stats, string, bool(c.get("F32")), chunks, steps), nslices
            )
            l2 = nslices * rows * n * it  # the partials, read once here
            if stats:
                dram = rows * chunks * 8 * (1 if string else 3)
            else:
                ncoef = 2 if string else 1
                dram = ncoef * rows * n * it
        elif name == "pair_sums_kernel":
            rows, n, ncols, chunks = (r.arg(k) for k in ("rows", "n", "ncols", "nchunks"))
            live = live_mask(case, plate)
            counts = _block_counts(live, c["BI"], c["BJ"], r.arg("seg_len"))
            plate += 1
            tiles_k = grid // -(-rows // c["BI"])
            total_iters = tiles_k * sum(counts)
            loops = _loops(s)
            top = [lp for lp in loops if lp["depth"] == 0]
            straight = dict(s["classes"])
            for lp in loops:
                straight = _sub(straight, lp["classes"])
            cls = {k: v * grid for k, v in straight.items()}
            chunk_loops = [lp for lp in top if _nested(loops, lp)]
            # the loops without a nested one: the string E_z sum over the chunks, run by the
            # programs of the first column block only
            ez_loops = [lp for lp in top if not _nested(loops, lp)]
            for lp in chunk_loops:
                cls = _add(cls, lp["classes"], chunks * grid / len(chunk_loops))
                inner = _nested(loops, lp)
                reps = tiles_k / len(chunk_loops)
                for o, trips in zip(inner, _unrolled_trips(inner, counts, reps), strict=True):
                    cls = _add(cls, o["classes"], trips)
            for lp in ez_loops:
                cls = _add(cls, lp["classes"], chunks * (grid / tiles_k) / len(ez_loops))
            cls = {k: v / grid for k, v in cls.items()}
            per = sum(cls.values())
            ny = 2 if c["STRING"] else 1
            l2 = total_iters * (ny * c["BJ"] * c["BK"] + ny * c["BI"] * c["BJ"]) * it
            dram = 2 * rows * ncols * it + min(l2, ny * n * ncols * it)
            l2 = max(l2 - ny * n * ncols * it, 0.0)
        elif name == "string_query_kernel":
            # straight-line code (the local-memory loops of the rare slow paths of sin / tan
            # once); reads z, writes four terms per row
            per, cls = _program_count(s, [], 0)
            rows = r.arg("rows")
            dram = rows * (it + 4 * (4 if c["F32"] else 8))
            l2 = 0.0
        else:  # finalize_kernel
            rows, width = r.arg("rows"), r.arg("width")
            bw = c["BW"]
            sweeps = -(-width // bw)
            per, cls = _program_count(s, [sweeps] * 3, 0)
            reads = (1 + int(c["PLATE_NORM"]) + int(c["NORMALIZE"])) * (2 if c["HAS_NEG"] else 1)
            dram = (reads + 1) * rows * width * it
            l2 = 0.0
        out.append(
            {
                "name": name,
                "grid": grid,
                "threads": 32 * warps,
                "registers": s["registers"],
                "shared_bytes": s["shared_bytes"],
                "local_bytes": s["local_bytes"],
                "warp_instructions": per * grid * warps,
                "by_class": {k: v * grid * warps for k, v in cls.items()},
                "dram_bytes": float(dram),
                "l2_bytes": float(l2),
                "note": "x".join(f"{c[k]}" for k in ("BI", "BJ", "BK", "BR", "BW") if k in c),
            }
        )
    return out


# ----------------------------------------------------------------------------------------------
# bound, the PyTorch form, the driver
# ----------------------------------------------------------------------------------------------
def useful_flop(case) -> float:
    """FLOP an exact evaluation needs (an FMA counts 2): string ``5 b B D`` (``x - base``, the FMA
    ``- t Delta``, the FMA ``r r + acc``) plus ``7`` per kept (query, pair, column) (rho again,
    the FMAs with c2 and c1); Coulomb ``3 b B (D + 1)`` per plate plus ``3`` per kept term."""
    D, b, B = case.D, case.b, case.B
    if case.kind == "string":
        kept = int(live_mask(case).sum())
        return 5.0 * b * B * D + 7.0 * kept * D
    total = 0.0
    for plate in range(case.plates):
        kept = int(live_mask(case, plate).sum())
        total += 3.0 * b * B * (D + 1) + 3.0 * kept * (D + 1)
    return total


def io_bytes(case, itemsize: int) -> float:
    rows = case.b + case.B * (2 if case.kind == "string" else case.plates)
    return (rows + case.b) * (case.D + 1) * itemsize


def fewest_launches(case) -> int:
    """Launches the two-pass design needs at least: distances, coefficients, sums per pair set,
    plus one finalisation where plates are combined or rows normalised."""
    if case.kind == "string":
        return 3
    fin = (
        case.plates == 2 or case.params["plate_gamma"] is not None or bool(case.params["normalize"])
    )
    return 3 * case.plates + int(fin)


def bound_us(case, dtype, arch: str) -> float:
    a = ARCHS[arch]
    it = _itemsize(dtype)
    return max(
        useful_flop(case) / (a.fp32_tflops * 1e6), io_bytes(case, it) / (a.hbm_tbs * 1e6)
    ) + LAUNCH_US * fewest_launches(case)


def _gemm_us(m, n, k, it, a: Arch) -> float:
    flop_t = 2.0 * m * n * k / (GEMM_FRACTION * a.fp32_tflops * 1e6)
    mem_t = (m * k + k * n + m * n) * it / (a.hbm_tbs * 1e6)
    return max(flop_t, mem_t) + LAUNCH_US


def _elementwise_us(count: int, elems: float, it, a: Arch) -> float:
    """``count`` elementwise / reduction launches, each reading and writing ``elems``."""
    return count * (2.0 * elems * it / (a.hbm_tbs * 1e6) + LAUNCH_US)


def torch_form_estimate(case, dtype, arch: str) -> dict:
    """What a user would run instead, on the same GPU (launch and kernel counts from
    benchmarks/baselines.py):

    * Coulomb, per plate: ``torch.cdist`` (norms, the augmented-matrix GEMM ``[b, D+3] x
      [D+3, B]``, clamp, sqrt: 1 GEMM + 8 launches), ``-DIM log(d + 1e-7)`` (3), ``softmax``
      (1), ``coeff @ Y`` (GEMM), ``- x`` (1); then plate normalisation / combination /
      row normalisation (8 launches over ``[b, D+1]``).
    * string (``string_gemm``): 5 GEMMs (``x A^T``, ``x Delta^T``, ``c2 A``, ``c2 Delta``,
      ``c1 Delta``), ~35 elementwise launches over ``[b, B]`` (r^2 assembly, the pair terms,
      the weights), ~12 over ``[b, D]`` / ``[B, D]`` and ~25 tiny ones over ``[b]`` / ``[B]``.

    GEMMs at ``GEMM_FRACTION`` of FP32 peak (cuBLAS SGEMM without TF32; float64: the FP64
    rate, i.e. FP32 peak x c_fp32 / c_fp64), elementwise kernels at HBM bandwidth."""
    a = ARCHS[arch]
    it = _itemsize(dtype)
    slow = 1.0 if it == 4 else a.c_fp64 / a.c_fp32
    D, b, B = case.D, case.b, case.B
    if case.kind == "string":
        gemm = 2 * _gemm_us(b, B, D, it, a) + 3 * _gemm_us(b, D, B, it, a)
        elem = (
            _elementwise_us(35, b * B, it, a)
            + _elementwise_us(12, b * D, it, a)
            + _elementwise_us(25, b, it, a)
        )
        launches = 5 + 35 + 12 + 25
    else:
        gemm = case.plates * (_gemm_us(b, B, D + 3, it, a) + _gemm_us(b, D + 1, B, it, a))
        elem = case.plates * (_elementwise_us(6, b * B, it, a) + _elementwise_us(7, b * D, it, a))
        elem += _elementwise_us(8, b * D, it, a)
        launches = case.plates * 15 + 8
    gemm_flop_t = gemm - LAUNCH_US * (5 if case.kind == "string" else 2 * case.plates)
    us = gemm_flop_t * slow + LAUNCH_US * (5 if case.kind == "string" else 2 * case.plates) + elem
    return {"us": us, "launches": launches}


def kernel_estimates(backend: str, field: str, case, dtype, arch: str) -> list[dict] | None:
    """Per-kernel dicts of the contract for ``backend`` ("triton" or "cuda"); None when the
    CUDA model (benchmarks/gpu_model_cuda.py) is not there."""
    if backend == "triton":
        return triton_kernel_estimates(field, case, dtype, arch)
    try:
        import gpu_model_cuda
    except ImportError:
        return None
    return gpu_model_cuda.kernel_estimates(field, case, dtype, arch)


def estimate(field: str, case_name: str, backend: str, dtype=None, arch: str = "sm_90") -> dict:
    """Model of one call: ``{"us", "bound_us", "ratio", "launches", "torch_us", "kernels"}``
    (``us`` None when the backend has no model here). ``case_name``: ``"CIFAR"``,
    ``"string-CIFAR"``, ... (benchmarks/cases.py)."""
    import torch

    dtype = dtype or torch.float32
    cases = published_cases()
    case = cases.get(case_name) or cases[f"{field}-{case_name}"]
    ks = kernel_estimates(backend, field, case, dtype, arch)
    bnd = bound_us(case, dtype, arch)
    out = {
        "bound_us": bnd,
        "torch_us": torch_form_estimate(case, dtype, arch)["us"],
        "us": None,
        "ratio": None,
        "launches": None,
        "kernels": None,
    }
    if ks is not None:
        t = call_time(ks, ARCHS[arch])
        out.update(us=t["us"], ratio=t["us"] / bnd, launches=t["launches"], kernels=t["kernels"])
    return out


def _targets(case) -> float:
    return 3.0 if case.name == "toy" else 1.5


def table(archs=("sm_90", "sm_80", "sm_89"), dtypes=None, backends=("triton", "cuda")) -> str:
    import torch

    dtypes = dtypes or (torch.float32, torch.float64)
    lines = []
    cases = published_cases()
    for arch in archs:
        a = ARCHS[arch]
        lines += [
            "",
            f"**{a.name}** ({arch}: {a.sms} SMs at {a.clock_ghz} GHz, FP32 "
            f"{a.fp32_tflops} TFLOP/s, HBM {a.hbm_tbs} TB/s, L2 {a.l2_tbs} TB/s assumed)",
            "",
            "| shape | dtype | backend | launches | estimate µs | bound µs | "
            "estimate / bound | PyTorch form µs | speed-up vs PyTorch | "
            "largest kernel (issue / memory µs) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, case in cases.items():
            for dt in dtypes:
                for be in backends:
                    e = estimate(case.kind, key, be, dt, arch)
                    if e["us"] is None:
                        lines.append(
                            f"| {case.kind} {case.name} | {str(dt)[6:]} | {be} | – | "
                            f"no model | {e['bound_us']:.1f} | – | {e['torch_us']:.1f} "
                            "| – | – |"
                        )
                        continue
                    top = max(e["kernels"], key=lambda k: k["us"])
                    lines.append(
                        f"| {case.kind} {case.name} | {str(dt)[6:]} | {be} | {e['launches']} | "
                        f"{e['us']:.1f} | {e['bound_us']:.1f} | {e['ratio']:.2f}× | "
                        f"{e['torch_us']:.1f} | {e['torch_us'] / e['us']:.2f}× | "
                        f"{top['name']} ({top['issue_us']:.1f} / {top['memory_us']:.1f}) |"
                    )
    return "\n".join(lines)


def kernel_table(arch: str = "sm_90", dtype=None, backend: str = "triton") -> str:
    """Per kernel of every published shape: grid, registers, resident blocks, waves, warp
    instructions, issue / memory time."""
    import torch

    dtype = dtype or torch.float32
    lines = [
        "| shape | kernel | tile | grid | registers | resident/SM | waves | "
        "warp instr. (M) | DRAM MB | L2 MB | issue µs | memory µs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _key, case in published_cases().items():
        ks = kernel_estimates(backend, case.kind, case, dtype, arch)
        if ks is None:
            continue
        for k in ks:
            t = kernel_time(k, ARCHS[arch])
            lines.append(
                f"| {case.kind} {case.name} | {k['name']} | {k.get('note', '')} | "
                f"{k['grid']} | {k['registers']} | {t['resident']} | {t['waves']} | "
                f"{k['warp_instructions'] / 1e6:.2f} | {k['dram_bytes'] / 1e6:.1f} | "
                f"{k['l2_bytes'] / 1e6:.1f} | {t['issue_us']:.1f} | "
                f"{t['memory_us']:.1f} |"
            )
    return "\n".join(lines)


def targets_report() -> str:
    """The targets of the GPU work, from the model (H100, float32): image shapes within 1.5x of
    the bound for the faster backend and 2x for the other, toys within 3x; RTX 4090 within 2x of
    the H100 estimate scaled by FP32 peak; image shapes >= 1.5x faster than the PyTorch form."""
    import torch

    f32 = torch.float32
    h, g = ARCHS["sm_90"], ARCHS["sm_89"]
    lines = []
    for key, case in published_cases().items():
        ests = {be: estimate(case.kind, key, be, f32, "sm_90") for be in ("triton", "cuda")}
        have = {be: e for be, e in ests.items() if e["us"] is not None}
        best = min(have.values(), key=lambda e: e["us"])
        lim = _targets(case)
        parts = []
        for be, e in have.items():
            need = lim if e is best or case.name == "toy" else 2.0
            ok = e["ratio"] <= need
            parts.append(
                f"{be} {e['ratio']:.2f}× of bound (target {need:g}×: {'met' if ok else 'NOT met'})"
            )
        # the FP64-slow GPU, per backend: its estimate against twice the same backend's H100
        # estimate scaled by FP32 peak
        for be, e in have.items():
            e89 = estimate(case.kind, key, be, f32, "sm_89")
            if e89["us"] is None:
                continue
            scaled = e["us"] * h.fp32_tflops / g.fp32_tflops
            ok = e89["us"] <= 2 * scaled
            parts.append(
                f"RTX 4090 {be} {e89['us']:.0f} µs vs 2 × {scaled:.0f} µs "
                f"({'met' if ok else 'NOT met'})"
            )
        if case.name != "toy":
            sp = best["torch_us"] / best["us"]
            parts.append(f"vs PyTorch form {sp:.2f}× ({'met' if sp >= 1.5 else 'NOT met'})")
        lines.append(f"- {case.kind} {case.name}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    os.environ.pop("TRITON_INTERPRET", None)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--arch",
        action="append",
        choices=sorted(ARCHS),
        help="GPU(s) to model (default: sm_90, sm_80, sm_89)",
    )
    ap.add_argument("--f32-only", action="store_true", help="float32 only")
    ap.add_argument("--kernels", action="store_true", help="also the per-kernel table (sm_90)")
    ap.add_argument(
        "--write",
        metavar="FILE",
        help="replace the block between <!-- gpu-model:begin --> and "
        "<!-- gpu-model:end --> of FILE (BENCHMARKS.md) with the output",
    )
    args = ap.parse_args(argv)
    import torch

    archs = tuple(args.arch or ("sm_90", "sm_80", "sm_89"))
    dtypes = (torch.float32,) if args.f32_only else (torch.float32, torch.float64)
    parts = [
        f"Static model (`python benchmarks/gpu_model.py`; LAUNCH_US={LAUNCH_US}, "
        f"SAT_WARPS={SAT_WARPS}, GEMM_FRACTION={GEMM_FRACTION}): **estimates from the "
        "compiled code, not measurements**.",
        table(archs, dtypes),
    ]
    if args.kernels:
        parts += ["", "Per kernel (H100, float32, Triton):", "", kernel_table("sm_90")]
    parts += ["", "Targets (H100, float32):", "", targets_report()]
    text = "\n".join(parts)
    print(text)
    if args.write:
        with open(args.write) as fh:
            doc = fh.read()
        begin, end = "<!-- gpu-model:begin -->", "<!-- gpu-model:end -->"
        i, j = doc.index(begin) + len(begin), doc.index(end)
        with open(args.write, "w") as fh:
            fh.write(doc[:i] + "\n" + text + "\n" + doc[j:])


if __name__ == "__main__":
    main()
