"""Model-aware curvature: Hessian and Gauss–Newton operators, Jacobians, Gram matrices.

All objects take ``(model, loss_fn, data, params=None)``: ``params`` selects the parameters
(default: those with ``requires_grad=True``; a submodule, names, a predicate or a
``dict[str, Tensor]`` otherwise — see :class:`ParameterSelection`), ``data`` is one batch or a
re-iterable of batches (a ``DataLoader``), streamed, and ``loss_fn`` is the batch mean (½-MSE
convention of :mod:`dynstab.losses`). :class:`CurvatureProblem` holds this set-up once. Models
are never modified.
"""

from dynstab.curvature.batch_products import BatchCurvature, IndexedData
from dynstab.curvature.dense import (
    dense_gauss_newton,
    dense_hessian,
    dense_jacobian,
    dense_output_hessian,
)
from dynstab.curvature.functional import flatten_params, unflatten_like
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.jacobian import JacobianOptions, gram_matrix, per_sample_jacobian
from dynstab.curvature.params import ParameterSelection, select_parameters
from dynstab.curvature.preconditioned import (
    PreconditionedOperator,
    PreconditionedSharpness,
    Preconditioner,
    optimizer_preconditioner,
    preconditioned_sharpness,
)
from dynstab.curvature.problem import CurvatureProblem, DataOptions, Progress

__all__ = [
    "BatchCurvature",
    # operators
    "CurvatureOperator",
    # set-up
    "CurvatureProblem",
    "DataOptions",
    "GaussNewtonOperator",
    "HessianOperator",
    "IndexedData",
    "JacobianOptions",
    "ParameterSelection",
    "PreconditionedOperator",
    "PreconditionedSharpness",
    "Preconditioner",
    "Progress",
    # dense oracles
    "dense_gauss_newton",
    "dense_hessian",
    "dense_jacobian",
    "dense_output_hessian",
    # params
    "flatten_params",
    # jacobians
    "gram_matrix",
    "optimizer_preconditioner",
    "per_sample_jacobian",
    "preconditioned_sharpness",
    "select_parameters",
    "unflatten_like",
]
