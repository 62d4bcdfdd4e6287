"""The Markdown summary of a benchmark session (tables, speed-up ratios, targets) and its JSON
record."""

from __future__ import annotations

import json
import math
import os
import time

from cases import CASES
from environment import QUICK, THREADS
from machine import cpu_info


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
    lines = [
        f"Machine: {info.get('cpu', '?')}, {info.get('logical_cpus', '?')} logical CPUs at "
        f"{info.get('mhz', 0):.0f} MHz ({info.get('flags', '')}); torch {info['torch']}, "
        f"{THREADS} threads; {time.strftime('%Y-%m-%d %H:%M %Z')}."
    ]
    if peaks:
        lines.append(
            f"float32 matmul peak (2048³, {THREADS} threads, measured after each fused "
            f"case): {min(peaks):.0f}–{max(peaks):.0f} GFLOP/s; "
            f"theoretical {info.get('theoretical_gflops', 0):.0f} GFLOP/s "
            f"({THREADS} cores × {info.get('mhz', 0) / 1e3:.2f} GHz × 2 FMA units × 16 "
            "lanes × 2 flop)."
        )
    if QUICK:
        lines.append("IFM_BENCH_QUICK=1: shapes shrunk to a smoke test; targets not evaluated.")
    lines.append("")
    verdicts = []
    order = list(dict.fromkeys((r["kind"], r["case"]) for r in results))
    for kind, name in order:
        case = CASES[f"{kind}-{name}"]
        rows = [r for r in results if (r["kind"], r["case"]) == (kind, name)]
        fused = next((r for r in rows if r["impl"] == "ifm-cpu"), None)
        lines += [
            f"**{kind} {name}** ({rows[0]['shape']}, inputs {rows[0]['input_mb']:.2f} MB)",
            "",
            "| implementation | median (min) | ifm-cpu speed-up: median (min) | "
            "peak extra memory | "
            "max row rel. err (sampler) | (near plates) | % of matmul peak: median (min) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            speed = "–"
            if fused:
                speed = (
                    f"{r['median_s'] / fused['median_s']:.1f}× ({r['min_s'] / fused['min_s']:.1f}×)"
                )
            mem = f"{r['peak_extra_mb']:.1f} MB" if "peak_extra_mb" in r else "–"
            pct = (
                f"{r['pct_of_matmul_peak']:.0f} % ({r['pct_of_matmul_peak_best']:.0f} %) of "
                f"{r['matmul_peak_gflops']:.0f}"
                if "pct_of_matmul_peak" in r
                else ""
            )
            lines.append(
                f"| {r['impl']} | {_fmt_time(r['median_s'])} ({_fmt_time(r['min_s'])}) | "
                f"{speed} | {mem} | "
                f"{_fmt_err(r['max_row_rel_err'])} | "
                f"{_fmt_err(r.get('max_row_rel_err_near_plates'))} | {pct} |"
            )
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
            verdicts.append(
                f"- {kind} {name}: ≥ {need:g}× vs {impl}: {got:.1f}× median, "
                f"{best:.1f}× min — {_verdict(got >= need, best >= need)}"
            )
        if case.high_d:
            pct, best = fused["pct_of_matmul_peak"], fused["pct_of_matmul_peak_best"]
            verdicts.append(
                f"- {kind} {name}: ≥ 50 % of float32 peak: {pct:.0f} % median, "
                f"{best:.0f} % min — {_verdict(pct >= 50, best >= 50)}"
            )
        if "peak_extra_mb" in fused:
            ok = fused["peak_extra_mb"] <= fused["input_mb"]
            verdicts.append(
                f"- {kind} {name}: peak extra memory ≤ inputs: "
                f"{fused['peak_extra_mb']:.1f} MB vs {fused['input_mb']:.2f} MB — "
                f"{'met' if ok else 'NOT met'}"
            )
    if verdicts:
        lines += ["Targets:", ""] + verdicts
    return "\n".join(lines)


def write_report(path: str, results, peaks) -> str:
    """Writes the summary to ``path`` and the raw results beside it (``.json``); returns the
    summary."""
    text = summary_markdown(results, peaks)
    with open(path, "w") as fh:
        fh.write(text + "\n")
    with open(os.path.splitext(path)[0] + ".json", "w") as fh:
        json.dump(
            {"results": results, "peaks": peaks, "machine": cpu_info()}, fh, indent=1, default=str
        )
    return text
