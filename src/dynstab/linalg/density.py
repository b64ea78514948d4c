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
from dynstab.linalg.lanczos import _lanczos_run, _tridiag_eigh
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
) -> SpectralDensity:
    """Approximate the spectral density of a symmetric operator by SLQ.

    Args:
        op: Symmetric square tensor or operator of shape ``(p, p)``.
        num_probes: Number of Rademacher probes, >= 1. Default: ``10``.
        num_iters: Lanczos steps per probe (capped at ``p``), >= 1. Default: ``30``.
        generator: Random source (CPU); ``None`` uses torch's default generator.

    Returns:
        :class:`SpectralDensity`; costs at most ``num_probes × num_iters`` products.

    Raises:
        ValueError: If ``num_probes`` or ``num_iters`` < 1.

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
    p = A.shape[0]
    nodes, weights = [], []
    used = 0
    for _ in range(num_probes):
        v = torch.randint(0, 2, (p,), generator=generator, dtype=torch.int64).to(torch.float64)
        q = ((2.0 * v - 1.0) / math.sqrt(p)).to(dtype=A.dtype, device=A.device)
        kry = _lanczos_run(A, q, num_iters)
        used += kry.num_matvecs
        theta, S = _tridiag_eigh(kry.alpha, kry.beta)
        nodes.append(theta)
        weights.append(S[0, :] ** 2 / num_probes)
    return SpectralDensity(torch.cat(nodes), torch.cat(weights), used)
