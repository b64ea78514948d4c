"""Power iteration for the dominant eigenpair of a symmetric operator."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from dynstab._checks import check_int, check_positive
from dynstab._types import LinearOperatorLike
from dynstab.errors import ConvergenceWarning
from dynstab.linalg.lanczos import EigenResult, _start_vector
from dynstab.linalg.operator import as_operator

__all__ = ["power_iteration"]


def power_iteration(
    op: Tensor | LinearOperatorLike,
    *,
    tol: float = 1e-6,
    max_iters: int = 1000,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> EigenResult:
    """Dominant (largest in magnitude) eigenpair of a symmetric operator.

    Iterates ``v ← A v / ‖A v‖`` and stops when the Rayleigh quotient ``θ = vᵀAv`` has
    residual ``‖A v − θ v‖ ≤ tol·|θ|``. Convergence is linear with rate ``|λ₂/λ₁|``; prefer
    :func:`~dynstab.linalg.lanczos_top_eigenpairs`, which needs far fewer products.

    Args:
        op: Symmetric square tensor or operator of shape ``(p, p)``.
        tol: Relative residual tolerance, > 0. Default: ``1e-6``.
        max_iters: Maximum number of products, >= 1. Default: ``1000``.
        v0: Start vector ``(p,)``; ``None`` draws a standard normal vector from ``generator``.
        generator: Random source for the start vector; ``None`` uses torch's default.

    Returns:
        :class:`~dynstab.linalg.EigenResult` with one value (float64, signed), its unit vector
        ``(p, 1)`` and residual (also its ``error_bounds``: an eigenvalue lies within it).
        Costs one product per iteration. Emits
        :class:`~dynstab.errors.ConvergenceWarning` when not converged.

    Raises:
        ValueError: If ``tol``, ``max_iters`` or ``v0`` are invalid.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
        >>> res = power_iteration(A, v0=torch.tensor([1.0, 1.0], dtype=torch.float64), tol=1e-10)
        >>> round(float(res.values[0]), 8), res.converged
        (3.0, True)
    """
    A = as_operator(op)
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    v = _start_vector(A, v0, generator)
    theta = 0.0
    residual = float("inf")
    converged = False
    used = 0
    for _ in range(max_iters):
        w = A @ v
        used += 1
        theta = float(torch.dot(v, w))
        residual = float(torch.linalg.vector_norm(w - theta * v))
        if residual <= tol * abs(theta) or residual == 0.0:
            converged = True
            break
        norm = torch.linalg.vector_norm(w)
        if norm == 0:  # v is in the null space and theta = 0
            converged = True
            break
        v = w / norm
    if not converged:
        warnings.warn(
            f"power iteration did not converge in {used} products: residual {residual:.3g} > "
            f"tol·|θ| = {tol * abs(theta):.3g}. Increase max_iters or use Lanczos.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return EigenResult(
        values=torch.tensor([theta], dtype=torch.float64),
        vectors=v.unsqueeze(1),
        converged=converged,
        num_matvecs=used,
        residuals=torch.tensor([residual], dtype=torch.float64),
        error_bounds=torch.tensor([residual], dtype=torch.float64),
    )
