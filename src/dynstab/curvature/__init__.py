"""Model-aware curvature: Hessian and Gauss–Newton operators, Jacobians, Gram matrices.

All objects take ``(model, loss_fn, data, params=None)`` with ``params`` a
``dict[str, Tensor]`` keyed like ``model.named_parameters()`` and ``loss_fn`` the batch mean
(½-MSE convention of :mod:`dynstab.losses`). Models are never modified.
"""

from dynstab.curvature.dense import (
    dense_gauss_newton,
    dense_hessian,
    dense_jacobian,
    dense_output_hessian,
)
from dynstab.curvature.functional import flatten_params, unflatten_like
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.jacobian import gram_matrix, per_sample_jacobian

__all__ = [
    # operators
    "CurvatureOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    # dense oracles
    "dense_gauss_newton",
    "dense_hessian",
    "dense_jacobian",
    "dense_output_hessian",
    # params
    "flatten_params",
    # jacobians
    "gram_matrix",
    "per_sample_jacobian",
    "unflatten_like",
]
