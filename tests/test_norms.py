import itertools
import math

import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from dynstab.curvature import dense_gauss_newton, gram_matrix
from dynstab.losses import half_mse
from dynstab.models import DiagonalLinearNet, TwoLayerReLU, UnivariateReLU
from dynstab.norms import (
    balance_diagonal,
    balance_relu,
    balancedness,
    data_weights,
    diagonal_gram,
    diagonal_trace_G,
    gram_spectrum,
    kappa_n,
    path_norm,
    relu_gram,
    relu_trace_G,
    weighted_l1,
    wme18_non_uniformity,
)

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def autograd_trace_G(model, X):
    """Tr(JᵀJ/n) from per-sample output gradients (vmap of jacrev over functional_call)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, x):
        return functional_call(model, p, (x[None],))[0]

    J = vmap(jacrev(f), in_dims=(None, 0))(params, X)
    return float(sum((j.reshape(X.shape[0], -1) ** 2).sum() for j in J.values()) / X.shape[0])


def anisotropic_inputs(n, d, seed):
    X = torch.randn(n, d, generator=gen(seed), dtype=f64)
    return X * torch.linspace(0.2, 3.0, d, dtype=f64)  # s_j differ across coordinates


# ---------------------------------------------------------------- diagonal net


@pytest.mark.parametrize("form", ["ab", "uv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_trace_G_equals_autograd(form, seed):
    net = DiagonalLinearNet(7, form=form, generator=gen(seed), dtype=f64)
    X = anisotropic_inputs(11, 7, seed + 10)
    ref = autograd_trace_G(net, X)
    assert diagonal_trace_G(net, X) == pytest.approx(ref, rel=1e-10, abs=0)


@pytest.mark.parametrize("form", ["ab", "uv"])
def test_balanced_diagonal_trace_is_weighted_l1(form):
    net = DiagonalLinearNet(9, form=form, init_scale=0.7, generator=gen(3), dtype=f64)
    X = anisotropic_inputs(13, 9, 4)
    factor = 2.0 if form == "ab" else 4.0
    trG, l1s = diagonal_trace_G(net, X), weighted_l1(net.beta().detach(), X)
    assert trG >= factor * l1s  # AM–GM lower bound for every parameterization
    assert balancedness(net, X) == pytest.approx(trG / (factor * l1s), rel=1e-12)
    bal = balance_diagonal(net, X)
    torch.testing.assert_close(bal.beta(), net.beta(), rtol=1e-12, atol=1e-15)
    assert diagonal_trace_G(bal, X) == pytest.approx(factor * weighted_l1(bal.beta(), X), rel=1e-14)
    assert autograd_trace_G(bal, X) == pytest.approx(factor * l1s, rel=1e-10)
    assert balancedness(bal, X) == pytest.approx(1.0, rel=1e-14)
    assert balancedness(bal) == pytest.approx(1.0, rel=1e-14)
    assert bal.form == form


def test_balance_diagonal_hand_values_and_sign():
    net = DiagonalLinearNet.from_tensors(
        torch.tensor([4.0, -1.0, 0.0], dtype=f64), torch.tensor([-1.0, -9.0, 2.0], dtype=f64)
    )
    bal = balance_diagonal(net)
    torch.testing.assert_close(bal.a.detach(), torch.tensor([-2.0, 3.0, 0.0], dtype=f64))
    torch.testing.assert_close(bal.b.detach(), torch.tensor([2.0, 3.0, 0.0], dtype=f64))
    assert balancedness(net) == pytest.approx((16 + 1 + 1 + 81 + 4) / (2 * (4 + 9)), rel=1e-14)


def test_weighted_l1_and_data_weights():
    X = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=f64)
    torch.testing.assert_close(data_weights(X), torch.tensor([5.0, 2.0], dtype=f64))
    assert weighted_l1(torch.tensor([-1.0, 3.0], dtype=f64), X) == pytest.approx(11.0)
    assert weighted_l1(torch.tensor([-1.0, 3.0], dtype=f64)) == pytest.approx(4.0)


def test_balancedness_degenerate_cases():
    zero = DiagonalLinearNet.from_tensors(torch.zeros(2, dtype=f64), torch.zeros(2, dtype=f64))
    assert math.isnan(balancedness(zero))
    half = DiagonalLinearNet.from_tensors(
        torch.tensor([1.0, 0.0], dtype=f64), torch.zeros(2, dtype=f64)
    )
    assert balancedness(half) == math.inf


# ---------------------------------------------------------------- two-layer ReLU


@pytest.mark.parametrize("init", ["lw", "r3p"])
@pytest.mark.parametrize("seed", [0, 1])
def test_relu_trace_G_equals_autograd(init, seed):
    net = TwoLayerReLU(6, 9, init=init, generator=gen(seed), dtype=f64)
    X = anisotropic_inputs(15, 6, seed + 20)
    assert relu_trace_G(net, X) == pytest.approx(autograd_trace_G(net, X), rel=1e-10, abs=0)


def test_path_norm_hand_value():
    net = TwoLayerReLU(2, 2, generator=gen(0), dtype=f64)
    with torch.no_grad():
        net.w.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        net.a.copy_(torch.tensor([-2.0, 0.5]))
    assert path_norm(net) == pytest.approx(10.5)
    assert balancedness(net) == pytest.approx((4 + 25 + 0.25 + 1) / (2 * 10.5))


def test_balance_relu_preserves_function_and_minimises_trace():
    d, m = 5, 12
    net = TwoLayerReLU(d, m, generator=gen(5), dtype=f64)
    with torch.no_grad():  # make the scales very unequal across neurons
        c = torch.exp(2 * torch.randn(m, generator=gen(6), dtype=f64))
        net.w.mul_(c[:, None])
        net.a.div_(c)
    X = anisotropic_inputs(40, d, 7)
    bal = balance_relu(net, X)
    X_new = torch.randn(30, d, generator=gen(8), dtype=f64)
    for Z in (X, X_new):
        torch.testing.assert_close(bal(Z), net(Z), rtol=1e-12, atol=1e-12)
    assert path_norm(bal) == pytest.approx(path_norm(net), rel=1e-12)
    tr_before, tr_after = relu_trace_G(net, X), relu_trace_G(bal, X)
    assert tr_after < tr_before
    assert tr_after == pytest.approx(autograd_trace_G(bal, X), rel=1e-10)
    # closed-form optimum: Σ_j 2√(A_j B_j)
    with torch.no_grad():
        pre = X @ net.w.T
        A = (torch.relu(pre) ** 2).mean(0)
        B = net.a**2 * ((pre > 0).double() * (X * X).sum(1)[:, None]).mean(0)
    assert tr_after == pytest.approx(float((2 * torch.sqrt(A * B)).sum()), rel=1e-12)
    # any further per-neuron rescaling cannot lower Tr G
    for seed in range(5):
        cj = torch.exp(0.3 * torch.randn(m, generator=gen(100 + seed), dtype=f64))
        other = balance_relu(bal, X)
        with torch.no_grad():
            other.w.mul_(cj[:, None])
            other.a.div_(cj)
        assert relu_trace_G(other, X) >= tr_after * (1 - 1e-12)


def test_balance_relu_zero_and_dead_neurons():
    net = TwoLayerReLU(2, 3, generator=gen(0), dtype=f64)
    with torch.no_grad():
        net.w.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.0, 1.0]]))
        net.a.copy_(torch.tensor([0.0, 2.0, 1.5]))
    X = torch.tensor([[1.0, 1.0], [2.0, 0.5]], dtype=f64)  # neuron 1 inactive on X
    bal = balance_relu(net, X)
    torch.testing.assert_close(bal.w[1].detach(), net.w[1].detach())  # dead: unchanged
    assert float(bal.w[0].detach().norm()) == 0.0  # a = 0: w shrinks to 0
    torch.testing.assert_close(bal(X), net(X))
    assert relu_trace_G(bal, X) < relu_trace_G(net, X)


def test_relu_balanced_trace_close_to_sqrt_d_path_norm_on_sphere():
    # Wu & Su (2023) R7: after balancing, Tr G ≈ √d ‖θ‖_P for x ~ Unif(√d S^{d−1}); the
    # per-neuron factor is 2√(E σ(ŵᵀx)² · P(ŵᵀx > 0)) / 1 → 2√(½ · ½) = 1 as n → ∞.
    d, m, n = 20, 30, 4000
    Z = torch.randn(n, d, generator=gen(9), dtype=f64)
    X = math.sqrt(d) * Z / Z.norm(dim=1, keepdim=True)
    bal = balance_relu(TwoLayerReLU(d, m, generator=gen(10), dtype=f64), X)
    ratio = relu_trace_G(bal, X) / (math.sqrt(d) * path_norm(bal))
    assert abs(ratio - 1.0) < 0.05  # per-neuron sampling error ≈ 1/√n ≈ 0.016


# ---------------------------------------------------------------- κ_n and R7's lower bound


def brute_force_kappa_circle(X, num=200_000):
    theta = torch.linspace(0, 2 * math.pi, num, dtype=f64)
    U = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return float((torch.relu(U @ X.T) @ X.norm(dim=1) / X.shape[0]).min())


def exact_kappa_3d(X):
    """Exact inf for d = 3: the minimum sits at ±(x_i × x_k)/‖·‖ (vertices of the arrangement)."""
    cands = []
    for i, k in itertools.combinations(range(X.shape[0]), 2):
        c = torch.linalg.cross(X[i], X[k])
        if c.norm() > 0:
            cands += [c / c.norm(), -c / c.norm()]
    U = torch.stack(cands)
    return float((torch.relu(U @ X.T) @ X.norm(dim=1) / X.shape[0]).min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa_n_exact_in_2d_and_R7_lower_bound(seed):
    X = anisotropic_inputs(25, 2, seed + 30)
    kappa = kappa_n(X)
    brute = brute_force_kappa_circle(X)
    # the grid minimum over-estimates the infimum by at most Lipschitz·step
    lip = float((X.norm(dim=1) ** 2).mean())
    assert kappa <= brute + 1e-12
    assert brute - kappa <= lip * (2 * math.pi / 200_000) + 1e-12
    for init in ("lw", "r3p"):
        net = TwoLayerReLU(2, 15, init=init, generator=gen(seed + 40), dtype=f64)
        for model in (net, balance_relu(net, X)):
            assert relu_trace_G(model, X) >= 2 * kappa * path_norm(model) * (1 - 1e-12)


def test_kappa_n_1d_exact_and_3d_estimate_is_upper_and_close():
    X1 = torch.tensor([[1.0], [-2.0], [3.0]], dtype=f64)
    assert kappa_n(X1) == pytest.approx(min((1 + 9) / 3, 4 / 3))
    X = anisotropic_inputs(30, 3, 50)
    exact = exact_kappa_3d(X)
    sampled = kappa_n(X, num_directions=256, generator=gen(1), optimize=False)
    refined = kappa_n(X, num_directions=256, generator=gen(1), optimize=True)
    assert exact <= refined * (1 + 1e-12)  # every estimate is attained by a unit vector
    assert refined <= sampled
    assert refined <= exact * 1.02
    net = TwoLayerReLU(3, 10, generator=gen(2), dtype=f64)
    assert relu_trace_G(net, X) >= 2 * exact * path_norm(net)


def test_kappa_n_deterministic_given_generator():
    X = anisotropic_inputs(20, 4, 60)
    assert kappa_n(X, generator=gen(3)) == kappa_n(X, generator=gen(3))


# ---------------------------------------------------------------- errors


def test_norm_errors():
    uni = UnivariateReLU(3)
    diag = DiagonalLinearNet(3)
    with pytest.raises(TypeError, match="diagonal_trace_G needs a DiagonalLinearNet"):
        diagonal_trace_G(uni, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="relu_trace_G needs a TwoLayerReLU"):
        relu_trace_G(diag, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="path_norm needs a TwoLayerReLU"):
        path_norm(diag)
    with pytest.raises(TypeError, match="balancedness needs"):
        balancedness(uni)
    with pytest.raises(TypeError, match="balance_diagonal needs"):
        balance_diagonal(uni)
    with pytest.raises(TypeError, match="balance_relu needs"):
        balance_relu(diag, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="d = 3 columns"):
        diagonal_trace_G(diag, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        relu_trace_G(TwoLayerReLU(3, 2), torch.zeros(3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        kappa_n([[1.0, 2.0]])
    with pytest.raises(ValueError, match="num_directions must be >= 1"):
        kappa_n(torch.ones(3, 3), num_directions=0)
    with pytest.raises(ValueError, match=r"beta must have shape \(d,\)"):
        weighted_l1(torch.ones(2, 2))


# ------------------------------------------------------------------ measures of a Gram matrix


def test_gram_spectrum_equals_the_dense_gauss_newton_spectrum():
    g = torch.Generator().manual_seed(4)
    net = TwoLayerReLU(4, 5, generator=g, dtype=torch.float64)
    X = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randn(7, generator=g, dtype=torch.float64)
    G = dense_gauss_newton(net, half_mse, (X, y))
    eig = torch.linalg.eigvalsh(G)
    s = gram_spectrum(gram_matrix(net, X))
    assert s.trace == pytest.approx(float(eig.sum()), rel=1e-12)
    assert s.frobenius == pytest.approx(float(torch.linalg.matrix_norm(G)), rel=1e-12)
    assert s.lambda_max == pytest.approx(float(eig[-1]), rel=1e-12)
    assert s.as_dict() == {"trace": s.trace, "frobenius": s.frobenius, "lambda_max": s.lambda_max}


@pytest.mark.parametrize("outputs", [1, 2])
def test_wme18_non_uniformity_matches_parameter_space(outputs):
    g = torch.Generator().manual_seed(outputs)
    n, p = 5, 7
    J = torch.randn(n * outputs, p, generator=g, dtype=torch.float64)
    K = J @ J.T / n
    Hs = [
        J[i * outputs : (i + 1) * outputs].T @ J[i * outputs : (i + 1) * outputs] for i in range(n)
    ]
    H = sum(Hs) / n
    Sigma = sum(Hi @ Hi for Hi in Hs) / n - H @ H
    expected = math.sqrt(float(torch.linalg.eigvalsh(Sigma).max()))
    assert wme18_non_uniformity(K, outputs) == pytest.approx(expected, rel=1e-9)


def test_gram_measures_reject_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        gram_spectrum(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="C = outputs = 2"):
        wme18_non_uniformity(torch.eye(3, dtype=torch.float64), outputs=2)
    with pytest.raises(TypeError, match="floating point"):
        gram_spectrum(torch.eye(2, dtype=torch.int64))


@pytest.mark.parametrize("form", ["ab", "uv"])
def test_diagonal_gram_equals_the_autograd_gram(form):
    net = DiagonalLinearNet(6, form=form, generator=gen(5), dtype=f64)
    X = torch.randn(9, 6, generator=gen(6), dtype=f64) * torch.linspace(0.5, 2.0, 6, dtype=f64)
    K = diagonal_gram(net, X)
    torch.testing.assert_close(K, gram_matrix(net, X), rtol=1e-12, atol=1e-13)
    assert float(K.trace()) == pytest.approx(diagonal_trace_G(net, X), rel=1e-12)


def test_relu_gram_equals_the_autograd_gram():
    net = TwoLayerReLU(5, 7, generator=gen(7), dtype=f64)
    X = torch.randn(11, 5, generator=gen(8), dtype=f64)
    K = relu_gram(net, X)
    torch.testing.assert_close(K, gram_matrix(net, X), rtol=1e-12, atol=1e-13)
    assert float(K.trace()) == pytest.approx(relu_trace_G(net, X), rel=1e-12)
    with pytest.raises(TypeError, match="needs a TwoLayerReLU"):
        relu_gram(DiagonalLinearNet(5, dtype=f64), X)
