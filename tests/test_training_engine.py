"""Tests of the training engine: steppers, closed forms, train_runs vs train run by run.

The engine is the one loop behind train, train_batched and train_runs. Checked here:

* the three steppers give the same gradients and losses (closed form vs autograd to 1e-12);
* train_runs (closed form or vmap, any mix of learning rates, seeds, initial parameters and
  schedules) equals train (autograd, one run) run by run: same stopping step, same records,
  same final parameters to 1e-12 — including runs that stop inside a chunk (convergence of GD,
  divergence of an SGD batch) and are replayed to their stopping step;
* the index stream of draw_batches is the sampler's, and seeds are reproducible;
* the stopping rule: require_full_lr, the effective learning rate;
* monitors in train_runs; errors.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab.losses import half_mse
from dynstab.models import MLP, DiagonalLinearNet, TwoLayerReLU, UnivariateReLU
from dynstab.sampling import Sampling
from dynstab.training import (
    AutogradStepper,
    ClosedFormStepper,
    GradientNormMonitor,
    LossMonitor,
    NormMonitor,
    Run,
    StoppingRule,
    TrainResult,
    VmapStepper,
    draw_batches,
    train,
    train_runs,
    warmup,
)

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def relu_problem(
    n: int = 12, d: int = 4, m: int = 6
) -> tuple[TwoLayerReLU, torch.Tensor, torch.Tensor]:
    X = torch.randn(n, d, generator=gen(1), dtype=DT)
    teacher = TwoLayerReLU(d, 2, generator=gen(2), dtype=DT)
    with torch.no_grad():
        y = teacher(X)
    return TwoLayerReLU(d, m, generator=gen(3), dtype=DT), X, y


def params_of(model: nn.Module, scale: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = gen(seed)
    return {
        k: p.detach() + scale * torch.randn(p.shape, generator=g, dtype=p.dtype)
        for k, p in model.named_parameters()
    }


# ---------------------------------------------------------------------------------- steppers


MODELS = [
    pytest.param(lambda: DiagonalLinearNet(5, generator=gen(0), dtype=DT), 5, id="diagonal-ab"),
    pytest.param(
        lambda: DiagonalLinearNet(5, form="uv", generator=gen(0), dtype=DT), 5, id="diagonal-uv"
    ),
    pytest.param(lambda: TwoLayerReLU(5, 7, generator=gen(0), dtype=DT), 5, id="two-layer-relu"),
    pytest.param(lambda: UnivariateReLU(6, generator=gen(0), dtype=DT), 1, id="univariate-relu"),
    pytest.param(lambda: MLP([5, 8, 1], generator=gen(0), dtype=DT), 5, id="mlp-tanh"),
    pytest.param(
        lambda: MLP([5, 6, 4, 1], activation="relu", generator=gen(0), dtype=DT), 5, id="mlp-relu"
    ),
]


@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize(("make", "d"), MODELS)
def test_steppers_agree_closed_form_vs_autograd(make, d, B) -> None:
    model = make()
    R, n = 3, 9
    X = torch.randn(n, d, generator=gen(4), dtype=DT)
    y = torch.randn(n, generator=gen(5), dtype=DT)
    if d == 1:
        X = X[:, 0]
    P = {
        k: torch.stack([params_of(model, 0.3, s)[k] for s in range(R)])
        for k, _ in model.named_parameters()
    }
    idx = torch.randint(n, (R, B), generator=gen(6))
    cf, vm = ClosedFormStepper(model, X, y), VmapStepper(model, X, y, half_mse)
    for batch in ((X[idx], y[idx]), None):
        g1, l1 = cf.gradients(P, {}, batch)
        g2, l2 = vm.gradients(P, {}, batch)
        torch.testing.assert_close(l1, l2, rtol=1e-12, atol=0)
        for k in g2:
            scale = float(g2[k].abs().max())
            torch.testing.assert_close(g1[k], g2[k], rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(cf.losses(P, {}), vm.losses(P, {}), rtol=1e-12, atol=0)
    # The autograd stepper on the live module (run 0) agrees as well.
    live = make()
    live.load_state_dict({k: v[0] for k, v in P.items()})
    ag = AutogradStepper(live, X, y, half_mse)
    views = {k: p.detach()[None] for k, p in live.named_parameters()}
    g3, l3 = ag.gradients(views, {}, (X[idx[:1]], y[idx[:1]]))
    g1, l1 = cf.gradients({k: v[:1] for k, v in P.items()}, {}, (X[idx[:1]], y[idx[:1]]))
    torch.testing.assert_close(l3, l1, rtol=1e-12, atol=0)
    for k in g3:
        torch.testing.assert_close(g3[k], g1[k], rtol=1e-12, atol=1e-14)


def test_closed_form_stepper_refuses_models_it_cannot_train() -> None:
    X, y = torch.randn(4, 3, dtype=DT), torch.randn(4, dtype=DT)
    with pytest.raises(TypeError, match="no closed-form gradient"):
        ClosedFormStepper(nn.Linear(3, 1).double(), X, y)
    net = TwoLayerReLU(3, 2, generator=gen(0), dtype=DT)
    net.a.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen parameters"):
        ClosedFormStepper(net, X, y)
    with pytest.raises(ValueError, match="half_mse"):
        train(
            TwoLayerReLU(3, 2, dtype=DT),
            X,
            y,
            lr=0.1,
            steps=1,
            gradient="closed_form",
            loss_fn=lambda o, t: ((o - t) ** 2).mean(),
        )
    with pytest.raises(ValueError, match="gradient must be one of"):
        train(TwoLayerReLU(3, 2, dtype=DT), X, y, lr=0.1, steps=1, gradient="numeric")


# ------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize(
    ("B", "scheme"), [(1, "with"), (3, "with"), (2, "without"), (2, "reshuffle")]
)
def test_draw_batches_is_the_samplers_own_stream(B: int, scheme: str) -> None:
    rule = Sampling(7, B, scheme)
    s1, s2 = rule.sampler(gen(5)), rule.sampler(gen(5))
    chunk = torch.cat([draw_batches(s1, 4), draw_batches(s1, 9)])
    one_by_one = torch.stack([s2.next() for _ in range(13)])
    assert torch.equal(chunk, one_by_one)


# ------------------------------------------------------------- train_runs vs train, run by run


def compare(batched: TrainResult, single: TrainResult, model: nn.Module) -> None:
    for f in (
        "stop_reason",
        "steps_run",
        "num_clipped",
        "step_at_loss_threshold",
        "lr_at_convergence",
        "lr_at_loss_threshold",
        "full_lr_fraction",
        "seed",
    ):
        assert getattr(batched, f) == getattr(single, f), f
    assert batched.history.steps == single.history.steps
    for name in single.history.names:
        a = torch.from_numpy(batched.history.as_arrays(name)[1])
        b = torch.from_numpy(single.history.as_arrays(name)[1])
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-300, equal_nan=True)
    assert batched.params is not None
    if not single.diverged:
        for k, p in model.named_parameters():
            torch.testing.assert_close(batched.params[k], p.detach(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
@pytest.mark.parametrize(
    ("batch_size", "sampling"), [(None, "with"), (1, "with"), (3, "without"), (2, "reshuffle")]
)
def test_train_runs_equals_train_run_by_run(
    gradient: str, batch_size: int | None, sampling: str
) -> None:
    template, X, y = relu_problem()
    # Own lr, seed, start and schedule per run; two runs share a seed (and so their batches);
    # the largest lr diverges.
    runs = [
        Run(lr=0.05, seed=0, params=params_of(template, 0.2, 1), schedule=warmup(15)),
        Run(lr=0.08, seed=0, params=params_of(template, 0.2, 2)),
        Run(lr=0.1, seed=7, params=params_of(template, 0.2, 3), schedule=warmup(40, "linear")),
        Run(lr=80.0, seed=3),
    ]
    kw = {"steps": 300, "batch_size": batch_size, "sampling": sampling, "eval_every": 7}
    stop = StoppingRule(stop_loss=1e-3, require_full_lr=True, min_full_lr_fraction=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_runs(template, X, y, runs, stop=stop, gradient=gradient, **kw)
        for r, run in zip(res, runs, strict=True):
            model = TwoLayerReLU(4, 6, dtype=DT)
            model.load_state_dict(run.params if run.params is not None else params_of(template))
            single = train(
                model,
                X,
                y,
                lr=run.lr,
                seed=run.seed,
                schedule=run.schedule,
                stop_loss=1e-3,
                require_full_lr=True,
                min_full_lr_fraction=0.3,
                **kw,
            )
            compare(r, single, model)
    assert res[-1].diverged
    assert not any(r.diverged for r in res[:-1])
    assert any(r.converged for r in res)
    assert any(r.stop_reason == "max_steps" for r in res)


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_runs_on_their_own_data_equal_separate_calls(gradient: str, batch_size: int | None) -> None:
    # Runs on three data sets (two runs share one) in one call equal one call per data set.
    template, X, y = relu_problem()
    sets = []
    for seed in (11, 12):
        Xj = torch.randn(X.shape, generator=gen(seed), dtype=DT)
        sets.append((Xj, torch.tanh(Xj.sum(1))))
    runs = [
        Run(lr=0.05, seed=0, params=params_of(template, 0.2, 1)),
        Run(
            lr=0.08,
            seed=1,
            params=params_of(template, 0.2, 2),
            data=sets[0],
            monitors=[LossMonitor(*sets[1], every=10, name="other_loss")],
        ),
        Run(lr=0.1, seed=2, params=params_of(template, 0.2, 3), data=sets[1], schedule=warmup(9)),
        Run(lr=0.04, seed=3, params=params_of(template, 0.2, 4), data=sets[0]),
    ]
    kw = {"steps": 400, "batch_size": batch_size, "eval_every": 5, "gradient": gradient}
    monitors = [GradientNormMonitor(every=10)]
    stop = StoppingRule(stop_loss=3e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        together = train_runs(template, X, y, runs, stop=stop, monitors=monitors, **kw)
    assert {r.stop_reason for r in together} == {"converged", "max_steps"}
    assert "other_loss" in together[1].history.names
    assert "other_loss" not in together[0].history.names
    for run, res in zip(runs, together, strict=True):
        Xr, yr = run.data if run.data is not None else (X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            alone = train_runs(
                template, Xr, yr, [replace(run, data=None)], stop=stop, monitors=monitors, **kw
            )[0]
        assert (res.steps_run, res.stop_reason) == (alone.steps_run, alone.stop_reason)
        assert res.history.steps == alone.history.steps
        for name in alone.history.names:
            a = torch.from_numpy(res.history.as_arrays(name)[1])
            b = torch.from_numpy(alone.history.as_arrays(name)[1])
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-300)
        assert res.params is not None
        assert alone.params is not None
        for k, v in alone.params.items():
            torch.testing.assert_close(res.params[k], v, rtol=1e-11, atol=1e-13)
    with pytest.raises(ValueError, match="shaped like X"):
        train_runs(template, X, y, [Run(0.1, data=(X[:5], y[:5]))], steps=1)


def test_gd_convergence_inside_a_chunk_stops_at_the_exact_step() -> None:
    # Scalar problem f = w·x, x = 1, y = 2, w0 = 0: L_t = 2(1 − η)^{2t}; each lr converges at
    # its own step, inside the engine's chunks, and must end exactly there.
    X, y = torch.ones(3, 1, dtype=DT), 2 * torch.ones(3, dtype=DT)
    template = DiagonalLinearNet(1, dtype=DT)
    start = {"a": torch.zeros(1, dtype=DT), "b": torch.ones(1, dtype=DT)}
    lrs = [0.05, 0.13, 0.3]
    res = train_runs(template, X, y, [Run(lr=lr, params=start) for lr in lrs], steps=5000)
    for r in res:
        single = DiagonalLinearNet.from_tensors(start["a"], start["b"])
        s = train(single, X, y, lr=r.lr, steps=5000)
        assert r.converged
        assert r.steps_run == s.steps_run
        compare(r, s, single)
    assert len({r.steps_run for r in res}) == 3


def test_sgd_batch_divergence_inside_a_chunk_is_replayed_to_its_step() -> None:
    template, X, y = relu_problem()
    y = y.clone()
    y[3] = 3e5  # one outlier: its batch loss exceeds the threshold when sampled
    runs = [Run(lr=1e-3, seed=s) for s in range(3)]
    kw = {"steps": 200, "batch_size": 1, "eval_every": 50, "stop_loss": None}
    with pytest.warns(DivergenceWarning, match="runs diverged"):
        res = train_runs(
            template,
            X,
            y,
            runs,
            stop=StoppingRule(stop_loss=None, divergence_threshold=1e10),
            steps=200,
            batch_size=1,
            eval_every=50,
        )
    for r, run in zip(res, runs, strict=True):
        model = TwoLayerReLU(4, 6, dtype=DT)
        model.load_state_dict(params_of(template))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = train(model, X, y, lr=run.lr, seed=run.seed, **kw)
        assert r.diverged
        assert 0 < r.steps_run < 200
        assert r.steps_run % 50 != 0
        assert "batch_loss" in r.history.at(r.steps_run)
        compare(r, s, model)
        for k, p in model.named_parameters():  # θ at the offending step, before its update
            assert r.params is not None
            torch.testing.assert_close(r.params[k], p.detach(), rtol=1e-12, atol=1e-14)


def test_seeds_are_reproducible_and_distinct() -> None:
    template, X, y = relu_problem()
    kw = {"steps": 100, "batch_size": 1, "stop": StoppingRule(stop_loss=None)}
    a = train_runs(template, X, y, [Run(0.05, seed=1), Run(0.05, seed=2)], **kw)
    b = train_runs(template, X, y, [Run(0.05, seed=1)], **kw)
    assert a[0].params is not None
    assert b[0].params is not None
    assert a[1].params is not None
    for k in a[0].params:
        assert torch.equal(a[0].params[k], b[0].params[k])
    assert not torch.equal(a[0].params["w"], a[1].params["w"])


def test_require_full_lr_keeps_training_through_the_warm_up() -> None:
    X, y = torch.ones(3, 1, dtype=DT), 2 * torch.ones(3, dtype=DT)
    start = {"a": torch.zeros(1, dtype=DT), "b": torch.ones(1, dtype=DT)}
    T = 400  # the loss reaches 1e-10 long before the warm-up ends
    runs = [Run(lr=0.3, params=start, schedule=warmup(T, "linear"))]
    free = train_runs(DiagonalLinearNet(1, dtype=DT), X, y, runs, steps=5000)[0]
    held = train_runs(
        DiagonalLinearNet(1, dtype=DT),
        X,
        y,
        runs,
        steps=5000,
        stop=StoppingRule(require_full_lr=True, min_full_lr_fraction=0.2),
    )[0]
    assert free.converged
    assert free.steps_run < T - 1
    assert not free.converged_at_full_lr
    assert held.converged
    assert held.converged_at_full_lr
    # updates T−1 … t−1 are at the full rate: stop at the first t with (t − T + 1)/t ≥ 0.2
    assert held.steps_run == math.ceil((T - 1) / 0.8)
    assert held.lr_at_convergence == 0.3
    assert held.effective_lr < 0.3  # the loss crossed 1e-6 during the warm-up


def test_monitors_in_train_runs_equal_those_of_train() -> None:
    template, X, y = relu_problem()
    mon = NormMonitor("norm", every=5)
    res = train_runs(
        template,
        X,
        y,
        [Run(0.05, seed=0), Run(0.1, seed=1)],
        steps=23,
        batch_size=2,
        monitors=[mon],
        stop=StoppingRule(stop_loss=None),
    )
    for r in res:
        model = TwoLayerReLU(4, 6, dtype=DT)
        model.load_state_dict(params_of(template))
        s = train(
            model,
            X,
            y,
            lr=r.lr,
            seed=r.seed,
            steps=23,
            batch_size=2,
            monitors=[NormMonitor("norm", every=5)],
            stop_loss=None,
        )
        assert r.history.as_arrays("norm")[0].tolist() == [0, 5, 10, 15, 20, 23]
        torch.testing.assert_close(
            torch.from_numpy(r.history.as_arrays("norm")[1]),
            torch.from_numpy(s.history.as_arrays("norm")[1]),
            rtol=1e-12,
            atol=0,
        )
    assert mon.every == 5  # the caller's monitor is copied per run, not used


def test_train_runs_leaves_the_template_alone_and_warns() -> None:
    template, X, y = relu_problem()
    before = params_of(template)
    with pytest.warns(ConvergenceWarning, match="did not reach stop_loss"):
        train_runs(template, X, y, [Run(0.01, seed=0)], steps=3, batch_size=1, dtype=torch.float32)
    for k, p in template.named_parameters():
        assert p.dtype == DT
        assert torch.equal(p.detach(), before[k])


def test_train_runs_bad_arguments_raise() -> None:
    template, X, y = relu_problem()
    with pytest.raises(ValueError, match="at least one Run"):
        train_runs(template, X, y, [], steps=1)
    with pytest.raises(ValueError, match="unknown"):
        train_runs(
            template, X, y, [Run(0.1, params={"w": template.w, "a": template.a, "z": X})], steps=1
        )
    with pytest.raises(ValueError, match="missing"):
        train_runs(template, X, y, [Run(0.1, params={"w": template.w})], steps=1)
    with pytest.raises(ValueError, match="must have shape"):
        train_runs(template, X, y, [Run(0.1, params={"w": template.w.T, "a": template.a})], steps=1)
    with pytest.raises(ValueError, match="lrs entry must be finite and > 0"):
        train_runs(template, X, y, [Run(-0.1)], steps=1)
    with pytest.raises(ValueError, match=r"min_full_lr_fraction must be in \[0, 1\]"):
        StoppingRule(min_full_lr_fraction=2.0)
