"""The Lanczos engine through its public API: values, vectors, certificates, options."""

import math
import warnings

import pytest
import torch
from torch import nn

from dynstab.curvature import HessianOperator, dense_hessian
from dynstab.errors import ConvergenceWarning
from dynstab.linalg import (
    DenseOperator,
    FunctionOperator,
    LanczosConfig,
    LanczosProgress,
    as_operator,
    lanczos_top_eigenpairs,
    power_iteration,
)
from dynstab.linalg.krylov import KrylovEngine, plain_lanczos
from dynstab.losses import half_mse
from helpers import assert_close


def known_spectrum(p: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A = Q diag(λ) Qᵀ with a spread spectrum including negative values."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = torch.linspace(-3.0, 1.0, p, dtype=torch.float64)
    lam[-1], lam[-2], lam[-3] = 10.0, 8.0, 6.5
    lam[0] = -7.0
    return Q @ torch.diag(lam) @ Q.T, lam


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return lanczos_top_eigenpairs(*args, **kwargs)


@pytest.mark.parametrize("criterion", ["eigenvalue", "residual"])
@pytest.mark.parametrize("k", [1, 3])
def test_largest_eigenpairs_match_known_spectrum(k, criterion, generator):
    A, lam = known_spectrum()
    tol = 1e-8
    res = lanczos_top_eigenpairs(A, k, tol=tol, generator=generator, criterion=criterion)
    expected = lam.sort(descending=True).values[:k]
    assert res.converged
    assert_close(res.values, expected, rtol=tol)
    err = (res.values - expected).abs()
    assert (err <= res.error_bounds).all()
    assert (res.error_bounds <= tol * res.values.abs()).all()
    # the reported residuals bound the true residuals of the returned unit Ritz vectors
    Y = res.vectors
    true_res = torch.linalg.vector_norm(A @ Y - Y * res.values, dim=0)
    assert (true_res <= res.residuals).all()
    if criterion == "residual":
        assert (res.residuals <= tol * res.values.abs()).all()
    assert_close(Y.T @ Y, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-10)
    assert 0.0 < res.failure_probability <= 1e-3
    assert "probability" in res.certificate


def test_values_never_overshoot(generator):
    """Ritz values are Rayleigh quotients: θ_i <= λ_i at the top, >= at the bottom."""
    A, lam = known_spectrum(p=80, seed=3)
    for max_iters in (3, 8, 20):
        top = quiet(A, 3, tol=1e-12, max_iters=max_iters, generator=generator)
        ref = lam.sort(descending=True).values[: top.values.numel()]
        assert (top.values <= ref + 1e-12).all()
        low = quiet(A, 2, which="smallest", tol=1e-12, max_iters=max_iters, generator=generator)
        assert (low.values >= lam.sort().values[: low.values.numel()] - 1e-12).all()


def test_smallest_and_both(generator):
    A, lam = known_spectrum()
    small = lanczos_top_eigenpairs(A, 2, tol=1e-8, which="smallest", generator=generator)
    assert small.converged
    assert_close(small.values, lam.sort().values[:2], rtol=1e-8)
    assert ((small.values - lam.sort().values[:2]).abs() <= small.error_bounds).all()
    both = lanczos_top_eigenpairs(A, 1, tol=1e-8, which="both", generator=generator)
    assert both.converged
    assert_close(both.values, torch.tensor([10.0, -7.0], dtype=torch.float64), rtol=1e-8)


def test_full_krylov_space_is_exact(generator):
    A, lam = known_spectrum(p=12)
    res = lanczos_top_eigenpairs(A, 12, tol=1e-10, max_iters=40, generator=generator)
    assert res.converged
    assert res.invariant_subspace
    assert_close(res.values, lam.sort(descending=True).values, rtol=1e-12, atol=1e-13)


def test_invariant_subspace_from_a_user_start_is_certified_by_a_random_segment():
    A = torch.diag(torch.tensor([5.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    v0 = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    res = lanczos_top_eigenpairs(A, 1, v0=v0, generator=torch.Generator().manual_seed(0))
    # 2 products make span{v0, Av0} invariant; a user start proves nothing about the rest
    # of the spectrum, so one product with a random vector certifies it
    assert res.num_matvecs == 3
    assert res.converged
    assert res.invariant_subspace
    assert float(res.values[0]) == pytest.approx(5.0, rel=1e-14)


def test_proven_start_overlap_certifies_without_randomness():
    """``start_overlap``: a known lower bound on |uᵀv0| makes the user start certifying."""
    A = torch.diag(torch.tensor([5.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    v0 = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # |u₁ᵀv0|/‖v0‖ = 1/√2
    cfg = LanczosConfig(start_overlap=0.5)
    res = lanczos_top_eigenpairs(A, 1, v0=v0, config=cfg)
    assert res.num_matvecs == 2
    assert res.converged
    assert res.failure_probability == 0.0


def test_not_converged_warns_and_flags_with_honest_bounds(generator):
    A, _lam = known_spectrum()
    with pytest.warns(ConvergenceWarning, match="max_iters"):
        res = lanczos_top_eigenpairs(A, 1, tol=1e-12, max_iters=3, generator=generator)
    assert not res.converged
    assert res.num_matvecs == 3
    assert float(res.error_bounds[0]) >= abs(float(res.values[0]) - 10.0)
    assert "NOT converged" in res.certificate


def test_same_seed_same_result():
    A, _ = known_spectrum()
    r1 = lanczos_top_eigenpairs(A, 2, generator=torch.Generator().manual_seed(3))
    r2 = lanczos_top_eigenpairs(A, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1.values, r2.values)
    assert torch.equal(r1.error_bounds, r2.error_bounds)
    assert r1.num_matvecs == r2.num_matvecs


def test_float32_preserved_and_1x1(generator):
    A, _lam = known_spectrum()
    res = lanczos_top_eigenpairs(A.float(), 1, tol=1e-5, generator=generator)
    assert res.converged
    assert res.vectors is not None
    assert res.vectors.dtype == torch.float32
    assert res.values.dtype == torch.float64
    assert float(res.values[0]) == pytest.approx(10.0, rel=1e-5)
    one = lanczos_top_eigenpairs(torch.tensor([[-2.5]], dtype=torch.float64), generator=generator)
    assert float(one.values[0]) == -2.5
    assert one.converged


def test_counts_match_operator_products(generator):
    A, _ = known_spectrum()
    op = DenseOperator(A)
    res = lanczos_top_eigenpairs(op, 2, generator=generator)
    assert res.num_matvecs == op.num_matvecs


def test_lanczos_on_registry_hessian_matches_dense(case, generator):
    H = HessianOperator(case.model, case.loss_fn, case.data)
    eig = torch.linalg.eigvalsh(dense_hessian(case.model, case.loss_fn, case.data))
    scale = float(eig.abs().max())
    res = quiet(H, 1, tol=1e-9, max_iters=200, generator=generator)
    assert abs(float(res.values[0]) - float(eig[-1])) <= float(res.error_bounds[0])
    if res.converged:
        assert abs(float(res.values[0]) - float(eig[-1])) <= 1e-9 * max(abs(float(eig[-1])), scale)
    low = quiet(H, 1, tol=1e-9, max_iters=200, which="smallest", generator=generator)
    assert abs(float(low.values[0]) - float(eig[0])) <= float(low.error_bounds[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": 61}, "k must be <="),
        ({"tol": 0.0}, "tol"),
        ({"max_iters": 0}, "max_iters"),
        ({"which": "middle"}, "unknown which"),
        ({"criterion": "ritz"}, "criterion"),
        ({"v0": torch.zeros(60, dtype=torch.float64)}, "non-zero"),
        ({"v0": torch.ones(3)}, r"shape \(60,\)"),
        ({"v0": torch.ones(60, 2, dtype=torch.float64)}, "linearly independent"),
        ({"config": LanczosConfig(max_basis=3, block_size=2)}, "max_basis must be >="),
    ],
)
def test_bad_arguments(kwargs, match):
    A, _ = known_spectrum()
    with pytest.raises(ValueError, match=match):
        lanczos_top_eigenpairs(A, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tol": -1.0}, "tol"),
        ({"max_iters": 0}, "max_iters"),
        ({"criterion": "x"}, "criterion"),
        ({"block_size": 0}, "block_size"),
        ({"max_basis": 2}, "max_basis"),
        ({"basis_dtype": torch.float16}, "basis_dtype"),
        ({"failure_probability": 1.0}, "failure_probability"),
        ({"product_rtol": 0.0}, "product_rtol"),
        ({"start_overlap": 2.0}, "start_overlap"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LanczosConfig(**kwargs)


def test_config_type_checked():
    with pytest.raises(TypeError, match="LanczosConfig"):
        lanczos_top_eigenpairs(torch.eye(3), config={"tol": 1e-3})


def test_keyword_arguments_override_the_config(generator):
    A, _ = known_spectrum()
    cfg = LanczosConfig(tol=1e-2, max_iters=5)
    res = quiet(A, 1, config=cfg, tol=1e-10, max_iters=200, generator=generator)
    assert res.converged
    assert float(res.error_bounds[0]) <= 1e-10 * 10.0


def test_callback_reports_every_step_and_can_stop(generator):
    A, _ = known_spectrum()
    seen: list[LanczosProgress] = []
    res = lanczos_top_eigenpairs(A, 1, generator=generator, callback=seen.append)
    assert len(seen) == res.num_matvecs  # one record per block step, block size 1
    assert [r.num_matvecs for r in seen] == list(range(1, res.num_matvecs + 1))
    assert seen[-1].values.tolist() == res.values.tolist()
    assert all(r.phase in ("search", "certify") for r in seen)
    with pytest.warns(ConvergenceWarning, match="callback"):
        stopped = lanczos_top_eigenpairs(
            A, 1, generator=generator, callback=lambda r: r.num_matvecs >= 4
        )
    assert stopped.num_matvecs == 4
    assert not stopped.converged


def test_warm_start_needs_fewer_products():
    g = torch.Generator().manual_seed(7)
    p = 400
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = 0.7 * torch.rand(p, generator=g, dtype=torch.float64)
    lam[:3] = torch.tensor([2.0, 1.2, 1.1], dtype=torch.float64)
    A = (Q * lam) @ Q.T
    cold = lanczos_top_eigenpairs(A, 1, tol=1e-8, generator=torch.Generator().manual_seed(1))
    # the next training step: a slightly perturbed operator, started from the old vector
    E = torch.randn(p, p, generator=g, dtype=torch.float64) * 1e-4
    A2 = A + (E + E.T)
    warm = lanczos_top_eigenpairs(
        A2, 1, tol=1e-8, v0=cold.vectors[:, 0], generator=torch.Generator().manual_seed(2)
    )
    cold2 = lanczos_top_eigenpairs(A2, 1, tol=1e-8, generator=torch.Generator().manual_seed(2))
    assert warm.converged
    assert cold2.converged
    lam2 = float(torch.linalg.eigvalsh(A2)[-1])
    assert abs(float(warm.values[0]) - lam2) <= float(warm.error_bounds[0])
    assert warm.num_matvecs < cold2.num_matvecs


def test_warm_start_block_of_previous_eigenvectors(generator):
    A, lam = known_spectrum(p=90, seed=4)
    first = lanczos_top_eigenpairs(A, 3, tol=1e-8, generator=generator)
    again = lanczos_top_eigenpairs(A, 3, tol=1e-8, v0=first.vectors, generator=generator)
    assert again.converged
    assert_close(again.values, lam.sort(descending=True).values[:3], rtol=1e-8)
    assert again.num_matvecs < first.num_matvecs


def test_small_max_basis_restarts_and_stays_honest():
    g = torch.Generator().manual_seed(11)
    p = 300
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = torch.rand(p, generator=g, dtype=torch.float64)
    lam[:2] = torch.tensor([4.0, 3.0], dtype=torch.float64)
    A = (Q * lam) @ Q.T
    ref = lam.sort(descending=True).values[:2]
    cfg = LanczosConfig(tol=1e-10, max_basis=8, max_iters=600)
    res = lanczos_top_eigenpairs(A, 2, config=cfg, generator=torch.Generator().manual_seed(0))
    assert res.num_restarts > 0
    assert res.converged
    assert ((res.values - ref).abs() <= res.error_bounds).all()
    assert_close(res.values, ref, rtol=1e-10)
    # a smaller relative gap needs a longer random segment than 8 vectors allow: the run
    # stops early and says so instead of claiming convergence
    lam[:2] = torch.tensor([3.0, 2.0], dtype=torch.float64)
    A = (Q * lam) @ Q.T
    res = quiet(A, 2, config=cfg, generator=torch.Generator().manual_seed(0))
    assert not res.converged
    assert res.num_matvecs < 100
    ref = lam.sort(descending=True).values[:2]
    assert ((res.values - ref).abs() <= res.error_bounds).all()


def test_float32_basis_widens_the_floor(generator):
    A, _lam = known_spectrum(p=200, seed=5)
    r64 = lanczos_top_eigenpairs(A, 1, tol=1e-10, generator=generator)
    r32 = quiet(
        A, 1, tol=1e-10, generator=generator, config=LanczosConfig(basis_dtype=torch.float32)
    )
    assert r64.converged
    err32 = abs(float(r32.values[0]) - 10.0)
    assert err32 <= float(r32.error_bounds[0])
    assert float(r32.error_bounds[0]) >= 10.0 * torch.finfo(torch.float32).eps
    ok = lanczos_top_eigenpairs(
        A, 1, tol=1e-5, generator=generator, config=LanczosConfig(basis_dtype=torch.float32)
    )
    assert ok.converged


def test_float32_basis_orthogonality_is_measured_and_enters_the_bounds(monkeypatch):
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.0, 1.0, 400, dtype=torch.float64)
    lam[-1] = 2.0
    A = ((Q * lam) @ Q.T).float()
    cfg = LanczosConfig(tol=1e-3, max_iters=60)
    engine = KrylovEngine(
        as_operator(A), 1, "largest", cfg, v0=None, generator=torch.Generator().manual_seed(0)
    )
    assert engine.bdt == torch.float32  # the default for a float32 operator at tol >= 1e-4
    engine.run()
    n = engine.locked.l + engine.seg.m + engine.seg.b
    B = engine.B[:n].double()
    direct = float(torch.linalg.matrix_norm(B @ B.T - torch.eye(n, dtype=torch.float64), ord=2))
    assert engine.basis_orthogonality() == pytest.approx(direct, rel=1e-6, abs=1e-15)
    # float32 Gram–Schmidt keeps orthogonality near eps32 here, and well inside tol
    assert 0.0 < direct < 1e-5
    res = lanczos_top_eigenpairs(A, 1, config=cfg, generator=torch.Generator().manual_seed(0))
    assert res.converged
    assert abs(float(res.values[0]) - 2.0) <= float(res.error_bounds[0])
    assert "Basis float32: its measured loss of orthogonality" in res.certificate
    # a basis whose orthogonality had been lost must not be certified by the modelled value
    monkeypatch.setattr(KrylovEngine, "basis_orthogonality", lambda self: 1e-2)
    with pytest.warns(ConvergenceWarning, match="measured loss of orthogonality"):
        bad = lanczos_top_eigenpairs(A, 1, config=cfg, generator=torch.Generator().manual_seed(0))
    assert not bad.converged
    assert float(bad.error_bounds[0]) >= 4 * 1e-2 * 2.0 * 0.99
    # a float64 operator, or tol below 1e-4, keeps the float64 basis
    assert KrylovEngine(
        as_operator(A.double()), 1, "largest", cfg, v0=None, generator=None
    ).bdt == (torch.float64)
    tight = LanczosConfig(tol=1e-5)
    assert KrylovEngine(as_operator(A), 1, "largest", tight, v0=None, generator=None).bdt == (
        torch.float64
    )


class _DiagonalOperator:
    """Float32 ``diag(d)``: every product is exact up to one rounding per entry."""

    def __init__(self, d: torch.Tensor) -> None:
        self.d = d
        self.shape = (d.numel(), d.numel())
        self.dtype = d.dtype
        self.device = d.device

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v if v.dim() == 1 else self.d.unsqueeze(1) * v


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_operator_reaches_float64_accuracy(seed):
    # large p with a 1e-3 relative top gap: the float64 basis over float32 products reaches
    # ~1e-8 relative accuracy (a float32 basis floors near 1e-6). The certificate cannot go
    # below the modelled round-off of float32 products (~1e-6 relative): tol=1e-9 is reported
    # as not certified, tol=1e-5 is certified.
    p = 20_000
    lam = torch.rand(p, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.9
    lam[0], lam[1] = 1.0, 0.999
    d32 = lam.float()
    ref = d32.double().sort(descending=True).values[:2]  # exact eigenvalues of the float32 op
    gen = torch.Generator().manual_seed(seed)
    res = quiet(_DiagonalOperator(d32), 2, tol=1e-9, max_iters=200, generator=gen)
    assert not res.converged
    assert res.vectors is not None
    assert res.vectors.dtype == torch.float32
    assert res.vectors.shape == (p, 2)
    err = (res.values - ref).abs()
    assert (err <= res.error_bounds).all()
    assert (err / ref).max() <= 1e-7
    gen = torch.Generator().manual_seed(seed)
    ok = lanczos_top_eigenpairs(_DiagonalOperator(d32), 2, tol=1e-5, max_iters=200, generator=gen)
    assert ok.converged


def test_function_operator_on_matrices_matches_dense():
    """Operators over ρ×ρ matrices (Frobenius inner product), e.g. the η* Lyapunov operator."""
    g = torch.Generator().manual_seed(0)
    rho = 7
    M = torch.randn(rho, rho, generator=g, dtype=torch.float64)
    M = M @ M.T / rho

    def apply(X: torch.Tensor) -> torch.Tensor:
        return M @ X + X @ M + 0.3 * torch.trace(X) * torch.eye(rho, dtype=torch.float64)

    op = FunctionOperator(apply, (rho, rho), dtype=torch.float64)
    dense = op.to_dense()
    sym = 0.5 * (dense + dense.T)
    assert_close(dense, sym, rtol=0, atol=1e-14)
    top = float(torch.linalg.eigvalsh(dense)[-1])
    res = lanczos_top_eigenpairs(
        op, 1, v0=torch.eye(rho, dtype=torch.float64).reshape(-1), tol=1e-10, generator=g
    )
    assert res.converged
    assert abs(float(res.values[0]) - top) <= float(res.error_bounds[0])
    assert res.vectors.shape == (rho * rho, 1)


def test_operator_returning_its_input_does_not_corrupt_the_basis():
    op = FunctionOperator(lambda X: X, (6,), dtype=torch.float64)  # the identity, no copy
    res = lanczos_top_eigenpairs(op, 3, generator=torch.Generator().manual_seed(0))
    assert res.converged
    assert res.invariant_subspace
    assert_close(res.values, torch.ones(3, dtype=torch.float64), rtol=1e-15)


# -- the defects quoted in issue 12 ---------------------------------------------------------


def _xtx_with_top(p: int, n: int, top: list[float], seed: int) -> torch.Tensor:
    """H = XᵀX/n for a data matrix X whose spectrum has the given top values."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, p, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = 3.0 * torch.rand(p, generator=g, dtype=torch.float64)
    lam[: len(top)] = torch.tensor(top, dtype=torch.float64)
    X = math.sqrt(n) * (U * lam.sqrt()) @ V.T
    return X.T @ X / n


@pytest.mark.parametrize("gap", [1e-3, 1e-5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_clustered_top_pair_is_not_falsely_converged(gap, seed):
    """Issue 12: top pair 5, 5(1−gap) stopped after ~5 products, converged, 1e-3 wrong."""
    H = _xtx_with_top(60, 200, [5.0, 5.0 * (1 - gap)], seed)
    lam = torch.linalg.eigvalsh(H)[-1]
    res = quiet(H, 1, tol=1e-6, generator=torch.Generator().manual_seed(seed))
    err = abs(float(res.values[0]) - float(lam))
    assert err <= float(res.error_bounds[0])
    assert res.converged
    assert err <= 1e-6 * float(lam)


def test_regression_threefold_eigenvalues_of_a_linear_layer():
    """Issue 12: nn.Linear(40, 3) under ½-MSE has H = I₃ ⊗ XᵀX/n (all threefold)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(40, 3, bias=False).double()
    X = torch.randn(100, 40, generator=g, dtype=torch.float64)
    y = torch.randn(100, 3, generator=g, dtype=torch.float64)
    H = HessianOperator(model, half_mse, (X, y))
    exact = torch.linalg.eigvalsh(X.T @ X / 100).flip(0)
    expected = torch.stack([exact[0], exact[0], exact[0], exact[1]])
    res = lanczos_top_eigenpairs(H, 4, tol=1e-8, max_iters=300, generator=g)
    assert res.converged
    assert_close(res.values, expected, rtol=1e-8)
    assert ((res.values - expected).abs() <= res.error_bounds).all()
    # the three vectors span the threefold eigenspace: principal angles ~ 0
    Hd = dense_hessian(model, half_mse, (X, y))
    _w, U = torch.linalg.eigh(Hd)
    top_space = U[:, -3:]
    Y = res.vectors[:, :3]
    cosines = torch.linalg.svdvals(top_space.T @ Y)
    assert float(cosines.min()) >= 1 - 1e-6
    for i in range(4):
        v = res.vectors[:, i]
        assert float(torch.linalg.vector_norm(Hd @ v - res.values[i] * v)) <= float(
            res.residuals[i]
        )


def test_regression_rank_one_operator():
    """Issue 12: rank-one H: λ_max exact but not converged; top_k(3) dropped the zeros."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, generator=g, dtype=torch.float64)
    H = torch.outer(x, x)
    lam = float(x @ x)
    one = lanczos_top_eigenpairs(H, 1, generator=g)
    assert one.converged
    assert float(one.values[0]) == pytest.approx(lam, rel=1e-14)
    three = lanczos_top_eigenpairs(H, 3, generator=g)
    assert three.converged
    assert three.invariant_subspace
    assert three.values.numel() == 3
    assert_close(
        three.values, torch.tensor([lam, 0.0, 0.0], dtype=torch.float64), rtol=1e-14, atol=1e-13
    )
    low = lanczos_top_eigenpairs(H, 2, which="smallest", generator=g)
    assert low.converged
    assert_close(low.values, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-13)


# -- power iteration ---------------------------------------------------------------------------


def test_power_iteration_dominant_eigenpair_and_certificate(generator):
    A, _ = known_spectrum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = power_iteration(A, tol=1e-9, max_iters=2000, generator=generator)
    assert float(res.values[0]) == pytest.approx(10.0, rel=1e-8)
    assert 10.0 - abs(float(res.values[0])) <= float(res.error_bounds[0])
    v = res.vectors[:, 0]
    assert float(torch.linalg.vector_norm(A @ v - res.values[0] * v)) == pytest.approx(
        float(res.residuals[0]), rel=1e-6, abs=1e-12
    )
    # the certificate tightens only like log(p/δ)/m: a loose tolerance is certified
    loose = power_iteration(A, tol=0.1, max_iters=2000, generator=generator)
    assert loose.converged
    assert 10.0 - abs(float(loose.values[0])) <= float(loose.error_bounds[0]) <= 1.0


def test_power_iteration_signed_dominant_value(generator):
    A = torch.diag(torch.tensor([-4.0, 1.0, 2.0], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = power_iteration(A, tol=1e-10, max_iters=200, generator=generator)
    assert float(res.values[0]) == pytest.approx(-4.0, rel=1e-9)


def test_power_iteration_warns_when_not_converged(generator):
    A, _ = known_spectrum()
    with pytest.warns(ConvergenceWarning, match="power iteration"):
        res = power_iteration(A, tol=1e-12, max_iters=2, generator=generator)
    assert not res.converged
    assert res.num_matvecs == 2


def test_power_iteration_user_start_is_not_certified():
    A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    with pytest.warns(ConvergenceWarning):
        res = power_iteration(A, v0=torch.tensor([0.0, 1.0], dtype=torch.float64), max_iters=5)
    assert float(res.values[0]) == 1.0  # the start is orthogonal to the top eigenvector
    assert math.isinf(float(res.error_bounds[0]))


def test_power_iteration_bad_arguments():
    with pytest.raises(ValueError, match="max_iters"):
        power_iteration(torch.eye(2), max_iters=0)
    with pytest.raises(ValueError, match="failure_probability"):
        power_iteration(torch.eye(2), failure_probability=1.5)


def _warm_started_mlp_hessian() -> tuple[HessianOperator, torch.Tensor]:
    """Float32 Hessian of a 784-64-64-10 tanh MLP and a gradient-plus-noise start vector."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # nn.Linear's default initialisation, inside a forked RNG
        model = nn.Sequential(
            nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
        ).eval()
    X = torch.randn(200, 784, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (200,), generator=g), 10).float()
    H = HessianOperator(model, half_mse, (X, y))
    grad = H.gradient().to(torch.float64)
    r = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return H, grad / torch.linalg.vector_norm(grad) + 1e-2 * r / torch.linalg.vector_norm(r)


def test_budget_never_ends_on_an_empty_refined_segment(monkeypatch):
    # Regression: a warm-started run whose locked vector turned out uncertifiable was refined
    # (unlocked and restarted) with no budget left for one step, and returned no value at all.
    H, v0 = _warm_started_mlp_hessian()
    hopeless = []
    orig = KrylovEngine._hopeless

    def recording(self, ans):
        out = orig(self, ans)
        hopeless.append(out)
        return out

    monkeypatch.setattr(KrylovEngine, "_hopeless", recording)
    for m in (28, 30, 32):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = lanczos_top_eigenpairs(
                H, 1, tol=1e-14, max_iters=m, v0=v0, generator=torch.Generator().manual_seed(0)
            )
        assert res.values.numel() == 1
        assert res.num_matvecs <= m
        assert not res.converged
        assert bool(torch.isfinite(res.values).all())
    assert any(hopeless)  # the refine path was exercised


# --------------------------------------------------------------------------------------------
# the single-vector step and the segment-mode assessment against dense float64 references
# --------------------------------------------------------------------------------------------
def _engine(A, k=1, which="largest", seed=0, **cfg):
    config = LanczosConfig(**{"tol": 1e-12, "max_iters": 200, **cfg})
    return KrylovEngine(
        as_operator(A), k, which, config, v0=None, generator=torch.Generator().manual_seed(seed)
    )


def _steps(engine, n):
    for _ in range(n):
        engine._expand()
    m = engine.seg.m
    return engine.B[: m + 1].T.to(torch.float64), engine.seg.H, float(engine.seg.F[0, -1])


@pytest.mark.parametrize("steps", [1, 2, 12, 30])
def test_single_vector_steps_are_the_dense_float64_lanczos_relation(steps):
    """After ``m`` steps: ``Q`` orthonormal, ``H = QᵀAQ`` tridiagonal and ``AQ = QH + βqeᵀ``,
    all against the dense float64 matrix; and the same tridiagonal as the batched block path
    (``plain_lanczos``, independent code) from the same start vector."""
    A, _ = known_spectrum(p=60, seed=3)
    eng = _engine(A)
    Qe, H, beta = _steps(eng, steps)
    Q, q_next = Qe[:, :steps], Qe[:, steps]
    eps = torch.finfo(torch.float64).eps
    normA = float(torch.linalg.matrix_norm(A, ord=2))
    # rounding level of full reorthogonalisation: a few eps·sqrt(m) (derived bound 4·eps·sqrt(m))
    orth = float(torch.linalg.matrix_norm(Qe.T @ Qe - torch.eye(steps + 1, dtype=torch.float64)))
    assert orth <= 4 * eps * math.sqrt(steps + 1) * 4
    assert torch.allclose(H, H.T, rtol=0, atol=0)
    assert (torch.triu(H, 2) == 0).all()
    assert_close(Q.T @ A @ Q, H, rtol=0, atol=64 * eps * normA)
    R = A @ Q - Q @ H
    R[:, -1] -= beta * q_next
    assert float(torch.linalg.matrix_norm(R)) <= 64 * eps * normA * math.sqrt(steps)
    start = eng.B[0].clone().unsqueeze(1)
    alpha, betas, _, _, _ = plain_lanczos(eng.A, start, steps)
    assert_close(torch.diagonal(H), alpha[0], rtol=0, atol=64 * eps * normA)
    assert_close(
        torch.cat([torch.diagonal(H, -1), torch.tensor([beta], dtype=torch.float64)]),
        betas[0],
        rtol=0,
        atol=64 * eps * normA,
    )


def test_single_vector_steps_float32_operator_within_the_product_model():
    """Float32 products, float64 basis: the basis stays orthonormal to float64 round-off and
    ``H`` is ``QᵀAQ`` (exact float64 A) up to the modelled product error: each column of the
    relation errs by the rounding of its float32 input (eps32·‖A‖) plus one product
    (``product_rtol = 4·eps32``, modelled), so an entry of ``QᵀAQ − H`` by at most 5·eps32·‖A‖
    from each of its two columns."""
    A, _ = known_spectrum(p=80, seed=4)
    eng = _engine(A.float())
    Qe, H, _ = _steps(eng, 25)
    Q = Qe[:, :25]
    eps64, eps32 = torch.finfo(torch.float64).eps, torch.finfo(torch.float32).eps
    A64 = A.float().double()
    normA = float(torch.linalg.matrix_norm(A64, ord=2))
    orth = float(torch.linalg.matrix_norm(Qe.T @ Qe - torch.eye(26, dtype=torch.float64)))
    assert orth <= 16 * eps64 * math.sqrt(26)
    assert float((Q.T @ A64 @ Q - H).abs().max()) <= 10 * eps32 * normA


def test_single_vector_breakdown_keeps_the_basis_orthonormal():
    """Four distinct eigenvalues (3, 2, 1 and a 37-fold 0): the Krylov space is invariant
    after 4 products; the step reports the breakdown, replaces the next vector by a random one
    orthogonal to the basis (after the DGKS-guarded Gram–Schmidt), and the whole basis stays
    orthonormal (dense reference)."""
    d = torch.zeros(40, dtype=torch.float64)
    d[:3] = torch.tensor([3.0, 2.0, 1.0])
    eng = _engine(torch.diag(d))
    Qe, H, beta = _steps(eng, 3)
    assert not eng.seg.broken
    assert beta > 0.1
    Qe, H, beta = _steps(eng, 1)
    assert eng.seg.broken
    assert eng.invariant
    assert beta == 0.0
    exact = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert_close(torch.linalg.eigvalsh(H), exact, rtol=0, atol=1e-13)
    eps = torch.finfo(torch.float64).eps
    orth = float(torch.linalg.matrix_norm(Qe.T @ Qe - torch.eye(5, dtype=torch.float64)))
    assert orth <= 64 * eps


@pytest.mark.parametrize(
    ("k", "which", "criterion", "dtype"),
    [
        (1, "largest", "eigenvalue", torch.float64),
        (1, "largest", "eigenvalue", torch.float32),
        (3, "largest", "residual", torch.float64),
        (2, "smallest", "eigenvalue", torch.float64),
        (2, "both", "eigenvalue", torch.float32),
    ],
)
@pytest.mark.parametrize("steps", [1, 4, 15])
def test_segment_assessment_equals_the_general_path(k, which, criterion, dtype, steps):
    """The NumPy segment-mode assessment computes exactly what the general (locked + segment)
    assessment computes with no locked vectors: values, bounds, residuals, thresholds and the
    certified / polish decisions, also with the loss-of-orthogonality override."""
    A, _ = known_spectrum(p=50, seed=1)
    eng = _engine(A.to(dtype), k=k, which=which, criterion=criterion, tol=1e-3)
    for _ in range(steps):
        eng._expand()
    for eps_orth in (None, 1e-9):
        fast = eng._assess_segment(eps_orth)
        floor_fast, raw_fast = eng._floor.clone(), eng._raw.clone()
        ref = eng._assess_general(eps_orth)
        assert fast.mode == ref.mode == "segment"
        assert torch.equal(fast.top, ref.top)
        assert torch.equal(fast.bottom, ref.bottom)
        for name in ("values", "bounds", "residuals", "thresholds", "eta"):
            assert_close(getattr(fast, name), getattr(ref, name), rtol=1e-13, atol=1e-300)
        assert_close(floor_fast, eng._floor, rtol=1e-13, atol=1e-300)
        assert_close(raw_fast, eng._raw, rtol=1e-13, atol=1e-300)
        assert (fast.certified, fast.polish, fast.norm) == (ref.certified, ref.polish, ref.norm)
