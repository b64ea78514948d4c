"""Run units of E1–E4: train runs with dynstab's engine, measure each solution with the library.

A unit trains a group of runs that share an architecture and an optimizer (every learning rate
and seed of a sweep: each seed its own data set, initialization and batch stream) in one call
of :func:`dynstab.training.train_runs`: the
models' closed-form gradients (:meth:`dynstab.models.DiagonalLinearNet.closed_form_grad`,
:meth:`dynstab.models.TwoLayerReLU.closed_form_grad`) batched over the runs, SGD batches drawn
by :class:`dynstab.sampling.Sampling` (B = 1 with replacement), a cubic warm-up
(:class:`dynstab.training.Warmup`) and the stopping rule :class:`dynstab.training.StoppingRule`
(converged: L ≤ ``stop_loss`` with at least ``min_full_lr_fraction`` of the updates at the
full η). Each solution is then measured by the library: Tr G, ‖G‖_F and λ_max(G) exactly from
the closed-form Gram matrix K = JJᵀ/n (:func:`dynstab.norms.diagonal_gram`,
:func:`dynstab.norms.relu_gram`, :func:`dynstab.norms.gram_spectrum`), the norms of
:mod:`dynstab.norms`, the training and test errors.

Loss convention: ℓ_i(θ) = ½ (f(x_i; θ) − y_i)², L(θ) = (1/n) Σ_i ℓ_i(θ), so the GD threshold is
2/η and the SGD trace bound (B = 1) is Tr G ≤ 2/η at an interpolating minimum (H = G there).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import nn

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional (installed with scikit-learn, extra [data])
    threadpool_limits = None

from dynstab.losses import half_mse
from dynstab.models import DiagonalLinearNet, TwoLayerReLU
from dynstab.norms import (
    balancedness,
    diagonal_gram,
    diagonal_trace_G,
    gram_spectrum,
    path_norm,
    relu_gram,
    relu_trace_G,
    weighted_l1,
)
from dynstab.training import (
    GradientNormMonitor,
    Monitor,
    NormMonitor,
    Run,
    StoppingRule,
    TestErrorMonitor,
    TrainResult,
    Warmup,
    gradient_norm,
    train_runs,
)
from dynstab_repro.base import Claim, Experiment, RunSpec
from dynstab_repro.wu_su_2023.configs import SweepConfig, TrainerConfig
from dynstab_repro.wu_su_2023.problems import STREAM_SAMPLER, Problem, stream_seed

__all__ = [
    "GD_CHECK_EVERY",
    "SGD_CHECK_EVERY",
    "PlannedRun",
    "Record",
    "Row",
    "SweepExperiment",
    "SweepRun",
    "WuSuExperiment",
    "diagonal_measures",
    "flatten_runs",
    "gd_warmup_steps",
    "relu_measures",
    "single_thread_blas",
    "solution_measures",
    "sweep_plans",
    "sweep_specs",
    "sweep_steps",
    "sweep_unit",
    "sweep_warmup",
    "train_and_measure",
]

#: The JSON-able metrics of one run or unit (values of several types, read by key).
Record = dict[str, Any]
#: One row of a report table.
Row = dict[str, float | str]
#: The configuration type of a :class:`SweepExperiment`.
SweepConfigT = TypeVar("SweepConfigT", bound=SweepConfig)

#: Steps between full-loss checks (and history records) of SGD and GD runs.
SGD_CHECK_EVERY, GD_CHECK_EVERY = 100, 10
#: A loss above this (or non-finite) is divergence.
DIVERGENCE_LOSS = 1e12

PaperModel = DiagonalLinearNet | TwoLayerReLU


# --------------------------------------------------------------------------------------
# Measures of a solution (all computed by the library)
# --------------------------------------------------------------------------------------


def _errors(model: nn.Module, problem: Problem) -> dict[str, float]:
    with torch.no_grad():
        res = model(problem.X) - problem.y
        test_res = model(problem.X_test) - problem.y_test
    test_mse = float((test_res * test_res).mean())
    return {
        "train_loss": float(0.5 * (res * res).mean()),
        "test_mse": test_mse,
        "test_mse_rel": test_mse / float((problem.y_test**2).mean()),
    }


def _spectrum(model: PaperModel, problem: Problem) -> dict[str, float]:
    """Tr G, ‖G‖_F and λ_max(G), exact from the closed-form Gram matrix K = JJᵀ/n."""
    K = (
        diagonal_gram(model, problem.X)
        if isinstance(model, DiagonalLinearNet)
        else relu_gram(model, problem.X)
    )
    return gram_spectrum(K).as_dict()


def diagonal_measures(
    model: DiagonalLinearNet, problem: Problem, *, spectrum: bool = True
) -> dict[str, float]:
    """Sharpness, norms, balancedness and errors of a diagonal net f = ⟨a⊙b, x⟩.

    Returns ``trace``, ``frobenius``, ``lambda_max`` (with ``spectrum``; otherwise only the
    closed-form ``trace`` of :func:`dynstab.norms.diagonal_trace_G`), ``l1`` = ‖β‖_1,
    ``weighted_l1`` = ‖β‖_{1,s} (s_j = mean_i x_ij²), ``l2`` = ‖β‖_2, ``balancedness``
    r(θ) = Σ(a²+b²)/(2Σ|ab|), ``train_loss`` (½-MSE), ``test_mse`` = mean (f − f*)² on the
    test set, ``test_mse_rel`` = test_mse / mean f*², ``beta_err2`` = ‖β − β*‖².
    """
    out = _spectrum(model, problem) if spectrum else {"trace": diagonal_trace_G(model, problem.X)}
    with torch.no_grad():
        beta = model.beta().detach()
    out.update(
        l1=float(beta.abs().sum()),
        weighted_l1=weighted_l1(beta, problem.X),
        l2=float(beta.norm()),
        balancedness=balancedness(model),
        beta_err2=float(((beta - problem.teacher) ** 2).sum()),
        **_errors(model, problem),
    )
    return out


def relu_measures(
    model: TwoLayerReLU, problem: Problem, *, spectrum: bool = True
) -> dict[str, float]:
    """Sharpness, path norm and errors of a two-layer ReLU net f = Σ_j a_j σ(w_jᵀx).

    Returns ``trace``, ``frobenius``, ``lambda_max`` (with ``spectrum``; otherwise only the
    closed-form ``trace`` of :func:`dynstab.norms.relu_trace_G`), ``path_norm`` = Σ_j |a_j|
    ‖w_j‖, ``train_loss``, ``test_mse``, ``test_mse_rel`` and ``grad_norm`` = ‖∇L(θ)‖.
    """
    out = _spectrum(model, problem) if spectrum else {"trace": relu_trace_G(model, problem.X)}
    out.update(
        path_norm=path_norm(model),
        grad_norm=gradient_norm(model, half_mse, problem.X, problem.y),
        **_errors(model, problem),
    )
    return out


def solution_measures(
    model: nn.Module, problem: Problem, *, spectrum: bool = True
) -> dict[str, float]:
    """:func:`diagonal_measures` or :func:`relu_measures`, by the model's type.

    Raises:
        TypeError: For another model.
    """
    if isinstance(model, DiagonalLinearNet):
        return diagonal_measures(model, problem, spectrum=spectrum)
    if isinstance(model, TwoLayerReLU):
        return relu_measures(model, problem, spectrum=spectrum)
    raise TypeError(
        f"solution_measures needs a DiagonalLinearNet or TwoLayerReLU; got {type(model).__name__}."
    )


# --------------------------------------------------------------------------------------
# Training a unit
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One run of a unit: its record key, target η, seed, data, initial network and warm-up.

    Attributes:
        key: Record key, e.g. ``"sgd_lr=0.05_seed=0"``.
        lr: Target learning rate η.
        seed: The run's seed (recorded; SGD's batch stream derives from it).
        problem: The run's data set.
        model: Initial network (its parameters are copied, never trained in place).
        warmup_steps: Cubic warm-up length T_w (0: constant η).
        init: Measures of ``model`` (:func:`solution_measures`); computed when empty.
        extra: Entries merged into the run's record (e.g. ``{"r0": 4.0}``).
    """

    key: str
    lr: float
    seed: int
    problem: Problem
    model: nn.Module
    warmup_steps: int
    init: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, float] = field(default_factory=dict)


def _history_monitors(keys: Sequence[str], problem: Problem, every: int) -> list[Monitor]:
    makers: dict[str, Callable[[], Monitor]] = {
        "test_mse": lambda: TestErrorMonitor(problem.X_test, problem.y_test, every=every),
        "grad_norm": lambda: GradientNormMonitor(every=every),
        "trace": lambda: NormMonitor(
            "trace", lambda m: _closed_form_trace(m, problem), every=every
        ),
        "path_norm": lambda: NormMonitor("path_norm", _path_norm, every=every),
    }
    unknown = sorted(set(keys) - set(makers))
    if unknown:
        raise ValueError(f"unknown history measures {unknown}; choose from {sorted(makers)}.")
    return [makers[k]() for k in keys]


def _closed_form_trace(model: nn.Module, problem: Problem) -> float:
    """Tr G in closed form (:func:`dynstab.norms.diagonal_trace_G`, :func:`~.relu_trace_G`)."""
    if isinstance(model, DiagonalLinearNet):
        return diagonal_trace_G(model, problem.X)
    if isinstance(model, TwoLayerReLU):
        return relu_trace_G(model, problem.X)
    raise TypeError(f"trace needs a DiagonalLinearNet or TwoLayerReLU; got {type(model).__name__}.")


def _path_norm(model: nn.Module) -> float:
    if not isinstance(model, TwoLayerReLU):
        raise TypeError(f"path_norm needs a TwoLayerReLU; got {type(model).__name__}.")
    return path_norm(model)


def _history(res: TrainResult, keys: Sequence[str], points: int) -> dict[str, list[float]]:
    """The monitor records of ``res`` (with loss and η at those steps), thinned to ``points``."""
    h = res.history
    steps = h.as_arrays(keys[0])[0].tolist() if keys else []
    out: dict[str, list[float]] = {"step": [float(s) for s in steps]}
    for name in ("lr", "loss", *keys):
        s_arr, v_arr = h.as_arrays(name)
        at = dict(zip(s_arr.tolist(), v_arr.tolist(), strict=True))
        out[name] = [float(at.get(s, math.nan)) for s in steps]
    return subsample_history(out, points)


def subsample_history(
    hist: Mapping[str, Sequence[float]], max_points: int = 500
) -> dict[str, list[float]]:
    """Keep at most ``max_points`` evenly spaced entries (always the first and last).

    Example:
        >>> subsample_history({"step": list(range(10))}, 4)["step"]
        [0, 3, 6, 9]
    """
    lengths = {len(v) for v in hist.values()}
    if not lengths:
        return {}
    length = min(lengths)
    if length <= max_points:
        return {k: list(v[:length]) for k, v in hist.items()}
    idx = np.unique(np.linspace(0, length - 1, max_points).round().astype(int))
    return {k: [v[i] for i in idx] for k, v in hist.items()}


def train_and_measure(
    config: TrainerConfig,
    plans: Sequence[PlannedRun],
    *,
    optimizer: str,
    steps: int,
    record_points: int | None = None,
    monitor_keys: Sequence[str] = (),
) -> dict[str, Record]:
    """Train the planned runs together and return one record per run (key → metrics).

    Each run trains on its plan's data set. SGD uses B = ``config.batch_size`` sampled with
    replacement from the stream :func:`~.problems.stream_seed` ``(plan.seed, STREAM_SAMPLER)``
    (shared by the runs of one seed) and checks the full loss every :data:`SGD_CHECK_EVERY`
    steps; GD checks it at every step and records it every :data:`GD_CHECK_EVERY` steps. With
    ``record_points`` the measures ``monitor_keys`` (``test_mse``, ``grad_norm``, ``trace``
    closed form, ``path_norm``) are recorded about that many times along training
    (``history``).

    Args:
        config: Trainer settings (batch size, warm-up power, stopping rule, clipping).
        plans: The runs (same architecture, same data shapes).
        optimizer: ``"sgd"`` or ``"gd"``.
        steps: Step budget of every run.
        record_points: About this many history points (None: no history).
        monitor_keys: Measures recorded at the history points.

    Returns:
        ``{plan.key: record}`` with ``optimizer``, ``lr``, ``seed``, ``used_warmup``, the
        :meth:`dynstab.training.TrainResult.to_dict` fields (``converged``, ``steps_run``,
        ``effective_lr``, ...), the final :func:`solution_measures` (NaN if diverged), the
        initial ones prefixed ``init_``, ``history`` if requested, and ``plan.extra``.

    Raises:
        ValueError: For an unknown optimizer or history measure.
    """
    if optimizer not in ("sgd", "gd"):
        raise ValueError(f"optimizer must be 'sgd' or 'gd'; got {optimizer!r}.")
    sgd = optimizer == "sgd"
    check = SGD_CHECK_EVERY if sgd else GD_CHECK_EVERY
    every = max(check, (steps // record_points) // check * check) if record_points else 0
    runs = [
        Run(
            lr=p.lr,
            seed=stream_seed(p.seed, STREAM_SAMPLER) if sgd else None,
            params=dict(p.model.named_parameters()),
            schedule=Warmup(p.warmup_steps, config.warmup_power) if p.warmup_steps > 0 else None,
            data=(p.problem.X, p.problem.y),
            monitors=_history_monitors(monitor_keys, p.problem, every) if record_points else (),
        )
        for p in plans
    ]
    template, first = plans[0].model, plans[0].problem
    start = time.perf_counter()
    results = train_runs(
        template,
        first.X,
        first.y,
        runs,
        steps=steps,
        batch_size=config.batch_size if sgd else None,
        sampling="with",
        clip=config.clip,
        stop=StoppingRule(
            stop_loss=config.stop_loss,
            min_full_lr_fraction=config.min_full_lr_fraction,
            require_full_lr=True,
            divergence_threshold=DIVERGENCE_LOSS,
        ),
        eval_every=check,
        gradient="closed_form",
        progress=config.progress,
    )
    seconds = time.perf_counter() - start
    out: dict[str, Record] = {}
    for plan, res in zip(plans, results, strict=True):
        problem = plan.problem
        init = dict(plan.init) or solution_measures(plan.model, problem)
        rec: Record = {"optimizer": optimizer, "lr": plan.lr, "used_warmup": plan.warmup_steps > 0}
        rec.update(res.to_dict(include_history=False))
        rec["final_loss"] = res.final_loss  # a float (NaN/inf when diverged), like the measures
        rec["seed"] = plan.seed
        rec["unit_train_seconds"] = seconds
        if res.diverged or not math.isfinite(res.final_loss) or res.params is None:
            rec.update({k: math.nan for k in init})
        else:
            final = copy.deepcopy(template)
            final.load_state_dict(res.params)
            rec.update(solution_measures(final, problem))
        rec.update({f"init_{k}": v for k, v in init.items()})
        if record_points:
            rec["history"] = _history(res, list(monitor_keys), record_points)
        rec.update(plan.extra)
        out[plan.key] = rec
    return out


# --------------------------------------------------------------------------------------
# Sweeps: units and their records
# --------------------------------------------------------------------------------------


def sweep_specs(config: SweepConfig) -> list[RunSpec]:
    """One unit per optimizer; the unit trains every value and seed of the sweep together.

    Example:
        >>> [s.key for s in sweep_specs(SweepConfig(seeds=(0, 1), optimizers=("gd", "sgd")))]
        ['gd', 'sgd']
    """
    return [RunSpec(opt, {"optimizer": opt}) for opt in config.optimizers]


def run_key(optimizer: str, field_name: str, value: float, seed: int) -> str:
    """The record key of one run of a sweep, e.g. ``"sgd_lr=0.05_seed=0"``.

    Example:
        >>> run_key("gd", "lr", 0.1, 0)
        'gd_lr=0.1_seed=0'
    """
    return f"{optimizer}_{field_name}={value:.5g}_seed={seed}"


def flatten_runs(results: Mapping[str, Record]) -> dict[str, Record]:
    """Per-run records from unit results: a unit holding ``runs`` contributes each of them.

    Example:
        >>> flatten_runs({"u": {"runs": {"a": {"lr": 1}, "b": {"lr": 2}}}, "c": {"lr": 3}})
        {'a': {'lr': 1}, 'b': {'lr': 2}, 'c': {'lr': 3}}
    """
    out: dict[str, Record] = {}
    for key, unit in results.items():
        runs = unit.get("runs")
        if isinstance(runs, Mapping):
            out.update({k: dict(v) for k, v in runs.items()})
        else:
            out[key] = dict(unit)
    return out


def gd_warmup_steps(config: SweepConfig, lr: float, lambda_max0: float) -> int:
    """GD warm-up length: ``gd_warmup_steps`` when needed or forced, else 0.

    ``config.gd_warmup_steps`` if ``gd_warmup`` is ``"always"``, or ``"auto"`` and
    η > 2/λ_max(G_0) (the initialization is GD-unstable at η); otherwise 0 (constant η).

    Example:
        >>> gd_warmup_steps(SweepConfig(), 0.1, 30.0), gd_warmup_steps(SweepConfig(), 0.01, 30.0)
        (5000, 0)
    """
    needs = lr > 2.0 / lambda_max0
    use = config.gd_warmup == "always" or (config.gd_warmup == "auto" and needs)
    return int(config.gd_warmup_steps) if use else 0


def sweep_steps(config: SweepConfig, optimizer: str) -> int:
    """The step budget of ``optimizer`` in a sweep."""
    return config.sgd_steps if optimizer == "sgd" else config.gd_steps


def sweep_warmup(config: SweepConfig, optimizer: str, lr: float, lambda_max0: float) -> int:
    """The warm-up of one run of a sweep: SGD's fixed length, GD's :func:`gd_warmup_steps`."""
    if optimizer == "sgd":
        return config.sgd_warmup_steps
    return gd_warmup_steps(config, lr, lambda_max0)


#: One run of a sweep: its key, its learning rate η, its initial model and extra record fields.
SweepRun = tuple[str, float, PaperModel, Mapping[str, float]]


def sweep_plans(
    config: SweepConfig,
    optimizer: str,
    seed: int,
    problem: Problem,
    runs: Sequence[SweepRun],
) -> list[PlannedRun]:
    """The planned runs ``(key, η, initial model, extra)`` of one seed of a sweep.

    Each run gets the warm-up of :func:`sweep_warmup`, decided on λ_max(G) of its initial
    model (measured once per model).
    """
    inits: dict[int, dict[str, float]] = {}
    plans = []
    for key, lr, model, extra in runs:
        if id(model) not in inits:
            inits[id(model)] = solution_measures(model, problem)
        init = inits[id(model)]
        warm = sweep_warmup(config, optimizer, lr, init["lambda_max"])
        plans.append(PlannedRun(key, lr, seed, problem, model, warm, init, extra))
    return plans


def sweep_unit(config: SweepConfig, optimizer: str, plans: Sequence[PlannedRun]) -> Record:
    """Train one sweep unit (the runs of one optimizer) within :func:`sweep_steps`.

    Returns:
        ``{"runs": {key: record}}``.
    """
    steps = sweep_steps(config, optimizer)
    return {"runs": train_and_measure(config, plans, optimizer=optimizer, steps=steps)}


# --------------------------------------------------------------------------------------
# Experiment plumbing
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with one BLAS/OpenMP thread (``threadpoolctl``) and one torch thread.

    The units multiply small matrices (at most 300×1000) hundreds of thousands of times; a
    multi-threaded BLAS only adds synchronisation cost there, and the runner parallelises over
    units anyway. The runner's own limit (``cores // workers`` threads) applies only to the
    ``local`` executor's worker processes, hence this guard. torch's thread count is restored
    on exit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threadpool_limits is None:  # pragma: no cover - without threadpoolctl
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        torch.set_num_threads(previous)


class WuSuExperiment(Experiment):
    """Shared plumbing of E1–E5.

    :meth:`run_one` computes a unit inside :func:`single_thread_blas`. The claims, figures and
    tables are module functions named by class attributes (assigned as plain functions and
    called through the class, so that each can be tested on hand-made records):

        analysis: Grades the claims: ``(config, records) -> list[Claim]``.
        figures: Writes the figures: ``(config, records, fig_dir) -> list[Path]`` (None: none).
        table: The tables: ``(config, records) -> [(title, rows), ...]`` (None: none).

    ``records`` are the unit results, or with ``per_run`` True the per-run records
    ``{run key: record}`` of :func:`flatten_runs` (units that train several runs).
    Subclasses implement :meth:`compute` (plus ``specs`` and the metadata).
    """

    analysis: ClassVar[Callable[[Any, dict[str, Record]], list[Claim]]]
    figures: ClassVar[Callable[[Any, dict[str, Record], Path], list[Path]] | None] = None
    table: ClassVar[Callable[[Any, dict[str, Record]], list[tuple[str, list[Row]]]] | None] = None
    per_run: ClassVar[bool] = False

    def run_one(self, config: Any, spec: RunSpec) -> Record:
        """Compute one unit with one BLAS/OpenMP/torch thread (see :func:`single_thread_blas`)."""
        with single_thread_blas():
            return self.compute(config, spec)

    @abc.abstractmethod
    def compute(self, config: Any, spec: RunSpec) -> Record:
        """Compute one unit; return JSON-able metrics."""

    def records(self, results: dict[str, Record]) -> dict[str, Record]:
        """What :attr:`analysis`, :attr:`figures` and :attr:`table` read (see ``per_run``)."""
        return flatten_runs(results) if self.per_run else results

    def analyze(self, config: Any, results: dict[str, Record]) -> list[Claim]:
        """The claims of :attr:`analysis`."""
        return type(self).analysis(config, self.records(results))

    def plot(self, config: Any, results: dict[str, Record], fig_dir: Path) -> list[Path]:
        """The figures of :attr:`figures` (none without it)."""
        draw = type(self).figures
        return [] if draw is None else draw(config, self.records(results), fig_dir)

    def tables(self, config: Any, results: dict[str, Record]) -> list[tuple[str, list[Row]]]:
        """The tables of :attr:`table` (none without it)."""
        tabulate = type(self).table
        return [] if tabulate is None else tabulate(config, self.records(results))


class SweepExperiment(WuSuExperiment, Generic[SweepConfigT]):
    """E1, E2, E4: one unit per (optimizer, seed) trains the runs of :meth:`seed_runs`.

    The claims, figures and tables read the per-run records (``per_run``; see
    :class:`WuSuExperiment`). Subclasses implement :meth:`seed_runs`.
    """

    per_run = True

    def specs(self, config: SweepConfigT) -> list[RunSpec]:
        """One unit per (optimizer, seed) (:func:`sweep_specs`)."""
        return sweep_specs(config)

    def compute(self, config: SweepConfigT, spec: RunSpec) -> Record:
        """Train the unit's runs (:meth:`seed_runs` of every seed) and measure them."""
        opt = str(spec.params["optimizer"])
        plans: list[PlannedRun] = []
        for seed in config.seeds:
            problem, runs = self.seed_runs(config, opt, seed)
            plans += sweep_plans(config, opt, seed, problem, runs)
        return sweep_unit(config, opt, plans)

    @abc.abstractmethod
    def seed_runs(
        self, config: SweepConfigT, optimizer: str, seed: int
    ) -> tuple[Problem, list[SweepRun]]:
        """The training problem of ``seed`` and its runs ``(key, η, initial model, extra)``."""
