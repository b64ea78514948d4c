"""Private helpers shared by the model constructors: dtype resolution and seeded draws."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["fan_in_bound", "normal", "resolve_dtype", "uniform"]


def resolve_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """Return ``dtype`` or torch's default floating dtype; reject non-floating dtypes."""
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}. Use torch.float64.")
    return dtype


def normal(
    shape: tuple[int, ...], std: float, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    """Draw N(0, std²) entries in float64 from ``generator`` and cast to ``dtype``.

    Drawing in float64 first makes the same seed give the same numbers in every dtype.
    """
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * std).to(dtype)


def uniform(
    shape: tuple[int, ...], bound: float, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    """Draw Unif[−bound, bound] entries in float64 from ``generator`` and cast to ``dtype``."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return ((2.0 * u - 1.0) * bound).to(dtype)


def fan_in_bound(fan_in: int) -> float:
    """PyTorch's default ``nn.Linear``/``nn.Conv`` bound 1/√fan_in (for weights and biases)."""
    return 1.0 / math.sqrt(fan_in)
