"""The torch.ops.ifm operators: schema, fake kernels (torch.compile), dispatch registration."""

import modes
import pytest
import torch
from cases import string_case

import ifm
from ifm import _ops

needs_ext = pytest.mark.skipif(
    not _ops.extension_loaded(), reason=f"ifm._C not built: {_ops.LOAD_ERROR}"
)
DEVICES = ["cpu"] + (["cuda"] if "cuda" in ifm.available_backends() else [])


def _string_args(device, dtype=torch.float32):
    return modes.string_op_args(device, dtype, normalize=True, stable=False)


def _coulomb_args(device, dtype=torch.float32, two_plates=True):
    return modes.coulomb_op_args(device, dtype, two_plates=two_plates, normalize=True)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype):
    torch.library.opcheck(torch.ops.ifm.string_field, _string_args(device, dtype))
    torch.library.opcheck(torch.ops.ifm.coulomb_field, _coulomb_args(device, dtype))
    torch.library.opcheck(torch.ops.ifm.coulomb_field, _coulomb_args(device, dtype, False))
    if _ops.has_kernel("coulomb_plate_partial", device.upper()):
        p, pos = _coulomb_args(device, dtype)[:2]
        torch.library.opcheck(torch.ops.ifm.coulomb_plate_partial, (p, pos))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_empty_plates_are_rejected(device):
    """A plate without charges has no softmax; an empty negative plate would also reach the
    kernels with a null pointer, which means one plate there."""
    p, pos, neg, *rest = _coulomb_args(device)
    for plates, name in (((pos, neg[:0]), "negative"), ((pos[:0], neg), "positive")):
        with pytest.raises(RuntimeError, match=f"{name} must have at least one row"):
            torch.ops.ifm.coulomb_field(p, *plates, *rest)


@needs_ext
@pytest.mark.parametrize("D", [5, 40], ids=["transposed-layout", "row-major-layout"])
def test_coulomb_plate_partial_is_the_plate_field_and_its_lognormaliser(D):
    """The partial op: one plate's softmax-weighted mean (the single-plate field with no plate
    or final normalisation) and the float64 (max logit, log-sum-exp) of its Coulomb logits,
    which ifm.distributed merges across ranks. float64 inputs against the float64 oracle."""
    from cases import coulomb_case

    from ifm import distributed, reference

    p, pos, _ = coulomb_case(9, 7, 5, D, L=6.0, seed=3)
    field, lognorm = torch.ops.ifm.coulomb_plate_partial(p, pos)
    want = reference.coulomb_field(p, pos, None, plate_gamma=None, sum_eps=0.0)
    torch.testing.assert_close(field, want, rtol=1e-9, atol=1e-9)
    m, lse = distributed._coulomb_lognorm(p, pos)
    assert lognorm.dtype == torch.float64 and lognorm.shape == (9, 2)
    torch.testing.assert_close(lognorm, torch.stack([m, lse], 1), rtol=1e-12, atol=1e-9)
    empty_f, empty_l = torch.ops.ifm.coulomb_plate_partial(p[:0], pos)
    assert empty_f.shape == (0, D + 1) and empty_l.shape == (0, 2)
    with pytest.raises(RuntimeError, match="charges must have at least one row"):
        torch.ops.ifm.coulomb_plate_partial(p, pos[:0])


@needs_ext
def test_cpu_kernels_registered():
    for op in _ops.OPS:
        assert _ops.has_kernel(op, "CPU")
    assert "cpu" in ifm.available_backends("cpu")


@needs_ext
def test_torch_compile_traces_the_ops():
    """A trainer step that calls the ops compiles with fullgraph (fake kernels give shapes)."""
    s_args = _string_args("cpu")
    c_args = _coulomb_args("cpu")

    def step(p, q, a):
        t = torch.ops.ifm.string_field(p, q, a, *s_args[3:])
        u = torch.ops.ifm.coulomb_field(p, c_args[1], c_args[2], *c_args[3:])
        return (t * t).sum() + (u * u).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    want = step(*s_args[:3])
    got = compiled(*s_args[:3])
    assert torch.equal(got, want)


@needs_ext
def test_auto_picks_cpu_kernels_for_cpu_tensors():
    p, q, a, prm = string_case(4, 3, 2, "toy")
    out = ifm.fields.string_field(p, q, a, **prm)
    assert torch.equal(out, ifm.fields.string_field_cpu(p, q, a, **prm))


@needs_ext
def test_kernel_table_matches_the_dispatcher():
    """ifm._ops.has_kernel reads a table built on import (free to call, traceable)."""
    for op in _ops.OPS:
        for key in ("CPU", "CUDA"):
            want = torch._C._dispatch_has_kernel_for_dispatch_key(f"ifm::{op}", key)
            assert _ops.has_kernel(op, key) == want, (op, key)
    assert _ops.STRING_OPS["cpu"] is torch.ops.ifm.string_field.default
    assert _ops.COULOMB_OPS["cpu"] is torch.ops.ifm.coulomb_field.default
