"""The GD → SGD escape of Wu, Wang & Su (NeurIPS 2022), shared by the two WWS22 companions.

WWS22: at a minimum that SGD cannot hold (mean-square unstable, η·λ_max(C†D)/2 > 1) SGD
leaves exponentially fast. ``wws22/alignment`` and ``wws22/scaling`` test this the same way:

* :class:`GDToSGD` trains GD to a minimum, measures it (float64 Gram matrix K, its
  :func:`~.minima.gram_summary`, the residual, the mean-square growth factor ρ(Q) of
  :func:`dynstab.criteria.second_moment_growth` and the top Lyapunov exponent λ₁ of
  :func:`dynstab.criteria.lyapunov_exponent`) and restarts SGD(η, B) there (training by
  :func:`~.scalar_nets.train_scalar`, i.e. :func:`dynstab.training.train`);
* :func:`fit_log_rate` fits the escape rate: the least-squares slope of ln L(θ_t) against the
  step t over a :class:`FitWindow` of the recorded loss curve (the linear regime, before the
  loss saturates), with its standard error.

The two companions differ only in their settings (widths, budgets, seeds) and in where their
fit window starts (a loss level or a step), which are the parameters here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dynstab.criteria import LyapunovResult, lyapunov_exponent, second_moment_growth
from dynstab.training import TrainResult
from dynstab_repro.companions.minima import MinimumSummary, gram_float64, gram_summary
from dynstab_repro.companions.results import Record
from dynstab_repro.companions.scalar_nets import CHECK_EVERY, train_scalar

__all__ = ["EscapeFit", "EscapeRun", "FitWindow", "GDToSGD", "Phase", "fit_log_rate"]


@dataclasses.dataclass(frozen=True)
class FitWindow:
    """Where a loss curve is fitted: its linear regime.

    The window opens at the first record with step ≥ ``first_step`` and loss ≥ ``floor``, and
    closes before the first later record with loss > ``cap`` (the nonlinear saturation).
    ``wws22/alignment`` opens it at a loss level (10·L(θ*)), ``wws22/scaling`` at a step (its
    burn-in).

    Attributes:
        cap: The window ends before the first loss above ``cap`` (> 0).
        first_step: First step that may open the window (default 0: any recorded step).
        floor: Smallest loss that may open the window (default 0: any loss).
    """

    cap: float
    first_step: int = 0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not self.cap > 0:
            raise ValueError(
                f"FitWindow.cap must be > 0 (a loss level); got {self.cap!r}. Pass the loss "
                "above which the curve leaves the linear regime."
            )


@dataclasses.dataclass(frozen=True)
class EscapeFit:
    """Least-squares fit ln L(θ_t) ≈ intercept + rate·t over a :class:`FitWindow`.

    Attributes:
        rate: Fitted growth rate of ln L per step (None when < 3 points lie in the window).
        intercept: Fitted intercept (None likewise).
        stderr: Standard error of ``rate`` from the fit's residuals, √(s²/Σ(t − t̄)²) with
            s² = RSS/(k − 2) (None likewise).
        start: First step of the window (None likewise).
        stop: Last step of the window (None likewise).
        points: Number of points in the window.
    """

    rate: float | None
    intercept: float | None
    stderr: float | None
    start: int | None
    stop: int | None
    points: int

    def to_dict(self) -> Record:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def fit_log_rate(
    steps: Sequence[int], losses: Sequence[float | None], window: FitWindow
) -> EscapeFit:
    """Exponential growth rate of a loss curve: the slope of ln L against the step.

    Records with loss None are skipped; the points of ``window`` with a positive loss are
    fitted by :func:`numpy.polyfit` (degree 1).

    Args:
        steps: Step numbers, increasing, shape ``(k,)``.
        losses: Losses at those steps (None: not finite), shape ``(k,)``.
        window: Where the curve is fitted.

    Returns:
        :class:`EscapeFit` (no rate when fewer than 3 points lie in the window).

    Example:
        >>> t = list(range(0, 200, 10))
        >>> fit = fit_log_rate(t, [1e-10 * math.exp(0.05 * s) for s in t], FitWindow(1e-3, 0, 1e-9))
        >>> round(fit.rate, 6), fit.start, fit.points
        (0.05, 50, 15)
    """
    pts = [(int(s), float(v)) for s, v in zip(steps, losses, strict=True) if v is not None]
    first = next(
        (i for i, (s, v) in enumerate(pts) if s >= window.first_step and v >= window.floor), None
    )
    if first is None:
        return EscapeFit(None, None, None, None, None, 0)
    last = next((i for i in range(first, len(pts)) if pts[i][1] > window.cap), len(pts))
    win = [(s, v) for s, v in pts[first:last] if v > 0]
    if len(win) < 3:
        return EscapeFit(None, None, None, None, None, len(win))
    t = np.array([s for s, _ in win], dtype=float)
    logs = np.log([v for _, v in win])
    slope, icpt = np.polyfit(t, logs, 1)
    resid = logs - (slope * t + icpt)
    s2 = float(resid @ resid) / (len(win) - 2)
    se = math.sqrt(s2 / float(((t - t.mean()) ** 2).sum()))
    return EscapeFit(float(slope), float(icpt), se, int(t[0]), int(t[-1]), len(win))


@dataclasses.dataclass(frozen=True)
class EscapeRun:
    """What :meth:`GDToSGD.run` measured (the model is left at the end of the SGD phase).

    Attributes:
        gd: The GD run to the minimum θ*.
        gram: Float64 Gram matrix K = JJᵀ/n at θ*, shape ``(n, n)`` (CPU).
        at_gd: :func:`~.minima.gram_summary` of K at (η, B), sampling without replacement.
        residual: f(x_i) − y_i at θ*, float64, shape ``(n,)`` (CPU).
        growth: ρ(Q), the per-step growth factor of E‖δ_t‖² of linearized SGD at θ*.
        lyapunov: Top Lyapunov exponent λ₁ of log‖δ_t‖ of linearized SGD at θ* (typical run).
        sgd: The SGD run restarted at θ*.
    """

    gd: TrainResult
    gram: Tensor
    at_gd: MinimumSummary
    residual: Tensor
    growth: float
    lyapunov: LyapunovResult
    sgd: TrainResult


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase of :class:`GDToSGD` (the per-phase settings of ``train_scalar``).

    Attributes:
        steps: Step budget.
        stop_loss: The phase stops at this loss (None: it runs all ``steps``).
        warmup_steps: Cubic learning-rate warm-up (default 0).
        record_every: Steps between the recorded full losses (default
            :data:`~.scalar_nets.CHECK_EVERY`).
    """

    steps: int
    stop_loss: float | None
    warmup_steps: int = 0
    record_every: int = CHECK_EVERY

    def train(
        self, net: nn.Module, X: Tensor, y: Tensor, *, lr: float, batch_size: int, seed: int
    ) -> TrainResult:
        """Run the phase on ``net`` (in place): :func:`~.scalar_nets.train_scalar` at η = ``lr``.

        ``batch_size`` 0 is GD (``seed`` is then unused), else SGD without replacement.
        """
        return train_scalar(
            net,
            X,
            y,
            lr=lr,
            steps=self.steps,
            batch_size=batch_size,
            warmup_steps=self.warmup_steps,
            seed=seed,
            stop_loss=self.stop_loss,
            check_every=self.record_every,
        )


@dataclasses.dataclass(frozen=True)
class GDToSGD:
    """GD to a minimum at η, then SGD(η, B) restarted there (sampling without replacement).

    Attributes:
        lr: Learning rate η of both phases.
        batch_size: Batch size B of the SGD phase and of the criteria at the minimum.
        gd: The GD phase (its ``stop_loss`` defines the minimum).
        sgd: The SGD phase (the companions start it at full η: no warm-up).
        lyapunov_steps: Steps per run of the Lyapunov estimate.
        lyapunov_runs: Runs of the Lyapunov estimate.
    """

    lr: float
    batch_size: int
    gd: Phase
    sgd: Phase
    lyapunov_steps: int
    lyapunov_runs: int

    def run(
        self, net: nn.Module, X: Tensor, y: Tensor, *, sgd_seed: int, lyapunov_seed: int
    ) -> EscapeRun:
        """Train ``net`` (in place) by GD to a minimum, measure it, continue with SGD.

        Args:
            net: Scalar-output model, on the device of ``X`` and ``y``.
            X: Inputs, shape ``(n, d)``.
            y: Targets, shape ``(n,)`` or ``(n, 1)``.
            sgd_seed: Seed of the SGD phase's batch sampler.
            lyapunov_seed: Seed of the Lyapunov estimate's generator.

        Returns:
            :class:`EscapeRun`.
        """
        lr, B = self.lr, self.batch_size
        gd = self.gd.train(net, X, y, lr=lr, batch_size=0, seed=0)
        K = gram_float64(net, X)
        with torch.no_grad():
            residual = (net(X).reshape(-1) - y.reshape(-1)).detach().cpu().to(torch.float64)
        at_gd = gram_summary(K, lr=lr, batch_size=B, sampling="without")
        growth = float(second_moment_growth(K, lr, B, "without"))
        lyap = lyapunov_exponent(
            K,
            lr,
            B,
            "without",
            num_steps=self.lyapunov_steps,
            num_runs=self.lyapunov_runs,
            generator=torch.Generator().manual_seed(lyapunov_seed),
        )
        sgd = self.sgd.train(net, X, y, lr=lr, batch_size=B, seed=sgd_seed)
        return EscapeRun(gd, K, at_gd, residual, growth, lyap, sgd)
