"""Momentum in the training engine equals torch.optim.SGD(momentum=β, nesterov=...).

The reference is a plain PyTorch loop: ``torch.optim.SGD(lr, momentum=β, dampening=0,
nesterov=...)`` on the same batches (drawn by the same ``Sampling(...).sampler(generator)``), in
float64. Every stepper of the one engine (autograd on the live module, ``vmap`` over runs,
closed-form gradients) must reproduce its trajectory: the loss history and the final parameters.
Tolerance: the engine and the reference compute the same float64 operations in the same order
up to the summation order of the gradient kernels (≈ 1e-16 relative per step); over ≤ 60 steps
in the stable regime that stays far below 1e-12 relative (measured ≈ 1e-15).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynstab.errors import DivergenceWarning
from dynstab.losses import half_mse
from dynstab.models import MLP, TwoLayerReLU
from dynstab.sampling import Sampling
from dynstab.training import Run, StoppingRule, train, train_batched, train_runs

DT = torch.float64
RTOL = 1e-12


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def problem() -> tuple[TwoLayerReLU, torch.Tensor, torch.Tensor]:
    X = torch.randn(16, 4, generator=gen(1), dtype=DT)
    teacher = TwoLayerReLU(4, 2, generator=gen(2), dtype=DT)
    with torch.no_grad():
        y = teacher(X)
    return TwoLayerReLU(4, 6, generator=gen(3), dtype=DT), X, y


def reference(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    momentum: float,
    nesterov: bool,
    batch_size: int | None,
    seed: int,
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """torch.optim.SGD on the engine's batches; returns full losses L(θ_t), t = 0..steps."""
    n = X.shape[0]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
    sampler = None if batch_size is None else Sampling(n, batch_size, "with").sampler(gen(seed))
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            losses.append(float(half_mse(model(X), y)))
        idx = torch.arange(n) if sampler is None else sampler.next()
        opt.zero_grad()
        half_mse(model(X[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        losses.append(float(half_mse(model(X), y)))
    return losses, {k: p.detach().clone() for k, p in model.named_parameters()}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=RTOL, atol=RTOL * float(b.abs().max())))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_train_equals_torch_sgd_momentum(nesterov: bool, batch_size: int | None) -> None:
    model, X, y = problem()
    ref_model = TwoLayerReLU(4, 6, generator=gen(3), dtype=DT)
    ref_losses, ref_params = reference(
        ref_model, X, y, lr=0.05, steps=40, momentum=0.9, nesterov=nesterov,
        batch_size=batch_size, seed=7,
    )  # fmt: skip
    res = train(
        model, X, y, lr=0.05, steps=40, momentum=0.9, nesterov=nesterov, batch_size=batch_size,
        seed=7, stop_loss=None, eval_every=1,
    )  # fmt: skip
    steps, losses = res.history.as_arrays("loss")
    assert list(steps) == list(range(41))
    assert close(torch.as_tensor(losses, dtype=DT), torch.tensor(ref_losses, dtype=DT))
    for k, p in model.named_parameters():
        assert close(p.detach(), ref_params[k]), k
    # momentum really changed the trajectory (a test that cannot fail otherwise)
    plain = TwoLayerReLU(4, 6, generator=gen(3), dtype=DT)
    train(plain, X, y, lr=0.05, steps=40, batch_size=batch_size, seed=7, stop_loss=None)
    assert not torch.allclose(plain.w, model.w, rtol=1e-6)


@pytest.mark.parametrize("gradient", ["autograd", "closed_form"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_train_runs_momentum_every_stepper(gradient: str, nesterov: bool) -> None:
    """vmap and closed-form steppers, several runs with their own η and seed, SGD B = 2."""
    model, X, y = problem()
    runs = [Run(lr=lr, seed=s) for lr in (0.02, 0.05) for s in (0, 1)]
    res = train_runs(
        model, X, y, runs, steps=30, batch_size=2, momentum=0.8, nesterov=nesterov,
        gradient=gradient, stop=StoppingRule(stop_loss=None), eval_every=1,
    )  # fmt: skip
    for run, r in zip(runs, res, strict=True):
        ref_model = TwoLayerReLU(4, 6, generator=gen(3), dtype=DT)
        ref_losses, ref_params = reference(
            ref_model, X, y, lr=run.lr, steps=30, momentum=0.8, nesterov=nesterov,
            batch_size=2, seed=int(run.seed or 0),
        )  # fmt: skip
        losses = torch.as_tensor(r.history.as_arrays("loss")[1], dtype=DT)
        assert close(losses, torch.tensor(ref_losses, dtype=DT))
        assert r.params is not None
        for k, v in r.params.items():
            assert close(v, ref_params[k]), (run, k)


def test_momentum_replay_after_divergence_and_batched() -> None:
    """A run that diverges inside a chunk is replayed with its momentum buffer restored.

    GD with heavy ball on a quadratic f(w) = ½ a w² diverges iff η a > 2(1 + β); the stopping
    iterate must be the reference trajectory's at the stopping step.
    """
    X = torch.tensor([[3.0]], dtype=DT)  # a = 9
    y = torch.zeros(1, 1, dtype=DT)

    def factory(seed: int) -> nn.Module:
        m = MLP([1, 1], bias=False, dtype=DT)
        with torch.no_grad():
            m.layers[0].weight.fill_(1.0)
        return m

    beta = 0.5
    eta_crit = 2 * (1 + beta) / 9.0
    with pytest.warns(DivergenceWarning, match="diverged"):
        res = train_batched(
            factory, X, y, lrs=[0.9 * eta_crit, 1.1 * eta_crit], seeds=[0], steps=2000,
            momentum=beta, stop_loss=1e-20, divergence_threshold=1e6,
        )  # fmt: skip
    stable, unstable = res
    assert stable.converged
    assert not stable.diverged
    assert unstable.diverged
    assert not unstable.converged
    # the diverged run's record equals a plain heavy-ball recursion
    w, b, eta = 1.0, 0.0, 1.1 * eta_crit
    t = 0
    while 0.5 * 9.0 * w * w <= 1e6:
        b = beta * b + 9.0 * w
        w -= eta * b
        t += 1
    assert unstable.steps_run == t
    assert unstable.params is not None
    assert float(unstable.params["layers.0.weight"]) == pytest.approx(w, rel=1e-12)


def test_momentum_bad_input() -> None:
    model, X, y = problem()
    # the one check of β shared with the criteria (dynstab.criteria.momentum.check_momentum)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        train(model, X, y, lr=0.1, steps=1, momentum=1.0)
    with pytest.raises(ValueError, match="momentum must be finite and >= 0"):
        train(model, X, y, lr=0.1, steps=1, momentum=-0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        train(model, X, y, lr=0.1, steps=1, nesterov=True)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        train(model, X, y, lr=0.1, steps=1, momentum="0.9")  # type: ignore[arg-type]


def test_momentum_in_history_metadata() -> None:
    model, X, y = problem()
    res = train(model, X, y, lr=0.01, steps=2, momentum=0.5, nesterov=True, stop_loss=None)
    assert res.history.metadata["momentum"] == 0.5
    assert res.history.metadata["nesterov"] is True
    plain = train(problem()[0], X, y, lr=0.01, steps=2, stop_loss=None)
    assert "momentum" not in plain.history.metadata
