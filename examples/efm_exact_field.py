"""EFM's own field, no network: fresh Gaussian samples carried along the exact two-plate Coulomb
field of fixed charges (per-plate normalised, plate gamma 1e-7, as the EFM repository's toys)
with the EFM repository's solver (``ifm.sampling.dipole_efm``), Gaussian -> Swiss roll, at
several plate distances. It separates what EFM's field transports from what a network learns.

    python examples/efm_exact_field.py                       # the demo's roll, L = 6 and 40
    python examples/efm_exact_field.py --shrink 3            # about the EFM repository's roll size
    python examples/efm_exact_field.py --behind-steps 0      # no continuation behind the plate

Defaults are those of the EFM repository's Swiss-roll notebook (``notebooks/EFMToy.ipynb``):
start at z = 0.3 (their ``epsilon``), Euler steps of 0.5 in z (``floor(L / 0.5)`` of them, so
the samples end 0.3 behind the plate), then 650 steps of 0.025 behind the second plate divided
by the norm of the whole moving batch (their ``behind_norm``: the step each sample takes
shrinks with the number of samples). ``--shrink 3`` divides the demo's roll by 3, close to
their ``make_swiss_roll(noise=0.8)[:, [0, 2]] / 5``. Prints W2 (POT) of the generated samples,
of the source and of a second target draw (the sampling floor) to the target.
"""

from __future__ import annotations

import argparse
import time

import torch

from ifm import demo, fields, sampling


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--L", type=float, nargs="+", default=[6.0, 40.0], help="plate distances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shrink", type=float, default=1.0, help="divide the demo's roll by this")
    p.add_argument("--charges", type=int, default=1024, help="charges per plate (default 1024)")
    p.add_argument("--samples", type=int, default=1000, help="samples carried (default 1000)")
    p.add_argument("--start", type=float, default=0.3, help="start z (default 0.3)")
    p.add_argument("--step", type=float, default=0.5, help="Euler step in z (default 0.5)")
    p.add_argument("--behind-step", type=float, default=0.025)
    p.add_argument("--behind-steps", type=int, default=650)
    p.add_argument("--behind-norm", choices=("batch", "row"), default="batch")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p.parse_args()


def main():
    a = parse_args()
    if a.shrink <= 0:
        raise SystemExit(f"--shrink must be > 0, got {a.shrink}")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    for L in a.L:
        g = torch.Generator().manual_seed(a.seed)
        n, B = a.samples, a.charges
        pos = torch.cat([torch.zeros(B, 1), demo.gaussian(B, g)], dim=1).double()
        neg = torch.cat([torch.full((B, 1), L), demo.swiss_roll(B, g) / a.shrink], dim=1).double()
        source = demo.gaussian(n, g).double()
        target = demo.swiss_roll(n, g) / a.shrink
        floor = demo.swiss_roll(n, g) / a.shrink

        def net(x, z, pos=pos, neg=neg):
            f = fields.coulomb_field(torch.cat([z[:, None], x], dim=1), pos, neg, plate_gamma=1e-7)
            return f[:, 1:], f[:, 0]

        t0 = time.perf_counter()
        res = sampling.dipole_efm(
            net,
            source,
            L=L,
            step=a.step,
            z_start=torch.full((n,), a.start, dtype=torch.float64),
            behind_step=a.behind_step,
            behind_num_steps=a.behind_steps,
            behind_norm=a.behind_norm,
        )
        gen = res.samples.float()
        ok = torch.isfinite(gen).all(dim=1)
        w_gen = demo.w2(gen[ok], target[ok]) if bool(ok.any()) else float("nan")
        w_src = demo.w2(source.float(), target)
        print(
            f"L={L:g} seed {a.seed} shrink {a.shrink:g}: W2 generated {w_gen:.3f}, source "
            f"{w_src:.3f} (ratio {w_gen / w_src:.2f}), floor {demo.w2(floor, target):.3f}; "
            f"final z median {res.z.median():.2f}; {int((~ok).sum())} non-finite; "
            f"{res.nfe} field evaluations, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
