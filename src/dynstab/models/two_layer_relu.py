"""Two-layer ReLU network without biases, f(x) = Σ_j a_j σ(w_jᵀx) (Wu & Su (2023) §2, R7)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab.models._init import normal, resolve_dtype

__all__ = ["TwoLayerReLU"]

_INITS = ("lw", "r3p")


class TwoLayerReLU(nn.Module):
    """Bias-free two-layer ReLU network with scalar output and no 1/m scaling.

    f(x; θ) = Σ_{j=1}^m a_j σ(w_jᵀx), σ(z) = max(z, 0); parameters ``w`` of shape ``(m, d)``
    (row j is w_j) and ``a`` of shape ``(m,)``.

    Initializations (Wu & Su (2023) ambiguity A4):

    * ``"lw"`` (default, Lei Wu's notes): w_j ~ N(0, I_d/d), a_j ~ N(0, 1), so ‖w_j‖ ≈ 1.
    * ``"r3p"`` (the third-party reproduction): w_j ~ N(0, I_d/√d), i.e. std d^{−1/4};
      a_j ~ N(0, 1).

    Args:
        d: Input dimension, >= 1.
        m: Width, >= 1.
        init: ``"lw"`` or ``"r3p"``.
        generator: Random source for the initialization.
        dtype: Parameter dtype; None uses torch's default dtype.

    Raises:
        ValueError: If ``d`` or ``m`` < 1 or ``init`` is unknown.

    Example:
        >>> net = TwoLayerReLU(4, 3, generator=torch.Generator().manual_seed(0))
        >>> net(torch.randn(5, 4)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        d: int,
        m: int,
        *,
        init: str = "lw",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d = check_int("d", d, minimum=1)
        self.m = check_int("m", m, minimum=1)
        self.init = check_choice("init", init, _INITS)
        dt = resolve_dtype(dtype)
        w_std = 1.0 / math.sqrt(d) if init == "lw" else d ** (-0.25)
        self.w = nn.Parameter(normal((m, d), w_std, generator, dt))
        self.a = nn.Parameter(normal((m,), 1.0, generator, dt))

    def forward(self, x: Tensor) -> Tensor:
        """Return f(x) for inputs of shape ``(n, d)``; output shape ``(n,)``."""
        if x.shape[-1] != self.d:
            raise ValueError(
                f"TwoLayerReLU expects inputs of shape (n, {self.d}); got {tuple(x.shape)}."
            )
        return torch.relu(x @ self.w.T) @ self.a

    def extra_repr(self) -> str:  # noqa: D102
        return f"d={self.d}, m={self.m}, init={self.init!r}"
