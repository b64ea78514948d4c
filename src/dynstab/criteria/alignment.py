"""The alignment factor μ(θ) of SGD noise and the alignment bound on η*: one-call forms.

Wu, Wang & Su (NeurIPS 2022). With residuals r ∈ ℝ^{nC} (r_{i*C+c} = f_c(x_i) − y_{ic}),
K = JJᵀ/n and the ½-square loss, the per-sample gradient covariance
Σ = (1/n) Σ_i ∇ℓ_i∇ℓ_iᵀ − ∇L∇Lᵀ satisfies Tr(ΣG) = (1/n) rᵀ[n BlkDiag(K²) − K²] r and
2L = ‖r‖²/n, so (their normalization, μ = 1 for the idealized noise 2L·H)

    μ(θ)  = [n rᵀ BlkDiag(K²) r − rᵀK²r] / (‖r‖² ‖K‖_F²),
    μ_inf = λ_min⁺(n BlkDiag(K²) − K²)/‖K‖_F²   (minimum over r in range K).

BlkDiag keeps the n diagonal C×C blocks. The one-step identity
E L̃_{t+1} ≥ (η²p/2) Tr(ΣH) ≥ η² p μ_inf ‖K‖_F² L̃_t gives the necessary bound

    η* ≤ 1/√(p λ_min⁺(n BlkDiag(K²) − K²)) = 1/(‖K‖_F √(p μ_inf)).

Each function is a thin wrapper of the :class:`~dynstab.criteria.StabilityProblem` method of the
same name.
"""

from __future__ import annotations

from torch import Tensor

from dynstab.criteria._docs import criteria_docs
from dynstab.criteria.gram import GramCoordinates
from dynstab.criteria.problem import StabilityProblem, _gram_bound

__all__ = ["alignment_bound", "alignment_factor", "alignment_infimum"]


def alignment_factor(K: Tensor, residuals: Tensor, outputs: int = 1) -> float:
    """Return the alignment factor μ(θ) = [n rᵀBlkDiag(K²)r − rᵀK²r]/(‖r‖²‖K‖_F²).

    Equals Tr(Σ(θ)G(θ))/(2L(θ)‖G(θ)‖_F²) for the ½-square loss at any θ (not only minima).

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, sample-major.
        residuals: r = f(X) − y, shape ``(nC,)`` or ``(n, C)`` (flattened sample-major); a
            Tensor or a NumPy array.
        outputs: Number of outputs C.

    Returns:
        μ ≥ 0 as a float.

    Raises:
        ValueError: If the residuals have the wrong size, are not finite or all zero, or K = 0
            or K is not a symmetric PSD matrix.
        TypeError: If the residuals are neither a Tensor nor a NumPy array.

    Example:
        >>> import torch
        >>> round(alignment_factor(torch.eye(2), torch.tensor([1.0, 0.0])), 12)  # (2 − 1)/2
        0.5
    """
    return StabilityProblem.from_gram(K, outputs).alignment_factor(residuals)


@criteria_docs
def alignment_infimum(  # noqa: D417
    K: Tensor, outputs: int = 1, *, coords: GramCoordinates | None = None
) -> float:
    """Return μ_inf = λ_min⁺(n BlkDiag(K²) − K²)/‖K‖_F², the worst alignment over r ∈ range K.

    Args:
        %(K)s
        %(outputs)s
        %(coords)s

    Returns:
        μ_inf ≥ 0 as a float (0 for K = 0).

    Example:
        >>> import torch
        >>> round(alignment_infimum(torch.eye(2)), 12)  # λ_min(2I − I)/2
        0.5
    """
    return StabilityProblem.from_gram(K, outputs, coordinates=coords).alignment_infimum()


@criteria_docs
def alignment_bound(  # noqa: D417
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Return the alignment bound η* ≤ 1/√(p λ_min⁺(n BlkDiag(K²) − K²)) (``inf`` when p = 0).

    Args:
        %(gram_bound_args)s
        %(coords)s

    Returns:
        The bound as a float.

    Example:
        >>> import torch
        >>> round(alignment_bound(torch.eye(2), 1), 12)  # 1/√(1·1)
        1.0
    """
    return _gram_bound(StabilityProblem.alignment_bound, K, batch_size, sampling, outputs, coords)
