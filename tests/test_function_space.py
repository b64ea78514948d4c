import math

import pytest
import torch
from scipy import integrate, stats
from torch.func import functional_call, hessian, jacrev, vmap

from dynstab.function_space import (
    knot_on_data_point,
    knots_and_jumps,
    mms21_bound,
    mms21_sharpness_lower_bound,
    population_weight_g,
    stability_weight_g,
    weighted_total_variation,
)
from dynstab.models import TwoLayerReLU, UnivariateReLU

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def set_params(net, w1, b1, w2, b2=0.0):
    with torch.no_grad():
        net.w1.copy_(torch.as_tensor(w1, dtype=f64))
        net.b1.copy_(torch.as_tensor(b1, dtype=f64))
        net.w2.copy_(torch.as_tensor(w2, dtype=f64))
        net.b2.fill_(b2)
    return net


def brute_force_g(xs, t):
    """MMS21's definition evaluated literally with Python floats."""
    n = len(xs)
    below = [x for x in xs if x < t]
    above = [x for x in xs if x > t]
    if not below or not above:
        return 0.0
    m_b, m_a = sum(below) / len(below), sum(above) / len(above)
    g_minus = (len(below) / n) ** 2 * (t - m_b) * math.sqrt(1 + m_b**2)
    g_plus = (len(above) / n) ** 2 * (m_a - t) * math.sqrt(1 + m_a**2)
    return min(g_minus, g_plus)


# ---------------------------------------------------------------- knots


def test_knots_and_jumps_hand_example_with_merge_and_flat_neuron():
    net = set_params(
        UnivariateReLU(4, dtype=f64),
        w1=[2.0, -1.0, 0.0, 0.5],
        b1=[-2.0, 1.0, 3.0, 1.0],
        w2=[1.0, 3.0, 7.0, -4.0],
    )
    t, a = knots_and_jumps(net)
    torch.testing.assert_close(t, torch.tensor([-2.0, 1.0], dtype=f64))
    torch.testing.assert_close(a, torch.tensor([-2.0, 5.0], dtype=f64))


def test_knots_merge_tolerance():
    net = set_params(UnivariateReLU(2, dtype=f64), w1=[1.0, 1.0], b1=[0.0, -1e-9], w2=[1.0, 2.0])
    assert knots_and_jumps(net)[0].numel() == 2
    t, a = knots_and_jumps(net, merge_tol=1e-6)
    assert t.numel() == 1
    assert float(a[0]) == pytest.approx(1.0 + 2.0)


def test_jumps_equal_finite_difference_slope_changes():
    net = UnivariateReLU(8, generator=gen(1), dtype=f64)
    t, a = knots_and_jumps(net)
    gaps = torch.diff(t)
    h = 1e-3 * float(gaps.min()) if gaps.numel() else 1e-3
    with torch.no_grad():
        for tk, ak in zip(t, a):
            x = torch.tensor([tk - 2 * h, tk - h, tk + h, tk + 2 * h], dtype=f64)
            f = net(x)
            jump = (f[3] - f[2]) / h - (f[1] - f[0]) / h
            assert float(jump) == pytest.approx(float(ak), rel=1e-6, abs=1e-8)


# ---------------------------------------------------------------- the weight g


def test_g_matches_brute_force_definition():
    xs = torch.randn(17, generator=gen(2), dtype=f64)
    ts = torch.cat([torch.linspace(-3, 3, 41, dtype=f64), xs])  # includes the data points
    g = stability_weight_g(xs, ts)
    ref = torch.tensor([brute_force_g(xs.tolist(), float(t)) for t in ts], dtype=f64)
    torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-15)
    assert float(stability_weight_g(xs, float(xs.min()) - 0.1)[0]) == 0.0
    assert float(stability_weight_g(xs[:, None], float(xs.max()))[0]) == 0.0


def test_g_example_shape_uniform_n20():
    # MMS21 §5.3 example: uniform data, n = 20, standardized; g peaks at the centre and
    # vanishes beyond the extreme samples (reference values 0, .017, .112, .278, .136, .012, .004).
    x = torch.rand(20, generator=gen(3), dtype=f64)
    x = (x - x.mean()) / x.std(unbiased=False)
    pts = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    g = stability_weight_g(x, pts)
    assert 0.2 < float(g[3]) < 0.35
    assert int(torch.argmax(g)) == 3
    assert float(g[0]) < 0.03
    assert float(g[-1]) < 0.03
    assert float(g[1]) < float(g[2]) < float(g[3]) > float(g[4]) > float(g[5])
    beyond = stability_weight_g(x, [float(x.min()) - 0.01, float(x.max()) + 0.01])
    assert torch.equal(beyond, torch.zeros(2, dtype=f64))


def _population_g_by_quadrature(dist, t):
    if dist == "uniform":
        law = stats.uniform(loc=-math.sqrt(3), scale=2 * math.sqrt(3))
        lo, hi = -math.sqrt(3), math.sqrt(3)
    elif dist == "gaussian":
        law, lo, hi = stats.norm(), -40.0, 40.0
    else:
        law, lo, hi = stats.laplace(scale=1 / math.sqrt(2)), -60.0, 60.0
    if t <= lo or t >= hi:
        return 0.0
    opts = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 200}
    F = integrate.quad(law.pdf, lo, t, **opts)[0]
    S = integrate.quad(law.pdf, t, hi, **opts)[0]
    Mb = integrate.quad(lambda x: x * law.pdf(x), lo, t, **opts)[0] / F
    Ma = integrate.quad(lambda x: x * law.pdf(x), t, hi, **opts)[0] / S
    gm = F**2 * (t - Mb) * math.sqrt(1 + Mb**2)
    gp = S**2 * (Ma - t) * math.sqrt(1 + Ma**2)
    return min(gm, gp)


@pytest.mark.parametrize("dist", ["uniform", "gaussian", "laplace"])
def test_population_g_matches_numerical_integration(dist):
    ts = [-2.5, -1.7, -1.0, -0.3, 0.0, 0.2, 0.9, 1.6, 2.4]
    g = population_weight_g(dist, ts)
    ref = torch.tensor([_population_g_by_quadrature(dist, t) for t in ts], dtype=f64)
    torch.testing.assert_close(g, ref, rtol=1e-8, atol=1e-11)
    assert int(torch.argmax(population_weight_g(dist, torch.linspace(-3, 3, 61)))) == 30


@pytest.mark.parametrize("dist", ["uniform", "gaussian", "laplace"])
def test_empirical_g_converges_to_population_g(dist):
    # E4.2: empirical and population curves are close; the error shrinks like 1/√n.
    from dynstab.data import one_d_dataset

    grid = torch.linspace(-2.5, 2.5, 51, dtype=f64)
    pop = population_weight_g(dist, grid)
    errs = []
    for n in (200, 20000):
        x = one_d_dataset(dist, n, generator=gen(4)).X[:, 0]
        errs.append(float((stability_weight_g(x, grid) - pop).abs().max()))
    assert errs[1] < 0.02
    assert errs[1] < errs[0] / 3  # 1/√n scaling would give /10


# ---------------------------------------------------------------- weighted TV and Lemma 4


def test_weighted_total_variation_hand_value():
    net = set_params(UnivariateReLU(2, dtype=f64), w1=[1.0, -2.0], b1=[0.0, 1.0], w2=[2.0, 1.0])
    x = [-1.0, 1.0]
    # knots 0 (jump 2) and 0.5 (jump 2): g(0) = ¼·1·√2; g(0.5) = min(¼·1.5·√2, ¼·0.5·√2)
    expected = 2 * 0.25 * math.sqrt(2) + 2 * 0.25 * 0.5 * math.sqrt(2)
    assert weighted_total_variation(net, x) == pytest.approx(expected, rel=1e-14)
    assert mms21_sharpness_lower_bound(net, x) == pytest.approx(1 + 2 * expected, rel=1e-14)
    flat = set_params(UnivariateReLU(1, dtype=f64), w1=[0.0], b1=[1.0], w2=[1.0])
    assert weighted_total_variation(flat, x) == 0.0


def _lambda_max_G(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, xi):
        return functional_call(net, p, (xi[None],))[0]

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    Phi = torch.cat([J[k].reshape(x.shape[0], -1) for k in params], dim=1)
    return float(torch.linalg.eigvalsh(Phi @ Phi.T / x.shape[0])[-1])


def test_lemma4_on_random_interpolating_nets():
    # MMS21 Lemma 4: λ_max(∇²L) ≥ 1 + 2∫|f''|g at any interpolating implementation (H = G).
    g = gen(5)
    ratios, nontrivial = [], 0
    for trial in range(240):
        k = int(torch.randint(1, 9, (1,), generator=g))
        n = int(torch.randint(2, 16, (1,), generator=g))
        net = UnivariateReLU(k, generator=g, dtype=f64)
        with torch.no_grad():
            c = torch.exp(1.5 * torch.randn(k, generator=g, dtype=f64))  # f is unchanged
            net.w1.mul_(c)
            net.b1.mul_(c)
            net.w2.div_(c)
            net.b2.normal_(generator=g)
        dist = ("gaussian", "uniform", "laplace")[trial % 3]
        from dynstab.data import one_d_dataset

        x = one_d_dataset(dist, n, generator=g).X[:, 0]  # labels := f(x): interpolation
        assert not knot_on_data_point(net, x, tol=1e-9)
        lb = mms21_sharpness_lower_bound(net, x)
        lam = _lambda_max_G(net, x)
        ratios.append(lb / lam)
        nontrivial += weighted_total_variation(net, x) > 1e-3
    assert max(ratios) <= 1 + 1e-10
    assert nontrivial >= 100


def test_hessian_equals_G_at_interpolation():
    net = UnivariateReLU(5, generator=gen(6), dtype=f64)
    x = torch.randn(9, generator=gen(7), dtype=f64)
    with torch.no_grad():
        y = net(x)
    params = {k: v.detach() for k, v in net.named_parameters()}
    names = list(params)
    sizes = [params[k].numel() for k in names]

    def loss(flat):
        chunks = torch.split(flat, sizes)
        p = {k: c.reshape(params[k].shape) for k, c in zip(names, chunks)}
        r = functional_call(net, p, (x,)) - y
        return 0.5 * (r * r).mean()

    flat = torch.cat([params[k].reshape(-1) for k in names])
    H = hessian(loss)(flat)
    lam_H = float(torch.linalg.eigvalsh(H)[-1])
    assert lam_H == pytest.approx(_lambda_max_G(net, x), rel=1e-10)


# ---------------------------------------------------------------- bound, flags, errors


def test_mms21_bound_and_knot_flag():
    assert mms21_bound(0.1) == pytest.approx(9.5)
    net = set_params(UnivariateReLU(2, dtype=f64), w1=[1.0, 1.0], b1=[-0.5, 0.3], w2=[1.0, 0.0])
    assert knot_on_data_point(net, [0.5 + 1e-8, 2.0])
    assert not knot_on_data_point(net, [0.5 + 1e-3, 2.0])
    assert not knot_on_data_point(net, [-0.3])  # zero jump there: not a knot of f
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        mms21_bound(0.0)
    with pytest.raises(ValueError, match="tol must be finite and >= 0"):
        knot_on_data_point(net, [0.0], tol=-1.0)


def test_function_space_errors():
    with pytest.raises(TypeError, match="knots_and_jumps needs a UnivariateReLU"):
        knots_and_jumps(TwoLayerReLU(2, 2))
    with pytest.raises(ValueError, match="unknown dist"):
        population_weight_g("cauchy", [0.0])
    with pytest.raises(ValueError, match="x_train must be 1-D"):
        stability_weight_g(torch.zeros(3, 2), [0.0])
    with pytest.raises(ValueError, match="at least one sample"):
        stability_weight_g(torch.zeros(0), [0.0])
    with pytest.raises(ValueError, match="finite"):
        stability_weight_g([0.0, float("nan")], [0.0])
