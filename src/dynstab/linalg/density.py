"""Spectral density by stochastic Lanczos quadrature (SLQ).

For a symmetric ``A`` with eigenvalues ``λ_j`` the spectral density is
``φ(t) = (1/p) Σ_j δ(t − λ_j)``. For a unit probe ``q = v/‖v‖`` (``v`` Rademacher), ``m``
Lanczos steps give ``T_m = S diag(θ) Sᵀ`` and the Gauss quadrature

    qᵀ f(A) q ≈ Σ_i (S_{1i})² f(θ_i),

exact for polynomials of degree ``≤ 2m − 1``. Averaging over probes gives nodes ``θ`` and
weights ``(S_{1i})²/num_probes`` (summing to 1) whose moments ``Σ w θ^k`` estimate
``tr(A^k)/p`` without bias (for Rademacher probes ``‖v‖² = p``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_int, check_positive
from dynstab._types import LinearOperatorLike
from dynstab.linalg.krylov import plain_lanczos, tridiagonal_eigh, work_dtype
from dynstab.linalg.operator import as_operator

__all__ = ["SpectralDensity", "slq_density"]


@dataclass(frozen=True)
class SpectralDensity:
    """A discrete approximation ``Σ_i w_i δ(t − θ_i)`` of the spectral density.

    Attributes:
        nodes: Ritz values ``θ_i``, shape ``(N,)``, float64.
        weights: Non-negative weights ``w_i`` summing to 1, shape ``(N,)``, float64.
        num_matvecs: Operator products spent.
    """

    nodes: Tensor
    weights: Tensor
    num_matvecs: int

    def moment(self, k: int) -> float:
        """Return ``Σ_i w_i θ_i^k``, an estimate of ``tr(A^k)/p``."""
        return float((self.weights * self.nodes**k).sum())

    def smoothed(self, grid: Tensor, sigma: float) -> Tensor:
        """Gaussian-smoothed density ``Σ_i w_i N(t; θ_i, σ²)`` on ``grid`` (shape ``(g,)``)."""
        sigma = check_positive("sigma", sigma)
        t = grid.to(torch.float64).reshape(-1, 1)
        z = (t - self.nodes.reshape(1, -1)) / sigma
        return (torch.exp(-0.5 * z**2) @ self.weights) / (sigma * math.sqrt(2 * math.pi))


def slq_density(
    op: Tensor | LinearOperatorLike,
    *,
    num_probes: int = 10,
    num_iters: int = 30,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
    max_memory: int = 256 * 2**20,
) -> SpectralDensity:
    """Approximate the spectral density of a symmetric operator by SLQ.

    The probes' Lanczos runs advance together: every step applies the operator to one block
    holding the current vector of each run (the Krylov engine's :func:`plain_lanczos`), so a
    block-capable operator (batched HVPs) pays one block product per step instead of one
    product per probe. Results do not depend on the blocking (probes are drawn one at a time).

    Args:
        op: Symmetric square tensor or operator of shape ``(p, p)``.
        num_probes: Number of Rademacher probes, >= 1. Default: ``10``.
        num_iters: Lanczos steps per probe (capped at ``p``), >= 1. Default: ``30``.
        generator: Random source (CPU); ``None`` uses torch's default generator.
        block_size: Probes run together, >= 1; ``None``: as many as fit in ``max_memory``.
        max_memory: Bytes allowed for the probes' Lanczos bases when ``block_size`` is
            ``None``, >= 1. Default: 256 MiB.

    Returns:
        :class:`SpectralDensity`; costs at most ``num_probes × num_iters`` products.

    Raises:
        ValueError: If ``num_probes``, ``num_iters``, ``block_size`` or ``max_memory`` < 1.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
        >>> d = slq_density(A, num_probes=3, num_iters=4)
        >>> round(d.moment(1), 10), round(d.moment(2), 10)  # tr(A)/p, tr(A²)/p
        (2.5, 7.5)

    References:
        Golub & Meurant (2009); Ghorbani, Krishnan & Xiao (2019), ICML.
    """
    A = as_operator(op)
    check_int("num_probes", num_probes, minimum=1)
    check_int("num_iters", num_iters, minimum=1)
    check_int("max_memory", max_memory, minimum=1)
    p = A.shape[0]
    m = min(num_iters, p)
    if block_size is None:
        per_probe = p * m * torch.finfo(work_dtype(A.device)).bits // 8
        block_size = max(1, min(num_probes, max_memory // max(per_probe, 1)))
    check_int("block_size", block_size, minimum=1)
    nodes, weights = [], []
    used = 0
    for start in range(0, num_probes, block_size):
        cols = []
        for _ in range(min(block_size, num_probes - start)):
            v = torch.randint(0, 2, (p,), generator=generator, dtype=torch.int64)
            cols.append((2.0 * v.to(torch.float64) - 1.0) / math.sqrt(p))
        alpha, beta, _, lengths, cost = plain_lanczos(A, torch.stack(cols, dim=1), m)
        used += cost
        for i in range(len(cols)):
            n_i = int(lengths[i])
            theta, S = tridiagonal_eigh(alpha[i, :n_i], beta[i, :n_i])
            nodes.append(theta)
            weights.append(S[0, :] ** 2 / num_probes)
    return SpectralDensity(torch.cat(nodes), torch.cat(weights), used)
