"""Many small GD/SGD runs at once: an η × seed grid vectorised with ``torch.func.vmap``.

:func:`train_batched` trains R = len(lrs)·len(seeds) copies of a small network side by side.
Parameters of all runs are stacked along a leading run axis; per step, one ``vmap``-ed forward
pass and one backward pass of the summed losses give every run's gradient. Each run replays
exactly what :func:`dynstab.training.train` does with the same arguments: the initial model is
``model_factory(seed)``, the batch indices come from a sampler seeded with ``seed`` (runs that
share a seed share the index stream, as their sequential counterparts would), and the same
stopping rules (divergence, convergence with the A7 bookkeeping) are applied per run. A
stopped run is frozen and dropped from the vectorised computation; its record matches the
sequential run to float round-off (vectorised kernels may sum in a different order).

Suited to small networks whose per-step cost is dominated by Python and kernel-launch
overhead (the trainer then runs R runs for the price of a few); for large networks a plain
loop over :func:`~dynstab.training.train` is as fast.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from dynstab._checks import check_int, check_positive
from dynstab._types import LossFn, Params
from dynstab.losses import half_mse
from dynstab.training.samplers import BatchSampler, make_generator
from dynstab.training.trainer import (
    TrainResult,
    _multiplier,
    _prepare_data,
    _progress_bar,
    _RunTracker,
    _validate,
    _warn_divergence,
    _warn_not_converged,
)

__all__ = ["train_batched"]


def _stack_models(models: Sequence[nn.Module]) -> tuple[Params, dict[str, Tensor]]:
    """Stack trainable parameters, and frozen parameters plus buffers, along a new dim 0."""

    def layout(m: nn.Module) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        train_ = [(k, p.shape) for k, p in m.named_parameters() if p.requires_grad]
        fixed = [(k, p.shape) for k, p in m.named_parameters() if not p.requires_grad]
        return train_, fixed + [(k, b.shape) for k, b in m.named_buffers()]

    ref = layout(models[0])
    for i, m in enumerate(models[1:], start=1):
        got = layout(m)
        if got != ref:
            raise ValueError(
                "model_factory must build the same architecture for every seed; model "
                f"{i} has (trainable, frozen+buffers) {got} but model 0 has {ref}."
            )
    tensors = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
    params = {k: torch.stack([t[k].detach() for t in tensors]) for k, _ in ref[0]}
    others = {k: torch.stack([t[k].detach() for t in tensors]) for k, _ in ref[1]}
    return params, others


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
        min_full_lr_fraction: See :func:`train` (spec A7).
        divergence_threshold: A loss above this counts as divergence.
        eval_every: See :func:`train`.
        progress: Show a tqdm progress bar on stderr.

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
    cfg = _validate(
        X, y, lrs[0], steps, batch_size, sampling, schedule, clip, stop_loss, min_full_lr_fraction,
        divergence_threshold, eval_every, dtype
    )  # fmt: skip
    models = []
    for s in seeds:
        m = model_factory(s)
        if not isinstance(m, nn.Module):
            raise TypeError(
                f"model_factory(seed) must return an nn.Module; got {type(m).__name__}."
            )
        if dtype is not None:
            m = m.to(dtype)
        models.append(m)
    stacked, buffers_s = _stack_models(models)
    if not stacked:
        raise ValueError(
            "model_factory's models must have at least one trainable (requires_grad=True) "
            "parameter; got none."
        )
    p0 = next(iter(stacked.values()))
    X, y = _prepare_data(X, y, p0.dtype, p0.device)
    base = copy.deepcopy(models[0]).to("meta")
    del models

    S, R = len(seeds), len(lrs) * len(seeds)
    run_lr = [lrs[r // S] for r in range(R)]
    run_seed = torch.tensor([r % S for r in range(R)])  # CPU, like the sampled indices
    W: Params = {k: v[run_seed].clone() for k, v in stacked.items()}
    Bufs = {k: v[run_seed].clone() for k, v in buffers_s.items()}
    trackers = [_RunTracker(cfg, run_lr[r], seeds[r % S]) for r in range(R)]
    samplers = (
        None
        if cfg.full_batch
        else [
            BatchSampler(
                cfg.n, int(cfg.batch_size or cfg.n), cfg.sampling, generator=make_generator(None, s)
            )
            for s in seeds
        ]
    )

    def loss_one(p: Params, b: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(functional_call(base, (p, b), (xb,)), yb)

    loss_full = vmap(loss_one, in_dims=(0, 0, None, None))
    loss_batch = vmap(loss_one, in_dims=(0, 0, 0, 0))

    def grads_and_values(
        fwd: Callable[..., Tensor], P: Params, b: dict[str, Tensor], xb: Tensor, yb: Tensor
    ) -> tuple[Params, Tensor]:
        # Runs are independent, so the gradient of Σ_r L_r with respect to run r's parameters
        # is ∇L_r: a vmapped forward plus one ordinary backward pass (cheaper than vmap(grad)).
        leaves = {k: v.detach().requires_grad_(True) for k, v in P.items()}
        with torch.enable_grad():
            losses = fwd(leaves, b, xb, yb)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()), materialize_grads=True)
        return dict(zip(leaves, grads, strict=True)), losses.detach()

    act = list(range(R))  # runs still training, in the order of the working tensors
    Wa, Ba = dict(W), dict(Bufs)

    def retire(stop_pos: list[int]) -> None:
        """Write stopped runs back into W and drop them from the working set."""
        nonlocal act, Wa, Ba
        if not stop_pos:
            return
        rows = torch.tensor([act[i] for i in stop_pos], device=p0.device)
        pos = torch.tensor(stop_pos, device=p0.device)
        for k in W:
            W[k][rows] = Wa[k][pos]
        keep = [i for i in range(len(act)) if i not in set(stop_pos)]
        kp = torch.tensor(keep, dtype=torch.long, device=p0.device)
        act = [act[i] for i in keep]
        Wa = {k: v[kp] for k, v in Wa.items()}
        Ba = {k: v[kp] for k, v in Ba.items()}

    bar = _progress_bar(cfg.steps, progress, f"train_batched[{R}]")
    try:
        for t in range(cfg.steps):
            if not act:
                break
            mult = _multiplier(cfg.schedule, t)
            etas = [run_lr[r] * mult for r in act]
            stopping: list[int] = []
            if samplers is None:
                grads, vals = grads_and_values(loss_full, Wa, Ba, X, y)
                record = t % cfg.eval_every == 0
                for i, v in enumerate(vals.tolist()):
                    if trackers[act[i]].observe_full(t, v, etas[i], record=record):
                        stopping.append(i)
            else:
                idx_s = torch.stack([s.next() for s in samplers])
                if t % cfg.eval_every == 0:
                    with torch.no_grad():
                        fl = loss_full(Wa, Ba, X, y).tolist()
                    for i, v in enumerate(fl):
                        if trackers[act[i]].observe_full(t, v, etas[i], record=True):
                            stopping.append(i)
                idx = idx_s[run_seed[act]]
                grads, vals = grads_and_values(loss_batch, Wa, Ba, X[idx], y[idx])
                done = set(stopping)
                for i, v in enumerate(vals.tolist()):
                    if i not in done and trackers[act[i]].observe_batch(t, v, etas[i]):
                        stopping.append(i)
            A = len(act)
            eta_t = torch.tensor(etas, dtype=torch.float64, device=p0.device).to(p0.dtype)
            clipped = [False] * A
            if cfg.clip is not None:
                sq = torch.zeros(A, dtype=p0.dtype, device=p0.device)
                for g in grads.values():
                    sq = sq + (g * g).reshape(A, -1).sum(1)
                norm = torch.sqrt(sq)
                is_clipped = norm > cfg.clip
                scale = torch.where(is_clipped, cfg.clip / norm, torch.ones_like(norm))
                clipped = is_clipped.tolist()
                grads = {
                    k: torch.where(
                        is_clipped.view(-1, *([1] * (g.ndim - 1))),
                        g * scale.view(-1, *([1] * (g.ndim - 1))),
                        g,
                    )
                    for k, g in grads.items()
                }
            keep_mask = torch.ones(A, dtype=torch.bool, device=p0.device)
            if stopping:
                keep_mask[stopping] = False
            for k, g in grads.items():
                shape = (-1, *([1] * (g.ndim - 1)))
                Wa[k] = torch.where(keep_mask.view(shape), Wa[k] - eta_t.view(shape) * g, Wa[k])
            done = set(stopping)
            for i in range(A):
                if i not in done:
                    trackers[act[i]].count_update(mult, bool(clipped[i]))
            retire(sorted(done))
            bar.update(1)
        if act:
            eta_end = [run_lr[r] * _multiplier(cfg.schedule, cfg.steps) for r in act]
            with torch.no_grad():
                fl = loss_full(Wa, Ba, X, y).tolist()
            for i, v in enumerate(fl):
                trackers[act[i]].finish_max_steps(cfg.steps, v, eta_end[i])
            retire(list(range(len(act))))
    finally:
        bar.close()
    results = [trackers[r].result(params={k: W[k][r].clone() for k in W}) for r in range(R)]
    _warn_divergence(results)
    _warn_not_converged(results, cfg.stop_loss)
    return results
