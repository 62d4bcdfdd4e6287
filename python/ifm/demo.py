"""The 2-D demo: Gaussian -> Swiss roll with IFM and EFM at L = 6 and L = 40 (``ifm demo``).

For each method (IFM: string field, :class:`ifm.matchers.IFMMatcher`; EFM: two-plate Coulomb
field, :class:`ifm.matchers.EFMMatcher`) and each plate distance L, a small MLP is trained on the
fused targets (``backend="auto"``: the compiled CPU kernel when built), then fresh source samples
are carried along the learned field from z = 0 to z = L with :func:`ifm.sampling.euler`. Beside
them, ``"IFM (exact field)"`` carries the same samples along the fused Monte Carlo string field
itself (no network): the mean of the normalised targets of ``exact_batches`` fixed batches of B
pairs, i.e. the field the learned runs regress, so that a remaining gap of the learned run is the
network's. Outputs in ``--out``:

* ``samples.png`` -- source, target and generated samples for every run;
* ``field_lines.png`` -- field lines between the plates (x_1 against z) for every run;
* ``summary.md`` / ``summary.json`` -- Wasserstein-2 distance (POT, exact EMD on the samples)
  between generated and target samples, between source and target for scale, and between two
  independent target draws (the sampling floor); times; field evaluations per sample.

Setup: P = N(0, I_2) on the plate z = 0, Q = a Swiss roll on z = L; sigma0 = 1, K = 10 (end
regions d = pi/20), B = 1024 pairs, b = 512 queries per step, independent plan, Adam with a
cosine schedule from ``lr``; IFM query points: the paper's noised interpolation (standard
deviation scaled by :func:`noise_scale`) with a share ``end_fraction`` of them in the end regions
(:func:`plate_weighted`); EFM: plate gamma 1e-7 (the EFM toys) and ``efm`` query points
(interpolation + N(0, I) noise). The Swiss roll is ``(t cos t, t sin t) / SWISS_SCALE + noise``,
t ~ U(1.5 pi, 4.5 pi). The network sees ``(z/L, exp(-z/d), exp(-(L-z)/d), x / data_scale)`` and
fits the target in stretched coordinates (:class:`FieldNet`: why a plain fit gives a filled disc
at L = 40); the sampler (:func:`carry`) uses a grid with ``end_steps`` extra steps inside each
end region (:func:`ifm.sampling.plate_refined_grid`), and for the exact field
:func:`ifm.sampling.rk45` between the end regions (first-order Euler there leaves W2 ~0.1 higher
at L = 40 even with 200 steps).

The authors' toy (IFM repository, ``notebooks/TrainingToyExperiments.ipynb``, Gaussian -> Swiss
roll) differs in budget, not in the field: L = 6 only (no L = 40 configuration), ``both_side``
queries (:func:`ifm.points.both_side`: eps 0.5, sigma_end 0.8, M 4, tau 0.03, no noise), independent
plan, SCALE 1, K 10, 1024 pairs and 256 queries per step, a ReLU network of ~20M weights
(2 -> 2048 -> 2048 -> 128 on x plus a 128-d sinusoidal embedding of z, then 128 -> 3072 ->
3072 -> 3), Adam 1e-4 for 2000 steps on a GPU, then fixed Euler steps of 0.25 in z
(:func:`ifm.sampling.fixed_step_euler`) from z = eps + 0.5 = 1 with x drawn from P, up to
z >= L; their roll is scikit-learn's ``make_swiss_roll(noise=0.8)[:, [0, 2]] / 5``. Their EFM toy
trains on ``mesh`` queries (:func:`ifm.points.mesh`) and samples with
:func:`ifm.sampling.dipole_efm`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import fields, matchers, points, sampling

SWISS_SCALE = 1.5
SWISS_NOISE = 0.5
SIGMA0 = 1.0
K = 10.0
END_D = math.pi / (2 * K)  # width d of each end region


@dataclass
class DemoConfig:
    """Sizes of one demo run (full and ``--quick`` presets below)."""

    ifm_steps: int = 3000
    efm_steps: int = 1000
    B: int = 1024
    b: int = 512
    hidden: int = 256
    lr: float = 3e-3
    end_fraction: float = 0.3
    euler_steps: int = 100
    end_steps: int = 10
    mid_solver: str = "euler"
    n_eval: int = 3000
    n_lines: int = 60
    Ls: tuple = (6.0, 40.0)
    exact_batches: int = 12
    exact_steps: int = 50
    exact_end_steps: int = 10
    exact_mid_solver: str = "rk45"
    rk_tol: float = 1e-3
    exact_Ls: tuple = (6.0, 40.0)


FULL = DemoConfig()
QUICK = DemoConfig(
    ifm_steps=30,
    efm_steps=15,
    B=128,
    b=64,
    hidden=32,
    euler_steps=16,
    end_steps=2,
    n_eval=200,
    n_lines=12,
    exact_batches=2,
    exact_steps=8,
    exact_end_steps=2,
)


# --------------------------------------------------------------------------------------------
# data and network
# --------------------------------------------------------------------------------------------
def swiss_roll(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, 2]`` Swiss roll (sklearn's formula, 2-D): ``(t cos t, t sin t) / SWISS_SCALE`` plus
    ``N(0, (SWISS_NOISE / SWISS_SCALE)^2)`` noise, ``t ~ U(1.5 pi, 4.5 pi)``."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    return (x + SWISS_NOISE * torch.randn(n, 2, generator=generator)) / SWISS_SCALE


def gaussian(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, 2]`` standard Gaussian (the source P)."""
    return torch.randn(n, 2, generator=generator)


def _smoothstep(u: torch.Tensor) -> torch.Tensor:
    u = u.clamp(0, 1)
    return u * u * (3 - 2 * u)


def frame_scale(z: torch.Tensor, L: float, d: float) -> torch.Tensor:
    """``s(z) = 1 + (L - 1) r(z)``, ``r`` rising smoothly from 0 at ``z = d`` to 1 at ``z = 3d``
    and falling back from ``L - 3d`` to ``L - d``: 1 in the end regions, L between the plates
    (the stretch of the x part in :class:`FieldNet`)."""
    return 1 + (L - 1) * _smoothstep((z - d) / (2 * d)) * _smoothstep((L - d - z) / (2 * d))


class FieldNet(torch.nn.Module):
    """MLP ``(x, z) -> (f_x, f_z)`` (the :mod:`ifm.sampling` signature) that learns the field's
    direction in stretched coordinates.

    Between the plates a field line has ``dx/dz = v / L`` (``v = C - A``): the normalised
    target's x part shrinks like ``1 / L`` while its z part stays ``~ sqrt(D+1)``, so a plain MSE
    fit barely sees the x part at large L, and the sampler multiplies what error is left by L
    when it integrates ``dx/dz`` across the gap (at L = 40 a 0.01 error in ``f_x`` moves a
    sample by ~0.2; the result is a filled disc). The net therefore fits
    :meth:`stretch` of the target -- the x part times ``s(z)`` (:func:`frame_scale`, L between
    the plates, 1 inside the end regions where the lines bend onto the charges and the plain
    z-frame target is the well-conditioned one), rescaled to
    the target's norm -- which is the same direction field in the coordinates ``(z / s, x)``
    and, between the plates, the same for every L. :meth:`forward` returns the field in the
    original coordinates (x part divided by ``s(z)``); :meth:`raw` the stretched output.
    """

    def __init__(
        self,
        L: float,
        d: float,
        hidden: int = 256,
        D: int = 2,
        data_scale: float = 4.0,
    ):
        super().__init__()
        self.L, self.d, self.data_scale = float(L), float(d), float(data_scale)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(D + 3, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, D + 1),
        )

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        return frame_scale(z.reshape(-1, 1), self.L, self.d)

    def stretch(self, z: torch.Tensor, t_z: torch.Tensor, t_x: torch.Tensor):
        """A target ``(t_z [b], t_x [b, D])`` at heights ``z`` in the net's stretched frame."""
        norm = torch.sqrt(t_z**2 + (t_x**2).sum(1))
        t_x = t_x * self.scale(z.to(t_x.dtype))
        # keep each row's norm (<= sqrt(D+1); small where the field vanishes), turn its direction
        k = norm / torch.sqrt(t_z**2 + (t_x**2).sum(1)).clamp_min(1e-12)
        return t_z * k, t_x * k[:, None]

    def raw(self, x: torch.Tensor, z: torch.Tensor):
        z = z.reshape(-1, 1).to(x.dtype)
        feats = torch.cat(
            [
                z / self.L,
                torch.exp(-z / self.d),
                torch.exp(-(self.L - z) / self.d),
                x / self.data_scale,
            ],
            dim=1,
        )
        out = self.mlp(feats)
        return out[:, 1:], out[:, 0]

    def forward(self, x: torch.Tensor, z: torch.Tensor):
        f_x, f_z = self.raw(x, z)
        return f_x / self.scale(z.to(x.dtype)), f_z


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


def plate_weighted(x0, x1, *, L, b, generator=None, end_fraction=0.0, scale=1.0, eps=1e-3):
    """The noised interpolation (:func:`ifm.points.noised`) with a share ``end_fraction`` of the
    queries' z drawn uniformly inside the two end regions ``[0, d]`` and ``[L - d, L]`` (half at
    each plate) instead of over the whole gap: a mixture density of z. The regression target at
    a query does not depend on how the query was drawn, so the minimiser of the MSE is the same
    field; the mixture only spends more of the fit on the end regions, where the lines bend onto
    the charges and separate the arms."""
    if not 0.0 <= end_fraction <= 1.0:
        raise ValueError(f"end_fraction must be in [0, 1], got {end_fraction!r}")
    a, c = x0[:b], x1[:b]
    d = END_D
    u = torch.rand(b, generator=generator, dtype=a.dtype)
    z = eps + (L - 2 * eps) * torch.rand(b, generator=generator, dtype=a.dtype)
    n_end = int(round(end_fraction * b))
    if n_end:
        e = eps + (d - eps) * u[:n_end]
        z[:n_end] = torch.where(torch.arange(n_end) % 2 == 0, e, L - e)
    noise = torch.randn(a.shape, generator=generator, dtype=a.dtype)
    x = points._interpolate(a, c, z, L) + scale * points.noise_sigma(z, L)[:, None] * noise
    return torch.cat([z[:, None], x], dim=1)


def _matcher(method: str, L: float, cfg: DemoConfig, generator, backend: str):
    if method == "IFM":
        return matchers.IFMMatcher(
            L,
            SIGMA0,
            K,
            b=cfg.b,
            points=plate_weighted,
            points_kwargs={"scale": noise_scale(L), "end_fraction": cfg.end_fraction},
            generator=generator,
            backend=backend,
        )
    return matchers.EFMMatcher(L, plate_gamma=1e-7, b=cfg.b, generator=generator, backend=backend)


def train(method: str, L: float, cfg: DemoConfig, seed: int, backend: str = "auto", bar=None):
    """Train one FieldNet on the stretched target; returns ``(net, seconds, final_loss)``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FieldNet(L, END_D, cfg.hidden)
    matcher = _matcher(method, L, cfg, g, backend)
    steps = cfg.ifm_steps if method == "IFM" else cfg.efm_steps
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        z, x, target = matcher.sample_location_and_target(gaussian(cfg.B, g), swiss_roll(cfg.B, g))
        t_z, t_x = net.stretch(z, target.z, target.x)
        f_x, f_z = net.raw(x, z)
        loss = matcher.loss((f_z, f_x), (t_z, t_x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    return net, time.perf_counter() - t0, loss.item()


def _grid(L: float, steps: int, end_steps: int):
    return sampling.plate_refined_grid(L, steps, END_D, end_steps)


def _metrics(gen, calls, guarded, target):
    ok = torch.isfinite(gen).all(dim=1)
    return {
        "w2_generated_target": w2(gen[ok], target[ok]) if bool(ok.any()) else float("nan"),
        "nonfinite_samples": int((~ok).sum()),
        "network_calls_per_sample": calls,
        "guarded_steps": guarded,
    }


def carry(field, source, L: float, steps: int, end_steps: int, solver: str, tol: float):
    """Carry ``source`` from z = 0 to z = L along ``field``: Euler over the plate-refined grid,
    or (``solver="rk45"``) Euler across each end region and :func:`ifm.sampling.rk45` across
    the middle. Returns ``(samples, calls_per_sample, guarded)``."""
    grid = _grid(L, steps, end_steps)
    if solver == "euler":
        res = sampling.euler(field, source, L=L, grid=grid)
        return res.samples, int(res.calls_per_sample.max()), res.guarded
    d = END_D
    left = sampling.euler(field, source, L=d, grid=grid[: end_steps + 1])
    mid = sampling.rk45(field, left.samples, L=L, z_from=d, z_to=L - d, rtol=tol, atol=tol)
    z = torch.full((source.shape[0],), L - d, dtype=torch.float64)
    right = sampling.euler(field, mid.samples, L=L, grid=grid, z_start=z)
    calls = int(left.calls_per_sample.max()) + mid.nfe + int(right.calls_per_sample.max())
    return right.samples, calls, left.guarded + right.guarded


def evaluate(net, L: float, cfg: DemoConfig, source: torch.Tensor, target: torch.Tensor):
    """Generated samples, field lines and metrics of one trained net."""
    grid = _grid(L, cfg.euler_steps, cfg.end_steps)
    net.eval()
    gen, calls, guarded = carry(
        net, source, L, cfg.euler_steps, cfg.end_steps, cfg.mid_solver, cfg.rk_tol
    )
    lines = sampling.euler(net, source[: cfg.n_lines], L=L, grid=grid, return_trajectory=True)
    return gen, lines.trajectory, _metrics(gen, calls, guarded, target)


def exact_field_run(
    L: float,
    cfg: DemoConfig,
    seed: int,
    source: torch.Tensor,
    target: torch.Tensor,
    backend: str = "auto",
):
    """Carry ``source`` along the fused Monte Carlo string field itself (no network): the mean of
    the normalised targets of ``cfg.exact_batches`` fixed, independent batches of ``cfg.B`` pairs
    -- the conditional mean that the learned runs regress, each batch normalised as in training."""
    g = torch.Generator().manual_seed(seed + 999)
    batches = []
    for _ in range(cfg.exact_batches):
        q = torch.cat([torch.zeros(cfg.B, 1), gaussian(cfg.B, g)], dim=1)
        batches.append((q, torch.cat([torch.full((cfg.B, 1), L), swiss_roll(cfg.B, g)], dim=1)))

    def field(x, z):
        pts = torch.cat([z.reshape(-1, 1).to(x.dtype), x], dim=1)
        E = sum(
            fields.string_field(pts, q, a, L=L, sigma0=SIGMA0, K=K, normalize=True, backend=backend)
            for q, a in batches
        ) / len(batches)
        return E[:, 1:], E[:, 0]

    grid = _grid(L, cfg.exact_steps, cfg.exact_end_steps)
    t0 = time.perf_counter()
    gen, calls, guarded = carry(
        field, source, L, cfg.exact_steps, cfg.exact_end_steps, cfg.exact_mid_solver, cfg.rk_tol
    )
    seconds = time.perf_counter() - t0
    lines = sampling.euler(field, source[: cfg.n_lines], L=L, grid=grid, return_trajectory=True)
    return gen, lines.trajectory, _metrics(gen, calls, guarded, target), seconds


# --------------------------------------------------------------------------------------------
# figures and tables
# --------------------------------------------------------------------------------------------
EXACT = "IFM (exact field)"
METHODS = ("IFM", EXACT, "EFM")


def _plots(out: str, source, target, runs: list[dict], gens, lines, Ls):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = float(target.abs().max()) * 1.15
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    fig, axes = plt.subplots(
        len(Ls), len(methods) + 1, figsize=(3.6 * (len(methods) + 1), 3.7 * len(Ls)), squeeze=False
    )
    for i, L in enumerate(Ls):
        ax = axes[i][0]
        ax.scatter(source[:, 0], source[:, 1], s=2, alpha=0.4, label="source P (z=0)")
        ax.scatter(target[:, 0], target[:, 1], s=2, alpha=0.4, label="target Q (z=L)")
        ax.set_title(f"source and target (L={L:g})", fontsize=9)
        ax.legend(loc="lower right", fontsize=7, markerscale=4)
        for j, m in enumerate(methods):
            ax = axes[i][j + 1]
            run = next((r for r in runs if r["method"] == m and r["L"] == L), None)
            if run is None:
                ax.axis("off")
                continue
            g = gens[(m, L)]
            ax.scatter(target[:, 0], target[:, 1], s=2, alpha=0.25, c="lightgray")
            ax.scatter(g[:, 0], g[:, 1], s=2, alpha=0.5, c="C3")
            ax.set_title(f"{m}, L={L:g}: W2 = {run['w2_generated_target']:.2f}", fontsize=9)
        for ax in axes[i]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "samples.png"), dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(
        len(Ls), len(methods), figsize=(4.4 * len(methods), 3.4 * len(Ls)), squeeze=False
    )
    for i, L in enumerate(Ls):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            if (m, L) not in lines:
                ax.axis("off")
                continue
            traj = lines[(m, L)]  # [steps+1, n, 3] z-first
            ax.plot(traj[:, :, 0].numpy(), traj[:, :, 1].numpy(), lw=0.6, alpha=0.7)
            ax.scatter(np.zeros(source.shape[0]), source[:, 0], s=1, c="C0", alpha=0.3)
            ax.scatter(np.full(target.shape[0], L), target[:, 0], s=1, c="C1", alpha=0.3)
            ax.set_xlim(-0.03 * L, 1.03 * L)
            ax.set_ylim(-lim, lim)
            ax.set_xlabel("z")
            ax.set_ylabel("x_1")
            ax.set_title(f"{m} field lines, L={L:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "field_lines.png"), dpi=80)
    plt.close(fig)


def _markdown(summary: dict) -> str:
    rows = [
        "| method | L | W2(generated, target) | W2(source, target) | ratio | train steps | "
        "time (s) | field evaluations / sample | guarded steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        steps = r["train_steps"] if r["train_steps"] else "— (no network)"
        rows.append(
            f"| {r['method']} | {r['L']:g} | {r['w2_generated_target']:.3f} | "
            f"{r['w2_source_target']:.3f} | {r['ratio']:.3f} | {steps} | "
            f"{r['train_time_s']:.1f} | {r['network_calls_per_sample']} | "
            f"{r['guarded_steps']} |"
        )
    s = summary
    return (
        "\n".join(rows) + "\n\n"
        f"Command: `{s['command']}` · field backend: {s['backend']} · seed {s['seed']} · "
        f"{s['n_eval']} evaluation samples · sampling floor (two independent draws of the "
        f"target) {s['w2_floor']:.3f} · total {s['total_time_s']:.0f} s on "
        f"{s['threads']} thread(s).\n"
    )


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def run_demo(
    out: str = "ifm-demo-out",
    seed: int = 0,
    quick: bool = False,
    backend: str = "auto",
    progress: bool = True,
    command: str = "ifm demo",
) -> dict:
    """Run the demo into ``out``; returns the summary dictionary (also written as JSON).
    ``progress``: one bar over all training steps (else a line per run)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    cfg = QUICK if quick else FULL
    os.makedirs(out, exist_ok=True)
    print(f"ifm demo: figures and summary go to {os.path.abspath(out)}/", flush=True)
    t_start = time.perf_counter()
    ge = torch.Generator().manual_seed(seed + 12345)
    source, target = gaussian(cfg.n_eval, ge), swiss_roll(cfg.n_eval, ge)
    w2_src = w2(source, target)
    w2_floor = w2(swiss_roll(cfg.n_eval, ge), target)
    used = (
        backend
        if backend != "auto"
        else ("cpu" if "cpu" in fields.available_backends("cpu") else "reference")
    )
    runs, gens, lines = [], {}, {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(cfg.Ls) * (cfg.ifm_steps + cfg.efm_steps)
        bar = tqdm(total=total, desc="ifm demo (training steps)", mininterval=2.0)

    def record(method, L, gen, traj, metrics, seconds, steps, loss=None):
        gens[(method, L)], lines[(method, L)] = gen, traj
        run = {
            "method": method,
            "L": L,
            **metrics,
            "w2_source_target": w2_src,
            "ratio": metrics["w2_generated_target"] / w2_src,
            "train_steps": steps,
            "train_time_s": seconds,
            "final_loss": loss,
        }
        runs.append(run)
        msg = (
            f"{method} L={L:g}: W2 {run['w2_generated_target']:.3f} (source {w2_src:.3f}, "
            f"floor {w2_floor:.3f}), {seconds:.1f} s"
        )
        (bar.write if bar is not None else print)(msg)

    for method in ("IFM", "EFM"):
        for L in cfg.Ls:
            net, seconds, loss = train(method, L, cfg, seed, backend, bar)
            gen, traj, metrics = evaluate(net, L, cfg, source, target)
            record(
                method,
                L,
                gen,
                traj,
                metrics,
                seconds,
                cfg.ifm_steps if method == "IFM" else cfg.efm_steps,
                loss,
            )
        if method == "IFM":
            for L in cfg.exact_Ls:
                gen, traj, metrics, seconds = exact_field_run(L, cfg, seed, source, target, backend)
                record(EXACT, L, gen, traj, metrics, seconds, 0)
                runs[-1]["batches"] = cfg.exact_batches
                runs[-1]["pairs"] = cfg.exact_batches * cfg.B
    if bar is not None:
        bar.close()
    order = {m: i for i, m in enumerate(METHODS)}
    runs.sort(key=lambda r: (order[r["method"]], r["L"]))
    _plots(out, source, target, runs, gens, lines, cfg.Ls)
    summary = {
        "command": command,
        "seed": seed,
        "quick": quick,
        "backend": used,
        "threads": torch.get_num_threads(),
        "config": asdict(cfg),
        "n_eval": cfg.n_eval,
        "w2_floor": w2_floor,
        "runs": runs,
        "total_time_s": time.perf_counter() - t_start,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(_markdown(summary))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="ifm-demo-out", help="output folder (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (seconds)")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "cpu", "cuda", "triton", "reference"],
        help="field backend (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )


def main_from_args(args: argparse.Namespace, command: str = "ifm demo") -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"ifm demo: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    summary = run_demo(
        out=args.out,
        seed=args.seed,
        quick=args.quick,
        backend=args.backend,
        progress=not args.no_progress,
        command=command,
    )
    print(_markdown(summary))
    print(
        f"wrote {os.path.join(args.out, 'samples.png')}, field_lines.png, summary.md, summary.json"
    )
    return 0
