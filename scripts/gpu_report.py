"""REPORT.md of scripts/gpu.sh from its report.json (``markdown(data)``), ready to paste into
BENCHMARKS.md. ``python scripts/gpu_report.py gpu-report/report.json`` re-renders it."""

from __future__ import annotations

import json
import sys


def _us(v):
    return "–" if v is None else f"{v:.1f}"


def _best(best: dict) -> str:
    if not best:
        return "–"
    err = best.get("max_row_rel_err")
    return best["name"] + ("" if err is None else f" (err {err:.0e})")


def _bench_rows(bench: dict) -> list:
    lines = [
        "| shape | b | B | D | CUDA µs | Triton µs | best PyTorch form | its µs | "
        "CUDA speed-up | Triton speed-up | model CUDA µs | model Triton µs | "
        "max row rel err (CUDA / Triton) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bench.get("shapes", []):
        be, best = r.get("backends", {}), r.get("best_pytorch") or {}

        def cell(name, key="median_us", fmt=_us, be=be):
            v = be.get(name, {})
            if key in v:
                return fmt(v[key])
            return "skipped" if "skipped" in v else ("error" if "error" in v else "–")

        two = "×2" if r["kind"] == "coulomb" and r.get("plates") == 2 else ""
        lines.append(
            f"| {r['kind']} {r['name']} | {r['b']} | {r['B']}{two} | {r['D']} | "
            f"{cell('cuda')} | {cell('triton')} | {_best(best)} | "
            f"{_us(best.get('median_us'))} | "
            f"{cell('cuda', 'speedup_vs_best_pytorch', lambda x: f'{x:.2f}×')} | "
            f"{cell('triton', 'speedup_vs_best_pytorch', lambda x: f'{x:.2f}×')} | "
            f"{_us(r['model_us'].get('cuda'))} | {_us(r['model_us'].get('triton'))} | "
            f"{cell('cuda', 'max_row_rel_err', lambda x: f'{x:.1e}')} / "
            f"{cell('triton', 'max_row_rel_err', lambda x: f'{x:.1e}')} |"
        )
    return lines


def markdown(data: dict) -> str:
    env = data.get("environment", {})
    lines = [
        "# GPU check (scripts/gpu.sh)",
        "",
        f"**{data['verdict']}** (exit code {data['exit_code']}) · started {data['started']} · "
        f"{data['seconds']:.0f} s in all · commit {env.get('commit') or '?'}",
        "",
        f"Machine: {env.get('gpu_name') or 'no GPU visible to torch'}"
        + (
            f" (sm_{env.get('capability', '').replace('.', '')}, {env.get('sm_count')} SMs)"
            if env.get("gpu")
            else ""
        )
        + f"; Python {env.get('python')}, torch {env.get('torch')} (CUDA "
        f"{env.get('torch_cuda')}), triton {env.get('triton')}, "
        f"{env.get('nvcc_version') or 'no nvcc'}; POT {env.get('ot') or 'absent'}, "
        f"pytest-benchmark {env.get('pytest_benchmark') or 'absent'}.",
        "",
        f"Command: `{data.get('command')}`",
        "",
        "| step | status | s | note |",
        "|---|---|---|---|",
    ]
    for s in data.get("steps", []):
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['note']} |")
    san = data.get("sanitizer")
    if san:
        lines += ["", "## compute-sanitizer", "", "| tool | result | s |", "|---|---|---|"]
        for tool, r in san.items():
            lines.append(f"| {tool} | {r['status']} | {r['seconds']} |")
    bench = data.get("bench")
    if bench:
        measured = bench.get("measured")
        lines += ["", "## Benchmarks (float32, published shapes)", ""]
        lines.append(
            f"CUDA events around each call, median of {bench['reps']} calls after "
            f"{bench['warmup']} warm-up calls, on {bench.get('device')}; speed-up = best "
            "PyTorch form's time / the backend's. The model columns are the static model's "
            f"estimates for {bench['arch']} (benchmarks/gpu_model.py), not measurements."
            if measured
            else "No GPU: nothing measured; the model columns are the static model's estimates "
            f"for {bench['arch']} (benchmarks/gpu_model.py), not measurements."
        )
        lines += [""] + _bench_rows(bench)
        for f in bench.get("failures", []):
            lines.append(f"- FAILED: {f}")
        notes = {n for r in bench.get("shapes", []) for n in r.get("model_note", {}).values()}
        if notes:
            lines += ["", "Model: " + "; ".join(sorted(notes))]
    failed = [s for s in data.get("steps", []) if s.get("log_tail")]
    for s in failed:
        lines += ["", f"## {s['name']}: log tail ({s['log']})", "", "```", s["log_tail"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(markdown(json.load(f)), end="")
