"""CPU benchmark suite (issue 3): cases at the published shapes, inputs, and the shared runner.

Run (BENCHMARKS.md quotes the exact command of the published table)::

    pytest benchmarks/ --benchmark-only                  # full suite, ~15-25 min on 2 cores
    IFM_BENCH_QUICK=1 pytest benchmarks/ --benchmark-disable   # smoke test, tiny shapes

Environment:

* ``IFM_BENCH_THREADS`` (default 2): ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` for every
  implementation (also in the memory subprocesses and for the matmul peak).
* ``IFM_BENCH_QUICK=1``: shrink every shape (D <= 48, b <= 16, B <= 64) and skip the memory
  subprocesses (``IFM_BENCH_MEMORY=1`` forces them).
* ``IFM_BENCH_HEAVY=1``: also run the authors' materialising Coulomb form at the PFGM shape
  (three 6.4 GB ``[b, B, D+1]`` tensors; needs >= 16 GB available, checked before running).
* ``IFM_BENCH_REPORT=path``: write the Markdown summary (tables, ratios, targets) there; it is
  always printed at the end of the session.

Per implementation and case, ``benchmark.extra_info`` holds: ``peak_extra_mb`` (peak RSS of a
fresh process during one call minus its RSS after the inputs were created and the code path was
warmed up, see ``_memory.py``), ``max_row_rel_err`` / ``max_row_rel_err_near_plates`` (largest
``||E_i - R_i|| / ||R_i||`` against the float64 reference on the sampler's queries and on queries
at 1e-3..0.5 from either plate), and for the fused kernel ``gflop_needed``, ``gflops`` and
``pct_of_matmul_peak`` (the arithmetic an exact evaluation needs, PERFORMANCE.md).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from typing import Dict, Optional

THREADS = int(os.environ.get("IFM_BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import ifm  # noqa: F401,E402
except ImportError:  # running from a source tree without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
    import ifm  # noqa: F401,E402
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
from ifm import reference  # noqa: E402

QUICK = os.environ.get("IFM_BENCH_QUICK") == "1"
HEAVY = os.environ.get("IFM_BENCH_HEAVY") == "1"
MEMORY = os.environ.get("IFM_BENCH_MEMORY", "0" if QUICK else "1") == "1"
SEED = 20240531
EPS_Z = 1e-3  # FIELDS.md §5: z ~ U(eps, L - eps)


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """One published shape. ``sides``: what sits on the plates (``image:C,H,W``, ``gauss``,
    ``swissroll``). Coulomb ``sampler``: ``interp`` (FIELDS.md §5 line between the plates) or
    ``pfgm`` (PFGM's perturbation of the data)."""

    kind: str
    name: str
    D: int
    b: int
    B: int
    sides: tuple
    params: dict                  # string: L, sigma0, K, d; Coulomb: L, plate_gamma, normalize
    sampler: str = "interp"
    plates: int = 2
    targets: tuple = ()           # (implementation, minimum speed-up of ifm-cpu over it)
    high_d: bool = False          # >= 50 % of the float32 matmul peak expected

    # Coulomb argument sets
    @property
    def sum_eps(self):
        return 1e-7 if self.params.get("normalize") == "pfgm" else 0.0

    def api_args(self):
        return {"plate_gamma": self.params["plate_gamma"], "normalize": self.params["normalize"]}

    def norm_args(self):
        pfgm = self.params["normalize"] == "pfgm"
        return {"plate_gamma": self.params["plate_gamma"], "normalize": bool(self.params["normalize"]),
                "norm_scale": math.sqrt(self.D if pfgm else self.D + 1),
                "eps": 5.0 if pfgm else 1e-5}

    def input_bytes(self):
        rows = self.b + self.B * (2 if self.kind == "string" else self.plates)
        return rows * (self.D + 1) * 4


def _string_case(name, D, b, B, L, sigma0, K, sides, **kw):
    return Case("string", name, D, b, B, sides,
                {"L": L, "sigma0": sigma0, "K": K, "d": math.pi / (2 * K)}, **kw)


_IMAGE_TARGETS_STRING = (("authors-loop", 50.0), ("gemm-fp64", 4.0), ("gemm-fp32", 1.0))
_IMAGE_TARGETS_COULOMB = (("authors-materialising", 200.0), ("cdist-softmax-matmul", 1.0),
                          ("keops", 10.0))

_FULL_CASES = [
    _string_case("toy", 2, 1024, 4096, 6.0, 1.0, 10.0, ("gauss", "swissroll")),
    _string_case("CIFAR", 3072, 64, 256, 20.0, 1.0, math.pi / 20, ("image:3,32,32", "gauss"),
                 targets=_IMAGE_TARGETS_STRING, high_d=True),
    _string_case("W2S", 12288, 64, 256, 20.0, 10.0, math.pi / 20,
                 ("image:3,64,64", "image:3,64,64"), targets=_IMAGE_TARGETS_STRING, high_d=True),
    _string_case("CelebA-64", 12288, 64, 64, 20.0, 1.0, math.pi / 20, ("image:3,64,64", "gauss"),
                 high_d=True),
    Case("coulomb", "EFM-CIFAR", 3072, 64, 1024, ("image:3,32,32", "gauss"),
         {"L": 100.0, "plate_gamma": 5.0, "normalize": False},
         targets=_IMAGE_TARGETS_COULOMB, high_d=True),
    Case("coulomb", "PFGM", 3072, 128, 4096, ("image:3,32,32",),
         {"L": None, "plate_gamma": None, "normalize": "pfgm"}, sampler="pfgm", plates=1,
         targets=_IMAGE_TARGETS_COULOMB, high_d=True),
    Case("coulomb", "toy", 2, 1024, 4096, ("gauss", "swissroll"),
         {"L": 6.0, "plate_gamma": 1e-7, "normalize": False}, targets=(("keops", 2.0),)),
]


def _shrink(case: Case) -> Case:
    sides = tuple("image:3,4,4" if s.startswith("image") else s for s in case.sides)
    D = 48 if case.D > 48 else case.D
    return dataclasses.replace(case, D=D, b=min(case.b, 16), B=min(case.B, 64), sides=sides)


CASES: Dict[str, Case] = {f"{c.kind}-{c.name}": (_shrink(c) if QUICK else c) for c in _FULL_CASES}


def case_ids(kind):
    return [c.name for c in CASES.values() if c.kind == kind]


# ----------------------------------------------------------------------------------------------
# inputs (fixed seed, realistic distributions)
# ----------------------------------------------------------------------------------------------
def _side(kind: str, n: int, D: int, gen: torch.Generator, domain: int) -> torch.Tensor:
    """``n`` data-like vectors in R^D.

    * ``image:C,H,W``: smooth random images in [-1, 1]: a coarse (H/8 x W/8) Gaussian field per
      channel, bilinearly upsampled, plus 0.15 pixel noise, through tanh (``domain`` shifts the
      colour balance, e.g. winter vs summer).
    * ``gauss``: N(0, I) (the noise plate of generation).
    * ``swissroll``: 2-D Swiss roll, t ~ U(1.5 pi, 4.5 pi), (t cos t, t sin t) / 5 + N(0, 0.05²).
    """
    if kind.startswith("image:"):
        C, H, W = (int(v) for v in kind[6:].split(","))
        coarse = torch.randn(n, C, max(H // 8, 1), max(W // 8, 1), generator=gen)
        img = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear",
                                              align_corners=False)
        img = img + 0.15 * torch.randn(n, C, H, W, generator=gen)
        shift = 0.3 * domain * torch.linspace(-1, 1, C).view(1, C, 1, 1)
        return torch.tanh(img + shift).reshape(n, C * H * W)
    if kind == "gauss":
        return torch.randn(n, D, generator=gen)
    if kind == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen))
        xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5
        return xy + 0.05 * torch.randn(n, 2, generator=gen)
    raise ValueError(kind)


def _interp(A, C, z, L):
    return torch.cat([z, (1 - z / L) * A + (z / L) * C], 1)


def _near_plate_z(b, L, gen):
    """Half the queries at z in [1e-3, 0.5] (log-spaced), half at L minus those."""
    h = b - b // 2
    near = torch.logspace(-3, math.log10(0.5), h)[:, None]
    z = torch.cat([near, L - near[: b // 2]], 0)
    return z[torch.randperm(b, generator=gen)]


def make_inputs(case: Case) -> dict:
    """Float32 inputs: ``points``, ``near`` (queries near the plates) and the plate tensors."""
    gen = torch.Generator().manual_seed(SEED)
    D, b, B = case.D, case.b, case.B
    sides = [_side(kind, B, D, gen, domain=i) for i, kind in enumerate(case.sides)]
    if case.kind == "string":
        L = case.params["L"]
        A, C = sides
        z = EPS_Z + (L - 2 * EPS_Z) * torch.rand(b, 1, generator=gen)
        return {"points": _interp(A[:b], C[:b], z, L),
                "near": _interp(A[:b], C[:b], _near_plate_z(b, L, gen), L),
                "quarks": torch.cat([torch.zeros(B, 1), A], 1),
                "antiquarks": torch.cat([torch.full((B, 1), L), C], 1)}
    out = {"positive": torch.cat([torch.zeros(B, 1), sides[0]], 1)}
    if case.sampler == "interp":
        L = case.params["L"]
        Y = sides[1]
        out["negative"] = torch.cat([torch.full((B, 1), L), Y], 1)
        z = EPS_Z + (L - 2 * EPS_Z) * torch.rand(b, 1, generator=gen)
        out["points"] = _interp(sides[0][:b], Y[:b], z, L)
        out["near"] = _interp(sides[0][:b], Y[:b], _near_plate_z(b, L, gen), L)
        return out
    # PFGM's perturbation (CIFAR-10 settings: sigma_end = 0.01, tau = 0.03, M = 291,
    # m ~ U[0, M]): z = |N(0, sigma²)| (1 + tau)^m, x = data + u ||N(0, sigma² I_D)|| (1 + tau)^m
    # with u uniform on the sphere. ``near`` uses m ~ U[0, 30] (queries close to the data).
    data = sides[0][:b]

    def perturb(m):
        scale = (1.0 + 0.03) ** m
        z = (0.01 * torch.randn(b, 1, generator=gen)).abs() * scale
        u = torch.randn(b, D, generator=gen)
        u = u / u.norm(dim=1, keepdim=True)
        radius = (0.01 * torch.randn(b, D, generator=gen)).norm(dim=1, keepdim=True)
        return torch.cat([z, data + u * radius * scale], 1)

    out["points"] = perturb(291.0 * torch.rand(b, 1, generator=gen))
    out["near"] = perturb(30.0 * torch.rand(b, 1, generator=gen))
    return out


def call_args(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in ("points", "near")}


def run_impl(case: Case, impl: str, points, inputs):
    return baselines.IMPLEMENTATIONS[case.kind][impl](case, points, call_args(inputs))


def reference64(case: Case, points, inputs):
    """The float64 oracle (chunked reference) on float64 copies of the float32 inputs."""
    p = points.double()
    a = {k: v.double() for k, v in call_args(inputs).items()}
    if case.kind == "string":
        return reference.string_field(p, a["quarks"], a["antiquarks"], **case.params)
    n = case.norm_args()
    return reference.coulomb_field(p, a["positive"], a.get("negative"),
                                   plate_gamma=n["plate_gamma"], sum_eps=case.sum_eps,
                                   normalize=n["normalize"], norm_scale=n["norm_scale"],
                                   eps=n["eps"])


def max_row_rel_err(out, ref) -> float:
    """``max_i ||out_i - ref_i|| / ||ref_i||`` (0/0 = 0, x/0 = inf; NaN -> inf)."""
    diff = (out.double() - ref).norm(dim=1)
    den = ref.norm(dim=1)
    err = torch.where(den > 0, diff / den.clamp_min(1e-300),
                      torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff)))
    err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    return float(err.max())


def needed_gflop(case: Case, inputs) -> float:
    """Arithmetic an exact evaluation needs (PERFORMANCE.md "Arithmetic floor")."""
    p = inputs["points"]
    if case.kind == "string":
        nz = baselines.string_nonzero_pairs(p, inputs["quarks"], inputs["antiquarks"],
                                            **case.params)
        return (5.0 * case.b * case.B * case.D + 6.0 * nz * case.D) / 1e9
    sig = baselines.coulomb_significant_pairs(p, inputs["positive"], inputs.get("negative"))
    return 3.0 * (case.b * case.B * case.plates + sig) * (case.D + 1) / 1e9


# ----------------------------------------------------------------------------------------------
# machine
# ----------------------------------------------------------------------------------------------
def cpu_info() -> dict:
    info = {"threads": THREADS, "torch": torch.__version__, "python": platform.python_version()}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return info
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k, v)
    flags = set(fields.get("flags", "").split())
    info.update({"cpu": fields.get("model name", "?"), "mhz": float(fields.get("cpu MHz", "0")),
                 "logical_cpus": text.count("processor\t:"),
                 "flags": " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl")
                                   if f in flags)})
    lanes = 16 if "avx512f" in flags else 8
    # cores x GHz x 2 FMA units x lanes x 2 flop (per FMA)
    info["theoretical_gflops"] = THREADS * info["mhz"] / 1e3 * 2 * lanes * 2
    return info


def matmul_peak_gflops(n: Optional[int] = None, reps: int = 7) -> float:
    """Median float32 ``torch.mm`` throughput on ``n x n`` matrices (the practical peak)."""
    n = n or (512 if QUICK else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    c = torch.randn(n, n, generator=gen)
    torch.mm(a, c)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, c)
        times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


# ----------------------------------------------------------------------------------------------
# runner shared by test_bench_string.py and test_bench_coulomb.py
# ----------------------------------------------------------------------------------------------
def _rounds(t0: float) -> int:
    """Rounds for a function whose single call took ``t0`` seconds (~2 s per benchmark)."""
    return int(min(50, max(3 if t0 > 0.5 else 5, 2.0 / max(t0, 1e-6))))


def _mem_available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return 0.0


def heavy_reason(case: Case, impl: str) -> Optional[str]:
    """Reason to skip a call that needs many GB (the authors' PFGM form), or None."""
    if not (impl == "authors-materialising" and case.name == "PFGM" and not QUICK):
        return None
    if not HEAVY:
        return ("the authors' PFGM form holds three 6.4 GB [b, B, D+1] tensors; set "
                "IFM_BENCH_HEAVY=1 on a quiet machine with >= 16 GB available")
    if _mem_available_gb() < 16:
        return f"only {_mem_available_gb():.1f} GB available (< 16 GB) for the authors' PFGM form"
    return None


class Runner:
    def __init__(self):
        self._inputs = {}
        self._refs = {}
        self.peaks = []     # float32 matmul GFLOP/s, measured next to each fused-kernel case
        self.results = []   # one dict per measured (case, implementation)

    def inputs(self, case: Case):
        key = (case.kind, case.name)
        if key not in self._inputs:
            self._inputs.clear()          # keep one case's tensors at a time
            self._inputs[key] = make_inputs(case)
        return self._inputs[key]

    def ref(self, case: Case, which: str):
        key = (case.kind, case.name, which)
        if key not in self._refs:
            inp = self.inputs(case)
            self._refs[key] = reference64(case, inp[which], inp)
        return self._refs[key]

    def run(self, benchmark, kind: str, name: str, impl: str):
        case = CASES[f"{kind}-{name}"]
        benchmark.group = f"{kind} {name}"
        reason = baselines.unavailable(impl) or heavy_reason(case, impl)
        if reason:
            pytest.skip(reason)
        inp = self.inputs(case)
        points = inp["points"]

        def fn():
            return run_impl(case, impl, points, inp)

        t = time.perf_counter()
        try:
            out = fn()                    # warm-up (JIT, thread pool, caches); kept for accuracy
        except Exception as exc:          # noqa: BLE001
            if impl == "keops":
                pytest.skip(f"KeOps failed to compile or run: {exc!r}"[:300])
            raise
        t0 = time.perf_counter() - t
        heavy = case.name == "PFGM" and impl == "authors-materialising"
        rounds = 1 if heavy else _rounds(t0)
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else t0
        best = stats.stats.min if stats is not None else t0

        info = {"case": name, "kind": kind, "impl": impl, "rounds": rounds, "threads": THREADS,
                "shape": f"D={case.D} b={case.b} B={case.B}", "input_mb": case.input_bytes() / 2**20,
                "max_row_rel_err": max_row_rel_err(out, self.ref(case, "points"))}
        del out
        if not heavy:
            near = run_impl(case, impl, inp["near"], inp)
            info["max_row_rel_err_near_plates"] = max_row_rel_err(near, self.ref(case, "near"))
        if impl == "ifm-cpu":
            # the practical peak, measured right after the kernel (same load on a shared machine)
            peak = matmul_peak_gflops()
            self.peaks.append(peak)
            gflop = needed_gflop(case, inp)
            info.update({"gflop_needed": gflop, "gflops": gflop / median,
                         "gflops_best": gflop / best, "matmul_peak_gflops": peak,
                         "theoretical_gflops": cpu_info().get("theoretical_gflops"),
                         "pct_of_matmul_peak": 100.0 * gflop / median / peak,
                         "pct_of_matmul_peak_best": 100.0 * gflop / best / peak})
        if MEMORY:
            import _memory
            info.update(_memory.measure(kind, name, impl))
        benchmark.extra_info.update(info)
        self.results.append(dict(info, median_s=median, min_s=best))


_RUNNER = Runner()


@pytest.fixture(scope="session")
def bench():
    """The session's :class:`Runner` (inputs, float64 references, peak, results)."""
    return _RUNNER


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------
def _fmt_time(s):
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_err(e):
    if e is None:
        return "–"
    return "inf/NaN" if not math.isfinite(e) else f"{e:.1e}"


def _verdict(by_median, by_min):
    if by_median and by_min:
        return "met"
    return "met by min only" if by_min else "NOT met"


def summary_markdown(results, peaks=()) -> str:
    info = cpu_info()
    lines = [f"Machine: {info.get('cpu', '?')}, {info.get('logical_cpus', '?')} logical CPUs at "
             f"{info.get('mhz', 0):.0f} MHz ({info.get('flags', '')}); torch {info['torch']}, "
             f"{THREADS} threads; {time.strftime('%Y-%m-%d %H:%M %Z')}."]
    if peaks:
        lines.append(f"float32 matmul peak (2048³, {THREADS} threads, measured after each fused "
                     f"case): {min(peaks):.0f}–{max(peaks):.0f} GFLOP/s; "
                     f"theoretical {info.get('theoretical_gflops', 0):.0f} GFLOP/s "
                     f"({THREADS} cores × {info.get('mhz', 0) / 1e3:.2f} GHz × 2 FMA units × 16 "
                     "lanes × 2 flop).")
    if QUICK:
        lines.append("IFM_BENCH_QUICK=1: shapes shrunk to a smoke test; targets not evaluated.")
    lines.append("")
    verdicts = []
    order = list(dict.fromkeys((r["kind"], r["case"]) for r in results))
    for kind, name in order:
        case = CASES[f"{kind}-{name}"]
        rows = [r for r in results if (r["kind"], r["case"]) == (kind, name)]
        fused = next((r for r in rows if r["impl"] == "ifm-cpu"), None)
        lines += [f"**{kind} {name}** ({rows[0]['shape']}, inputs {rows[0]['input_mb']:.2f} MB)", "",
                  "| implementation | median (min) | ifm-cpu speed-up: median (min) | peak extra memory | "
                  "max row rel. err (sampler) | (near plates) | % of matmul peak: median (min) |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            speed = (f"{r['median_s'] / fused['median_s']:.1f}× ({r['min_s'] / fused['min_s']:.1f}×)"
                     if fused else "–")
            mem = f"{r['peak_extra_mb']:.1f} MB" if "peak_extra_mb" in r else "–"
            pct = (f"{r['pct_of_matmul_peak']:.0f} % ({r['pct_of_matmul_peak_best']:.0f} %) of "
                   f"{r['matmul_peak_gflops']:.0f}" if "pct_of_matmul_peak" in r else "")
            lines.append(f"| {r['impl']} | {_fmt_time(r['median_s'])} ({_fmt_time(r['min_s'])}) | "
                         f"{speed} | {mem} | "
                         f"{_fmt_err(r['max_row_rel_err'])} | "
                         f"{_fmt_err(r.get('max_row_rel_err_near_plates'))} | {pct} |")
        lines.append("")
        if not fused or QUICK:
            continue
        for impl, need in case.targets:
            other = next((r for r in rows if r["impl"] == impl), None)
            if other is None:
                verdicts.append(f"- {kind} {name}: ≥ {need:g}× vs {impl}: not measured")
                continue
            got = other["median_s"] / fused["median_s"]
            best = other["min_s"] / fused["min_s"]
            verdicts.append(f"- {kind} {name}: ≥ {need:g}× vs {impl}: {got:.1f}× median, "
                            f"{best:.1f}× min — {_verdict(got >= need, best >= need)}")
        if case.high_d:
            pct, best = fused["pct_of_matmul_peak"], fused["pct_of_matmul_peak_best"]
            verdicts.append(f"- {kind} {name}: ≥ 50 % of float32 peak: {pct:.0f} % median, "
                            f"{best:.0f} % min — {_verdict(pct >= 50, best >= 50)}")
        if "peak_extra_mb" in fused:
            ok = fused["peak_extra_mb"] <= fused["input_mb"]
            verdicts.append(f"- {kind} {name}: peak extra memory ≤ inputs: "
                            f"{fused['peak_extra_mb']:.1f} MB vs {fused['input_mb']:.2f} MB — "
                            f"{'met' if ok else 'NOT met'}")
    if verdicts:
        lines += ["Targets (issue 3):", ""] + verdicts
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RUNNER.results:
        return
    text = summary_markdown(_RUNNER.results, _RUNNER.peaks)
    terminalreporter.write_sep("=", "ifm CPU benchmark summary (Markdown)")
    terminalreporter.write_line(text)
    path = os.environ.get("IFM_BENCH_REPORT")
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")
        with open(os.path.splitext(path)[0] + ".json", "w") as fh:
            json.dump({"results": _RUNNER.results, "peaks": _RUNNER.peaks, "machine": cpu_info()},
                      fh, indent=1, default=str)
