import math

import pytest
import torch

from criteria_cases import K_REG, random_jacobians
from dynstab.criteria import (
    alignment_bound,
    alignment_factor,
    alignment_infimum,
    eta_star,
    frobenius_bound,
    gd_bound,
    gram_coordinates,
    mixing_p,
    mm23_bound_15,
    mm23_bound_16,
    rank_one_bound,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria.reference import gram_from_jacobians, parameter_space_wme18_lr

# Hand-computed values on K_REG: (sampling, B, trace, Frobenius, alignment bound), 6 digits
BOUND_ROWS = [
    ("with", 1, 0.666667, 0.914991, 1.132215),
    ("without", 1, 0.666667, 0.914991, 1.132215),
    ("with", 2, 1.0, 1.120631, 1.601194),
    ("without", 2, 1.333333, 1.293993, 2.264430),
    ("with", 3, 1.2, 1.227590, 1.961054),
]


@pytest.mark.parametrize(("sampling", "B", "tr", "fro", "al"), BOUND_ROWS)
def test_regression_bound_columns(sampling, B, tr, fro, al):
    assert trace_bound(K_REG, B, sampling) == pytest.approx(tr, abs=5e-7)
    assert frobenius_bound(K_REG, B, sampling) == pytest.approx(fro, abs=5e-7)
    assert alignment_bound(K_REG, B, sampling) == pytest.approx(al, abs=5e-7)


def test_gd_row_has_no_alignment_bound():
    assert math.isinf(alignment_bound(K_REG, 3, "without"))
    assert gd_bound(K_REG) == pytest.approx(0.991510, abs=5e-7)


@pytest.mark.filterwarnings("ignore::dynstab.errors.ConvergenceWarning")  # any v gives a bound
def test_every_bound_holds_on_random_instances():
    g = torch.Generator().manual_seed(2024)
    tight = {"trace": 0.0, "frobenius": 0.0, "mm23_15": 0.0, "mm23_16": 0.0, "rank_one": 0.0}
    checked = 0
    for instance in range(200):
        C = 1 if instance < 150 else 2
        n = int(torch.randint(2, 8, (1,), generator=g))
        P = int(torch.randint(1, 9, (1,), generator=g))
        K = gram_from_jacobians(random_jacobians(g, n, P, C))
        coords = gram_coordinates(K, C)
        for sampling in ("with", "without"):
            for B in range(1, n + 1):
                es = eta_star(K, B, sampling, outputs=C, coords=coords).eta_star
                lo = es * (1 - 1e-10)
                bounds = {
                    "gd": gd_bound(K, outputs=C),
                    "mm23_15": mm23_bound_15(K, B, sampling, outputs=C, coords=coords),
                    "mm23_16": mm23_bound_16(K, B, sampling, outputs=C),
                    "trace": trace_bound(K, B, sampling, outputs=C),
                    "frobenius": frobenius_bound(K, B, sampling, outputs=C),
                    "alignment": alignment_bound(K, B, sampling, outputs=C, coords=coords),
                }
                if (B + instance) % 3 == 0:  # the ascent is the slow part: a third of the cases
                    bounds["rank_one"] = rank_one_bound(
                        K, B, sampling, outputs=C, num_iters=200, generator=g, coords=coords
                    ).eta_bound
                for name, b in bounds.items():
                    assert b >= lo, (name, b, es, n, P, C, B, sampling)
                    if name in tight:
                        tight[name] = max(tight[name], es / b)
                if "rank_one" in bounds:  # chain (25): (24) is at least the (15) value
                    assert bounds["rank_one"] <= bounds["mm23_15"] * (1 + 1e-12)
                wme = wme18_sufficient_lr(K, B, sampling, outputs=C, coords=coords)
                assert wme <= es * (1 + 1e-10)
                checked += 1
    assert checked > 1000
    # the rank-one ascent is close to exact on these small instances
    assert tight["rank_one"] > 0.99


@pytest.mark.parametrize("C", [1, 2])
def test_wme18_closed_form_equals_parameter_space_bisection(C):
    g = torch.Generator().manual_seed(31 + C)
    for _ in range(4):
        J = random_jacobians(g, 4, 3, C)
        K = gram_from_jacobians(J)
        for sampling, B in (("with", 1), ("without", 2), ("with", 3)):
            ref = parameter_space_wme18_lr(J, B, sampling)
            got = wme18_sufficient_lr(K, B, sampling, outputs=C)
            assert got == pytest.approx(ref, rel=1e-9)


def test_wme18_is_exact_in_one_dimension_and_for_gd():
    g = torch.Generator().manual_seed(4)
    J = random_jacobians(g, 5, 1)
    K = gram_from_jacobians(J)
    for B in (1, 2, 4):
        assert wme18_sufficient_lr(K, B, "without") == pytest.approx(
            eta_star(K, B, "without").eta_star, rel=1e-12
        )
    K2 = gram_from_jacobians(random_jacobians(g, 5, 4))
    assert wme18_sufficient_lr(K2, 5, "without") == pytest.approx(gd_bound(K2), rel=1e-12)


def test_mm23_15_equals_parameter_space_formula():
    g = torch.Generator().manual_seed(15)
    J = random_jacobians(g, 6, 4)[:, 0, :]
    n = J.shape[0]
    H = J.T @ J / n
    lam, V = torch.linalg.eigh(H)
    v, lmax = V[:, -1], float(lam[-1])
    for sampling, B in (("with", 2), ("without", 3)):
        p = mixing_p(n, B, sampling)
        ref = 2 * lmax / (lmax**2 + (p / n) * float((((J @ v) ** 2 - lmax) ** 2).sum()))
        assert mm23_bound_15(gram_from_jacobians(J), B, sampling) == pytest.approx(ref, rel=1e-10)


def test_mm23_16_equals_parameter_space_formula():
    g = torch.Generator().manual_seed(16)
    J = random_jacobians(g, 5, 4, C=2)
    n = J.shape[0]
    Hs = [J[i].T @ J[i] for i in range(n)]
    H = sum(Hs) / n
    for sampling, B in (("with", 2), ("without", 3)):
        p = mixing_p(n, B, sampling)
        den = (1 - p) * float((H * H).sum()) + (p / n) * sum(float((Hi * Hi).sum()) for Hi in Hs)
        ref = 2 * float(H.trace()) / den
        got = mm23_bound_16(gram_from_jacobians(J), B, sampling, outputs=2)
        assert got == pytest.approx(ref, rel=1e-12)


def test_trace_and_frobenius_bounds_vector_outputs_need_factor_c():
    # n = 1 with C outputs: H = J_1ᵀJ_1 of rank C; GD threshold 2/λ_max ≤ 2C/Tr.
    J = torch.eye(3, 5, dtype=torch.float64)[None] * 2.0
    K = gram_from_jacobians(J)
    es = eta_star(K, 1, "with", outputs=3).eta_star
    assert es == pytest.approx(0.5)
    assert trace_bound(K, 1, "with", outputs=3) == pytest.approx(es)
    assert frobenius_bound(K, 1, "with", outputs=3) >= es


@pytest.mark.parametrize("C", [1, 2])
def test_alignment_factor_equals_parameter_space_definition(C):
    g = torch.Generator().manual_seed(20 + C)
    n, P = 5, 7
    J = random_jacobians(g, n, P, C)
    r = torch.randn(n, C, generator=g, dtype=torch.float64)
    grads = torch.einsum("icp,ic->ip", J, r)  # ∇ℓ_i = J_iᵀ r_i
    mean = grads.mean(0)
    Sigma = grads.T @ grads / n - torch.outer(mean, mean)
    G = torch.einsum("icp,icq->pq", J, J) / n
    L = 0.5 * float((r * r).sum()) / n
    ref = float((Sigma * G).sum()) / (2 * L * float((G * G).sum()))
    K = gram_from_jacobians(J)
    assert alignment_factor(K, r, outputs=C) == pytest.approx(ref, rel=1e-10)
    assert alignment_factor(K, r.reshape(-1), outputs=C) == pytest.approx(ref, rel=1e-10)


def test_alignment_infimum_is_the_minimum_over_range():
    g = torch.Generator().manual_seed(22)
    J = random_jacobians(g, 6, 4)  # rank 4 < n: range(K) is a proper subspace
    K = gram_from_jacobians(J)
    mu_inf = alignment_infimum(K)
    U = gram_coordinates(K).U
    for _ in range(50):
        r = U @ torch.randn(U.shape[1], generator=g, dtype=torch.float64)
        assert alignment_factor(K, r) >= mu_inf * (1 - 1e-10)
    p = mixing_p(6, 2, "with")
    expected = 1.0 / (float(torch.linalg.norm(K)) * math.sqrt(p * mu_inf))
    assert alignment_bound(K, 2, "with") == pytest.approx(expected, rel=1e-12)


def test_rank_one_bound_reproducible_and_tight_on_regression():
    a = rank_one_bound(K_REG, 2, "without", generator=torch.Generator().manual_seed(1))
    b = rank_one_bound(K_REG, 2, "without", generator=torch.Generator().manual_seed(1))
    assert a == b
    assert a.converged
    assert 0.7775166986 <= a.eta_bound <= mm23_bound_15(K_REG, 2, "without")


def test_bounds_errors():
    with pytest.raises(ValueError, match="residuals must have n\\*C = 3 entries"):
        alignment_factor(K_REG, torch.ones(4))
    with pytest.raises(ValueError, match="nonzero residuals"):
        alignment_factor(K_REG, torch.zeros(3))
    with pytest.raises(ValueError, match="num_restarts must be >= 1"):
        rank_one_bound(K_REG, 1, num_restarts=0)
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        trace_bound(K_REG, 4, "without")
    with pytest.raises(ValueError, match="square 2-D matrix"):
        frobenius_bound(torch.ones(3, 2, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="positive semi-definite"):
        mm23_bound_15(-K_REG, 1)


def test_zero_gram_bounds_are_infinite():
    Z = torch.zeros(2, 2, dtype=torch.float64)
    assert math.isinf(trace_bound(Z, 1))
    assert math.isinf(frobenius_bound(Z, 1))
    assert math.isinf(mm23_bound_16(Z, 1))
    assert math.isinf(mm23_bound_15(Z, 1))
    assert math.isinf(rank_one_bound(Z, 1).eta_bound)
    assert math.isinf(wme18_sufficient_lr(Z, 1))
    assert math.isinf(alignment_bound(Z, 1))
