"""Plain GD/SGD training with stopping rules, clipping and monitors.

The update is plain SGD, θ_{t+1} = θ_t − η_t ∇L_{I_t}(θ_t), where L_I is the ½-MSE (or any
``loss_fn``) averaged over the batch I_t (a multiset for sampling with replacement, so a
duplicate counts twice) and η_t = ``lr`` · schedule(t). Full-batch GD is I_t = {1..n}.

Stopping rules (shared with :func:`dynstab.training.train_batched`):

* **divergence** — a non-finite loss or a loss above ``divergence_threshold`` (the full loss,
  or for SGD also the batch loss) stops the run *before* the update: ``diverged=True``, a
  :class:`~dynstab.errors.DivergenceWarning` is emitted, nothing is raised.
* **convergence** (spec A7) — the full training loss L(θ_t) ≤ ``stop_loss`` stops the run
  with ``converged=True``; the result records η_t at that step (``lr_at_convergence``), η_t
  when the loss was first seen ≤ 1e-6 (``lr_at_1e_6``, spec A7) and the fraction of the updates
  made so far that used the full target ``lr`` (``full_lr_fraction``); ``converged_at_full_lr``
  holds when that fraction is ≥ ``min_full_lr_fraction``.
* **last 1e-6 crossing** — the loss can rise above 1e-6 again after a first crossing (e.g.
  during a warm-up, Wu & Su's E3), so the result also records η_t at the *last* downward
  crossing (``lr_at_last_1e_6``, ``step_at_last_1e_6``): the last evaluated step whose full loss
  is ≤ 1e-6 while the previous evaluated full loss was > 1e-6 (or there was none). Without a
  rebound it equals the first crossing.

The full training loss is free for GD (it is the step's loss, checked at every step). For SGD it
costs one forward pass over the training set and is evaluated every ``eval_every`` steps and at
the end, so convergence is detected at that granularity.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import LossFn, Params
from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab.losses import half_mse
from dynstab.training.history import History
from dynstab.training.samplers import (
    SAMPLING_SCHEMES,
    BatchSampler,
    is_full_batch,
    make_generator,
)
from dynstab.training.schedules import Constant

if TYPE_CHECKING:
    from dynstab.training.monitors import Monitor

__all__ = ["TrainResult", "train"]

LOSS_1E6 = 1e-6
_FULL_LR_RTOL = 1e-12


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training run.

    Attributes:
        history: Recorded measurements: ``loss`` (full training loss) and ``lr`` (η_t) at the
            evaluation steps and the final step, plus every monitor's outputs.
        converged: The full training loss reached ``stop_loss``.
        diverged: The run stopped on a non-finite or exploding loss.
        stop_reason: ``"converged"``, ``"diverged"`` or ``"max_steps"``.
        steps_run: Number of updates applied (the final iterate is θ_{steps_run}).
        final_loss: Full training loss at the final iterate (for an SGD run stopped by its batch
            loss, that offending batch loss).
        lr: Target learning rate η.
        lr_at_convergence: η_t at the step where ``stop_loss`` was reached; None otherwise.
        lr_at_1e_6: η_t at the step where the full loss was first seen ≤ 1e-6; None if never.
        step_at_1e_6: That step; None if never.
        lr_at_last_1e_6: η_t at the last downward crossing of 1e-6: the last evaluated step
            with full loss ≤ 1e-6 whose previous evaluated full loss was > 1e-6 (or that was
            the first evaluation). Equals ``lr_at_1e_6`` unless the loss rose above 1e-6 again
            and came back; None if never.
        step_at_last_1e_6: That step; None if never.
        full_lr_fraction: Fraction of the applied updates whose multiplier was 1 (full ``lr``).
        converged_at_full_lr: ``converged`` and ``full_lr_fraction >= min_full_lr_fraction``.
        num_clipped: Number of updates whose gradient was rescaled by clipping.
        batch_size: B (None for GD).
        sampling: Sampling scheme (``"full"`` for GD).
        seed: Seed of the sampler (None when an explicit or the default generator was used).
        params: Final parameters (detached, keyed like ``named_parameters()``) when the model
            object is not available, i.e. for :func:`train_batched` (load them with
            ``model.load_state_dict(result.params, strict=False)``); None for :func:`train`,
            which trains the model in place.
    """

    history: History
    converged: bool
    diverged: bool
    stop_reason: str
    steps_run: int
    final_loss: float
    lr: float
    lr_at_convergence: float | None
    lr_at_1e_6: float | None
    step_at_1e_6: int | None
    full_lr_fraction: float
    converged_at_full_lr: bool
    num_clipped: int
    batch_size: int | None
    sampling: str
    seed: int | None
    params: Params | None = field(default=None, repr=False, compare=False)
    lr_at_last_1e_6: float | None = None
    step_at_last_1e_6: int | None = None

    def to_dict(self, *, include_history: bool = True) -> dict[str, Any]:
        """Return a JSON-able dict of every field except ``params`` (history as a nested dict)."""
        out: dict[str, Any] = {
            "converged": self.converged,
            "diverged": self.diverged,
            "stop_reason": self.stop_reason,
            "steps_run": self.steps_run,
            "final_loss": _json_float(self.final_loss),
            "lr": self.lr,
            "lr_at_convergence": self.lr_at_convergence,
            "lr_at_1e-6": self.lr_at_1e_6,
            "step_at_1e-6": self.step_at_1e_6,
            "lr_at_last_1e-6": self.lr_at_last_1e_6,
            "step_at_last_1e-6": self.step_at_last_1e_6,
            "full_lr_fraction": self.full_lr_fraction,
            "converged_at_full_lr": self.converged_at_full_lr,
            "num_clipped": self.num_clipped,
            "batch_size": self.batch_size,
            "sampling": self.sampling,
            "seed": self.seed,
        }
        if include_history:
            out["history"] = self.history.to_dict()
        return out


def _json_float(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


class _RunTracker:
    """Bookkeeping of one run's stopping rules; shared by the sequential and batched trainers."""

    def __init__(self, cfg: _Config, lr: float, seed: int | None) -> None:
        self.cfg = cfg
        self.lr = lr
        self.seed = seed
        self.stop_loss = cfg.stop_loss
        self.threshold = cfg.divergence_threshold
        self.min_frac = cfg.min_full_lr_fraction
        self.history = History(
            metadata={
                "lr": lr,
                "batch_size": cfg.reported_batch_size,
                "sampling": cfg.sampling_label,
                "seed": seed,
            }
        )
        self.updates = 0
        self.full_updates = 0
        self.num_clipped = 0
        self.lr_at_1e6: float | None = None
        self.step_at_1e6: int | None = None
        self.lr_at_last_1e6: float | None = None
        self.step_at_last_1e6: int | None = None
        self.below_1e6 = False  # whether the last evaluated full loss was <= 1e-6
        self.lr_at_conv: float | None = None
        self.reason: str | None = None
        self.final_loss = math.nan
        self.stop_step = 0

    def _exploded(self, loss: float) -> bool:
        return not math.isfinite(loss) or loss > self.threshold

    def observe_full(self, t: int, loss: float, eta: float, *, record: bool) -> bool:
        """Check the full loss L(θ_t); record it; return True if the run stops at step t."""
        if self._exploded(loss):
            self.history.append(t, loss=loss, lr=eta)
            self._stop(t, "diverged", loss)
            return True
        below = loss <= LOSS_1E6
        if below and not self.below_1e6:  # a downward crossing of 1e-6
            if self.lr_at_1e6 is None:
                self.lr_at_1e6, self.step_at_1e6 = eta, t
            self.lr_at_last_1e6, self.step_at_last_1e6 = eta, t
        self.below_1e6 = below
        stop = self.stop_loss is not None and loss <= self.stop_loss
        if record or stop:
            self.history.append(t, loss=loss, lr=eta)
        if stop:
            self.lr_at_conv = eta
            self._stop(t, "converged", loss)
        return stop

    def observe_batch(self, t: int, loss: float, eta: float) -> bool:
        """Check an SGD batch loss at θ_t for divergence; return True if the run stops."""
        if not self._exploded(loss):
            return False
        rec = {"batch_loss": loss} | ({} if "lr" in self.history.at(t) else {"lr": eta})
        self.history.update(t, rec)
        self._stop(t, "diverged", loss)
        return True

    def count_update(self, multiplier: float, clipped: bool) -> None:
        self.updates += 1
        self.full_updates += multiplier >= 1.0 - _FULL_LR_RTOL
        self.num_clipped += clipped

    def finish_max_steps(self, t: int, loss: float, eta: float) -> None:
        """Close a run that used all its steps; ``loss`` is L(θ_t) at the final iterate."""
        if not self.observe_full(t, loss, eta, record=True):
            self._stop(t, "max_steps", loss)

    def _stop(self, t: int, reason: str, loss: float) -> None:
        self.reason, self.stop_step, self.final_loss = reason, t, loss

    def result(self, params: Params | None) -> TrainResult:
        frac = self.full_updates / self.updates if self.updates else 0.0
        converged = self.reason == "converged"
        return TrainResult(
            history=self.history,
            converged=converged,
            diverged=self.reason == "diverged",
            stop_reason=self.reason or "max_steps",
            steps_run=self.stop_step,
            final_loss=self.final_loss,
            lr=self.lr,
            lr_at_convergence=self.lr_at_conv,
            lr_at_1e_6=self.lr_at_1e6,
            step_at_1e_6=self.step_at_1e6,
            full_lr_fraction=frac,
            converged_at_full_lr=converged and frac >= self.min_frac,
            num_clipped=self.num_clipped,
            batch_size=self.cfg.reported_batch_size,
            sampling=self.cfg.sampling_label,
            seed=self.seed,
            params=params,
            lr_at_last_1e_6=self.lr_at_last_1e6,
            step_at_last_1e_6=self.step_at_last_1e6,
        )


@dataclass(frozen=True)
class _Config:
    n: int
    lr: float
    steps: int
    batch_size: int | None
    sampling: str
    full_batch: bool
    schedule: Callable[[int], float]
    clip: float | None
    stop_loss: float | None
    min_full_lr_fraction: float
    divergence_threshold: float
    eval_every: int

    @property
    def reported_batch_size(self) -> int | None:
        """B as recorded in results and histories (None for GD)."""
        return None if self.full_batch else self.batch_size

    @property
    def sampling_label(self) -> str:
        """Sampling scheme as recorded in results and histories (``"full"`` for GD)."""
        return "full" if self.full_batch else self.sampling


def _validate(
    X: Tensor,
    y: Tensor,
    lr: float,
    steps: int,
    batch_size: int | None,
    sampling: str,
    schedule: Callable[[int], float] | None,
    clip: float | None,
    stop_loss: float | None,
    min_full_lr_fraction: float,
    divergence_threshold: float,
    eval_every: int | None,
    dtype: torch.dtype | None,
) -> _Config:
    """Validate the shared arguments of train/train_batched; return the resolved config.

    Both callers pass the arguments positionally, each under its own parameter name.
    """
    for name, t in (("X", X), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}.")
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(
            "X and y must hold the same number n >= 1 of samples along dim 0; got shapes "
            f"{tuple(X.shape)} and {tuple(y.shape)}."
        )
    n = int(X.shape[0])
    check_positive("lr", lr)
    check_int("steps", steps, minimum=0)
    check_choice("sampling", sampling, SAMPLING_SCHEMES)
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1, maximum=None if sampling == "with" else n)
    if schedule is not None and not callable(schedule):
        raise TypeError(f"schedule must be callable as schedule(t) -> float; got {schedule!r}.")
    if clip is not None:
        check_positive("clip", clip)
    if stop_loss is not None:
        check_positive("stop_loss", stop_loss)
    frac = float(min_full_lr_fraction)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"min_full_lr_fraction must be in [0, 1]; got {min_full_lr_fraction!r}.")
    check_positive("divergence_threshold", divergence_threshold)
    full = is_full_batch(n, batch_size, sampling)
    if eval_every is None:
        eval_every = 1 if full else max(1, n // int(batch_size or n))
    check_int("eval_every", eval_every, minimum=1)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float64; got {dtype}.")
    return _Config(
        n=n,
        lr=float(lr),
        steps=steps,
        batch_size=batch_size,
        sampling=sampling,
        full_batch=full,
        schedule=schedule if schedule is not None else Constant(),
        clip=None if clip is None else float(clip),
        stop_loss=None if stop_loss is None else float(stop_loss),
        min_full_lr_fraction=frac,
        divergence_threshold=float(divergence_threshold),
        eval_every=eval_every,
    )


def _multiplier(schedule: Callable[[int], float], t: int) -> float:
    m = float(schedule(t))
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"schedule(t) must be a finite multiplier >= 0; got {m!r} at t={t}.")
    return m


def _prepare_data(
    X: Tensor, y: Tensor, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    X = X.to(device=device, dtype=dtype) if X.is_floating_point() else X.to(device)
    y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
    return X, y


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, file=sys.stderr, desc=desc, leave=False)


def _warn_first(
    bad: Sequence[TrainResult],
    runs: str,
    message: Callable[[TrainResult, str], str],
    category: type[Warning],
) -> None:
    """Warn about the first of the ``bad`` runs (``runs`` names them when there are several)."""
    if bad:
        more = f" ({len(bad)} {runs}; first shown)" if len(bad) > 1 else ""
        # stacklevel 4: this helper, the _warn_* wrapper, train/train_batched, their caller.
        warnings.warn(message(bad[0], more), category, stacklevel=4)


def _warn_divergence(results: Sequence[TrainResult]) -> None:
    _warn_first(
        [r for r in results if r.diverged],
        "runs diverged",
        lambda r, more: (
            f"training diverged at step {r.steps_run}: loss {r.final_loss:.3g} at lr={r.lr:g}"
            f"{more}. The run stopped and is flagged diverged=True; lower lr, add "
            "schedule=warmup(...) or pass clip=..."
        ),
        DivergenceWarning,
    )


def _warn_not_converged(results: Sequence[TrainResult], stop_loss: float | None) -> None:
    if stop_loss is None:
        return
    _warn_first(
        [r for r in results if r.stop_reason == "max_steps"],
        "runs",
        lambda r, more: (
            f"training did not reach stop_loss={stop_loss:g} in {r.steps_run} steps: final loss "
            f"{r.final_loss:.3g} at lr={r.lr:g}{more}. Increase steps, or pass stop_loss=None to "
            "train for a fixed budget."
        ),
        ConvergenceWarning,
    )


def _grad_norm(grads: Mapping[str, Tensor]) -> Tensor:
    return torch.sqrt(sum((g * g).sum() for g in grads.values()))  # type: ignore[arg-type]


def train(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int | None = None,
    sampling: str = "with",
    schedule: Callable[[int], float] | None = None,
    clip: float | None = None,
    loss_fn: LossFn = half_mse,
    monitors: Sequence[Monitor] = (),
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    stop_loss: float | None = 1e-10,
    min_full_lr_fraction: float = 0.2,
    divergence_threshold: float = 1e10,
    eval_every: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place with plain GD or SGD and return what happened.

    Update t (0-based) is θ_{t+1} = θ_t − η_t · clip(∇L_{I_t}(θ_t)), with η_t = ``lr`` ·
    ``schedule(t)``, L_I(θ) = ``loss_fn(f(X[I]; θ), y[I])`` (by default ½·mean squared error,
    :func:`dynstab.losses.half_mse`, so that the GD threshold is 2/η) and the optional clipping
    g ↦ g · min(1, ``clip``/‖g‖₂) on the norm of the whole gradient. Only parameters with
    ``requires_grad=True`` are trained (frozen ones stay fixed). Gradients come from
    ``torch.autograd.grad`` (``.grad`` attributes are never touched) and the model's train/eval
    mode is left as it is. Monitors see θ_t *before* update t, and every monitor runs once more
    on the final iterate (unless the run diverged). See the module docstring for the stopping rules.

    Cost per step: one forward+backward pass on B samples (n for GD), plus for SGD one forward
    pass on n samples every ``eval_every`` steps, plus the monitors' own cost.

    Args:
        model: The network; **modified in place** (its parameters end at θ_{steps_run}).
        X: Inputs, shape ``(n, ...)``.
        y: Targets, shape ``(n, ...)`` (one-hot rows for classification with ½-MSE).
        lr: Target learning rate η > 0.
        steps: Maximum number of updates, >= 0.
        batch_size: B; None means full-batch GD. ``B == n`` is GD for ``"without"`` and
            ``"reshuffle"`` but SGD for ``"with"``.
        sampling: ``"with"`` (i.i.d. indices), ``"without"`` (uniform B-subset each step) or
            ``"reshuffle"`` (epoch-wise permutations; empirical mode not covered by the theory).
            Ignored for GD. See :mod:`dynstab.training.samplers`.
        schedule: Multiplier schedule (e.g. :func:`~dynstab.training.warmup`); None = constant.
        clip: Gradient-norm clipping threshold, or None (no clipping).
        loss_fn: ``loss_fn(outputs, targets)``, mean over samples. Default ½-MSE.
        monitors: :class:`~dynstab.training.Monitor` objects; their outputs go to the history.
        generator: CPU random source of the batch sampler (SGD only).
        seed: Alternatively, seed of a fresh generator (not both).
        dtype: If given (e.g. ``torch.float64``), convert the model (in place) and the floating
            data to it. Otherwise floating data are converted to the model's dtype.
        stop_loss: Stop when the full training loss is <= this; None never stops early.
        min_full_lr_fraction: Fraction of updates at the full ``lr`` required for
            ``converged_at_full_lr`` (spec A7: 0.2).
        divergence_threshold: A loss above this counts as divergence.
        eval_every: Steps between full-loss evaluations and history records; default every step
            for GD and every ⌊n/B⌋ steps (about one epoch) for SGD.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        A :class:`TrainResult` (``params`` is None: the model holds the final parameters).
        Emits :class:`~dynstab.errors.DivergenceWarning` when the run diverged and
        :class:`~dynstab.errors.ConvergenceWarning` when ``stop_loss`` was not reached (never
        with ``stop_loss=None``).

    Raises:
        ValueError: On out-of-range arguments, both ``generator`` and ``seed``, or a model
            without floating parameters.
        TypeError: If ``X``/``y`` are not tensors or ``schedule`` is not callable.

    Example:
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> X, y = torch.ones(4, 1), 2 * torch.ones(4, 1)
        >>> res = train(model, X, y, lr=0.5, steps=100, dtype=torch.float64)
        >>> # w_t = 2 − 2·0.5^t, L_t = 2·0.25^t ≤ 1e-10 first at t = 18
        >>> res.converged, res.steps_run, res.final_loss == 2 * 0.25**18
        (True, 18, True)
    """
    cfg = _validate(
        X, y, lr, steps, batch_size, sampling, schedule, clip, stop_loss, min_full_lr_fraction,
        divergence_threshold, eval_every, dtype
    )  # fmt: skip
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not named or not all(p.is_floating_point() for _, p in named):
        got = [(k, p.dtype, p.requires_grad) for k, p in model.named_parameters()]
        raise ValueError(
            "model must have at least one trainable (requires_grad=True) floating-point "
            f"parameter; got {got}. Pass an nn.Module with float parameters that require grad."
        )
    if dtype is not None:
        model.to(dtype)
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    p0 = named[0][1]
    X, y = _prepare_data(X, y, p0.dtype, p0.device)
    gen = make_generator(generator, seed)  # samplers draw on the CPU
    sampler = (
        None
        if cfg.full_batch
        else BatchSampler(cfg.n, int(cfg.batch_size or cfg.n), cfg.sampling, generator=gen)
    )
    tracker = _RunTracker(cfg, cfg.lr, seed)
    history = tracker.history
    names = [k for k, _ in named]
    leaves = [p for _, p in named]

    def step_fn(xb: Tensor, yb: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        # autograd.grad returns the gradient without accumulating into .grad (and is ~3x
        # cheaper per step than torch.func.grad_and_value on small nets).
        with torch.enable_grad():
            loss = loss_fn(model(xb), yb)
            grads = torch.autograd.grad(loss, leaves, materialize_grads=True)
        return dict(zip(names, grads, strict=True)), loss.detach()

    def full_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(X), y))

    context: dict[str, Any] = {
        "X": X,
        "y": y,
        "loss_fn": loss_fn,
        "n": cfg.n,
        "batch_size": cfg.n if cfg.full_batch else cfg.batch_size,
        "sampling": "without" if cfg.full_batch else cfg.sampling,
        "target_lr": cfg.lr,
        "history": history,
    }
    last_monitored: dict[int, int] = {}

    def run_monitors(t: int, eta: float, loss: float | None, final: bool) -> None:
        for i, m in enumerate(monitors):
            if last_monitored.get(i) == t or not (final or t % m.every == 0):
                continue
            context.update(step=t, lr=eta, loss=loss)
            history.update(t, m(t, model, context))
            last_monitored[i] = t

    for m in monitors:
        m.reset()
    bar = _progress_bar(cfg.steps, progress, "train")
    stopped = False
    try:
        for t in range(cfg.steps):
            mult = _multiplier(cfg.schedule, t)
            eta = cfg.lr * mult
            loss_t: float | None = None
            if sampler is None:
                grads, value = step_fn(X, y)
                loss_t = float(value)
                if tracker.observe_full(t, loss_t, eta, record=t % cfg.eval_every == 0):
                    stopped = True
                    break
            else:
                idx = sampler.next()
                if t % cfg.eval_every == 0:
                    loss_t = full_loss()
                    if tracker.observe_full(t, loss_t, eta, record=True):
                        stopped = True
                        break
                grads, value = step_fn(X[idx], y[idx])
                if tracker.observe_batch(t, float(value), eta):
                    stopped = True
                    break
            run_monitors(t, eta, loss_t, final=False)
            clipped = False
            if cfg.clip is not None:
                norm = float(_grad_norm(grads))
                if norm > cfg.clip:
                    clipped = True
                    grads = {k: g * (cfg.clip / norm) for k, g in grads.items()}
            with torch.no_grad():
                for p, g in zip(leaves, grads.values(), strict=True):
                    p.sub_(eta * g)
            tracker.count_update(mult, clipped)
            bar.update(1)
            if loss_t is not None and t % cfg.eval_every == 0:
                bar.set_postfix(loss=f"{loss_t:.3e}", refresh=False)
        if not stopped:
            eta_end = cfg.lr * _multiplier(cfg.schedule, cfg.steps)
            tracker.finish_max_steps(cfg.steps, full_loss(), eta_end)
        t_end = tracker.stop_step
        if tracker.reason != "diverged":
            eta_end = cfg.lr * _multiplier(cfg.schedule, t_end)
            run_monitors(t_end, eta_end, tracker.final_loss, final=True)
    finally:
        bar.close()
    result = tracker.result(params=None)
    _warn_divergence([result])
    _warn_not_converged([result], cfg.stop_loss)
    return result
