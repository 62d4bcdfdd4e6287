"""The demo's IFM training (Gaussian -> Swiss roll, L = 6) under DistributedDataParallel, with the
targets computed over the global batch of every rank (ifm.distributed).

Run on one CPU machine with two processes (Gloo)::

    torchrun --nproc_per_node=2 examples/ddp_toy.py                 # ~40 s on 2 shared cores
    torchrun --nproc_per_node=2 examples/ddp_toy.py --steps 2000 --B 1024 --b 512 --hidden 256
    torchrun --nproc_per_node=2 examples/ddp_toy.py --local-targets # each rank's own batch only

Each rank draws its own batches (its own seed), so the world's batch is ``W * B`` pairs; every
rank's targets superpose all of them (``group="world"`` in the matcher), the gradients are
averaged by DDP as usual. On GPUs use ``--device cuda`` with the NCCL backend (torchrun sets
LOCAL_RANK; untested here). At the end rank 0 carries source samples along the learned field
and prints the Wasserstein-2 distance to the Swiss roll (POT), with the source's for scale.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ifm import demo, distributed, matchers, sampling


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    p.add_argument("--B", type=int, default=256, help="pairs per rank and step (default 256)")
    p.add_argument("--b", type=int, default=128, help="queries per rank and step (default 128)")
    p.add_argument("--hidden", type=int, default=128, help="MLP width (default 128; demo: 256)")
    p.add_argument("--L", type=float, default=6.0, help="plate distance (default 6)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--strategy", choices=distributed.STRATEGIES, default="auto")
    p.add_argument(
        "--local-targets",
        action="store_true",
        help="targets over each rank's own batch only (no collectives in the field)",
    )
    p.add_argument("--device", default="cpu", help="cpu (Gloo) or cuda (NCCL)")
    p.add_argument("--n-eval", type=int, default=1000, help="samples generated at the end")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def setup(device: str):
    if "RANK" not in os.environ:  # plain `python examples/ddp_toy.py`: a world of one
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29517"
        )
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return torch.device("cpu")


def main():
    args = parse_args()
    device = setup(args.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(args.seed * 1000 + rank)  # this rank's data
    torch.manual_seed(args.seed)  # same initial weights
    d = math.pi / (2 * demo.K)
    net = demo.FieldNet(args.L, d, args.hidden).to(device)
    model = DDP(net)
    matcher = matchers.IFMMatcher(
        args.L,
        demo.SIGMA0,
        demo.K,
        b=args.b,
        points="noised",
        points_kwargs={"noise_scale": demo.noise_scale(args.L)},
        generator=g,
        group=None if args.local_targets else "world",
        strategy=args.strategy,
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    if rank == 0:
        scope = (
            "local batch"
            if args.local_targets
            else f"global batch {world} x {args.B} ({args.strategy})"
        )
        print(
            f"world {world}, {args.steps} steps, targets over the {scope}, "
            f"{torch.get_num_threads()} thread(s) per rank",
            flush=True,
        )
    t0 = time.perf_counter()
    for step in range(args.steps):
        x0 = demo.gaussian(args.B, g).to(device)
        x1 = demo.swiss_roll(args.B, g).to(device)
        z, x, target = matcher.sample_location_and_target(x0, x1)
        f_x, f_z = model(x, z)
        loss = matcher.loss((f_z, f_x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if rank == 0 and (step % max(1, args.steps // 10) == 0 or step == args.steps - 1):
            print(
                f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:6.1f} s",
                flush=True,
            )
    if rank == 0:
        eval_gen = torch.Generator().manual_seed(10_000 + args.seed)
        source = demo.gaussian(args.n_eval, eval_gen)
        target = demo.swiss_roll(args.n_eval, eval_gen)
        grid = sampling.plate_refined_grid(args.L, 100, d, 10)
        net.eval()
        with torch.no_grad():
            gen = sampling.euler(net.cpu(), source, L=args.L, grid=grid).samples
        try:
            print(
                f"W2(generated, Swiss roll) = {demo.w2(gen, target):.3f}   "
                f"W2(source, Swiss roll) = {demo.w2(source, target):.3f}"
            )
        except ImportError:
            print("POT is not installed: no Wasserstein-2 distance")
        print(f"training: {time.perf_counter() - t0:.1f} s")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
