"""Cheap necessary bounds on η* and the WME18 sufficient learning rate, in Gram form.

All functions take the Gram matrix K = JJᵀ/n (shape ``(nC, nC)``, sample-major, ½-square loss
at an interpolating minimum, H = JᵀJ/n, H_i = J_iᵀJ_i) plus the batch size and sampling scheme,
and return an η value. With λ = λ_max(K), p the mixture weight and q = p + (1 − p)/n:

=========================  =======================================================  ===========
name                       η* ≤ …                                                   source
=========================  =======================================================  ===========
GD / mean                  2/λ                                                       MM23 Thm 1
MM23 (15)                  2/(λ(1 + p(n Σ_i ‖u_i‖⁴ − 1))), u top unit eigvec of K   MM23 Prop 3
MM23 (16)                  2 Tr K / ((1 − p)‖K‖_F² + p n Σ_i ‖K_ii‖_F²)             MM23 Prop 3
trace (Wu–Su R1)           2C/(q Tr K)   (C = 1: Tr H ≤ 2/(qη))                     (16)+Jensen
Frobenius (R2)             2√C/(√q ‖K‖_F) (C = 1: ‖H‖_F ≤ 2/(η√q))                 (16)+trace
rank-one (MM23 eq. 24)     2/max_{‖v‖=1} F(v)                                        MM23 (24)
alignment (WWS22 type)     1/√(p λ_min⁺(n BlkDiag(K²) − K²))                         §2.3
=========================  =======================================================  ===========

K_ii is the C×C diagonal block of sample i and u_i the matching C entries of u. For C > 1 the
trace and Frobenius bounds carry the factor C (√C) because H_i has rank ≤ C:
(1/n) Σ_i ‖H_i‖_F² ≥ (Tr H)²/C. WME18's condition λ_max((I − ηH)² + η²pΣ_WME) ≤ 1 is
*sufficient*, so :func:`wme18_sufficient_lr` ≤ η*.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_int, check_positive
from dynstab.criteria.gram import GramCoordinates, _as_gram, _coords_and_p, gd_threshold
from dynstab.criteria.sampling import mixing_p, q_factor
from dynstab.errors import ConvergenceWarning

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


def _n_of(K: Tensor, outputs: int) -> int:
    return K.shape[0] // outputs


def _diag_blocks(K: Tensor, outputs: int) -> Tensor:
    """The n diagonal C×C blocks of K, shape (n, C, C)."""
    n, C = _n_of(K, outputs), outputs
    idx = torch.arange(n, device=K.device)
    return K.reshape(n, C, n, C)[idx, :, idx, :]


def _gram_and_q(K: Tensor, outputs: int, batch_size: int, sampling: str) -> tuple[Tensor, float]:
    """Validated float64 K and q = p + (1 − p)/n of the sampling scheme."""
    K = _as_gram(K, outputs)
    return K, q_factor(_n_of(K, outputs), batch_size, sampling)


def gd_bound(K: Tensor, *, outputs: int = 1) -> float:
    """Return 2/λ_max(K), the GD threshold and a necessary bound on η* for every B.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        outputs: Number of outputs C.

    Returns:
        2/λ_max(K) as a float.

    Example:
        >>> gd_bound(torch.diag(torch.tensor([4.0, 1.0])))
        0.5
    """
    K = _as_gram(K, outputs)
    return gd_threshold(max(float(torch.linalg.eigvalsh(K)[-1]), 0.0))


def trace_bound(K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1) -> float:
    """Return the trace bound η* ≤ 2C/(q Tr K) (Wu & Su 2023 R1; Tr H ≤ 2/η for B = 1, C = 1).

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.

    Returns:
        The bound as a float (``inf`` for K = 0).

    Example:
        >>> trace_bound(torch.eye(4), 1)  # orthogonal equal-norm samples: tight, = η*
        0.5
    """
    K, q = _gram_and_q(K, outputs, batch_size, sampling)
    tr = float(K.trace())
    return math.inf if tr <= 0 else 2.0 * outputs / (q * tr)


def frobenius_bound(
    K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1
) -> float:
    """Return the Frobenius bound η* ≤ 2√C/(√q ‖K‖_F), i.e. ‖H‖_F ≤ 2/(η√q) ≈ 2√B/η for C = 1.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.

    Returns:
        The bound as a float.

    Example:
        >>> frobenius_bound(torch.eye(4), 1)
        1.0
    """
    K, q = _gram_and_q(K, outputs, batch_size, sampling)
    fro = float(torch.linalg.norm(K))
    return math.inf if fro <= 0 else 2.0 * math.sqrt(outputs) / (math.sqrt(q) * fro)


def mm23_bound_16(K: Tensor, batch_size: int, sampling: str = "with", *, outputs: int = 1) -> float:
    """Return MM23's (16): η* ≤ 2 Tr K / ((1 − p)‖K‖_F² + p n Σ_i ‖K_ii‖_F²).

    This is uᵀQu ≤ 1 for u = vec(I)/√P; (p/n) Σ_i ‖H_i‖_F² = p n Σ_i ‖K_ii‖_F².

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.

    Returns:
        The bound as a float.

    Example:
        >>> mm23_bound_16(torch.eye(4), 1)
        0.5
    """
    K = _as_gram(K, outputs)
    n = _n_of(K, outputs)
    p = mixing_p(n, batch_size, sampling)
    den = (1 - p) * float((K * K).sum()) + p * n * float((_diag_blocks(K, outputs) ** 2).sum())
    return math.inf if den <= 0 else 2.0 * float(K.trace()) / den


def mm23_bound_15(
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Return MM23's (15) in Gram form: η* ≤ 2/(λ(1 + p(n Σ_i ‖u_i‖⁴ − 1))).

    λ = λ_max(K) with unit eigenvector u (u_i its C entries of sample i); this is the rank-one
    functional F of :func:`rank_one_bound` at the top Hessian eigenvector.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        The bound as a float.

    Example:
        >>> round(mm23_bound_15(torch.eye(4), 1), 12)  # u = e_1: 2/(1·(1 + 4 − 1))
        0.5
    """
    c, p = _coords_and_p(K, outputs, coords, batch_size, sampling)
    if c.rank == 0:
        return math.inf
    u = c.U[:, 0].reshape(c.n, c.outputs)
    m4 = float(((u * u).sum(1) ** 2).sum())
    return 2.0 / (c.lambda_max * (1.0 + p * (c.n * m4 - 1.0)))


@dataclass(frozen=True)
class RankOneBoundResult:
    """MM23's rank-one bound (24), maximised by Riemannian ascent on the unit sphere.

    Attributes:
        eta_bound: 2/F_best ≥ η* (an upper bound on η*).
        value: F_best = max over restarts of F(v) ≤ λ_max(C†D) = 2/η*.
        num_iters: Ascent iterations used (max over restarts).
        converged: Whether every restart met the relative-improvement tolerance.
    """

    eta_bound: float
    value: float
    num_iters: int
    converged: bool


def _rank_one_F(c: GramCoordinates, p: float, W: Tensor) -> tuple[Tensor, Tensor]:
    """F(w) = (1 − p)a + p m₄/a and its Euclidean gradient, for the columns of W (ρ, R)."""
    n, C = c.n, c.outputs
    Z = c.Ghat @ W  # (nC, R)
    S = (Z.reshape(n, C, -1) ** 2).sum(1)  # (n, R)  ‖z_i‖²
    a = S.mean(0)
    m4 = (S * S).mean(0)
    ga = (2.0 / n) * (c.Ghat.T @ Z)
    gm = (4.0 / n) * (c.Ghat.T @ (S.repeat_interleave(C, dim=0) * Z))
    F = (1 - p) * a + p * m4 / a
    grad = (1 - p) * ga + p * (gm / a - m4 * ga / a**2)
    return F, grad


def rank_one_bound(
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
    """Maximise MM23's rank-one functional (eq. 24) and return the implied bound on η*.

    For unit v in the row space of J, z = Jv, a = (1/n) Σ_i ‖z_i‖² = vᵀHv and
    m₄ = (1/n) Σ_i ‖z_i‖⁴ (‖z_i‖² = vᵀH_iv):

        F(v) = a + p(m₄ − a²)/a = (1 − p)a + p m₄/a ≤ λ_max(C†D) = 2/η*.

    Riemannian gradient ascent in the Gram coordinates (z = Ĝw, ‖w‖ = 1) with an adaptive step
    (grown ×1.2 on success, halved on failure); restart 0 starts at the top eigenvector (so the
    result is at least the (15) value), the others at Gaussian directions. Cost per iteration:
    two products with Ĝ, O(nCρ) per restart.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        num_restarts: Number of starting points, >= 1.
        num_iters: Maximum ascent iterations per restart.
        tol: Stop a restart when its relative improvement falls below ``tol`` for 10 steps.
        generator: Random source for the restarts.
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        :class:`RankOneBoundResult`; non-convergence also warns
        :class:`~dynstab.errors.ConvergenceWarning`.

    Example:
        >>> rank_one_bound(torch.eye(4), 1).eta_bound  # orthogonal samples: F = λ + p(n−1)λ
        0.5
    """
    check_int("num_restarts", num_restarts, minimum=1)
    check_int("num_iters", num_iters, minimum=1)
    tol = check_positive("tol", tol)
    c, p = _coords_and_p(K, outputs, coords, batch_size, sampling)
    rho = c.rank
    if rho == 0:
        return RankOneBoundResult(math.inf, 0.0, 0, True)
    W = torch.randn(rho, num_restarts, generator=generator, dtype=torch.float64)
    W[:, 0] = 0.0
    W[0, 0] = 1.0
    W = W / torch.linalg.norm(W, dim=0)
    F, grad = _rank_one_F(c, p, W)
    step = torch.full((num_restarts,), 0.5 / c.lambda_max, dtype=torch.float64)
    calm = torch.zeros(num_restarts, dtype=torch.long)
    it = 0
    while it < num_iters:
        it += 1
        rg = grad - (grad * W).sum(0) * W
        Wn = W + step * rg
        Wn = Wn / torch.linalg.norm(Wn, dim=0)
        Fn, gn = _rank_one_F(c, p, Wn)
        better = Fn > F
        gain = torch.where(better, (Fn - F) / F.abs(), torch.zeros_like(F))
        W = torch.where(better, Wn, W)
        grad = torch.where(better, gn, grad)
        F = torch.where(better, Fn, F)
        step = torch.where(better, step * 1.2, step * 0.5)
        calm = torch.where(gain < tol, calm + 1, torch.zeros_like(calm))
        if bool((calm >= 10).all()):
            break
    converged = bool((calm >= 10).all())
    if not converged:
        warnings.warn(
            f"rank_one_bound: ascent did not settle within num_iters={num_iters}; the bound "
            "is still valid (any v gives one) but may be loose. Increase num_iters.",
            ConvergenceWarning,
            stacklevel=2,
        )
    best = float(F.max())
    return RankOneBoundResult(2.0 / best, best, it, converged)


def wme18_sufficient_lr(
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    coords: GramCoordinates | None = None,
) -> float:
    """Largest η satisfying WME18's sufficient condition λ_max((I − ηH)² + η²pΣ_WME) ≤ 1.

    Σ_WME = (1/n) Σ_i H_i² − H². In Gram coordinates (H = Λ, H_i = Ĝ_iᵀĜ_i) the condition is
    η wᵀ((1 − p)Λ² + (p/n) Ĝᵀ BlkDiag(ĜĜᵀ) Ĝ)w ≤ 2 wᵀΛw for all w, so the closed form is

        η_WME = 2/λ_max(Λ^{-1/2} [(1 − p)Λ² + (p/n) Ĝᵀ BlkDiag(ĜĜᵀ) Ĝ] Λ^{-1/2}) ≤ η*.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        η_WME as a float; equals 2/λ_max for GD and η* in 1-D.

    Example:
        >>> g = torch.tensor([[0.2], [3.8]], dtype=torch.float64).sqrt()  # 1-D, n = 2 (WME18 toy)
        >>> round(wme18_sufficient_lr(g @ g.T / 2, 1), 4)  # = η* = 2a/(a² + p s²)
        0.5525
    """
    c, p = _coords_and_p(K, outputs, coords, batch_size, sampling)
    if c.rank == 0:
        return math.inf
    n, C, rho = c.n, c.outputs, c.rank
    Gr = c.Ghat.reshape(n, C, rho)
    blocks = Gr @ Gr.transpose(1, 2)  # Ĝ_iĜ_iᵀ, (n, C, C)
    M = Gr.transpose(1, 2) @ blocks @ Gr  # (n, ρ, ρ)
    A = (p / n) * M.sum(0)
    A.diagonal().add_((1 - p) * c.lam**2)
    s = c.lam.rsqrt()
    A = s[:, None] * A * s[None, :]
    return 2.0 / float(torch.linalg.eigvalsh(0.5 * (A + A.T))[-1])
