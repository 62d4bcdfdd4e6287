"""Triton kernels of the field targets (issue 4): ``string_field`` and ``coulomb_field``.

Signatures and semantics: docs/DESIGN.md, "Triton launchers". Inputs arrive validated and
contiguous (``ifm.fields`` does that); tensors live on a CUDA device, or on the CPU when Triton's
interpreter is on (``TRITON_INTERPRET=1`` set before triton is imported).
"""
from .coulomb_field import coulomb_field
from .string_field import string_field

__all__ = ["string_field", "coulomb_field"]
