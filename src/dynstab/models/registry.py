"""Build a model by name: ``build_model("two_layer_relu", d=100, m=100, generator=g)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dynstab.models.cnn import SmallCNN
from dynstab.models.diagonal_linear import DiagonalLinearNet
from dynstab.models.mlp import MLP
from dynstab.models.two_layer_relu import TwoLayerReLU
from dynstab.models.univariate_relu import UnivariateReLU

__all__ = ["MODELS", "build_model", "list_models"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "diagonal_linear": DiagonalLinearNet,
    "two_layer_relu": TwoLayerReLU,
    "univariate_relu": UnivariateReLU,
    "mlp": MLP,
    "small_cnn": SmallCNN,
}


def list_models() -> list[str]:
    """Return the sorted names accepted by :func:`build_model`."""
    return sorted(MODELS)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Construct the model registered under ``name`` with keyword arguments ``kwargs``.

    Args:
        name: One of :func:`list_models` (``diagonal_linear``, ``two_layer_relu``,
            ``univariate_relu``, ``mlp``, ``small_cnn``).
        **kwargs: Passed to the model's constructor (e.g. ``d``, ``m``, ``generator``).

    Returns:
        The new ``nn.Module``.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the valid names).

    Example:
        >>> build_model("two_layer_relu", d=3, m=2).w.shape
        torch.Size([2, 3])
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}.")
    return MODELS[name](**kwargs)
