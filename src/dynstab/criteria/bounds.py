"""Cheap necessary bounds on η* and the WME18 sufficient learning rate: one-call forms.

All functions take the Gram matrix K = JJᵀ/n (shape ``(nC, nC)``, sample-major, ½-square loss
at an interpolating minimum, H = JᵀJ/n, H_i = J_iᵀJ_i) plus the batch size and sampling scheme,
and return an η value. Each is a thin wrapper of the method of the same name of
:class:`~dynstab.criteria.StabilityProblem` (build the problem once to query several B or
samplings). With λ = λ_max(K), p the mixture weight and q = p + (1 − p)/n:

===========  =======================================================  ====================
name         η* ≤ …                                                   source
===========  =======================================================  ====================
GD / mean    2/λ                                                       MM23 Thm 1
MM23 (15)    2/(λ(1 + p(n Σ_i ‖u_i‖⁴ − 1))), u top unit eigvec of K   MM23 eq. (15)
MM23 (16)    2 Tr K / ((1 − p)‖K‖_F² + p n Σ_i ‖K_ii‖_F²)             MM23 eq. (16)
trace        2C/(q Tr K)   (C = 1: Tr H ≤ 2/(qη))                     Wu & Su Thm 3.3
Frobenius    2√C/(√q ‖K‖_F) (C = 1: ‖H‖_F ≤ 2/(η√q))                 (16), Cauchy–Schwarz
rank-one     2/max_{‖v‖=1} F(v)                                        MM23 eq. (24)
alignment    1/√(p λ_min⁺(n BlkDiag(K²) − K²))                         WWS22 alignment
===========  =======================================================  ====================

MM23 = Mulayoff & Michaeli (COLT 2024); Wu & Su (ICML 2023); WWS22 = Wu, Wang & Su (NeurIPS
2022). K_ii is the C×C diagonal block of sample i and u_i the matching C entries of u. For C > 1
the trace and Frobenius bounds carry the factor C (√C) because H_i has rank ≤ C:
(1/n) Σ_i ‖H_i‖_F² ≥ (Tr H)²/C. Wu, Ma & E (NeurIPS 2018)'s condition
λ_max((I − ηH)² + η²pΣ) ≤ 1 is *sufficient*, so :func:`wme18_sufficient_lr` ≤ η*.

Every function validates K once (symmetric, finite, PSD within 1e-6·‖K‖₂): a K that is not a
Gram matrix (e.g. −I) is refused with a ValueError.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynstab.criteria._docs import criteria_docs
from dynstab.criteria.gram import GramCoordinates
from dynstab.criteria.problem import StabilityProblem, _gram_bound
from dynstab.criteria.results import RankOneBoundResult

__all__ = [
    "RankOneBoundResult",
    "frobenius_bound",
    "gd_bound",
    "mm23_bound_15",
    "mm23_bound_16",
    "rank_one_bound",
    "trace_bound",
    "wme18_sufficient_lr",
]


@criteria_docs
def gd_bound(K: Tensor, *, outputs: int = 1) -> float:  # noqa: D417
    """Return 2/λ_max(K), the GD threshold and a necessary bound on η* for every B.

    Args:
        %(K)s
        %(outputs)s

    Returns:
        2/λ_max(K) as a float.

    Raises:
        ValueError: If K is not a symmetric PSD matrix with finite entries.

    Example:
        >>> gd_bound(torch.diag(torch.tensor([4.0, 1.0])))
        0.5
    """
    return StabilityProblem.from_gram(K, outputs).gd_bound()


@criteria_docs
def trace_bound(K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1) -> float:  # noqa: D417
    """Return the trace bound η* ≤ 2C/(q Tr K) (Wu & Su 2023, Thm 3.3; Tr H ≤ 2/η for B = C = 1).

    Args:
        %(gram_bound_args)s

    Returns:
        The bound as a float (``inf`` for K = 0).

    Raises:
        ValueError: On a bad K (e.g. not PSD), batch size or sampling.

    Example:
        >>> trace_bound(torch.eye(4), 1)  # orthogonal equal-norm samples: tight, = η*
        0.5
    """
    return _gram_bound(StabilityProblem.trace_bound, K, batch_size, sampling, outputs)


@criteria_docs
def frobenius_bound(  # noqa: D417
    K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1
) -> float:
    """Return the Frobenius bound η* ≤ 2√C/(√q ‖K‖_F), i.e. ‖H‖_F ≤ 2/(η√q) ≈ 2√B/η for C = 1.

    Args:
        %(gram_bound_args)s

    Returns:
        The bound as a float.

    Example:
        >>> frobenius_bound(torch.eye(4), 1)
        1.0
    """
    return _gram_bound(StabilityProblem.frobenius_bound, K, batch_size, sampling, outputs)


@criteria_docs
def mm23_bound_16(K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1) -> float:  # noqa: D417
    """Return Mulayoff & Michaeli (2024) eq. (16): η* ≤ 2 Tr K/((1 − p)‖K‖_F² + p n Σ_i ‖K_ii‖_F²).

    Args:
        %(gram_bound_args)s

    Returns:
        The bound as a float.

    Example:
        >>> mm23_bound_16(torch.eye(4), 1)
        0.5
    """
    return _gram_bound(StabilityProblem.mm23_bound_16, K, batch_size, sampling, outputs)


@criteria_docs
def mm23_bound_15(  # noqa: D417
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Return Mulayoff & Michaeli (2024) eq. (15) in Gram form: η* ≤ 2/(λ(1 + p(n Σ_i ‖u_i‖⁴ − 1))).

    Args:
        %(gram_bound_args)s
        %(coords)s

    Returns:
        The bound as a float.

    Example:
        >>> round(mm23_bound_15(torch.eye(4), 1), 12)  # u = e_1: 2/(1·(1 + 4 − 1))
        0.5
    """
    return _gram_bound(StabilityProblem.mm23_bound_15, K, batch_size, sampling, outputs, coords)


@criteria_docs
def rank_one_bound(  # noqa: D417
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    num_restarts: int = 8,
    num_iters: int = 500,
    tol: float = 1e-12,
    generator: torch.Generator | None = None,
    coords: GramCoordinates | None = None,
) -> RankOneBoundResult:
    """Maximise Mulayoff & Michaeli (2024)'s rank-one functional (eq. 24); the implied bound on η*.

    See :meth:`StabilityProblem.rank_one_bound` for the method.

    Args:
        %(gram_bound_args)s
        num_restarts: Number of starting points, >= 1.
        num_iters: Maximum ascent iterations per restart.
        tol: Stop a restart when its relative improvement falls below ``tol`` for 10 steps.
        generator: Random source for the restarts.
        %(coords)s

    Returns:
        :class:`RankOneBoundResult`; non-convergence also warns
        :class:`~dynstab.errors.ConvergenceWarning`.

    Example:
        >>> rank_one_bound(torch.eye(4), 1).eta_bound  # orthogonal samples: F = λ + p(n−1)λ
        0.5
    """
    prob = StabilityProblem.from_gram(K, outputs, coordinates=coords)
    return prob.rank_one_bound(
        prob.sampling(batch_size, sampling),
        num_restarts=num_restarts,
        num_iters=num_iters,
        tol=tol,
        generator=generator,
    )


@criteria_docs
def wme18_sufficient_lr(  # noqa: D417
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Largest η satisfying Wu, Ma & E (2018)'s sufficient condition λ_max((I − ηH)² + η²pΣ) ≤ 1.

    See :meth:`StabilityProblem.wme18_sufficient_lr` for the closed form.

    Args:
        %(gram_bound_args)s
        %(coords)s

    Returns:
        η_WME as a float; equals 2/λ_max for GD and η* in 1-D.

    Example:
        >>> g = torch.tensor([[0.2], [3.8]], dtype=torch.float64).sqrt()  # 1-D, n = 2 (WME18 toy)
        >>> round(wme18_sufficient_lr(g @ g.T / 2, 1), 4)  # = η* = 2a/(a² + p s²)
        0.5525
    """
    return _gram_bound(
        StabilityProblem.wme18_sufficient_lr, K, batch_size, sampling, outputs, coords
    )
