"""One small call of each kernel of the CUDA and Triton backends, for compute-sanitizer.

``compute-sanitizer --tool memcheck python scripts/gpu_sanitize.py`` (scripts/gpu.sh runs
memcheck, racecheck, synccheck and initcheck). The calls cover every kernel of both backends:
the string field raw and normalised (stable), with D large enough to split the distance pass
into slices, the two-plate Coulomb field (per-plate normalisation, final normalisation) and
PFGM's one plate, in float32 and float64, at odd sizes that leave partial tiles. Each result is
checked finite and close to the float64 reference.

``--list`` prints the calls without running them (no GPU needed); ``--backend cuda|triton``
restricts them.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

B_QUERIES, B_PAIRS = 5, 37  # odd: partial tiles in every kernel
STRING_CALLS = [
    ("string raw", 67, dict(normalize=False, stable=False)),
    ("string normalised stable, split D", 300, dict(normalize=True, stable=True)),
]
COULOMB_CALLS = [
    ("coulomb two plates", 67, dict(plate_gamma=5.0, normalize=True)),
    ("coulomb PFGM", 67, dict(normalize="pfgm")),
]


def calls(backends):
    out = []
    for backend in backends:
        for dtype in (torch.float32, torch.float64):
            for label, D, kw in STRING_CALLS + COULOMB_CALLS:
                out.append((backend, dtype, label, D, kw))
    return out


def inputs(label, D, dtype, device, L=20.0):
    g = torch.Generator().manual_seed(0)
    a, c = torch.randn(B_PAIRS, D, generator=g), torch.randn(B_PAIRS, D, generator=g)
    # queries on the first pairs' segments (the paper's sampler): non-negligible fields
    z = 0.5 + (L - 1.0) * torch.rand(B_QUERIES, 1, generator=g)
    x = (1 - z / L) * a[:B_QUERIES] + (z / L) * c[:B_QUERIES]
    plate0 = torch.cat([torch.zeros(B_PAIRS, 1), a], 1)
    plateL = torch.cat([torch.full((B_PAIRS, 1), L), c], 1)
    pts = torch.cat([z, x], 1)
    t = [pts, plate0] + ([] if "PFGM" in label else [plateL])
    return [v.to(device=device, dtype=dtype) for v in t]


def run_one(backend, dtype, label, D, kw, device="cuda"):
    import ifm

    args = inputs(label, D, dtype, device)
    if label.startswith("string"):
        params = dict(L=20.0, sigma0=1.0, K=math.pi / 20)
        out = ifm.fields.string_field(*args, **params, **kw, backend=backend)
        ref = ifm.fields.string_field(
            *(a.double().cpu() for a in args), **params, **kw, backend="reference"
        )
    else:
        out = ifm.fields.coulomb_field(*args, **kw, backend=backend)
        ref = ifm.fields.coulomb_field(*(a.double().cpu() for a in args), **kw, backend="reference")
    out = out.double().cpu()
    err = float(((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-300)).max())
    tol = 1e-2 if dtype == torch.float32 else 1e-8
    if not (math.isfinite(err) and err <= tol):
        raise AssertionError(f"{backend} {label} {dtype}: max row rel err {err:.3g} > {tol}")
    return err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the calls, run nothing")
    ap.add_argument("--backend", choices=["cuda", "triton", "cpu", "both"], default="both")
    ap.add_argument(
        "--device",
        default="cuda",
        help="cpu: check the driver itself without a GPU "
        "(backend cpu, or triton under TRITON_INTERPRET=1)",
    )
    a = ap.parse_args(argv)
    backends = ["cuda", "triton"] if a.backend == "both" else [a.backend]
    todo = calls(backends)
    if a.list:
        import ifm  # noqa: F401  (the package and its extension import)
        import ifm_kernels  # noqa: F401  (triton imports)

        for backend, dtype, label, D, kw in todo:
            print(f"{backend:6s} {str(dtype):14s} {label} (b={B_QUERIES}, B={B_PAIRS}, D={D}) {kw}")
        print(f"{len(todo)} calls")
        return 0
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_sanitize: no GPU visible to torch", file=sys.stderr)
        return 2
    for backend, dtype, label, D, kw in todo:
        err = run_one(backend, dtype, label, D, kw, a.device)
        print(
            f"gpu_sanitize: {backend} {label} {dtype}: ok (max row rel err {err:.2g})", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
