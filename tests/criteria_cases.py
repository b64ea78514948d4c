"""Shared inputs of the stability tests: the §1.9.5 regression instance and random Jacobians."""

from __future__ import annotations

import torch

#: Per-sample Jacobians (n = 3, P = 4) of the regression instance of related_criteria.md §1.9.5.
J_REG = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
#: Its Gram matrix K = JJᵀ/n (Tr K = 3, λ_max = 2.017125).
K_REG = J_REG @ J_REG.T / 3


def random_jacobians(g: torch.Generator, n: int, P: int, C: int = 1) -> torch.Tensor:
    """Gaussian Jacobians (n, C, P) with uneven column scales and per-sample magnitudes."""
    scales = 0.3 + 1.7 * torch.rand(P, generator=g, dtype=torch.float64)
    per_sample = torch.exp(0.5 * torch.randn(n, 1, 1, generator=g, dtype=torch.float64))
    return torch.randn(n, C, P, generator=g, dtype=torch.float64) * scales * per_sample
