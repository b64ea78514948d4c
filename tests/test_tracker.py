"""StabilityTracker: curvature vs thresholds in a plain loop, in train(), and its outputs.

References used here:

* λ_max, Tr H, ‖H‖_F and λ_max(P⁻¹H) against dense float64 matrices (``dense_hessian``) at the
  measured parameters (λ within the certified bound; stochastic traces within 5 standard errors);
* thresholds by hand: 2(1 + β)/η from the optimizer's momentum, the learning rate read after a
  schedule changed it, 38/η for Adam with β₁ = 0.9, 2C/(qη) with q = (n + B − 1)/(nB) (with
  replacement) and the coupled weight decay of SGD subtracted;
* the model's parameters, per-module modes, BatchNorm buffers, ``.grad`` and the global RNG state
  are unchanged by a measurement;
* the tracker as a monitor of ``train`` reads η and β from the trainer and gives the same
  numbers as ``SharpnessMonitor`` (one implementation);
* CSV output (atomic, reloadable), TensorBoard and Lightning (skipped when not installed),
  budgets and bad input.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from dynstab import StabilityTracker
from dynstab.curvature import dense_hessian
from dynstab.errors import ConvergenceWarning
from dynstab.linalg import LanczosConfig, TraceConfig
from dynstab.losses import half_mse
from dynstab.training import SharpnessMonitor, lightning_callback, train

DT = torch.float64
TIGHT = LanczosConfig(tol=1e-10, max_iters=200)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def problem(n: int = 24, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)  # test-side initialisation only
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(DT)
    X = torch.randn(n, 3, generator=gen(seed + 1), dtype=DT)
    y = torch.randn(n, 2, generator=gen(seed + 2), dtype=DT)
    return model, (X, y)


def sgd_loop(model, data, opt, tracker, steps: int, batch: int = 8, seed: int = 0) -> None:
    X, y = data
    g = gen(seed)
    for _ in range(steps):
        idx = torch.randint(X.shape[0], (batch,), generator=g)
        opt.zero_grad()
        half_mse(model(X[idx]), y[idx]).backward()
        opt.step()
        tracker.step()


def test_plain_loop_sgd_momentum_against_dense() -> None:
    model, data = problem()
    n, B, eta, beta = 24, 8, 0.05, 0.9
    opt = torch.optim.SGD(model.parameters(), lr=eta, momentum=beta)
    tracker = StabilityTracker(
        model, half_mse, data, every=4, optimizer=opt, batch_size=B, lanczos=TIGHT,
        measures=("lambda_max", "trace", "frobenius"), trace=TraceConfig(num_matvecs=400),
    )  # fmt: skip
    sgd_loop(model, data, opt, tracker, steps=11)
    assert tracker.history.steps == [4, 8]
    row = tracker.measure()  # now, at t = 11, compared with the dense Hessian at θ_11
    assert tracker.history.steps == [4, 8, 11]
    H = dense_hessian(model, half_mse, data).to(DT)
    lam = float(torch.linalg.eigvalsh(H)[-1])
    assert row["lambda_max_converged"] == 1.0
    assert abs(row["lambda_max"] - lam) <= row["lambda_max_error_bound"] + 1e-12 * lam
    tr, fro = float(torch.trace(H)), float(torch.linalg.matrix_norm(H))
    assert abs(row["trace"] - tr) <= 5 * row["trace_stderr"]
    assert abs(row["frobenius"] - fro) <= 5 * row["frobenius_stderr"]
    assert row["lambda_max_threshold"] == pytest.approx(2 * (1 + beta) / eta, rel=1e-14)
    assert row["lambda_max_margin"] == pytest.approx(row["lambda_max"] * eta / (2 * (1 + beta)))
    q = (n + B - 1) / (n * B)  # with replacement; C = 2 outputs per sample
    assert row["trace_threshold"] == pytest.approx(2 * 2 / (q * eta), rel=1e-12)
    assert row["frobenius_threshold"] == pytest.approx(2 * math.sqrt(2) / (eta * math.sqrt(q)))
    assert row["trace_threshold_momentum_free"] == 1.0
    assert row["lr"] == eta
    assert row["momentum"] == beta
    with torch.no_grad():
        assert row["probe_loss"] == pytest.approx(float(half_mse(model(data[0]), data[1])))


def test_thresholds_follow_the_optimizer() -> None:
    """A schedule changes lr; Nesterov and coupled weight decay change the threshold."""
    model, data = problem(seed=1)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.01
    )
    tracker = StabilityTracker(model, half_mse, data, every=1, optimizer=opt)
    tracker.step()
    first = tracker.history.last("lambda_max_threshold")
    assert first == pytest.approx(2 * 1.5 / (2.0 * 0.1) - 0.01, rel=1e-13)
    for group in opt.param_groups:
        group["lr"] = 0.05
    tracker.step()
    assert tracker.history.last("lambda_max_threshold") == pytest.approx(
        2 * 1.5 / (2.0 * 0.05) - 0.01, rel=1e-13
    )
    assert tracker.history.last("lr") == 0.05
    # without an optimizer: lr and momentum as given
    t2 = StabilityTracker(model, half_mse, data, every=1, lr=0.2, momentum=0.8)
    assert t2.measure()["lambda_max_threshold"] == pytest.approx(2 * 1.8 / 0.2, rel=1e-14)
    t3 = StabilityTracker(model, half_mse, data, every=1)  # nothing known: NaN threshold
    assert math.isnan(t3.measure()["lambda_max_threshold"])


def test_adam_preconditioned_against_dense() -> None:
    model, data = problem(seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    early = StabilityTracker(model, half_mse, data, every=1, optimizer=opt)
    row = early.measure()  # before the first step: no preconditioner yet, no threshold for H
    assert math.isnan(row["lambda_max_threshold"])
    tracker = StabilityTracker(
        model, half_mse, data, every=3, optimizer=opt, measures=("lambda_max", "preconditioned"),
        lanczos=TIGHT,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"optimizer.step\(\)"):
        tracker.measure()
    sgd_loop(model, data, opt, tracker, steps=3)
    row = tracker.history.at(3)
    state = [opt.state[p] for p in model.parameters()]
    t = int(state[0]["step"])
    P = torch.cat(
        [((s["exp_avg_sq"] / (1 - 0.999**t)).sqrt() + 1e-8).reshape(-1) for s in state]
    ).to(DT)
    H = dense_hessian(model, half_mse, data).to(DT)
    S = H / P.sqrt()[:, None] / P.sqrt()[None, :]
    lam = float(torch.linalg.eigvalsh((S + S.T) / 2)[-1])
    assert row["preconditioned_converged"] == 1.0
    assert abs(row["preconditioned_lambda_max"] - lam) <= (
        row["preconditioned_error_bound"] + 1e-10 * lam
    )
    assert row["preconditioned_threshold"] == pytest.approx(38 / 1e-2, rel=1e-13)
    assert math.isnan(row["lambda_max_threshold"])  # raw H has no threshold under Adam


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4).to(DT)
        self.bn = nn.BatchNorm1d(4).to(DT)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 1).to(DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.bn(self.lin(x)))))


def test_leaves_model_rng_and_grads_as_found() -> None:
    torch.manual_seed(0)
    model = _Mixed()
    X = torch.randn(16, 3, generator=gen(0), dtype=DT)
    y = torch.randn(16, 1, generator=gen(1), dtype=DT)
    model.train()
    model.out.eval()  # mixed modes must be restored module by module
    half_mse(model(X), y).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    modes = {k: m.training for k, m in model.named_modules()}
    rng = torch.get_rng_state()
    tracker = StabilityTracker(
        model, half_mse, (X, y), every=1, measures=("lambda_max", "trace"), lr=0.1
    )
    row = tracker.measure()
    assert math.isfinite(row["lambda_max"])
    assert torch.equal(torch.get_rng_state(), rng)
    assert {k: m.training for k, m in model.named_modules()} == modes
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, grads[k])
        assert torch.equal(p.detach(), params[k])
    for k, b in model.named_buffers():
        assert torch.equal(b, buffers[k])
    # in train mode with Dropout the curvature is random: refused unless asked for
    with pytest.raises(ValueError, match=r"(?i)dropout|stochastic"):
        StabilityTracker(model, half_mse, (X, y), eval_mode=False).measure()


def test_in_train_reads_lr_and_momentum_and_matches_sharpness_monitor() -> None:
    model, data = problem(seed=3)
    X, y = data
    twin = problem(seed=3)[0]
    tracker = StabilityTracker(model, half_mse, data, every=5, measures=("lambda_max", "trace"))
    mon = SharpnessMonitor(every=5, measures=("lambda_max", "trace"), lanczos=tracker.meter.lanczos)
    kw = {"lr": 0.05, "steps": 12, "momentum": 0.7, "stop_loss": None, "batch_size": 6, "seed": 4}
    res = train(model, X, y, monitors=[tracker], **kw)
    res2 = train(twin, X, y, monitors=[mon], **kw)
    steps, lam = res.history.as_arrays("lambda_max")
    assert list(steps) == [0, 5, 10, 12]
    assert list(lam) == list(res2.history.as_arrays("lambda_max")[1])  # one implementation
    assert list(res.history.as_arrays("trace")[1]) == list(res2.history.as_arrays("trace")[1])
    thr = res.history.as_arrays("lambda_max_threshold")[1]
    assert all(v == pytest.approx(2 * 1.7 / 0.05) for v in thr)
    q = (24 + 6 - 1) / (24 * 6)
    assert res.history.last("trace_threshold") == pytest.approx(2 * 2 / (q * 0.05))
    assert tracker.history.steps == [0, 5, 10, 12]


def test_warm_start_and_budget() -> None:
    model, data = problem(seed=4)
    tracker = StabilityTracker(model, half_mse, data, every=1, lr=0.1)
    first = tracker.step()
    assert tracker.measure() == first  # already measured at this step
    second = tracker.step()  # same parameters: the warm start is the eigenvector
    assert first is not None
    assert second is not None
    assert first["lambda_max_converged"] == 1.0
    assert second["lambda_max_hvps"] < first["lambda_max_hvps"]
    assert second["lambda_max"] == pytest.approx(first["lambda_max"], rel=1e-3)
    tiny = StabilityTracker(
        model, half_mse, data, every=1, lr=0.1, lanczos=LanczosConfig(tol=1e-12, max_iters=3)
    )
    with pytest.warns(ConvergenceWarning):
        row = tiny.measure()
    assert row["lambda_max_hvps"] <= 3
    assert row["lambda_max_converged"] == 0.0


def test_csv_output(tmp_path: Path) -> None:
    model, data = problem(seed=5)
    path = tmp_path / "sub" / "stability.csv"
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = StabilityTracker(model, half_mse, data, every=2, optimizer=opt, csv=path)
    sgd_loop(model, data, opt, tracker, steps=4)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert float(rows[-1]["lambda_max"]) == tracker.history.last("lambda_max")
    assert float(rows[-1]["lambda_max_threshold"]) == pytest.approx(2 / 0.05)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stability.csv"]  # no temp files


def test_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    model, data = problem()
    tracker = StabilityTracker(model, half_mse, data, lr=0.1, tensorboard=tmp_path / "tb")
    tracker.measure()
    tracker.close()
    assert any((tmp_path / "tb").iterdir())


def test_lightning_callback(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    net, (X, y) = problem()
    net, X, y = net.float(), X.float(), y.float()

    class Module(lightning.pytorch.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            return half_mse(self(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    module = Module()
    tracker = StabilityTracker(module, half_mse, (X, y), every=2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=8)
    trainer = lightning.pytorch.Trainer(
        max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
        callbacks=[lightning_callback(tracker)],
    )  # fmt: skip
    trainer.fit(module, loader)
    assert tracker.history.steps == [2, 4]
    assert tracker.history.last("lambda_max_threshold") == pytest.approx(2 * 1.9 / 0.05)


def test_lightning_missing_or_bad_tracker() -> None:
    with pytest.raises(TypeError, match="StabilityTracker"):
        lightning_callback(object())  # type: ignore[arg-type]
    try:
        import lightning  # noqa: F401
    except ImportError:
        model, data = problem()
        with pytest.raises(ImportError, match="pip install lightning"):
            lightning_callback(StabilityTracker(model, half_mse, data))


def test_bad_input() -> None:
    model, data = problem()
    with pytest.raises(ValueError, match="measure"):
        StabilityTracker(model, half_mse, data, measures=("sharpness",))
    with pytest.raises(ValueError, match="needs optimizer"):
        StabilityTracker(model, half_mse, data, measures=("preconditioned",))
    with pytest.raises(ValueError, match="every"):
        StabilityTracker(model, half_mse, data, every=0)
    with pytest.raises(ValueError, match="lr"):
        StabilityTracker(model, half_mse, data, lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        StabilityTracker(model, half_mse, data, momentum=1.5)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        StabilityTracker(model, half_mse, data, optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        StabilityTracker("net", half_mse, data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="LanczosConfig"):
        StabilityTracker(model, half_mse, data, lanczos={"tol": 1e-3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="xtrace"):
        StabilityTracker(
            model, half_mse, data, measures=("frobenius",),
            trace=TraceConfig(estimator="xtrace", num_matvecs=10),
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StabilityTracker(model, half_mse, data, lr=0.1).measure()  # default budget certifies


def test_plot_stability() -> None:
    from dynstab.plotting import plot_stability  # matplotlib: the plotting layer only

    model, data = problem(seed=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = StabilityTracker(
        model, half_mse, data, every=2, optimizer=opt, measures=("lambda_max", "trace"),
        batch_size=8,
    )  # fmt: skip
    sgd_loop(model, data, opt, tracker, steps=6)
    ax = plot_stability(tracker.history)
    value, threshold = ax.get_lines()
    assert list(value.get_xdata()) == [2.0, 4.0, 6.0]
    assert list(value.get_ydata()) == list(tracker.history.as_arrays("lambda_max")[1])
    assert all(v == pytest.approx(2 * 1.9 / 0.05) for v in threshold.get_ydata())
    ax2 = plot_stability(tracker.history, measure="trace", logy=True)
    assert ax2.get_yscale() == "log"
    with pytest.raises(ValueError, match="measure must be one of"):
        plot_stability(tracker.history, measure="spectral_gap")
    with pytest.raises(ValueError, match="no column"):
        plot_stability(tracker.history, measure="frobenius")
