"""How close the engine's certificate is to the best any certificate can be.

A single-vector Lanczos run from a random start ``q`` knows the operator only through its
tridiagonal ``T_m`` and the coupling ``β_m`` (the moments of the spectral measure
``μ = Σ_i (u_iᵀq)² δ_{λ_i}`` up to order ``2m``). Among all measures with these moments the
largest mass at a point ``t`` beyond the Ritz values is ``1/Σ_{j=0}^{m} p_j(t)²`` (the
Christoffel function; ``p_j`` the orthonormal Lanczos polynomials, ``q_{j+1} = p_j(A) q``), and
it is attained. So no certificate that holds with probability ``1 − δ`` over a uniformly random
start can exclude an eigenvalue at ``θ(1 + tol)`` before ``Σ_j p_j(θ(1 + tol))² >= 1/γ²`` with
``γ = δ/c_p`` (the small-ball constant of the start's component on the top eigenvector). This
test computes that step independently of the engine (plain Lanczos + the three-term recurrence)
and checks that the engine certifies neither earlier (it would claim more than its numbers
support) nor more than two products later.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynstab.linalg import LanczosConfig, lanczos_top_eigenpairs
from dynstab.linalg.krylov import moment_optimal_stop, plain_lanczos, small_ball_constant
from spectra import get_spectrum

_DELTA = 1e-3  # LanczosConfig's default failure probability
_FIRST_SEGMENT_SHARE = 6.0 / math.pi**2  # the first random segment's share of δ


def _earliest_certifiable(op, p: int, seed: int, tol: float, steps: int) -> tuple[int, int]:
    """(first step within tol of the final Ritz value, first step a δ-certificate could stop)."""
    q = torch.randn(p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    alpha, beta, _, lengths, _ = plain_lanczos(op, q.unsqueeze(1), steps)
    a, b = alpha[0].tolist(), beta[0].tolist()
    gamma = _DELTA * _FIRST_SEGMENT_SHARE / small_ball_constant(p)
    thetas = []
    for m in range(1, int(lengths[0]) + 1):
        T = (
            torch.diag(alpha[0, :m])
            + torch.diag(beta[0, : m - 1], 1)
            + torch.diag(beta[0, : m - 1], -1)
        )
        thetas.append(float(torch.linalg.eigvalsh(T)[-1]))
    final = thetas[-1]
    first_within = next(m for m, th in enumerate(thetas, 1) if final - th <= tol * abs(final))
    for m, th in enumerate(thetas, 1):
        t = th * (1.0 + tol)
        prev, cur, total = 0.0, 1.0, 1.0
        for j in range(m):  # β_j p_j(t) = (t − α_j) p_{j−1}(t) − β_{j−1} p_{j−2}(t)
            nxt = ((t - a[j]) * cur - (b[j - 1] if j else 0.0) * prev) / b[j]
            prev, cur = cur, nxt
            total += cur * cur
        if total >= 1.0 / gamma**2:
            # the library's version of this bound (used by the benchmarks) agrees
            found = moment_optimal_stop(
                alpha[0], beta[0], size=p, tol=tol, failure_probability=_DELTA
            )
            assert found == m
            return first_within, m
    raise AssertionError("no step could certify within the run")


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("hessian_like_p800_hh", 0),
        ("hessian_like_p800_hh", 3),
        ("cluster_1e-3_p2000_hh", 1),
        ("cluster_1e-02", 2),
    ],
)
def test_engine_certifies_within_two_products_of_the_moment_optimum(name, seed):
    case = get_spectrum(name)
    built = case.build()
    tol = 1e-6
    res = lanczos_top_eigenpairs(
        built.op,
        1,
        config=LanczosConfig(tol=tol, max_iters=200),
        generator=torch.Generator().manual_seed(seed),
        return_vectors=False,
    )
    assert res.converged
    first, optimum = _earliest_certifiable(built.op, built.size, seed, tol, res.num_matvecs + 5)
    assert first <= optimum
    # never earlier than the information allows (1 step of slack for round-off in θ)
    assert optimum - 1 <= res.num_matvecs <= optimum + 2, (first, optimum, res.num_matvecs)
