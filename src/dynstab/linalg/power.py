"""Power iteration for the dominant eigenpair of a symmetric operator (a baseline).

Power iteration is kept as the baseline other tools use (PyHessian, for instance). Its value is
the Rayleigh quotient ``θ = vᵀAv`` of the normalised iterate; its certificate is the one the
Krylov engine uses (:mod:`dynstab.linalg.krylov`) with the polynomial ``t^m``: the iterate after
``m`` products is ``A^m v_0/‖A^m v_0‖``, so the dominant eigenvector ``u`` satisfies
``|λ|^m·|uᵀv_0| <= ‖A^m v_0‖ = Π_i ‖A v_{i−1}‖``. A uniformly random ``v_0`` has
``|uᵀv_0| >= γ_min`` except with probability ``failure_probability``, hence

    |θ| <= ρ(A) <= (Π_i ‖A v_{i−1}‖ / γ_min)^{1/m}

(the a-posteriori form of Kuczyński & Woźniakowski 1992, Theorem 3.1). The gap shrinks only
like ``log(n/δ)/m``: power iteration cannot certify tight tolerances in few products — use
:func:`~dynstab.linalg.lanczos_top_eigenpairs` for certified values.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from dynstab._checks import check_int, check_positive
from dynstab._types import LinearOperatorLike
from dynstab.errors import ConvergenceWarning
from dynstab.linalg.krylov import EigenResult, random_unit, small_ball_constant
from dynstab.linalg.operator import as_operator

__all__ = ["power_iteration"]


def power_iteration(
    op: Tensor | LinearOperatorLike,
    *,
    tol: float = 1e-6,
    max_iters: int = 1000,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    failure_probability: float = 1e-3,
) -> EigenResult:
    """Dominant (largest in magnitude) eigenpair of a symmetric operator by power iteration.

    Iterates ``v ← A v / ‖A v‖`` and stops when the certified bound on the spectral radius
    (module docstring) is within ``tol·|θ|`` of ``|θ|``. Convergence is linear with rate
    ``|λ₂/λ₁|`` and the certificate tightens like ``log(p/δ)/m``; prefer
    :func:`~dynstab.linalg.lanczos_top_eigenpairs`, which needs far fewer products.

    Args:
        op: Symmetric square tensor or operator of shape ``(p, p)``.
        tol: Relative tolerance on the certified bound, > 0. Default: ``1e-6``.
        max_iters: Maximum number of products, >= 1. Default: ``1000``.
        v0: Start vector ``(p,)``; ``None`` draws a uniformly random unit vector from
            ``generator``. A user start vector gives no certificate (``error_bounds = inf``).
        generator: Random source for the start vector; ``None`` uses torch's default.
        failure_probability: ``δ`` in (0, 1) of the certificate. Default: ``1e-3``.

    Returns:
        :class:`~dynstab.linalg.EigenResult` with one value ``θ`` (float64, signed), its unit
        vector ``(p, 1)``, its residual ``‖Av − θv‖`` and ``error_bounds`` bounding
        ``ρ(A) − |θ| >= 0`` (``ρ`` the spectral radius) with probability at least
        ``1 − failure_probability``. Costs one product per iteration. Emits
        :class:`~dynstab.errors.ConvergenceWarning` when not converged.

    Raises:
        ValueError: If ``tol``, ``max_iters``, ``failure_probability`` or ``v0`` are invalid.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64))
        >>> res = power_iteration(A, tol=0.2, generator=torch.Generator().manual_seed(0))
        >>> round(float(res.values[0]), 6), res.converged
        (3.0, True)

    References:
        Kuczyński & Woźniakowski (1992), SIAM J. Matrix Anal. Appl. 13(4), Theorem 3.1.
    """
    A = as_operator(op)
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    delta = check_positive("failure_probability", failure_probability)
    if delta >= 1.0:
        raise ValueError(f"failure_probability must be in (0, 1); got {delta}.")
    p = A.shape[0]
    certified_start = v0 is None
    if v0 is None:
        v = random_unit(p, generator, dtype=A.dtype, device=A.device)
    else:
        if not isinstance(v0, Tensor) or v0.shape != (p,):
            shape = tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__
            raise ValueError(f"v0 must be a tensor of shape ({p},); got {shape}.")
        norm0 = torch.linalg.vector_norm(v0.detach().to(torch.float64))
        if not (torch.isfinite(norm0) and norm0 > 0):
            raise ValueError("v0 must be finite and non-zero; got a zero or non-finite vector.")
        v = (v0.detach().to(torch.float64) / norm0).to(dtype=A.dtype, device=A.device)
    log_gamma = math.log(delta / small_ball_constant(p))
    prod_rtol = 4.0 * float(torch.finfo(A.dtype).eps)
    theta, residual, bound = 0.0, math.inf, math.inf
    log_norms = 0.0
    converged = False
    used = 0
    for _ in range(max_iters):
        w = A @ v
        used += 1
        w64 = w.to(torch.float64)
        v64 = v.to(torch.float64)
        theta = float(torch.dot(v64, w64))
        residual = float(torch.linalg.vector_norm(w64 - theta * v64))
        norm = float(torch.linalg.vector_norm(w64))
        floor = 4.0 * prod_rtol * max(norm, abs(theta))
        if norm == 0.0:  # v is in the null space: A v = 0 exactly
            bound = 0.0 if p == 1 else math.inf
            if certified_start:
                bound = floor  # a random start in the null space means A = 0 (w.p. 1)
            converged = bound <= tol * max(abs(theta), floor)
            break
        log_norms += math.log(norm)
        if certified_start:
            radius = math.exp((log_norms - log_gamma) / used)
            bound = max(radius - abs(theta), 0.0) + floor
        if bound <= tol * abs(theta):
            converged = True
            break
        v = (w64 / norm).to(A.dtype)
    if not converged:
        warnings.warn(
            f"power iteration did not certify tol={tol:g} in {used} products: bound "
            f"{bound:.3g} on ρ(A) − |θ| (|θ| = {abs(theta):.6g}). Increase max_iters or use "
            "lanczos_top_eigenpairs.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return EigenResult(
        values=torch.tensor([theta], dtype=torch.float64),
        vectors=v.unsqueeze(1),
        converged=converged,
        num_matvecs=used,
        residuals=torch.tensor([residual], dtype=torch.float64),
        error_bounds=torch.tensor([bound], dtype=torch.float64),
        certificate=(
            f"With probability >= {1 - delta:.6g} over the random start, the spectral radius "
            f"lies in [|θ|, |θ| + error_bound] (power-iteration polynomial t^m)."
            if certified_start
            else "User start vector: no certificate on the spectral radius."
        ),
        failure_probability=delta if certified_start else 0.0,
    )
