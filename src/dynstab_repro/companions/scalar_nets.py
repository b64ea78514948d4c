"""Scalar-output networks of the companions: the digits task, the large initialization, training.

The networks are the library's :class:`dynstab.models.MLP` (one hidden layer, scalar output)
and :class:`dynstab.models.UnivariateReLU`, trained by :func:`dynstab.training.train` — with
their closed-form gradients (``gradient="auto"``), batches drawn by
:class:`dynstab.sampling.Sampling` (i.i.d. without replacement by default), a cubic warm-up
(:class:`dynstab.training.Warmup`) and the stopping rule of :class:`dynstab.training.
StoppingRule` with ``require_full_lr=True`` (converged: ½-MSE ≤ ``stop_loss`` with at least
``min_full_lr_fraction`` of the updates at the full η).

Data: sklearn's digits by default (offline); with ``dataset="mnist"`` or ``"cifar10"`` and
``data=PATH`` the same scalar task is built from the files of MNIST (IDX, also FashionMNIST)
or CIFAR-10 (python pickles) through :func:`dynstab.data.load_mnist` /
:func:`dynstab.data.load_cifar10` (:func:`scalar_task`), and ``device="cuda"`` trains there
(every verdict is still computed in float64 on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dynstab.criteria import alignment_factor, alignment_infimum
from dynstab.data import load_cifar10, load_mnist
from dynstab.models import MLP
from dynstab.norms import gram_spectrum
from dynstab.training import GramMonitor, Monitor, TrainResult, Warmup, train
from dynstab_repro.base import RunSpec
from dynstab_repro.companions.experiment import CompanionExperiment
from dynstab_repro.companions.minima import JSONScalar, gram_float64, gram_summary
from dynstab_repro.companions.results import (
    MAX_POINTS,
    Record,
    curve,
    finite,
    grid_specs,
    thin,
)
from dynstab_repro.config import ExperimentConfig

__all__ = [
    "CHECK_EVERY",
    "DATASETS",
    "ScalarSweep",
    "ScalarSweepConfig",
    "ScalarTaskConfig",
    "ScalarTrainSettings",
    "digits_task",
    "loss_curve",
    "onehot_digits_task",
    "run_summary",
    "scalar_task",
    "shallow_mlp",
    "train_scalar",
    "train_scalar_run",
]

#: Steps between full-loss checks (SGD) and loss records.
CHECK_EVERY = 50


def digits_task(
    n: int, *, classes: tuple[int, ...] = (), dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Scalar-output ½-MSE task from sklearn's 8×8 digits (offline).

    The first ``n`` samples (of ``classes`` if given, else of all ten digits) with inputs scaled
    to unit Euclidean norm and targets y = +1 for even digits (or the first listed class) and
    −1 otherwise. Deterministic (no randomness).

    Returns:
        ``(X, y)`` of shapes ``(n, 64)`` and ``(n,)``.

    Raises:
        ValueError: If fewer than ``n`` samples are available.
    """
    from sklearn.datasets import load_digits  # deferred: optional heavy dependency ([data])

    Xa, ya = load_digits(return_X_y=True)
    if classes:
        keep = np.isin(ya, classes)
        Xa, ya = Xa[keep], ya[keep]
        lab = np.where(ya == classes[0], 1.0, -1.0)
    else:
        lab = np.where(ya % 2 == 0, 1.0, -1.0)
    if n > len(Xa):
        raise ValueError(
            f"digits_task: n must be at most {len(Xa)} for classes={classes}; got {n}. "
            "Use fewer samples or more classes."
        )
    X = torch.tensor(Xa[:n], dtype=dtype)
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return X, torch.tensor(lab[:n], dtype=dtype)


def onehot_digits_task(n: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Ten-output ½-MSE task from sklearn's 8×8 digits (offline): one-hot targets.

    The first ``n`` samples of all ten digits, inputs scaled to unit Euclidean norm (as
    :func:`digits_task`), targets the one-hot rows e_{y_i}. Deterministic.

    Returns:
        ``(X, Y)`` of shapes ``(n, 64)`` and ``(n, 10)``.

    Example:
        >>> X, Y = onehot_digits_task(12)
        >>> tuple(Y.shape), Y.sum(dim=1).tolist() == [1.0] * 12, Y[:10].argmax(dim=1).tolist()
        ((12, 10), True, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    from sklearn.datasets import load_digits  # deferred: optional heavy dependency ([data])

    X, labels = digits_task(n, dtype=dtype)[0], load_digits().target[:n]
    Y = torch.nn.functional.one_hot(torch.as_tensor(labels), 10).to(dtype)
    return X, Y


#: Data sources of the scalar task: digits (offline), MNIST-format IDX files, CIFAR-10 pickles.
DATASETS = ("digits", "mnist", "cifar10")


def scalar_task(
    dataset: str,
    n: int,
    *,
    classes: tuple[int, ...] = (),
    path: str = "",
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """The scalar ½-MSE task of the companions from digits, MNIST or CIFAR-10.

    ``"digits"`` is :func:`digits_task`. ``"mnist"`` and ``"cifar10"`` read the files in
    ``path`` (:func:`dynstab.data.load_mnist`: the four IDX files, raw or ``.gz``, also
    FashionMNIST; :func:`dynstab.data.load_cifar10`: the python-pickle batches) and keep the
    first ``n`` training images of the two ``classes`` (default (3, 8) for MNIST as MM23's
    digits task, (0, 1) for CIFAR-10 as WME18's two-class setting), flattened and scaled to
    unit Euclidean norm, with targets +1 for the first class and −1 for the second.

    Returns:
        ``(X, y)`` of shapes ``(n, d)`` and ``(n,)``.

    Raises:
        ValueError: If ``dataset`` is unknown, ``path`` is missing for a file dataset, more
            than two classes are given, or fewer than ``n`` images of the classes exist.
        FileNotFoundError: If the files are not in ``path``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}; got {dataset!r}.")
    if dataset == "digits":
        return digits_task(n, classes=classes, dtype=dtype)
    if not path:
        raise ValueError(
            f"dataset={dataset!r} reads files: give their folder with --set data=PATH "
            "(or use dataset=digits, which needs no files)."
        )
    pair = classes or ((3, 8) if dataset == "mnist" else (0, 1))
    if len(pair) != 2:
        raise ValueError(f"the scalar task needs two classes; got classes={pair}.")
    load = load_mnist if dataset == "mnist" else load_cifar10
    ds = load(
        path, n_test=1, one_hot=False, standardize_inputs=False, flatten=True, dtype=torch.float32
    )
    labels = ds.labels if ds.labels is not None else ds.y.long()
    keep = torch.nonzero((labels == pair[0]) | (labels == pair[1])).reshape(-1)
    if keep.numel() < n:
        raise ValueError(
            f"{dataset} in {path} has only {keep.numel()} training images of classes {pair}; "
            f"n must be at most that, got n={n}."
        )
    idx = keep[:n]
    X = ds.X[idx].to(dtype)
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    y = torch.where(labels[idx] == pair[0], 1.0, -1.0).to(dtype)
    return X, y


def shallow_mlp(
    d: int,
    m: int,
    *,
    init_scale: float,
    activation: str,
    seed: int,
    bias_scale: float = 0.0,
    outputs: int = 1,
) -> MLP:
    """``MLP([d, m, C])`` in float64 with the large Gaussian initialization of MM23 / WWS22.

    f(x) = Σ_j a_j φ(w_jᵀx + b_j) + c with w_j ~ N(0, s²I_d), a_j ~ N(0, s²/m · I_C), b_j ~ N(0,
    β²) and c = 0 (s = ``init_scale``, β = ``bias_scale``, C = ``outputs``, default 1: a scalar
    output), drawn in that order from ``torch.Generator().manual_seed(seed)``. For unit-norm
    inputs the pre-activations are N(0, s²): s ≈ 1 puts tanh units in their curved range, and
    larger s gives sharper nearby minima (the "large initialization" of Mulayoff & Michaeli).

    Example:
        >>> net = shallow_mlp(3, 4, init_scale=1.0, activation="tanh", seed=0)
        >>> [tuple(p.shape) for p in net.parameters()]
        [(4, 3), (4,), (1, 4), (1,)]
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, d, generator=g, dtype=torch.float64) * init_scale
    a = torch.randn(outputs * m, generator=g, dtype=torch.float64) * init_scale / math.sqrt(m)
    b = torch.randn(m, generator=g, dtype=torch.float64) * bias_scale
    net = MLP([d, m, outputs], activation=activation, generator=g, dtype=torch.float64)
    net.load_state_dict(
        {
            "layers.0.weight": W,
            "layers.0.bias": b,
            "layers.1.weight": a.reshape(outputs, m),
            "layers.1.bias": torch.zeros(outputs, dtype=torch.float64),
        }
    )
    return net


def train_scalar(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    sampling: str = "without",
    warmup_steps: int = 0,
    seed: int = 0,
    stop_loss: float | None = 1e-10,
    min_full_lr_fraction: float = 0.2,
    check_every: int = CHECK_EVERY,
    divergence_threshold: float = 1e8,
    monitors: Sequence[Monitor] = (),
) -> TrainResult:
    """Plain SGD/GD on the ½-MSE with :func:`dynstab.training.train`, the model in place.

    ``batch_size`` 0 (or ≥ n without replacement) is GD; batches are i.i.d. across steps from
    the sampler seeded with ``seed``; η_t = η·min(1, (t+1)/T_w)³ (``warmup_steps`` = T_w).
    The full loss is checked every ``check_every`` steps (every step for GD) and recorded every
    ``check_every`` steps; the run stops when it has converged at the full rate, diverged
    (loss > ``divergence_threshold`` or non-finite) or used its ``steps``.
    """
    n = X.shape[0]
    gd = batch_size == 0 or (batch_size >= n and sampling == "without")
    return train(
        model,
        X,
        y,
        lr=lr,
        steps=steps,
        batch_size=None if gd else batch_size,
        sampling=sampling,
        schedule=Warmup(warmup_steps, 3.0) if warmup_steps > 0 else None,
        seed=None if gd else seed,
        stop_loss=stop_loss,
        min_full_lr_fraction=min_full_lr_fraction,
        require_full_lr=True,
        divergence_threshold=divergence_threshold,
        eval_every=check_every,
        monitors=monitors,
        gradient="auto",
    )


def loss_curve(res: TrainResult) -> tuple[list[int], list[float | None]]:
    """The recorded full-loss curve of a run, thinned to :data:`MAX_POINTS` points."""
    return curve(res, "loss", MAX_POINTS)


def run_summary(res: TrainResult) -> dict[str, JSONScalar | list[int] | list[float | None]]:
    """JSON-able outcome of a run: flags, steps, final loss, learning rates, loss curve."""
    loss_steps, loss_values = loss_curve(res)
    return {
        "converged": res.converged,
        "diverged": res.diverged,
        "steps_run": res.steps_run,
        "final_loss": finite(res.final_loss),
        "lr_at_loss_threshold": res.lr_at_loss_threshold,
        "effective_lr": res.effective_lr,
        "loss_steps": loss_steps,
        "loss_values": loss_values,
    }


@dataclasses.dataclass(frozen=True)
class ScalarTrainSettings(ExperimentConfig):
    """How :func:`train_scalar_run` initializes and trains a :func:`shallow_mlp`.

    The training fields shared by the configs of the scalar-task companions
    (:class:`ScalarSweepConfig`, ``wws22/alignment``, ``wws22/scaling``), which inherit them:
    one definition, one set of defaults, set by the same ``--set`` keys in every experiment.

    Attributes:
        activation: φ of the hidden layer, ``"tanh"`` or ``"relu"``.
        init_scale: Initialization scale s (w_j ~ N(0, s²I), a_j ~ N(0, s²/m)).
        steps: Maximum updates.
        warmup_steps: Cubic warm-up length.
        stop_loss: Interpolation threshold on the ½-MSE.
        min_full_lr_fraction: Fraction of the updates at the full η required to stop as
            converged ("converged at η").
    """

    activation: str = "tanh"
    init_scale: float = 1.0
    steps: int = 20000
    warmup_steps: int = 2000
    stop_loss: float = 1e-10
    min_full_lr_fraction: float = 0.2


def train_scalar_run(
    settings: ScalarTrainSettings,
    X: Tensor,
    y: Tensor,
    *,
    width: int,
    lr: float,
    batch_size: int,
    seed: int,
    bounds: bool = False,
    init_seed: int = 0,
    record_every: int = 0,
    sampling: str = "without",
    device: str = "cpu",
) -> dict[str, object]:
    """Train a :func:`shallow_mlp` on a ½-MSE task and measure the minimum.

    Targets ``y`` of shape ``(n,)`` give a scalar output; ``(n, C)`` (e.g. one-hot,
    :func:`onehot_digits_task`) a C-output net, whose K is nC×nC (rows ``i*C + c``).

    The initialization (seeded by ``init_seed``, shared by all runs as in MM23) is
    :func:`shallow_mlp` of the given ``width``; training is :func:`train_scalar` with the
    ``settings`` (``batch_size`` 0 = GD) on ``device``. At the final iterate the float64
    K = JJᵀ/n gives
    :func:`~.minima.gram_summary` (exact η* included; with ``bounds`` also MM23 (15) and (24)).
    With ``record_every`` > 0 the alignment μ(θ_t) of Wu, Wang & Su (2022) and ‖H‖_F = ‖K‖_F are
    recorded along training (:class:`dynstab.training.GramMonitor`).

    Returns:
        JSON-able dict: run settings, the :func:`run_summary` fields, ``init_lambda_max``, the
        :func:`~.minima.gram_summary` fields and, if recorded, ``history`` =
        {"step", "mu", "frobenius", "loss"} (≤ :data:`MAX_POINTS` points), ``mu_final``, the
        alignment factor at the final iterate, and ``mu_inf``, its infimum over residuals in
        the range of K (:func:`dynstab.criteria.alignment_infimum`).
    """
    n, d = X.shape
    outputs = 1 if y.ndim == 1 else int(y.shape[1])
    net = shallow_mlp(
        d,
        width,
        init_scale=settings.init_scale,
        activation=settings.activation,
        seed=init_seed,
        outputs=outputs,
    ).to(device)
    X, y = X.to(device), y.to(device)
    init_lambda = gram_spectrum(gram_float64(net, X)).lambda_max
    monitors: list[Monitor] = []
    if record_every > 0:
        monitors = [GramMonitor(every=record_every, measures=("alignment", "frobenius"), prefix="")]
    res = train_scalar(
        net,
        X,
        y,
        lr=lr,
        steps=settings.steps,
        batch_size=batch_size,
        sampling=sampling,
        warmup_steps=settings.warmup_steps,
        seed=seed,
        stop_loss=settings.stop_loss,
        min_full_lr_fraction=settings.min_full_lr_fraction,
        monitors=monitors,
    )
    gd = res.sampling == "full"
    out: dict[str, object] = {
        "lr": lr,
        "B": 0 if gd else batch_size,
        "seed": seed,
        "width": width,
        "n": n,
        "init_lambda_max": init_lambda,
        **run_summary(res),
    }
    if not res.diverged:
        K = gram_float64(net, X)
        if record_every > 0:
            with torch.no_grad():
                r_end = (net(X).reshape(-1) - y.reshape(-1)).detach().cpu().to(torch.float64)
            out["mu_final"] = (
                finite(alignment_factor(K, r_end)) if float(r_end @ r_end) > 0 else None
            )
            out["mu_inf"] = finite(alignment_infimum(K))
        out.update(
            gram_summary(
                K,
                lr=lr,
                batch_size=n if gd else batch_size,
                sampling="without" if gd else sampling,
                outputs=outputs,
                bounds=bounds,
                generator=torch.Generator().manual_seed(seed),
            ).to_dict()
        )
    if record_every > 0:
        out["history"] = _alignment_history(res)
    return out


def _alignment_history(res: TrainResult) -> dict[str, list[float | None] | list[int]]:
    h = res.history
    steps, mu = h.as_arrays("alignment")
    fro = dict(zip(*(v.tolist() for v in h.as_arrays("frobenius")), strict=True))
    loss = dict(zip(*(v.tolist() for v in h.as_arrays("loss")), strict=True))
    idx = thin(list(range(len(steps))), MAX_POINTS)
    return {
        "step": [int(steps[i]) for i in idx],
        "mu": [finite(mu[i]) for i in idx],
        "frobenius": [finite(fro.get(int(steps[i]))) for i in idx],
        "loss": [finite(loss.get(int(steps[i]))) for i in idx],
    }


@dataclasses.dataclass(frozen=True)
class ScalarTaskConfig(ExperimentConfig):
    """Data source and device of the experiments on the scalar task (:func:`scalar_task`).

    Attributes:
        dataset: ``"digits"`` (offline, default), ``"mnist"`` or ``"cifar10"``.
        data: Folder of the MNIST/CIFAR-10 files (required for those datasets).
        device: Torch device of the training runs (``"cpu"`` or e.g. ``"cuda"``).
    """

    dataset: str = "digits"
    data: str = ""
    device: str = "cpu"

    def validate(self) -> None:
        """Check the data source before any work.

        Raises:
            ValueError: For an unknown dataset, a file dataset without ``data`` or a
                ``data`` folder that does not exist, or ``device="cuda"`` without CUDA.
        """
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}; got {self.dataset!r}.")
        if self.dataset != "digits":
            if not self.data:
                raise ValueError(
                    f"dataset={self.dataset} reads files: give their folder with "
                    "--set data=PATH (or --set dataset=digits, which needs no files)."
                )
            if not Path(self.data).exists():
                raise ValueError(f"data folder {self.data!r} does not exist; give --set data=PATH.")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r} but CUDA is not available here; use device=cpu."
            )

    def task(self, n: int, classes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The training set of this config: :func:`scalar_task` with ``n`` samples."""
        return scalar_task(self.dataset, n, classes=classes, path=self.data)


@dataclasses.dataclass(frozen=True)
class ScalarSweepConfig(ScalarTaskConfig, ScalarTrainSettings):
    """Settings of an (η, B, seed) sweep of :func:`shallow_mlp` networks on the scalar task.

    The data fields of :class:`ScalarTaskConfig` and the training fields of
    :class:`ScalarTrainSettings` (``activation``, ``init_scale``, ``steps``, ``warmup_steps``,
    ``stop_loss``, ``min_full_lr_fraction``), and:

    Attributes:
        n: Training samples.
        width: Hidden width m.
        lrs: Learning rates η.
        batch_sizes: SGD batch sizes B (i.i.d. batches without replacement); 0 means GD.
        seeds: Batch-sampling seeds (the initialization is shared, as in MM23).
    """

    n: int = 40
    width: int = 64
    lrs: tuple[float, ...] = (0.1,)
    batch_sizes: tuple[int, ...] = (2, 0)
    seeds: tuple[int, ...] = (0,)


class ScalarSweep(CompanionExperiment):
    """An (η, B, seed) sweep of :func:`shallow_mlp` networks on :func:`digits_task`.

    Subclasses set ``classes`` (digit classes; empty: parity of all ten digits) and ``bounds``
    (also measure MM23's bounds (15) and (24)); one unit is one :func:`train_scalar_run`.
    """

    classes: ClassVar[tuple[int, ...]] = ()
    bounds: ClassVar[bool] = False

    def specs(self, config: ScalarSweepConfig) -> list[RunSpec]:
        """One unit per (η, B, seed)."""
        return grid_specs(
            {"lr": config.lrs, "B": config.batch_sizes, "seed": config.seeds},
            {"B": lambda b: str(b) if b else "GD"},
        )

    def run_unit(self, config: ScalarSweepConfig, spec: RunSpec) -> Record:
        """Train one run to near interpolation, then measure the minimum from K."""
        X, y = config.task(config.n, self.classes)
        return train_scalar_run(
            config,
            X,
            y,
            width=config.width,
            lr=float(spec.params["lr"]),
            batch_size=int(spec.params["B"]),
            seed=int(spec.params["seed"]),
            bounds=self.bounds,
            device=config.device,
        )
