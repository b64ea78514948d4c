"""Two-layer ReLU network without biases, f(x) = Σ_j a_j σ(w_jᵀx) (Wu & Su, ICML 2023)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab._types import Params
from dynstab.models import closed_form as cf
from dynstab.models._init import normal, resolve_dtype

__all__ = ["TwoLayerReLU"]

_INITS = ("lw", "r3p")


class TwoLayerReLU(nn.Module):
    """Bias-free two-layer ReLU network with scalar output and no 1/m scaling.

    f(x; θ) = Σ_{j=1}^m a_j σ(w_jᵀx), σ(z) = max(z, 0); parameters ``w`` of shape ``(m, d)``
    (row j is w_j) and ``a`` of shape ``(m,)``.

    Initializations (two conventions in use for Wu & Su (2023)'s experiments):

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

    def closed_form_grad(self, params: Params, X: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """Gradients of the ½-MSE batch loss for R stacked runs, in closed form.

        With pre-activations z_bj = w_jᵀx_b, residuals r_b = Σ_j a_j σ(z_bj) − y_b:
        ∇_{a_j} = (1/B) Σ_b r_b σ(z_bj) and ∇_{w_j} = (1/B) Σ_b r_b a_j 1{z_bj > 0} x_b (the
        sub-gradient σ'(0) = 0, as autograd's). Cost: O(R·B·m·d).

        Args:
            params: ``{"w": (R, m, d), "a": (R, m)}``: R runs' parameters.
            X: One batch per run, ``(R, B, d)``.
            y: Targets ``(R, B)``.

        Returns:
            ``({"w": ∇_w, "a": ∇_a}, L)``: ∇_w of shape ``(R, m, d)``, ∇_a of shape ``(R, m)``
            and the batch losses L_r = (1/B) Σ_b ½ r_b², shape ``(R,)``.

        Raises:
            ValueError: If ``params`` is not ``{"w", "a"}`` or ``X`` is not ``(R, B, d)``.

        Example:
            >>> net = TwoLayerReLU(3, 4, generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> X, y = torch.randn(1, 5, 3), torch.randn(1, 5)
            >>> g, loss = net.closed_form_grad(p, X, y)
            >>> auto = torch.autograd.grad(0.5 * ((net(X[0]) - y[0]) ** 2).mean(), [net.w, net.a])
            >>> bool(torch.allclose(g["w"][0], auto[0]) and torch.allclose(g["a"][0], auto[1]))
            True
        """
        a = params["a"]
        Xr, Z, S, out = self._outputs(params, X)
        B = Xr.shape[1]
        r, loss = cf.half_mse_residual(out, y)  # r: (R, B, 1)
        rows = r.transpose(1, 2)  # (R, 1, B)
        if B != 1:
            rows = rows * (1.0 / B)
        g_a = torch.bmm(rows, S.transpose(1, 2))[:, 0, :]  # row-vector form: fast CPU bmm
        delta = cf.relu_backward(a[:, :, None] * rows, Z)  # (R, m, B)
        g_w = cf.linear_grad(delta, Xr)
        return {"w": g_w, "a": g_a}, loss

    def closed_form_loss(self, params: Params, X: Tensor, y: Tensor) -> Tensor:
        """The batch losses ``(R,)`` of :meth:`closed_form_grad`, from the forward pass alone.

        Example:
            >>> net = TwoLayerReLU(3, 4, generator=torch.Generator().manual_seed(0))
            >>> p = {k: torch.stack([v.detach()] * 2) for k, v in net.named_parameters()}
            >>> X, y = torch.randn(2, 5, 3), torch.randn(2, 5)  # R = 2 runs, B = 5
            >>> loss = net.closed_form_loss(p, X, y)
            >>> with torch.no_grad():  # the ½-MSE of each run's forward pass
            ...     direct = torch.stack([0.5 * ((net(X[r]) - y[r]) ** 2).mean() for r in (0, 1)])
            >>> bool(torch.allclose(loss, direct))
            True
        """
        return cf.half_mse_residual(self._outputs(params, X)[3], y)[1]

    def _outputs(self, params: Params, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The runs' inputs ``(R, B, d)``, Z and σ(Z) ``(R, m, B)`` and outputs ``(R, B, 1)``."""
        R = cf.check_params(params, ("w", "a"))
        Xr = cf.batched_inputs(X, R, self.d)
        Z = cf.linear_apply(Xr, params["w"])  # neurons first
        S = torch.relu(Z)
        return Xr, Z, S, torch.bmm(params["a"][:, None, :], S).transpose(1, 2)

    def extra_repr(self) -> str:  # noqa: D102
        return f"d={self.d}, m={self.m}, init={self.init!r}"
