"""The shared GD → SGD escape of the WWS22 companions: the log-rate fit and the protocol."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dynstab.criteria import lyapunov_exponent, second_moment_growth
from dynstab_repro.companions.escape import FitWindow, GDToSGD, Phase, fit_log_rate
from dynstab_repro.companions.minima import gram_float64, gram_summary
from dynstab_repro.companions.scalar_nets import digits_task, shallow_mlp, train_scalar


def test_fit_window_by_loss_level():
    """wws22/alignment's rule: from the first loss ≥ 10·L(θ*) to before the first above 1e-3."""
    t = list(range(0, 2000, 5))
    loss0 = 1e-10
    # quadratic onset, exponential growth at 0.02/step, saturation above 1e-3
    losses = [min(loss0 * (1 + 1e-4 * s**2) * math.exp(0.02 * s), 0.5) for s in t]
    fit = fit_log_rate(t, losses, FitWindow(cap=1e-3, floor=10 * loss0))
    assert fit.rate == pytest.approx(0.02 + 2e-4 * 30, abs=0.01)  # log-derivative in the window
    assert fit.start is not None
    assert fit.stop is not None
    assert losses[t.index(fit.start)] >= 10 * loss0 > losses[t.index(fit.start) - 1]
    assert losses[t.index(fit.stop)] <= 1e-3 < losses[t.index(fit.stop) + 1]
    assert fit.points == t.index(fit.stop) - t.index(fit.start) + 1
    pure = [loss0 * math.exp(0.03 * s) for s in t]
    assert fit_log_rate(t, pure, FitWindow(1e-3, floor=10 * loss0)).rate == pytest.approx(
        0.03, rel=1e-9
    )
    never = fit_log_rate(t, [loss0] * len(t), FitWindow(1e-3, floor=10 * loss0))
    assert never.rate is None
    assert never.points == 0


def test_fit_window_by_step():
    """wws22/scaling's rule: from step ≥ burn-in to before the first value above the cap."""
    steps = list(range(20))
    vals: list[float | None] = [1e-8 * math.exp(0.3 * t) for t in steps]
    fit = fit_log_rate(steps, vals, FitWindow(cap=1e-6, first_step=2))
    # window: t ≥ 2 and before the first value above 1e-6 (e^{0.3 t} > 100 ⇔ t ≥ 16)
    assert (fit.points, fit.start, fit.stop) == (14, 2, 15)
    assert fit.rate == pytest.approx(0.3, abs=1e-12)
    assert fit.stderr == pytest.approx(0, abs=1e-9)
    # None (non-finite) and non-positive records are skipped, not fitted
    vals[5], vals[6] = None, 0.0
    assert fit_log_rate(steps, vals, FitWindow(1e-6, first_step=2)).points == 12
    short = fit_log_rate([0, 1], [1.0, 2.0], FitWindow(cap=10.0))
    assert (short.rate, short.stderr, short.points) == (None, None, 2)


def test_fit_slope_and_standard_error_by_hand():
    """Noisy line: slope Sxy/Sxx and SE √(RSS/(k − 2)/Sxx) by the closed form."""
    rng = np.random.default_rng(0)
    t = np.arange(10, 110, 2, dtype=float)
    logs = -20.0 + 0.1 * t + rng.normal(0.0, 0.3, t.size)
    fit = fit_log_rate([int(s) for s in t], list(np.exp(logs)), FitWindow(cap=1.0))
    xc = t - t.mean()
    slope = float(xc @ (logs - logs.mean()) / (xc @ xc))
    icpt = float(logs.mean() - slope * t.mean())
    resid = logs - (icpt + slope * t)
    se = math.sqrt(float(resid @ resid) / (t.size - 2) / float(xc @ xc))
    assert fit.points == t.size
    assert (fit.start, fit.stop) == (10, 108)
    assert fit.rate == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(icpt, rel=1e-10)
    assert fit.stderr == pytest.approx(se, rel=1e-8)
    assert set(fit.to_dict()) == {"rate", "intercept", "stderr", "start", "stop", "points"}


def test_fit_window_rejects_a_non_positive_cap():
    with pytest.raises(ValueError, match="cap must be > 0"):
        FitWindow(cap=0.0)


def test_gd_to_sgd_is_gd_then_the_criteria_then_sgd():
    """The protocol equals its steps run one by one: GD, K and the criteria at θ*, SGD from θ*."""
    X, y = digits_task(8, classes=(3, 8))
    proto = GDToSGD(
        lr=0.15,
        batch_size=1,
        gd=Phase(3000, 1e-8, warmup_steps=200),
        sgd=Phase(40, None, record_every=1),
        lyapunov_steps=200,
        lyapunov_runs=4,
    )
    net = shallow_mlp(X.shape[1], 16, init_scale=1.0, activation="tanh", seed=0)
    ref = copy.deepcopy(net)
    esc = proto.run(net, X, y, sgd_seed=3, lyapunov_seed=7)

    gd = train_scalar(
        ref, X, y, lr=0.15, steps=3000, batch_size=0, warmup_steps=200, stop_loss=1e-8
    )
    assert esc.gd.converged
    assert gd.converged
    assert esc.gd.steps_run == gd.steps_run
    K = gram_float64(ref, X)
    assert torch.equal(esc.gram, K)
    with torch.no_grad():
        r0 = (ref(X).reshape(-1) - y.reshape(-1)).to(torch.float64)
    assert torch.equal(esc.residual, r0)
    assert esc.at_gd == gram_summary(K, lr=0.15, batch_size=1, sampling="without")
    assert esc.growth == second_moment_growth(K, 0.15, 1, "without")
    lyap = lyapunov_exponent(
        K, 0.15, 1, "without", num_steps=200, num_runs=4, generator=torch.Generator().manual_seed(7)
    )
    assert esc.lyapunov.exponent == lyap.exponent
    sgd = train_scalar(
        ref, X, y, lr=0.15, steps=40, batch_size=1, seed=3, stop_loss=None, check_every=1
    )
    assert esc.sgd.steps_run == sgd.steps_run == 40
    assert (
        esc.sgd.history.as_arrays("loss")[1].tolist() == sgd.history.as_arrays("loss")[1].tolist()
    )
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):  # model left after SGD
        assert torch.equal(p, q)
