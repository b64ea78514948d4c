"""Fully connected networks (C21's ``fc-*`` workloads): plain MLPs with tanh/ReLU/... ."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab._types import Params
from dynstab.models import closed_form as cf
from dynstab.models._init import fan_in_bound, resolve_dtype, uniform

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": nn.functional.elu,
    "softplus": nn.functional.softplus,
    "hardtanh": nn.functional.hardtanh,
}


def _derivative(activation: str, z: Tensor, h: Tensor) -> Tensor:
    """φ'(z) for a non-ReLU ``activation`` given z and h = φ(z), as autograd computes it.

    (ReLU goes through :func:`~dynstab.models.closed_form.relu_backward`.)
    """
    if activation == "tanh":
        return 1.0 - h * h
    if activation == "elu":  # α = 1: e^z for z ≤ 0
        return torch.where(z > 0, torch.ones_like(z), h + 1.0)
    if activation == "softplus":  # β = 1, linear above the threshold 20 (as torch)
        return torch.where(z > 20.0, torch.ones_like(z), torch.sigmoid(z))
    # hardtanh on [−1, 1]: derivative 1 strictly inside
    return ((z > -1.0) & (z < 1.0)).to(z.dtype)


def seeded_linear(
    fan_in: int, fan_out: int, bias: bool, generator: torch.Generator | None, dtype: torch.dtype
) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default Unif[±1/√fan_in] init drawn from ``generator``.

    Built with :func:`torch.nn.utils.skip_init`, so torch's global RNG is not consumed.
    """
    layer = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias, dtype=dtype)
    bound = fan_in_bound(fan_in)
    with torch.no_grad():
        layer.weight.copy_(uniform((fan_out, fan_in), bound, generator, dtype))
        if layer.bias is not None:
            layer.bias.copy_(uniform((fan_out,), bound, generator, dtype))
    return layer


class MLP(nn.Module):
    """Multi-layer perceptron x ↦ W_L φ(… φ(W_1 x + b_1) …) + b_L.

    Inputs of shape ``(n, *)`` are flattened to ``(n, sizes[0])``. Weights and biases are
    drawn from PyTorch's default Unif[±1/√fan_in] using ``generator``. Parameters are named
    ``layers.{l}.weight`` / ``layers.{l}.bias``.

    Args:
        sizes: Layer widths ``(d_in, h_1, ..., h_{L−1}, d_out)``, at least two entries >= 1.
        activation: One of ``"tanh"``, ``"relu"``, ``"elu"``, ``"softplus"``, ``"hardtanh"``.
        bias: Whether every layer has a bias.
        generator: Random source for the initialization.
        dtype: Parameter dtype; None uses torch's default dtype.

    Returns (forward):
        Tensor of shape ``(n, d_out)``, or ``(n,)`` when ``d_out == 1``.

    Raises:
        ValueError: If ``sizes`` has fewer than two entries or a width < 1, or the
            activation is unknown.

    Example:
        >>> net = MLP([4, 8, 1], generator=torch.Generator().manual_seed(0))
        >>> net(torch.randn(3, 4)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "tanh",
        bias: bool = True,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"sizes must list at least (d_in, d_out); got {sizes}. E.g. sizes=[784, 200, 10]."
            )
        for i, s in enumerate(sizes):
            check_int(f"sizes[{i}]", s, minimum=1)
        self.sizes = tuple(sizes)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        dt = resolve_dtype(dtype)
        self.layers = nn.ModuleList(
            seeded_linear(fi, fo, bias, generator, dt) for fi, fo in itertools.pairwise(sizes)
        )
        self._param_names = tuple(n for n, _ in self.named_parameters())

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``x`` of shape ``(n, *)`` with ``sizes[0]`` features."""
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.sizes[0]:
            raise ValueError(
                f"MLP expects {self.sizes[0]} input features; got input shape {tuple(x.shape)}."
            )
        phi = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            h = phi(layer(h))
        out = self.layers[-1](h)
        return out[:, 0] if self.sizes[-1] == 1 else out

    def closed_form_grad(self, params: Params, X: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """Gradients of the ½-MSE batch loss for R stacked runs, by explicit back-propagation.

        Forward h_0 = x, z_l = W_l h_{l−1} + b_l, h_l = φ(z_l) (no φ on the last layer);
        backward δ_L = r/B with residual r = f(x) − y, δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ φ'(z_l);
        ∇W_l = Σ_b δ_l h_{l−1}ᵀ, ∇b_l = Σ_b δ_l. The derivatives φ' are autograd's, kinks
        included. Cost: two batched matrix products per layer and run.

        Args:
            params: ``{"layers.{l}.weight": (R, out, in), "layers.{l}.bias": (R, out)}``.
            X: One batch per run, ``(R, B, *)`` with ``sizes[0]`` features per sample.
            y: Targets ``(R, B)`` (one output) or ``(R, B, C)``.

        Returns:
            ``(grads, losses)``: gradients shaped like ``params`` and the batch losses
            L_r = (1/B) Σ_b ½‖r_b‖², shape ``(R,)``.

        Raises:
            ValueError: If the parameter names or the input shape do not fit the net.

        Example:
            >>> net = MLP([3, 5, 2], generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> X, y = torch.randn(1, 4, 3), torch.randn(1, 4, 2)
            >>> g, _ = net.closed_form_grad(p, X, y)
            >>> loss = 0.5 * ((net(X[0]) - y[0]) ** 2).sum(1).mean()
            >>> auto = torch.autograd.grad(loss, net.layers[0].weight)[0]
            >>> bool(torch.allclose(g["layers.0.weight"][0], auto))
            True
        """
        hs, zs = self._layers(params, X)
        B, L = hs[0].shape[1], len(self.layers)
        r, loss = cf.half_mse_residual(zs[-1], y)
        delta = r * (1.0 / B) if B != 1 else r
        grads: Params = {}
        for l in reversed(range(L)):
            grads[f"layers.{l}.weight"] = cf.linear_grad(delta.transpose(1, 2), hs[l])
            if f"layers.{l}.bias" in params:
                grads[f"layers.{l}.bias"] = delta.sum(1)
            if l > 0:
                back = torch.bmm(delta, params[f"layers.{l}.weight"])
                if self.activation == "relu":
                    delta = cf.relu_backward(back, zs[l - 1])
                else:
                    delta = back * _derivative(self.activation, zs[l - 1], hs[l])
        return {k: grads[k] for k in self._param_names}, loss

    def closed_form_loss(self, params: Params, X: Tensor, y: Tensor) -> Tensor:
        """The batch losses ``(R,)`` of :meth:`closed_form_grad`, from the forward pass alone.

        Example:
            >>> net = MLP([3, 5, 1], generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> X, y = torch.randn(1, 4, 3), torch.randn(1, 4)
            >>> bool(torch.equal(net.closed_form_loss(p, X, y), net.closed_form_grad(p, X, y)[1]))
            True
        """
        return cf.half_mse_residual(self._layers(params, X)[1][-1], y)[1]

    def _layers(self, params: Params, X: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Layer inputs h_0 = x, …, h_{L−1} and pre-activations z_1, …, z_L, each ``(R, B, ·)``."""
        R = cf.check_params(params, self._param_names)
        h = cf.batched_inputs(X, R, self.sizes[0])
        L = len(self.layers)
        phi = ACTIVATIONS[self.activation]
        hs, zs = [h], []
        for l in range(L):
            z = cf.linear_apply(h, params[f"layers.{l}.weight"]).transpose(1, 2)
            bias = params.get(f"layers.{l}.bias")
            if bias is not None:
                z = z + bias[:, None, :]
            zs.append(z)
            if l < L - 1:
                h = phi(z)
                hs.append(h)
        return hs, zs

    def extra_repr(self) -> str:  # noqa: D102
        return f"sizes={self.sizes}, activation={self.activation!r}"
