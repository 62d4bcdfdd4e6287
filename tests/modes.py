"""Mode tables and golden-input builders shared by every parity test (one place for each)."""
from __future__ import annotations

import ifm

# every (normalize, stable) mode of the string field
STRING_MODES = [dict(normalize=False, stable=False), dict(normalize=True, stable=False),
                dict(normalize=False, stable=True), dict(normalize=True, stable=True)]
STRING_MODE_IDS = ["raw", "norm", "stable", "stable-norm"]

# the Coulomb modes of the published runs: IFM repository's copy (no plate normalisation), EFM
# toys (plate gamma 1e-7), EFM images (plate gamma 5, normalised), PFGM
COULOMB_MODES = [dict(plate_gamma=None, normalize=False), dict(plate_gamma=1e-7, normalize=False),
                 dict(plate_gamma=5.0, normalize=True), dict(plate_gamma=None, normalize="pfgm")]
COULOMB_MODE_IDS = ["raw", "plate1e-7", "plate5-norm", "pfgm"]


def coulomb_reference_kwargs(width: int, mode: dict, two_plates: bool) -> dict:
    """Keyword arguments of :func:`ifm.reference.coulomb_field` for a public Coulomb ``mode``
    (the mapping of :func:`ifm.fields.coulomb_kernel_args`)."""
    return ifm.fields.coulomb_kernel_args(width, two_plates=two_plates, **mode)


def string_reference_kwargs(width: int, mode: dict) -> dict:
    """Keyword arguments of :func:`ifm.reference.string_field` for a public string ``mode``."""
    kw = ifm.fields.string_kernel_args(width, normalize=mode.get("normalize", False),
                                       eps=mode.get("eps", 1e-5))
    return dict(kw, stable=mode.get("stable", False))


def golden_string_inputs(data):
    """(points, quarks, antiquarks) of a string golden file, antiquarks in the authors' pairing."""
    antiquarks = data["antiquarks"]
    if "pairing" in data:
        antiquarks = antiquarks[data["pairing"].long()]
    return data["points"], data["quarks"], antiquarks


def golden_coulomb_inputs(data):
    """(points, positive, negative) of a Coulomb golden file."""
    return data["points"], data["positive"], data["negative"]
