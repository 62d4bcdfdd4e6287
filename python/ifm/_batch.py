"""Shape checks of sample batches shared by the samplers, plans and solvers."""

from __future__ import annotations

import torch

__all__ = ["check_batch", "check_partner"]


def check_batch(name: str, t, what: str = "B") -> None:
    """``t`` is a floating tensor ``[n, ...]`` with ``n >= 1`` and at least 2 dims."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor [{what}, D] (or [{what}, C, H, W]), got "
            f"{type(t).__name__}"
        )
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.dim() < 2 or t.shape[0] == 0:
        raise ValueError(
            f"{name} must be [{what}, D] (or [{what}, C, H, W]) with {what} >= 1, "
            f"got shape {tuple(t.shape)}"
        )


def check_partner(name: str, t, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` is a tensor with the shape, dtype and device of ``ref`` (aligned pairs)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor shaped like {ref_name}, got {type(t).__name__}"
        )
    if t.shape != ref.shape:
        raise ValueError(
            f"{ref_name} and {name} must have the same shape (aligned pairs), got "
            f"{tuple(ref.shape)} and {tuple(t.shape)}"
        )
    if t.dtype != ref.dtype or t.device != ref.device:
        raise TypeError(
            f"{name} ({t.dtype}, {t.device}) must have {ref_name}'s dtype and device "
            f"({ref.dtype}, {ref.device})"
        )
