import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynstab.models import (
    MLP,
    DiagonalLinearNet,
    SmallCNN,
    TwoLayerReLU,
    UnivariateReLU,
    build_model,
    list_models,
)

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def param_names(model):
    return [n for n, _ in model.named_parameters()]


# ---------------------------------------------------------------- diagonal linear net


@pytest.mark.parametrize("form", ["ab", "uv"])
def test_diagonal_forward_equals_linear_predictor(form):
    net = DiagonalLinearNet(6, form=form, generator=gen(1), dtype=f64)
    first, second = net.factors()
    beta = first * second if form == "ab" else first**2 - second**2
    X = torch.randn(9, 6, generator=gen(2), dtype=f64)
    out = net(X)
    assert out.shape == (9,)
    torch.testing.assert_close(out, X @ beta, rtol=1e-12, atol=0)
    torch.testing.assert_close(net.beta(), beta, rtol=0, atol=0)
    assert param_names(net) == (["a", "b"] if form == "ab" else ["u", "v"])


def test_diagonal_init_scale_statistics():
    d, scale = 20000, 0.3
    net = DiagonalLinearNet(d, init_scale=scale, generator=gen(3), dtype=f64)
    for p in (t.detach() for t in net.factors()):
        # sample std of d Gaussians has standard error ≈ σ/√(2d)
        assert abs(float(p.std()) - scale) <= 5 * scale / math.sqrt(2 * d)
        assert abs(float(p.mean())) <= 5 * scale / math.sqrt(d)


def test_diagonal_from_tensors_and_seed_determinism():
    a, b = torch.tensor([1.0, -2.0], dtype=f64), torch.tensor([3.0, 0.5], dtype=f64)
    state = torch.get_rng_state()
    net = DiagonalLinearNet.from_tensors(a, b)
    assert torch.equal(torch.get_rng_state(), state), "global RNG must not be consumed"
    torch.testing.assert_close(net.beta(), a * b)
    n1 = DiagonalLinearNet(5, generator=gen(7), dtype=f64)
    n2 = DiagonalLinearNet(5, generator=gen(7), dtype=f64)
    assert torch.equal(n1.a, n2.a)
    assert torch.equal(n1.b, n2.b)
    # the same seed gives the same numbers in float32
    n3 = DiagonalLinearNet(5, generator=gen(7), dtype=torch.float32)
    torch.testing.assert_close(n3.a.double(), n1.a, rtol=1e-6, atol=0)


def test_diagonal_errors():
    with pytest.raises(ValueError, match="unknown form"):
        DiagonalLinearNet(3, form="xy")
    with pytest.raises(ValueError, match="init_scale must be finite and > 0"):
        DiagonalLinearNet(3, init_scale=0.0)
    with pytest.raises(ValueError, match="d must be >= 1"):
        DiagonalLinearNet(0)
    with pytest.raises(ValueError, match="same length"):
        DiagonalLinearNet.from_tensors(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"inputs of shape \(n, 3\)"):
        DiagonalLinearNet(3)(torch.zeros(2, 4))
    with pytest.raises(TypeError, match=r"floating torch\.dtype"):
        DiagonalLinearNet(3, dtype=torch.int64)


# ---------------------------------------------------------------- two-layer ReLU


def test_two_layer_relu_forward_matches_sum_of_neurons():
    net = TwoLayerReLU(4, 7, generator=gen(4), dtype=f64)
    X = torch.randn(5, 4, generator=gen(5), dtype=f64)
    manual = torch.stack(
        [sum(net.a[j] * torch.clamp(net.w[j] @ x, min=0) for j in range(7)) for x in X]
    )
    torch.testing.assert_close(net(X), manual, rtol=1e-12, atol=1e-14)
    assert param_names(net) == ["w", "a"]
    assert net.w.shape == (7, 4)
    assert net.a.shape == (7,)


@pytest.mark.parametrize(("init", "w_std"), [("lw", 1 / math.sqrt(64)), ("r3p", 64**-0.25)])
def test_two_layer_relu_init_scales(init, w_std):
    d, m = 64, 400
    net = TwoLayerReLU(d, m, init=init, generator=gen(6), dtype=f64)
    N = d * m
    assert abs(float(net.w.detach().std()) - w_std) <= 5 * w_std / math.sqrt(2 * N)
    assert abs(float(net.a.detach().std()) - 1.0) <= 5 / math.sqrt(2 * m)


def test_two_layer_relu_errors():
    with pytest.raises(ValueError, match="unknown init"):
        TwoLayerReLU(3, 2, init="xavier")
    with pytest.raises(ValueError, match="m must be >= 1"):
        TwoLayerReLU(3, 0)
    with pytest.raises(ValueError, match=r"inputs of shape \(n, 3\)"):
        TwoLayerReLU(3, 2)(torch.zeros(4, 2))


# ---------------------------------------------------------------- univariate ReLU


def test_univariate_relu_forward_and_input_shapes():
    net = UnivariateReLU(6, generator=gen(8), dtype=f64)
    with torch.no_grad():
        net.b2.fill_(0.7)
    x = torch.linspace(-2, 2, 11, dtype=f64)
    manual = (net.w2 * torch.clamp(net.w1 * x[:, None] + net.b1, min=0)).sum(1) + 0.7
    torch.testing.assert_close(net(x), manual, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(net(x[:, None]), manual, rtol=1e-12, atol=1e-14)
    assert param_names(net) == ["w1", "b1", "w2", "b2"]
    assert float(UnivariateReLU(3, generator=gen(0)).b2.detach()) == 0.0
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, 1\)"):
        net(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="k must be >= 1"):
        UnivariateReLU(0)


# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_matches_manual_forward(activation):
    net = MLP([5, 7, 3], activation=activation, generator=gen(9), dtype=f64)
    X = torch.randn(4, 5, generator=gen(10), dtype=f64)
    phi = torch.tanh if activation == "tanh" else torch.relu
    W1, b1 = net.layers[0].weight, net.layers[0].bias
    W2, b2 = net.layers[1].weight, net.layers[1].bias
    torch.testing.assert_close(net(X), phi(X @ W1.T + b1) @ W2.T + b2, rtol=1e-12, atol=1e-14)
    assert param_names(net) == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ]


def test_mlp_init_bounds_scalar_output_and_no_bias():
    state = torch.get_rng_state()
    net = MLP([100, 50, 1], bias=False, generator=gen(11), dtype=f64)
    assert torch.equal(torch.get_rng_state(), state), "global RNG must not be consumed"
    assert net(torch.zeros(3, 10, 10, dtype=f64)).shape == (3,)  # flattened input
    w = net.layers[0].weight.detach()
    assert float(w.abs().max()) <= 1 / math.sqrt(100)
    assert float(w.abs().max()) > 0.9 / math.sqrt(100)
    assert all(layer.bias is None for layer in net.layers)


def test_mlp_errors():
    with pytest.raises(ValueError, match="at least"):
        MLP([3])
    with pytest.raises(ValueError, match="unknown activation"):
        MLP([3, 1], activation="gelu")
    with pytest.raises(ValueError, match="expects 3 input features"):
        MLP([3, 1])(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"sizes\[1\] must be >= 1"):
        MLP([3, 0, 1])


# ---------------------------------------------------------------- small CNN


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_small_cnn_2d_matches_functional_reference(pool):
    net = SmallCNN((1, 8, 8), 10, pool=pool, activation="tanh", generator=gen(12), dtype=f64)
    x = torch.randn(3, 1, 8, 8, generator=gen(13), dtype=f64)
    p = F.max_pool2d if pool == "max" else F.avg_pool2d
    h = p(torch.tanh(F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1)), 2)
    h = p(torch.tanh(F.conv2d(h, net.conv2.weight, net.conv2.bias, padding=1)), 2)
    ref = h.flatten(1) @ net.fc.weight.T + net.fc.bias
    torch.testing.assert_close(net(x), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(net(x.reshape(3, 64)), ref, rtol=1e-12, atol=1e-14)


def test_small_cnn_1d_mnist1d_shape_and_reference():
    net = SmallCNN((1, 40), 10, generator=gen(14), dtype=f64)
    x = torch.randn(2, 40, generator=gen(15), dtype=f64)
    h = F.max_pool1d(
        torch.relu(F.conv1d(x[:, None], net.conv1.weight, net.conv1.bias, padding=1)), 2
    )
    h = F.max_pool1d(torch.relu(F.conv1d(h, net.conv2.weight, net.conv2.bias, padding=1)), 2)
    ref = h.flatten(1) @ net.fc.weight.T + net.fc.bias
    torch.testing.assert_close(net(x), ref, rtol=1e-12, atol=1e-14)
    assert net.conv1.weight.shape == (32, 1, 3)


def test_small_cnn_cifar_parameter_count_no_batchnorm():
    net = SmallCNN((3, 32, 32), 10, generator=gen(16))
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 8 * 8 * 10 + 10)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert SmallCNN((1, 8, 8), 1, generator=gen(0))(torch.zeros(2, 1, 8, 8)).shape == (2,)


def test_small_cnn_errors():
    with pytest.raises(ValueError, match="in_shape must be"):
        SmallCNN((40,), 10)
    with pytest.raises(ValueError, match="in_shape must be"):
        SmallCNN((1, 2, 2), 10)
    with pytest.raises(ValueError, match="unknown pool"):
        SmallCNN((1, 40), 10, pool="min")
    with pytest.raises(ValueError, match="SmallCNN expects inputs"):
        SmallCNN((1, 40), 10)(torch.zeros(2, 41))


# ---------------------------------------------------------------- registry


def test_build_model_every_name():
    kwargs = {
        "diagonal_linear": {"d": 3},
        "two_layer_relu": {"d": 3, "m": 2},
        "univariate_relu": {"k": 4},
        "mlp": {"sizes": [3, 4, 1]},
        "small_cnn": {"in_shape": (1, 8, 8), "num_classes": 2},
    }
    assert list_models() == sorted(kwargs)
    classes = {
        "diagonal_linear": DiagonalLinearNet,
        "two_layer_relu": TwoLayerReLU,
        "univariate_relu": UnivariateReLU,
        "mlp": MLP,
        "small_cnn": SmallCNN,
    }
    for name, kw in kwargs.items():
        assert isinstance(build_model(name, generator=gen(0), **kw), classes[name])


def test_build_model_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*diagonal_linear.*small_cnn"):
        build_model("resnet")
