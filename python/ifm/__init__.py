"""ifm-kernels: fused training targets for Interaction / Electrostatic Field Matching.

Main entry points: :func:`ifm.fields.string_field`, :func:`ifm.fields.coulomb_field`
(z-first ``[n, D+1]`` tensors), :func:`ifm.available_backends`, and the pure-PyTorch oracle
:mod:`ifm.reference`.
"""
from . import fields, reference
from .fields import available_backends, coulomb_field, string_field

__version__ = "0.1.0"
__all__ = ["fields", "reference", "available_backends", "string_field", "coulomb_field",
           "__version__"]
