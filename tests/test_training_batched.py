"""Tests of dynstab.training.batched: train_batched equals train run by run."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from dynstab.errors import DivergenceWarning
from dynstab.training import TrainResult, train, train_batched, warmup

DT = torch.float64


def factory(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1), nn.Flatten(0)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.8 * torch.randn(p.shape, generator=g, dtype=DT))
    return model


def data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    X = torch.randn(n, 3, generator=g, dtype=DT)
    return X, torch.sin(X.sum(1))


def compare(batched: list[TrainResult], lrs: list[float], seeds: list[int], X, y, **kw) -> None:
    assert len(batched) == len(lrs) * len(seeds)
    for i, lr in enumerate(lrs):
        for j, seed in enumerate(seeds):
            rb = batched[i * len(seeds) + j]
            model = factory(seed)
            rs = train(model, X, y, lr=lr, seed=seed, **kw)
            assert (rb.lr, rb.seed) == (lr, seed)
            for f in (
                "stop_reason",
                "steps_run",
                "num_clipped",
                "step_at_loss_threshold",
                "batch_size",
                "sampling",
            ):
                assert getattr(rb, f) == getattr(rs, f), f
            for f in (
                "lr_at_convergence",
                "lr_at_loss_threshold",
                "full_lr_fraction",
                "converged_at_full_lr",
            ):
                assert getattr(rb, f) == getattr(rs, f), f
            assert rb.history.steps == rs.history.steps
            assert rb.history.names == rs.history.names
            assert rb.history.metadata == rs.history.metadata
            for name in rs.history.names:
                torch.testing.assert_close(
                    torch.from_numpy(rb.history.as_arrays(name)[1]),
                    torch.from_numpy(rs.history.as_arrays(name)[1]),
                    rtol=1e-9,
                    atol=1e-12,
                    equal_nan=True,
                )
            assert rb.params is not None
            assert rs.params is None
            if not rs.diverged:
                for k, p in model.named_parameters():
                    torch.testing.assert_close(rb.params[k], p.detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("batch_size", "sampling"), [(None, "with"), (4, "with"), (4, "without"), (3, "reshuffle")]
)
def test_batched_equals_sequential_run_by_run(batch_size: int | None, sampling: str) -> None:
    X, y = data()
    lrs, seeds = [0.05, 0.3, 60.0], [0, 1]  # the last lr diverges
    kw = {
        "steps": 60,
        "batch_size": batch_size,
        "sampling": sampling,
        "schedule": warmup(10, kind="linear"),
        "stop_loss": 1e-10,
        "eval_every": 7,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_batched(factory, X, y, lrs=lrs, seeds=seeds, **kw)
        compare(res, lrs, seeds, X, y, **kw)
    assert [r.diverged for r in res] == [False] * 4 + [True] * 2


def test_batched_clipping_and_convergence_match() -> None:
    # n = 2 points, 6 hidden units: interpolation is reached quickly; clipping acts early.
    X, y = data(n=2)
    lrs, seeds = [0.1, 0.3], [3, 4]
    kw = {"steps": 400, "clip": 0.1, "stop_loss": 1e-8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_batched(factory, X, y, lrs=lrs, seeds=seeds, **kw)
        compare(res, lrs, seeds, X, y, **kw)
    assert all(r.converged for r in res)
    assert len({r.steps_run for r in res}) > 1
    assert all(r.num_clipped > 0 for r in res)


def test_batched_records_the_last_loss_threshold_crossing_per_run() -> None:
    # f(x) = w x, x = 1, y = 2, w0 = 0: L_{t+1} = L_t (1 − η_t)², L_0 = 2. With lr = 1 the
    # overshoot at t = 12 lifts the loss back above 1e-6 after a first crossing at t = 11; it
    # crosses again at t = 14 (multiplier 0.75). With lr = 0.5 the loss is still ≈ 2e-3 at the
    # overshoot (factor (1 − 2)² = 1) and crosses once, later.
    def scalar(seed: int) -> nn.Module:
        model = nn.Linear(1, 1, bias=False).double()
        with torch.no_grad():
            model.weight.zero_()
        return model

    def schedule(t: int) -> float:
        return 0.5 if t < 12 else (4.0 if t == 12 else 0.75)

    def crossings(lr: float) -> list[tuple[int, float]]:
        """(step, η_t) of every downward crossing of 1e-6 by the hand recursion."""
        out, loss, prev = [], 2.0, math.inf
        for t in range(100):
            if loss <= 1e-6 < prev:
                out.append((t, lr * schedule(t)))
            prev, loss = loss, loss * (1 - lr * schedule(t)) ** 2
        return out

    assert crossings(1.0) == [(11, 0.5), (14, 0.75)]
    assert len(crossings(0.5)) == 1
    X, y = torch.ones(3, 1, dtype=DT), 2 * torch.ones(3, 1, dtype=DT)
    res = train_batched(scalar, X, y, lrs=[1.0, 0.5], seeds=[0], steps=100, schedule=schedule)
    for r, lr in zip(res, [1.0, 0.5], strict=True):
        assert r.converged
        assert (r.step_at_loss_threshold, r.lr_at_loss_threshold) == crossings(lr)[-1]


def test_divergence_warning_and_dtype() -> None:
    X, y = data()

    def f32(seed: int) -> nn.Module:
        return factory(seed).float()

    with pytest.warns(DivergenceWarning, match="runs diverged"):
        res = train_batched(f32, X, y, lrs=[100.0], seeds=[0, 1], steps=50, dtype=DT)
    assert all(r.diverged for r in res)
    assert all(p.dtype == DT for r in res for p in (r.params or {}).values())


def test_bad_arguments_raise() -> None:
    X, y = data()
    with pytest.raises(ValueError, match="non-empty"):
        train_batched(factory, X, y, lrs=[], seeds=[0], steps=1)
    with pytest.raises(ValueError, match="lrs entry must be finite and > 0"):
        train_batched(factory, X, y, lrs=[-1.0], seeds=[0], steps=1)
    with pytest.raises(TypeError, match="seeds entry must be an int"):
        train_batched(factory, X, y, lrs=[0.1], seeds=[0.5], steps=1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"must return an nn\.Module"):
        train_batched(lambda s: None, X, y, lrs=[0.1], seeds=[0], steps=1)  # type: ignore[arg-type,return-value]

    def ragged(seed: int) -> nn.Module:
        return nn.Linear(3, 1 + seed).double()

    with pytest.raises(ValueError, match="same architecture"):
        train_batched(ragged, X, y, lrs=[0.1], seeds=[0, 1], steps=1)
