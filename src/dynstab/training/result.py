"""What a training run reports, and the one definition of convergence, divergence and η_eff.

Every trainer of :mod:`dynstab.training` applies one :class:`StoppingRule` to the full training
loss L(θ_t), evaluated at *evaluation steps* (every step for full-batch GD, where the loss is
the step's own; every ``eval_every`` steps and at the end for SGD):

* **divergence** — a non-finite loss or a loss above ``divergence_threshold`` (the full loss,
  or for SGD also the batch loss of a step) stops the run *before* that step's update:
  ``diverged=True``, a :class:`~dynstab.errors.DivergenceWarning` is emitted, nothing is raised.
* **convergence** — L(θ_t) ≤ ``stop_loss`` at an evaluation step t. With
  ``require_full_lr=True`` the run must also have made at least a fraction
  ``min_full_lr_fraction`` of its updates at the full target learning rate (so a run that
  reaches ``stop_loss`` during a warm-up keeps training at the target rate; the bounds of
  Wu & Su (2023) refer to the learning rate in effect at the minimum); otherwise (the default)
  the first such t stops it. The run then
  reports ``converged=True`` and η_t at that step (``lr_at_convergence``);
  ``converged_at_full_lr`` holds when the fraction of full-rate updates is ≥
  ``min_full_lr_fraction``.
* **effective learning rate** — the learning rate a stability bound is tested against. A run
  with a schedule meets several rates, and its loss may fall below a small level during a
  warm-up and rise again. The result records η_t at the *last downward crossing* of
  ``loss_threshold`` (default 10⁻⁶): the last evaluation step whose full loss is ≤ the threshold
  while the previous evaluated loss was above it (or there was none); ``lr_at_loss_threshold``
  and ``step_at_loss_threshold`` (None if the loss never reached it). It marks the start of the
  final descent into the minimum; :attr:`TrainResult.effective_lr` returns it, or the target
  ``lr`` when the threshold was never reached.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynstab._checks import check_positive
from dynstab._types import Params
from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab.training.history import History

__all__ = ["StoppingRule", "TrainResult"]

#: Relative tolerance below which a schedule multiplier counts as the full rate.
FULL_LR_RTOL = 1e-12


@dataclass(frozen=True)
class StoppingRule:
    """When a run stops and which learning rate it reports (module docstring).

    Attributes:
        stop_loss: Convergence tolerance on the full training loss; None never stops early.
        min_full_lr_fraction: Fraction of the updates that must use the full learning rate for
            ``converged_at_full_lr`` (and, with ``require_full_lr``, for stopping); in [0, 1].
            Default 0.2 (at least a fifth of the updates at the target η).
        require_full_lr: Stop on convergence only once ``min_full_lr_fraction`` is met.
        divergence_threshold: A loss above this (or non-finite) counts as divergence.
        loss_threshold: Level whose last downward crossing defines the effective learning rate.

    Raises:
        ValueError: If a value is out of range.

    Example:
        >>> StoppingRule(stop_loss=1e-8).converges(1e-9, full_lr_fraction=0.0)
        True
        >>> StoppingRule(require_full_lr=True).converges(1e-12, full_lr_fraction=0.1)
        False
    """

    stop_loss: float | None = 1e-10
    min_full_lr_fraction: float = 0.2
    require_full_lr: bool = False
    divergence_threshold: float = 1e10
    loss_threshold: float = 1e-6

    def __post_init__(self) -> None:
        if self.stop_loss is not None:
            object.__setattr__(self, "stop_loss", check_positive("stop_loss", self.stop_loss))
        frac = float(self.min_full_lr_fraction)
        if not 0.0 <= frac <= 1.0:
            raise ValueError(
                f"min_full_lr_fraction must be in [0, 1]; got {self.min_full_lr_fraction!r}."
            )
        object.__setattr__(self, "min_full_lr_fraction", frac)
        object.__setattr__(
            self,
            "divergence_threshold",
            check_positive("divergence_threshold", self.divergence_threshold),
        )
        object.__setattr__(
            self, "loss_threshold", check_positive("loss_threshold", self.loss_threshold)
        )

    def diverges(self, loss: float) -> bool:
        """Whether ``loss`` counts as divergence (non-finite or above the threshold)."""
        return not math.isfinite(loss) or loss > self.divergence_threshold

    def converges(self, loss: float, *, full_lr_fraction: float) -> bool:
        """Whether a run whose full loss is ``loss`` stops as converged."""
        if self.stop_loss is None or not loss <= self.stop_loss:
            return False
        return not self.require_full_lr or full_lr_fraction >= self.min_full_lr_fraction


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training run (definitions in the module docstring).

    Attributes:
        history: Recorded measurements: ``loss`` (full training loss) and ``lr`` (η_t) at the
            evaluation steps and the final step, plus every monitor's outputs.
        converged: The run stopped by the convergence rule.
        diverged: The run stopped on a non-finite or exploding loss.
        stop_reason: ``"converged"``, ``"diverged"`` or ``"max_steps"``.
        steps_run: Number of updates applied (the final iterate is θ_{steps_run}).
        final_loss: Full training loss at the final iterate (for an SGD run stopped by its batch
            loss, that offending batch loss).
        lr: Target learning rate η.
        lr_at_convergence: η_t at the step where the run converged; None otherwise.
        full_lr_fraction: Fraction of the applied updates whose multiplier was 1 (full ``lr``).
        converged_at_full_lr: ``converged`` and ``full_lr_fraction >= min_full_lr_fraction``.
        num_clipped: Number of updates whose gradient was rescaled by clipping.
        batch_size: B (None for GD).
        sampling: Sampling scheme (``"full"`` for GD).
        seed: Seed of the sampler (None when an explicit or the default generator was used).
        params: Final parameters (detached, keyed like ``named_parameters()``) when the model
            object is not trained in place (:func:`~dynstab.training.train_batched`,
            :func:`~dynstab.training.train_runs`; load them with
            ``model.load_state_dict(result.params, strict=False)``); None for
            :func:`~dynstab.training.train`.
        loss_threshold: The level of ``lr_at_loss_threshold``.
        lr_at_loss_threshold: η_t at the last downward crossing of ``loss_threshold``; None if
            the full loss never reached it.
        step_at_loss_threshold: That step; None if never.
    """

    history: History
    converged: bool
    diverged: bool
    stop_reason: str
    steps_run: int
    final_loss: float
    lr: float
    lr_at_convergence: float | None
    full_lr_fraction: float
    converged_at_full_lr: bool
    num_clipped: int
    batch_size: int | None
    sampling: str
    seed: int | None
    params: Params | None = field(default=None, repr=False, compare=False)
    loss_threshold: float = 1e-6
    lr_at_loss_threshold: float | None = None
    step_at_loss_threshold: int | None = None

    @property
    def effective_lr(self) -> float:
        """The learning rate to test stability bounds against (module docstring).

        ``lr_at_loss_threshold`` when the loss crossed ``loss_threshold``, else ``lr``.
        """
        return self.lr if self.lr_at_loss_threshold is None else self.lr_at_loss_threshold

    def to_dict(self, *, include_history: bool = True) -> dict[str, object]:
        """Return a JSON-able dict of every field except ``params`` (history as a nested dict).

        ``effective_lr`` is included; non-finite floats are written as strings.
        """
        out: dict[str, object] = {
            "converged": self.converged,
            "diverged": self.diverged,
            "stop_reason": self.stop_reason,
            "steps_run": self.steps_run,
            "final_loss": json_float(self.final_loss),
            "lr": self.lr,
            "lr_at_convergence": self.lr_at_convergence,
            "loss_threshold": self.loss_threshold,
            "lr_at_loss_threshold": self.lr_at_loss_threshold,
            "step_at_loss_threshold": self.step_at_loss_threshold,
            "effective_lr": self.effective_lr,
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


def json_float(v: float) -> float | str:
    """``v``, or ``"NaN"``/``"Infinity"``/``"-Infinity"`` for non-finite values (strict JSON)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


@dataclass(frozen=True)
class RunLabel:
    """How a run describes itself in its result and history metadata."""

    lr: float
    seed: int | None
    batch_size: int | None
    sampling: str
    momentum: float = 0.0
    nesterov: bool = False


class RunTracker:
    """Bookkeeping of one run under a :class:`StoppingRule` (shared by every trainer)."""

    def __init__(self, rule: StoppingRule, label: RunLabel) -> None:
        self.rule = rule
        self.label = label
        self.history = History(
            metadata={
                "lr": label.lr,
                "batch_size": label.batch_size,
                "sampling": label.sampling,
                "seed": label.seed,
            }
            # momentum runs say so (plain GD/SGD histories keep their metadata unchanged)
            | ({"momentum": label.momentum, "nesterov": label.nesterov} if label.momentum else {})
        )
        self.updates = 0
        self.full_updates = 0
        self.num_clipped = 0
        self.lr_at_threshold: float | None = None
        self.step_at_threshold: int | None = None
        self.below_threshold = False  # whether the last evaluated full loss was below it
        self.lr_at_conv: float | None = None
        self.reason: str | None = None
        self.final_loss = math.nan
        self.stop_step = 0

    @property
    def stopped(self) -> bool:
        """Whether the run has stopped."""
        return self.reason is not None

    @property
    def full_lr_fraction(self) -> float:
        """Fraction of the updates made so far at the full learning rate (0 before any)."""
        return self.full_updates / self.updates if self.updates else 0.0

    def observe_full(self, t: int, loss: float, eta: float, *, record: bool) -> bool:
        """Check the full loss L(θ_t); record it; return True if the run stops at step t."""
        if self.rule.diverges(loss):
            self.history.append(t, loss=loss, lr=eta)
            self._stop(t, "diverged", loss)
            return True
        below = loss <= self.rule.loss_threshold
        if below and not self.below_threshold:  # a downward crossing
            self.lr_at_threshold, self.step_at_threshold = eta, t
        self.below_threshold = below
        stop = self.rule.converges(loss, full_lr_fraction=self.full_lr_fraction)
        if record or stop:
            self.history.append(t, loss=loss, lr=eta)
        if stop:
            self.lr_at_conv = eta
            self._stop(t, "converged", loss)
        return stop

    def observe_batch(self, t: int, loss: float, eta: float) -> bool:
        """Check an SGD batch loss at θ_t for divergence; return True if the run stops."""
        if not self.rule.diverges(loss):
            return False
        rec = {"batch_loss": loss} | ({} if "lr" in self.history.at(t) else {"lr": eta})
        self.history.update(t, rec)
        self._stop(t, "diverged", loss)
        return True

    def count_update(self, multiplier: float, clipped: bool) -> None:
        """Count one applied update with schedule ``multiplier``."""
        self.updates += 1
        self.full_updates += multiplier >= 1.0 - FULL_LR_RTOL
        self.num_clipped += clipped

    def count_updates(self, count: int, full: int, clipped: int) -> None:
        """Count ``count`` applied updates, ``full`` of them at the full rate."""
        self.updates += count
        self.full_updates += full
        self.num_clipped += clipped

    def finish_max_steps(self, t: int, loss: float, eta: float) -> None:
        """Close a run that used all its steps; ``loss`` is L(θ_t) at the final iterate."""
        if not self.observe_full(t, loss, eta, record=True):
            self._stop(t, "max_steps", loss)

    def _stop(self, t: int, reason: str, loss: float) -> None:
        self.reason, self.stop_step, self.final_loss = reason, t, loss

    def result(self, params: Params | None) -> TrainResult:
        """The run's :class:`TrainResult`."""
        frac = self.full_lr_fraction
        converged = self.reason == "converged"
        return TrainResult(
            history=self.history,
            converged=converged,
            diverged=self.reason == "diverged",
            stop_reason=self.reason or "max_steps",
            steps_run=self.stop_step,
            final_loss=self.final_loss,
            lr=self.label.lr,
            lr_at_convergence=self.lr_at_conv,
            full_lr_fraction=frac,
            converged_at_full_lr=converged and frac >= self.rule.min_full_lr_fraction,
            num_clipped=self.num_clipped,
            batch_size=self.label.batch_size,
            sampling=self.label.sampling,
            seed=self.label.seed,
            params=params,
            loss_threshold=self.rule.loss_threshold,
            lr_at_loss_threshold=self.lr_at_threshold,
            step_at_loss_threshold=self.step_at_threshold,
        )


def _warn_first(
    bad: Sequence[TrainResult],
    runs: str,
    message: Callable[[TrainResult, str], str],
    category: type[Warning],
    stacklevel: int,
) -> None:
    """Warn about the first of the ``bad`` runs (``runs`` names them when there are several)."""
    if bad:
        more = f" ({len(bad)} {runs}; first shown)" if len(bad) > 1 else ""
        # + 2: this helper and warn_outcomes.
        warnings.warn(message(bad[0], more), category, stacklevel=stacklevel + 2)


def warn_outcomes(
    results: Sequence[TrainResult], stop_loss: float | None, *, stacklevel: int = 2
) -> None:
    """Emit the divergence and non-convergence warnings of a set of runs (first run shown).

    ``stacklevel`` counts as in :func:`warnings.warn` from the caller of this function (2: the
    caller's caller, i.e. the user of a trainer front-end).
    """
    _warn_first(
        [r for r in results if r.diverged],
        "runs diverged",
        lambda r, more: (
            f"training diverged at step {r.steps_run}: loss {r.final_loss:.3g} at lr={r.lr:g}"
            f"{more}. The run stopped and is flagged diverged=True; lower lr, add "
            "schedule=warmup(...) or pass clip=..."
        ),
        DivergenceWarning,
        stacklevel,
    )
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
        stacklevel,
    )
