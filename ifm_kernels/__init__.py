"""Triton kernels of the field targets: ``string_field`` and ``coulomb_field``.

Signatures and semantics: docs/DESIGN.md, "Triton launchers". Inputs arrive validated and
contiguous (``ifm.fields`` does that); tensors live on a CUDA device, or on the CPU when Triton's
interpreter is on (``TRITON_INTERPRET=1`` set before triton is imported).

Modules: ``_field_math`` (the mirror of csrc/field_math.h and its constants), ``_passes`` (the
kernels of pass 1, pass 2 and the finalisation), ``string_field`` / ``coulomb_field`` (the
coefficient kernels and the launch sequences), ``_plan`` (block sizes and grids), ``_launch``
(host launch helpers), ``_introspect`` (launch recording and offline compilation for tests and
benchmarks/gpu_model.py).

Importing the package also registers both launchers as operators,
``torch.ops.ifm.string_field_triton`` / ``coulomb_field_triton`` (:mod:`ifm_kernels.ops`).
"""

from . import ops
from .coulomb_field import coulomb_field
from .string_field import string_field

__all__ = ["string_field", "coulomb_field", "ops"]
