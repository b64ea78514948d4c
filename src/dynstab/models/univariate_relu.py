"""Univariate two-layer ReLU network with biases (MMS21 function-space experiments)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dynstab._checks import check_int, check_positive
from dynstab._types import Params
from dynstab.models import closed_form as cf
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

    def closed_form_grad(self, params: Params, X: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """Gradients of the ½-MSE batch loss for R stacked runs, in closed form.

        With z_bi = w1_i x_b + b1_i and residuals r_b = f(x_b) − y_b, D_bi = r_b w2_i 1{z_bi > 0}:
        ∇_{w2_i} = (1/B) Σ_b r_b σ(z_bi), ∇_{b2} = (1/B) Σ_b r_b, ∇_{w1_i} = (1/B) Σ_b D_bi x_b,
        ∇_{b1_i} = (1/B) Σ_b D_bi (σ'(0) = 0, as autograd's). Cost: O(R·B·k).

        Args:
            params: ``{"w1", "b1", "w2": (R, k), "b2": (R, 1)}``: R runs' parameters.
            X: One batch per run, ``(R, B)`` or ``(R, B, 1)``.
            y: Targets ``(R, B)``.

        Returns:
            ``(grads, losses)``: gradients shaped like ``params`` and the batch losses ``(R,)``.

        Raises:
            ValueError: If the parameter names or the input shape do not fit the net.

        Example:
            >>> net = UnivariateReLU(4, generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> x, y = torch.randn(1, 6), torch.randn(1, 6)
            >>> g, _ = net.closed_form_grad(p, x, y)
            >>> auto = torch.autograd.grad(0.5 * ((net(x[0]) - y[0]) ** 2).mean(), net.w1)[0]
            >>> bool(torch.allclose(g["w1"][0], auto))
            True
        """
        w2 = params["w2"]
        x, Z, S, out = self._outputs(params, X)
        B = x.shape[1]
        r, loss = cf.half_mse_residual(out, y)
        if B != 1:
            r = r * (1.0 / B)
        delta = cf.relu_backward(r * w2[:, None, :], Z)  # (R, B, k)
        grads = {
            "w1": (delta * x).sum(1),
            "b1": delta.sum(1),
            "w2": torch.bmm(r.transpose(1, 2), S)[:, 0, :],
            "b2": r.sum(1),
        }
        return grads, loss

    def closed_form_loss(self, params: Params, X: Tensor, y: Tensor) -> Tensor:
        """The batch losses ``(R,)`` of :meth:`closed_form_grad`, from the forward pass alone.

        Example:
            >>> net = UnivariateReLU(4, generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> x, y = torch.randn(1, 6), torch.randn(1, 6)
            >>> bool(torch.equal(net.closed_form_loss(p, x, y), net.closed_form_grad(p, x, y)[1]))
            True
        """
        return cf.half_mse_residual(self._outputs(params, X)[3], y)[1]

    def _outputs(self, params: Params, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The runs' inputs ``(R, B, 1)``, Z and σ(Z) ``(R, B, k)`` and outputs ``(R, B, 1)``."""
        R = cf.check_params(params, ("w1", "b1", "w2", "b2"))
        w1, b1, w2, b2 = params["w1"], params["b1"], params["w2"], params["b2"]
        x = cf.batched_inputs(X, R, 1)
        Z = x * w1[:, None, :] + b1[:, None, :]
        S = torch.relu(Z)
        out = torch.bmm(w2[:, None, :], S.transpose(1, 2)).transpose(1, 2)  # row-vector bmm
        return x, Z, S, out + b2[:, None, :]

    def extra_repr(self) -> str:  # noqa: D102
        return f"k={self.k}"
