"""Plain GD/SGD training of one model, in place: the single-run front-end of the engine.

The update is plain SGD, θ_{t+1} = θ_t − η_t ∇L_{I_t}(θ_t), where L_I is the ½-MSE (or any
``loss_fn``) averaged over the batch I_t (a multiset for sampling with replacement, so a
duplicate counts twice) and η_t = ``lr`` · schedule(t). Full-batch GD is I_t = {1..n}. The loop
is :mod:`dynstab.training.engine`'s; the stopping rules (divergence, convergence, the effective
learning rate) are those of :mod:`dynstab.training.result`.

The full training loss is free for GD (it is the step's loss, checked at every step). For SGD it
costs one forward pass over the training set and is evaluated every ``eval_every`` steps and at
the end, so convergence is detected at that granularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import check_positive
from dynstab.training.engine import Engine, RunSetup, check_data, check_trainable, prepare_data
from dynstab.training.monitors import Monitor
from dynstab.training.result import TrainResult, warn_outcomes
from dynstab.training.samplers import make_generator
from dynstab.training.schedules import Constant
from dynstab.training.settings import TrainOptions, TrainSettings
from dynstab.training.steppers import make_stepper

__all__ = ["TrainResult", "train"]


def train(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    monitors: Sequence[Monitor] = (),
    generator: torch.Generator | None = None,
    seed: int | None = None,
    settings: TrainSettings | None = None,
    **options: Unpack[TrainOptions],
) -> TrainResult:
    """Train ``model`` in place with GD or SGD (optionally with momentum); return what happened.

    Update t (0-based) is θ_{t+1} = θ_t − η_t · clip(∇L_{I_t}(θ_t)), with η_t = ``lr`` ·
    ``schedule(t)``, L_I(θ) = ``loss_fn(f(X[I]; θ), y[I])`` (by default ½·mean squared error,
    :func:`dynstab.losses.half_mse`, so that the GD threshold is 2/η) and the optional clipping
    g ↦ g · min(1, ``clip``/‖g‖₂) on the norm of the whole gradient. With ``momentum`` β > 0
    the step is exactly ``torch.optim.SGD(lr=η_t, momentum=β, dampening=0, nesterov=...)`` on
    the clipped gradient g_t: b_t = β·b_{t−1} + g_t (b_{−1} = 0) and θ_{t+1} = θ_t − η_t·b_t, or
    θ_{t+1} = θ_t − η_t·(g_t + β·b_t) with ``nesterov=True``. Only parameters with
    ``requires_grad=True`` are trained (frozen ones stay fixed). Gradients come from
    ``torch.autograd.grad`` (``.grad`` attributes are never touched) and the model's train/eval
    mode is left as it is. Monitors see θ_t *before* update t, and every monitor runs once more
    on the final iterate (unless the run diverged). The stopping rules are those of
    :class:`~dynstab.training.StoppingRule` (module :mod:`dynstab.training.result`).

    Cost per step: one forward+backward pass on B samples (n for GD), plus for SGD one forward
    pass on n samples every ``eval_every`` steps, plus the monitors' own cost.

    Args:
        model: The network; **modified in place** (its parameters end at θ_{steps_run}).
        X: Inputs, shape ``(n, ...)``.
        y: Targets, shape ``(n, ...)`` (one-hot rows for classification with ½-MSE).
        lr: Target learning rate η > 0.
        monitors: :class:`~dynstab.training.Monitor` objects; their outputs go to the history.
        generator: CPU random source of the batch sampler (SGD only).
        seed: Alternatively, seed of a fresh generator (not both).
        settings: The training settings (:class:`~dynstab.training.TrainSettings`), to set up
            once and reuse; the keyword options override its fields.
        **options: Fields of :class:`~dynstab.training.TrainSettings` as keywords
            (:class:`~dynstab.training.TrainOptions`; meaning and defaults documented there):
            ``steps`` (maximum number of updates; required unless ``settings`` gives it),
            ``batch_size`` (None: GD), ``sampling`` (``"with"``), ``schedule``, ``clip``,
            ``loss_fn`` (½-MSE), ``dtype`` (converts the model in place and the data),
            ``eval_every``, ``progress``, ``gradient`` (``"autograd"``), ``momentum`` (0),
            ``nesterov``, and the stopping rule's ``stop_loss`` (1e-10; None never stops early),
            ``min_full_lr_fraction`` (0.2), ``require_full_lr``, ``divergence_threshold``
            (1e10) and ``loss_threshold`` (1e-6, for ``effective_lr``).

    Returns:
        A :class:`TrainResult` (``params`` is None: the model holds the final parameters).
        Emits :class:`~dynstab.errors.DivergenceWarning` when the run diverged and
        :class:`~dynstab.errors.ConvergenceWarning` when ``stop_loss`` was not reached (never
        with ``stop_loss=None``).

    Raises:
        ValueError: On out-of-range arguments, both ``generator`` and ``seed``, a model without
            floating parameters, or an unknown ``gradient``.
        TypeError: If ``X``/``y`` are not tensors, ``schedule`` is not callable, or an option
            is unknown.

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
    s = TrainSettings.resolve(settings, options, "train")
    n = check_data(X, y)
    lr = check_positive("lr", lr)
    cfg = s.engine_config(n, desc="train")
    check_trainable(model, "model")
    if s.dtype is not None:
        model.to(s.dtype)
    named = check_trainable(model, "model")
    p0 = named[0][1]
    X, y = prepare_data(X, y, p0.dtype, p0.device)
    gen = make_generator(generator, seed)  # samplers draw on the CPU
    stepper = make_stepper(model, X, y, s.loss_fn, s.gradient, live=True)
    params = {k: p.detach()[None] for k, p in named}  # views: the engine updates the model
    setup = RunSetup(lr, s.schedule if s.schedule is not None else Constant(), gen, seed)
    trackers, _ = Engine(
        stepper,
        params,
        {},
        X,
        y,
        [setup],
        cfg,
        loss_fn=s.loss_fn,
        monitors=[list(monitors)],
        module_for=lambda P, F, i: model,
    ).run()
    result = trackers[0].result(params=None)
    warn_outcomes([result], s.stop.stop_loss, stacklevel=2)
    return result
