import itertools
import math
import warnings

import pytest
import torch

from criteria_cases import J_REG, K_REG, random_jacobians
from dynstab.criteria import (
    StabilityProblem,
    commuting_eta_star,
    critical_lr,
    eta_star,
    gd_threshold,
    gram_coordinates,
    mixing_p,
    spectral,
)
from dynstab.criteria.gram import GramCoordinates, generalized_sharpness
from dynstab.criteria.reference import gram_from_jacobians, parameter_space_eta_star
from dynstab.errors import ConvergenceWarning

# Hand-computed values on K_REG (n = 3, p = 4): (sampling, B, p, η*)
REGRESSION_ROWS = [
    ("with", 1, 1.0, 0.4434007919),
    ("without", 1, 1.0, 0.4434007919),
    ("with", 2, 0.5, 0.6249971971),
    ("without", 2, 0.25, 0.7775166986),
    ("with", 3, 1 / 3, 0.7200901118),
    ("without", 3, 0.0, 0.9915103182),
]


def test_regression_spectrum_to_printed_digits():
    lam = torch.linalg.eigvalsh(K_REG)
    torch.testing.assert_close(
        lam, torch.tensor([0.155310, 0.827565, 2.017125], dtype=torch.float64), atol=5e-7, rtol=0
    )
    assert float(K_REG.trace()) == pytest.approx(3.0, abs=1e-14)
    assert float(torch.linalg.norm(K_REG)) == pytest.approx(2.185813, abs=5e-7)
    assert gd_threshold(float(lam[-1])) == pytest.approx(0.991510, abs=5e-7)


@pytest.mark.parametrize("method", ["dense", "matrix_free"])
@pytest.mark.parametrize(("sampling", "B", "p", "expected"), REGRESSION_ROWS)
def test_regression_table(method, sampling, B, p, expected):
    res = eta_star(K_REG, B, sampling, method=method)
    assert res.p == pytest.approx(p, rel=1e-15)
    assert abs(res.eta_star - expected) < 1e-9
    assert res.generalized_sharpness == pytest.approx(2.0 / res.eta_star, rel=1e-15)
    assert res.method == method
    assert res.converged
    assert res.rank == 3
    assert abs(parameter_space_eta_star(J_REG, B, sampling) - expected) < 1e-9


@pytest.mark.parametrize("C", [1, 2])
def test_gram_equals_parameter_space_on_random_instances(C):
    g = torch.Generator().manual_seed(100 + C)
    checked = 0
    for _ in range(12):
        n = int(torch.randint(2, 6, (1,), generator=g))
        P = int(torch.randint(1, 8, (1,), generator=g))  # includes rank-deficient K
        J = random_jacobians(g, n, P, C)
        K = gram_from_jacobians(J)
        for sampling in ("with", "without"):
            for B in range(1, n + 1):
                ref = parameter_space_eta_star(J, B, sampling)
                for method in ("dense", "matrix_free"):
                    got = eta_star(K, B, sampling, outputs=C, method=method).eta_star
                    assert got == pytest.approx(ref, rel=1e-9)
                checked += 1
    assert checked >= 50


def test_monotone_in_batch_size_without_replacement():
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        n = int(torch.randint(2, 9, (1,), generator=g))
        K = gram_from_jacobians(
            random_jacobians(g, n, int(torch.randint(1, 10, (1,), generator=g)))
        )
        etas = [eta_star(K, B, "without").eta_star for B in range(1, n + 1)]
        assert all(b >= a * (1 - 1e-12) for a, b in itertools.pairwise(etas))


@pytest.mark.parametrize("C", [1, 2])
def test_full_batch_without_replacement_is_gd(C):
    g = torch.Generator().manual_seed(11)
    for n in (2, 4, 7):
        K = gram_from_jacobians(random_jacobians(g, n, 5, C))
        lam = float(torch.linalg.eigvalsh(K)[-1])
        for method in ("dense", "matrix_free"):
            got = eta_star(K, n, "without", outputs=C, method=method).eta_star
            assert got == pytest.approx(2.0 / lam, rel=1e-10)


def test_batch_one_same_for_both_schemes():
    g = torch.Generator().manual_seed(12)
    K = gram_from_jacobians(random_jacobians(g, 6, 4))
    a = eta_star(K, 1, "with").eta_star
    b = eta_star(K, 1, "without").eta_star
    assert a == pytest.approx(b, rel=1e-14)


def test_orthogonal_equal_norm_samples_give_two_over_trace():
    # g_i = 2·e_i: Tr H = (1/n) Σ ‖g_i‖² = 4 and η* = 2/Tr H exactly (B = 1).
    n = 5
    J = 2.0 * torch.eye(n, 8, dtype=torch.float64)
    K = gram_from_jacobians(J)
    for method in ("dense", "matrix_free"):
        assert eta_star(K, 1, "with", method=method).eta_star == pytest.approx(0.5, rel=1e-12)
    assert parameter_space_eta_star(J, 1) == pytest.approx(0.5, rel=1e-12)


def test_matrix_free_agrees_with_dense_at_n_200():
    g = torch.Generator().manual_seed(5)
    J = random_jacobians(g, 200, 12)
    K = gram_from_jacobians(J)
    coords = gram_coordinates(K)
    for sampling, B in (("with", 1), ("without", 8), ("with", 50)):
        d = eta_star(K, B, sampling, method="dense", coords=coords)
        m = eta_star(K, B, sampling, method="matrix_free", coords=coords)
        assert m.converged
        assert m.num_matvecs > 0
        assert abs(m.eta_star - d.eta_star) <= 1e-6 * d.eta_star


def test_matrix_free_agrees_with_dense_at_full_rank():
    g = torch.Generator().manual_seed(17)
    K = gram_from_jacobians(random_jacobians(g, 40, 45))  # ρ = n = 40
    coords = gram_coordinates(K)
    for sampling, B in (("with", 1), ("without", 5)):
        d = eta_star(K, B, sampling, method="dense", coords=coords)
        m = eta_star(K, B, sampling, method="matrix_free", coords=coords)
        assert m.rank == 40
        assert m.eta_star == pytest.approx(d.eta_star, rel=1e-9)


def test_matrix_free_vector_outputs_agree_with_dense():
    g = torch.Generator().manual_seed(6)
    K = gram_from_jacobians(random_jacobians(g, 40, 9, C=3))
    for B in (1, 4):
        d = eta_star(K, B, "without", outputs=3, method="dense")
        m = eta_star(K, B, "without", outputs=3, method="matrix_free")
        assert m.eta_star == pytest.approx(d.eta_star, rel=1e-9)


def test_auto_chooses_matrix_free_for_large_rank():
    g = torch.Generator().manual_seed(8)
    K = gram_from_jacobians(random_jacobians(g, 70, 75))  # ρ = 70, ρ(ρ+1)/2 > 2000
    res = eta_star(K, 4, "with")
    assert res.method == "matrix_free"
    assert res.rank == 70
    assert res.converged


def test_non_convergence_is_reported():
    g = torch.Generator().manual_seed(9)
    K = gram_from_jacobians(random_jacobians(g, 10, 8))
    with pytest.warns(ConvergenceWarning, match="increase max_iters"):
        res = eta_star(K, 2, "with", method="matrix_free", max_iters=2)
    assert not res.converged
    assert res.num_matvecs == 2


def test_zero_gram_is_infinitely_stable():
    res = eta_star(torch.zeros(3, 3, dtype=torch.float64), 1)
    assert math.isinf(res.eta_star)
    assert res.rank == 0


def test_one_dimensional_closed_form_wme18():
    # WME18 toy: per-sample curvatures (0.2, 3.8): a = 2, s = 1.8, B = 1 → η* = 2a/(a² + s²).
    a, s2 = 2.0, 1.8**2
    curv = torch.tensor([0.2, 3.8], dtype=torch.float64)
    assert commuting_eta_star(curv, 1) == pytest.approx(2 * a / (a * a + s2), rel=1e-14)
    K = gram_from_jacobians(curv.sqrt()[:, None])
    assert eta_star(K, 1).eta_star == pytest.approx(2 * a / (a * a + s2), rel=1e-12)


@pytest.mark.parametrize("sampling", ["with", "without"])
def test_commuting_closed_form_equals_gram(sampling):
    g = torch.Generator().manual_seed(13)
    n, d = 6, 3
    # rank-one commuting: g_i = s_i e_{a(i)}
    s = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    axis = torch.tensor([0, 1, 2, 0, 1, 0])
    J = torch.zeros(n, d, dtype=torch.float64)
    J[torch.arange(n), axis] = s
    curv = J**2
    # vector outputs: J_i = diag(t_i) (C = d), H_i = diag(t_i²)
    t = 0.5 + torch.rand(n, d, generator=g, dtype=torch.float64)
    Jv = torch.diag_embed(t)
    for B in range(1, n + 1):
        assert commuting_eta_star(curv, B, sampling) == pytest.approx(
            eta_star(gram_from_jacobians(J), B, sampling).eta_star, rel=1e-10
        )
        assert commuting_eta_star(t**2, B, sampling) == pytest.approx(
            eta_star(gram_from_jacobians(Jv), B, sampling, outputs=d).eta_star, rel=1e-10
        )


def test_critical_lr_from_gram_and_from_model():
    g = torch.Generator().manual_seed(14)
    model = torch.nn.Linear(3, 2, bias=False).double()
    X = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = model(X).detach()
    from dynstab.curvature import per_sample_jacobian

    J = per_sample_jacobian(model, X)
    ref = parameter_space_eta_star(J, 2, "without")
    res = critical_lr(model, (X, y), batch_size=2, sampling="without")
    assert res.eta_star == pytest.approx(ref, rel=1e-9)
    assert critical_lr(model, X, batch_size=2, sampling="without").eta_star == res.eta_star
    K = gram_from_jacobians(J)
    assert critical_lr(K, batch_size=2, sampling="without", outputs=2).eta_star == pytest.approx(
        ref, rel=1e-9
    )
    assert model.weight.grad is None
    assert model.training


def test_eta_star_is_float64_for_float32_input():
    K = K_REG.float()
    assert abs(eta_star(K, 1).eta_star - 0.4434007919) < 1e-6
    assert gram_coordinates(K).lam.dtype == torch.float64


def test_mixing_weight_reported():
    assert eta_star(K_REG, 2, "without").p == mixing_p(3, 2, "without")


def test_errors():
    with pytest.raises(ValueError, match="square 2-D matrix"):
        eta_star(torch.ones(2, 3, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        eta_star(K_REG, 4, "without")
    with pytest.raises(ValueError, match="unknown sampling"):
        eta_star(K_REG, 1, "reshuffle")
    with pytest.raises(ValueError, match="positive semi-definite"):
        eta_star(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)), 1)
    with pytest.raises(ValueError, match="symmetric"):
        eta_star(torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="finite"):
        eta_star(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]), 1)
    with pytest.raises(TypeError, match="floating point"):
        eta_star(torch.eye(2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="shape \\(n\\*C, n\\*C\\) with C = outputs = 2"):
        eta_star(K_REG, 1, outputs=2)
    with pytest.raises(ValueError, match="unknown method"):
        eta_star(K_REG, 1, method="svd")
    with pytest.raises(ValueError, match="rank_tol must be in"):
        gram_coordinates(K_REG, rank_tol=1.5)
    with pytest.raises(TypeError, match=r"Gram matrix Tensor or an nn\.Module"):
        critical_lr([[1.0]], batch_size=1)
    with pytest.raises(ValueError, match="needs the training inputs"):
        critical_lr(torch.nn.Linear(2, 1), batch_size=1)
    with pytest.raises(ValueError, match="lambda_max must be finite and >= 0"):
        gd_threshold(-1.0)
    with pytest.raises(ValueError, match=r"curvatures must be finite and >= 0"):
        commuting_eta_star(torch.tensor([1.0, -1.0]), 1)
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, d\)"):
        commuting_eta_star(torch.ones(2, 2, 2), 1)


def test_gd_threshold_values():
    assert gd_threshold(4.0) == 0.5
    assert math.isinf(gd_threshold(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eta_star(K_REG, 2, "with", method="matrix_free")


def test_critical_lr_rejects_outputs_contradicting_the_model():
    g = torch.Generator().manual_seed(21)
    model = torch.nn.Linear(3, 1).double()
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"C = 1 .*shape \(6, 6\) for n = 6.*got outputs=2"):
        critical_lr(model, X, batch_size=1, outputs=2)
    res = critical_lr(model, X, batch_size=1, outputs=1)
    assert res.eta_star == critical_lr(model, X, batch_size=1).eta_star
    from dynstab.curvature import per_sample_jacobian

    K = gram_from_jacobians(per_sample_jacobian(model, X))
    assert res.eta_star == pytest.approx(eta_star(K, 1).eta_star, rel=1e-12)


def test_critical_lr_empty_data_and_train_mode_batchnorm():
    model = torch.nn.Linear(2, 1).double()
    X = torch.zeros(0, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"data batch 0 is empty \(0 samples\)"):
        critical_lr(model, (X, torch.zeros(0, 1, dtype=torch.float64)), batch_size=1)
    with pytest.raises(ValueError, match="non-empty leading sample axis"):
        critical_lr(model, X, batch_size=1)
    bn = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).double()
    before = bn[1].running_mean.clone(), int(bn[1].num_batches_tracked)
    with pytest.raises(ValueError, match="BatchNorm in train mode"):
        critical_lr(bn, torch.ones(4, 2, dtype=torch.float64), batch_size=1)
    assert torch.equal(bn[1].running_mean, before[0])
    assert int(bn[1].num_batches_tracked) == before[1]


def test_eta_star_empty_gram():
    with pytest.raises(ValueError, match="K must describe at least one sample"):
        eta_star(torch.zeros(0, 0, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="K must describe at least one sample"):
        gram_coordinates(torch.zeros(0, 0, dtype=torch.float64))


# ---------------------------------------------------------------- set-up paths of large K


def _orthogonal_equal_norm(g: torch.Generator, n: int, C: int) -> torch.Tensor:
    """J ∈ ℝ^{n×C×5} with orthogonal columns, norms 2, 2, 2, 1, ½: a 3-fold top eigenvalue."""
    Q, _ = torch.linalg.qr(torch.randn(n * C, 5, generator=g, dtype=torch.float64))
    J = Q * torch.tensor([2.0, 2.0, 2.0, 1.0, 0.5], dtype=torch.float64) * n**0.5
    return J.reshape(n, C, 5)


@pytest.mark.parametrize("C", [1, 2])
def test_large_low_rank_gram_takes_the_pivoted_cholesky_and_matches_kronecker(C, monkeypatch):
    """N = nC ≥ 256, rank ≤ 6: the rank screen lets dpstrf run; η* vs the Kronecker formula."""
    g = torch.Generator().manual_seed(300 + C)
    calls = {"screen": 0}
    screen = spectral._rank_above_half

    def counting(*args, **kwargs):
        calls["screen"] += 1
        return screen(*args, **kwargs)

    monkeypatch.setattr(spectral, "_rank_above_half", counting)
    n = 300 // C
    for J in (random_jacobians(g, n, 6, C), _orthogonal_equal_norm(g, n, C)):
        K = gram_from_jacobians(J)
        assert not screen(K, 1e-8 * float(K.diagonal().max()))
        prob = StabilityProblem.from_gram(K, C)
        assert prob.spectral_method.startswith("pivoted Cholesky")
        lam = prob.coordinates.lam
        if J.shape[-1] == 5:
            assert float(lam[0] - lam[2]) <= 1e-12 * float(lam[0])  # repeated top eigenvalue
        for sampling, B in (("with", 1), ("with", 7), ("without", 5), ("without", n - 1)):
            got = prob.eta_star(prob.sampling(B, sampling))
            assert got.converged
            ref = parameter_space_eta_star(J, B, sampling)
            assert got.eta_star == pytest.approx(ref, rel=1e-9)  # certified 1e-10 + round-off
    assert calls["screen"] == 2


@pytest.mark.parametrize("C", [1, 2])
def test_large_full_rank_gram_skips_dpstrf_and_matches_torch_eigh(C, monkeypatch):
    """N ≥ 256 of full rank: no pivoted Cholesky is attempted, SciPy's dsyevd gives the
    spectrum; η* equals the one on coordinates from ``torch.linalg.eigh`` (both certified to
    1e-10; matrix-free, ρ(ρ+1)/2 = 45,150 is beyond the dense solver)."""

    def no_dpstrf(*args, **kwargs):
        raise AssertionError("dpstrf must not run on a full-rank K")

    g = torch.Generator().manual_seed(400 + C)
    n = 300 // C
    J = random_jacobians(g, n, 300 + 20, C)
    K = gram_from_jacobians(J)
    monkeypatch.setattr(spectral.lapack, "dpstrf", no_dpstrf)
    prob = StabilityProblem.from_gram(K, C)
    assert prob.spectral_method == "eigh"
    c = prob.coordinates
    assert c.rank == 300
    lam_t, U_t = torch.linalg.eigh(K)
    lam_t, U_t = lam_t.flip(0), U_t.flip(1)
    torch.testing.assert_close(c.lam, lam_t, rtol=1e-12, atol=1e-13 * float(lam_t[0]))
    # the eigenvectors: orthonormal and K U = U Λ to round-off
    eye = torch.eye(300, dtype=torch.float64)
    assert float((c.U.T @ c.U - eye).abs().max()) < 1e-12
    assert float((K @ c.U - c.U * c.lam).abs().max()) < 1e-12 * float(lam_t[0])
    Gh = (n**0.5) * U_t * lam_t.sqrt()
    ref_coords = GramCoordinates(lam_t, U_t, Gh, n, C, float(lam_t[0]))
    for sampling, B in (("with", 2), ("without", n // 2)):
        s = prob.sampling(B, sampling)
        got = prob.eta_star(s)
        assert got.converged
        assert got.method == "matrix_free"
        ref = generalized_sharpness(ref_coords, s, method="matrix_free", tol=1e-10, max_iters=300)
        assert ref[1]
        assert got.generalized_sharpness == pytest.approx(ref[0], rel=3e-10)


def test_rank_screen_on_a_singular_leading_block_falls_back_to_the_exact_route():
    """A duplicated sample in the leading block: the screen says "not above N/2", dpstrf runs,
    finds rank 299 > N/2 and gives up, and eigh decides: same η* as without the screen."""
    g = torch.Generator().manual_seed(7)
    J = random_jacobians(g, 300, 320, 1)
    J[1] = J[0]
    K = gram_from_jacobians(J)
    assert not spectral._rank_above_half(K, 1e-8 * float(K.diagonal().max()))
    M = spectral.PSDMatrix(K, 1e-10, trusted=True)
    assert M._try_factor() is None
    spec = M.spectrum()
    assert spec.how == "eigh"
    assert spec.values.numel() == 299  # the duplicate's direction is cut at rank_tol
    torch.testing.assert_close(
        spec.values, torch.linalg.eigvalsh(K).flip(0)[:299], rtol=1e-11, atol=1e-12
    )
