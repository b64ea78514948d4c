"""Stability of your own training run: :class:`StabilityTracker`, for any training loop.

A tracker measures, every ``every`` steps on a fixed probe set, the curvature quantities a
stability verdict needs (by :class:`~dynstab.training.meter.CurvatureMeter`, the implementation
shared with :func:`~dynstab.training.train`'s monitors) and sets each beside its threshold at the
learning rate and momentum the optimizer uses at that moment (read from its ``param_groups``):

* ``lambda_max`` vs ``lambda_max_threshold`` = 2/η for GD, 2(1 + β)/η with heavy-ball momentum
  β, 2(1 + β)/((1 + 2β)η) with Nesterov (:func:`~dynstab.curvature.preconditioned.
  momentum_threshold`), minus the coupled weight decay of SGD (which adds λ_wd·I to H); the
  edge of stability of Cohen et al. (2021) is λ_max ≈ threshold;
* ``preconditioned_lambda_max`` (Adam/AdamW/RMSprop) vs ``preconditioned_threshold`` =
  (2 + 2β₁)/((1 − β₁)η), 38/η for β₁ = 0.9 (Cohen et al. 2022;
  :class:`~dynstab.curvature.Preconditioner`);
* ``trace`` (Hutchinson, with standard error) vs ``trace_threshold`` = 2C/(qη) and
  ``frobenius`` vs ``frobenius_threshold`` = 2√C/(η√q), the necessary conditions for linear
  stability of SGD with batch size B (Wu & Su 2023, Thm 3.3; q = ``Sampling(n, B).q``, C
  outputs per sample) — derived for plain SGD: with momentum they are reported at the same η
  for reference only (``trace_threshold_momentum_free`` = 1 marks it).

Every ratio ``*_margin`` = value / threshold; a margin above 1 means the step is unstable for
that test. The tracker never changes the model's parameters, mode, buffers or ``.grad`` nor the
global RNG state (measurements run in eval mode by default and restore each module's mode).

Outputs: :attr:`StabilityTracker.history` (a :class:`~dynstab.training.History`), a CSV file
rewritten atomically after each measurement (``csv=``) and TensorBoard scalars
(``tensorboard=``, optional dependency). :func:`dynstab.plotting.plot_stability` draws
sharpness vs threshold; :func:`lightning_callback` wraps a tracker for PyTorch Lightning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import Data, LossFn
from dynstab.curvature import Preconditioner, optimizer_preconditioner
from dynstab.curvature.preconditioned import momentum_threshold
from dynstab.linalg import LanczosConfig, TraceConfig
from dynstab.sampling import SAMPLING_SCHEMES, Sampling
from dynstab.training.history import History
from dynstab.training.meter import CurvatureMeter, Reading
from dynstab.training.monitors import Monitor

__all__ = ["StabilityTracker", "lightning_callback"]


class _ScalarWriter(Protocol):
    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@contextmanager
def _eval_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Put every module in eval mode for the block; restore each module's own flag after."""
    if not enabled:
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class StabilityTracker(Monitor):
    """Curvature vs stability thresholds along your own training loop (module docstring).

    Call :meth:`step` once per optimizer step (after ``optimizer.step()``): every ``every``-th
    call measures the model at its current parameters θ_t (t = number of calls so far) and
    records the row at step t; :meth:`measure` measures now. Passed to
    :func:`~dynstab.training.train` as a monitor it measures θ_t before update t with the
    trainer's η_t, momentum, batch size and sampling.

    Hyperparameters are read at each measurement: from ``optimizer`` (its largest group
    learning rate, momentum/β₁, Nesterov, dampening, weight decay; Adam/RMSprop state for the
    preconditioner) when given, else from ``lr``/``momentum``/``nesterov``. Thresholds that
    need a missing quantity are NaN (``trace_threshold`` needs ``batch_size`` and
    ``train_size``).

    Columns: those of :class:`~dynstab.training.meter.CurvatureMeter` for the requested
    measures, plus ``lr``, ``momentum``, ``probe_loss``, ``lambda_max_threshold``,
    ``lambda_max_margin``, ``preconditioned_threshold``, ``preconditioned_margin``,
    ``trace_threshold``, ``trace_margin``, ``frobenius_threshold``, ``frobenius_margin`` and
    ``trace_threshold_momentum_free`` (as requested).

    Args:
        model: The network being trained (measured in place, never modified).
        loss_fn: Batch-mean loss (e.g. :func:`dynstab.losses.half_mse`).
        probe_data: Fixed probe set: one ``(inputs, targets)`` batch or a re-iterable of
            batches (e.g. a ``DataLoader`` over a few thousand training samples).
        every: Measure every ``every`` steps, >= 1. Default 10.
        measures: Subset of ``("lambda_max", "preconditioned", "trace", "frobenius")``.
            Default ``("lambda_max",)``.
        optimizer: The ``torch.optim`` optimizer (SGD, Adam, AdamW, RMSprop) whose
            hyperparameters (and preconditioner) define the thresholds.
        lr: η when no optimizer is given (None: taken from ``train``'s context, or NaN
            thresholds).
        momentum: β when no optimizer is given. Default: 0 (or ``train``'s momentum).
        nesterov: Nesterov momentum when no optimizer is given. Default False.
        batch_size: B of the training run (for the trace and Frobenius thresholds).
        train_size: n, the number of training samples (for q); default: the probe set's size.
        sampling: ``"with"`` (default) or ``"without"`` replacement, for q.
        curvature: ``"hessian"`` (default) or ``"gauss_newton"``.
        lanczos: Lanczos budget per measurement (default ``LanczosConfig(tol=1e-3,
            max_iters=40)``).
        trace: Trace-estimator budget (default 20 Hutchinson probes).
        seed: Seed of the tracker's own generator. Default 0.
        warm_start: Warm-start Lanczos from the previous eigenvector. Default True.
        csv: Path of a CSV file rewritten atomically after every measurement.
        tensorboard: Log directory for TensorBoard scalars (tag ``dynstab/<column>``);
            needs the ``tensorboard`` package.
        eval_mode: Measure with every module in eval mode (Dropout off, BatchNorm running
            statistics), restoring each module's mode afterwards. Default True.
        allow_stochastic: With ``eval_mode=False``, accept train-mode Dropout / BatchNorm.
        prefix: Column prefix in the History of :func:`~dynstab.training.train` (the
            tracker's own :attr:`history` has none). Default ``""``.
        name: Monitor name. Default ``"stability"``.

    Raises:
        ValueError: On bad settings (unknown measure, ``"preconditioned"`` without an
            optimizer, non-positive ``lr``, ``momentum`` outside [0, 1), ...).
        TypeError: If ``optimizer`` is not a ``torch.optim.Optimizer``.
        ImportError: If ``tensorboard`` is given and the package is not installed.

    Example:
        >>> from dynstab.losses import half_mse
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(32, 3, generator=g, dtype=torch.float64)
        >>> y = X.sum(1, keepdim=True)
        >>> model = torch.nn.Linear(3, 1).double()
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        >>> tracker = StabilityTracker(model, half_mse, (X, y), every=5, optimizer=opt)
        >>> for t in range(10):
        ...     opt.zero_grad()
        ...     half_mse(model(X), y).backward()
        ...     opt.step()
        ...     _ = tracker.step()
        >>> tracker.history.steps
        [5, 10]
        >>> round(tracker.history.last("lambda_max_threshold"), 10)  # 2(1 + 0.9)/0.05
        76.0
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        probe_data: Data,
        *,
        every: int = 10,
        measures: Sequence[str] = ("lambda_max",),
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        nesterov: bool = False,
        batch_size: int | None = None,
        train_size: int | None = None,
        sampling: str = "with",
        curvature: str = "hessian",
        lanczos: LanczosConfig | None = None,
        trace: TraceConfig | None = None,
        seed: int = 0,
        warm_start: bool = True,
        csv: str | os.PathLike[str] | None = None,
        tensorboard: str | os.PathLike[str] | None = None,
        eval_mode: bool = True,
        allow_stochastic: bool = False,
        prefix: str = "",
        name: str = "stability",
    ) -> None:
        super().__init__(name, every)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}.")
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(outputs, targets); got {loss_fn!r}."
            )
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}."
            )
        self.meter = CurvatureMeter(
            measures, curvature=curvature, lanczos=lanczos, trace=trace, seed=seed,
            warm_start=warm_start,
        )  # fmt: skip
        if "preconditioned" in self.meter.measures and optimizer is None:
            raise ValueError(
                "measure 'preconditioned' needs optimizer=... (the Adam/AdamW/RMSprop/SGD "
                "instance whose preconditioner defines P); got optimizer=None."
            )
        self.lr = None if lr is None else check_positive("lr", lr)
        if momentum is not None:
            momentum_threshold(1.0, momentum, nesterov=nesterov)  # validates β (and Nesterov)
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.batch_size = (
            None if batch_size is None else check_int("batch_size", batch_size, minimum=1)
        )
        self.train_size = (
            None if train_size is None else check_int("train_size", train_size, minimum=1)
        )
        self.sampling = check_choice("sampling", sampling, SAMPLING_SCHEMES)
        self.model, self.loss_fn, self.probe_data = model, loss_fn, probe_data
        self.optimizer = optimizer
        self.eval_mode, self.allow_stochastic = bool(eval_mode), bool(allow_stochastic)
        self.csv = None if csv is None else Path(csv)
        self.prefix = str(prefix)
        self.history = History(metadata={"measures": list(self.meter.measures)})
        self.t = 0
        self._writer: _ScalarWriter | None = None
        if tensorboard is not None:
            try:  # deferred: tensorboard is an optional dependency
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "tensorboard=... needs the 'tensorboard' package (pip install tensorboard); "
                    "or drop tensorboard= and use csv=."
                ) from exc
            self._writer = SummaryWriter(log_dir=str(tensorboard))

    # ------------------------------------------------------------------ user loop

    def step(self) -> dict[str, float] | None:
        """Advance the step count by one; measure if it is a multiple of ``every``.

        Returns:
            The row recorded at this step, or None when no measurement was due.
        """
        self.t += 1
        if self.t % self.every:
            return None
        return self.measure()

    def measure(self) -> dict[str, float]:
        """Measure now (at step ``self.t``) with the optimizer's current hyperparameters.

        The parameters do not change without a step, so a second call at the same step returns
        the row already recorded there.
        """
        if self.history.steps and self.history.steps[-1] == self.t:
            return self.history.at(self.t)
        row = self._measure(self.model, self.t, self._hyper({}))
        self._record(self.t, row)
        return row

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the CSV is always up to date)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ Monitor protocol

    @property
    def copyable(self) -> bool:
        """False when the tracker writes a CSV file or a TensorBoard log (copies would share it)."""
        return self.csv is None and self._writer is None

    def reset(self) -> None:
        """Start afresh (``train`` calls this at the start of a run)."""
        self.meter.reset()
        self.t = 0
        self.history = History(metadata={"measures": list(self.meter.measures)})

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Measure ``model`` for :func:`~dynstab.training.train` (η_t etc. from ``context``).

        Returns the row for the trainer's History with ``prefix`` on every column (without
        ``lr`` when the prefix is empty: the trainer records η_t itself); the tracker's own
        :attr:`history` keeps the full row.
        """
        self.t = int(step)
        row = self._measure(model, step, self._hyper(context))
        self._record(step, row)
        # the trainer records η_t itself (column "lr")
        return {f"{self.prefix}{k}": v for k, v in row.items() if k != "lr" or self.prefix}

    # ------------------------------------------------------------------ internals

    def _hyper(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """η, β, Nesterov, B, n, sampling and the preconditioner at this moment."""

        def own(value: object, key: str, default: object = None) -> object:
            return value if value is not None else context.get(key, default)

        h: dict[str, Any] = {
            "lr": own(self.lr, "lr"),
            "momentum": own(self.momentum, "momentum", 0.0),
            "nesterov": self.nesterov or bool(context.get("nesterov", False)),
            "dampening": 0.0,
            "decay": 0.0,
            "batch_size": own(self.batch_size, "batch_size"),
            "train_size": own(self.train_size, "n"),
            "sampling": self.sampling
            if self.batch_size is not None
            else own(None, "sampling", self.sampling),
            "pre": None,
            "uniform": True,
        }
        pre = self._preconditioner() if self.optimizer is not None else None
        if self.optimizer is not None and pre is None:  # adaptive optimizer before its 1st step
            h.update(lr=max(float(g["lr"]) for g in self.optimizer.param_groups), adaptive=True)
        if pre is not None:
            h.update(lr=pre.lr, momentum=pre.momentum, nesterov=pre.nesterov, pre=pre)
            h.update(dampening=pre.dampening, kind=pre.kind)
            decay = pre.coupled_decay
            h["uniform"] = bool((pre.scale == pre.scale[0]).all()) and bool(
                (decay == decay[0]).all()
            )
            h["decay"] = float(decay[0]) if decay.numel() else 0.0
        if h["sampling"] == "reshuffle":
            h["sampling"] = "without"
        return h

    def _preconditioner(self) -> Preconditioner | None:
        """The optimizer's preconditioner; None for Adam/RMSprop before their first step."""
        assert self.optimizer is not None
        try:
            return optimizer_preconditioner(self.model, self.optimizer)
        except ValueError as exc:
            if "optimizer.step()" not in str(exc) or "preconditioned" in self.meter.measures:
                raise
            return None

    def _measure(self, model: nn.Module, step: int, h: Mapping[str, Any]) -> dict[str, float]:
        pre: Preconditioner | None = h["pre"]
        with _eval_mode(model, self.eval_mode):
            reading = self.meter.measure(
                model,
                self.loss_fn,
                self.probe_data,
                preconditioner=pre if "preconditioned" in self.meter.measures else None,
                params=None if pre is None else list(pre.selection.names),
                allow_stochastic=self.allow_stochastic,
            )
        return self._thresholds(reading, h)

    def _thresholds(self, reading: Reading, h: Mapping[str, Any]) -> dict[str, float]:
        row = dict(reading.values)
        nan = math.nan
        eta = h["lr"]
        beta = float(h["momentum"] or 0.0)
        row["lr"] = float(eta) if eta is not None else nan
        row["momentum"] = beta
        row["probe_loss"] = reading.loss
        pre: Preconditioner | None = h["pre"]
        if "lambda_max" in row:
            thr = nan
            adaptive = bool(h.get("adaptive")) or (pre is not None and pre.kind != "sgd")
            if eta is not None and not adaptive and h["uniform"]:
                thr = momentum_threshold(
                    eta, beta, nesterov=h["nesterov"], dampening=h["dampening"]
                ) - h["decay"]  # fmt: skip
            row["lambda_max_threshold"] = thr
            row["lambda_max_margin"] = row["lambda_max"] / thr if thr > 0 else nan
        if "preconditioned_lambda_max" in row and pre is not None:
            row["preconditioned_threshold"] = pre.threshold
            row["preconditioned_margin"] = row["preconditioned_lambda_max"] / pre.threshold
        if "trace" in row or "frobenius" in row:
            B, n = h["batch_size"], h["train_size"] or reading.n
            q = nan
            if eta is not None and B is not None:
                if h["sampling"] == "without" and n < B:
                    raise ValueError(
                        f"batch_size B={B} exceeds the training-set size n={n} for sampling "
                        "without replacement; pass train_size=n of the training set."
                    )
                q = Sampling(n, B, h["sampling"]).q
            C = reading.outputs
            ok = eta is not None and q > 0
            if "trace" in row:
                row["trace_threshold"] = (
                    2.0 * C / (q * eta) if ok else (math.inf if q == 0 else nan)
                )
                row["trace_margin"] = row["trace"] / row["trace_threshold"]
            if "frobenius" in row:
                row["frobenius_threshold"] = (
                    2.0 * math.sqrt(C) / (eta * math.sqrt(q))
                    if ok
                    else (math.inf if q == 0 else nan)
                )
                row["frobenius_margin"] = row["frobenius"] / row["frobenius_threshold"]
            row["trace_threshold_momentum_free"] = 1.0 if beta > 0 else 0.0
        return row

    def _record(self, step: int, row: Mapping[str, float]) -> None:
        self.history.update(step, row)
        if self.csv is not None:
            self.history.save(self.csv)
        if self._writer is not None:
            for k, v in row.items():
                self._writer.add_scalar(f"dynstab/{k}", float(v), int(step))


def lightning_callback(tracker: StabilityTracker) -> Any:
    """A PyTorch Lightning ``Callback`` that calls ``tracker.step()`` after every training batch.

    The tracker must be built on the ``LightningModule`` (or the module it trains) and on the
    optimizer ``configure_optimizers`` returns; when ``tracker.optimizer`` is None the
    callback uses ``trainer.optimizers[0]`` at the first batch. Rows go to
    ``tracker.history`` (and its CSV / TensorBoard outputs); the last row is also logged with
    ``pl_module.log_dict`` under ``stability/<column>``.

    Args:
        tracker: The :class:`StabilityTracker`.

    Returns:
        A ``lightning.pytorch.Callback`` instance.

    Raises:
        ImportError: If neither ``lightning`` nor ``pytorch_lightning`` is installed.
        TypeError: If ``tracker`` is not a :class:`StabilityTracker`.
    """
    if not isinstance(tracker, StabilityTracker):
        raise TypeError(f"tracker must be a StabilityTracker; got {type(tracker).__name__}.")
    try:  # deferred: Lightning is an optional dependency
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as exc:
            raise ImportError(
                "lightning_callback needs PyTorch Lightning (pip install lightning); in a "
                "plain loop call tracker.step() after optimizer.step() instead."
            ) from exc

    class StabilityCallback(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if tracker.optimizer is None and trainer.optimizers:
                tracker.optimizer = trainer.optimizers[0]
            row = tracker.step()
            if row is not None:
                pl_module.log_dict({f"stability/{k}": float(v) for k, v in row.items()})

    return StabilityCallback()
