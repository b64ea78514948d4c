"""Plain ``nn.Module`` models used by dynstab's experiments.

All models are float64-friendly (``dtype=``), draw their initialization from an explicit
``generator`` (torch's global RNG is never consumed) and return outputs of shape ``(n,)`` when
they have a single output. The paper models (:class:`DiagonalLinearNet`, :class:`TwoLayerReLU`,
:class:`UnivariateReLU`, :class:`MLP`) also give their ½-MSE gradient in closed form for many
stacked runs at once (:class:`ClosedFormModel`), which the training engine uses. Closed forms of
their curvature live in :mod:`dynstab.norms` and :mod:`dynstab.function_space`.
"""

from dynstab.models.closed_form import ClosedFormModel
from dynstab.models.cnn import SmallCNN
from dynstab.models.diagonal_linear import DiagonalLinearNet
from dynstab.models.mlp import MLP
from dynstab.models.registry import MODELS, build_model, list_models
from dynstab.models.two_layer_relu import TwoLayerReLU
from dynstab.models.univariate_relu import UnivariateReLU

__all__ = [
    "MLP",
    "MODELS",
    "ClosedFormModel",
    "DiagonalLinearNet",
    "SmallCNN",
    "TwoLayerReLU",
    "UnivariateReLU",
    "build_model",
    "list_models",
]
