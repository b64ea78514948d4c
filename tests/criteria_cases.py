"""Shared inputs of the stability tests: a hand-computed regression instance, random Jacobians."""

from __future__ import annotations

import torch

#: Per-sample Jacobians (n = 3, P = 4) of the regression instance whose η*, bounds and spectrum
#: were computed by hand (MM23's Kronecker formula, Mulayoff & Michaeli 2024, Thm 3).
J_REG = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
#: Its Gram matrix K = JJᵀ/n (Tr K = 3, λ_max = 2.017125).
K_REG = J_REG @ J_REG.T / 3


def random_jacobians(g: torch.Generator, n: int, P: int, C: int = 1) -> torch.Tensor:
    """Gaussian Jacobians (n, C, P) with uneven column scales and per-sample magnitudes."""
    scales = 0.3 + 1.7 * torch.rand(P, generator=g, dtype=torch.float64)
    per_sample = torch.exp(0.5 * torch.randn(n, 1, 1, generator=g, dtype=torch.float64))
    return torch.randn(n, C, P, generator=g, dtype=torch.float64) * scales * per_sample


def route_cases(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Small Jacobian instances (n, C, P) for route-equivalence tests, with their labels.

    Covers scalar and vector outputs (C = 1, 2), P < nC (rank-deficient K), P > nC (rank-
    deficient H), duplicated samples (two identical rows of J), a sample with zero gradient, and
    one outlier sample a hundred times larger than the others.
    """
    g = torch.Generator().manual_seed(seed)
    cases: list[tuple[str, torch.Tensor]] = []
    for C in (1, 2):
        cases.append((f"C{C}-tall", random_jacobians(g, 6, 3, C)))
        cases.append((f"C{C}-wide", random_jacobians(g, 3, 7, C)))
        dup = random_jacobians(g, 5, 4, C)
        dup[3] = dup[1]
        cases.append((f"C{C}-duplicated", dup))
        zero = random_jacobians(g, 4, 5, C)
        zero[2] = 0.0
        cases.append((f"C{C}-zero-sample", zero))
        out = random_jacobians(g, 5, 3, C)
        out[0] *= 100.0
        cases.append((f"C{C}-outlier", out))
    return cases
