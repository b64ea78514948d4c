"""The training engine: one GD/SGD loop for one run, many runs, autograd or closed forms.

Every trainer of :mod:`dynstab.training` is this loop: :func:`~dynstab.training.train` (one
run of a live module), :func:`~dynstab.training.train_batched` (an η × seed grid) and
:func:`train_runs` (any list of :class:`Run` s: own learning rate, sampler seed, initial
parameters and schedule per run). R runs of one architecture share the loop: their parameters
are stacked along a leading run dimension and a :class:`~dynstab.training.steppers.Stepper`
returns all R gradients at once. The update of run r at step t is

    θ_{t+1} = θ_t − η_t · clip(∇L_{I_t}(θ_t)),   η_t = lr_r · schedule_r(t),

with L_I the batch-mean loss on the batch I_t drawn by :class:`dynstab.sampling.Sampling`
(full-batch GD: I_t = {1..n}) and the stopping rules of
:class:`~dynstab.training.result.StoppingRule`. With momentum β (heavy ball) the step is that of
``torch.optim.SGD(lr, momentum=β, dampening=0, nesterov=...)``: with g_t = clip(∇L_{I_t}(θ_t))
and b_{-1} = 0,

    b_t = β·b_{t−1} + g_t,   θ_{t+1} = θ_t − η_t·d_t,   d_t = b_t (heavy ball) or g_t + β·b_t
    (Nesterov),

the buffer b held per run beside the parameters (saved, replayed and compacted with them).

How it stays fast without changing what is computed:

* **chunks** — steps run in chunks between evaluation points (full-loss checks, monitor calls)
  with the batch indices drawn ahead for the chunk (:func:`draw_batches`, the same index stream
  as drawing them one at a time), the batches gathered once and the learning rates tabulated:
  no per-step Python bookkeeping and no per-step host synchronisation. The per-step batch losses
  (SGD divergence checks; GD convergence checks) are read once per chunk. A run that stopped
  inside a chunk is replayed from the chunk's start up to its stopping step, so every run stops
  at exactly the step the per-step rule names, with the parameters of that step;
* **compaction** — a stopped run is dropped from the stacked tensors, so the remaining runs
  cost what they alone cost;
* **sampler sharing** — runs that share a seed share one index stream (drawn once).

Each run's index stream is that of ``Sampling(n, B, sampling).sampler(generator)`` with the
run's own generator, whatever runs it is batched with, so a run trained in a grid equals the
same run trained alone (to round-off of the vectorised kernels).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Unpack

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dynstab._checks import check_int, check_positive
from dynstab._types import LossFn, Params
from dynstab.losses import half_mse
from dynstab.sampling import BatchSampler
from dynstab.training.monitors import Monitor
from dynstab.training.result import (
    FULL_LR_RTOL,
    RunLabel,
    RunTracker,
    StoppingRule,
    TrainResult,
    warn_outcomes,
)
from dynstab.training.samplers import draw_batches, make_generator
from dynstab.training.schedules import Constant
from dynstab.training.settings import EngineConfig, TrainOptions, TrainSettings
from dynstab.training.steppers import Batch, Stepper, make_stepper

__all__ = ["Engine", "EngineConfig", "Run", "RunSetup", "train_runs"]

#: Most elements of pre-gathered batch inputs held per chunk (float64: 32 MB).
_MAX_CHUNK_ELEMENTS = 1 << 22
#: Longest chunk of full-batch GD steps (a converging run replays at most this many steps).
_MAX_GD_CHUNK = 64
#: Longest chunk of SGD steps between host synchronisations.
_MAX_SGD_CHUNK = 1024

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Run:
    """One run of :func:`train_runs`.

    Attributes:
        lr: Target learning rate η > 0.
        seed: Seed (int >= 0) of the run's batch sampler (SGD); runs with equal seeds see the
            same batches. None draws from torch's default generator.
        params: Initial values of the trainable parameters (and optionally of frozen
            parameters and buffers), keyed like ``named_parameters()``; None starts from the
            template model's values.
        schedule: Learning-rate multiplier schedule ``schedule(t) -> m_t``; None = constant.
        data: The run's own training set ``(X_r, y_r)``, shaped like the ``X``, ``y`` given to
            :func:`train_runs` (e.g. one data seed per run); None trains on those. Runs that
            pass the same tensors share them.
        monitors: Monitors of this run only (e.g. a test error on the run's own test set),
            called after the ``monitors`` given to :func:`train_runs`.

    Example:
        >>> Run(lr=0.1, seed=3).schedule is None
        True
    """

    lr: float
    seed: int | None = None
    params: Mapping[str, Tensor] | None = None
    schedule: Schedule | None = None
    data: tuple[Tensor, Tensor] | None = None
    monitors: Sequence[Monitor] = ()


@dataclass(frozen=True)
class RunSetup:
    """A run as the engine sees it: learning rate, schedule, random source, recorded seed.

    ``data`` indexes its training set: 0 is the engine's ``(X, y)``, j + 1 its ``datasets[j]``.
    """

    lr: float
    schedule: Schedule
    generator: torch.Generator | None
    seed: int | None
    data: int = 0


def _multiplier(schedule: Schedule, t: int) -> float:
    m = float(schedule(t))
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"schedule(t) must be a finite multiplier >= 0; got {m!r} at t={t}.")
    return m


def _multipliers(schedule: Schedule, t0: int, count: int) -> list[float]:
    if isinstance(schedule, Constant):
        return [1.0] * count
    return [_multiplier(schedule, t) for t in range(t0, t0 + count)]


def _schedule_key(schedule: Schedule) -> object:
    """Equal schedules (e.g. two ``Constant()``) share one table; unhashable ones go by id."""
    try:
        hash(schedule)
    except TypeError:
        return id(schedule)
    return schedule


class _Multipliers:
    """A chunk's schedule multipliers as a list, a float64 tensor and a count of full rates."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.tensor = torch.tensor(values, dtype=torch.float64)
        self.num_full = sum(m >= 1.0 - FULL_LR_RTOL for m in values)


class _ActiveIndex:
    """Per-chunk lookups of the active runs: their rates, schedules and sampler groups."""

    def __init__(
        self,
        active: Sequence[int],
        schedule_of: Sequence[int],
        group_of: Sequence[int],
        setups: Sequence[RunSetup],
    ) -> None:
        self.data_ids = [setups[r].data for r in active]
        self.data_pos = torch.tensor(self.data_ids, dtype=torch.long)
        self.lrs = [setups[r].lr for r in active]
        self.lr_vec = torch.tensor(self.lrs, dtype=torch.float64)
        self.schedules = sorted({schedule_of[r] for r in active})
        pos = {j: i for i, j in enumerate(self.schedules)}
        self.schedule_pos_list = [pos[schedule_of[r]] for r in active]
        self.schedule_pos = torch.tensor(self.schedule_pos_list, dtype=torch.long)
        self.groups = sorted({group_of[r] for r in active})
        gpos = {g: i for i, g in enumerate(self.groups)}
        self.group_pos = torch.tensor([gpos[group_of[r]] for r in active], dtype=torch.long)


def _slice(params: Params, start: int, stop: int) -> Params:
    """Rows ``start:stop`` of stacked tensors (views: updates reach the stack)."""
    return {k: v[start:stop] for k, v in params.items()}


def _rows(params: Params, rows: Tensor) -> Params:
    return {k: v.index_select(0, rows) for k, v in params.items()}


class Engine:
    """One training call: R stacked runs trained to their stopping rule (module docstring).

    Args:
        stepper: Gradients and losses of the stacked runs.
        params: Initial trainable parameters ``(R, *shape)`` (updated in place while training,
            unless runs on several datasets must be reordered).
        fixed: Frozen parameters and buffers ``(R, *shape)`` (may be empty).
        X: Training inputs ``(n, *in)`` on the parameters' device and dtype.
        y: Training targets ``(n, *out)``.
        setups: One :class:`RunSetup` per run.
        cfg: Shared settings.
        loss_fn: The loss (passed to monitors in their context).
        monitors: Per run, the monitors to call (each run needs its own instances).
        module_for: ``module_for(P, F, i)`` returns an ``nn.Module`` holding row ``i`` of the
            active stacked tensors (for monitors); None runs no monitors.
        datasets: Further training sets ``(X_j, y_j)`` shaped like ``(X, y)``, for runs with
            ``RunSetup.data = j + 1`` (index 0 is ``(X, y)``).
    """

    def __init__(
        self,
        stepper: Stepper,
        params: Params,
        fixed: Params,
        X: Tensor,
        y: Tensor,
        setups: Sequence[RunSetup],
        cfg: EngineConfig,
        *,
        loss_fn: LossFn = half_mse,
        monitors: Sequence[Sequence[Monitor]] | None = None,
        module_for: Callable[[Params, Params, int], nn.Module] | None = None,
        datasets: Sequence[tuple[Tensor, Tensor]] = (),
    ) -> None:
        self.stepper, self.cfg, self.setups = stepper, cfg, setups
        self.X, self.y, self.loss_fn = X, y, loss_fn
        self.datasets = [(X, y), *datasets]
        # Runs on several training sets: all of them stacked, (D, n, ...), gathered per run.
        self.Xs = torch.stack([d[0] for d in self.datasets]) if datasets else None
        self.ys = torch.stack([d[1] for d in self.datasets]) if datasets else None
        self.P, self.F = params, fixed
        self.final: Params = {k: torch.empty_like(v) for k, v in params.items()}
        # The stack holds the runs ordered by dataset (stable): a data group is one slice.
        self.active = sorted(range(len(setups)), key=lambda r: setups[r].data)
        if self.active != list(range(len(setups))):
            order = torch.tensor(self.active, device=next(iter(params.values())).device)
            self.P, self.F = _rows(params, order), _rows(fixed, order)
        # Momentum buffers b (zero before the first step), rows aligned with P; {} without.
        self.M: Params = (
            {k: torch.zeros_like(v) for k, v in self.P.items()} if cfg.momentum > 0 else {}
        )
        self.monitors = monitors if monitors is not None else [[] for _ in setups]
        self.module_for = module_for
        self.last_monitored: list[dict[int, int]] = [{} for _ in setups]
        label = cfg.label_batch_size, cfg.label_sampling
        self.trackers = [
            RunTracker(cfg.rule, RunLabel(s.lr, s.seed, *label, cfg.momentum, cfg.nesterov))
            for s in setups
        ]
        self.device = next(iter(params.values())).device
        self.dtype = next(iter(params.values())).dtype
        # Runs that share a generator share one index stream (drawn once per chunk); runs with
        # equal schedules share one table of multipliers.
        self.samplers: list[BatchSampler] = []
        self.group_of: list[int] = []
        self.schedules: list[Schedule] = []
        self.schedule_of: list[int] = []
        keys: dict[int, int] = {}
        sched_keys: dict[object, int] = {}
        for s in setups:
            key = id(s.generator) if s.generator is not None else 0
            if key not in keys:
                keys[key] = len(self.samplers)
                self.samplers.append(cfg.sampling.sampler(s.generator))
            self.group_of.append(keys[key])
            skey = _schedule_key(s.schedule)
            if skey not in sched_keys:
                sched_keys[skey] = len(self.schedules)
                self.schedules.append(s.schedule)
            self.schedule_of.append(sched_keys[skey])
        self._index_cache: _ActiveIndex | None = None

    def _index(self) -> _ActiveIndex:
        """Lookup tables of the active runs (rebuilt after a compaction)."""
        if self._index_cache is None:
            self._index_cache = _ActiveIndex(
                self.active, self.schedule_of, self.group_of, self.setups
            )
        return self._index_cache

    def _groups(self, positions: Sequence[int]) -> list[tuple[int, int, int]] | None:
        """Full-batch data groups of the active runs at ``positions`` (in that order).

        None when every run trains on ``(X, y)``; else ``(dataset, start, stop)`` per run of
        equal datasets: rows ``start:stop`` of a stack of those runs share dataset ``dataset``
        (the engine keeps runs ordered by dataset, so a group is one slice of the stack).
        """
        if self.Xs is None:
            return None
        ids = self._index().data_ids
        groups: list[tuple[int, int, int]] = []
        for row, i in enumerate(positions):
            if groups and groups[-1][0] == ids[i]:
                groups[-1] = (ids[i], groups[-1][1], row + 1)
            else:
                groups.append((ids[i], row, row + 1))
        return groups

    def _losses(self) -> list[float]:
        """Full training loss L(θ_t) of every active run (per data group when there are several)."""
        groups = self._groups(range(len(self.active)))
        if groups is None:
            return self.stepper.losses(self.P, self.F).tolist()
        out: list[float] = []
        for j, a, b in groups:
            Xj, yj = self.datasets[j]
            data = Xj.expand(b - a, *Xj.shape), yj.expand(b - a, *yj.shape)
            out += self.stepper.losses(_slice(self.P, a, b), _slice(self.F, a, b), data).tolist()
        return out

    # ------------------------------------------------------------------ bookkeeping

    def _context(self, r: int, t: int, eta: float, loss: float | None) -> dict[str, object]:
        cfg = self.cfg
        X, y = self.datasets[self.setups[r].data]
        return {
            "X": X,
            "y": y,
            "loss_fn": self.loss_fn,
            "n": cfg.sampling.n,
            "batch_size": cfg.sampling.B,
            "sampling": cfg.sampling.scheme,
            "target_lr": self.setups[r].lr,
            "history": self.trackers[r].history,
            "step": t,
            "lr": eta,
            "loss": loss,
            "momentum": cfg.momentum,
            "nesterov": cfg.nesterov,
        }

    def _run_monitors(self, i: int, t: int, loss: float | None, *, final: bool) -> None:
        """Call run ``active[i]``'s due monitors at step ``t`` (θ_t before update t)."""
        r = self.active[i]
        due = [
            (j, m)
            for j, m in enumerate(self.monitors[r])
            if self.last_monitored[r].get(j) != t and (final or t % m.every == 0)
        ]
        if not due or self.module_for is None:
            return
        model = self.module_for(self.P, self.F, i)
        eta = self.setups[r].lr * _multiplier(self.setups[r].schedule, t)
        ctx = self._context(r, t, eta, loss)
        for j, m in due:
            self.trackers[r].history.update(t, m(t, model, ctx))
            self.last_monitored[r][j] = t

    def _retire(self, positions: Sequence[int]) -> None:
        """Run final monitors of the stopped runs at ``positions``, store them, compact."""
        if not positions:
            return
        for i in positions:
            tr = self.trackers[self.active[i]]
            if tr.reason != "diverged":
                self._run_monitors(i, tr.stop_step, tr.final_loss, final=True)
        rows = torch.tensor([self.active[i] for i in positions], device=self.device)
        pos = torch.tensor(list(positions), device=self.device)
        for k, v in self.P.items():
            self.final[k].index_copy_(0, rows, v.index_select(0, pos))
        gone = set(positions)
        keep = [i for i in range(len(self.active)) if i not in gone]
        kp = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.active = [self.active[i] for i in keep]
        self.P, self.F, self.M = _rows(self.P, kp), _rows(self.F, kp), _rows(self.M, kp)
        self._index_cache = None

    # ------------------------------------------------------------------ steps

    def _step(
        self,
        P: Params,
        F: Params,
        M: Params,
        batch: Batch | None,
        etas: Mapping[int, Tensor],
        groups: Sequence[tuple[int, int, int]] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """One update of the stacked runs ``P`` in place; return batch losses and clip flags.

        A full-batch step (``batch`` None) of runs on several datasets is one stepper call per
        data ``groups`` (slices of the stack): the runs of a group share their inputs, which
        the closed forms multiply as one matrix.
        """
        if batch is not None or groups is None:
            return self._update(P, F, M, batch, etas)
        losses, flags = [], []
        for j, a, b in groups:
            Xj, yj = self.datasets[j]
            data = Xj.expand(b - a, *Xj.shape), yj.expand(b - a, *yj.shape)
            sub_etas = {nd: e[a:b] for nd, e in etas.items()}
            loss, clipped = self._update(
                _slice(P, a, b), _slice(F, a, b), _slice(M, a, b), data, sub_etas
            )
            losses.append(loss)
            if clipped is not None:
                flags.append(clipped)
        return torch.cat(losses), (torch.cat(flags) if flags else None)

    def _update(
        self, P: Params, F: Params, M: Params, batch: Batch | None, etas: Mapping[int, Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Gradient step of the stacked runs ``P`` (in place) on ``batch`` (None: X, y).

        With momentum the buffers ``M`` (rows of ``P``) are updated in place first, in the
        order of ``torch.optim.SGD`` (module docstring).
        """
        grads, losses = self.stepper.gradients(P, F, batch)
        clip, clipped = self.cfg.clip, None
        if clip is not None:
            A = losses.shape[0]
            sq: Tensor | None = None
            for g in grads.values():
                part = (g * g).reshape(A, -1).sum(1)
                sq = part if sq is None else sq + part
            assert sq is not None  # at least one trainable parameter
            norm = torch.sqrt(sq)
            clipped = norm > clip
            factor = clip / norm
            grads = {
                k: torch.where(
                    clipped.view(-1, *([1] * (g.ndim - 1))),
                    g * factor.view(-1, *([1] * (g.ndim - 1))),
                    g,
                )
                for k, g in grads.items()
            }
        beta = self.cfg.momentum
        for k, g in grads.items():
            d = g
            if M:
                buf = M[k].mul_(beta).add_(g)
                d = g.add(buf, alpha=beta) if self.cfg.nesterov else buf
            P[k].addcmul_(etas[g.ndim], d, value=-1.0)
        return losses, clipped

    def _chunk_length(self, t: int) -> int:
        cfg = self.cfg
        K = cfg.steps - t
        if cfg.full_batch:
            K = min(K, _MAX_GD_CHUNK)
        else:
            K = min(K, cfg.eval_every - t % cfg.eval_every, _MAX_SGD_CHUNK)
            row = max(1, self.X[0].numel()) * cfg.sampling.B * len(self.active)
            K = min(K, max(1, _MAX_CHUNK_ELEMENTS // row))
        for r in self.active:
            for m in self.monitors[r]:
                K = min(K, m.every - t % m.every)
        return max(1, K)

    def _run_chunk(self, t: int, observed_t: bool) -> int:
        """Steps t .. t+K−1 of the active runs, then their stopping checks; return K."""
        cfg = self.cfg
        K, A = self._chunk_length(t), len(self.active)
        ix = self._index()
        tables = [_Multipliers(_multipliers(self.schedules[j], t, K)) for j in ix.schedules]
        mult_mat = torch.stack([m.tensor for m in tables], dim=1).index_select(1, ix.schedule_pos)
        eta_tab = (mult_mat * ix.lr_vec).to(device=self.device, dtype=self.dtype)  # (K, A)
        ndims = {v.ndim for v in self.P.values()}
        etas = [{nd: e.view(A, *([1] * (nd - 1))) for nd in ndims} for e in eta_tab.unbind(0)]
        batches: Sequence[Batch | None]
        groups = self._groups(range(A)) if cfg.full_batch else None
        if cfg.full_batch:
            batches = [None] * K
        else:
            draws = torch.stack([draw_batches(self.samplers[g], K) for g in ix.groups])
            idx = draws.index_select(0, ix.group_pos).transpose(0, 1)  # (K, A, B)
            idx = idx.to(self.X.device)
            if self.Xs is None or self.ys is None:
                xs, ys = self.X[idx].unbind(0), self.y[idx].unbind(0)
                batches = list(zip(xs, ys, strict=True))
            else:  # run a's batch from its own training set
                which = ix.data_pos.to(self.X.device).view(1, A, 1)
                xs, ys = self.Xs[which, idx].unbind(0), self.ys[which, idx].unbind(0)
                batches = list(zip(xs, ys, strict=True))
        mults = [tables[j] for j in ix.schedule_pos_list]
        saved = {k: v.clone() for k, v in self.P.items()}
        saved_m = {k: v.clone() for k, v in self.M.items()}
        loss_list: list[Tensor] = []
        clip_list: list[Tensor] = []
        for k in range(K):
            losses, clipped = self._step(self.P, self.F, self.M, batches[k], etas[k], groups)
            loss_list.append(losses)
            if clipped is not None:
                clip_list.append(clipped)
        loss_buf = torch.stack(loss_list)
        clip_buf = (
            torch.stack(clip_list)
            if clip_list
            else torch.zeros(K, A, dtype=torch.bool, device=self.device)
        )
        stops = self._stopping_events(t, K, loss_buf, clip_buf, mults, observed_t)
        if stops:
            self._replay(saved, saved_m, stops, batches, etas)
            self._retire(sorted(stops))
        return K

    def _stopping_events(
        self,
        t: int,
        K: int,
        loss_buf: Tensor,
        clip_buf: Tensor,
        mults: Sequence[_Multipliers],
        observed_t: bool,
    ) -> dict[int, int]:
        """Feed the chunk's losses to the trackers; return {position: step in chunk} of stops.

        GD: every step's loss is the full loss L(θ_t) (convergence, divergence, records). SGD:
        the batch losses are checked for divergence; runs whose every batch loss is fine are
        booked in one call.
        """
        cfg = self.cfg
        stops: dict[int, int] = {}
        if cfg.full_batch:
            suspicious = [True] * len(self.active)
        else:
            bad = ~(loss_buf <= cfg.rule.divergence_threshold)  # NaN counts as bad
            suspicious = bad.any(0).tolist()
        clipped_counts = clip_buf.sum(0).tolist()
        rows: list[list[float]] | None = None
        clip_rows: list[list[bool]] | None = None
        for i, r in enumerate(self.active):
            tr, m = self.trackers[r], mults[i]
            if not suspicious[i]:
                tr.count_updates(K, m.num_full, int(clipped_counts[i]))
                continue
            if rows is None or clip_rows is None:
                rows, clip_rows = loss_buf.tolist(), clip_buf.tolist()
            lr = self.setups[r].lr
            for k in range(K):
                tk, eta = t + k, lr * m.values[k]
                if cfg.full_batch:
                    if not (k == 0 and observed_t):
                        record = tk % cfg.eval_every == 0
                        if tr.observe_full(tk, rows[k][i], eta, record=record):
                            stops[i] = k
                            break
                elif tr.observe_batch(tk, rows[k][i], eta):
                    stops[i] = k
                    break
                tr.count_update(m.values[k], bool(clip_rows[k][i]))
        return stops

    def _replay(
        self,
        saved: Params,
        saved_m: Params,
        stops: Mapping[int, int],
        batches: Sequence[Batch | None],
        etas: Sequence[Mapping[int, Tensor]],
    ) -> None:
        """Put the runs that stopped inside the chunk back at their stopping iterate.

        Run ``active[i]`` stopped before update ``stops[i]`` of the chunk: it is restored to the
        chunk's start and advanced by that many steps with the same batches and rates (the
        momentum buffers restored with them).
        """
        if len(self.active) == 1:  # in place (the live module of an AutogradStepper)
            for name, v in self.P.items():
                v.copy_(saved[name])
            for name, v in self.M.items():
                v.copy_(saved_m[name])
            groups = self._groups([0])
            for step in range(stops[0]):
                self._step(self.P, self.F, self.M, batches[step], etas[step], groups)
            return
        cur = sorted(stops)
        pos = torch.tensor(cur, device=self.device)
        P, F, M = _rows(saved, pos), _rows(self.F, pos), _rows(saved_m, pos)
        k = 0
        while cur:
            finished = [j for j, i in enumerate(cur) if stops[i] <= k]
            for j in finished:
                for name, v in P.items():
                    self.P[name][cur[j]].copy_(v[j])
            if finished:
                keep = [j for j in range(len(cur)) if j not in finished]
                kp = torch.tensor(keep, dtype=torch.long, device=self.device)
                P, F, M, cur = _rows(P, kp), _rows(F, kp), _rows(M, kp), [cur[j] for j in keep]
                if not cur:
                    return
            rows = torch.tensor(cur, device=self.device)
            batch = batches[k]
            if batch is not None:
                batch = batch[0].index_select(0, rows), batch[1].index_select(0, rows)
            sub_etas = {nd: v.index_select(0, rows) for nd, v in etas[k].items()}
            self._step(P, F, M, batch, sub_etas, self._groups(cur))
            k += 1

    # ------------------------------------------------------------------ the loop

    def _evaluate(self, t: int, record: bool) -> dict[int, float]:
        """Observe the full loss L(θ_t) of every active run; retire those that stop."""
        losses = self._losses()
        ix = self._index()
        m_t = [_multiplier(self.schedules[j], t) for j in ix.schedules]
        stop, at_t = [], {}
        for i, r in enumerate(self.active):
            eta = ix.lrs[i] * m_t[ix.schedule_pos_list[i]]
            at_t[r] = losses[i]
            if self.trackers[r].observe_full(t, losses[i], eta, record=record):
                stop.append(i)
        self._retire(stop)
        return at_t

    def run(self) -> tuple[list[RunTracker], Params]:
        """Train every run to its stopping rule; return the trackers and final parameters.

        ``final_params[name][r]`` is run r's final iterate.
        """
        for ms in self.monitors:
            for m in ms:
                m.reset()
        self._loop()
        return self.trackers, self.final

    def _loop(self) -> None:
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, disable=not cfg.progress, file=sys.stderr, desc=cfg.desc)
        try:
            t = 0
            while t < cfg.steps and self.active:
                due = any(
                    t % m.every == 0 and self.last_monitored[r].get(j) != t
                    for r in self.active
                    for j, m in enumerate(self.monitors[r])
                )
                observed = due if cfg.full_batch else t % cfg.eval_every == 0
                at_t: dict[int, float] = {}
                if observed:
                    at_t = self._evaluate(t, record=t % cfg.eval_every == 0)
                    if not self.active:
                        break
                if due:
                    for i, r in enumerate(self.active):
                        self._run_monitors(i, t, at_t.get(r), final=False)
                K = self._run_chunk(t, observed_t=observed)
                bar.update(K)
                t += K
            if self.active:
                losses = self._losses()
                for i, r in enumerate(self.active):
                    eta = self.setups[r].lr * _multiplier(self.setups[r].schedule, cfg.steps)
                    self.trackers[r].finish_max_steps(cfg.steps, losses[i], eta)
                self._retire(list(range(len(self.active))))
        finally:
            bar.close()


# ---------------------------------------------------------------------------------------------
# Shared validation of the front-ends


def check_data(X: Tensor, y: Tensor) -> int:
    """Validate the training data; return n.

    Raises:
        TypeError: If ``X`` or ``y`` is not a tensor.
        ValueError: If they do not hold the same number n >= 1 of samples.
    """
    for name, t in (("X", X), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}.")
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(
            "X and y must hold the same number n >= 1 of samples along dim 0; got shapes "
            f"{tuple(X.shape)} and {tuple(y.shape)}."
        )
    return int(X.shape[0])


def prepare_data(
    X: Tensor, y: Tensor, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Move the data to ``device``, floating tensors to ``dtype``."""
    X = X.to(device=device, dtype=dtype) if X.is_floating_point() else X.to(device)
    y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
    return X, y


def check_trainable(model: nn.Module, who: str) -> list[tuple[str, nn.Parameter]]:
    """Return the trainable named parameters; require at least one, all floating.

    Raises:
        ValueError: If there is no trainable floating-point parameter.
    """
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not named or not all(p.is_floating_point() for _, p in named):
        got = [(k, p.dtype, p.requires_grad) for k, p in model.named_parameters()]
        raise ValueError(
            f"{who} must have at least one trainable (requires_grad=True) floating-point "
            f"parameter; got {got}. Pass an nn.Module with float parameters that require grad."
        )
    return named


# ---------------------------------------------------------------------------------------------
# train_runs


def _stack_runs(
    template: nn.Module, runs: Sequence[Run], names: Sequence[str]
) -> tuple[Params, Params]:
    """Stack the runs' initial values: trainable ``names`` into P, everything else into F."""
    state = dict(template.named_parameters()) | dict(template.named_buffers())
    P: dict[str, list[Tensor]] = {k: [] for k in names}
    F: dict[str, list[Tensor]] = {k: [] for k in state if k not in P}
    for i, run in enumerate(runs):
        given = dict(run.params or {})
        unknown = sorted(set(given) - set(state))
        missing = [k for k in names if k not in given] if run.params is not None else []
        if unknown or missing:
            raise ValueError(
                f"runs[{i}].params must give every trainable parameter {list(names)} (and may "
                f"give frozen parameters and buffers); got unknown {unknown}, missing {missing}."
            )
        for k, ref in state.items():
            v = given.get(k, ref).detach()
            if v.shape != ref.shape:
                raise ValueError(
                    f"runs[{i}].params[{k!r}] must have shape {tuple(ref.shape)}; got "
                    f"{tuple(v.shape)}."
                )
            (P if k in P else F)[k].append(v.to(device=ref.device, dtype=ref.dtype))
    return (
        {k: torch.stack(v) for k, v in P.items()},
        {k: torch.stack(v) for k, v in F.items()},
    )


def _run_datasets(
    runs: Sequence[Run], X: Tensor, y: Tensor
) -> tuple[list[int], list[tuple[Tensor, Tensor]]]:
    """Index each run's training set: 0 for ``(X, y)``, j + 1 for the j-th distinct ``data``.

    Raises:
        ValueError: If a run's data are not shaped like ``X`` and ``y``.
    """
    data_of: list[int] = []
    datasets: list[tuple[Tensor, Tensor]] = []
    seen: dict[tuple[int, int], int] = {(id(X), id(y)): 0}
    for i, r in enumerate(runs):
        if r.data is None:
            data_of.append(0)
            continue
        Xr, yr = r.data
        check_data(Xr, yr)
        if Xr.shape != X.shape or yr.shape != y.shape:
            raise ValueError(
                f"runs[{i}].data must be shaped like X {tuple(X.shape)} and y {tuple(y.shape)}; "
                f"got {tuple(Xr.shape)} and {tuple(yr.shape)}."
            )
        key = (id(Xr), id(yr))
        if key not in seen:
            seen[key] = len(datasets) + 1
            datasets.append((Xr, yr))
        data_of.append(seen[key])
    return data_of, datasets


def _row_loader(template: nn.Module) -> Callable[[Params, Params, int], nn.Module]:
    """A scratch copy of ``template`` and a function loading row i of stacked tensors into it."""
    scratch = copy.deepcopy(template)
    slots = dict(scratch.named_parameters()) | dict(scratch.named_buffers())

    def load(P: Params, F: Params, i: int) -> nn.Module:
        with torch.no_grad():
            for k, v in (P | F).items():
                slots[k].copy_(v[i])
        return scratch

    return load


#: Monitors of a :func:`train_runs` call: one list copied for every run, or ``factory(i)``
#: building run i's own monitors.
MonitorsArg = Sequence[Monitor] | Callable[[int], Sequence[Monitor]]


def train_runs(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    runs: Sequence[Run],
    *,
    stop: StoppingRule | None = None,
    monitors: MonitorsArg = (),
    settings: TrainSettings | None = None,
    **options: Unpack[TrainOptions],
) -> list[TrainResult]:
    """Train many runs of one architecture at once, each with its own η, seed, start, schedule.

    Run ``i`` is ``runs[i]``: plain GD/SGD from ``runs[i].params`` (default: ``model``'s values)
    on ``runs[i].data`` (default: ``X``, ``y``)
    at learning rate ``runs[i].lr`` with multiplier schedule ``runs[i].schedule``, batches drawn
    by ``Sampling(n, batch_size, sampling).sampler(torch.Generator().manual_seed(seed))``, the
    ½-MSE by default and the stopping rule ``stop`` (:class:`StoppingRule`; module docstring of
    :mod:`dynstab.training.result`). Equal to :func:`~dynstab.training.train` run by run (same
    batches, same updates, same records), but the runs share one vectorised loop: the model's
    closed-form gradient (``gradient="closed_form"``, or ``"auto"`` when it has one, the loss is
    ``half_mse`` and nothing is frozen) or ``torch.func.vmap`` over autograd. ``model`` itself is
    not modified.

    Cost per step: one vectorised gradient of the active runs on their batches; for SGD a
    vectorised full-loss evaluation every ``eval_every`` steps. Memory: R times one run.

    Args:
        model: Template: the architecture and the default initial parameters.
        X: Inputs ``(n, ...)``.
        y: Targets ``(n, ...)``.
        runs: The runs (at least one).
        stop: Stopping rule; None uses the settings' (by default ``StoppingRule()``: stop at
            L ≤ 1e-10). Not together with the stopping keywords (``stop_loss``, ...).
        monitors: Monitors called for every run on a scratch module holding the run's
            parameters, after which each run's own ``Run.monitors``: either a list, of which
            each run gets its own deep copy, or a factory ``monitors(i) -> list`` called once
            per run i (for monitors that cannot be copied, e.g. a
            :class:`~dynstab.training.StabilityTracker` writing a CSV file or a TensorBoard
            log: give each run its own file).
        settings: The training settings (:class:`~dynstab.training.TrainSettings`); the
            keyword options override its fields.
        **options: Fields of :class:`~dynstab.training.TrainSettings` as keywords
            (:class:`~dynstab.training.TrainOptions`): ``steps`` (required unless ``settings``
            gives it), ``batch_size``, ``sampling``, ``clip``, ``loss_fn``, ``eval_every``,
            ``gradient`` (``"auto"`` here when neither it nor ``settings`` is given),
            ``dtype`` (default the model's), ``progress``, ``momentum``, ``nesterov``;
            ``schedule`` is that of the runs without their own.

    Returns:
        One :class:`TrainResult` per run, in order, each with its final ``params``.
        Emits :class:`~dynstab.errors.DivergenceWarning` / :class:`~dynstab.errors.
        ConvergenceWarning` for diverged / unconverged runs (the first one shown).

    Raises:
        ValueError: On empty ``runs``, bad values, run parameters that do not fit the model, or
            ``stop`` together with stopping keywords.
        TypeError: On non-tensor data, a non-callable schedule, an unknown keyword, or monitors
            that cannot be copied per run (pass a factory instead).

    Example:
        >>> from dynstab.models import DiagonalLinearNet
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(8, 4, generator=g, dtype=torch.float64)
        >>> net = DiagonalLinearNet(4, generator=g, dtype=torch.float64)
        >>> y = X @ torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        >>> res = train_runs(net, X, y, [Run(lr=0.02, seed=s) for s in (0, 1)], steps=20000,
        ...                  batch_size=1, stop=StoppingRule(stop_loss=1e-12))
        >>> [r.converged for r in res], res[0].steps_run != res[1].steps_run
        ([True, True], True)
    """
    if settings is None and "gradient" not in options:
        options["gradient"] = "auto"
    resolved = TrainSettings.resolve(settings, options, "train_runs")
    if stop is not None:
        given = sorted(k for k in options if k in {f.name for f in fields(StoppingRule)})
        if given:
            raise ValueError(
                f"train_runs: give the stopping rule either as stop=StoppingRule(...) or as "
                f"keywords, not both; got stop={stop!r} and {given}."
            )
        resolved = replace(resolved, stop=stop)
    results = run_many(
        model, X, y, runs, resolved, monitors=monitors, desc=f"train_runs[{len(runs)}]"
    )
    warn_outcomes(results, resolved.stop.stop_loss, stacklevel=2)
    return results


def _copy_monitors(monitors: Sequence[Monitor], where: str) -> list[Monitor]:
    """A deep copy of ``monitors`` for one run; a clear error when one cannot be copied."""
    for m in monitors:
        if not m.copyable:
            raise TypeError(
                f"{where}: monitor {m!r} cannot be copied for every run (it writes to a file or "
                "log that the copies would share). Pass a factory instead, "
                "monitors=lambda i: [...], building run i's own monitor (e.g. its own csv=/"
                "tensorboard= path), or train the runs one by one with train()."
            )
    try:
        return copy.deepcopy(list(monitors))
    except (TypeError, copy.Error, AttributeError) as exc:
        raise TypeError(
            f"{where}: the monitors could not be deep-copied for every run ({exc}). Pass a "
            "factory instead, monitors=lambda i: [...], building run i's own monitors."
        ) from exc


def _run_monitors(monitors: MonitorsArg, runs: Sequence[Run]) -> list[list[Monitor]] | None:
    """Each run's monitors (shared ones first, then ``Run.monitors``), or None without any."""
    per_run: list[list[Monitor]] = []
    for i, r in enumerate(runs):
        if callable(monitors):
            built = list(monitors(i))
            for m in built:
                if not isinstance(m, Monitor):
                    raise TypeError(
                        f"monitors({i}) must return Monitor objects; got {type(m).__name__}."
                    )
            shared = built
        else:
            shared = _copy_monitors(monitors, "monitors")
        per_run.append(shared + _copy_monitors(r.monitors, f"runs[{i}].monitors"))
    seen: dict[int, int] = {}
    for i, mons in enumerate(per_run):
        for m in mons:
            if seen.setdefault(id(m), i) != i:
                raise ValueError(
                    f"monitors({i}) returned a monitor already given to run {seen[id(m)]}; "
                    "the factory must build new monitors for every run."
                )
    return per_run if any(per_run) else None


def run_many(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    runs: Sequence[Run],
    settings: TrainSettings,
    *,
    monitors: MonitorsArg,
    desc: str,
) -> list[TrainResult]:
    """:func:`train_runs` with resolved settings and without the warnings.

    Shared with :func:`~dynstab.training.train_batched`.
    """
    n = check_data(X, y)
    runs = list(runs)
    if not runs:
        raise ValueError("runs must hold at least one Run; got none.")
    for r in runs:
        check_positive("lrs entry", r.lr)
        if r.seed is not None:
            check_int("seeds entry", r.seed, minimum=0)
        if r.schedule is not None and not callable(r.schedule):
            raise TypeError(
                f"schedule must be callable as schedule(t) -> float; got {r.schedule!r}."
            )
    cfg = settings.engine_config(n, desc=desc)
    dtype = settings.dtype
    template = copy.deepcopy(model).to(dtype) if dtype is not None else model
    names = [k for k, _ in check_trainable(template, "model")]
    P, F = _stack_runs(template, runs, names)
    p0 = next(iter(P.values()))
    data_of, datasets = _run_datasets(runs, X, y)
    X, y = prepare_data(X, y, p0.dtype, p0.device)
    datasets = [prepare_data(Xj, yj, p0.dtype, p0.device) for Xj, yj in datasets]
    stepper = make_stepper(template, X, y, settings.loss_fn, settings.gradient, live=False)
    gens: dict[int, torch.Generator] = {}
    default_schedule = settings.schedule or Constant()
    setups = []
    for r, data in zip(runs, data_of, strict=True):
        gen = None
        if r.seed is not None:
            gen = gens.setdefault(r.seed, make_generator(None, r.seed) or torch.Generator())
        setups.append(RunSetup(float(r.lr), r.schedule or default_schedule, gen, r.seed, data))
    per_run = _run_monitors(monitors, runs)
    trackers, final = Engine(
        stepper,
        P,
        F,
        X,
        y,
        setups,
        cfg,
        loss_fn=settings.loss_fn,
        monitors=per_run,
        module_for=_row_loader(template) if per_run is not None else None,
        datasets=datasets,
    ).run()
    return [
        tr.result(params={k: v[i].clone() for k, v in final.items()})
        for i, tr in enumerate(trackers)
    ]
