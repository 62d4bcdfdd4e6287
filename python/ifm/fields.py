"""Public API: the field-matching training targets.

``string_field`` (Interaction Field Matching) and ``coulomb_field`` (Electrostatic Field Matching,
PFGM) compute, for every query point, the Monte Carlo superposition of FIELDS.md §2-§3 in one
fused pass, optionally normalised (§4).

Layout: **z-first** ``[n, D+1]`` tensors: column 0 is z, columns 1..D are the data (an image is
flattened). This is the layout of the authors' ``GroundTruth`` functions, so with
``normalize=False`` these functions drop into their trainers and return the same numbers.

Backends (``backend=``):

* ``"cpu"`` -- fused C++/OpenMP kernels (the compiled extension ``ifm._C``), CPU tensors.
* ``"cuda"`` -- fused CUDA kernels, CUDA tensors (extension built with CUDA).
* ``"triton"`` -- Triton kernels, CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``).
* ``"reference"`` -- pure PyTorch (:mod:`ifm.reference`), any device; slow, the oracle.
* ``"auto"`` (default) -- the fastest compiled backend for the tensors' device; the reference,
  with a one-time warning, when none is built.

Targets are computed without autograd: inputs that require grad are read as constants and the
result does not require grad (a target is a regression label, not a differentiable function).
Half-precision inputs are computed in float32 and the result is cast back to their dtype; a raw
(``normalize=False``) field whose rows are tiny then loses them to the float16 range (rows below
~6e-8 become 0): prefer ``normalize=True`` (or float32 inputs) with half data.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch

from . import _checks, _cuda_arch, _ops, reference

__all__ = [
    "string_field",
    "coulomb_field",
    "available_backends",
    "string_field_cpu",
    "string_field_cuda",
    "string_field_triton",
    "string_field_reference",
    "coulomb_field_cpu",
    "coulomb_field_cuda",
    "coulomb_field_triton",
    "coulomb_field_reference",
    "string_kernel_args",
    "coulomb_kernel_args",
]

BACKENDS = ("cpu", "cuda", "triton", "reference")
PFGM_GAMMA = 5.0  # PFGM's normalisation constant (FIELDS.md §3)
PFGM_SUM_EPS = 1e-7  # PFGM adds 1e-7 to the sum of the weights
EFM_PLATE_GAMMA = 5.0  # EFM repository's per-plate gamma for images
# backend="reference" computes in float64 (float32 inputs and outputs then meet the parity rule)
REFERENCE_COMPUTE_DTYPE = torch.float64

_DEFAULT = object()
_warned_fallback = set()


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------
_TRITON = []  # [module or None] once imported


def _triton_module():
    """``ifm_kernels`` (imports triton and registers the ``torch.ops.ifm.*_triton`` ops), or
    None when triton is not installed; imported once."""
    if not _TRITON:
        try:
            import ifm_kernels
        except ImportError:
            ifm_kernels = None
        else:
            _ops.STRING_OPS["triton"] = torch.ops.ifm.string_field_triton.default
            _ops.COULOMB_OPS["triton"] = torch.ops.ifm.coulomb_field_triton.default
        _TRITON.append(ifm_kernels)
    return _TRITON[0]


def _triton_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return _triton_module() is not None
    return os.environ.get("TRITON_INTERPRET") == "1" and _triton_module() is not None


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Names of the backends that can run on this machine (for tensors on ``device``).

    Without ``device``: every backend usable for some device here (CPU, and CUDA when a GPU is
    visible). ``"reference"`` is always available.
    """
    devices = (
        [torch.device(device)]
        if device is not None
        else ([torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    )
    names = []
    for dev in devices:
        if dev.type == "cpu" and _ops.has_kernel("string_field", "CPU"):
            names.append("cpu")
        if (
            dev.type == "cuda"
            and torch.cuda.is_available()
            and _ops.has_kernel("string_field", "CUDA")
            and _cuda_arch.unusable_reason(dev) is None
        ):
            names.append("cuda")
        if _triton_usable(dev) and (dev.type == "cpu" or torch.cuda.is_available()):
            names.append("triton")
    names.append("reference")
    return list(dict.fromkeys(names))


def _build_hint() -> str:
    if _ops.LOAD_ERROR is not None:
        return f"the compiled extension ifm._C could not be imported ({_ops.LOAD_ERROR})"
    return "the compiled extension ifm._C has no such kernel"


@torch.compiler.assume_constant_result
def _resolve_backend(backend: str, device: torch.device, fn_name: str) -> str:
    """The backend that runs ``fn_name`` for tensors on ``device`` (checks of availability).
    A function of constants: torch.compile runs it once while tracing and keeps the name."""
    key = (backend, device, fn_name)  # per device: GPUs of one machine may differ in arch
    which = _RESOLVED.get(key)
    if which is None:
        which = _RESOLVED[key] = _resolve_uncached(backend, device, fn_name)
    return which


_RESOLVED = {}


def _resolve_uncached(backend: str, device: torch.device, fn_name: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cpu" and _ops.has_kernel(fn_name, "CPU"):
            return "cpu"
        if device.type == "cuda":
            if _cuda_arch.usable(device) and _ops.has_kernel(fn_name, "CUDA"):
                return "cuda"
            if _triton_module() is not None:
                return "triton"
        key = (fn_name, device.type)
        if key not in _warned_fallback:
            _warned_fallback.add(key)
            warnings.warn(
                f"ifm.fields.{fn_name}: no compiled backend for {device.type} tensors "
                f"({_build_hint()}); using the slow pure-PyTorch reference",
                RuntimeWarning,
                stacklevel=4,
            )
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(
                f"backend='cpu' ({fn_name}_cpu) needs CPU tensors, got tensors on {device}"
            )
        if not _ops.has_kernel(fn_name, "CPU"):
            raise RuntimeError(
                f"backend='cpu' is unavailable: {_build_hint()}. Build it with "
                "`pip install --no-build-isolation -e .`"
            )
    elif backend == "cuda":
        if not _ops.has_kernel(fn_name, "CUDA"):
            raise RuntimeError(
                f"backend='cuda' ({fn_name}_cuda) is unavailable: ifm was built without CUDA "
                f"kernels ({_build_hint()}). Rebuild on a machine with a CUDA build of torch and "
                "the CUDA toolkit (or IFM_FORCE_CUDA=1): `pip install --no-build-isolation -e .`"
            )
        if device.type != "cuda":
            raise ValueError(
                f"backend='cuda' ({fn_name}_cuda) needs CUDA tensors, got tensors on "
                f"{device}; move them with .cuda()"
            )
        _cuda_arch.check(device)
    elif backend == "triton":
        if _triton_module() is None:
            raise RuntimeError(
                "backend='triton' is unavailable: triton is not installed (pip install triton)"
            )
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' ({fn_name}_triton) needs CUDA tensors, got "
                f"tensors on {device} (CPU tensors run only under TRITON_INTERPRET=1)"
            )
    return backend


# Scalar arguments already validated, per (arguments, dtype of points): a trainer passes the same
# ones every step, and their checks cost about as much as the kernel of a small call. Only plain
# numbers (float, int, None) are keys (a tensor or bool argument takes the checks every time);
# torch.compile traces the checks instead (constants there).
_PLAIN = frozenset((float, int, type(None)))
_STRING_SCALARS = {}
_COULOMB_SCALARS = {}
_MEMO_SIZE = 256


def _memo_get(memo, key, *values):
    if torch.compiler.is_compiling():
        return None
    for v in values:
        if type(v) not in _PLAIN:
            return None
    return memo.get(key)


def _memo_put(memo, key, value, *values):
    if torch.compiler.is_compiling() or any(type(v) not in _PLAIN for v in values):
        return
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value


def _prepare(named, plate_z, check_finite, **params):
    """Checks shared by both fields, after the per-argument metadata checks.

    Metadata (dtype, device, parameter ranges: ``params``, none when already checked) is always
    checked; the tensor values (finite, not
    too large, plate columns: ``plate_z`` as in :func:`ifm._checks.check_values`) only where
    :func:`ifm._checks.value_checks` says so. Returns the tensors in the compute dtype (float32
    for half inputs), detached, and the output dtype.
    """
    _checks.check_same_kind(named)
    first = named[0][1]
    dtype = first.dtype
    compute = _checks.compute_dtype(dtype)
    if params:
        _checks.check_params_fit(compute, **params)
    if _checks.value_checks(check_finite, first):
        _checks.check_values(named, plate_z)
    if compute == dtype:
        return [t.detach() if t.requires_grad else t for _, t in named], dtype
    return [t.detach().to(compute) for _, t in named], dtype


# --------------------------------------------------------------------------------------------
# public arguments -> kernel arguments (the one place this mapping lives; tests and benchmarks
# call these too)
# --------------------------------------------------------------------------------------------
def string_kernel_args(width: int, *, normalize: bool = False, eps: float = 1e-5) -> dict:
    """Normalisation arguments of the string kernels (ops, Triton launchers, reference) for
    the public ``normalize`` / ``eps`` at ``width = D+1`` columns: the target is
    ``sqrt(D+1) * E / (||E|| + eps)``."""
    return dict(normalize=bool(normalize), norm_scale=math.sqrt(width), eps=float(eps))


def coulomb_kernel_args(
    width: int,
    *,
    two_plates: bool,
    plate_gamma=_DEFAULT,
    normalize: bool | str = False,
    eps: float | None = None,
) -> dict:
    """Kernel arguments of the Coulomb field for the public ``plate_gamma`` / ``normalize`` /
    ``eps`` at ``width = D+1`` columns: ``plate_gamma`` (default 5 with two plates, ``None``
    with one), ``sum_eps`` (PFGM: 1e-7), ``normalize``, ``norm_scale`` (``sqrt(D+1)``, PFGM
    ``sqrt(D)``) and ``eps`` (default 1e-5, PFGM 5)."""
    pfgm = normalize == "pfgm"
    if plate_gamma is _DEFAULT:
        plate_gamma = EFM_PLATE_GAMMA if two_plates else None
    if eps is None:
        eps = PFGM_GAMMA if pfgm else 1e-5
    return dict(
        plate_gamma=None if plate_gamma is None else float(plate_gamma),
        sum_eps=PFGM_SUM_EPS if pfgm else 0.0,
        normalize=normalize is not False,
        norm_scale=math.sqrt(width - 1 if pfgm else width),
        eps=float(eps),
    )


# --------------------------------------------------------------------------------------------
# string field
# --------------------------------------------------------------------------------------------
def string_field(
    points: torch.Tensor,
    quarks: torch.Tensor,
    antiquarks: torch.Tensor,
    *,
    L: float,
    sigma0: float,
    K: float | None = None,
    d: float | None = None,
    normalize: bool = False,
    eps: float = 1e-5,
    stable: bool = False,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> torch.Tensor:
    """IFM "string" field target (FIELDS.md §2, "Shifted" form) at ``b`` query points.

    Args:
        points: ``[b, D+1]`` query points ``(z, x)``, z in column 0 (any z; queries outside
            ``[0, L]`` get a zero row).
        quarks: ``[B, D+1]`` quarks ``(0, A_j)`` on the plate z = 0 (column 0 must be 0).
        antiquarks: ``[B, D+1]`` antiquarks ``(L, C_j)`` on the plate z = L (column 0 must be L);
            row j is the partner of ``quarks[j]`` (pass ``antiquarks[pairing]`` for an OT plan).
        L: plate distance (> 0). sigma0: string width (> 0, upstream ``SCALE``).
        K: curvature (> 0). d: end-region length; give ``K`` or ``d`` (``d = pi / (2K)``,
            ``d <= L/2``).
        normalize: ``False`` returns the raw field exactly as the authors' ``GroundTruth``;
            ``True`` returns the training target ``sqrt(D+1) * E / (||E|| + eps)``.
        eps: normalisation constant (default 1e-5, the authors').
        stable: compute the weights in the log domain relative to each row's largest weight.
            The raw result is then ``E_i / max_j w_ij``: the same direction as the field,
            finite and non-zero wherever the exact field is non-zero, even where every float
            weight underflows (the default mode then returns a zero row, as the authors' code).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.
        check_finite: the checks that read tensor values: NaN/inf, values so large that a
            squared distance would overflow the compute dtype, and the plates' column 0. ``None``
            (default): the environment variable ``IFM_CHECK_FINITE`` decides (unset: CPU
            tensors only, so a CUDA call makes no device-to-host sync; ``1``: every device;
            ``0``: never). ``True`` / ``False`` force them on / off. They never run while
            torch.compile traces, on fake tensors or while a CUDA graph captures (``True`` is
            then an error). The kernels stay safe without them: a non-finite input makes the
            rows that read it non-finite (docs/INPUTS.md, "Value checks").

    Returns:
        ``[b, D+1]`` field (z component first), dtype and device of ``points``; no autograd.
    """
    _checks.check_matrix("points", points)
    width = points.shape[1]
    _checks.check_matrix("quarks", quarks, width=width)
    _checks.check_matrix("antiquarks", antiquarks, width=width)
    if quarks.shape[0] != antiquarks.shape[0]:
        raise ValueError(
            f"quarks and antiquarks must have the same number of rows (index-aligned "
            f"pairs), got {quarks.shape[0]} and {antiquarks.shape[0]}"
        )
    args = (L, sigma0, K, d, eps)
    key = (args, points.dtype, width, normalize is True)  # a non-bool normalize raises below
    memo = _memo_get(_STRING_SCALARS, key, *args)
    if memo is None:
        L, sigma0, K, d = _checks.string_geometry(L, sigma0, K, d)
        eps = _checks.check_scalar("eps", eps, allow_zero=True)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    if not isinstance(stable, bool):
        raise TypeError(f"stable must be a bool, got {stable!r}")
    named = [("points", points), ("quarks", quarks), ("antiquarks", antiquarks)]
    if memo is None:
        (p, q, a), out_dtype = _prepare(
            named, [_checks.NO_PLATE, 0.0, L], check_finite, L=L, sigma0=sigma0, K=K, d=d, eps=eps
        )
        # The plate sits at L as the tensors hold it: a query with z == antiquarks' z is on the
        # plate (inside), also when L is not representable in the compute dtype (e.g. 0.3 in
        # float32).
        L_z = _checks.round_to(L, p.dtype)
        memo = (
            L,
            L_z,
            sigma0,
            K,
            min(d, L_z / 2.0),
            string_kernel_args(width, normalize=normalize, eps=eps),
        )
        _memo_put(_STRING_SCALARS, key, memo, *args)
    else:
        (p, q, a), out_dtype = _prepare(named, [_checks.NO_PLATE, 0.0, memo[0]], check_finite)
    _, L, sigma0, K, d, kw = memo
    which = _resolve_backend(backend, p.device, "string_field")
    if which == "reference":  # the compiled backends make their inputs contiguous themselves
        p, q, a = p.contiguous(), q.contiguous(), a.contiguous()
        out = reference.string_field(
            p,
            q,
            a,
            L=L,
            sigma0=sigma0,
            K=K,
            d=d,
            stable=stable,
            **kw,
            compute_dtype=REFERENCE_COMPUTE_DTYPE,
        )
    else:
        op = _ops.STRING_OPS[which]
        out = op(p, q, a, L, sigma0, K, d, stable, kw["normalize"], kw["norm_scale"], kw["eps"])
    return out if out.dtype == out_dtype else out.to(out_dtype)


# --------------------------------------------------------------------------------------------
# Coulomb field
# --------------------------------------------------------------------------------------------
def coulomb_field(
    points: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    plate_gamma=_DEFAULT,
    normalize: bool | str = False,
    eps: float | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> torch.Tensor:
    """Coulomb field target of EFM (two plates) or PFGM (one plate), FIELDS.md §3.

    Args:
        points: ``[b, D+1]`` query points ``(z, x)``, z in column 0 (anywhere in space).
        positive: ``[Bp, D+1]`` charges on the plate z = 0 (column 0 must be 0).
        negative: ``[Bn, D+1]`` charges on the plate z = L (column 0 constant, = L > 0), or
            ``None`` for PFGM's single plate.
        plate_gamma: per-plate normalisation ``sqrt(D+1) E / (||E|| + plate_gamma)`` applied to
            each plate's term before ``-E+ + E-`` (EFM repository). ``None`` skips it (the copy
            inside the IFM repository). Default: 5.0 with two plates (EFM's image setting; its
            toys use 1e-7), ``None`` with one plate.
        normalize: ``False``: the raw target (``-E+ + E-``, or ``E+`` toward the charges for one
            plate), as the authors' ``GroundTruth``. ``True``: ``sqrt(D+1) E / (||E|| + eps)``
            (eps default 1e-5). ``"pfgm"``: PFGM's target ``sqrt(D) E / (||E|| + eps)`` with
            eps default 5 and 1e-7 added to the sum of the weights.
        eps: normalisation constant (see ``normalize``).
        backend, check_finite: as in :func:`string_field`.

    Returns:
        ``[b, D+1]`` field, dtype and device of ``points``; no autograd.
    """
    _checks.check_matrix("points", points)
    width = points.shape[1]
    _checks.check_matrix("positive", positive, width=width)
    if negative is not None:
        _checks.check_matrix("negative", negative, width=width)
    args = (None if plate_gamma is _DEFAULT else plate_gamma, eps)
    key = (plate_gamma, normalize, eps, negative is None, width, points.dtype)
    kw = _memo_get(_COULOMB_SCALARS, key, *args) if type(normalize) in (bool, str) else None
    params = {}
    if kw is None:
        if plate_gamma is not _DEFAULT and plate_gamma is not None:
            plate_gamma = _checks.check_scalar("plate_gamma", plate_gamma, allow_zero=True)
        if not isinstance(normalize, (bool, str)):
            raise TypeError(f"normalize must be False, True or 'pfgm', got {normalize!r}")
        if normalize not in (False, True, "pfgm"):
            raise ValueError(f"normalize must be False, True or 'pfgm', got {normalize!r}")
        if eps is not None:
            eps = _checks.check_scalar("eps", eps, allow_zero=True)
        kw = coulomb_kernel_args(
            width,
            two_plates=negative is not None,
            plate_gamma=plate_gamma,
            normalize=normalize,
            eps=eps,
        )
        params = dict(eps=kw["eps"], plate_gamma=kw["plate_gamma"])
    if negative is None:
        named, plate_z = [("points", points), ("positive", positive)], [_checks.NO_PLATE, 0.0]
    else:
        named = [("points", points), ("positive", positive), ("negative", negative)]
        plate_z = [_checks.NO_PLATE, 0.0, _checks.PLATE_AT_ROW_0]
    tensors, out_dtype = _prepare(named, plate_z, check_finite, **params)
    if params:
        _memo_put(_COULOMB_SCALARS, key, kw, *args)
    p, pos = tensors[0], tensors[1]
    neg = tensors[2] if negative is not None else None
    which = _resolve_backend(backend, p.device, "coulomb_field")
    if which == "reference":  # the compiled backends make their inputs contiguous themselves
        p, pos = p.contiguous(), pos.contiguous()
        neg = neg.contiguous() if neg is not None else None
        out = reference.coulomb_field(p, pos, neg, **kw, compute_dtype=REFERENCE_COMPUTE_DTYPE)
    else:
        out = _ops.COULOMB_OPS[which](
            p,
            pos,
            neg,
            kw["plate_gamma"],
            kw["sum_eps"],
            kw["normalize"],
            kw["norm_scale"],
            kw["eps"],
        )
    return out if out.dtype == out_dtype else out.to(out_dtype)


# --------------------------------------------------------------------------------------------
# backend-pinned names
# --------------------------------------------------------------------------------------------
def _pinned(fn, backend: str):
    @functools.wraps(fn)
    def pinned(*args, **kwargs):
        if "backend" in kwargs:
            raise TypeError(
                f"{fn.__name__}_{backend}() fixes backend={backend!r}; "
                f"call ifm.fields.{fn.__name__} to choose one"
            )
        return fn(*args, backend=backend, **kwargs)

    pinned.__name__ = pinned.__qualname__ = f"{fn.__name__}_{backend}"
    pinned.__doc__ = (
        f"{fn.__name__} on the {backend!r} backend (see ifm.fields.{fn.__name__}); "
        f"raises when that backend cannot run the given tensors.\n\n{fn.__doc__}"
    )
    return pinned


string_field_cpu = _pinned(string_field, "cpu")
string_field_cuda = _pinned(string_field, "cuda")
string_field_triton = _pinned(string_field, "triton")
string_field_reference = _pinned(string_field, "reference")
coulomb_field_cpu = _pinned(coulomb_field, "cpu")
coulomb_field_cuda = _pinned(coulomb_field, "cuda")
coulomb_field_triton = _pinned(coulomb_field, "triton")
coulomb_field_reference = _pinned(coulomb_field, "reference")
