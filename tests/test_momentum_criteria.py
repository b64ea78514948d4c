"""Exact mean-square criteria of SGD with heavy-ball and Nesterov momentum.

The reference is independent of the library's reduction: the one-step map A_I of the state
(θ, momentum buffer) is read off ``torch.optim.SGD`` itself (one optimizer step on the quadratic
batch loss ½θᵀH_Iθ from each basis state), every batch is enumerated explicitly (no batch-moment
identity), and the second-moment map Q(M) = E[A_I M A_Iᵀ] on the 2p-dimensional state is the
dense Kronecker matrix E[A_I ⊗ A_I]. η* is its first crossing of spectral radius 1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

import dynstab
from dynstab.criteria import StabilityProblem, critical_lr, momentum_gd_threshold
from dynstab.criteria.momentum import _AugmentedQ, _SymSpace, momentum_form, momentum_growth
from dynstab.losses import half_mse


def _sgd_step_matrix(H: torch.Tensor, lr: float, beta: float, nesterov: bool) -> np.ndarray:
    """The 2p×2p map (θ, b) ↦ (θ', b') of one ``torch.optim.SGD`` step on L = ½θᵀHθ."""
    p = H.shape[0]
    cols = []
    for k in range(2 * p):
        state = torch.zeros(2 * p, dtype=torch.float64)
        state[k] = 1.0
        theta = torch.nn.Parameter(state[:p].clone())
        opt = torch.optim.SGD([theta], lr=lr, momentum=beta, nesterov=nesterov)
        opt.state[theta]["momentum_buffer"] = state[p:].clone()
        loss = 0.5 * theta @ (H @ theta)
        loss.backward()
        opt.step()
        cols.append(torch.cat([theta.detach(), opt.state[theta]["momentum_buffer"]]))
    return torch.stack(cols, dim=1).numpy()


def _batches(n: int, B: int, scheme: str) -> list[tuple[int, ...]]:
    """Every batch with equal probability: ordered B-tuples (with) or B-subsets (without)."""
    if scheme == "with":
        return list(itertools.product(range(n), repeat=B))
    return list(itertools.combinations(range(n), B))


class _KroneckerReference:
    """E[A_I ⊗ A_I](η) = Q0 + η Q1 + η² Q2 over all batches; ρ(η) and its first crossing."""

    def __init__(self, J: torch.Tensor, B: int, scheme: str, beta: float, nesterov: bool) -> None:
        n = J.shape[0]
        Hs = [torch.outer(J[i], J[i]) for i in range(n)]
        batches = _batches(n, B, scheme)
        dim = 2 * J.shape[1]
        self.Q = [np.zeros((dim * dim, dim * dim)) for _ in range(3)]
        for batch in batches:
            HI = sum(Hs[i] for i in batch) / B
            A0 = _sgd_step_matrix(HI, 0.0, beta, nesterov)
            A1 = _sgd_step_matrix(HI, 1.0, beta, nesterov) - A0  # the step is linear in lr
            self.Q[0] += np.kron(A0, A0)
            self.Q[1] += np.kron(A0, A1) + np.kron(A1, A0)
            self.Q[2] += np.kron(A1, A1)
        self.Q = [q / len(batches) for q in self.Q]

    def radius(self, eta: float) -> float:
        M = self.Q[0] + eta * self.Q[1] + eta * eta * self.Q[2]
        return float(np.abs(np.linalg.eigvals(M)).max())

    def eta_star(self, eta_max: float) -> float:
        grid = np.linspace(0, eta_max, 401)[1:]
        values = [self.radius(e) - 1.0 for e in grid]
        first = next(i for i, v in enumerate(values) if v >= 0)
        lo = grid[first - 1] if first > 0 else grid[0] / 2
        return float(brentq(lambda e: self.radius(e) - 1.0, lo, grid[first], xtol=1e-15))


CASES = [
    # (seed, n, p, B, scheme, beta)
    (0, 5, 3, 1, "with", 0.5),
    (1, 5, 3, 2, "with", 0.9),
    (2, 6, 3, 2, "without", 0.3),
    (3, 6, 2, 3, "without", 0.9),
    (4, 4, 3, 3, "with", 0.7),
    (5, 6, 3, 4, "without", 0.5),
]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize(("seed", "n", "p", "B", "scheme", "beta"), CASES)
def test_eta_star_equals_augmented_state_kronecker_reference(
    seed: int, n: int, p: int, B: int, scheme: str, beta: float, nesterov: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(n, p, generator=g, dtype=torch.float64)  # full column rank: H ≻ 0
    K = J @ J.T / n
    res = critical_lr(K, batch_size=B, sampling=scheme, momentum=beta, nesterov=nesterov)
    ref = _KroneckerReference(J, B, scheme, beta, nesterov)
    lam = float(torch.linalg.eigvalsh(J.T @ J / n)[-1])
    expected = ref.eta_star(1.05 * momentum_gd_threshold(lam, beta, nesterov=nesterov))
    assert res.eta_star == pytest.approx(expected, rel=1e-8)
    assert res.momentum == beta
    assert res.nesterov is nesterov
    assert res.eta_gd == pytest.approx(momentum_gd_threshold(lam, beta, nesterov=nesterov))
    assert res.eta_star <= res.eta_gd * (1 + 1e-12)  # mean square implies first moment
    # the growth factor ρ(Q) of the problem is the reference's spectral radius
    prob = StabilityProblem.from_gram(K)
    s = prob.sampling(B, scheme)
    for eta in (0.5 * expected, expected, 1.2 * expected):
        got = prob.second_moment_growth(s, eta, momentum=beta, nesterov=nesterov)
        assert got == pytest.approx(ref.radius(eta), rel=1e-9, abs=1e-12)


def test_matrix_free_momentum_solver_agrees_with_dense() -> None:
    g = torch.Generator().manual_seed(7)
    J = torch.randn(12, 6, generator=g, dtype=torch.float64)
    K = J @ J.T / 12
    for nesterov in (False, True):
        kw = {"batch_size": 2, "momentum": 0.8, "nesterov": nesterov}
        dense = critical_lr(K, method="dense", **kw)
        free = critical_lr(K, method="matrix_free", **kw)
        assert dense.method == "dense"
        assert free.method == "matrix_free"
        assert free.eta_star == pytest.approx(dense.eta_star, rel=1e-9)


def test_zero_momentum_limit_is_the_plain_sgd_threshold() -> None:
    g = torch.Generator().manual_seed(3)
    J = torch.randn(8, 5, generator=g, dtype=torch.float64)
    K = J @ J.T / 8
    for B, scheme in ((1, "with"), (3, "without")):
        plain = critical_lr(K, batch_size=B, sampling=scheme)
        tiny = critical_lr(K, batch_size=B, sampling=scheme, momentum=1e-10)
        assert tiny.eta_star == pytest.approx(plain.eta_star, rel=1e-8)
        assert plain.momentum == 0.0
        assert plain.eta_gd == pytest.approx(2.0 / float(torch.linalg.eigvalsh(K)[-1]))


def test_gd_momentum_threshold_by_hand() -> None:
    # heavy ball: 2(1 + β)/λ; Nesterov (PyTorch form): (2 + 2β)/((1 + 2β)λ)
    assert momentum_gd_threshold(2.0, 0.9) == pytest.approx(1.9, rel=1e-15)
    assert momentum_gd_threshold(4.0, 0.5) == pytest.approx(0.75, rel=1e-15)
    assert momentum_gd_threshold(2.0, 0.9, nesterov=True) == pytest.approx(3.8 / 5.6, rel=1e-15)
    assert momentum_gd_threshold(1.0, 0.5, nesterov=True) == pytest.approx(1.5, rel=1e-15)
    assert momentum_gd_threshold(2.0, 0.0) == 1.0
    assert momentum_gd_threshold(0.0, 0.9) == math.inf
    # full-batch GD (B = n without replacement): η* is exactly the GD threshold
    K = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    for nesterov, expected in ((False, 0.95), (True, 3.8 / (2.8 * 4.0))):
        res = critical_lr(K, batch_size=2, sampling="without", momentum=0.9, nesterov=nesterov)
        assert res.eta_star == pytest.approx(expected, rel=1e-12)
        assert res.eta_gd == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("nesterov", [False, True])
def test_gd_momentum_threshold_against_torch_optim(nesterov: bool) -> None:
    # 1-D quadratic ½λθ²: torch.optim.SGD with momentum stays bounded just below the
    # threshold and blows up just above it (eigenvalue modulus 1 ± O(1e-2) per step).
    lam, beta = 3.0, 0.7
    thr = momentum_gd_threshold(lam, beta, nesterov=nesterov)
    finals = []
    for eta in (0.99 * thr, 1.01 * thr):
        theta = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
        opt = torch.optim.SGD([theta], lr=eta, momentum=beta, nesterov=nesterov)
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * lam * theta * theta).sum().backward()
            opt.step()
        finals.append(abs(float(theta.detach())))
    assert finals[0] < 1.0
    assert finals[1] > 1e3


def test_model_stability_with_momentum_reports_eta_gd_and_exact_eta_star() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(3, 1, bias=False).double()
    y = model(X).detach()
    K = X @ X.T / 10
    lam = float(torch.linalg.eigvalsh(K)[-1])
    rep = dynstab.stability(
        model, half_mse, (X, y), lr=0.1, batch_size=2, momentum=0.9, method="exact", generator=g
    )
    ref = critical_lr(K, batch_size=2, momentum=0.9)
    assert rep.momentum == 0.9
    assert rep.eta_gd == pytest.approx(2 * 1.9 / lam, rel=1e-12)
    assert rep.eta_star == pytest.approx(ref.eta_star, rel=1e-9)
    assert rep.stable_sgd == (ref.eta_star >= 0.1)
    assert [r.name for r in rep.rows] == ["gd", "sgd_exact"]
    assert any("momentum" in note for note in rep.notes)
    assert "momentum=0.9" in rep.table()
    growth = StabilityProblem.from_gram(K).second_moment_growth(
        StabilityProblem.from_gram(K).sampling(2), 0.1, momentum=0.9
    )
    assert rep.growth_per_step == pytest.approx(growth, rel=1e-10)
    model_crit = critical_lr(model, (X, y), batch_size=2, momentum=0.9, nesterov=True)
    assert model_crit.eta_star == pytest.approx(
        critical_lr(K, batch_size=2, momentum=0.9, nesterov=True).eta_star, rel=1e-9
    )


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"momentum": 1.0}, ValueError, r"\[0, 1\)"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"momentum": float("nan")}, ValueError, "momentum"),
        ({"momentum": 0.0, "nesterov": True}, ValueError, "nesterov=True needs momentum > 0"),
        ({"momentum": 0.5, "nesterov": 1}, TypeError, "nesterov must be a bool"),
        ({"momentum": "0.5"}, TypeError, "momentum"),
    ],
)
def test_bad_momentum_is_refused(kwargs: dict[str, object], exc: type, match: str) -> None:
    K = torch.eye(3, dtype=torch.float64)
    with pytest.raises(exc, match=match):
        critical_lr(K, batch_size=1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize(("scheme", "B"), [("with", 2), ("without", 3)])
def test_growth_factor_equals_the_dense_augmented_map_at_moderate_rank(
    nesterov: bool, scheme: str, B: int
) -> None:
    # the growth factor is computed on the reduced ρ(ρ+1)/2 space (a root in λ of
    # ρ(K_{η,λ}) = 1); the reference is the dense ρ(2ρ+1)-square matrix of Q_R itself
    # (Q_R(Σ) = E[M_IΣM_Iᵀ] built column by column), at rank 8 (N = 136), where the Kronecker
    # reference above would need (2p)⁴ entries per batch; both solvers of the reduced criterion
    g = torch.Generator().manual_seed(11)
    J = torch.randn(14, 8, generator=g, dtype=torch.float64)
    J = J * (0.3 + torch.rand(14, 1, generator=g, dtype=torch.float64))  # uneven samples
    K = J @ J.T / 14
    prob = StabilityProblem.from_gram(K)
    s = prob.sampling(B, scheme)
    beta = 0.8
    F, gv = momentum_form(beta, nesterov)
    Q = _AugmentedQ(prob.coordinates, s.p, F, gv)
    space = _SymSpace(2 * Q.rho, torch.device("cpu"))
    eta_star = critical_lr(K, batch_size=B, sampling=scheme, momentum=beta, nesterov=nesterov)
    for eta in (0.3 * eta_star.eta_star, eta_star.eta_star, 1.1 * eta_star.eta_star):
        dense_q = space.matrix(lambda X, e=eta: Q(X, e))
        ref = float(torch.linalg.eigvals(dense_q).abs().max())
        for method in ("dense", "matrix_free"):
            got = momentum_growth(prob.coordinates, s, eta, beta, nesterov, method=method)
            assert got == pytest.approx(ref, rel=1e-9), (eta, method)
    # at η* the growth factor is 1: the threshold and the growth factor agree
    at_star = momentum_growth(prob.coordinates, s, eta_star.eta_star, beta, nesterov)
    assert at_star == pytest.approx(1.0, abs=1e-9)
