"""C21's small CNN: two 3×3 conv layers (32 channels, padding 1) with pooling, then linear."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab.models._init import fan_in_bound, resolve_dtype, uniform
from dynstab.models.mlp import ACTIVATIONS, seeded_linear

__all__ = ["SmallCNN"]

_POOLS = ("max", "avg")


def _seeded_conv(
    dims: int,
    in_ch: int,
    out_ch: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> nn.Module:
    cls: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv1d if dims == 1 else nn.Conv2d
    conv = torch.nn.utils.skip_init(cls, in_ch, out_ch, 3, padding=1, dtype=dtype)
    bound = fan_in_bound(in_ch * 3**dims)
    with torch.no_grad():
        conv.weight.copy_(uniform(tuple(conv.weight.shape), bound, generator, dtype))
        conv.bias.copy_(uniform((out_ch,), bound, generator, dtype))
    return conv


class SmallCNN(nn.Module):
    """Two-conv-layer network of Cohen et al. (2021) (``cnn-*`` / ``cnn-avgpool-*``), no BatchNorm.

    Architecture: [conv 3×3 (padding 1, bias) → activation → 2×2 pool] × 2 → flatten → linear.
    ``in_shape = (C, L)`` builds 1-D convolutions (e.g. mnist1d: ``(1, 40)``);
    ``in_shape = (C, H, W)`` builds 2-D ones (CIFAR-10: ``(3, 32, 32)``, digits ``(1, 8, 8)``).
    Inputs of shape ``(n, prod(in_shape))`` (flat) are reshaped to ``(n, *in_shape)``.
    Weights use PyTorch's default Unif[±1/√fan_in] drawn from ``generator``. Parameters:
    ``conv1.*``, ``conv2.*``, ``fc.*``.

    Args:
        in_shape: ``(C, L)`` or ``(C, H, W)``; every spatial size >= 4.
        num_classes: Output size, >= 1; 1 gives outputs of shape ``(n,)``.
        channels: Channels of both conv layers (32 in C21).
        activation: ``"relu"``, ``"tanh"``, ``"elu"``, ``"softplus"`` or ``"hardtanh"``.
        pool: ``"max"`` or ``"avg"`` (2×2, stride 2).
        generator: Random source for the initialization.
        dtype: Parameter dtype; None uses torch's default dtype.

    Raises:
        ValueError: If ``in_shape`` is not 2- or 3-dimensional with spatial sizes >= 4, or
            an option is unknown.

    Example:
        >>> net = SmallCNN((1, 40), 10, generator=torch.Generator().manual_seed(0))
        >>> net(torch.randn(2, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        *,
        channels: int = 32,
        activation: str = "relu",
        pool: str = "max",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in in_shape)
        if len(shape) not in (2, 3) or shape[0] < 1 or min(shape[1:]) < 4:
            raise ValueError(
                "in_shape must be (C, L) for 1-D or (C, H, W) for 2-D inputs with spatial sizes "
                f">= 4; got {tuple(in_shape)}. E.g. (1, 40) for mnist1d, (3, 32, 32) for CIFAR-10."
            )
        self.in_shape = shape
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.pool = check_choice("pool", pool, _POOLS)
        dims = len(shape) - 1
        dt = resolve_dtype(dtype)
        self.conv1 = _seeded_conv(dims, shape[0], channels, generator, dt)
        self.conv2 = _seeded_conv(dims, channels, channels, generator, dt)
        out_spatial = math.prod(s // 4 for s in shape[1:])
        self.fc = seeded_linear(channels * out_spatial, num_classes, True, generator, dt)
        if dims == 1:
            self._pool: nn.Module = nn.MaxPool1d(2) if pool == "max" else nn.AvgPool1d(2)
        else:
            self._pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``(n, *in_shape)`` or flat ``(n, prod(in_shape))`` inputs."""
        if tuple(x.shape[1:]) != self.in_shape:
            if x[0].numel() != math.prod(self.in_shape):
                raise ValueError(
                    f"SmallCNN expects inputs of shape (n, *{self.in_shape}) or "
                    f"(n, {math.prod(self.in_shape)}); got {tuple(x.shape)}."
                )
            x = x.reshape(x.shape[0], *self.in_shape)
        phi = ACTIVATIONS[self.activation]
        h = self._pool(phi(self.conv1(x)))
        h = self._pool(phi(self.conv2(h)))
        out = self.fc(h.flatten(1))
        return out[:, 0] if self.num_classes == 1 else out

    def extra_repr(self) -> str:  # noqa: D102
        return f"in_shape={self.in_shape}, num_classes={self.num_classes}, pool={self.pool!r}"
