import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import dynstab.curvature.jacobian as jacobian_module
from cases import get_case
from dynstab.curvature import (
    dense_gauss_newton,
    dense_jacobian,
    gram_matrix,
    per_sample_jacobian,
)
from helpers import assert_close, scale_atol


def loop_jacobian(problem) -> torch.Tensor:
    """Independent reference: one autograd.grad per (sample, output), trainable parameters."""
    params = list(problem.params.values())
    rows = []
    for i in range(problem.X.shape[0]):
        with sdpa_kernel(SDPBackend.MATH):
            out = problem.model(problem.X[i : i + 1]).reshape(-1)
        for c in range(out.numel()):
            g = torch.autograd.grad(out[c], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1)
                                   for p, gi in zip(params, g)]))  # fmt: skip
    return torch.stack(rows)


def test_per_sample_jacobian_matches_loop(case):
    ref = loop_jacobian(case)
    J = per_sample_jacobian(case.model, case.X)
    n = case.X.shape[0]
    assert J.shape == (n, case.case.outputs, case.num_params)
    assert_close(J.reshape(-1, J.shape[-1]), ref, rtol=1e-10, atol=scale_atol(ref))
    J_chunked = per_sample_jacobian(case.model, case.X, chunk_size=3)
    assert_close(J_chunked, J, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in case.model.parameters())


def test_gram_is_jjt_over_n_sample_major(case):
    J = loop_jacobian(case)  # rows i*C + c
    n = case.X.shape[0]
    ref = J @ J.T / n
    K = gram_matrix(case.model, case.X)
    assert_close(K, ref, rtol=1e-10, atol=scale_atol(ref))


def test_gram_accumulated_per_tensor_equals_full(monkeypatch):
    pr = get_case("mlp_vector_output").build()
    K_full = gram_matrix(pr.model, pr.X)
    monkeypatch.setattr(jacobian_module, "MAX_JACOBIAN_ENTRIES", 1)
    K_acc = gram_matrix(pr.model, pr.X, chunk_size=2)
    assert_close(K_acc, K_full, rtol=1e-12, atol=scale_atol(K_full))


def test_gram_spectrum_equals_gn_spectrum(mse_case):
    K = gram_matrix(mse_case.model, mse_case.X)
    G = dense_gauss_newton(mse_case.model, mse_case.loss_fn, mse_case.data)
    eK = torch.linalg.eigvalsh(K).flip(0)
    eG = torch.linalg.eigvalsh(G).flip(0)
    r = min(eK.numel(), eG.numel())
    assert_close(eK[:r], eG[:r], rtol=1e-8, atol=scale_atol(eG))
    assert_close(K.trace(), G.trace(), rtol=1e-10)
    assert_close(torch.linalg.norm(K), torch.linalg.norm(G), rtol=1e-10)
    # the remaining eigenvalues of the larger matrix are zero
    rest = eK[r:] if eK.numel() > r else eG[r:]
    largest_rest = float(rest.abs().max()) if rest.numel() else 0.0
    assert largest_rest <= 1e-10 * float(eG[0])


def test_linear_model_jacobian_is_x():
    pr = get_case("linear").build()
    assert_close(dense_jacobian(pr.model, pr.X), pr.X, rtol=1e-15)
    assert_close(gram_matrix(pr.model, pr.X), pr.X @ pr.X.T / 12, rtol=1e-12)


def test_bad_inputs():
    pr = get_case("linear").build()
    with pytest.raises(ValueError, match="non-empty leading sample axis"):
        gram_matrix(pr.model, pr.X[:0])
    with pytest.raises(TypeError, match="inputs must be a Tensor"):
        per_sample_jacobian(pr.model, [[1.0]])
    with pytest.raises(ValueError, match="per-sample Jacobian failed"):
        per_sample_jacobian(pr.model, pr.X[:, :3])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        per_sample_jacobian(pr.model, pr.X, chunk_size=0)
