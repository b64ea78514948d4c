import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cases import INTERPOLATING_CASES, get_case
from dynstab.curvature import (
    GaussNewtonOperator,
    dense_gauss_newton,
    dense_hessian,
    dense_jacobian,
    dense_output_hessian,
)
from dynstab.losses import cross_entropy, half_mse
from helpers import assert_close, scale_atol


def test_gn_operator_matches_dense_reference(case, generator):
    G = GaussNewtonOperator(case.model, case.loss_fn, case.data)
    ref = dense_gauss_newton(case.model, case.loss_fn, case.data)
    V = torch.randn(ref.shape[0], 3, generator=generator, dtype=torch.float64)
    assert_close(G @ V, ref @ V, rtol=1e-8, atol=scale_atol(ref @ V))
    assert_close(G.to_dense(), ref, rtol=1e-8, atol=scale_atol(ref))


def test_gn_is_symmetric_psd(case):
    G = dense_gauss_newton(case.model, case.loss_fn, case.data)
    assert_close(G, G.T, rtol=1e-10, atol=scale_atol(G))
    assert float(torch.linalg.eigvalsh(G)[0]) >= -1e-10 * float(G.abs().max())


def test_half_mse_gn_is_jtj_over_n(mse_case):
    J = dense_jacobian(mse_case.model, mse_case.X)
    n = mse_case.X.shape[0]
    ref = J.T @ J / n
    G = GaussNewtonOperator(mse_case.model, half_mse, mse_case.data).to_dense()
    assert_close(G, ref, rtol=1e-8, atol=scale_atol(ref))


@pytest.mark.parametrize("c", INTERPOLATING_CASES, ids=[c.id for c in INTERPOLATING_CASES])
def test_hessian_equals_gn_at_interpolating_point(c):
    pr = c.build()
    H = dense_hessian(pr.model, pr.loss_fn, pr.data)
    G = GaussNewtonOperator(pr.model, pr.loss_fn, pr.data).to_dense()
    assert_close(H, G, rtol=1e-8, atol=scale_atol(G))


def test_hessian_differs_from_gn_away_from_interpolation():
    pr = get_case("mlp_tanh").build()
    H = dense_hessian(pr.model, pr.loss_fn, pr.data)
    G = dense_gauss_newton(pr.model, pr.loss_fn, pr.data)
    assert float((H - G).abs().max()) > 1e-3 * float(G.abs().max())


def test_cross_entropy_ggn_closed_form():
    """G = (1/n) Σ_i J_iᵀ (diag(s_i) − s_i s_iᵀ) J_i with softmax s_i."""
    pr = get_case("mlp_cross_entropy").build()
    n, C = pr.X.shape[0], 4
    J = dense_jacobian(pr.model, pr.X).reshape(n, C, -1)
    with torch.no_grad():
        s = torch.softmax(pr.model(pr.X), dim=-1)
    ref = sum(J[i].T @ (torch.diag(s[i]) - torch.outer(s[i], s[i])) @ J[i] for i in range(n)) / n
    G = GaussNewtonOperator(pr.model, cross_entropy, pr.data).to_dense()
    assert_close(G, ref, rtol=1e-8, atol=scale_atol(ref))


def test_output_hessian_of_half_mse_is_identity_over_n():
    M = dense_output_hessian(half_mse, torch.zeros(4, 3, dtype=torch.float64), torch.ones(4, 3))
    assert_close(M, torch.eye(12, dtype=torch.float64) / 4, rtol=1e-14)


@pytest.mark.parametrize("cache_graph", [False, True])
def test_dataloader_uneven_batches(cache_graph):
    pr = get_case("mlp_vector_output").build()  # n = 8 -> 3, 3, 2
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=3)
    G = GaussNewtonOperator(pr.model, half_mse, loader, cache_graph=cache_graph).to_dense()
    ref = dense_gauss_newton(pr.model, half_mse, pr.data)
    assert_close(G, ref, rtol=1e-10, atol=scale_atol(ref))
    ref_loader = dense_gauss_newton(pr.model, half_mse, loader)
    assert_close(ref_loader, ref, rtol=1e-10, atol=scale_atol(ref))


def test_grad_and_mode_untouched():
    pr = get_case("two_layer_relu").build()
    pr.model.eval()
    G = GaussNewtonOperator(pr.model, half_mse, pr.data)
    G @ torch.ones(G.shape[0], dtype=torch.float64)
    assert not pr.model.training
    assert all(p.grad is None for p in pr.model.parameters())


def test_bad_inputs_raise():
    pr = get_case("linear").build()
    with pytest.raises(ValueError, match="unexpected keys"):
        GaussNewtonOperator(
            pr.model, half_mse, pr.data, params={"weight": pr.model.weight, "x": pr.model.weight}
        )
    y = pr.y.clone()
    y[0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        GaussNewtonOperator(pr.model, half_mse, (pr.X, y), cache_graph=False)
