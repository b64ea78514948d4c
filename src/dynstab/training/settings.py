"""The settings shared by every trainer: one validated object instead of parallel keyword lists.

:func:`~dynstab.training.train`, :func:`~dynstab.training.train_batched` and
:func:`~dynstab.training.train_runs` take the same run-independent settings (how many steps,
which batches, which loss, when to stop, how the gradient is computed). They are the fields of
:class:`TrainSettings`, documented and validated here once; each trainer accepts them either as
keywords (``train(model, X, y, lr=0.1, steps=500, batch_size=8)``, typed by
:class:`TrainOptions`) or as a ready object (``train(model, X, y, lr=0.1, settings=s)``), the
keywords overriding the object's values. Build one :class:`TrainSettings` to train many models
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TypedDict, Unpack

import torch

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import LossFn
from dynstab.criteria.momentum import check_momentum
from dynstab.losses import half_mse
from dynstab.sampling import SAMPLING_SCHEMES, Sampling, is_full_batch
from dynstab.training.result import StoppingRule
from dynstab.training.steppers import check_gradient

__all__ = ["TrainOptions", "TrainSettings"]

#: The keyword options that set a field of :class:`StoppingRule` rather than of the settings.
_STOP_FIELDS = tuple(f.name for f in fields(StoppingRule))


@dataclass(frozen=True)
class EngineConfig:
    """Settings shared by the runs of one engine call, resolved for a training set of n samples.

    Attributes:
        steps: Maximum number of updates per run.
        sampling: The batch rule (``Sampling.is_full_batch`` for GD).
        clip: Gradient-norm clipping threshold, or None.
        rule: The stopping rule.
        eval_every: Steps between full-loss evaluations (SGD) and history records.
        progress: Show a tqdm bar on stderr.
        desc: Label of the progress bar.
        momentum: Heavy-ball momentum β in [0, 1) (0: plain GD/SGD).
        nesterov: Nesterov's variant of the momentum step (needs β > 0).
    """

    steps: int
    sampling: Sampling
    clip: float | None
    rule: StoppingRule
    eval_every: int
    progress: bool = False
    desc: str = "train"
    momentum: float = 0.0
    nesterov: bool = False

    @property
    def full_batch(self) -> bool:
        """Whether the runs are full-batch GD."""
        return self.sampling.is_full_batch

    @property
    def label_batch_size(self) -> int | None:
        """B as recorded in results (None for GD)."""
        return None if self.full_batch else self.sampling.B

    @property
    def label_sampling(self) -> str:
        """The scheme as recorded in results (``"full"`` for GD)."""
        return "full" if self.full_batch else self.sampling.scheme


@dataclass(frozen=True)
class TrainSettings:
    """How to train: steps, batches, loss, stopping rule and gradient, shared by every trainer.

    A run at target learning rate η takes the steps θ_{t+1} = θ_t − η_t · clip(∇L_{I_t}(θ_t)),
    η_t = η · ``schedule(t)``, on the batches I_t of :class:`dynstab.sampling.Sampling`, with
    heavy-ball or Nesterov momentum as ``torch.optim.SGD`` when ``momentum`` > 0 (the full
    definition is at :func:`~dynstab.training.train`). The trainers' keywords ``stop_loss``,
    ``min_full_lr_fraction``, ``require_full_lr``, ``divergence_threshold`` and
    ``loss_threshold`` set the fields of ``stop``.

    Attributes:
        steps: Maximum number of updates per run, >= 0.
        batch_size: B; None means full-batch GD. ``B == n`` is GD for ``"without"`` and
            ``"reshuffle"`` but SGD for ``"with"``; B <= n is checked when n is known.
        sampling: ``"with"`` (i.i.d. indices), ``"without"`` (uniform B-subset each step) or
            ``"reshuffle"`` (epoch-wise permutations; empirical mode not covered by the theory).
            Ignored for GD. See :mod:`dynstab.training.samplers`.
        schedule: Multiplier schedule ``schedule(t) -> m_t`` (e.g.
            :func:`~dynstab.training.warmup`); None = constant. In :func:`train_runs` it is the
            schedule of the runs that do not bring their own.
        clip: Gradient-norm clipping threshold (per run), or None (no clipping).
        loss_fn: ``loss_fn(outputs, targets)``, mean over samples (``vmap``-compatible for the
            vectorised trainers). Default ½-MSE.
        dtype: If given (e.g. ``torch.float64``), convert the model(s) and the floating data to
            it; otherwise floating data are converted to the model's dtype.
        eval_every: Steps between full-loss evaluations and history records; default every step
            for GD and every ⌊n/B⌋ steps (about one epoch) for SGD.
        progress: Show a tqdm progress bar on stderr.
        gradient: ``"autograd"`` (default; ``torch.func.vmap`` over runs in the vectorised
            trainers), ``"closed_form"`` (the model's ``closed_form_grad``, ½-MSE only) or
            ``"auto"`` (the closed form when the model has one, the loss is ``half_mse`` and
            nothing is frozen).
        momentum: Heavy-ball momentum β ∈ [0, 1) (``torch.optim.SGD``'s, dampening 0; the GD
            stability threshold becomes λ_max ≤ 2(1 + β)/η). Default 0 (plain GD/SGD).
        nesterov: Nesterov momentum (``torch.optim.SGD(nesterov=True)``; needs β > 0).
        stop: When a run stops and which learning rate it reports
            (:class:`~dynstab.training.StoppingRule`): by default it stops once the full
            training loss is <= 1e-10, counts a loss above 1e10 as divergence, requires a fifth
            of the updates at the full η for ``converged_at_full_lr`` and reads the effective
            learning rate at the loss level 1e-6.

    Raises:
        ValueError: On an out-of-range value, an unknown ``sampling`` or ``gradient``, or a
            non-floating ``dtype``.
        TypeError: On a non-int count or a non-callable ``schedule``/``loss_fn``.

    Example:
        >>> s = TrainSettings(steps=100, batch_size=4)
        >>> s.stop.stop_loss, s.with_options(stop_loss=None, momentum=0.9).stop.stop_loss
        (1e-10, None)
        >>> TrainSettings(steps=10).engine_config(8, desc="demo").sampling.is_full_batch
        True
    """

    steps: int
    batch_size: int | None = None
    sampling: str = "with"
    schedule: Callable[[int], float] | None = None
    clip: float | None = None
    loss_fn: LossFn = half_mse
    dtype: torch.dtype | None = None
    eval_every: int | None = None
    progress: bool = False
    gradient: str = "autograd"
    momentum: float = 0.0
    nesterov: bool = False
    stop: StoppingRule = field(default_factory=StoppingRule)

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_choice("sampling", self.sampling, SAMPLING_SCHEMES)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(
                f"schedule must be callable as schedule(t) -> float; got {self.schedule!r}."
            )
        if self.clip is not None:
            object.__setattr__(self, "clip", check_positive("clip", self.clip))
        if not callable(self.loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(outputs, targets); got {self.loss_fn!r}."
            )
        if self.dtype is not None and not (
            isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point
        ):
            raise ValueError(
                f"dtype must be a floating dtype such as torch.float64; got {self.dtype}."
            )
        if self.eval_every is not None:
            check_int("eval_every", self.eval_every, minimum=1)
        check_gradient(self.gradient, self.loss_fn)
        object.__setattr__(self, "nesterov", bool(self.nesterov))
        object.__setattr__(self, "momentum", check_momentum(self.momentum, self.nesterov))
        object.__setattr__(self, "progress", bool(self.progress))
        if not isinstance(self.stop, StoppingRule):
            raise TypeError(f"stop must be a StoppingRule; got {type(self.stop).__name__}.")

    @classmethod
    def resolve(
        cls, settings: TrainSettings | None, options: Mapping[str, object], who: str
    ) -> TrainSettings:
        """The settings a trainer runs with: ``settings`` (if any) overridden by ``options``.

        Args:
            settings: A ready :class:`TrainSettings`, or None (``options`` must give ``steps``).
            options: Keyword options of the trainer (:class:`TrainOptions`).
            who: Name of the trainer, for error messages.

        Returns:
            The validated settings.

        Raises:
            TypeError: On an unknown option, a ``settings`` that is not a
                :class:`TrainSettings`, or no ``steps`` at all.
        """
        if settings is not None and not isinstance(settings, TrainSettings):
            raise TypeError(
                f"{who}: settings must be a TrainSettings; got {type(settings).__name__}."
            )
        own = {f.name for f in fields(cls)} - {"stop"}
        unknown = sorted(set(options) - own - set(_STOP_FIELDS))
        if unknown:
            raise TypeError(
                f"{who}() got unexpected keyword argument(s) {unknown}; the training options "
                f"are {sorted(own | set(_STOP_FIELDS))} (fields of TrainSettings)."
            )
        if settings is None and "steps" not in options:
            raise TypeError(
                f"{who}() needs steps=... (the maximum number of updates), or "
                "settings=TrainSettings(steps=...)."
            )
        stop = {k: v for k, v in options.items() if k in _STOP_FIELDS}
        mine = {k: v for k, v in options.items() if k not in _STOP_FIELDS}
        # the names were checked above; the values are validated by __post_init__
        new = replace(settings, **mine) if settings is not None else cls(**mine)  # type: ignore[arg-type]
        return replace(new, stop=replace(new.stop, **stop)) if stop else new  # type: ignore[arg-type]

    def with_options(self, **options: Unpack[TrainOptions]) -> TrainSettings:
        """A copy with some fields (or fields of ``stop``, by their names) replaced.

        Args:
            **options: New values of fields of the settings or of ``stop``
                (:class:`TrainOptions`).

        Returns:
            The validated copy.

        Raises:
            TypeError: On an unknown name.
            ValueError: On an out-of-range value.
        """
        return TrainSettings.resolve(self, options, "with_options")

    def engine_config(self, n: int, *, desc: str) -> EngineConfig:
        """The engine's configuration for a training set of ``n`` samples.

        Raises:
            ValueError: If ``batch_size`` > n for sampling without replacement or reshuffling.
        """
        if self.batch_size is not None and self.sampling != "with":
            check_int("batch_size", self.batch_size, minimum=1, maximum=n)
        full = is_full_batch(n, self.batch_size, self.sampling)
        rule_sampling = Sampling.gd(n) if full else Sampling(n, self.batch_size, self.sampling)
        eval_every = self.eval_every
        if eval_every is None:
            eval_every = 1 if full else max(1, n // rule_sampling.B)
        return EngineConfig(
            steps=self.steps,
            sampling=rule_sampling,
            clip=self.clip,
            rule=self.stop,
            eval_every=eval_every,
            progress=self.progress,
            desc=desc,
            momentum=self.momentum,
            nesterov=self.nesterov,
        )


class TrainOptions(TypedDict, total=False):
    """The keyword options of the trainers, documented at :class:`TrainSettings`.

    The fields of :class:`TrainSettings` and of its ``stop`` rule
    (:class:`~dynstab.training.StoppingRule`).
    """

    steps: int
    batch_size: int | None
    sampling: str
    schedule: Callable[[int], float] | None
    clip: float | None
    loss_fn: LossFn
    dtype: torch.dtype | None
    eval_every: int | None
    progress: bool
    gradient: str
    momentum: float
    nesterov: bool
    stop_loss: float | None
    min_full_lr_fraction: float
    require_full_lr: bool
    divergence_threshold: float
    loss_threshold: float
