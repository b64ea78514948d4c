"""Tests of dynstab.training.monitors against hand-computed and dense references."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch import nn

from dynstab.errors import ConvergenceWarning
from dynstab.losses import half_mse
from dynstab.training import (
    GramMonitor,
    LossMonitor,
    Monitor,
    NormMonitor,
    SharpnessMonitor,
    StabilityMonitor,
    TestErrorMonitor,
    TraceMonitor,
    train,
)

DT = torch.float64


def needs(module: str, *names: str) -> pytest.MarkDecorator:
    """Skip unless ``module`` exists and exports ``names`` (other engineers' layers)."""
    try:
        mod = importlib.import_module(module)
        ok = all(hasattr(mod, n) for n in names)
    except ImportError:
        ok = False
    return pytest.mark.skipif(not ok, reason=f"{module}.{names} not available yet")


needs_curvature = needs(
    "dynstab.curvature", "HessianOperator", "GaussNewtonOperator", "gram_matrix"
)
needs_linalg = needs("dynstab.linalg", "lanczos_top_eigenpairs", "hutchinson_trace_and_frobenius")
needs_stability = needs("dynstab.criteria", "eta_star", "q_factor")


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def linear_case(n: int = 8, d: int = 6) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=DT) * torch.linspace(0.5, 2.0, d, dtype=DT)
    y = torch.randn(n, generator=g, dtype=DT)
    model = Linear(torch.randn(d, generator=g, dtype=DT))
    ctx = {
        "X": X,
        "y": y,
        "loss_fn": half_mse,
        "n": n,
        "batch_size": n,
        "sampling": "without",
        "lr": 0.1,
    }
    return model, X, y, ctx


def test_loss_monitor_on_train_and_validation_sets() -> None:
    model, X, y, ctx = linear_case()
    w = model.w.detach()
    assert LossMonitor()(0, model, ctx) == {
        "train_loss": pytest.approx(float(0.5 * ((X @ w - y) ** 2).mean()))
    }
    Xv, yv = X[:3] + 1, y[:3]
    out = LossMonitor(Xv, yv, name="val_loss")(0, model, ctx)
    assert out == {"val_loss": pytest.approx(float(0.5 * ((Xv @ w - yv) ** 2).mean()), rel=1e-14)}


def test_test_error_monitor_hand_computed() -> None:
    model = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    Xt = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=DT)  # outputs (2, 1, 0) and (0, 3, 0)
    Yt = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DT)  # labels 0, 0
    out = TestErrorMonitor(Xt, Yt)(0, model, {})
    # ‖(1,1,0)‖² = 2, ‖(−1,3,0)‖² = 10 → mse 6; mean ‖y‖² = 1; arg-max (0, 1) vs (0, 0) → 1/2
    assert out == {"test_mse": 6.0, "test_rel_mse": 6.0, "test_error": 0.5}
    labels = TestErrorMonitor(Xt, torch.tensor([0, 1]), prefix="val_")(0, model, {})
    assert labels == {"val_error": 0.0}


def test_norm_monitor() -> None:
    model, *_ = linear_case()
    assert NormMonitor("n")(0, model, {})["n"] == pytest.approx(
        float(model.w.detach().norm()), rel=1e-14
    )
    assert NormMonitor("l1", lambda m: m.w.abs().sum())(0, model, {})["l1"] == pytest.approx(
        float(model.w.detach().abs().sum()), rel=1e-14
    )


@needs_curvature
@needs_linalg
def test_sharpness_monitor_lambda_max_of_linear_model_and_warm_start() -> None:
    model, X, _y, ctx = linear_case()
    H = X.T @ X / X.shape[0]  # Hessian of the ½-MSE of a linear model
    lam = float(torch.linalg.eigvalsh(H)[-1])
    mon = SharpnessMonitor(tol=1e-10, max_hvps=50)
    first = mon(0, model, ctx)
    assert first["lambda_max"] == pytest.approx(lam, rel=1e-8)
    assert first["lambda_max_converged"] == 1.0
    assert first["lambda_max_residual"] <= 1e-9 * lam
    second = mon(1, model, ctx)  # same point: started at the converged eigenvector
    assert second["lambda_max"] == pytest.approx(lam, rel=1e-8)
    assert second["lambda_max_hvps"] < first["lambda_max_hvps"]
    mon.reset()
    assert mon(2, model, ctx)["lambda_max_hvps"] == first["lambda_max_hvps"]
    assert model.w.grad is None


@needs_curvature
@needs_linalg
def test_sharpness_monitor_budget_subset_and_gauss_newton() -> None:
    model, X, y, ctx = linear_case()
    with pytest.warns(ConvergenceWarning):
        out = SharpnessMonitor(tol=1e-12, max_hvps=2)(0, model, ctx)
    assert out["lambda_max_hvps"] <= 2
    assert out["lambda_max_converged"] == 0.0
    Xs, ys = X[:3], y[:3]
    lam_s = float(torch.linalg.eigvalsh(Xs.T @ Xs / 3)[-1])
    out = SharpnessMonitor(Xs, ys, curvature="gauss_newton", tol=1e-10, prefix="sub_")(
        0, model, ctx
    )
    assert out["sub_lambda_max"] == pytest.approx(lam_s, rel=1e-8)


@needs_curvature
@needs_linalg
def test_trace_and_frobenius_within_their_standard_errors() -> None:
    model, X, _y, ctx = linear_case()
    H = X.T @ X / X.shape[0]
    out = SharpnessMonitor(measures=("trace", "frobenius"), num_probes=200, seed=3)(0, model, ctx)
    assert out["hutchinson_hvps"] == 200
    assert out["trace_stderr"] > 0
    assert abs(out["trace"] - float(torch.trace(H))) <= 5 * out["trace_stderr"]
    fro = float(torch.linalg.matrix_norm(H))
    assert out["frobenius_stderr"] > 0
    assert abs(out["frobenius"] - fro) <= 5 * out["frobenius_stderr"]
    tm = TraceMonitor(num_probes=200, seed=3)(0, model, ctx)
    assert tm["trace"] == out["trace"]
    assert "lambda_max" not in tm


@needs_curvature
def test_gram_monitor_of_linear_model() -> None:
    model, X, _y, ctx = linear_case()
    K = X @ X.T / X.shape[0]
    out = GramMonitor()(0, model, ctx)
    assert out["gram_trace"] == pytest.approx(float(torch.trace(K)), rel=1e-10)
    assert out["gram_frobenius"] == pytest.approx(float(torch.linalg.matrix_norm(K)), rel=1e-10)
    assert out["gram_lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(K)[-1]), rel=1e-10)


@needs_curvature
def test_gram_monitor_alignment_is_wws22_mu_in_gram_form() -> None:
    model, X, y, ctx = linear_case()
    K = X @ X.T / X.shape[0]
    with torch.no_grad():
        r = model(X).reshape(-1) - y.reshape(-1)
    n = X.shape[0]
    # μ = [n Σ_i r_i² (K²)_ii − rᵀK²r] / (‖r‖² ‖K‖_F²) for one output
    K2 = K @ K
    mu = (n * float((r * r * K2.diagonal()).sum()) - float(r @ K2 @ r)) / (
        float(r @ r) * float((K * K).sum())
    )
    out = GramMonitor(measures=("alignment", "trace"), prefix="")(0, model, ctx)
    assert set(out) == {"alignment", "trace"}
    assert out["alignment"] == pytest.approx(mu, rel=1e-10)
    with pytest.raises(ValueError, match="needs the training set"):
        GramMonitor(X, measures=("alignment",))
    with pytest.raises(ValueError, match="unknown Gram measure"):
        GramMonitor(measures=("mu",))


@needs_curvature
@needs_stability
def test_stability_monitor_gd_margins() -> None:
    model, X, _y, ctx = linear_case()
    K = X @ X.T / X.shape[0]
    lam, tr = float(torch.linalg.eigvalsh(K)[-1]), float(torch.trace(K))
    out = StabilityMonitor()(0, model, ctx)  # GD: B = n without replacement, lr from context
    eta, n = 0.1, X.shape[0]
    assert out["gd_margin"] == pytest.approx(eta * lam / 2, rel=1e-10)
    assert out["q"] == pytest.approx(1 / n, rel=1e-14)
    assert out["trace_margin"] == pytest.approx(eta * tr / (2 * n), rel=1e-10)
    assert out["sgd_margin"] == pytest.approx(out["gd_margin"], rel=1e-8)  # η* = 2/λ_max for GD


@needs_curvature
@needs_stability
@pytest.mark.parametrize("sampling", ["with", "without", "reshuffle"])
def test_stability_monitor_orthogonal_inputs_batch_one(sampling: str) -> None:
    # Orthogonal x_i with B = 1: each direction x_i is hit alone with probability 1/n and
    # contracts by (1 − η‖x_i‖²), so E c² stays bounded iff η ≤ 2/‖x_i‖²: η* = 2/max‖x_i‖².
    X = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=DT))
    model = Linear(torch.zeros(3, dtype=DT))
    ctx = {"X": X, "y": torch.zeros(3, dtype=DT), "lr": 0.5, "batch_size": 3, "sampling": "without"}
    eta = 0.05
    out = StabilityMonitor(lr=eta, batch_size=1, sampling=sampling)(0, model, ctx)
    assert out["lr"] == eta
    assert out["q"] == pytest.approx(1.0, rel=1e-14)
    assert out["gd_margin"] == pytest.approx(eta * 3 / 2, rel=1e-10)  # λ_max(K) = 9/3
    assert out["trace_margin"] == pytest.approx(eta * (14 / 3) / 2, rel=1e-10)
    assert out["eta_star"] == pytest.approx(2 / 9, rel=1e-8)
    assert out["sgd_margin"] == pytest.approx(eta * 9 / 2, rel=1e-8)
    big = StabilityMonitor(lr=eta, batch_size=1, sampling=sampling, max_exact_size=2)(0, model, ctx)
    assert "sgd_margin" not in big


@needs_curvature
@needs_stability
@pytest.mark.parametrize(("batch_size", "sampling"), [(2, "with"), (2, "without"), (5, "without")])
def test_stability_monitor_vector_output_matches_check_stability(
    batch_size: int, sampling: str
) -> None:
    # C = 3 outputs: the trace and Frobenius thresholds carry the factor C (√C), so the margins
    # must be the stability layer's (check_stability rows), not η·q·Tr K/2.
    from dynstab.criteria import check_stability
    from dynstab.curvature import gram_matrix

    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    n, eta = 5, 0.07
    X = torch.randn(n, 4, generator=g, dtype=DT)
    ctx = {"X": X, "y": torch.zeros(n, 3, dtype=DT), "lr": eta, "batch_size": batch_size}
    out = StabilityMonitor(sampling=sampling)(0, model, ctx)
    K = gram_matrix(model, X).detach()
    rep = check_stability(
        K, lr=eta, batch_size=batch_size, sampling=sampling, outputs=3, rank_one=False
    )
    m = rep.margins
    for col, row in [
        ("gd_margin", "gd"),
        ("trace_margin", "trace"),
        ("frobenius_margin", "frobenius"),
        ("sgd_margin", "sgd_exact"),
    ]:
        assert out[col] == pytest.approx(m[row], rel=1e-8), col
    assert out["eta_star"] == pytest.approx(rep.eta_star, rel=1e-8)
    q = rep.q
    tr, fro = float(torch.trace(K)), float(torch.linalg.matrix_norm(K))
    assert out["trace_margin"] == pytest.approx(eta * q * tr / (2 * 3), rel=1e-10)
    assert out["frobenius_margin"] == pytest.approx(eta * q**0.5 * fro / (2 * 3**0.5), rel=1e-10)


@needs_curvature
@needs_stability
def test_stability_monitor_linear_vector_output_hand_margins() -> None:
    # f(x) = Wᵀx with W of shape (d, C): K = (XXᵀ/n) ⊗ I_C, so Tr K = C·Tr(XXᵀ)/n and the
    # trace margin η·q·Tr K/(2C) = η·q·Tr(XXᵀ)/(2n) does not depend on C.
    C, n, eta = 3, 4, 0.1
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 1.0]], dtype=DT)
    model = nn.Linear(2, C, bias=False).double()
    ctx = {"X": X, "y": torch.zeros(n, C, dtype=DT), "lr": eta, "batch_size": 1}
    out = StabilityMonitor(sampling="with")(0, model, ctx)
    k = X @ X.T / n
    assert out["q"] == pytest.approx(1.0, rel=1e-14)  # B = 1: q = 1
    assert out["trace_margin"] == pytest.approx(eta * float(torch.trace(k)) / 2, rel=1e-10)
    assert out["gd_margin"] == pytest.approx(
        eta * float(torch.linalg.eigvalsh(k)[-1]) / 2, rel=1e-10
    )
    fro_K = (C**0.5) * float(torch.linalg.matrix_norm(k))  # ‖A ⊗ I_C‖_F = √C ‖A‖_F
    assert out["frobenius_margin"] == pytest.approx(eta * fro_K / (2 * C**0.5), rel=1e-10)


@needs_curvature
@needs_linalg
def test_monitors_inside_train_warm_start_across_steps() -> None:
    model, X, y, _ = linear_case()
    lam = float(torch.linalg.eigvalsh(X.T @ X / X.shape[0])[-1])
    mon = SharpnessMonitor(every=5, tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = train(model, X, y, lr=0.05, steps=12, monitors=[mon], stop_loss=None)
    s, v = res.history.as_arrays("lambda_max")
    assert s.tolist() == [0, 5, 10, 12]
    torch.testing.assert_close(
        torch.from_numpy(v), torch.full((4,), lam, dtype=DT), rtol=1e-8, atol=0
    )
    hvps = res.history.as_arrays("lambda_max_hvps")[1]
    assert all(h < hvps[0] for h in hvps[1:])  # H is constant: warm starts are (nearly) free
    assert model.w.grad is None


def test_monitor_errors() -> None:
    with pytest.raises(ValueError, match="non-empty str"):
        Monitor("")
    with pytest.raises(ValueError, match="every must be >= 1"):
        NormMonitor("n", every=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        NormMonitor("n", fn=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sharpness measure"):
        SharpnessMonitor(measures=("spectral_gap",))
    with pytest.raises(ValueError, match="at least one"):
        SharpnessMonitor(measures=())
    with pytest.raises(ValueError, match="unknown curvature"):
        SharpnessMonitor(curvature="fisher")
    with pytest.raises(ValueError, match="both X and y"):
        SharpnessMonitor(torch.ones(2, 1))
    with pytest.raises(ValueError, match="both X and y"):
        LossMonitor(torch.ones(2, 1))
    with pytest.raises(ValueError, match="max_hvps must be >= 1"):
        SharpnessMonitor(max_hvps=0)
    with pytest.raises(ValueError, match="same number m >= 1"):
        TestErrorMonitor(torch.ones(2, 1), torch.ones(3))
    with pytest.raises(ValueError, match="unknown sampling"):
        StabilityMonitor(sampling="cyclic")
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        StabilityMonitor(lr=-1.0)
    with pytest.raises(NotImplementedError, match="must implement"):
        Monitor("m")(0, nn.Linear(1, 1), {})
