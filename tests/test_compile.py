"""torch.compile(fullgraph=True) of functions calling the public API with default arguments:
zero graph breaks, on CPU tensors and on fake CUDA tensors, and the eager results."""

import pytest
import torch
from modes import COULOMB_MODE_IDS, COULOMB_MODES, STRING_MODE_IDS, STRING_MODES
from torch._subclasses import FakeTensorMode

import ifm
from ifm import _ops, fields

L, SIGMA0, K = 6.0, 1.0, 10.0


def _case(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    p = torch.rand(7, 5, generator=g, dtype=dtype) * L
    q = torch.randn(6, 5, generator=g, dtype=dtype)
    q[:, 0] = 0
    a = torch.randn(6, 5, generator=g, dtype=dtype)
    a[:, 0] = L
    return p.to(device), q.to(device), a.to(device)


def _step(string_mode, coulomb_mode, backend):
    """A trainer's target computation: both fields, as the public API is called."""
    extra = {} if backend is None else dict(backend=backend)

    def step(p, q, a):
        t = fields.string_field(p, q, a, L=L, sigma0=SIGMA0, K=K, **string_mode, **extra)
        u = fields.coulomb_field(p, q, a, **coulomb_mode, **extra)
        v = fields.coulomb_field(p, q, None, **coulomb_mode, **extra)
        return t, u, v

    return step


MODES = [
    pytest.param(s, c, id=f"{si}-{ci}")
    for (si, s), (ci, c) in zip(
        zip(STRING_MODE_IDS, STRING_MODES, strict=False),
        zip(COULOMB_MODE_IDS, COULOMB_MODES, strict=False),
        strict=False,
    )
]
BACKENDS = [None] + [b for b in ifm.available_backends("cpu") if b != "reference"]


def _graph_breaks(fn, *args):
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    return explained.graph_break_count, [r.reason for r in explained.break_reasons]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b or "default")
@pytest.mark.parametrize("string_mode, coulomb_mode", MODES)
def test_fullgraph_on_cpu_matches_eager(string_mode, coulomb_mode, backend):
    step = _step(string_mode, coulomb_mode, backend)
    args = _case()
    assert _graph_breaks(step, *args) == (0, [])
    want = step(*args)
    torch._dynamo.reset()
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(*args)
    for g, w in zip(got, want, strict=False):
        assert g.dtype == w.dtype and torch.equal(g, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fullgraph_on_fake_cuda_tensors(dtype):
    if fields._triton_module() is None and not _ops.has_kernel("string_field", "CUDA"):
        pytest.skip("no compiled backend for CUDA tensors here (auto would use the reference)")
    step = _step({}, {}, None)
    with FakeTensorMode(allow_non_fake_inputs=False):
        args = tuple(torch.empty(t.shape, dtype=dtype, device="cuda") for t in _case())
        assert _graph_breaks(step, *args) == (0, [])
        torch._dynamo.reset()
        out = torch.compile(step, backend="aot_eager", fullgraph=True)(*args)
    for t in out:
        assert t.shape == args[0].shape and t.dtype == dtype and t.device.type == "cuda"


def test_compiled_matcher_step_matches_eager():
    """matcher -> field target -> loss compiled as one graph (independent plan; dynamo does not
    trace ``backward()`` itself: the compiled graph's backward runs after it)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 5)
    matcher = ifm.matchers.IFMMatcher(L=L, sigma0=SIGMA0, K=K)
    x0, x1 = torch.randn(8, 4), torch.randn(8, 4) + 2

    def step(x0, x1, z):
        def points(a, c, *, L, b, generator):
            t = (z / L)[:, None]
            return torch.cat([z[:, None], (1 - t) * a[:b] + t * c[:b]], dim=1)

        matcher.point_sampler = points
        zq, xq, target = matcher.sample_location_and_target(x0, x1)
        pred = net(torch.cat([zq[:, None], xq], dim=1))
        return matcher.loss(pred, target)

    z = torch.linspace(0.5, L - 0.5, 8)
    want = step(x0, x1, z)
    want.backward()
    grad_want = net.weight.grad.clone()
    assert _graph_breaks(step, x0, x1, z) == (0, [])
    net.zero_grad()
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x0, x1, z)
    got.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(net.weight.grad, grad_want)
