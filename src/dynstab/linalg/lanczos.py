"""Extreme eigenpairs of symmetric operators with certified error bounds.

:func:`lanczos_top_eigenpairs` is the public face of the Krylov engine in
:mod:`dynstab.linalg.krylov` (thick-restart block Lanczos with full reorthogonalisation, locking,
and error bounds that hold with a stated probability over the random start vectors); see that
module for the algorithm and exactly what the certificate guarantees.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int
from dynstab._types import LinearOperatorLike
from dynstab.errors import ConvergenceWarning
from dynstab.linalg.krylov import (
    EigenResult,
    KrylovEngine,
    LanczosConfig,
    LanczosProgress,
    orthogonality_loss,
)
from dynstab.linalg.operator import LinearOperator, as_operator

__all__ = ["EigenResult", "LanczosConfig", "LanczosProgress", "lanczos_top_eigenpairs"]


def _start_block(A: LinearOperator, v0: Tensor | None) -> Tensor | None:
    """Validate a user start vector ``(p,)`` or block ``(p, b)``; return it as float64."""
    if v0 is None:
        return None
    p = A.shape[0]
    if not isinstance(v0, Tensor) or v0.ndim not in (1, 2) or v0.shape[0] != p:
        shape = tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__
        raise ValueError(
            f"v0 must be a tensor of shape ({p},) or ({p}, b) (a warm-start block); got {shape}."
        )
    v = v0.detach().to(torch.float64)
    block = v.unsqueeze(1) if v.ndim == 1 else v
    norms = torch.linalg.vector_norm(block, dim=0)
    if not bool(torch.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("v0 must be finite and non-zero; got a zero or non-finite vector.")
    if v.ndim == 2 and int(torch.linalg.matrix_rank(block)) < block.shape[1]:
        raise ValueError(
            f"the columns of v0 must be linearly independent; got a rank-deficient "
            f"({p}, {block.shape[1]}) block. Drop the dependent columns."
        )
    return v


def _certificate(engine: KrylovEngine, reason: str, converged: bool) -> str:
    delta = engine.delta_spent
    parts = []
    if delta > 0:
        parts.append(
            f"With probability >= {1 - delta:.6g} over the random start vectors, every "
            "|value − eigenvalue of the same rank| <= error_bounds (Lanczos-polynomial bound "
            f"of {engine.num_pure} random segment(s); Kuczyński & Woźniakowski 1992)."
        )
    else:
        parts.append(
            "No random Krylov segment bounds the unexplored spectrum (user start or restarted "
            "run): error_bounds are infinite where a missed eigenvalue cannot be excluded."
        )
    parts.append(
        "Deterministically (up to the round-off floor) each value is a Ritz value of an "
        "orthonormal basis, so it never overshoots the eigenvalue of its rank."
    )
    parts.append(
        f"Round-off floor modelled with products accurate to {engine.prod_rtol:.2g}·‖A‖ "
        f"(‖A‖ ≈ {engine.last_norm:.6g})."
    )
    if engine.measured_orthogonality is not None:
        parts.append(
            f"Basis {str(engine.bdt).removeprefix('torch.')}: its measured loss of orthogonality "
            f"‖QᵀQ − I‖₂ = {engine.measured_orthogonality:.2g} is in the bounds."
        )
    if engine.invariant:
        parts.append("A Krylov space became invariant: its Ritz values are exact.")
    parts.append(
        f"{engine.num_matvecs} products, {engine.num_restarts} thick restart(s), stopped: "
        f"{reason}; {'converged' if converged else 'NOT converged'}."
    )
    return " ".join(parts)


def lanczos_top_eigenpairs(
    op: Tensor | LinearOperatorLike,
    k: int = 1,
    *,
    tol: float | None = None,
    max_iters: int | None = None,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    which: str = "largest",
    return_vectors: bool = True,
    criterion: str | None = None,
    config: LanczosConfig | None = None,
    callback: Callable[[LanczosProgress], bool | None] | None = None,
) -> EigenResult:
    """Extreme eigenpairs of a symmetric operator, with certified error bounds.

    Runs the Krylov engine (:mod:`dynstab.linalg.krylov`): Lanczos with full
    reorthogonalisation on a preallocated basis, thick restarts when ``max_basis`` is reached,
    locking of converged Ritz vectors, fresh random vectors after locking (so that repeated
    eigenvalues and the zeros of rank-deficient operators are found) and a certificate from
    the Lanczos polynomial of a random segment. It stops as soon as every wanted value has
    ``error_bound <= tol·|θ|``.

    Guarantee: ``θ_i <= λ_i`` (largest end; ``>=`` at the smallest end) deterministically up to
    round-off, and ``|θ_i − λ_i| <= error_bounds[i]`` with probability at least
    ``1 − failure_probability`` over the random start vectors, where ``λ_i`` is the
    eigenvalue of the same rank. A Krylov method cannot exclude an eigenvalue whose eigenvector
    is (nearly) orthogonal to its start vectors; the probability statement quantifies exactly
    that risk (see :mod:`dynstab.linalg.krylov`).

    Args:
        op: Symmetric square tensor, dynstab or foreign operator, or
            ``scipy.sparse.linalg.LinearOperator``, of shape ``(p, p)``.
        k: Number of eigenpairs wanted at each requested end, 1 <= k <= p. Default: ``1``.
        tol: Relative accuracy, > 0 (``config.tol`` when ``None``; default ``1e-6``).
        max_iters: Budget of operator products, >= 1 (``config.max_iters`` when ``None``;
            default ``100``).
        v0: Warm start: a vector ``(p,)`` or a block ``(p, b)`` of previous eigenvectors;
            ``None`` starts from a random vector drawn from ``generator``. A warm start is
            certified by an extra random segment after its Ritz vectors converged.
        generator: Random source for the start and certification vectors (CPU generator);
            ``None`` uses torch's default generator.
        which: ``"largest"`` (values descending), ``"smallest"`` (ascending) or ``"both"``
            (the ``k`` largest descending, then the ``k`` smallest ascending; fewer when
            ``2k > p``). Default: ``"largest"``.
        return_vectors: Whether to form the Ritz vectors. Default: ``True``.
        criterion: ``"eigenvalue"`` or ``"residual"`` (``config.criterion`` when ``None``);
            see :class:`LanczosConfig`.
        config: Solver settings (:class:`LanczosConfig`); explicit keyword arguments override
            its fields. ``None``: the defaults.
        callback: Called after every block step with a :class:`LanczosProgress`; returning
            ``True`` stops the run (reported as not converged unless already certified).

    Returns:
        :class:`EigenResult`; ``values``, ``residuals`` and ``error_bounds`` are float64,
        ``vectors`` has shape ``(p, len(values))`` in the operator's dtype. Emits
        :class:`~dynstab.errors.ConvergenceWarning` when not converged.

    Raises:
        ValueError: If ``k``, ``tol``, ``max_iters``, ``which``, ``criterion``, the config or
            ``v0`` are invalid.
        TypeError: If ``op`` is not a square operator or ``config`` is not a
            :class:`LanczosConfig`.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> res = lanczos_top_eigenpairs(A, k=2, generator=torch.Generator().manual_seed(0))
        >>> [round(v, 8) for v in res.values.tolist()], res.converged
        ([10.0, 9.0], True)
        >>> bool((res.error_bounds <= 1e-6 * res.values).all())
        True

    References:
        Lanczos (1950); Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 10–11;
        Wu & Simon (2000), SIMAX 22 (thick restart); Kuczyński & Woźniakowski (1992), SIMAX 13;
        Li & Li (2005), Linear Algebra Appl. 395.
    """
    A = as_operator(op)
    if config is None:
        config = LanczosConfig()
    elif not isinstance(config, LanczosConfig):
        raise TypeError(f"config must be a LanczosConfig; got {type(config).__name__}.")
    overrides: dict[str, object] = {}
    if tol is not None:
        overrides["tol"] = tol
    if max_iters is not None:
        overrides["max_iters"] = max_iters
    if criterion is not None:
        overrides["criterion"] = criterion
    if overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    check_int("k", k, minimum=1)
    check_choice("which", which, ("largest", "smallest", "both"))
    p = A.shape[0]
    if k > p:
        raise ValueError(f"k must be <= the operator size {p}; got k={k}.")
    start = _start_block(A, v0)
    engine = KrylovEngine(A, k, which, config, v0=start, generator=generator, callback=callback)
    ans, reason = engine.run()
    vectors = None
    polishable = ans.mode in ("segment", "locked") and (
        engine.num_matvecs + ans.values.numel() <= engine.cfg.max_iters
    )
    if reason == "polish" or (reason == "round-off floor" and polishable):
        ans, Y = engine.polish(ans)
        if ans.certified:
            reason = "certified after recomputing the products of the vectors"
        vectors = Y if return_vectors else None
    else:
        # the bounds assumed the modelled loss of orthogonality; a float32 basis's is measured
        eps_orth = engine.modelled_orthogonality
        if engine.bdt != torch.float64:
            engine.measured_orthogonality = engine.basis_orthogonality()
            eps_orth = max(eps_orth, engine.measured_orthogonality)
        if return_vectors and ans.values.numel():
            Y = engine.vectors(ans)
            eps_orth = max(eps_orth, orthogonality_loss(Y.T))
            vectors = Y
        if vectors is not None or engine.bdt != torch.float64:
            was = ans.certified
            ans = engine.reassess(eps_orth)
            if was and not ans.certified:
                reason = "measured loss of orthogonality of the basis"
    converged = ans.certified
    if not converged:
        warnings.warn(
            f"Lanczos did not certify {which} k={k} to tol={config.tol:g}: error bounds "
            f"{[float(f'{b:.3g}') for b in ans.bounds.tolist()]} after {engine.num_matvecs} "
            f"products (max_iters={config.max_iters}, stopped: {reason}). Increase max_iters "
            "or max_basis, or loosen tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return EigenResult(
        values=ans.values.clone(),
        vectors=vectors,
        converged=converged,
        num_matvecs=engine.num_matvecs,
        residuals=ans.residuals.clone(),
        error_bounds=ans.bounds.clone(),
        invariant_subspace=engine.invariant,
        num_restarts=engine.num_restarts,
        certificate=_certificate(engine, reason, converged),
        failure_probability=engine.delta_spent,
    )
