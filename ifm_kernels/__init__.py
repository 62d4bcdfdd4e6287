"""Triton kernels of the field targets: ``string_field`` and ``coulomb_field``.

Signatures and semantics: docs/DESIGN.md, "Triton launchers". Inputs arrive validated and
contiguous (``ifm.fields`` does that); tensors live on a CUDA device, or on the CPU when Triton's
interpreter is on (``TRITON_INTERPRET=1`` set before triton is imported).

Importing the package also registers both launchers as operators,
``torch.ops.ifm.string_field_triton`` / ``coulomb_field_triton`` (:mod:`ifm_kernels.ops`).
"""
from . import ops
from .coulomb_field import coulomb_field
from .string_field import string_field

__all__ = ["string_field", "coulomb_field", "ops"]
