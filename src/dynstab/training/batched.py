"""Many small GD/SGD runs at once: an η × seed grid, a front-end of the training engine.

:func:`train_batched` trains R = len(lrs)·len(seeds) copies of a small network side by side
with :func:`dynstab.training.train_runs`: parameters of all runs are stacked along a leading run
axis and one vectorised gradient per step serves every run. Each run replays exactly what
:func:`dynstab.training.train` does with the same arguments: the initial model is
``model_factory(seed)``, the batch indices come from a sampler seeded with ``seed`` (runs that
share a seed share the index stream, as their sequential counterparts would), and the same
stopping rules are applied per run. A stopped run is dropped from the vectorised computation;
its record matches the sequential run to float round-off (vectorised kernels may sum in a
different order).

Suited to small networks whose per-step cost is dominated by Python and kernel-launch
overhead (the trainer then runs R runs for the price of a few); for large networks a plain
loop over :func:`~dynstab.training.train` is as fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import check_int, check_positive
from dynstab.training.engine import Run, run_many
from dynstab.training.result import TrainResult, warn_outcomes
from dynstab.training.settings import TrainOptions, TrainSettings

__all__ = ["train_batched"]


def _layout(m: nn.Module) -> tuple[list[tuple[str, torch.Size]], list[tuple[str, torch.Size]]]:
    """(trainable, frozen + buffers) names and shapes of a model."""
    train_ = [(k, p.shape) for k, p in m.named_parameters() if p.requires_grad]
    fixed = [(k, p.shape) for k, p in m.named_parameters() if not p.requires_grad]
    return train_, fixed + [(k, b.shape) for k, b in m.named_buffers()]


def train_batched(
    model_factory: Callable[[int], nn.Module],
    X: Tensor,
    y: Tensor,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int],
    settings: TrainSettings | None = None,
    **options: Unpack[TrainOptions],
) -> list[TrainResult]:
    """Train the grid ``lrs × seeds`` of small networks at once, equal to :func:`train` run by run.

    Run ``r = i·len(seeds) + j`` (η-major order) is the sequential run
    ``train(model_factory(seeds[j]), X, y, lr=lrs[i], seed=seeds[j], ...)`` with the same
    settings: same initial parameters, same batches, same update
    θ_{t+1} = θ_t − η_t·clip(∇L_{I_t}(θ_t)) under ½-MSE by default, same stopping rules and
    history records (``loss`` and ``lr``). Monitors are not supported here: evaluate the
    returned ``params`` afterwards, use :func:`~dynstab.training.train_runs` (monitors per run)
    or :func:`train` where per-step curvature is needed.

    Cost per step: one vectorised forward+backward over the active runs (B samples each, n for
    GD) plus, for SGD, a vectorised full-loss evaluation every ``eval_every`` steps. Memory is
    R times that of one run.

    Args:
        model_factory: ``model_factory(seed) -> nn.Module``, deterministic in ``seed`` and
            building the same architecture every time (no BatchNorm in train mode / Dropout).
        X: Inputs ``(n, ...)``.
        y: Targets ``(n, ...)``.
        lrs: Target learning rates, each > 0.
        seeds: Seeds (ints >= 0) of the initialisation and of the batch sampler.
        settings: The training settings (:class:`~dynstab.training.TrainSettings`), shared by
            all runs; the keyword options override its fields.
        **options: Fields of :class:`~dynstab.training.TrainSettings` as keywords, as in
            :func:`train` (``steps`` required unless ``settings`` gives it; ``loss_fn`` must be
            ``vmap``-compatible; ``gradient="autograd"`` is ``torch.func.vmap`` over the runs,
            ``"closed_form"``/``"auto"`` as in :func:`~dynstab.training.train_runs`; ``clip``
            acts per run).

    Returns:
        ``len(lrs)·len(seeds)`` :class:`TrainResult` objects in η-major order, each with its
        ``lr``, ``seed`` and final ``params`` (detached, keyed like ``named_parameters()``).

    Raises:
        ValueError: On empty ``lrs``/``seeds``, a bad value, or architectures that differ
            between seeds (plus the errors of :func:`train`).
        TypeError: If ``model_factory`` does not return an ``nn.Module``.

    Example:
        >>> X, y = torch.ones(4, 1, dtype=torch.float64), 2 * torch.ones(4, 1, dtype=torch.float64)
        >>> def factory(seed):
        ...     return torch.nn.Linear(1, 1, bias=False).double().requires_grad_(True)
        >>> runs = train_batched(factory, X, y, lrs=[0.5, 1.0], seeds=[0], steps=50, stop_loss=None)
        >>> [round(float(r.params["weight"]), 6) for r in runs]  # both reach w = 2
        [2.0, 2.0]
    """
    s = TrainSettings.resolve(settings, options, "train_batched")
    lrs = [check_positive("lrs entry", lr) for lr in lrs]
    seeds = [check_int("seeds entry", sd, minimum=0) for sd in seeds]
    if not lrs or not seeds:
        raise ValueError(
            f"lrs and seeds must be non-empty; got {len(lrs)} lrs and {len(seeds)} seeds."
        )
    models = []
    for seed in seeds:
        m = model_factory(seed)
        if not isinstance(m, nn.Module):
            raise TypeError(
                f"model_factory(seed) must return an nn.Module; got {type(m).__name__}."
            )
        models.append(m.to(s.dtype) if s.dtype is not None else m)
    ref = _layout(models[0])
    for i, m in enumerate(models[1:], start=1):
        got = _layout(m)
        if got != ref:
            raise ValueError(
                "model_factory must build the same architecture for every seed; model "
                f"{i} has (trainable, frozen+buffers) {got} but model 0 has {ref}."
            )
    states = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
    runs = [Run(lr=lr, seed=seed, params=states[j]) for lr in lrs for j, seed in enumerate(seeds)]
    # the models are in s.dtype already
    results = run_many(
        models[0],
        X,
        y,
        runs,
        replace(s, dtype=None),
        monitors=(),
        desc=f"train_batched[{len(runs)}]",
    )
    warn_outcomes(results, s.stop.stop_loss, stacklevel=2)
    return results
