"""A whole training step (matcher -> field target -> loss -> backward -> optimizer step) captured
in one ``torch.cuda.CUDAGraph`` and replayed gives the eager steps' results (needs a GPU)."""

import copy

import pytest
import torch

import ifm
from ifm import _ops, fields

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

L = 4.0
B, D, STEPS = 64, 12, 4


def _backends():
    names = []
    if _ops.has_kernel("string_field", "CUDA"):
        names.append("cuda")
    if fields._triton_module() is not None:
        names.append("triton")
    return names or ["no-compiled-backend"]


class _StaticPoints:
    """Query sampler without RNG: z from a static tensor (copied in before each replay), x the
    interpolation of the pair, so eager and replayed steps see the same queries."""

    def __init__(self, z: torch.Tensor):
        self.z = z

    def __call__(self, a, c, *, L, b, generator=None):
        t = (self.z / L)[:, None]
        return torch.cat([self.z[:, None], (1 - t) * a[:b] + t * c[:b]], dim=1)


def _matcher(kind: str, backend: str, z: torch.Tensor):
    if kind == "ifm":
        m = ifm.matchers.IFMMatcher(L=L, sigma0=1.0, K=2.0, backend=backend)
    else:
        m = ifm.matchers.EFMMatcher(L=L, backend=backend)
    m.point_sampler = _StaticPoints(z)
    return m


def _step(net, opt, matcher, x0, x1):
    opt.zero_grad(set_to_none=False)
    zq, xq, target = matcher.sample_location_and_target(x0, x1)
    pred = net(torch.cat([zq[:, None], xq], dim=1))
    loss = matcher.loss(pred, target)
    loss.backward()
    opt.step()
    return loss


def _data(step: int):
    g = torch.Generator(device="cuda").manual_seed(100 + step)
    x0 = torch.randn(B, D, device="cuda", generator=g)
    x1 = torch.randn(B, D, device="cuda", generator=g) + 1.5
    z = 0.2 + (L - 0.4) * torch.rand(B, device="cuda", generator=g)
    return x0, x1, z


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", ["ifm", "efm"])
def test_captured_training_step_matches_eager(kind, backend):
    if backend == "no-compiled-backend":
        pytest.skip("neither CUDA kernels nor triton available")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(D + 1, 64), torch.nn.SiLU(), torch.nn.Linear(64, D + 1)
    ).cuda()
    eager_net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    eager_opt = torch.optim.SGD(eager_net.parameters(), lr=1e-2)

    static_x0, static_x1, static_z = (t.clone() for t in _data(0))
    matcher = _matcher(kind, backend, static_z)

    # warm-up on a side stream (Triton compiles, plans are cached, autograd builds its state);
    # the warm-up updates are undone by restoring the parameters afterwards
    saved = copy.deepcopy(net.state_dict())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            _step(net, opt, matcher, static_x0, static_x1)
    torch.cuda.current_stream().wait_stream(side)
    net.load_state_dict(saved)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = _step(net, opt, matcher, static_x0, static_x1)
    net.load_state_dict(saved)  # capture does not run the step, but keep it explicit

    eager_matcher = _matcher(kind, backend, torch.empty(B, device="cuda"))
    for step in range(STEPS):
        x0, x1, z = _data(step)
        static_x0.copy_(x0)
        static_x1.copy_(x1)
        static_z.copy_(z)
        graph.replay()
        eager_matcher.point_sampler.z = z
        eager_loss = _step(eager_net, eager_opt, eager_matcher, x0, x1)
        torch.testing.assert_close(static_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for p, q in zip(net.parameters(), eager_net.parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
