"""Models: attention out of the box; stochastic layers leave buffers and the RNG as found."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from cases import get_case
from dynstab.curvature import (
    GaussNewtonOperator,
    HessianOperator,
    dense_gauss_newton,
    dense_hessian,
    gram_matrix,
)
from dynstab.losses import half_mse
from dynstab.measures import sharpness
from helpers import assert_close, scale_atol


def test_transformer_encoder_layer_fails_without_the_math_kernel():
    """The defect being fixed: CPU fused attention has no double backward."""
    pr = get_case("transformer_encoder").build()
    P = {k: v.detach().clone().requires_grad_(True) for k, v in pr.model.named_parameters()}
    loss = half_mse(functional_call(pr.model, P, (pr.X,)), pr.y)
    grads = torch.autograd.grad(loss, list(P.values()), create_graph=True)
    ones = [torch.ones_like(t) for t in grads]
    with pytest.raises(RuntimeError, match=r"derivative for .*not implemented"):
        torch.autograd.grad(grads, list(P.values()), grad_outputs=ones)


def test_transformer_encoder_layer_works_out_of_the_box(generator):
    pr = get_case("transformer_encoder").build()
    fast = torch.backends.mha.get_fastpath_enabled()
    rep = sharpness(pr.model, half_mse, pr.data, ("lambda_max", "trace"), method="lanczos",
                    tol=1e-10, num_probes=4, generator=generator)  # fmt: skip
    H = dense_hessian(pr.model, half_mse, pr.data)
    assert_close(rep.lambda_max.value, torch.linalg.eigvalsh(H)[-1], rtol=1e-8)
    G = GaussNewtonOperator(pr.model, half_mse, pr.data)
    assert G.jvp_mode == "forward"
    G_ref = dense_gauss_newton(pr.model, half_mse, pr.data)
    assert_close(G.to_dense(), G_ref, rtol=1e-8, atol=scale_atol(G_ref))
    assert gram_matrix(pr.model, pr.X).shape == (6, 6)
    assert torch.backends.mha.get_fastpath_enabled() == fast  # global switch restored


def test_train_mode_batchnorm_and_dropout_leave_buffers_and_rng_as_found():
    """Issue 12: allow_stochastic=True left BatchNorm running statistics changed."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.3),
                          nn.Linear(5, 1)).double()  # fmt: skip
    X = torch.randn(12, 3, dtype=torch.float64, generator=g)
    y = torch.randn(12, 1, dtype=torch.float64, generator=g)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4,
                                         shuffle=True)  # fmt: skip
    for data in ((X, y), loader):
        for method in ("exact", "lanczos"):
            sharpness(model, half_mse, data, ("lambda_max", "trace"), method=method,
                      allow_stochastic=True, num_probes=4,
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
        with pytest.raises(ValueError, match=r"BatchNorm in train mode.*per-sample Jacobians"):
            gram_matrix(model, X, allow_stochastic=True)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running_mean, running_var, num_batches_tracked
    assert model.training


@pytest.mark.parametrize("cls", [HessianOperator, GaussNewtonOperator])
def test_stochastic_operator_is_one_fixed_symmetric_matrix(cls):
    """Every product sees the same dropout masks, so products are repeatable and symmetric."""
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    X = torch.randn(10, 3, dtype=torch.float64, generator=g)
    y = torch.randn(10, 2, dtype=torch.float64, generator=g)
    batches = [(X[:4], y[:4]), (X[4:], y[4:])]
    op = cls(model, half_mse, batches, allow_stochastic=True, cache_graph=False)
    v = torch.randn(op.shape[0], dtype=torch.float64, generator=g)
    assert torch.equal(op @ v, op @ v)
    A = op.to_dense()
    assert_close(A, A.T, rtol=0, atol=scale_atol(A, 1e-13))
    # the masks are one draw from the RNG state at set-up: a second operator set up at the
    # same state gives the same matrix, and the caller's RNG stream is not advanced
    op2 = cls(model, half_mse, batches, allow_stochastic=True, cache_graph=False)
    assert torch.equal(op2 @ v, op @ v)


def test_dropout_gram_draws_per_sample_masks_and_leaves_rng_alone():
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 1)).double()
    X = torch.randn(5, 3, dtype=torch.float64, generator=g)
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match="Dropout"):
        gram_matrix(model, X)
    K = gram_matrix(model, X, allow_stochastic=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_close(K, K.T, rtol=0, atol=scale_atol(K, 1e-14))
    assert float(torch.linalg.eigvalsh(K)[0]) >= -1e-12 * float(K.abs().max())
    model.eval()
    K_eval = gram_matrix(model, X)
    assert not torch.allclose(K, K_eval)  # the masks were applied
