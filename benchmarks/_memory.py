"""Peak extra memory of one call, measured in a fresh process.

``measure(kind, case, impl)`` runs ``python _memory.py KIND CASE IMPL`` (same environment, same
thread count) and returns ``{"peak_extra_mb": ..., "rss_inputs_mb": ...}``. The child:

1. builds the case's float32 inputs (``cases.make_inputs``, same seed as the timed run);
2. warms the implementation's code path up on a slice of them (4 queries, 16 pairs, same D:
   imports, thread pool, KeOps module load, allocator pools);
3. records its resident set size (``VmRSS``) and resets the kernel's high-water mark
   (``echo 5 > /proc/self/clear_refs``);
4. runs one full call and reads the high-water mark ``VmHWM``.

peak extra = VmHWM - RSS before the call: the memory the call itself needed (temporaries and its
output), not the inputs. Where ``clear_refs`` cannot be written the high-water mark includes
everything before (then ``hwm_reset`` is False and the figure is an upper bound).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra(call) -> dict:
    """Run ``call()`` once and return the memory it needed beyond the process's RSS before it.

    Reusable by any measurement that runs in a fresh process: build the inputs and warm the
    code path up first, then ``peak_extra(lambda: fn(*inputs))``.
    """
    import gc

    gc.collect()
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    out = call()
    peak = _status_kb("VmHWM")
    del out
    return {
        "peak_extra_mb": (peak - before) / 1024.0,
        "rss_inputs_mb": before / 1024.0,
        "hwm_reset": reset,
    }


def _child(kind: str, name: str, impl: str) -> dict:
    sys.path.insert(0, HERE)
    from baselines import run_impl
    from cases import CASES, make_inputs

    case = CASES[f"{kind}-{name}"]
    inputs = make_inputs(case)
    small = {k: v[:16] for k, v in inputs.items()}
    run_impl(case, impl, inputs["points"][:4], small)  # warm-up, same D
    del small
    return peak_extra(lambda: run_impl(case, impl, inputs["points"], inputs))


def measure(kind: str, name: str, impl: str, timeout: float = 1800.0) -> dict:
    """Run :func:`_child` in a fresh interpreter and return its measurement (or an error)."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), kind, name, impl],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"memory_error": (proc.stderr or proc.stdout).strip()[-300:]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(_child(*sys.argv[1:4])))
