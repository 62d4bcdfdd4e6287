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
_LABEL = re.compile(r"^\s*(\.L_\w+|\.L\w+):")
_TARGET = re.compile(r"`?\(?\s*(\.L_\w+|\.L\w+)\s*\)?`?")


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
