import json
import math

import pytest
import torch

from criteria_cases import K_REG
from dynstab.criteria import check_stability, eta_star, stability
from dynstab.criteria.reference import gram_from_jacobians, parameter_space_eta_star
from dynstab.curvature import dense_gauss_newton, dense_hessian, per_sample_jacobian
from dynstab.errors import NotInterpolatingWarning
from dynstab.losses import half_mse

ETA_WO2 = 0.7775166986156749


def make_mlp(outputs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Linear init only; tests may seed torch
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, outputs)
    ).double()
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(X).clone()  # exact interpolation: every residual is 0
    return model, X, y


def test_check_stability_regression_values():
    rep = check_stability(K_REG, lr=0.5, batch_size=2, sampling="without")
    assert rep.eta_star == pytest.approx(ETA_WO2, rel=1e-12)
    assert rep.p == 0.25
    assert rep.q == 0.5
    assert rep.n == 3
    assert rep.lambda_max == pytest.approx(2.017125, abs=5e-7)
    assert rep.trace == pytest.approx(3.0)
    assert rep.stable_gd
    assert rep.stable_sgd
    assert rep.interpolating is None
    assert rep.alignment is None
    b = rep.bounds
    assert b["trace"] == pytest.approx(4 / 3)
    assert b["frobenius"] == pytest.approx(1.293993, abs=5e-7)
    assert b["alignment"] == pytest.approx(2.264430, abs=5e-7)
    assert b["gd"] == pytest.approx(0.991510, abs=5e-7)
    for name, eta in b.items():
        assert rep.margins[name] == pytest.approx(0.5 / eta)
        if name != "wme18":
            assert eta >= rep.eta_star * (1 - 1e-10)
    assert b["wme18"] <= rep.eta_star
    assert rep.margins["sgd_exact"] == pytest.approx(0.5 * rep.generalized_sharpness / 2)
    assert rep.growth_per_step is not None
    assert rep.growth_per_step < 1.0


def test_verdict_flips_at_eta_star():
    below = check_stability(K_REG, lr=0.999 * ETA_WO2, batch_size=2, sampling="without")
    above = check_stability(K_REG, lr=1.001 * ETA_WO2, batch_size=2, sampling="without")
    assert below.stable_sgd
    assert not above.stable_sgd
    assert below.stable_gd
    assert above.stable_gd
    assert below.growth_per_step < 1.0 < above.growth_per_step


def test_table_and_dict_render():
    rep = check_stability(
        K_REG, torch.zeros(3), lr=0.9, batch_size=1, generator=torch.Generator().manual_seed(0)
    )
    text = str(rep)
    assert "SGD mean-square stable (η ≤ η*):     NO" in text
    assert "GD stable (λ_max ≤ 2/η):             yes" in text
    assert "0.4434007919" in text  # exact η*, B = 1
    for row in rep.rows:
        assert row.condition in text
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("criterion"))
    col = lines[header].index("kind")
    assert all(ln[col - 2 : col] == "  " for ln in lines[header : header + len(rep.rows) + 2])
    d = rep.to_dict()
    assert d["eta_star"] == rep.eta_star
    assert d["rows"][0]["holds"] is True
    json.dumps(d)  # JSON-able
    assert rep.interpolating is True
    assert rep.max_abs_residual == 0.0


def test_not_interpolating_warns_and_reports_alignment():
    r = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    with pytest.warns(NotInterpolatingWarning, match="H ≠ G"):
        rep = check_stability(K_REG, r, lr=0.3, batch_size=1)
    assert rep.interpolating is False
    assert rep.max_abs_residual == pytest.approx(0.2)
    assert any("not an interpolating point" in note for note in rep.notes)
    assert rep.alignment is not None
    assert rep.alignment >= rep.alignment_inf


def test_optional_parts_can_be_skipped():
    rep = check_stability(K_REG, lr=0.3, batch_size=2, rank_one=False, growth=False)
    assert "rank_one" not in rep.bounds
    assert rep.growth_per_step is None
    assert "E‖δ‖² growth" not in rep.table()


def test_stability_on_interpolating_model_matches_parameter_space():
    model, X, y = make_mlp(outputs=2)
    model.eval()
    rep = stability(
        model,
        half_mse,
        (X, y),
        lr=0.05,
        batch_size=3,
        sampling="without",
        generator=torch.Generator().manual_seed(0),
    )
    assert not model.training  # mode untouched
    assert all(p.grad is None for p in model.parameters())
    assert rep.outputs == 2
    assert rep.n == 6
    assert rep.interpolating
    assert rep.train_loss == 0.0
    assert rep.residual_term is None
    J = per_sample_jacobian(model, X)
    assert rep.eta_star == pytest.approx(parameter_space_eta_star(J, 3, "without"), rel=1e-9)
    H = dense_hessian(model, half_mse, (X, y))  # H = G at interpolation
    assert rep.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    assert rep.trace == pytest.approx(float(H.trace()), rel=1e-9)
    batches = [(X[:2], y[:2]), (X[2:], y[2:])]
    rep2 = stability(
        model,
        half_mse,
        batches,
        lr=0.05,
        batch_size=3,
        sampling="without",
        generator=torch.Generator().manual_seed(0),
    )
    assert rep2.eta_star == rep.eta_star
    assert rep2.bounds == rep.bounds


def test_stability_with_params_and_scalar_output():
    model, X, y = make_mlp(outputs=1, seed=1)
    params = {k: v.detach() + 0.0 for k, v in model.named_parameters()}
    y = y.reshape(-1)
    rep = stability(model, half_mse, (X, y), lr=0.1, batch_size=2, params=params)
    K = gram_from_jacobians(per_sample_jacobian(model, X, params))
    assert rep.outputs == 1
    assert rep.eta_star == pytest.approx(eta_star(K, 2, "with").eta_star, rel=1e-12)
    assert model.training


def test_stability_notes_loss_scaling_and_non_interpolation():
    model, X, y = make_mlp(outputs=1, seed=2)

    def mse_no_half(out, tgt):
        return ((out.reshape(-1) - tgt.reshape(-1)) ** 2).mean()

    with pytest.warns(NotInterpolatingWarning):
        rep = stability(model, mse_no_half, (X, y + 0.5), lr=0.1, batch_size=1, rank_one=False)
    assert rep.interpolating is False
    assert rep.train_loss == pytest.approx(0.25)
    params = dict(model.named_parameters())
    HmG = dense_hessian(model, half_mse, (X, y + 0.5)) - dense_gauss_newton(
        model, half_mse, (X, y + 0.5)
    )
    exact = float(torch.linalg.eigvalsh(HmG).abs().max())
    assert rep.residual_term == pytest.approx(exact, rel=1e-6)
    assert "residual term ‖H − G‖₂" in rep.table()
    assert all(p.grad is None for p in params.values())
    assert any("half_mse" in note for note in rep.notes)


def test_verdict_errors():
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        check_stability(K_REG, lr=0.0, batch_size=1)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        check_stability(K_REG, lr=math.inf, batch_size=1)
    with pytest.raises(ValueError, match="residuals must have n\\*C = 3 entries"):
        check_stability(K_REG, torch.zeros(2), lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        check_stability(K_REG, lr=0.1, batch_size=5, sampling="without")
    with pytest.raises(ValueError, match="unknown sampling"):
        check_stability(K_REG, lr=0.1, batch_size=1, sampling="shuffle")
    model, _, _ = make_mlp()
    with pytest.raises(TypeError, match=r"data must be an \(inputs, targets\) pair"):
        stability(model, half_mse, 3.0, lr=0.1, batch_size=1)


def test_check_options_are_shared_and_checked():
    """check_stability and StabilityProblem.check take one CheckOptions; typos are refused."""
    from dynstab.criteria import CheckOptions, StabilityProblem

    opts: CheckOptions = {"method": "dense", "rank_one": False, "train_loss": 0.25}
    a = check_stability(K_REG, lr=0.1, batch_size=1, **opts)
    prob = StabilityProblem.from_gram(K_REG)
    b = prob.check(0.1, prob.sampling(1), **opts)
    assert a.to_dict() == b.to_dict()
    assert a.train_loss == 0.25
    assert "rank_one" not in a.margins
    with pytest.raises(TypeError, match=r"unknown check_stability option.*'rank1'.*'rank_one'"):
        check_stability(K_REG, lr=0.1, batch_size=1, rank1=False)
    with pytest.raises(TypeError, match=r"unknown check option.*'grwoth'.*'growth'"):
        prob.check(0.1, prob.sampling(1), grwoth=False)
    with pytest.raises(ValueError, match="method"):
        check_stability(K_REG, lr=0.1, batch_size=1, method="lanczos")
    with pytest.raises(ValueError, match="interpolation_tol"):
        prob.check(0.1, prob.sampling(1), interpolation_tol=-1.0)
    with pytest.raises(TypeError, match="generator"):
        check_stability(K_REG, lr=0.1, batch_size=1, generator=0)


def test_route_options_are_shared_by_critical_lr_and_stability():
    """route/max_memory/config/max_time: one RouteOptions, checked the same way in both."""
    from dynstab.criteria import RouteOptions, critical_lr

    model, X, y = make_mlp(outputs=1)
    exact = {"lr": 0.1, "batch_size": 2, "method": "exact"}
    for route in ("gram", "parameter"):
        opts: RouteOptions = {"route": route, "max_memory": 2**30}
        es = critical_lr(model, (X, y), batch_size=2, method="exact", **opts)
        rep = stability(model, half_mse, (X, y), **exact, **opts)
        assert es.route == route
        assert rep.eta_star_route == route
        assert rep.eta_star == pytest.approx(es.eta_star, rel=1e-12)
    for call in (
        lambda **o: critical_lr(model, (X, y), batch_size=2, **o),
        lambda **o: stability(model, half_mse, (X, y), lr=0.1, batch_size=2, **o),
    ):
        with pytest.raises(TypeError, match=r"unknown .* option.*'max_mem'.*'max_memory'"):
            call(max_mem=1e9)
        with pytest.raises(TypeError, match=r"config must be a dynstab\.criteria\.SampledConfig"):
            call(config={"replicas": 2})
        with pytest.raises(ValueError, match="max_time"):
            call(max_time=-1.0)


def make_bn_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    bn = model[1]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial running statistics, so eval mode is not the identity
        bn.running_mean.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        bn.running_var.copy_(0.5 + torch.rand(4, generator=g, dtype=torch.float64))
        bn.num_batches_tracked.fill_(7)
    X = torch.randn(5, 3, generator=g, dtype=torch.float64)
    return model, X


def _buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def test_stability_refuses_train_mode_batchnorm_without_touching_buffers():
    model, X = make_bn_model()
    model.train()
    y = torch.zeros(5, 1, dtype=torch.float64)
    before = _buffers(model)
    with pytest.raises(ValueError, match=r"BatchNorm in train mode.*model\.eval\(\)"):
        stability(model, half_mse, (X, y), lr=0.1, batch_size=2)
    after = _buffers(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert model.training
    assert model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_stability_refuses_active_dropout():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).double()
    X = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Dropout\(p=0.5\) in train mode"):
        stability(
            model, half_mse, (X, torch.zeros(4, 2, dtype=torch.float64)), lr=0.1, batch_size=1
        )


def test_stability_on_eval_mode_batchnorm_model():
    model, X = make_bn_model(seed=3)
    model.eval()
    with torch.no_grad():
        y = model(X).clone()
    before = _buffers(model)
    rep = stability(model, half_mse, (X, y), lr=0.1, batch_size=2, rank_one=False)
    assert not any(m.training for m in model.modules())
    for k, v in _buffers(model).items():
        assert torch.equal(before[k], v), k
    assert rep.interpolating
    assert rep.train_loss == 0.0
    K = gram_from_jacobians(per_sample_jacobian(model, X))
    assert rep.eta_star == pytest.approx(eta_star(K, 2, "with").eta_star, rel=1e-12)
    assert rep.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(K)[-1]), rel=1e-12)


def test_stability_empty_data_errors_like_sharpness():
    model, X, y = make_mlp()
    with pytest.raises(ValueError, match=r"data batch 0 is empty \(0 samples\)"):
        stability(model, half_mse, (X[:0], y[:0]), lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match=r"data is empty \(no batches\)"):
        stability(model, half_mse, [], lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match="same number of samples"):
        stability(model, half_mse, (X, y[:3]), lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match="same number of entries per sample"):
        stability(model, half_mse, (X, y[:, :1]), lr=0.1, batch_size=1)


def test_check_stability_empty_and_non_finite_inputs():
    with pytest.raises(ValueError, match="K must describe at least one sample"):
        check_stability(torch.zeros(0, 0, dtype=torch.float64), lr=0.1, batch_size=1)
    K_nan = K_REG.clone()
    K_nan[0, 1] = K_nan[1, 0] = math.nan
    with pytest.raises(ValueError, match="K must have finite entries"):
        check_stability(K_nan, lr=0.1, batch_size=1)
    r = torch.tensor([0.0, math.nan, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="residuals must be finite"):
        check_stability(K_REG, r, lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match="residuals must be finite"):
        check_stability(K_REG, torch.tensor([0.0, math.inf, 0.0]), lr=0.1, batch_size=1)


@pytest.mark.filterwarnings("ignore:SampledStability. m = 8 particles")
def test_max_memory_also_bounds_the_sampled_route():
    """route_options: a finite max_memory becomes SampledConfig.memory_budget unless set."""
    from dynstab.criteria import SampledConfig, critical_lr
    from dynstab.criteria.problem import route_options

    _, _, config, _ = route_options("stability", {"max_memory": 5e6})
    assert config is not None
    assert config.memory_budget == 5_000_000
    assert config.replicas == SampledConfig().replicas  # the other defaults kept
    own = SampledConfig(replicas=2, memory_budget=123_456)
    assert route_options("stability", {"max_memory": 5e6, "config": own})[2] is own
    assert route_options("stability", {"max_memory": math.inf})[2] is None
    assert route_options("stability", {})[2] is None
    with pytest.raises(TypeError, match="max_memory must be a number of bytes"):
        critical_lr(torch.eye(2), batch_size=1, max_memory="1e9")  # the library's message
    kept = SampledConfig(replicas=2)
    got = route_options("stability", {"max_memory": 7e6, "config": kept})[2]
    assert got is not None
    assert (got.replicas, got.memory_budget) == (2, 7_000_000)

    # end to end: the sampled report states the budget it ran under
    model, X, y = make_mlp(outputs=1)
    small = SampledConfig(replicas=2, particles=8, target_width=None, max_rounds=1)
    rep = stability(
        model, half_mse, (X, y), lr=0.1, batch_size=2, method="sampled",
        max_memory=64e6, config=small, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert rep.memory is not None
    assert rep.memory.budget == 64_000_000
    es = critical_lr(
        model, (X, y), batch_size=2, method="sampled", max_memory=64e6, config=small,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert es.eta_star > 0
