"""The GPU check of scripts/gpu.sh: build, parity, sanitizers, CUDA graphs, benchmarks, report.

Runs in the current Python environment (no venv, no network): a CUDA build of torch, triton,
nvcc, compute-sanitizer, pytest. Each step has a timeout and its log in ``<out>/logs/``; a
failing step is reported and the next one still runs. Steps that need a GPU report "no GPU: not
run" when torch sees none (and check what they can without one: test collection, the driver
scripts' call lists, the static model's estimates).

Output folder ``$IFM_GPU_OUT`` (default ``gpu-report/``): ``REPORT.md`` and ``report.json``
(every step and figure), ``bench.json``, ``logs/``.

Exit code: 0 every step passed; 1 a step failed; 3 no GPU: the GPU steps were not run (and the
others passed).

Environment: ``IFM_GPU_OUT``; ``IFM_GPU_ARCHS`` (TORCH_CUDA_ARCH_LIST of the build; default the
visible GPU's arch, without a GPU "9.0"); ``IFM_GPU_STEPS`` (comma-separated subset of
build,parity,sanitizer,cuda_graph,bench); ``MAX_JOBS``.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
OUT = pathlib.Path(os.environ.get("IFM_GPU_OUT", "gpu-report")).resolve()
LOGS = OUT / "logs"
EXIT_FAIL, EXIT_NO_GPU = 1, 3
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# Per-step limits (s). The whole check stops at IFM_GPU_BUDGET_S (default 360 s, about 6
# minutes on one H100 / H200, so that a 15-minute loan, its start included, leaves time to run
# it again): a step's limit is cut so that each later step keeps its RESERVE, and a step that
# would get less than MIN_STEP_S is skipped and reported as such.
TIMEOUTS = dict(
    build=200, parity=120, sanitizer_tool=30, sanitizer_warmup=40, cuda_graph=40, bench=100
)
RESERVE = dict(parity=60, sanitizer=50, cuda_graph=15, bench=50)
ORDER = ("build", "parity", "sanitizer", "cuda_graph", "bench")
BUDGET_S = float(os.environ.get("IFM_GPU_BUDGET_S", "360"))
MIN_STEP_S = 15.0
SETUPTOOLS_MIN = 77  # pyproject.toml's build requirement
# (share of the parity step's time, pytest arguments); a selection's unused time goes to the
# next ones. The first is the contract (both backends against the float64 reference).
PARITY_TESTS = [
    # both backends on CUDA tensors against the float64 reference (golden + random)
    (0.4, ["tests/test_fields_parity.py", "-k", "cuda"]),
    # CUDA backend: golden files, odd sizes across every tile / split boundary, published shapes
    (0.3, ["tests/test_cuda_backend.py", "-k", "gpu"]),
    # Triton backend on the GPU: edge sizes, D = 49152, the float32 coefficient pass, live-block
    # lists, wide offsets, launch counts (the plan, SASS and offline-compile tests ran in CI)
    (
        0.3,
        [
            "tests/test_triton_kernels.py",
            "-k",
            "edge_sizes or large_D or query_on_a_charge or small_blocks or real_gpu_plans"
            " or track_the_f64 or plate_partial or live_block or wide_offsets or bitwise"
            " or launch_count or recorded_grids or smoke",
        ],
    ),
]


def now() -> float:
    return time.monotonic()


def run(cmd, log: pathlib.Path, timeout: float, env=None) -> tuple:
    """Run ``cmd`` (its own process group, killed at ``timeout``); ``(rc, seconds, timed_out)``."""
    t0 = now()
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            # SIGINT first: pytest then stops, prints its summary and writes its junit XML
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            timed_out = True
            f.write(f"\n[gpu_check] killed after the step's limit of {timeout:.0f} s\n")
    return rc, now() - t0, timed_out


def tail(log: pathlib.Path, n: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def probe() -> dict:
    """Versions and the GPU as this environment sees them."""
    code = r"""
import json, shutil, subprocess, sys
info = {"python": sys.version.split()[0]}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                gpu=torch.cuda.is_available())
    if info["gpu"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu_name=p.name, capability=f"{p.major}.{p.minor}",
                    sm_count=p.multi_processor_count, gpu_count=torch.cuda.device_count())
except Exception as exc:
    info.update(torch=None, gpu=False, torch_error=repr(exc))
for mod in ("triton", "numpy", "scipy", "pytest", "hypothesis", "setuptools", "ninja", "ot",
            "pytest_benchmark"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "present")
    except Exception:
        info[mod] = None
for tool in ("nvcc", "compute-sanitizer", "ncu", "nvidia-smi"):
    info[tool] = shutil.which(tool)
if info["nvcc"]:
    out = subprocess.run([info["nvcc"], "--version"], capture_output=True, text=True).stdout
    info["nvcc_version"] = out.strip().splitlines()[-1] if out.strip() else None
print(json.dumps(info))
"""
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd="/")
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        info = {"probe_error": out.stderr[-2000:], "gpu": False}
    info["platform"] = platform.platform()
    info["commit"] = os.environ.get("IFM_GPU_COMMIT")  # set when run from a copy of the tree
    if not info["commit"]:
        try:
            info["commit"] = (
                subprocess.run(
                    ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or None
            )
        except OSError:
            info["commit"] = None
    return info


def junit_counts(xml: pathlib.Path) -> dict:
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    try:
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            for k in counts:
                counts[k] += int(suite.get(k, 0))
    except (OSError, ET.ParseError):
        return {}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


class Check:
    def __init__(self, env: dict):
        self.env = env
        self.gpu = bool(env.get("gpu"))
        self.steps = []
        self.figures = {}
        self.deadline = now() + BUDGET_S
        self.current = "build"

    def limit(self, key: str) -> float:
        """``TIMEOUTS[key]`` cut to the time left before the deadline less the later steps'
        reserves (at least 10 s; :meth:`time_left` decides whether a step runs at all). Without
        a GPU (a dry run on a small CI machine, no lease to fit in): three times the limit, no
        deadline."""
        if not self.gpu:
            return 3.0 * TIMEOUTS[key]
        return max(10.0, min(TIMEOUTS[key], self.time_left(self.current)))

    def time_left(self, name: str) -> float:
        """Seconds before the deadline less the reserves of the steps after ``name`` (infinite
        without a GPU)."""
        if not self.gpu:
            return float("inf")
        later = ORDER[ORDER.index(name) + 1 :]
        return self.deadline - now() - sum(RESERVE.get(s, 0) for s in later)

    def record(self, name, status, seconds, note="", log=None, **extra):
        step = dict(
            name=name,
            status=status,
            seconds=round(seconds, 1),
            note=note,
            log=str(log.relative_to(OUT)) if log else None,
            **extra,
        )
        if status == "failed" and log:
            step["log_tail"] = tail(log)
        self.steps.append(step)
        print(
            f"[gpu_check] {name}: {status} in {seconds:.1f} s{' - ' + note if note else ''}",
            flush=True,
        )

    # (a) --------------------------------------------------------------------------------
    def build(self):
        log = LOGS / "build.log"
        have = self.env.get("setuptools")
        if not have:
            self.record("build", "failed", 0, "setuptools is not installed in this environment")
            return
        major = int(str(have).split(".")[0]) if str(have).split(".")[0].isdigit() else None
        if major is not None and major < SETUPTOOLS_MIN:
            # pyproject.toml's PEP 639 license fields; --no-build-isolation does not enforce
            # the build requirements, so an older setuptools fails with a configuration error
            self.record(
                "build", "failed", 0, f"setuptools {have} < {SETUPTOOLS_MIN} (pyproject.toml)"
            )
            return
        archs = os.environ.get("IFM_GPU_ARCHS") or self.env.get("capability") or "9.0"
        env = {
            "TORCH_CUDA_ARCH_LIST": archs,
            "MAX_JOBS": os.environ.get("MAX_JOBS", str(os.cpu_count())),
        }
        if self.env.get("torch_cuda"):
            env["IFM_FORCE_CUDA"] = "1"
        cmd = [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "-e", "."]
        rc, sec, to = run(cmd, log, self.limit("build"), env)
        if rc == 0:
            check = (
                "import sys, torch; from ifm import _ops, _cuda_arch; "
                "assert _ops.LOAD_ERROR is None, _ops.LOAD_ERROR; "
                "cuda = _ops.has_kernel('string_field', 'CUDA'); "
                "print('CUDA kernels:', cuda, _cuda_arch.build_info()); "
                "sys.exit(0 if cuda or torch.version.cuda is None else 1)"
            )
            rc2 = subprocess.run([PY, "-c", check], cwd="/", capture_output=True, text=True)
            with open(log, "a") as f:
                f.write("\n[gpu_check] import check:\n" + rc2.stdout + rc2.stderr)
            rc = rc2.returncode
        note = f"TORCH_CUDA_ARCH_LIST={archs}" + (" (timed out)" if to else "")
        if not self.env.get("ninja"):
            note += "; ninja absent: serial build"
        self.record("build", "passed" if rc == 0 else "failed", sec, note, log)

    # (b), (d) -----------------------------------------------------------------------------
    def pytest_step(self, name, selections):
        timeout = self.limit(name)
        log = LOGS / f"{name}.log"
        xml = LOGS / f"{name}.xml"
        files = [s for _, sel in selections for s in sel if s.endswith(".py")]
        missing = [f for f in files if not (ROOT / f).exists()]
        if missing:
            self.record(name, "skipped", 0, f"not present: {', '.join(missing)}")
            return
        t0, total, rcs, counts = now(), 0.0, [], {}
        for i, (share, sel) in enumerate(selections):
            rest = sum(sh for sh, _ in selections[i:])
            budget = max((timeout - total) * share / rest, 10)
            args = [
                PY,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-rfEs",
                f"--junitxml={xml}.{i}",
                *sel,
            ]
            if not self.gpu:
                args.append("--collect-only")
            rc, sec, to = run(args, LOGS / f"{name}.{i}.log", budget)
            total += sec
            rcs.append(0 if rc == 5 and not self.gpu else rc)  # 5: nothing collected
            for k, v in junit_counts(pathlib.Path(f"{xml}.{i}")).items():
                counts[k] = counts.get(k, 0) + v
        with open(log, "w") as f:
            for i in range(len(selections)):
                f.write((LOGS / f"{name}.{i}.log").read_text(errors="replace"))
        if not self.gpu:
            collected = sum(
                self._collected(LOGS / f"{name}.{i}.log") for i in range(len(selections))
            )
            status = "failed" if any(rcs) else "no GPU: not run"
            self.record(name, status, now() - t0, f"{collected} tests collected", log)
            return
        ok = not any(rcs)
        note = ", ".join(
            f"{counts.get(k, 0)} {k}" for k in ("passed", "failures", "errors", "skipped")
        )
        self.record(name, "passed" if ok else "failed", now() - t0, note, log, counts=counts)

    @staticmethod
    def _collected(log: pathlib.Path) -> int:
        import re

        m = re.findall(r"(\d+) tests? collected", log.read_text(errors="replace"))
        return int(m[-1]) if m else 0

    # (c) ------------------------------------------------------------------------------------
    def sanitizer(self):
        driver = [PY, str(ROOT / "scripts" / "gpu_sanitize.py")]
        t0 = now()
        san = shutil.which("compute-sanitizer") or next(
            (
                p
                for p in (
                    "/usr/local/cuda/bin/compute-sanitizer",
                    "/usr/local/cuda/compute-sanitizer/compute-sanitizer",
                )
                if os.access(p, os.X_OK)
            ),
            None,
        )
        if not self.gpu:
            rc, sec, _ = run(driver + ["--list"], LOGS / "sanitizer.log", 60)
            note = (
                f"call list ok; compute-sanitizer: {san or 'not found'}"
                if rc == 0
                else "the driver's call list failed"
            )
            self.record(
                "sanitizer",
                "failed" if rc else "no GPU: not run",
                sec,
                note,
                LOGS / "sanitizer.log",
            )
            return
        if san is None:
            self.record("sanitizer", "failed", 0, "compute-sanitizer not found")
            return
        # one run without the sanitizer compiles and caches the Triton kernels
        rc, _, _ = run(driver, LOGS / "sanitizer.warmup.log", self.limit("sanitizer_warmup"))
        if rc:
            self.record(
                "sanitizer",
                "failed",
                now() - t0,
                "the driver fails without the sanitizer",
                LOGS / "sanitizer.warmup.log",
            )
            return
        results = {}
        for tool in SANITIZER_TOOLS:
            log = LOGS / f"sanitizer.{tool}.log"
            cmd = [
                san,
                "--tool",
                tool,
                "--error-exitcode",
                "99",
                "--report-api-errors",
                "no",
                "--print-limit",
                "20",
                *driver,
            ]
            env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}  # exact allocations for memcheck
            rc, sec, to = run(cmd, log, self.limit("sanitizer_tool"), env)
            results[tool] = dict(
                rc=rc, seconds=round(sec, 1), timed_out=to, status="passed" if rc == 0 else "failed"
            )
            if rc:
                results[tool]["log_tail"] = tail(log, 40)
        self.figures["sanitizer"] = results
        failed = [t for t, r in results.items() if r["rc"]]
        note = ", ".join(
            f"{t} {'ok' if not r['rc'] else 'FAILED'} ({r['seconds']} s)"
            for t, r in results.items()
        )
        self.record(
            "sanitizer",
            "failed" if failed else "passed",
            now() - t0,
            note,
            LOGS / f"sanitizer.{failed[0] if failed else SANITIZER_TOOLS[0]}.log",
        )

    # (e) ------------------------------------------------------------------------------------
    def bench(self):
        log = LOGS / "bench.log"
        cmd = [
            PY,
            str(ROOT / "scripts" / "gpu_bench.py"),
            "--json",
            str(OUT / "bench.json"),
            "--budget-s",
            str(self.limit("bench") - 25),
        ]
        if not self.gpu:
            cmd.append("--dry-run")
        # the float64 reference of each shape runs on the CPU: all its cores, not the
        # benchmarks' default of 2 threads
        env = {"IFM_BENCH_THREADS": str(os.cpu_count() or 1)}
        rc, sec, to = run(cmd, log, self.limit("bench"), env)
        try:
            self.figures["bench"] = json.loads((OUT / "bench.json").read_text())
        except (OSError, json.JSONDecodeError):
            self.figures["bench"] = None
        if rc:
            status = "failed"
        else:
            status = "passed" if self.gpu else "no GPU: not run"
        note = "timed out" if to else ("static-model estimates only" if not self.gpu else "")
        self.record("bench", status, sec, note, log)

    # (f) ------------------------------------------------------------------------------------
    def report(self, started: str, seconds: float) -> int:
        failed = [s["name"] for s in self.steps if s["status"] == "failed"]
        if failed:
            code, verdict = EXIT_FAIL, f"FAILED: {', '.join(failed)}"
        elif not self.gpu:
            code, verdict = EXIT_NO_GPU, "no GPU: the GPU steps were not run"
        else:
            code, verdict = 0, "all steps passed"
        data = dict(
            started=started,
            seconds=round(seconds, 1),
            verdict=verdict,
            exit_code=code,
            command="bash scripts/gpu.sh",
            environment=self.env,
            steps=self.steps,
            **self.figures,
        )
        (OUT / "report.json").write_text(json.dumps(data, indent=1, default=str))
        sys.path.insert(0, str(ROOT / "scripts"))
        from gpu_report import markdown

        (OUT / "REPORT.md").write_text(markdown(data))
        print(f"[gpu_check] {verdict} (exit {code}); report: {OUT / 'REPORT.md'}", flush=True)
        return code


def main() -> int:
    t0, started = now(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    LOGS.mkdir(parents=True, exist_ok=True)
    env = probe()
    print("[gpu_check] environment: " + json.dumps(env), flush=True)
    check = Check(env)
    wanted = set(
        filter(
            None,
            os.environ.get("IFM_GPU_STEPS", "build,parity,sanitizer,cuda_graph,bench").split(","),
        )
    )
    if not env.get("gpu"):
        print(
            "[gpu_check] no GPU visible to torch: the GPU steps are checked without running",
            flush=True,
        )
    if env.get("ot") is None:
        print("[gpu_check] POT (ot) is not installed: tests that need it skip", flush=True)
    steps = dict(
        build=check.build,
        parity=lambda: check.pytest_step("parity", PARITY_TESTS),
        sanitizer=check.sanitizer,
        cuda_graph=lambda: check.pytest_step("cuda_graph", [(1.0, ["tests/test_cuda_graph.py"])]),
        bench=check.bench,
    )

    def stop(signum, frame):  # the lease ends: still write the report
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        for name in ORDER:
            if name not in wanted:
                continue
            check.current = name
            if name != "build" and check.time_left(name) < MIN_STEP_S:
                check.record(name, "skipped", 0, "no time left in IFM_GPU_BUDGET_S")
                continue
            t_step = now()
            try:
                steps[name]()
            except Exception as exc:  # a bug of this script: report it, run the next step
                check.record(name, "failed", now() - t_step, f"gpu_check error: {exc!r}")
    except KeyboardInterrupt as exc:
        check.record(check.current, "failed", 0, f"interrupted ({exc})")
    finally:
        code = check.report(started, now() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
