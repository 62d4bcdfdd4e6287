"""ifm-kernels: fused training targets for Interaction / Electrostatic Field Matching.

Main entry points: :func:`ifm.fields.string_field`, :func:`ifm.fields.coulomb_field`
(z-first ``[n, D+1]`` tensors), :func:`ifm.available_backends`, and the pure-PyTorch oracle
:mod:`ifm.reference`. The trainer toolkit (:mod:`ifm.plans`, :mod:`ifm.points`,
:mod:`ifm.matchers`, :mod:`ifm.sampling`, :mod:`ifm.compat`, :mod:`ifm.distributed`) is imported
on first use.
"""

import importlib
import importlib.metadata

from . import fields, reference
from .fields import available_backends, coulomb_field, string_field

try:  # the version lives in pyproject.toml only
    __version__ = importlib.metadata.version("ifm-kernels")
except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0+unknown"
_LAZY = ("plans", "points", "matchers", "sampling", "compat", "demo", "distributed")
__all__ = [
    "fields",
    "reference",
    "available_backends",
    "string_field",
    "coulomb_field",
    "__version__",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
