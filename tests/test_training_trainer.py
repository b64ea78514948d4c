"""Tests of dynstab.training.trainer: updates against hand-written recurrences, stopping rules."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab.training import BatchSampler, Monitor, NormMonitor, train, warmup

DT = torch.float64


def linear_problem(
    n: int = 6, d: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(n, generator=g, dtype=DT)
    w0 = torch.randn(d, generator=g, dtype=DT)
    return X, y, w0


class Linear(nn.Module):
    """f(x) = ⟨w, x⟩, output shape (n,)."""

    def __init__(self, w0: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w0.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def half_mse_grad(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∇_w (1/B) Σ ½(⟨w, x_i⟩ − y_i)² = Xᵀ(Xw − y)/B."""
    return X.T @ (X @ w - y) / X.shape[0]


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


def test_gd_matches_hand_recurrence_and_records_loss() -> None:
    X, y, w0 = linear_problem()
    lr, steps = 0.1, 25
    model = Linear(w0)
    res = train(model, X, y, lr=lr, steps=steps, stop_loss=None)
    w, losses = w0.clone(), []
    for _ in range(steps):
        losses.append(float(0.5 * ((X @ w - y) ** 2).mean()))
        w = w - lr * half_mse_grad(X, y, w)
    losses.append(float(0.5 * ((X @ w - y) ** 2).mean()))
    assert_close(model.w.detach(), w)
    steps_rec, loss_rec = res.history.as_arrays("loss")
    assert steps_rec.tolist() == list(range(steps + 1))
    assert_close(torch.tensor(loss_rec), torch.tensor(losses, dtype=DT))
    assert res.steps_run == steps
    assert res.stop_reason == "max_steps"
    assert res.batch_size is None
    assert res.sampling == "full"
    assert math.isclose(res.final_loss, losses[-1], rel_tol=1e-12)


@pytest.mark.parametrize("sampling", ["with", "without", "reshuffle"])
def test_sgd_matches_hand_recurrence_with_replayed_batches(sampling: str) -> None:
    X, y, w0 = linear_problem(n=7)
    lr, steps, B, seed = 0.05, 30, 3, 11
    model = Linear(w0)
    train(
        model, X, y, lr=lr, steps=steps, batch_size=B, sampling=sampling, seed=seed, stop_loss=None
    )
    sampler = BatchSampler(7, B, sampling, generator=torch.Generator().manual_seed(seed))
    w = w0.clone()
    for _ in range(steps):
        idx = sampler.next()  # duplicates (sampling "with") count twice in the batch mean
        w = w - lr * half_mse_grad(X[idx], y[idx], w)
    assert_close(model.w.detach(), w)


def test_with_replacement_counts_duplicates_in_batch_loss() -> None:
    # n = 2, B = 3 with replacement: some batch must repeat an index; the recurrence above
    # weights it twice. Check directly that the trainer's gradient equals the multiset mean.
    X = torch.tensor([[1.0], [2.0]], dtype=DT)
    y = torch.tensor([1.0, -1.0], dtype=DT)
    model = Linear(torch.zeros(1, dtype=DT))
    train(model, X, y, lr=1.0, steps=1, batch_size=3, sampling="with", seed=5, stop_loss=None)
    idx = BatchSampler(2, 3, "with", generator=torch.Generator().manual_seed(5)).next()
    assert len(set(idx.tolist())) < 3
    expected = -half_mse_grad(X[idx], y[idx], torch.zeros(1, dtype=DT))
    assert_close(model.w.detach(), expected)


@pytest.mark.parametrize("sampling", ["without", "reshuffle"])
def test_batch_size_n_without_replacement_is_gd(sampling: str) -> None:
    X, y, w0 = linear_problem()
    m1, m2 = Linear(w0), Linear(w0)
    r1 = train(m1, X, y, lr=0.1, steps=10, stop_loss=None)
    r2 = train(m2, X, y, lr=0.1, steps=10, batch_size=6, sampling=sampling, stop_loss=None)
    assert torch.equal(m1.w, m2.w)
    assert r2.sampling == "full"
    assert r2.history == r1.history


def test_batch_size_n_with_replacement_is_not_gd() -> None:
    X, y, w0 = linear_problem()
    m1, m2 = Linear(w0), Linear(w0)
    train(m1, X, y, lr=0.1, steps=10, stop_loss=None)
    r2 = train(m2, X, y, lr=0.1, steps=10, batch_size=6, sampling="with", seed=0, stop_loss=None)
    assert r2.sampling == "with"
    assert r2.batch_size == 6
    assert not torch.allclose(m1.w, m2.w)


def test_schedule_and_clipping_follow_the_recurrence() -> None:
    X, y, w0 = linear_problem()
    w0 = 10 * w0  # large gradients so that clipping is active at the start
    lr, steps, clip = 0.2, 20, 1.5
    sched = warmup(8, kind="cubic")
    model = Linear(w0)
    res = train(model, X, y, lr=lr, steps=steps, schedule=sched, clip=clip, stop_loss=None)
    w, num_clipped = w0.clone(), 0
    for t in range(steps):
        g = half_mse_grad(X, y, w)
        if float(g.norm()) > clip:
            g, num_clipped = g * (clip / float(g.norm())), num_clipped + 1
        w = w - lr * min(1.0, (t + 1) / 8) ** 3 * g
    assert_close(model.w.detach(), w)
    assert res.num_clipped == num_clipped > 0
    _, lrs = res.history.as_arrays("lr")
    assert lrs[0] == pytest.approx(lr / 8**3, rel=1e-15)
    assert lrs[-1] == lr


def scalar_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """f(x) = w x with x = 1, y = 2, w0 = 0: under GD w_t − 2 = −2(1 − η)^t, L_t = 2(1 − η)^{2t}."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    return model, torch.ones(3, 1, dtype=DT), 2 * torch.ones(3, 1, dtype=DT)


def first_step_below(level: float, lr: float) -> int:
    t = 0
    while 2 * (1 - lr) ** (2 * t) > level:
        t += 1
    return t


def test_convergence_stops_at_first_step_below_stop_loss_and_records_lrs() -> None:
    lr = 0.3
    model, X, y = scalar_problem()
    res = train(model, X, y, lr=lr, steps=1000, stop_loss=1e-10)
    t_conv, t_6 = first_step_below(1e-10, lr), first_step_below(1e-6, lr)
    assert res.converged
    assert not res.diverged
    assert res.stop_reason == "converged"
    assert res.steps_run == t_conv
    assert res.lr_at_convergence == lr
    assert (res.step_at_loss_threshold, res.lr_at_loss_threshold) == (t_6, lr)
    assert res.loss_threshold == 1e-6
    assert res.effective_lr == lr
    assert res.full_lr_fraction == 1.0
    assert res.converged_at_full_lr
    assert res.final_loss == pytest.approx(2 * (1 - lr) ** (2 * t_conv), rel=1e-9)
    assert res.history.steps[-1] == t_conv


def rebound_schedule(t: int) -> float:
    """Multiplier 0.5 up to t = 11, one overshoot 4 at t = 12 (L × (1 − 4)² = 9), then 0.75."""
    return 0.5 if t < 12 else (4.0 if t == 12 else 0.75)


def test_effective_lr_is_the_last_downward_crossing_after_a_rebound() -> None:
    # Scalar problem with lr = 1: L_{t+1} = L_t (1 − m(t))², L_0 = 2. L_11 = 2/4^11 ≈ 4.8e-7 is
    # the first value ≤ 1e-6; the overshoot gives L_13 = 9·2/4^13 ≈ 1.07e-6 > 1e-6, and
    # L_14 = L_13/16 ≈ 6.7e-8 crosses again (the last crossing) at multiplier 0.75.
    losses = [2.0]
    for t in range(30):
        losses.append(losses[-1] * (1 - rebound_schedule(t)) ** 2)
    crossings = [t for t in range(31) if losses[t] <= 1e-6 and (t == 0 or losses[t - 1] > 1e-6)]
    assert crossings == [11, 14]  # the construction really crosses twice
    model, X, y = scalar_problem()
    res = train(model, X, y, lr=1.0, steps=100, schedule=rebound_schedule)
    assert res.converged
    assert (res.step_at_loss_threshold, res.lr_at_loss_threshold) == (14, 0.75)
    assert res.effective_lr == 0.75
    steps, loss = res.history.as_arrays("loss")
    assert loss[list(steps).index(13)] == pytest.approx(losses[13], rel=1e-9)
    d = res.to_dict(include_history=False)
    assert (d["step_at_loss_threshold"], d["lr_at_loss_threshold"]) == (14, 0.75)
    assert d["effective_lr"] == 0.75
    # The threshold is a parameter: at 1e-4 the loss crosses once, before the overshoot.
    crossings4 = [t for t in range(31) if losses[t] <= 1e-4 and (t == 0 or losses[t - 1] > 1e-4)]
    assert len(crossings4) == 1
    model, X, y = scalar_problem()
    res4 = train(model, X, y, lr=1.0, steps=100, schedule=rebound_schedule, loss_threshold=1e-4)
    assert (res4.step_at_loss_threshold, res4.lr_at_loss_threshold) == (crossings4[0], 0.5)


def test_loss_threshold_crossing_is_none_when_the_loss_never_reaches_it() -> None:
    model, X, y = scalar_problem()
    res = train(model, X, y, lr=0.1, steps=3, stop_loss=None)
    assert (res.step_at_loss_threshold, res.lr_at_loss_threshold) == (None, None)
    assert res.effective_lr == 0.1


def test_converged_at_full_lr_requires_the_fraction_of_full_lr_steps() -> None:
    lr = 0.3
    t_conv = first_step_below(1e-10, lr)  # constant-lr convergence step (a lower bound here)
    T = 2 * t_conv  # long warm-up: most updates happen below the full lr
    model, X, y = scalar_problem()
    res = train(model, X, y, lr=lr, steps=10_000, schedule=warmup(T, kind="linear"))
    assert res.converged
    full = res.steps_run - (T - 1)  # updates T−1, …, steps_run−1 use the full lr
    assert res.full_lr_fraction == pytest.approx(full / res.steps_run, rel=1e-15)
    assert res.converged_at_full_lr == (res.full_lr_fraction >= 0.2)
    assert not res.converged_at_full_lr
    model, X, y = scalar_problem()
    res0 = train(
        model,
        X,
        y,
        lr=lr,
        steps=10_000,
        schedule=warmup(T, kind="linear"),
        min_full_lr_fraction=0.0,
    )
    assert res0.converged_at_full_lr
    assert res0.lr_at_convergence == lr
    assert res0.lr_at_loss_threshold is not None
    assert res0.lr_at_loss_threshold <= lr


def test_divergence_stops_warns_and_does_not_raise() -> None:
    model, X, y = scalar_problem()  # GD on this problem diverges for lr > 2
    with pytest.warns(DivergenceWarning, match="diverged"):
        res = train(model, X, y, lr=3.0, steps=1000, divergence_threshold=1e6)
    assert res.diverged
    assert not res.converged
    assert res.stop_reason == "diverged"
    # L_t = 2·4^t exceeds 1e6 first at t = 10 (2·4^9 ≈ 5.2e5, 2·4^10 ≈ 2.1e6)
    assert res.steps_run == 10
    assert res.final_loss == pytest.approx(2 * 4.0**10, rel=1e-12)
    json.dumps(res.to_dict(), allow_nan=False)


def test_sgd_divergence_on_nonfinite_loss() -> None:
    X, y, w0 = linear_problem()
    model = Linear(w0)
    with pytest.warns(DivergenceWarning):
        res = train(model, X, y, lr=1e3, steps=500, batch_size=2, seed=0)
    assert res.diverged
    assert res.steps_run < 500
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert out["diverged"] is True


def test_sgd_divergence_caught_by_the_batch_loss_at_an_evaluation_step() -> None:
    # Full loss (mean) below the threshold, the sampled outlier's loss above it: ½·2449.5² ≈ 3e6.
    X, y, _ = linear_problem()
    seed = 4
    i0 = int(BatchSampler(6, 1, "with", generator=torch.Generator().manual_seed(seed)).next()[0])
    y[i0] = 2449.5
    with pytest.warns(DivergenceWarning):
        res = train(
            Linear(torch.zeros(3, dtype=DT)),
            X,
            y,
            lr=0.1,
            steps=5,
            batch_size=1,
            seed=seed,
            eval_every=1,
            divergence_threshold=1e6,
        )
    assert res.diverged
    assert res.steps_run == 0
    assert set(res.history.at(0)) == {"loss", "lr", "batch_loss"}
    assert res.history.at(0)["loss"] < 1e6 < res.final_loss == res.history.at(0)["batch_loss"]


def test_not_converged_warns_only_when_a_tolerance_was_asked_for() -> None:
    X, y, w0 = linear_problem(n=12)  # d = 3 < n: no interpolation, loss stays > 0
    with pytest.warns(ConvergenceWarning, match="stop_loss"):
        res = train(Linear(w0), X, y, lr=0.1, steps=5)
    assert not res.converged
    assert res.stop_reason == "max_steps"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(Linear(w0), X, y, lr=0.1, steps=5, stop_loss=None)


def test_sgd_full_loss_is_evaluated_every_eval_every_steps_and_at_the_end() -> None:
    X, y, w0 = linear_problem(n=8)
    res = train(
        Linear(w0), X, y, lr=0.05, steps=23, batch_size=2, seed=1, eval_every=5, stop_loss=None
    )
    steps, _ = res.history.as_arrays("loss")
    assert steps.tolist() == [0, 5, 10, 15, 20, 23]
    res_default = train(Linear(w0), X, y, lr=0.05, steps=9, batch_size=2, seed=1, stop_loss=None)
    assert res_default.history.as_arrays("loss")[0].tolist() == [0, 4, 8, 9]  # n // B = 4


def test_dtype_conversion_grad_and_mode_are_respected() -> None:
    X, y, w0 = linear_problem()
    model = Linear(w0.float()).eval()
    res = train(model, X.float(), y.float(), lr=0.1, steps=3, dtype=DT, stop_loss=None)
    assert model.w.dtype == DT
    assert model.w.grad is None
    assert not model.training
    assert model.w.requires_grad
    assert res.steps_run == 3
    model32 = Linear(w0.float())
    train(model32, X, y, lr=0.1, steps=3, stop_loss=None)  # float64 data follow the model
    assert model32.w.dtype == torch.float32
    assert model32.w.grad is None


def test_frozen_parameters_are_not_trained() -> None:
    X, y, _w0 = linear_problem()
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    model[2].weight.requires_grad_(False)
    frozen = model[2].weight.detach().clone()
    train(model, X, y.unsqueeze(1), lr=0.1, steps=5, stop_loss=None)
    assert torch.equal(model[2].weight, frozen)


class Recorder(Monitor):
    def __init__(self, every: int) -> None:
        super().__init__("w0", every)
        self.contexts: list[dict] = []

    def __call__(self, step, model, context):
        self.contexts.append(dict(context))
        return {"w0": float(model.w[0].detach())}


def test_monitors_see_the_iterate_before_the_update_and_run_at_the_end() -> None:
    X, y, w0 = linear_problem()
    lr, steps = 0.1, 7
    rec = Recorder(every=3)
    res = train(
        Linear(w0),
        X,
        y,
        lr=lr,
        steps=steps,
        monitors=[rec, NormMonitor("norm", every=2)],
        stop_loss=None,
    )
    ws = [w0.clone()]
    for _ in range(steps):
        ws.append(ws[-1] - lr * half_mse_grad(X, y, ws[-1]))
    s, v = res.history.as_arrays("w0")
    assert s.tolist() == [0, 3, 6, 7]
    assert_close(torch.tensor(v, dtype=DT), torch.stack([ws[t][0] for t in s.tolist()]))
    s, v = res.history.as_arrays("norm")
    assert s.tolist() == [0, 2, 4, 6, 7]
    assert_close(torch.tensor(v, dtype=DT), torch.stack([ws[t].norm() for t in s.tolist()]))
    ctx = rec.contexts[1]
    assert ctx["step"] == 3
    assert ctx["lr"] == lr
    assert ctx["batch_size"] == 6
    assert ctx["sampling"] == "without"
    assert ctx["loss"] == pytest.approx(float(0.5 * ((X @ ws[3] - y) ** 2).mean()), rel=1e-12)


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    X, y, w0 = linear_problem()
    train(Linear(w0), X, y, lr=0.1, steps=3, progress=True, stop_loss=None)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "train" in captured.err


def test_result_to_dict_is_json() -> None:
    X, y, w0 = linear_problem()
    res = train(Linear(w0), X, y, lr=0.1, steps=3, stop_loss=None)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["steps_run"] == 3
    assert {"lr_at_loss_threshold", "step_at_loss_threshold", "loss_threshold"} <= d.keys()
    assert d["history"]["records"][0]["step"] == 0
    assert "history" not in res.to_dict(include_history=False)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"lr": 0.0}, ValueError, "lr must be finite and > 0"),
        ({"steps": -1}, ValueError, "steps must be >= 0"),
        ({"steps": 1.5}, TypeError, "steps must be an int"),
        ({"batch_size": 7, "sampling": "without"}, ValueError, "batch_size must be <= 6"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2, "sampling": "cyclic"}, ValueError, "unknown sampling"),
        ({"clip": -1.0}, ValueError, "clip must be finite"),
        ({"stop_loss": 0.0}, ValueError, "stop_loss must be finite"),
        ({"min_full_lr_fraction": 1.5}, ValueError, r"min_full_lr_fraction must be in \[0, 1\]"),
        ({"eval_every": 0}, ValueError, "eval_every must be >= 1"),
        ({"divergence_threshold": 0.0}, ValueError, "divergence_threshold must be finite"),
        ({"schedule": 3}, TypeError, "schedule must be callable"),
        ({"schedule": lambda t: -1.0}, ValueError, "finite multiplier >= 0"),
        ({"seed": 1, "generator": torch.Generator()}, ValueError, "either generator or seed"),
        ({"dtype": torch.int64}, ValueError, "floating dtype"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, exc: type, match: str) -> None:
    X, y, w0 = linear_problem()
    base = {"lr": 0.1, "steps": 2, "batch_size": 2 if "seed" in kwargs else None}
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        train(Linear(w0), X, y, **base)


def test_bad_data_and_model_raise() -> None:
    X, y, w0 = linear_problem()
    with pytest.raises(ValueError, match="same number n >= 1 of samples"):
        train(Linear(w0), X, y[:-1], lr=0.1, steps=1)
    with pytest.raises(TypeError, match=r"X must be a torch\.Tensor"):
        train(Linear(w0), X.numpy(), y, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="trainable"):
        train(Linear(w0).requires_grad_(False), X, y, lr=0.1, steps=1)


class WithUnused(nn.Module):
    def __init__(self, w0: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w0.clone())
        self.unused = nn.Parameter(torch.ones(2, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_parameters_unused_by_the_loss_get_zero_gradient() -> None:
    X, y, w0 = linear_problem()
    model = WithUnused(w0)
    train(model, X, y, lr=0.1, steps=3, batch_size=2, seed=0, stop_loss=None)
    assert torch.equal(model.unused, torch.ones(2, dtype=DT))
