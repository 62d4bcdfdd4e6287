"""The 2-D demo: Gaussian -> Swiss roll with IFM and EFM at L = 6 and L = 40 (``ifm demo``).

For each method (IFM: string field, :class:`ifm.matchers.IFMMatcher`; EFM: two-plate Coulomb
field, :class:`ifm.matchers.EFMMatcher`) and each plate distance L, a small MLP is trained on the
fused targets (``backend="auto"``: the compiled CPU kernel when built), then the source samples are
carried along the learned field from z = 0 to z = L with :func:`ifm.sampling.euler`. Outputs in
``--out``:

* ``samples.png`` -- source, target and generated samples for every run;
* ``field_lines.png`` -- field lines between the plates (x_1 against z) for every run;
* ``summary.md`` / ``summary.json`` -- Wasserstein-2 distance (POT, exact EMD on the samples)
  between generated and target samples, and between source and target for scale; training time;
  network calls per sample.

Setup (the published toy parameters): P = N(0, I_2) on the plate z = 0, Q = a Swiss roll on
z = L; sigma0 = 1, K = 10 (end regions d = pi/20), B = 1024 pairs, b = 512 queries per step,
independent plan, the paper's noised interpolation as query points (``points="noised"``: variance
``(6/L) (L/2 - |L/2 - z|)`` per coordinate, see :func:`noise_scale`; with the noise-free
``uniform`` sampler the network only sees the segments and the L = 6 run ends ~2x farther from
the target); EFM: plate gamma 1e-7 (the EFM
toys), ``efm`` query points (interpolation + N(0, I) noise). The Swiss roll is ``(t cos t, t sin t) / SWISS_SCALE + noise``, t ~ U(1.5 pi, 4.5 pi).
The network sees ``(z/L, exp(-z/d), exp(-(L-z)/d), x / data_scale)`` -- the two exponential
features resolve the narrow end regions -- and the sampler uses a grid with ``end_steps`` extra
steps inside each end region (:func:`ifm.sampling.plate_refined_grid`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from . import matchers, sampling

SWISS_SCALE = 1.5
SWISS_NOISE = 0.5
SIGMA0 = 1.0
K = 10.0


@dataclass
class DemoConfig:
    """Sizes of one demo run (full and ``--quick`` presets below)."""

    ifm_steps: int = 2000
    efm_steps: int = 1000
    B: int = 1024
    b: int = 512
    hidden: int = 256
    lr: float = 1e-3
    euler_steps: int = 100
    end_steps: int = 10
    n_eval: int = 3000
    n_lines: int = 60
    Ls: tuple = (6.0, 40.0)


FULL = DemoConfig()
QUICK = DemoConfig(ifm_steps=30, efm_steps=15, B=128, b=64, hidden=32, euler_steps=16,
                   end_steps=2, n_eval=200, n_lines=12)


# --------------------------------------------------------------------------------------------
# data and network
# --------------------------------------------------------------------------------------------
def swiss_roll(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[n, 2]`` Swiss roll (sklearn's formula, 2-D): ``(t cos t, t sin t) / SWISS_SCALE`` plus
    ``N(0, (SWISS_NOISE / SWISS_SCALE)^2)`` noise, ``t ~ U(1.5 pi, 4.5 pi)``."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    return (x + SWISS_NOISE * torch.randn(n, 2, generator=generator)) / SWISS_SCALE


def gaussian(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[n, 2]`` standard Gaussian (the source P)."""
    return torch.randn(n, 2, generator=generator)


class FieldNet(torch.nn.Module):
    """MLP ``(x, z) -> (f_x, f_z)`` (the :mod:`ifm.sampling` signature)."""

    def __init__(self, L: float, d: float, hidden: int = 256, D: int = 2,
                 data_scale: float = 4.0):
        super().__init__()
        self.L, self.d, self.data_scale = float(L), float(d), float(data_scale)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(D + 3, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, D + 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor):
        z = z.reshape(-1, 1)
        feats = torch.cat([z / self.L, torch.exp(-z / self.d), torch.exp(-(self.L - z) / self.d),
                           x / self.data_scale], dim=1)
        out = self.mlp(feats)
        return out[:, 1:], out[:, 0]


def w2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wasserstein-2 distance between two equal-size empirical samples (POT exact EMD)."""
    import ot

    M = ot.dist(a.double().numpy(), b.double().numpy())  # squared Euclidean
    w = np.full(a.shape[0], 1.0 / a.shape[0])
    return float(math.sqrt(max(ot.emd2(w, w, M, numItermax=10_000_000), 0.0)))


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------
def noise_scale(L: float) -> float:
    """``sqrt(6 / L)``: the noised sampler's peak standard deviation is sqrt(3) at every L (the
    paper's profile ``L/2 - |L/2 - z|`` itself at L = 6; at L = 40 its own peak, sqrt(20), is as
    large as the data and the L = 40 run ends ~30% farther from the target)."""
    return math.sqrt(6.0 / L)


def _matcher(method: str, L: float, cfg: DemoConfig, generator, backend: str):
    if method == "IFM":
        return matchers.IFMMatcher(L, SIGMA0, K, b=cfg.b, points="noised",
                                   points_kwargs={"noise_scale": noise_scale(L)},
                                   generator=generator, backend=backend)
    return matchers.EFMMatcher(L, plate_gamma=1e-7, b=cfg.b, generator=generator,
                               backend=backend)


def train(method: str, L: float, cfg: DemoConfig, seed: int, backend: str = "auto",
          progress: bool = True):
    """Train one FieldNet; returns ``(net, seconds, final_loss)``."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d = math.pi / (2 * K)
    net = FieldNet(L, d, cfg.hidden)
    matcher = _matcher(method, L, cfg, g, backend)
    steps = cfg.ifm_steps if method == "IFM" else cfg.efm_steps
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    bar = tqdm(range(steps), desc=f"{method} L={L:g}", disable=not progress, leave=False)
    for _ in bar:
        z, x, target = matcher.sample_location_and_target(gaussian(cfg.B, g), swiss_roll(cfg.B, g))
        f_x, f_z = net(x, z)
        loss = matcher.loss((f_z, f_x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return net, time.perf_counter() - t0, loss.item()


def evaluate(net, L: float, cfg: DemoConfig, source: torch.Tensor, target: torch.Tensor):
    """Generated samples, field lines and metrics of one trained net."""
    grid = sampling.plate_refined_grid(L, cfg.euler_steps, math.pi / (2 * K), cfg.end_steps)
    net.eval()
    res = sampling.euler(net, source, L=L, grid=grid)
    lines = sampling.euler(net, source[:cfg.n_lines], L=L, grid=grid, return_trajectory=True)
    gen = res.samples
    ok = torch.isfinite(gen).all(dim=1)
    return gen, lines.trajectory, {
        "w2_generated_target": w2(gen[ok], target[ok]) if bool(ok.any()) else float("nan"),
        "nonfinite_samples": int((~ok).sum()),
        "network_calls_per_sample": int(res.calls_per_sample.max()),
        "guarded_steps": res.guarded,
    }


# --------------------------------------------------------------------------------------------
# figures and tables
# --------------------------------------------------------------------------------------------
def _plots(out: str, source, target, runs: List[Dict], gens, lines, Ls):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["IFM", "EFM"]
    lim = float(target.abs().max()) * 1.15
    fig, axes = plt.subplots(len(Ls), 3, figsize=(11, 3.7 * len(Ls)), squeeze=False)
    for i, L in enumerate(Ls):
        ax = axes[i][0]
        ax.scatter(source[:, 0], source[:, 1], s=2, alpha=0.4, label="source P (z=0)")
        ax.scatter(target[:, 0], target[:, 1], s=2, alpha=0.4, label="target Q (z=L)")
        ax.set_title(f"source and target (L={L:g})")
        ax.legend(loc="lower right", fontsize=7, markerscale=4)
        for j, m in enumerate(methods):
            ax = axes[i][j + 1]
            run = next(r for r in runs if r["method"] == m and r["L"] == L)
            g = gens[(m, L)]
            ax.scatter(target[:, 0], target[:, 1], s=2, alpha=0.25, c="lightgray")
            ax.scatter(g[:, 0], g[:, 1], s=2, alpha=0.5, c="C3")
            ax.set_title(f"{m}, L={L:g}: W2 = {run['w2_generated_target']:.2f} "
                         f"(source {run['w2_source_target']:.2f})", fontsize=9)
        for ax in axes[i]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "samples.png"), dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(len(Ls), 2, figsize=(11, 3.4 * len(Ls)), squeeze=False)
    for i, L in enumerate(Ls):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            traj = lines[(m, L)]  # [steps+1, n, 3] z-first
            ax.plot(traj[:, :, 0].numpy(), traj[:, :, 1].numpy(), lw=0.6, alpha=0.7)
            ax.scatter(np.zeros(source.shape[0]), source[:, 0], s=1, c="C0", alpha=0.3)
            ax.scatter(np.full(target.shape[0], L), target[:, 0], s=1, c="C1", alpha=0.3)
            ax.set_xlim(-0.03 * L, 1.03 * L)
            ax.set_ylim(-lim, lim)
            ax.set_xlabel("z")
            ax.set_ylabel("x_1")
            ax.set_title(f"{m} field lines, L={L:g} (plates at z=0 and z=L)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "field_lines.png"), dpi=90)
    plt.close(fig)


def _markdown(summary: Dict) -> str:
    rows = ["| method | L | W2(generated, target) | W2(source, target) | ratio | train steps | "
            "train time (s) | network calls / sample | guarded steps |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        rows.append(f"| {r['method']} | {r['L']:g} | {r['w2_generated_target']:.3f} | "
                    f"{r['w2_source_target']:.3f} | {r['ratio']:.3f} | {r['train_steps']} | "
                    f"{r['train_time_s']:.1f} | {r['network_calls_per_sample']} | "
                    f"{r['guarded_steps']} |")
    s = summary
    return ("\n".join(rows) + "\n\n"
            f"Command: `{s['command']}` · field backend: {s['backend']} · seed {s['seed']} · "
            f"{s['n_eval']} evaluation samples · total {s['total_time_s']:.0f} s on "
            f"{s['threads']} thread(s).\n")


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def run_demo(out: str = "ifm-demo-out", seed: int = 0, quick: bool = False,
             backend: str = "auto", progress: bool = True, command: str = "ifm demo") -> Dict:
    """Run the demo into ``out``; returns the summary dictionary (also written as JSON)."""
    from . import fields

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    cfg = QUICK if quick else FULL
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    ge = torch.Generator().manual_seed(seed + 12345)
    source, target = gaussian(cfg.n_eval, ge), swiss_roll(cfg.n_eval, ge)
    w2_src = w2(source, target)
    used = backend if backend != "auto" else (
        "cpu" if "cpu" in fields.available_backends("cpu") else "reference")
    runs, gens, lines = [], {}, {}
    for method in ("IFM", "EFM"):
        for L in cfg.Ls:
            net, seconds, loss = train(method, L, cfg, seed, backend, progress)
            gen, traj, metrics = evaluate(net, L, cfg, source, target)
            gens[(method, L)], lines[(method, L)] = gen, traj
            run = {"method": method, "L": L, **metrics, "w2_source_target": w2_src,
                   "ratio": metrics["w2_generated_target"] / w2_src,
                   "train_steps": cfg.ifm_steps if method == "IFM" else cfg.efm_steps,
                   "train_time_s": seconds, "final_loss": loss}
            runs.append(run)
            if progress:
                print(f"{method} L={L:g}: W2 {run['w2_generated_target']:.3f} (source "
                      f"{w2_src:.3f}), {seconds:.1f} s", flush=True)
    _plots(out, source, target, runs, gens, lines, cfg.Ls)
    summary = {"command": command, "seed": seed, "quick": quick, "backend": used,
               "threads": torch.get_num_threads(), "config": asdict(cfg),
               "n_eval": cfg.n_eval, "runs": runs,
               "total_time_s": time.perf_counter() - t_start}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(_markdown(summary))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ifm-demo-out", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (seconds)")
    parser.add_argument("--backend", default="auto",
                        choices=["auto", "cpu", "cuda", "triton", "reference"],
                        help="field backend (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main_from_args(args: argparse.Namespace, command: str = "ifm demo") -> int:
    summary = run_demo(out=args.out, seed=args.seed, quick=args.quick, backend=args.backend,
                       progress=not args.no_progress, command=command)
    print(_markdown(summary))
    print(f"wrote {os.path.join(args.out, 'samples.png')}, field_lines.png, summary.md, "
          "summary.json")
    return 0
