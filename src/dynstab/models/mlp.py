"""Fully connected networks (C21's ``fc-*`` workloads): plain MLPs with tanh/ReLU/... ."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab.models._init import fan_in_bound, resolve_dtype, uniform

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": nn.functional.elu,
    "softplus": nn.functional.softplus,
    "hardtanh": nn.functional.hardtanh,
}


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

    def extra_repr(self) -> str:  # noqa: D102
        return f"sizes={self.sizes}, activation={self.activation!r}"
