"""The alignment factor μ(θ) of SGD noise (WWS22) and the alignment bound on η*, in Gram form.

With residuals r ∈ ℝ^{nC} (r_{i*C+c} = f_c(x_i) − y_{ic}), K = JJᵀ/n and the ½-square loss,
the per-sample gradient covariance Σ = (1/n) Σ_i ∇ℓ_i∇ℓ_iᵀ − ∇L∇Lᵀ satisfies
Tr(ΣG) = (1/n) rᵀ[n BlkDiag(K²) − K²] r and 2L = ‖r‖²/n, so (WWS22's normalization, μ = 1
for the idealized noise 2L·H)

    μ(θ)  = [n rᵀ BlkDiag(K²) r − rᵀK²r] / (‖r‖² ‖K‖_F²),
    μ_inf = λ_min⁺(n BlkDiag(K²) − K²)/‖K‖_F²   (minimum over r in range K).

BlkDiag keeps the n diagonal C×C blocks. The one-step identity
E L̃_{t+1} ≥ (η²p/2) Tr(ΣH) ≥ η² p μ_inf ‖K‖_F² L̃_t gives the necessary bound

    η* ≤ 1/√(p λ_min⁺(n BlkDiag(K²) − K²)) = 1/(‖K‖_F √(p μ_inf)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dynstab.criteria.gram import GramCoordinates, _as_gram, _coords_and_p, gram_coordinates

__all__ = ["alignment_bound", "alignment_factor", "alignment_infimum"]


def _blkdiag_K2(K: Tensor, outputs: int) -> Tensor:
    """Diagonal C×C blocks of K², shape (n, C, C)."""
    n, C = K.shape[0] // outputs, outputs
    Kr = K.reshape(n, C, n * C)
    return Kr @ Kr.transpose(1, 2)


def alignment_factor(K: Tensor, residuals: Tensor, outputs: int = 1) -> float:
    """Return the alignment factor μ(θ) = [n rᵀBlkDiag(K²)r − rᵀK²r]/(‖r‖²‖K‖_F²).

    Equals Tr(Σ(θ)G(θ))/(2L(θ)‖G(θ)‖_F²) for the ½-square loss at any θ (not only minima).

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, sample-major.
        residuals: r = f(X) − y, shape ``(nC,)`` or ``(n, C)`` (flattened sample-major).
        outputs: Number of outputs C.

    Returns:
        μ ≥ 0 as a float.

    Raises:
        ValueError: If the residuals have the wrong size or are all zero, or K = 0.

    Example:
        >>> alignment_factor(torch.eye(2), torch.tensor([1.0, 0.0]))  # (2·1 − 1)/(1·2)
        0.5
    """
    K = _as_gram(K, outputs)
    r = residuals.detach().reshape(-1).to(torch.float64)
    if r.numel() != K.shape[0]:
        raise ValueError(
            f"residuals must have n*C = {K.shape[0]} entries (sample-major); got shape "
            f"{tuple(residuals.shape)}."
        )
    rr = float(r @ r)
    fro2 = float((K * K).sum())
    if rr == 0.0 or fro2 == 0.0:
        raise ValueError(
            "alignment_factor needs nonzero residuals and K ≠ 0 (μ is 0/0 at an interpolating "
            "point); use alignment_infimum for the worst case."
        )
    n, C = K.shape[0] // outputs, outputs
    Kr = K @ r
    blocks = _blkdiag_K2(K, outputs)
    rb = r.reshape(n, C)
    quad_blk = float(torch.einsum("ic,icd,id->", rb, blocks, rb))
    return (n * quad_blk - float(Kr @ Kr)) / (rr * fro2)


def _lambda_min_plus(K: Tensor, outputs: int, coords: GramCoordinates) -> float:
    n, C, rho = coords.n, outputs, coords.rank
    blocks = _blkdiag_K2(K, outputs)
    Ur = coords.U.reshape(n, C, rho)
    M = n * torch.einsum("icr,icd,ids->rs", Ur, blocks, Ur) - torch.diag(coords.lam**2)
    return max(float(torch.linalg.eigvalsh(0.5 * (M + M.T))[0]), 0.0)


def alignment_infimum(
    K: Tensor, outputs: int = 1, *, coords: GramCoordinates | None = None
) -> float:
    """Return μ_inf = λ_min⁺(n BlkDiag(K²) − K²)/‖K‖_F², the worst alignment over r ∈ range K.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        outputs: Number of outputs C.
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        μ_inf ≥ 0 as a float (0 for K = 0).

    Example:
        >>> alignment_infimum(torch.eye(2))  # λ_min(2I − I)/2
        0.5
    """
    K = _as_gram(K, outputs)
    c = gram_coordinates(K, outputs) if coords is None else coords
    if c.rank == 0:
        return 0.0
    return _lambda_min_plus(K, outputs, c) / float((K * K).sum())


def alignment_bound(
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Return the alignment bound η* ≤ 1/√(p λ_min⁺(n BlkDiag(K²) − K²)) (``inf`` when p = 0).

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        The bound as a float.

    Example:
        >>> alignment_bound(torch.eye(2), 1)  # 1/√(1·1)
        1.0
    """
    K = _as_gram(K, outputs)
    c, p = _coords_and_p(K, outputs, coords, batch_size, sampling)
    if c.rank == 0:
        return math.inf
    lmin = _lambda_min_plus(K, outputs, c)
    return math.inf if p * lmin <= 0 else 1.0 / math.sqrt(p * lmin)
