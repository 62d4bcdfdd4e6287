"""Several Python threads calling the same op on different inputs get exactly the results of
sequential calls (every backend; the compiled ops release the GIL and use OpenMP inside)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from cases import coulomb_case, string_case
from modes import COULOMB_MODES, STRING_MODES

import ifm

THREADS, TASKS = 4, 8


def _string_task(bname, device, seed):
    b, B, D = (5, 4, 24) if bname == "triton" else (23, 31, 150)
    points, quarks, antiquarks, params = string_case(b, B, D, "cifar", seed=seed)
    f32 = [t.to(device, torch.float32) for t in (points, quarks, antiquarks)]
    mode = STRING_MODES[seed % len(STRING_MODES)]
    return lambda: ifm.fields.string_field(*f32, **params, **mode, backend=bname)


def _coulomb_task(bname, device, seed):
    b, B, D = (5, 4, 24) if bname == "triton" else (23, 31, 150)
    case = coulomb_case(b, B, B + 1, D, 20.0, seed)
    points, pos, neg = (t.to(device, torch.float32) for t in case)
    mode = COULOMB_MODES[seed % len(COULOMB_MODES)]
    plates = (pos, neg) if seed % 3 else (pos,)  # one plate for seeds 0, 3, 6
    return lambda: ifm.fields.coulomb_field(points, *plates, **mode, backend=bname)


@pytest.mark.parametrize("make", [_string_task, _coulomb_task], ids=["string", "coulomb"])
def test_threads_match_sequential_calls(backend, make):
    tasks = [make(*backend, seed) for seed in range(TASKS)]
    sequential = [task() for task in tasks]
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(2):  # two rounds: tasks interleave differently
            concurrent = list(pool.map(lambda task: task(), tasks))
            for seed, (got, want) in enumerate(zip(concurrent, sequential, strict=False)):
                assert torch.equal(got, want), f"task {seed}: max diff {(got - want).abs().max()}"


def test_threads_mixing_both_fields(backend):
    tasks = [
        make(*backend, seed) for seed in range(TASKS) for make in (_string_task, _coulomb_task)
    ]
    sequential = [task() for task in tasks]
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(lambda task: task(), tasks[::-1]))[::-1]
    for i, (got, want) in enumerate(zip(concurrent, sequential, strict=False)):
        assert torch.equal(got, want), f"task {i}"
