import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cases import flat_trainable, get_case, reference_loss
from dynstab.curvature import HessianOperator, dense_hessian
from dynstab.losses import half_mse
from helpers import assert_close, scale_atol


def autograd_hessian(problem) -> torch.Tensor:
    """Independent reference: torch.autograd.functional.hessian of the flat loss."""
    return torch.autograd.functional.hessian(reference_loss(problem), flat_trainable(problem))


def test_dense_hessian_matches_autograd_reference(case):
    H = dense_hessian(case.model, case.loss_fn, case.data, chunk_size=7)
    ref = autograd_hessian(case)
    assert_close(H, ref, rtol=1e-8, atol=scale_atol(ref))
    assert_close(H, H.T, rtol=1e-10, atol=scale_atol(ref))


def test_hvp_matvec_and_block_match_dense(case, generator):
    H = HessianOperator(case.model, case.loss_fn, case.data)
    ref = autograd_hessian(case)
    p = ref.shape[0]
    V = torch.randn(p, 3, generator=generator, dtype=torch.float64)
    assert_close(H @ V, ref @ V, rtol=1e-8, atol=scale_atol(ref @ V))
    assert_close(H @ V[:, 0], ref @ V[:, 0], rtol=1e-8, atol=scale_atol(ref @ V))
    assert H.num_matvecs == 4
    assert H.shape == (p, p)
    assert H.dtype == torch.float64


def test_linear_model_hessian_is_xtx_over_n():
    pr = get_case("linear").build()
    H = dense_hessian(pr.model, half_mse, pr.data)
    ref = pr.X.T @ pr.X / pr.X.shape[0]
    assert_close(H, ref, rtol=1e-12, atol=scale_atol(ref))


def test_diagonal_net_hessian_closed_form():
    """f = ⟨a⊙b, x⟩: H = JᵀJ/n + [[0, D], [D, 0]].

    Here J_i = [b⊙x_i, a⊙x_i] and D = diag(mean_i r_i x_i).
    """
    pr = get_case("diagonal_linear").build()
    a, b = pr.model.a.detach(), pr.model.b.detach()
    X, n = pr.X, pr.X.shape[0]
    r = X @ (a * b) - pr.y
    J = torch.cat([X * b, X * a], dim=1)
    D = torch.diag((r[:, None] * X).mean(0))
    Z = torch.zeros_like(D)
    ref = J.T @ J / n + torch.cat([torch.cat([Z, D], 1), torch.cat([D, Z], 1)], 0)
    H = dense_hessian(pr.model, half_mse, pr.data)
    assert_close(H, ref, rtol=1e-10, atol=scale_atol(ref))


@pytest.mark.parametrize("cache_graph", [False, True])
def test_dataloader_uneven_batches_weighted_like_full_batch(cache_graph):
    pr = get_case("mlp_tanh").build()  # n = 10 -> batches 4, 4, 2
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=4, shuffle=False)
    H_loader = HessianOperator(pr.model, half_mse, loader, cache_graph=cache_graph).to_dense()
    H_full = dense_hessian(pr.model, half_mse, pr.data)
    assert_close(H_loader, H_full, rtol=1e-10, atol=scale_atol(H_full))


def test_list_of_batches_accepted_one_shot_iterator_refused():
    """Products re-read the data on every pass: a generator cannot be read twice."""
    pr = get_case("linear").build()
    batches = [(pr.X[:5], pr.y[:5]), (pr.X[5:], pr.y[5:])]
    H_list = HessianOperator(pr.model, half_mse, batches).to_dense()
    ref = pr.X.T @ pr.X / 12
    assert_close(H_list, ref, rtol=1e-12, atol=scale_atol(ref))
    for one_shot in (iter(batches), (b for b in batches)):
        with pytest.raises(TypeError, match=r"one-shot iterator.*list\(data\)"):
            HessianOperator(pr.model, half_mse, one_shot)


def test_explicit_params_evaluate_at_that_point(generator):
    pr = get_case("mlp_tanh").build()
    other = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=generator, dtype=v.dtype)
             for k, v in pr.model.named_parameters()}  # fmt: skip
    H_params = dense_hessian(pr.model, half_mse, pr.data, params=other)
    with torch.no_grad():
        for k, v in pr.model.named_parameters():
            v.copy_(other[k])
    H_moved = dense_hessian(pr.model, half_mse, pr.data)
    assert_close(H_params, H_moved, rtol=1e-12, atol=1e-14)


def test_mode_and_grad_left_exactly_as_found():
    pr = get_case("mlp_tanh").build()
    model = pr.model
    model.train()
    model[0].weight.grad = torch.full_like(model[0].weight, 3.0)
    model[2].eval()  # a mixed-mode model must stay mixed
    modes = [m.training for m in model.modules()]
    H = HessianOperator(model, half_mse, pr.data)
    H @ torch.ones(H.shape[0], dtype=torch.float64)
    H.gradient()
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 3.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")


# -- bad inputs ------------------------------------------------------------------------------


def _lin():
    pr = get_case("linear").build()
    return pr.model, pr.X, pr.y


def test_wrong_params_keys_listed():
    model, X, y = _lin()
    with pytest.raises(ValueError, match=r"unexpected keys \['w'\].*\['weight'\]"):
        HessianOperator(model, half_mse, (X, y), params={"w": torch.zeros(1, 5)})


def test_wrong_param_shape():
    model, X, y = _lin()
    with pytest.raises(ValueError, match=r"must have shape \(1, 5\)"):
        HessianOperator(model, half_mse, (X, y), params={"weight": torch.zeros(5)})


@pytest.mark.parametrize(
    ("data", "exc", "match"),
    [
        ([], ValueError, "data is empty"),
        ((torch.zeros(0, 5, dtype=torch.float64), torch.zeros(0, 1)), ValueError, "empty"),
        ((torch.zeros(3, 5, dtype=torch.float64), torch.zeros(4, 1)), ValueError, "same number"),
        (torch.zeros(3, 5), TypeError, "data"),
        ([(torch.zeros(3, 5),)], TypeError, "pair"),
    ],
)
def test_bad_data(data, exc, match):
    model, _, _ = _lin()
    with pytest.raises(exc, match=match):
        HessianOperator(model, half_mse, data)


def test_input_shape_mismatch_is_explained():
    model, X, y = _lin()
    with pytest.raises(ValueError, match=r"model\(inputs\) failed for inputs of shape \(12, 4\)"):
        HessianOperator(model, half_mse, (X[:, :4], y))


def test_output_target_shape_mismatch():
    model, X, _ = _lin()
    with pytest.raises(ValueError, match="matching per-sample sizes"):
        HessianOperator(model, half_mse, (X, torch.zeros(12, 2, dtype=torch.float64)))


def test_non_finite_loss():
    model, X, y = _lin()
    y = y.clone()
    y[3] = float("nan")
    with pytest.raises(ValueError, match="loss is not finite"):
        HessianOperator(model, half_mse, (X, y))


def test_non_scalar_loss():
    model, X, y = _lin()
    with pytest.raises(ValueError, match="scalar tensor"):
        HessianOperator(model, lambda o, t: (o - t) ** 2, (X, y))


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.BatchNorm1d(4, dtype=torch.float64), "BatchNorm in train mode"),
        (nn.Dropout(0.5), "Dropout"),
    ],
)
def test_stochastic_layers_refused_in_train_mode_only(layer, match):
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 1)).double()
    X, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        HessianOperator(model, half_mse, (X, y))
    assert model.training  # not switched by the check
    HessianOperator(model, half_mse, (X, y), allow_stochastic=True)  # explicit opt-in works
    model.eval()
    H = HessianOperator(model, half_mse, (X, y))
    assert H.to_dense().shape == (sum(p.numel() for p in model.parameters()),) * 2
    assert not model.training


def test_loss_not_callable_and_model_wrong_type():
    model, X, y = _lin()
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        HessianOperator(model, "mse", (X, y))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        HessianOperator(lambda x: x, half_mse, (X, y))


def test_model_without_parameters():
    with pytest.raises(ValueError, match="no parameters"):
        HessianOperator(nn.Identity(), half_mse, (torch.zeros(2, 1), torch.zeros(2, 1)))
