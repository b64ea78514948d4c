"""Univariate two-layer ReLU network with biases (MMS21 function-space experiments)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dynstab._checks import check_int, check_positive
from dynstab.models._init import normal, resolve_dtype

__all__ = ["UnivariateReLU"]


class UnivariateReLU(nn.Module):
    """Univariate one-hidden-layer ReLU network with biases.

    f(x) = Σ_{i=1}^k w2_i σ(w1_i x + b1_i) + b2, θ ∈ ℝ^{3k+1} (Mulayoff, Michaeli & Soudry
    2021). Parameters ``w1``, ``b1``, ``w2`` of shape ``(k,)`` and ``b2`` of shape ``(1,)``.

    Initialization: w1_i, b1_i ~ N(0, init_scale²), w2_i ~ N(0, init_scale²/k), b2 = 0.

    Args:
        k: Number of hidden neurons, >= 1.
        generator: Random source for the initialization.
        init_scale: Scale of the initialization, > 0.
        dtype: Parameter dtype; None uses torch's default dtype.

    Raises:
        ValueError: If ``k < 1`` or ``init_scale <= 0``.

    Example:
        >>> net = UnivariateReLU(5, generator=torch.Generator().manual_seed(0))
        >>> net(torch.linspace(-1, 1, 7)).shape
        torch.Size([7])
    """

    def __init__(
        self,
        k: int,
        *,
        generator: torch.Generator | None = None,
        init_scale: float = 1.0,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.k = check_int("k", k, minimum=1)
        s = check_positive("init_scale", init_scale)
        dt = resolve_dtype(dtype)
        self.w1 = nn.Parameter(normal((k,), s, generator, dt))
        self.b1 = nn.Parameter(normal((k,), s, generator, dt))
        self.w2 = nn.Parameter(normal((k,), s / math.sqrt(k), generator, dt))
        self.b2 = nn.Parameter(torch.zeros(1, dtype=dt))

    def forward(self, x: Tensor) -> Tensor:
        """Return f(x) for inputs of shape ``(n,)`` or ``(n, 1)``; output shape ``(n,)``."""
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise ValueError(
                f"UnivariateReLU expects inputs of shape (n,) or (n, 1); got {tuple(x.shape)}."
            )
        pre = x[:, None] * self.w1 + self.b1
        return torch.relu(pre) @ self.w2 + self.b2

    def extra_repr(self) -> str:  # noqa: D102
        return f"k={self.k}"
