"""TrainSettings (one settings object for every trainer) and per-run monitors of train_runs.

References used here:

* a run trained with ``settings=TrainSettings(...)`` equals the run trained with the same
  keywords, to the bit, for ``train``, ``train_batched`` and ``train_runs`` (one code path);
* keywords override the object's fields (including the stopping rule's, by name);
* bad input: unknown option, no ``steps``, ``stop`` with stopping keywords, out-of-range values;
* ``train_runs`` with monitors that cannot be copied per run (a StabilityTracker writing a CSV
  file; a monitor holding a lock) fails with an error that names the factory; with a factory
  ``monitors=lambda i: [...]`` every run gets its own tracker, its own CSV file, and the numbers
  of the same tracker used in ``train`` run by run.
"""

from __future__ import annotations

import csv
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dynstab import StabilityTracker
from dynstab.errors import ConvergenceWarning
from dynstab.losses import half_mse
from dynstab.training import (
    Monitor,
    NormMonitor,
    Run,
    StoppingRule,
    TrainSettings,
    train,
    train_batched,
    train_runs,
    warmup,
)

DT = torch.float64


def make_net(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DT))
    return net


def data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.randn(n, 3, generator=torch.Generator().manual_seed(100), dtype=DT)
    return X, torch.sin(X.sum(1, keepdim=True))


def same_result(a: Any, b: Any) -> None:
    assert (a.steps_run, a.stop_reason, a.final_loss) == (b.steps_run, b.stop_reason, b.final_loss)
    assert a.history.steps == b.history.steps
    for name in a.history.names:
        assert list(a.history.as_arrays(name)[1]) == list(b.history.as_arrays(name)[1])


KW: dict[str, Any] = {
    "steps": 40,
    "batch_size": 4,
    "schedule": warmup(5),
    "clip": 3.0,
    "momentum": 0.5,
    "stop_loss": 1e-3,
    "require_full_lr": True,
}


def test_settings_object_equals_keywords_in_every_trainer() -> None:
    X, y = data()
    s = TrainSettings(
        steps=40,
        batch_size=4,
        schedule=warmup(5),
        clip=3.0,
        momentum=0.5,
        stop=StoppingRule(stop_loss=1e-3, require_full_lr=True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        same_result(
            train(make_net(0), X, y, lr=0.2, seed=1, settings=s),
            train(make_net(0), X, y, lr=0.2, seed=1, **KW),
        )
        grid_s = train_batched(make_net, X, y, lrs=[0.1, 0.3], seeds=[0, 1], settings=s)
        grid_k = train_batched(make_net, X, y, lrs=[0.1, 0.3], seeds=[0, 1], **KW)
        runs = [Run(lr=0.2, seed=2), Run(lr=0.1, seed=3, schedule=warmup(2))]
        many_s = train_runs(make_net(0), X, y, runs, settings=s)
        many_k = train_runs(make_net(0), X, y, runs, **KW)
    for a, b in zip(grid_s + many_s, grid_k + many_k, strict=True):
        same_result(a, b)
    # the settings' schedule is that of the runs without their own
    assert many_s[0].history.as_arrays("lr")[1][0] == pytest.approx(0.2 * warmup(5)(0))
    assert many_s[1].history.as_arrays("lr")[1][0] == pytest.approx(0.1 * warmup(2)(0))
    assert warmup(5)(0) != warmup(2)(0)


def test_keywords_override_the_settings() -> None:
    s = TrainSettings(steps=10, batch_size=4, momentum=0.9)
    t = s.with_options(batch_size=None, stop_loss=None, loss_threshold=1e-3)
    assert (t.steps, t.batch_size, t.momentum) == (10, None, 0.9)
    assert t.stop == StoppingRule(stop_loss=None, loss_threshold=1e-3)
    assert s.batch_size == 4  # frozen: s is unchanged
    assert s.stop == StoppingRule()
    X, y = data()
    res = train(make_net(0), X, y, lr=0.1, settings=s, steps=3, momentum=0.0, stop_loss=None)
    assert res.steps_run == 3
    assert "momentum" not in res.history.metadata  # plain SGD: β = 0 overrode 0.9


def test_bad_settings() -> None:
    X, y = data()
    with pytest.raises(TypeError, match=r"unexpected keyword.*'stepz'.*fields of TrainSettings"):
        train(make_net(0), X, y, lr=0.1, stepz=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"needs steps="):
        train(make_net(0), X, y, lr=0.1)
    with pytest.raises(TypeError, match="settings must be a TrainSettings"):
        train(make_net(0), X, y, lr=0.1, settings={"steps": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        TrainSettings(steps=-1)
    with pytest.raises(ValueError, match="sampling"):
        TrainSettings(steps=1, sampling="sometimes")
    with pytest.raises(ValueError, match="gradient must be one of"):
        TrainSettings(steps=1, gradient="numeric")
    with pytest.raises(ValueError, match="closed_form"):
        TrainSettings(steps=1, gradient="closed_form", loss_fn=lambda a, b: (a - b).abs().mean())
    with pytest.raises(ValueError, match="floating dtype"):
        TrainSettings(steps=1, dtype=torch.int64)
    with pytest.raises(ValueError, match="stop_loss"):
        TrainSettings(steps=1).with_options(stop_loss=-1.0)
    with pytest.raises(ValueError, match=r"batch_size.*<= 12|batch_size"):
        train(make_net(0), X, y, lr=0.1, steps=1, batch_size=13, sampling="without")
    with pytest.raises(ValueError, match="not both"):
        train_runs(make_net(0), X, y, [Run(0.1)], steps=1, stop=StoppingRule(), stop_loss=1e-3)


class LockedMonitor(Monitor):
    """A monitor that cannot be deep-copied (it holds a lock, as a log writer does)."""

    def __init__(self) -> None:
        super().__init__("locked")
        self.lock = threading.Lock()

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        return {"locked": float(step)}


def test_train_runs_refuses_monitors_it_cannot_copy(tmp_path: Path) -> None:
    X, y = data()
    net = make_net(0)
    tracker = StabilityTracker(net, half_mse, (X, y), every=5, csv=tmp_path / "t.csv")
    assert not tracker.copyable
    assert StabilityTracker(net, half_mse, (X, y)).copyable
    runs = [Run(0.1, seed=0), Run(0.2, seed=1)]
    with pytest.raises(TypeError, match=r"cannot be copied.*monitors=lambda i"):
        train_runs(net, X, y, runs, steps=5, monitors=[tracker])
    with pytest.raises(TypeError, match=r"runs\[0\]\.monitors.*cannot be copied"):
        train_runs(net, X, y, [Run(0.1, monitors=[tracker])], steps=5)
    with pytest.raises(TypeError, match=r"could not be deep-copied.*monitors=lambda i"):
        train_runs(net, X, y, runs, steps=5, monitors=[LockedMonitor()])
    shared = NormMonitor("norm")
    with pytest.raises(ValueError, match="already given to run 0"):
        train_runs(net, X, y, runs, steps=5, monitors=lambda i: [shared])
    with pytest.raises(TypeError, match="must return Monitor objects"):
        train_runs(net, X, y, runs, steps=5, monitors=lambda i: ["norm"])  # type: ignore[list-item]


def test_train_runs_with_a_monitor_factory_equals_train_run_by_run(tmp_path: Path) -> None:
    X, y = data()
    kw: dict[str, Any] = {"steps": 12, "batch_size": 4, "stop_loss": None, "momentum": 0.3}
    runs = [Run(0.1, seed=0), Run(0.25, seed=1)]
    made: list[StabilityTracker] = []

    def factory(i: int) -> list[Monitor]:
        t = StabilityTracker(
            make_net(0), half_mse, (X, y), every=5, csv=tmp_path / f"run{i}.csv", seed=7
        )
        made.append(t)
        return [t, LockedMonitor()]  # built per run: never copied

    together = train_runs(make_net(0), X, y, runs, monitors=factory, **kw)
    assert len(made) == 2
    for i, (run, res) in enumerate(zip(runs, together, strict=True)):
        alone_tracker = StabilityTracker(
            make_net(0), half_mse, (X, y), every=5, csv=tmp_path / f"alone{i}.csv", seed=7
        )
        alone = train(make_net(0), X, y, lr=run.lr, seed=run.seed, monitors=[alone_tracker], **kw)
        assert res.history.as_arrays("lambda_max")[0].tolist() == [0, 5, 10, 12]
        torch.testing.assert_close(
            torch.from_numpy(res.history.as_arrays("lambda_max")[1]),
            torch.from_numpy(alone.history.as_arrays("lambda_max")[1]),
            rtol=1e-9,
            atol=0,
        )
        assert res.history.as_arrays("locked")[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                                11, 12]  # fmt: skip
        # the run's own tracker recorded its own run in its own file
        assert made[i].history.steps == [0, 5, 10, 12]
        with open(tmp_path / f"run{i}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["step"]) for r in rows] == [0, 5, 10, 12]
        assert float(rows[0]["lambda_max_threshold"]) == pytest.approx(2 * 1.3 / run.lr)
