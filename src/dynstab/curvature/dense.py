"""Exact dense curvature matrices: oracles for small models and for the tests.

* :func:`dense_hessian` materialises ``H`` from batched Hessian-vector products against
  identity columns (``p`` products), *not* from :func:`torch.func.hessian`.
* :func:`dense_gauss_newton` builds ``G = Σ_b (n_b/n) J_bᵀ M_b J_b`` from explicit per-sample
  Jacobians and the dense output-space loss Hessian ``M_b`` — an independent route from the
  matrix-free :class:`~dynstab.curvature.GaussNewtonOperator`.
* :func:`dense_jacobian` stacks per-sample Jacobians sample-major, shape ``(n*C, p)``.

Memory is ``O(p²)``; intended for ``p`` up to a few thousand.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor, nn

from dynstab._types import Data, LossFn, ParamSpec
from dynstab.curvature.hessian import HessianOperator
from dynstab.curvature.jacobian import batch_jacobian, per_sample_jacobian
from dynstab.curvature.problem import CurvatureProblem, DataOptions

__all__ = ["dense_gauss_newton", "dense_hessian", "dense_jacobian", "dense_output_hessian"]


def dense_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    params: ParamSpec = None,
    *,
    chunk_size: int = 64,
    **options: Unpack[DataOptions],
) -> Tensor:
    """Dense loss Hessian ``H = ∇²_θ L`` from ``p`` Hessian-vector products.

    Args:
        model: The network (never modified).
        loss_fn: Batch-mean loss.
        data: One batch or an iterable of batches (weighted ``n_b/n``, streamed).
        params: Parameter selection (default: the parameters with ``requires_grad=True``;
            see :mod:`dynstab.curvature.params`).
        chunk_size: Identity columns per block product. Default: ``64``.
        **options: How the data are read and the model called
            (:class:`~dynstab.curvature.DataOptions`).

    Returns:
        Tensor ``(p, p)`` in the parameters' dtype (symmetric up to rounding).

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> X = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
        >>> dense_hessian(model, half_mse, (X, torch.zeros(2, dtype=torch.float64))).item()
        5.0
    """
    return HessianOperator(model, loss_fn, data, params, **options).to_dense(chunk_size=chunk_size)


def dense_output_hessian(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """Dense Hessian ``M = ∇²_F loss_fn(F, targets)`` w.r.t. the flattened outputs.

    Args:
        loss_fn: Batch-mean loss.
        outputs: Outputs ``(n, …)``; flattened sample-major to ``n*C`` entries.
        targets: Targets for ``loss_fn``.

    Returns:
        Tensor ``(n*C, n*C)`` in the outputs' dtype.

    Example:
        >>> from dynstab.losses import half_mse
        >>> dense_output_hessian(half_mse, torch.zeros(2, 1), torch.ones(2, 1)).tolist()
        [[0.5, 0.0], [0.0, 0.5]]
    """
    o = outputs.detach().reshape(-1).clone().requires_grad_(True)
    loss = loss_fn(o.reshape(outputs.shape), targets)
    (g,) = torch.autograd.grad(loss, o, create_graph=True)
    m = o.numel()
    rows = []
    for i in range(m):
        if not g.requires_grad:
            rows.append(torch.zeros_like(o))
            continue
        (r,) = torch.autograd.grad(g[i], o, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(o) if r is None else r)
    return torch.stack(rows)


def dense_jacobian(
    model: nn.Module,
    inputs: Tensor | Data | object,
    params: ParamSpec = None,
    **options: Unpack[DataOptions],
) -> Tensor:
    """Stacked per-sample Jacobian ``J`` of shape ``(n*C, p)``, row ``i*C + c``.

    Arguments as :func:`~dynstab.curvature.per_sample_jacobian`.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> X = torch.randn(3, 2)
        >>> torch.equal(dense_jacobian(model, X), X)  # linear model: J = X
        True
    """
    J = per_sample_jacobian(model, inputs, params, **options)
    return J.reshape(-1, J.shape[-1])


def dense_gauss_newton(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    params: ParamSpec = None,
    **options: Unpack[DataOptions],
) -> Tensor:
    """Dense generalised Gauss–Newton matrix ``G = Σ_b (n_b/n) J_bᵀ M_b J_b``.

    Built from explicit per-sample Jacobians and the dense output-space loss Hessian ``M_b``
    (a route independent of :class:`~dynstab.curvature.GaussNewtonOperator`). Under ½-MSE
    ``M_b = I/n_b`` and ``G = JᵀJ/n``.

    Args:
        model: The network (never modified).
        loss_fn: Batch-mean loss, twice differentiable in the outputs.
        data: One batch or an iterable of batches (weighted ``n_b/n``, streamed).
        params: Parameter selection (default: the parameters with ``requires_grad=True``).
        **options: How the data are read and the model called
            (:class:`~dynstab.curvature.DataOptions`).

    Returns:
        Symmetric tensor ``(p, p)`` in the parameters' dtype.

    Example:
        Cross-entropy at zero logits: M = diag(p) − ppᵀ with p = (½, ½), and J = I here.

        >>> from dynstab.losses import cross_entropy
        >>> model = torch.nn.Linear(1, 2, bias=False).double()
        >>> _ = torch.nn.init.zeros_(model.weight)
        >>> X = torch.ones(1, 1, dtype=torch.float64)
        >>> dense_gauss_newton(model, cross_entropy, (X, torch.tensor([0]))).tolist()
        [[0.25, -0.25], [-0.25, 0.25]]
    """
    problem = CurvatureProblem(model, loss_fn, data, params, who="dense_gauss_newton", **options)
    problem.scan()
    names = list(problem.selection.names)
    p = problem.selection.numel
    G = torch.zeros(p, p, dtype=problem.dtype, device=problem.device)
    with problem.evaluation():
        for _, inputs, targets, w in problem.batches():
            assert targets is not None
            with torch.no_grad():
                out, _ = problem.batch_loss(problem.point, inputs, targets)
            jac = batch_jacobian(problem, inputs, names, None)
            J = torch.cat([jac[k] for k in names], dim=2).reshape(-1, p)
            M = dense_output_hessian(loss_fn, out, targets)
            G += w * (J.T @ M @ J)
    return G
