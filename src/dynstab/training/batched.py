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

import torch
from torch import Tensor, nn

from dynstab._checks import check_int, check_positive
from dynstab._types import LossFn
from dynstab.losses import half_mse
from dynstab.training.engine import Run, _train_runs
from dynstab.training.result import StoppingRule, TrainResult, warn_outcomes

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
    steps: int,
    batch_size: int | None = None,
    sampling: str = "with",
    schedule: Callable[[int], float] | None = None,
    clip: float | None = None,
    loss_fn: LossFn = half_mse,
    dtype: torch.dtype | None = None,
    stop_loss: float | None = 1e-10,
    min_full_lr_fraction: float = 0.2,
    divergence_threshold: float = 1e10,
    eval_every: int | None = None,
    progress: bool = False,
    require_full_lr: bool = False,
    loss_threshold: float = 1e-6,
    gradient: str = "autograd",
    momentum: float = 0.0,
    nesterov: bool = False,
) -> list[TrainResult]:
    """Train the grid ``lrs × seeds`` of small networks at once, equal to :func:`train` run by run.

    Run ``r = i·len(seeds) + j`` (η-major order) is the sequential run
    ``train(model_factory(seeds[j]), X, y, lr=lrs[i], seed=seeds[j], ...)`` with the same
    remaining arguments: same initial parameters, same batches, same update
    θ_{t+1} = θ_t − η_t·clip(∇L_{I_t}(θ_t)) under ½-MSE by default, same stopping rules and
    history records (``loss`` and ``lr``). Monitors are not supported here: evaluate the
    returned ``params`` afterwards, or use :func:`train` where per-step curvature is needed.

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
        steps: Maximum number of updates per run.
        batch_size: B; None for GD (see :func:`train`).
        sampling: ``"with"``, ``"without"`` or ``"reshuffle"``.
        schedule: Multiplier schedule shared by all runs; None = constant.
        clip: Gradient-norm clipping threshold (per run), or None.
        loss_fn: Batch-mean loss; must be ``vmap``-compatible. Default ½-MSE.
        dtype: Convert models and floating data to this dtype (e.g. ``torch.float64``).
        stop_loss: Convergence tolerance on the full training loss; None never stops early.
        min_full_lr_fraction: See :func:`train`.
        divergence_threshold: A loss above this counts as divergence.
        eval_every: See :func:`train`.
        progress: Show a tqdm progress bar on stderr.
        require_full_lr: See :func:`train`.
        loss_threshold: See :func:`train`.
        gradient: ``"autograd"`` (``torch.func.vmap``; default), ``"closed_form"`` or
            ``"auto"`` (see :func:`~dynstab.training.train_runs`).
        momentum: Heavy-ball momentum β ∈ [0, 1) (see :func:`train`). Default 0.
        nesterov: Nesterov momentum (see :func:`train`). Default False.

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
    lrs = [check_positive("lrs entry", lr) for lr in lrs]
    seeds = [check_int("seeds entry", s, minimum=0) for s in seeds]
    if not lrs or not seeds:
        raise ValueError(
            f"lrs and seeds must be non-empty; got {len(lrs)} lrs and {len(seeds)} seeds."
        )
    models = []
    for s in seeds:
        m = model_factory(s)
        if not isinstance(m, nn.Module):
            raise TypeError(
                f"model_factory(seed) must return an nn.Module; got {type(m).__name__}."
            )
        models.append(m.to(dtype) if dtype is not None else m)
    ref = _layout(models[0])
    for i, m in enumerate(models[1:], start=1):
        got = _layout(m)
        if got != ref:
            raise ValueError(
                "model_factory must build the same architecture for every seed; model "
                f"{i} has (trainable, frozen+buffers) {got} but model 0 has {ref}."
            )
    states = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
    runs = [
        Run(lr=lr, seed=s, params=states[j], schedule=schedule)
        for lr in lrs
        for j, s in enumerate(seeds)
    ]
    rule = StoppingRule(
        stop_loss, min_full_lr_fraction, require_full_lr, divergence_threshold, loss_threshold
    )
    results = _train_runs(
        models[0],
        X,
        y,
        runs,
        steps=steps,
        batch_size=batch_size,
        sampling=sampling,
        clip=clip,
        loss_fn=loss_fn,
        stop=rule,
        eval_every=eval_every,
        monitors=(),
        gradient=gradient,
        dtype=None,
        progress=progress,
        desc=f"train_batched[{len(runs)}]",
        momentum=momentum,
        nesterov=nesterov,
    )
    warn_outcomes(results, stop_loss, stacklevel=2)
    return results
