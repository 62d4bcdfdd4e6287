"""pytest hooks of the CPU benchmark suite: the session's runner as the ``bench`` fixture and
the Markdown summary at the end. The suite's parts: environment.py (environment variables), cases.py
(published shapes and inputs), baselines.py (implementations), runner.py (timing, accuracy,
memory), machine.py (CPU and matmul peak), report.py (summary).

Run (BENCHMARKS.md quotes the exact command of the published table)::

    pytest benchmarks/ --benchmark-only                  # full suite, ~15-25 min on 2 cores
    IFM_BENCH_QUICK=1 pytest benchmarks/ --benchmark-disable   # smoke test, tiny shapes
"""

from __future__ import annotations

import environment  # noqa: F401  (thread count before torch starts its pools)
import pytest
from environment import REPORT
from report import summary_markdown, write_report
from runner import RUNNER


@pytest.fixture(scope="session")
def bench():
    """The session's :class:`runner.Runner` (inputs, float64 references, peak, results)."""
    return RUNNER


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RUNNER.results:
        return
    if REPORT:
        text = write_report(REPORT, RUNNER.results, RUNNER.peaks)
    else:
        text = summary_markdown(RUNNER.results, RUNNER.peaks)
    terminalreporter.write_sep("=", "ifm CPU benchmark summary (Markdown)")
    terminalreporter.write_line(text)
