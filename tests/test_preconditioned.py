"""Preconditioned sharpness λ_max(P⁻¹(H + W)) of Adam / AdamW / RMSprop / SGD.

Checked against independent references:

* P from hand-computed optimizer moments (one or two steps with known gradients: v̂ = g² after
  one Adam step, so P = |g| + ε; RMSprop's square_avg = (1 − α)g², centred α(1 − α)g²);
* λ_max against a dense float64 reference: eigvalsh of the symmetric form D^{1/2}(H + W)D^{1/2}
  built from ``dense_hessian`` and the hand-computed P, and the real eigenvalues of the
  non-symmetric P⁻¹(H + W) (a similarity), within the certified error bound plus round-off;
* the thresholds by hand (38/η for β₁ = 0.9, 2(1 + β)/η, Nesterov 2(1 + β)/((1 + 2β)η), AdamW
  (2 − ηλ)(1 + β₁)/((1 − β₁)η)) and by simulating the linear recursion on one eigen-direction
  just below and above each threshold (torch.optim.SGD itself for the SGD variants);
* coupled weight decay enters the curvature (W = λ I), per-group learning rates the scale;
* bad input raises clear errors; the model is left as found.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dynstab.curvature import (
    HessianOperator,
    PreconditionedOperator,
    Preconditioner,
    dense_hessian,
    optimizer_preconditioner,
    preconditioned_sharpness,
)
from dynstab.linalg import DenseOperator, LanczosConfig
from dynstab.losses import half_mse

DT = torch.float64
CFG = LanczosConfig(tol=1e-10, max_iters=200)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def problem(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)  # test-side initialisation only (library code never seeds)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    X = torch.randn(10, 3, generator=gen(seed + 1), dtype=DT)
    y = torch.randn(10, 2, generator=gen(seed + 2), dtype=DT)
    return model, (X, y)


def flat_grad(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], wd: float = 0.0):
    loss = half_mse(model(data[0]), data[1])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat(
        [(g + wd * p).detach().reshape(-1) for g, p in zip(grads, model.parameters(), strict=True)]
    )


def step(opt: torch.optim.Optimizer, model: nn.Module, data) -> None:
    opt.zero_grad()
    half_mse(model(data[0]), data[1]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def dense_reference(model, data, P: torch.Tensor, wd: float = 0.0, lr_ratio=None) -> float:
    H = dense_hessian(model, half_mse, data).to(DT)
    W = wd * torch.eye(H.shape[0], dtype=DT)
    D = (1.0 if lr_ratio is None else lr_ratio) / P
    S = D.sqrt()[:, None] * (H + W) * D.sqrt()[None, :]
    lam = float(torch.linalg.eigvalsh((S + S.T) / 2)[-1])
    # the non-symmetric P⁻¹(H + W) has the same (real) spectrum
    ev = torch.linalg.eigvals(D[:, None] * (H + W))
    assert float(ev.imag.abs().max()) < 1e-8 * abs(lam)
    assert float(ev.real.max()) == pytest.approx(lam, rel=1e-9)
    return lam


def check_value(res, lam: float) -> None:
    assert res.converged
    assert abs(res.value - lam) <= res.error_bound + 1e-12 * abs(lam)
    assert res.value == pytest.approx(lam, rel=1e-9)


def test_adam_one_step_preconditioner_and_sharpness() -> None:
    model, data = problem()
    g0 = flat_grad(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-3)
    step(opt, model, data)
    pre = optimizer_preconditioner(model, opt)
    # one step: v = (1 − β₂)g², v̂ = g², P = |g| + ε (ε outside the square root)
    P = g0.abs() + 1e-3
    assert torch.allclose(pre.diagonal, P, rtol=1e-12, atol=0)
    assert pre.kind == "adam"
    assert pre.step == 1
    assert pre.eps == 1e-3
    assert pre.threshold == pytest.approx(38.0 / 1e-2, rel=1e-14)  # (2 + 2·0.9)/(0.1·η)
    res = preconditioned_sharpness(model, half_mse, data, opt, config=CFG, generator=gen(0))
    check_value(res, dense_reference(model, data, P))
    assert res.margin == pytest.approx(res.value / (38.0 / 1e-2))


def test_adam_two_steps_amsgrad_and_coupled_weight_decay() -> None:
    model, data = problem(3)
    wd, b2, eps = 0.05, 0.9, 1e-4
    opt = torch.optim.Adam(
        model.parameters(), lr=1e-2, betas=(0.5, b2), eps=eps, weight_decay=wd, amsgrad=True
    )
    g0 = flat_grad(model, data, wd)
    step(opt, model, data)
    g1 = flat_grad(model, data, wd)
    step(opt, model, data)
    v0 = (1 - b2) * g0**2
    v1 = b2 * v0 + (1 - b2) * g1**2
    vmax = torch.maximum(v0, v1)
    P = (vmax / (1 - b2**2)).sqrt() + eps
    pre = optimizer_preconditioner(model, opt)
    assert torch.allclose(pre.diagonal, P, rtol=1e-12, atol=0)
    assert torch.all(pre.coupled_decay == wd)
    assert pre.threshold == pytest.approx(2 * 1.5 / (0.5 * 1e-2))
    res = preconditioned_sharpness(model, half_mse, data, opt, config=CFG, generator=gen(1))
    check_value(res, dense_reference(model, data, P, wd))
    # the decay really is in the operator: without it the value is lower
    assert res.value > dense_reference(model, data, P) + 1e-6


def test_adamw_decoupled_decay_not_in_curvature_but_in_threshold() -> None:
    model, data = problem(5)
    lr, lam = 0.02, 0.5
    g0 = flat_grad(model, data)  # decoupled decay does not enter the moments
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=lam)
    step(opt, model, data)
    pre = optimizer_preconditioner(model, opt)
    assert pre.kind == "adamw"
    assert torch.all(pre.coupled_decay == 0)
    assert pre.decoupled_decay == pytest.approx(lam, rel=1e-14)
    assert pre.threshold == pytest.approx((2 - lr * lam) * 1.9 / (0.1 * lr), rel=1e-14)
    P = g0.abs() + 1e-8
    res = preconditioned_sharpness(model, half_mse, data, opt, config=CFG, generator=gen(2))
    check_value(res, dense_reference(model, data, P))


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_preconditioner(centered: bool) -> None:
    model, data = problem(7)
    alpha, eps, wd = 0.9, 1e-3, 0.01
    g0 = flat_grad(model, data, wd)
    opt = torch.optim.RMSprop(
        model.parameters(), lr=1e-3, alpha=alpha, eps=eps, centered=centered, momentum=0.5,
        weight_decay=wd,
    )  # fmt: skip
    step(opt, model, data)
    v = (1 - alpha) * g0**2
    if centered:
        v = v - ((1 - alpha) * g0) ** 2
    P = v.sqrt() + eps
    pre = optimizer_preconditioner(model, opt)
    assert torch.allclose(pre.diagonal, P, rtol=1e-12, atol=0)
    assert pre.threshold == pytest.approx(2 * 1.5 / 1e-3)  # heavy ball on the preconditioned step
    res = preconditioned_sharpness(model, half_mse, data, opt, config=CFG, generator=gen(3))
    check_value(res, dense_reference(model, data, P, wd))


def test_sgd_is_plain_sharpness_and_group_learning_rates() -> None:
    model, data = problem(9)
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = torch.optim.SGD(
        [{"params": first, "lr": 0.1}, {"params": second, "lr": 0.025}], momentum=0.9
    )
    pre = optimizer_preconditioner(model, opt)  # SGD needs no state
    assert pre.lr == 0.1
    assert pre.kind == "sgd"
    assert torch.all(pre.diagonal == 1)
    n0 = sum(p.numel() for p in first)
    ratio = torch.cat([torch.ones(n0, dtype=DT), 0.25 * torch.ones(pre.scale.numel() - n0)])
    assert torch.equal(pre.scale, ratio)
    res = preconditioned_sharpness(model, half_mse, data, pre, config=CFG, generator=gen(4))
    check_value(res, dense_reference(model, data, torch.ones_like(ratio), lr_ratio=ratio))
    assert pre.threshold == pytest.approx(2 * 1.9 / 0.1)


def test_gauss_newton_and_warm_start() -> None:
    model, data = problem(11)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step(opt, model, data)
    cold = preconditioned_sharpness(model, half_mse, data, opt, config=CFG, generator=gen(5))
    assert cold.eigen.vectors is not None
    warm = preconditioned_sharpness(
        model, half_mse, data, opt, config=CFG, generator=gen(6), v0=cold.eigen.vectors[:, 0]
    )
    assert warm.value == pytest.approx(cold.value, rel=1e-9)
    gn = preconditioned_sharpness(
        model, half_mse, data, opt, curvature="gauss_newton", config=CFG, generator=gen(5)
    )
    assert gn.curvature == "gauss_newton"
    assert gn.converged
    assert gn.value > 0


# ------------------------------------------------------------------ thresholds by simulation


def _grows(a: float, make_opt, steps: int = 4000) -> bool:
    """Does torch's optimizer diverge on f(w) = ½ a w² from w = 1?"""
    w = torch.ones(1, dtype=DT, requires_grad=True)
    opt = make_opt([w])
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * a * w * w).sum().backward()
        opt.step()
    return not (w.detach().abs().item() <= 1.0)  # NaN/inf after overflow count as growth


@pytest.mark.parametrize(
    ("kwargs", "formula"),
    [
        ({"momentum": 0.0}, lambda eta, b: 2 / eta),
        ({"momentum": 0.9}, lambda eta, b: 2 * (1 + b) / eta),
        ({"momentum": 0.6, "dampening": 0.3}, lambda eta, b: 2 * (1 + b) / (0.7 * eta)),
        ({"momentum": 0.7, "nesterov": True}, lambda eta, b: 2 * (1 + b) / ((1 + 2 * b) * eta)),
    ],
)
def test_sgd_thresholds_match_torch_sgd_dynamics(kwargs, formula) -> None:
    eta = 0.1
    model = nn.Linear(1, 1)
    pre = optimizer_preconditioner(model, torch.optim.SGD(model.parameters(), lr=eta, **kwargs))
    thr = formula(eta, kwargs.get("momentum", 0.0))
    assert pre.threshold == pytest.approx(thr, rel=1e-14)
    assert not _grows(0.98 * thr, lambda p: torch.optim.SGD(p, lr=eta, **kwargs))
    assert _grows(1.02 * thr, lambda p: torch.optim.SGD(p, lr=eta, **kwargs))


@pytest.mark.parametrize(("beta1", "lam"), [(0.9, 0.0), (0.9, 2.0), (0.5, 5.0)])
def test_adam_threshold_is_the_frozen_linear_recursion(beta1: float, lam: float) -> None:
    """m ← β₁m + (1 − β₁)aθ, θ ← (1 − ηλ)θ − ηm on one direction a of P⁻¹H: stable iff a ≤ thr."""
    eta = 0.01
    thr = (2 - eta * lam) * (1 + beta1) / ((1 - beta1) * eta)
    if lam == 0.0:
        assert thr == pytest.approx(38 / eta if beta1 == 0.9 else thr)

    def run(a: float) -> float:
        th, m = 1.0, 0.0
        for _ in range(3000):
            m = beta1 * m + (1 - beta1) * a * th
            th = (1 - eta * lam) * th - eta * m
        return abs(th)

    assert run(0.99 * thr) < 1.0
    assert run(1.01 * thr) > 1.0


# ------------------------------------------------------------------ operator, errors, hygiene


def test_preconditioned_operator_dense() -> None:
    A = torch.randn(5, 5, generator=gen(0), dtype=DT)
    A = A + A.T
    d = torch.rand(5, generator=gen(1), dtype=DT) + 0.1
    w = torch.rand(5, generator=gen(2), dtype=DT)
    S = PreconditionedOperator(DenseOperator(A), d, w)
    ref = d.sqrt()[:, None] * (A + torch.diag(w)) * d.sqrt()[None, :]
    V = torch.randn(5, 3, generator=gen(3), dtype=DT)
    assert torch.allclose(S @ V, ref @ V, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="positive vector"):
        PreconditionedOperator(DenseOperator(A), -d)
    with pytest.raises(ValueError, match="shift must have shape"):
        PreconditionedOperator(DenseOperator(A), d, w[:3])


def test_bad_inputs() -> None:
    model, data = problem()
    with pytest.raises(TypeError, match="Adam, AdamW, RMSprop or SGD"):
        optimizer_preconditioner(model, torch.optim.Adagrad(model.parameters()))
    with pytest.raises(ValueError, match="no Adam state"):
        optimizer_preconditioner(model, torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="no RMSprop state"):
        optimizer_preconditioner(model, torch.optim.RMSprop(model.parameters()))
    with pytest.raises(ValueError, match="maximize=True"):
        optimizer_preconditioner(model, torch.optim.SGD(model.parameters(), lr=0.1, maximize=True))
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        optimizer_preconditioner(model, torch.optim.SGD(other.parameters(), lr=0.1))
    groups = [
        {"params": list(model[0].parameters()), "momentum": 0.9},
        {"params": list(model[2].parameters()), "momentum": 0.5},
    ]
    with pytest.raises(ValueError, match="different momentum"):
        optimizer_preconditioner(model, torch.optim.SGD(groups, lr=0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="LanczosConfig"):
        preconditioned_sharpness(model, half_mse, data, opt, config={"tol": 1e-3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="curvature"):
        preconditioned_sharpness(model, half_mse, data, opt, curvature="fisher")
    pre = optimizer_preconditioner(model, opt)
    with pytest.raises(ValueError, match="must act on the"):
        pre.operator(DenseOperator(torch.eye(3, dtype=DT)))
    assert isinstance(pre, Preconditioner)


def test_model_left_as_found() -> None:
    model, data = problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step(opt, model, data)
    half_mse(model(data[0]), data[1]).backward()  # leave a .grad behind
    grads = [p.grad.clone() for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    model.eval()
    rng = torch.get_rng_state()
    preconditioned_sharpness(model, half_mse, data, opt, generator=gen(0))
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for p, g, v in zip(model.parameters(), grads, params, strict=True):
        assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), v)
    H = HessianOperator(model, half_mse, data)
    assert H.shape[0] == optimizer_preconditioner(model, opt).scale.numel()
    assert math.isfinite(float(H.shape[0]))
