import math

import pytest
import torch

from criteria_cases import K_REG, random_jacobians
from dynstab.criteria import (
    eta_star,
    gram_coordinates,
    lyapunov_exponent,
    propagate_second_moment,
    second_moment_growth,
)
from dynstab.criteria.reference import gram_from_jacobians, parameter_space_Q

CASES = [("with", 1), ("with", 2), ("without", 2), ("with", 3), ("without", 3)]


@pytest.mark.parametrize(("sampling", "B"), CASES)
def test_growth_crosses_one_at_eta_star(sampling, B):
    es = eta_star(K_REG, B, sampling).eta_star
    for method in ("dense", "matrix_free"):
        below = second_moment_growth(K_REG, 0.99 * es, B, sampling, method=method)
        at = second_moment_growth(K_REG, es, B, sampling, method=method)
        above = second_moment_growth(K_REG, 1.01 * es, B, sampling, method=method)
        assert below < 1.0 < above
        assert at == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("C", [1, 2])
def test_exact_propagation_crosses_one_at_eta_star(C):
    g = torch.Generator().manual_seed(40 + C)
    for sampling, B in (("with", 2), ("without", 3), ("with", 1)):
        K = gram_from_jacobians(random_jacobians(g, 5, 4, C))
        es = eta_star(K, B, sampling, outputs=C).eta_star
        for factor, side in ((0.99, -1), (1.01, 1)):
            m = propagate_second_moment(K, factor * es, B, sampling, steps=3000, outputs=C)
            ratio = float(m[-1] / m[-2])
            rho = second_moment_growth(K, factor * es, B, sampling, outputs=C)
            assert ratio == pytest.approx(rho, rel=2e-4)  # power-method convergence
            assert (ratio - 1.0) * side > 0


@pytest.mark.parametrize("C", [1, 2])
def test_growth_equals_parameter_space_spectral_radius(C):
    g = torch.Generator().manual_seed(50 + C)
    J = random_jacobians(g, 4, 3, C)  # P ≤ nC, full column rank: no frozen null space
    K = gram_from_jacobians(J)
    for sampling, B, lr in (("with", 2, 0.3), ("without", 2, 0.8), ("with", 1, 0.05)):
        Q = parameter_space_Q(J, lr, B, sampling)
        ref = float(torch.linalg.eigvals(Q).abs().max())
        for method in ("dense", "matrix_free"):
            got = second_moment_growth(K, lr, B, sampling, outputs=C, method=method)
            assert got == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("C", [1, 2])
def test_propagation_matches_parameter_space_moments(C):
    g = torch.Generator().manual_seed(60 + C)
    n, P = 4, 6
    J = random_jacobians(g, n, P, C)
    K = gram_from_jacobians(J)
    Jf = J.reshape(n * C, P)
    lr, B, sampling, steps = 0.2, 2, "without", 6
    Q = parameter_space_Q(J, lr, B, sampling)
    Sigma = torch.eye(P, dtype=torch.float64) / (n * float(K.trace()))  # R0 = JΣ0Jᵀ = K/Tr K
    expected = []
    for _ in range(steps + 1):
        expected.append(float((Jf @ Sigma @ Jf.T).trace()))
        Sigma = (Q @ Sigma.reshape(-1)).reshape(P, P)
    got = propagate_second_moment(K, lr, B, sampling, steps=steps, outputs=C)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)
    R0 = Jf @ Jf.T
    got2 = propagate_second_moment(K, lr, B, sampling, steps=2, outputs=C, R0=R0)
    assert float(got2[0]) == pytest.approx(float(R0.trace()))


def test_lyapunov_gd_is_deterministic_rate():
    # GD (WO, B = n): δ_t = (I − ηΛ)^t δ_0, exponent → log max_a |1 − ηλ_a|.
    lr = 0.95
    lam = torch.linalg.eigvalsh(K_REG)
    expected = math.log(float((1 - lr * lam).abs().max()))
    g = torch.Generator().manual_seed(0)
    res = lyapunov_exponent(K_REG, lr, 3, "without", num_steps=4000, num_runs=4, generator=g)
    assert res.exponent == pytest.approx(expected, abs=2e-3)
    assert res.growth_factor == pytest.approx(math.exp(res.exponent))


@pytest.mark.parametrize(("sampling", "B"), [("with", 1), ("without", 2), ("with", 3)])
def test_lyapunov_below_threshold_decays_and_obeys_jensen(sampling, B):
    es = eta_star(K_REG, B, sampling).eta_star
    g = torch.Generator().manual_seed(1)
    low = lyapunov_exponent(K_REG, 0.9 * es, B, sampling, num_steps=3000, num_runs=16, generator=g)
    assert low.exponent + 5 * low.stderr < 0.0
    high = lyapunov_exponent(K_REG, 1.1 * es, B, sampling, num_steps=3000, num_runs=16, generator=g)
    rho = second_moment_growth(K_REG, 1.1 * es, B, sampling)
    assert high.exponent - 5 * high.stderr <= 0.5 * math.log(rho)  # exp(λ₁) ≤ √ρ(Q)


def test_lyapunov_vector_outputs_and_reproducibility():
    g = torch.Generator().manual_seed(2)
    K = gram_from_jacobians(random_jacobians(g, 5, 4, C=2))
    es = eta_star(K, 2, "with", outputs=2).eta_star
    kw = {"outputs": 2, "num_steps": 1500, "num_runs": 8}
    a = lyapunov_exponent(K, 0.9 * es, 2, "with", generator=torch.Generator().manual_seed(3), **kw)
    b = lyapunov_exponent(K, 0.9 * es, 2, "with", generator=torch.Generator().manual_seed(3), **kw)
    assert a == b
    assert a.exponent + 5 * a.stderr < 0.0
    rho = second_moment_growth(K, 0.9 * es, 2, "with", outputs=2)
    assert a.exponent - 5 * a.stderr <= 0.5 * math.log(rho)


def test_lyapunov_stderr_shrinks_with_more_steps():
    es = eta_star(K_REG, 1, "with").eta_star
    short = lyapunov_exponent(
        K_REG, es, 1, num_steps=500, num_runs=16, generator=torch.Generator().manual_seed(4)
    )
    long = lyapunov_exponent(
        K_REG, es, 1, num_steps=4000, num_runs=16, generator=torch.Generator().manual_seed(5)
    )
    assert long.stderr < short.stderr
    assert abs(long.exponent - short.exponent) <= 5 * math.hypot(long.stderr, short.stderr)


def test_zero_gram_is_frozen():
    Z = torch.zeros(2, 2, dtype=torch.float64)
    assert second_moment_growth(Z, 0.1, 1) == 1.0
    assert lyapunov_exponent(Z, 0.1, 1, num_steps=3).exponent == 0.0


def test_coords_reuse_gives_same_growth():
    c = gram_coordinates(K_REG)
    assert second_moment_growth(K_REG, 0.5, 2, coords=c) == second_moment_growth(K_REG, 0.5, 2)
    K2 = torch.block_diag(K_REG, K_REG)  # outputs positional, as in docs/design.md
    assert second_moment_growth(K2, 0.5, 2, "with", 2) == second_moment_growth(
        K2, 0.5, 2, "with", outputs=2
    )


def test_linearized_errors():
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        second_moment_growth(K_REG, 0.0, 1)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        propagate_second_moment(K_REG, -1.0, 1, steps=2)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        propagate_second_moment(K_REG, 0.1, 1, steps=-1)
    with pytest.raises(ValueError, match=r"R0 must be a Tensor of shape \(3, 3\)"):
        propagate_second_moment(K_REG, 0.1, 1, steps=2, R0=torch.eye(2))
    with pytest.raises(ValueError, match="num_runs must be >= 2"):
        lyapunov_exponent(K_REG, 0.1, 1, num_runs=1)
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        lyapunov_exponent(K_REG, 0.1, 4, "without")
    with pytest.raises(ValueError, match="unknown method"):
        second_moment_growth(K_REG, 0.1, 1, method="power")
