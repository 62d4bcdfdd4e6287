"""SASS utilities of the static GPU model (no GPU needed).

* :func:`tool` -- path of ``nvdisasm`` / ``cuobjdump`` / ``ptxas`` bundled with the triton package
  (``triton/backends/nvidia/bin``), falling back to ``$CUDA_HOME/bin`` and ``PATH``.
* :func:`disassemble` -- SASS text of a cubin (``nvdisasm -c``; ``cuobjdump -sass`` fallback).
* :func:`parse_sass` -- the instruction list: ``Instr(index, address, label, pred, opcode,
  operands, target)``; labels (``.L_x_N``) attach to the instruction that follows them.
* :func:`find_loops` -- every backward branch ``BRA target`` with ``target`` at or before the
  branch is a loop; returns :class:`Loop` (first and last instruction index, nesting depth, its
  instruction count, the opcodes by class). Nested loops are reported separately, outer loops
  include their inner loops' instructions.
* :func:`resource_usage` -- registers, local (spill) bytes, shared bytes per kernel of a cubin
  (``cuobjdump --dump-resource-usage``).
* :func:`loop_summary` -- one dict per loop for reports and for the model.

An instruction count here is a count of warp instructions *issued*: each SASS instruction of a
loop body is issued once per warp per iteration whether its predicate is true or not (predicated
off instructions still take an issue slot), which is what the issue-bound estimate needs.
Instructions skipped by a forward branch inside the body (an ``if`` around part of it) are counted
too; :func:`loop_summary` also gives the count of the straight-line part that a taken forward
branch skips (``skippable``), so a model can charge a skipped block only for what it runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter


def tool(name: str) -> str:
    """Path of a CUDA binary tool (``nvdisasm``, ``cuobjdump``, ``ptxas``)."""
    try:
        import triton

        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", name)):
            return os.path.join(home, "bin", name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (triton's bundled tools, CUDA_HOME, PATH)")
    return found


def _with_file(cubin: bytes, argv_fn):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        return subprocess.run(argv_fn(fh.name), check=True, capture_output=True, text=True).stdout


def disassemble(cubin: bytes) -> str:
    """SASS text of ``cubin``."""
    try:
        return _with_file(cubin, lambda f: [tool("nvdisasm"), "-c", f])
    except (FileNotFoundError, subprocess.CalledProcessError):
        return _with_file(cubin, lambda f: [tool("cuobjdump"), "-sass", f])


def resource_usage(cubin: bytes) -> dict:
    """``{"registers", "local_bytes", "shared_bytes"}`` of the (first) kernel of ``cubin``."""
    text = _with_file(cubin, lambda f: [tool("cuobjdump"), "--dump-resource-usage", f])

    def get(key):
        return int(m.group(1)) if (m := re.search(key + r":(\d+)", text)) else 0

    return {"registers": get("REG"), "local_bytes": get("LOCAL"), "shared_bytes": get("SHARED")}


@dataclasses.dataclass
class Instr:
    index: int
    address: int
    label: str | None
    pred: str
    opcode: str  # full opcode with modifiers, e.g. "FFMA.FTZ"
    operands: str
    target: str | None  # branch target label

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
# labels: ``.L_x_N`` (branch targets) and ``$...`` (subroutines: CALL targets)
_LABEL = re.compile(r"^\s*(\.L_\w+|\.L\w+|\$[\w$]+):")
_TARGET = re.compile(r"`?\(?\s*(\.L_\w+|\.L\w+|\$[\w$]+)\s*\)?`?")


def parse_sass(text: str) -> list[Instr]:
    """Instructions of the first function in ``text`` (nvdisasm or cuobjdump syntax)."""
    out: list[Instr] = []
    pending = None
    for line in text.splitlines():
        lab = _LABEL.match(line)
        if lab:
            pending = lab.group(1)
            continue
        m = _LINE.search(line)
        if not m:
            continue
        opcode, operands = m.group(3), m.group(4).strip()
        target = None
        if opcode.split(".")[0] in ("BRA", "BRX", "JMP", "BSSY", "CALL", "BREAK", "BPT"):
            t = _TARGET.search(operands)
            if t:
                target = t.group(1)
            elif re.match(r"0x[0-9a-f]+", operands):
                target = operands.split()[0]
        out.append(
            Instr(
                len(out),
                int(m.group(1), 16),
                pending,
                (m.group(2) or "").strip(),
                opcode,
                operands,
                target,
            )
        )
        pending = None
    return out


@dataclasses.dataclass
class Loop:
    start: int  # index of the loop's first instruction (the branch target)
    end: int  # index of the backward branch
    depth: int = 0  # 0 = outermost
    inner: int = 0  # number of loops nested inside

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def _addr_index(instrs: list[Instr]) -> dict:
    by_label = {i.label: i.index for i in instrs if i.label}
    by_addr = {f"0x{i.address:x}": i.index for i in instrs}
    return {**by_addr, **by_label}


def find_loops(instrs: list[Instr]) -> list[Loop]:
    """Loops from backward branches (``BRA`` whose target is at or before it), sorted by start;
    two branches to one target (a ``continue``) make one loop ending at the last of them."""
    where = _addr_index(instrs)
    ends = {}
    for ins in instrs:
        if ins.base != "BRA" or ins.target is None:
            continue
        tgt = where.get(ins.target)
        if tgt is not None and tgt <= ins.index:
            ends[tgt] = max(ends.get(tgt, -1), ins.index)
    loops = [Loop(s, e) for s, e in sorted(ends.items())]
    for lp in loops:
        lp.depth = sum(1 for o in loops if o is not lp and o.start <= lp.start and lp.end <= o.end)
        lp.inner = sum(1 for o in loops if o is not lp and lp.start <= o.start and o.end <= lp.end)
    return loops


# opcode classes (warp instructions issued; FP64 and MUFU have lower throughput per SM)
CLASSES = {
    "fp32": {"FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "FSETP", "FSET", "FCHK", "FMNMX3"},
    "fp64": {"DADD", "DMUL", "DFMA", "DSETP", "DMNMX"},
    "mufu": {"MUFU"},
    "int": {
        "IADD3",
        "IMAD",
        "LEA",
        "LOP3",
        "SHF",
        "ISETP",
        "IABS",
        "IMNMX",
        "SEL",
        "SHL",
        "SHR",
        "IADD",
        "IMUL",
        "PRMT",
        "POPC",
        "FLO",
        "LEA.HI",
        "VIADD",
        "VIMNMX",
        "IMAD.WIDE",
    },
    "conv": {"F2F", "I2F", "F2I", "I2FP", "F2IP", "FRND"},
    "mem_global": {"LDG", "STG", "LD", "ST", "RED", "ATOM", "ATOMG"},
    "mem_shared": {"LDS", "STS", "LDSM", "ATOMS"},
    "mem_local": {"LDL", "STL"},
    "shuffle": {"SHFL"},
    "barrier": {"BAR", "MEMBAR", "WARPSYNC", "BSYNC", "BSSY", "DEPBAR"},
    "move": {
        "MOV",
        "UMOV",
        "S2R",
        "S2UR",
        "CS2R",
        "R2UR",
        "P2R",
        "R2P",
        "PLOP3",
        "VOTE",
        "VOTEU",
        "ULDC",
        "LDC",
        "UIADD3",
        "UISETP",
        "USHF",
        "ULOP3",
        "UIMAD",
        "ULEA",
        "USEL",
    },
    "branch": {"BRA", "EXIT", "RET", "CALL", "NOP", "YIELD"},
}


def classify(opcode: str) -> str:
    base = opcode.split(".")[0]
    if opcode.startswith("IMAD.WIDE"):
        return "int"
    for cls, names in CLASSES.items():
        if base in names:
            return cls
    return "other"


def class_counts(instrs: list[Instr]) -> dict:
    return dict(Counter(classify(i.opcode) for i in instrs))


def skippable(instrs: list[Instr], loop: Loop) -> int:
    """Instructions of ``loop`` jumped over by its forward branches (the largest span of one
    forward ``BRA`` whose target stays inside the loop): the part a skipped block does not run."""
    where = _addr_index(instrs)
    best = 0
    for ins in instrs[loop.start : loop.end + 1]:
        if ins.base != "BRA" or ins.target is None:
            continue
        tgt = where.get(ins.target)
        if tgt is not None and ins.index < tgt <= loop.end:
            best = max(best, tgt - ins.index - 1)
    return best


_REG = re.compile(r"^R(\d+)$")
_IMM = re.compile(r"^(0x[0-9a-f]+|\d+)$")


def _dest(ins: Instr) -> str:
    return ins.operands.split(",")[0].strip() if ins.operands else ""


def _writes_reg(ins: Instr, reg: int) -> bool:
    """Whether ``ins`` may write register ``reg``: its first operand is ``reg`` or, for a 64- or
    128-bit destination (``.64``, ``.128``, ``IMAD.WIDE``, FP64), the register pair or quad
    starting just below it."""
    m = _REG.match(_dest(ins))
    if not m:
        return False
    op = ins.opcode
    wide = ".64" in op or "WIDE" in op or "F64" in op or classify(op) == "fp64"
    width = 4 if ".128" in op else (2 if wide else 1)
    return 0 <= reg - int(m.group(1)) < width


def _runs(cmp: str, bound: int, taken_when_true: bool) -> int | None:
    """Threads (the lowest ``threadIdx.x``) that do not take a branch on ``tid <cmp> bound``:
    the branch is taken when the comparison is true (``taken_when_true``) or false."""
    skip_if_true = {"NE": 1 if bound == 0 else None, "GT": bound + 1, "GE": bound}
    run_if_true = {"LT": bound, "LE": bound + 1, "EQ": 1 if bound == 0 else None}
    return (skip_if_true if taken_when_true else run_if_true).get(cmp)


def thread_guarded(instrs: list[Instr]) -> dict[int, int]:
    """``{instruction index: threads}`` for the straight-line code that only the first
    ``threads`` threads of a block run: the span of a forward ``@P BRA`` whose predicate is a
    comparison of ``threadIdx.x`` (``S2R R, SR_TID.X``, unmodified) with zero or an immediate,
    e.g. ``if (threadIdx.x == 0) {...}`` or ``if (tid < 64) {...}``, and the subroutines called
    only from such spans. Warps whose threads all skip such a span do not issue it. A comparison
    combined with another predicate counts where the span's threads can only be fewer (e.g.
    ``if (tid == 0 && p)``). Comparisons of a register derived from the thread index are not
    recognised (their code is charged to every warp)."""
    where = _addr_index(instrs)
    tid_regs: set[int] = set()  # registers holding threadIdx.x
    preds: dict[str, tuple[str, int, str]] = {}  # predicate -> (comparison, bound, combine)
    out: dict[int, int] = {}
    for ins in instrs:
        ops = [o.strip() for o in ins.operands.split(",")]
        # a predicate written here loses its meaning (ISETP/FSETP/... write their first two)
        for o in ops[:2]:
            preds.pop(o, None)
        if ins.base == "ISETP" and len(ops) == 5 and ops[1] == "PT":
            m = _REG.match(ops[2])
            parts = ins.opcode.split(".")
            if m and int(m.group(1)) in tid_regs and parts[-1] in ("AND", "OR"):
                bound = 0 if ops[3] == "RZ" else (int(ops[3], 0) if _IMM.match(ops[3]) else None)
                if bound is not None:
                    # combined with another predicate: "AND" (or "OR" with PT) runs these threads
                    # or fewer when the branch skips on false, "OR" when it skips on true
                    combine = "any" if ops[4] == "PT" else parts[-1]
                    preds[ops[0]] = (parts[1], bound, combine)
        tid_regs -= {r for r in tid_regs if _writes_reg(ins, r)}
        if ins.base == "S2R" and len(ops) == 2 and ops[1] == "SR_TID.X":
            m = _REG.match(ops[0])
            if m:
                tid_regs.add(int(m.group(1)))
        if ins.base == "BRA" and ins.pred and ins.target is not None and "," not in ins.operands:
            neg = ins.pred.startswith("@!")
            pred = ins.pred.lstrip("@!")
            tgt = where.get(ins.target)
            if pred in preds and tgt is not None and tgt > ins.index:
                cmp, bound, combine = preds[pred]
                # a skip on (cmp OR q) or a run on (cmp AND q) runs a subset of cmp's threads
                safe = combine == "any" or combine == ("AND" if neg else "OR")
                n = _runs(cmp, bound, taken_when_true=not neg) if safe else None
                if n is not None:
                    for k in range(ins.index + 1, tgt):
                        out[k] = min(out.get(k, n), n)
    # A subroutine (a CALL's target up to its RET, placed after the kernel's EXIT) called only
    # from guarded code runs in the threads of its widest call site.
    sites: dict[int, list[int]] = {}
    for ins in instrs:
        if ins.base == "CALL" and ins.target is not None and where.get(ins.target) is not None:
            sites.setdefault(where[ins.target], []).append(ins.index)
    for start, calls in sites.items():
        if all(c in out for c in calls):
            n = max(out[c] for c in calls)
            for ins in instrs[start:]:
                out[ins.index] = max(out.get(ins.index, 0), n)
                if ins.base == "RET":
                    break
    return out


def loop_summary(sass: str) -> list[dict]:
    """Per loop: ``start``, ``end``, ``depth``, ``inner``, ``instructions`` (all in the body,
    inner loops included), ``own`` (without the inner loops' bodies), ``skippable``, ``classes``
    (counts per opcode class of the own instructions)."""
    instrs = parse_sass(sass)
    loops = find_loops(instrs)
    out = []
    for lp in loops:
        inner = [o for o in loops if o is not lp and lp.start <= o.start and o.end <= lp.end]
        covered = set()
        for o in inner:
            covered.update(range(o.start, o.end + 1))
        own = [i for i in instrs[lp.start : lp.end + 1] if i.index not in covered]
        out.append(
            {
                "start": lp.start,
                "end": lp.end,
                "depth": lp.depth,
                "inner": lp.inner,
                "instructions": lp.size,
                "own": len(own),
                "skippable": skippable(instrs, lp),
                "classes": class_counts(own),
            }
        )
    return out


def kernel_summary(cubin: bytes) -> dict:
    """``{"total", "loops", "classes", ...resource_usage}`` of a cubin's kernel."""
    sass = disassemble(cubin)
    instrs = parse_sass(sass)
    res = resource_usage(cubin)
    res.update({"total": len(instrs), "loops": loop_summary(sass), "classes": class_counts(instrs)})
    return res


if __name__ == "__main__":
    import sys

    for path in sys.argv[1:]:
        with open(path, "rb") as fh:
            s = kernel_summary(fh.read())
        print(path, {k: v for k, v in s.items() if k != "loops"})
        for lp in s["loops"]:
            print("  loop", lp)
