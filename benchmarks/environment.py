"""Environment of a benchmark run, read once (every benchmark module imports it first).

* ``IFM_BENCH_THREADS`` (default 2): ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` for every
  implementation (also in the memory subprocesses and for the matmul peak).
* ``IFM_BENCH_QUICK=1``: shrink every shape (D <= 48, b <= 16, B <= 64) and skip the memory
  subprocesses (``IFM_BENCH_MEMORY=1`` forces them).
* ``IFM_BENCH_HEAVY=1``: also run the authors' materialising Coulomb form at the PFGM shape
  (three 6.4 GB ``[b, B, D+1]`` tensors; needs >= 16 GB available, checked before running).
* ``IFM_BENCH_REPORT=path``: write the Markdown summary (tables, ratios, targets) there; it is
  always printed at the end of the session.
"""

from __future__ import annotations

import os
import sys

THREADS = int(os.environ.get("IFM_BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # before torch starts its pools

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

QUICK = os.environ.get("IFM_BENCH_QUICK") == "1"
HEAVY = os.environ.get("IFM_BENCH_HEAVY") == "1"
MEMORY = os.environ.get("IFM_BENCH_MEMORY", "0" if QUICK else "1") == "1"
REPORT = os.environ.get("IFM_BENCH_REPORT")
