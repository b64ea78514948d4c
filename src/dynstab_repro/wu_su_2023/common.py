"""Shared machinery of the Wu & Su (ICML 2023) reproduction (spec ``wu_su_2023.md``).

Contents:

* **data and initializations from the shared layers**: every unit draws its data set with
  :func:`dynstab.data.make_regression_dataset` (sparse-linear teacher on Gaussian / sphere /
  cube inputs for E1/E2, sum-of-ReLU teacher on spherical inputs for E3/E4), its E2
  initialization with :func:`dynstab.data.unbalanced_diagonal_init` and its E1/E3/E4
  initialization with the :mod:`dynstab.models` constructors (``DiagonalLinearNet``,
  ``TwoLayerReLU``), each from its own ``torch.Generator`` seeded by
  :func:`torch_generator` ``(seed, stream)``; the tensors are converted once to float64
  NumPy arrays for the trainers below. Why this costs nothing: the draws happen once per
  unit; at the spec's full sizes data + initialization take 52 ms (E1/E2: 3 300 × 1 000
  Gaussian inputs) and 6 ms (E3/E4) against 31 ms and 4 ms for the former NumPy draws
  (torch's float64 ``randn`` is ≈ 1.7× slower than NumPy's), i.e. < 1 CPU-s of E1's 28 and
  E2's 70 CPU-s of full-profile units and < 0.1 s of the quick group. Reproducibility is
  unchanged: a unit depends only on its ``seed`` (streams derived by ``SeedSequence``), and
  the draws are fixed for a given torch version, as the former ones were for a NumPy version.
  The *training* stays in NumPy (next items); only the SGD index stream of the fast trainers
  comes from a NumPy ``Generator`` seeded with ``(seed, 3)``;
* shared config fields (:class:`DiagonalDataConfig`, :class:`ReLUDataConfig`,
  :class:`TrainerConfig`, :class:`SweepConfig`) and quick-profile settings;
* closed-form per-sample output gradients of the two model families and their Gram matrices
  K = JJᵀ/n (n×n), whose spectrum equals that of G = JᵀJ/n (spec §2, R4, R7);
* private *fast-path trainers*: tight NumPy loops with closed-form gradients for SGD/GD on the
  diagonal linear net f(x) = ⟨a⊙b, x⟩ and the bias-free two-layer ReLU net
  f(x) = Σ_j a_j σ(w_jᵀx). They implement exactly the update of :func:`dynstab.training.train`
  (½-MSE, θ ← θ − η_t (1/B) Σ_{i∈I_t} ∇ℓ_i, warm-up η_t = η·min(1, (t+1)/T_w)^k) but cost a few
  microseconds per B = 1 step instead of the generic trainer's autograd overhead, which makes
  the spec's 3·10⁵-step SGD runs take seconds;
* :func:`run_unit`, the one sweep unit of E1–E4 (train one run, measure at convergence), and
  :class:`WuSuExperiment`, the shared experiment plumbing (one BLAS/OpenMP/torch thread per
  unit);
* small analysis and plotting helpers (selection and medians over seeds, Spearman
  correlation, the trace-bound ratio, claim formatting, log–log panels).

Loss convention (A9): ℓ_i(θ) = ½ (f(x_i; θ) − y_i)², L(θ) = (1/n) Σ_i ℓ_i(θ). Without the ½
every threshold 2/η below would become 1/η.

Convergence rule (shared protocol, A7): a run stops at the first loss check with
L ≤ ``stop_loss`` *and* at least ``min_full_lr_fraction`` of its steps taken at the full η,
i.e. t − T_w ≥ fraction·t. The learning rate in effect when the loss fell below 1e−6 for the
last time (checked every ``check_every`` steps) is recorded as ``lr_at_1e6``; bounds are tested
against it (:func:`effective_lr`).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import numpy as np

from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab_repro.base import Claim, Experiment, RunSpec
from dynstab_repro.config import ExperimentConfig

__all__ = [
    "INPUT_KINDS",
    "QUICK_DIAGONAL",
    "QUICK_RELU",
    "DiagonalDataConfig",
    "FastOptions",
    "FastRunResult",
    "Problem",
    "ReLUDataConfig",
    "SweepConfig",
    "TrainerConfig",
    "WuSuExperiment",
    "ambiguities",
    "diagonal_gram",
    "diagonal_measures",
    "diagonal_problem",
    "effective_lr",
    "fmt",
    "gd_curvature_threshold",
    "gd_warmup_steps",
    "init_diagonal",
    "init_relu",
    "init_unbalanced",
    "is_ok",
    "loglog_panel",
    "make_claim",
    "max_over_min",
    "median",
    "medians",
    "plot_optimizer_medians",
    "relu_gram",
    "relu_measures",
    "relu_problem",
    "run_unit",
    "save_figure_pair",
    "select",
    "sgd_curvature_threshold",
    "single_thread_blas",
    "spearman",
    "spectral_measures",
    "styled",
    "subsample_history",
    "summary_cells",
    "sweep_specs",
    "torch_generator",
    "train_diagonal_fast",
    "train_relu_fast",
    "warmup_multipliers",
    "worst_trace_ratio",
]

F = TypeVar("F", bound=Callable[..., Any])

INPUT_KINDS: tuple[str, ...] = ("gaussian", "sphere", "cube")

#: Loss level whose first crossing defines the "effective" learning rate (spec A7).
LR_PROBE_LOSS = 1e-6

# Random streams per unit seed (data, sampler and initializations are independent).
_STREAM_DIAGONAL_DATA, _STREAM_RELU_DATA, _STREAM_SAMPLER = 1, 2, 3
_STREAM_DIAGONAL_INIT, _STREAM_UNBALANCED_INIT, _STREAM_RELU_INIT = 4, 5, 6


# --------------------------------------------------------------------------------------
# Data and initializations (drawn by dynstab.data / dynstab.models)
# --------------------------------------------------------------------------------------


def torch_generator(seed: int, stream: int) -> Any:
    """A ``torch.Generator`` for random stream ``stream`` of unit seed ``seed``.

    The 64-bit torch seed is ``SeedSequence([seed, stream])``'s first word, so different
    streams of one seed (data, initialization) and equal streams of different seeds are
    independent.

    Example:
        >>> import torch
        >>> g1, g2 = torch_generator(0, 1), torch_generator(0, 1)
        >>> bool(torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2)))
        True
    """
    import torch

    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _numpy(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


@dataclass(frozen=True)
class Problem:
    """A regression data set with a noiseless teacher (float64 NumPy arrays).

    Attributes:
        X: Training inputs ``(n, d)``. y: Training targets ``(n,)``.
        X_test: Fresh test inputs ``(n_test, d)``. y_test: Their targets.
        teacher: Teacher parameters (β* for the linear teacher, V ``(k, d)`` for ReLU).
    """

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    teacher: np.ndarray

    @classmethod
    def from_dataset(cls, ds: Any) -> Problem:
        """Convert a :class:`dynstab.data.Dataset` with a linear or ReLU teacher."""
        t = ds.teacher
        teacher = t.beta_star if hasattr(t, "beta_star") else t.V
        return cls(
            _numpy(ds.X), _numpy(ds.y), _numpy(ds.X_test), _numpy(ds.y_test), _numpy(teacher)
        )


def diagonal_problem(
    *, d: int, n: int, n_test: int, inputs: str, support: int, seed: int
) -> Problem:
    """Sparse linear teacher β* = (1, …, 1, 0, …) (``support`` ones) on ``inputs`` data (E1, E2).

    Drawn by :func:`dynstab.data.make_regression_dataset` (X, then X_test).

    Raises:
        ValueError: For an unknown ``inputs`` (``"gaussian"``, ``"sphere"``, ``"cube"``).

    Example:
        >>> p = diagonal_problem(d=5, n=3, n_test=4, inputs="gaussian", support=2, seed=0)
        >>> p.X.shape, p.teacher.tolist(), np.allclose(p.y, p.X @ p.teacher)
        ((3, 5), [1.0, 1.0, 0.0, 0.0, 0.0], True)
    """
    from dynstab.data import make_regression_dataset

    ds = make_regression_dataset(
        "sparse_linear",
        n,
        n_test,
        d,
        input_dist=inputs,
        sparsity=support,
        generator=torch_generator(seed, _STREAM_DIAGONAL_DATA),
    )
    return Problem.from_dataset(ds)


def relu_problem(*, d: int, n: int, n_test: int, k: int, seed: int) -> Problem:
    """Sum-of-k-ReLU teacher f*(x) = Σ_i σ(v_iᵀx), v_i ~ Unif(S^{d−1}), spherical inputs (E3, E4).

    Drawn by :func:`dynstab.data.make_regression_dataset` (V, X, then X_test).

    Example:
        >>> p = relu_problem(d=4, n=3, n_test=2, k=2, seed=0)
        >>> np.allclose(np.linalg.norm(p.teacher, axis=1), 1.0), p.y.shape
        (True, (3,))
    """
    from dynstab.data import make_regression_dataset

    ds = make_regression_dataset(
        "relu", n, n_test, d, k=k, generator=torch_generator(seed, _STREAM_RELU_DATA)
    )
    return Problem.from_dataset(ds)


def init_diagonal(d: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """a_j, b_j ~ iid N(0, scale²): the initialization of ``DiagonalLinearNet(d, init_scale)``.

    Example:
        >>> a, b = init_diagonal(4, 1.0, 0)
        >>> a.shape, b.shape
        ((4,), (4,))
    """
    import torch

    from dynstab.models import DiagonalLinearNet

    net = DiagonalLinearNet(
        d,
        init_scale=scale,
        generator=torch_generator(seed, _STREAM_DIAGONAL_INIT),
        dtype=torch.float64,
    )
    a, b = net.factors()
    return _numpy(a), _numpy(b)


def init_unbalanced(d: int, r0: float, std: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with r(θ_0) = r0 exactly (E2), by :func:`dynstab.data.unbalanced_diagonal_init`.

    a ~ N(0, std²), b = c ε a with ε = ±1 and c = r0 + √(r0² − 1).

    Raises:
        ValueError: If ``r0 < 1`` or ``std <= 0``.

    Example:
        >>> a, b = init_unbalanced(50, 3.0, 0.1, 0)
        >>> round(float(np.sum(a * a + b * b) / (2 * np.sum(np.abs(a * b)))), 12)
        3.0
    """
    from dynstab.data import unbalanced_diagonal_init

    a, b = unbalanced_diagonal_init(
        d, r0, std=std, generator=torch_generator(seed, _STREAM_UNBALANCED_INIT)
    )
    return _numpy(a), _numpy(b)


def init_relu(d: int, m: int, init: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """W (m, d) with rows N(0, I/d) (``"lw"``) or N(0, I/√d) (``"r3p"``); a ~ N(0, 1)^m.

    The initialization of ``TwoLayerReLU(d, m, init=init)``.

    Raises:
        ValueError: For an unknown ``init``.

    Example:
        >>> W, a = init_relu(3, 2, "lw", 0)
        >>> W.shape, a.shape
        ((2, 3), (2,))
    """
    import torch

    from dynstab.models import TwoLayerReLU

    net = TwoLayerReLU(
        d, m, init=init, generator=torch_generator(seed, _STREAM_RELU_INIT), dtype=torch.float64
    )
    return _numpy(net.w), _numpy(net.a)


# --------------------------------------------------------------------------------------
# Shared config fields and profiles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagonalDataConfig(ExperimentConfig):
    """Data of E1/E2 (spec: d = 1000, n = 300, n_test = 3000, Gaussian inputs, β* 3-sparse).

    Attributes:
        d, n, n_test: Dimension, training and test sample sizes.
        inputs: Input law, ``"gaussian"`` (A3 default) or ``"cube"``/``"sphere"``.
        support: Number of ones in β*.
    """

    d: int = 1000
    n: int = 300
    n_test: int = 3000
    inputs: Literal["gaussian", "sphere", "cube"] = "gaussian"
    support: int = 3

    def problem(self, seed: int) -> Problem:
        """The data set of unit seed ``seed``."""
        return diagonal_problem(
            d=self.d,
            n=self.n,
            n_test=self.n_test,
            inputs=self.inputs,
            support=self.support,
            seed=seed,
        )


@dataclass(frozen=True)
class ReLUDataConfig(ExperimentConfig):
    """Data and model of E3/E4 (spec: d = 100, m = 100, n = 300, n_test = 3000, k = 10).

    Attributes:
        d, m, n, n_test, k: Dimension, width, sample sizes, teacher neurons.
        init: ``"lw"`` (w_j ~ N(0, I/d), A4 default) or ``"r3p"`` (w_j ~ N(0, I/√d)).
    """

    d: int = 100
    m: int = 100
    n: int = 300
    n_test: int = 3000
    k: int = 10
    init: Literal["lw", "r3p"] = "lw"

    def problem(self, seed: int) -> Problem:
        """The data set of unit seed ``seed``."""
        return relu_problem(d=self.d, n=self.n, n_test=self.n_test, k=self.k, seed=seed)

    def initial_params(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(W_0, a_0) of unit seed ``seed`` (:func:`init_relu`)."""
        return init_relu(self.d, self.m, self.init, seed)


@dataclass(frozen=True)
class TrainerConfig(ExperimentConfig):
    """Trainer settings shared by E1–E4 (spec: B = 1, cubic warm-up, A6–A7).

    Attributes:
        batch_size: SGD batch size B (sampling with replacement, A2).
        warmup_power: Exponent k of the warm-up η·min(1, (t+1)/T_w)^k (3 = cubic).
        stop_loss, min_full_lr_fraction: Convergence rule (A7).
        clip: Optional gradient-norm clipping (A6 alternative; None = off).
        trace_slack: Relative slack in "Tr G ≤ (1 + slack)·2/η" (spec: 5 %).
        progress: tqdm bars inside each run.
    """

    batch_size: int = 1
    warmup_power: float = 3.0
    stop_loss: float = 1e-10
    min_full_lr_fraction: float = 0.2
    clip: float | None = None
    trace_slack: float = 0.05
    progress: bool = False


@dataclass(frozen=True)
class SweepConfig(TrainerConfig):
    """Settings of an SGD-vs-GD sweep (E1, E2, E4; spec A8, A12).

    Attributes:
        seeds: Seeds (data, initialization and sampler; spec A8: 3 seeds).
        optimizers: Subset of ``("sgd", "gd")``.
        sgd_steps, sgd_warmup_steps: SGD step budget and warm-up length (A6, A8).
        gd_steps: GD step budget (A8).
        gd_warmup: ``"auto"`` = warm up only if η > 2/λ_max(G_0) (A12), or always/never.
        gd_warmup_steps: Warm-up length for GD when used.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    optimizers: tuple[str, ...] = ("sgd", "gd")
    sgd_steps: int = 300_000
    sgd_warmup_steps: int = 50_000
    gd_steps: int = 30_000
    gd_warmup: Literal["auto", "always", "never"] = "auto"
    gd_warmup_steps: int = 5_000


#: Quick-profile overrides shared by E1 and E2 (diagonal net, one seed).
QUICK_DIAGONAL: dict[str, Any] = {
    "d": 500,
    "n": 150,
    "n_test": 1000,
    "seeds": (0,),
    "sgd_steps": 100_000,
    "sgd_warmup_steps": 20_000,
    "gd_steps": 20_000,
    "gd_warmup_steps": 2_000,
}

#: Quick-profile overrides shared by E3 and E4 (ReLU net, one seed).
QUICK_RELU: dict[str, Any] = {"d": 50, "m": 100, "n": 150, "n_test": 1000, "k": 5, "seeds": (0,)}

#: Documented defaults for the spec's ambiguities shared by several experiments (§5).
_SHARED_AMBIGUITIES: dict[str, str] = {
    "A2": "SGD batches sampled with replacement, B = 1",
    "A4": "w_j ~ N(0, I_d/d), a_j ~ N(0, 1)",
    "A7": "converged: L ≤ 1e-10 with ≥ 20% of steps at full η; bounds tested at lr_at_1e6",
    "A8": "SGD ≤ 3e5 steps, GD ≤ 3e4 steps, 3 seeds, medians over seeds",
    "A9": "loss ½(f - y)^2 per sample",
    "A12": "GD at constant η; warm-up only when η > 2/λ_max(G_0)",
}


def ambiguities(shared: Iterable[str], specific: Mapping[str, str] | None = None) -> dict[str, str]:
    """The shared texts of the ambiguities ``shared`` plus ``specific`` ones, in A-number order.

    Raises:
        KeyError: For a shared ambiguity without a shared text.

    Example:
        >>> list(ambiguities(["A9", "A2"], {"A10": "no biases", "E3 lr": "0.1"}))
        ['A2', 'A9', 'A10', 'E3 lr']
    """
    out = {k: _SHARED_AMBIGUITIES[k] for k in shared}
    out.update(specific or {})

    def order(key: str) -> tuple[int, int, str]:
        m = re.fullmatch(r"A(\d+)", key)
        return (0, int(m.group(1)), "") if m else (1, 0, key)

    return {k: out[k] for k in sorted(out, key=order)}


# --------------------------------------------------------------------------------------
# Closed-form Gram matrices and sharpness measures
# --------------------------------------------------------------------------------------


def diagonal_gram(a: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """K = JJᵀ/n for f = ⟨a⊙b, x⟩: g_i = (b⊙x_i, a⊙x_i), so K = X diag(a² + b²) Xᵀ / n (R4).

    Example:
        >>> X = np.eye(2); K = diagonal_gram(np.array([1.0, 2.0]), np.array([0.0, 1.0]), X)
        >>> K.tolist()
        [[0.5, 0.0], [0.0, 2.5]]
    """
    n = X.shape[0]
    return (X * (a * a + b * b)) @ X.T / n


def relu_gram(W: np.ndarray, a: np.ndarray, X: np.ndarray) -> np.ndarray:
    """K = JJᵀ/n for f = Σ_j a_j σ(w_jᵀx) (R7).

    g_iᵀg_k = Σ_j σ(w_jᵀx_i)σ(w_jᵀx_k) + (x_iᵀx_k) Σ_j a_j² 1{w_jᵀx_i > 0} 1{w_jᵀx_k > 0}.
    """
    n = X.shape[0]
    Z = X @ W.T
    S = np.maximum(Z, 0.0)
    A = (Z > 0) * a
    return (S @ S.T + (A @ A.T) * (X @ X.T)) / n


def spectral_measures(K: np.ndarray) -> dict[str, float]:
    """Tr G = Tr K, ‖G‖_F = ‖K‖_F and λ_max(G) = λ_max(K) (exact, ``eigvalsh``).

    Example:
        >>> spectral_measures(np.diag([3.0, 4.0]))
        {'trace': 7.0, 'frobenius': 5.0, 'lambda_max': 4.0}
    """
    K = 0.5 * (K + K.T)
    return {
        "trace": float(np.trace(K)),
        "frobenius": float(np.linalg.norm(K)),
        "lambda_max": float(np.linalg.eigvalsh(K)[-1]),
    }


def diagonal_measures(
    a: np.ndarray, b: np.ndarray, problem: Problem, *, spectrum: bool = True
) -> dict[str, float]:
    """Sharpness, norms, balancedness and errors of a diagonal net (R4).

    Returns keys ``trace``, ``frobenius``, ``lambda_max`` (if ``spectrum``), ``l1`` = ‖β‖_1,
    ``weighted_l1`` = ‖β‖_{1,s} (s_j = mean_i x_ij²), ``l2``, ``balancedness`` r(θ) =
    Σ(a²+b²)/(2Σ|ab|), ``train_loss`` (½-MSE), ``test_mse`` = mean (f − f*)² on the test set,
    ``test_mse_rel`` = test_mse / mean f*², ``beta_err2`` = ‖β − β*‖².
    """
    X, y = problem.X, problem.y
    beta = a * b
    s = np.mean(X * X, axis=0)
    out: dict[str, float] = {}
    if spectrum:
        out.update(spectral_measures(diagonal_gram(a, b, X)))
    else:
        out["trace"] = float(np.sum(s * (a * a + b * b)))
    res = X @ beta - y
    test_res = problem.X_test @ beta - problem.y_test
    out.update(
        l1=float(np.abs(beta).sum()),
        weighted_l1=float(np.sum(s * np.abs(beta))),
        l2=float(np.linalg.norm(beta)),
        balancedness=float(np.sum(a * a + b * b) / (2.0 * np.sum(np.abs(beta)))),
        train_loss=float(0.5 * np.mean(res * res)),
        test_mse=float(np.mean(test_res * test_res)),
        test_mse_rel=float(np.mean(test_res * test_res) / np.mean(problem.y_test**2)),
        beta_err2=float(np.sum((beta - problem.teacher) ** 2)),
    )
    return out


def relu_measures(
    W: np.ndarray, a: np.ndarray, problem: Problem, *, spectrum: bool = True
) -> dict[str, float]:
    """Sharpness, path norm and errors of a two-layer ReLU net (R7).

    Returns ``trace``, ``frobenius``, ``lambda_max`` (if ``spectrum``; otherwise only the
    closed-form trace), ``path_norm`` = Σ_j |a_j| ‖w_j‖, ``train_loss``, ``test_mse``,
    ``test_mse_rel``, ``grad_norm`` = ‖∇L(θ)‖.
    """
    X, y = problem.X, problem.y
    n = X.shape[0]
    Z = X @ W.T
    act = Z > 0
    S = Z * act
    res = S @ a - y
    out: dict[str, float] = {}
    if spectrum:
        out.update(spectral_measures(relu_gram(W, a, X)))
    else:
        sq = np.sum(X * X, axis=1)
        out["trace"] = float((np.sum(S * S) + np.sum(act * (a * a) * sq[:, None])) / n)
    g_a = S.T @ res / n
    g_W = ((res[:, None] * act) * a).T @ X / n
    test_pred = np.maximum(problem.X_test @ W.T, 0.0) @ a
    test_res = test_pred - problem.y_test
    out.update(
        path_norm=float(np.sum(np.abs(a) * np.linalg.norm(W, axis=1))),
        train_loss=float(0.5 * np.mean(res * res)),
        test_mse=float(np.mean(test_res * test_res)),
        test_mse_rel=float(np.mean(test_res * test_res) / np.mean(problem.y_test**2)),
        grad_norm=float(math.sqrt(np.sum(g_a * g_a) + np.sum(g_W * g_W))),
    )
    return out


# --------------------------------------------------------------------------------------
# Fast-path trainers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastRunResult:
    """Outcome of a fast-path training run (fields named like ``dynstab.training.TrainResult``).

    Attributes:
        converged: Loss ≤ ``stop_loss`` with ≥ ``min_full_lr_fraction`` of the steps at full η.
        diverged: Non-finite loss or loss above ``divergence_loss``.
        steps_run: Number of updates performed.
        final_loss: ½-MSE training loss at the end.
        lr_at_convergence: Learning rate of the last update before the stop check (None if not
            converged).
        lr_at_1e6: Learning rate in effect when the loss fell below 1e−6 for the last time
            (the start of the final descent; a loss that rose above 1e−6 again, e.g. after
            converging early in the warm-up, resets it). None if the final loss is above 1e−6.
        step_at_1e6: The corresponding step.
        seconds: Wall-clock time of the loop.
        history: ``{"step": [...], "lr": [...], "loss": [...], <monitor keys>: [...]}``.
    """

    converged: bool
    diverged: bool
    steps_run: int
    final_loss: float
    lr_at_convergence: float | None
    lr_at_1e6: float | None
    step_at_1e6: int | None
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (without the history)."""
        d = asdict(self)
        d.pop("history")
        return d


def warmup_multipliers(t0: int, count: int, warmup_steps: int, power: float) -> np.ndarray:
    """Multipliers m_t = min(1, (t+1)/T_w)^k for t = t0 … t0+count−1 (1 if T_w = 0).

    Identical to :func:`dynstab.training.warmup` (update t uses (t+1)/T_w of the ramp).

    Example:
        >>> warmup_multipliers(0, 5, 4, 1.0).tolist()
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    t = np.arange(t0, t0 + count, dtype=np.float64)
    if warmup_steps <= 0:
        return np.ones(count)
    return np.minimum(1.0, (t + 1.0) / warmup_steps) ** power


class _Model:
    """Closed-form model on a flat parameter vector θ (float64), used by :func:`_fast_loop`."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.n, self.d = self.X.shape

    def loss(self, theta: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, theta: np.ndarray, idx: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def sgd1_chunk(
        self, theta: np.ndarray, idx: np.ndarray, lrs: np.ndarray, clip: float | None
    ) -> None:
        """In-place B = 1 updates for the indices ``idx`` with learning rates ``lrs``."""
        for i, lr in zip(idx.tolist(), lrs.tolist()):
            g = self.grad(theta, np.array([i]))
            if clip is not None:
                nrm = float(np.linalg.norm(g))
                if nrm > clip:
                    g *= clip / nrm
            theta -= lr * g


class _DiagonalModel(_Model):
    """f(x) = ⟨a⊙b, x⟩ with θ = (a, b)."""

    def loss(self, theta: np.ndarray) -> float:
        d = self.d
        r = self.X @ (theta[:d] * theta[d:]) - self.y
        return float(0.5 * np.dot(r, r) / self.n)

    def grad(self, theta: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        d = self.d
        a, b = theta[:d], theta[d:]
        Xb = self.X if idx is None else self.X[idx]
        yb = self.y if idx is None else self.y[idx]
        r = Xb @ (a * b) - yb
        gbeta = Xb.T @ r / Xb.shape[0]
        return np.concatenate([gbeta * b, gbeta * a])

    def sgd1_chunk(
        self, theta: np.ndarray, idx: np.ndarray, lrs: np.ndarray, clip: float | None
    ) -> None:
        if clip is not None:
            super().sgd1_chunk(theta, idx, lrs, clip)
            return
        d = self.d
        a, b = theta[:d], theta[d:]  # views: updated in place
        X, y = self.X, self.y
        for i, lr in zip(idx.tolist(), lrs.tolist()):
            x = X[i]
            r = float(np.dot(a * b, x)) - y[i]
            c = lr * r * x
            ga = c * b
            b -= c * a
            a -= ga


class _ReLUModel(_Model):
    """f(x) = Σ_j a_j σ(w_jᵀx) with θ = (vec(W) row-major, a), W of shape (m, d)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, m: int) -> None:
        super().__init__(X, y)
        self.m = m

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        md = self.m * self.d
        return theta[:md].reshape(self.m, self.d), theta[md:]

    def loss(self, theta: np.ndarray) -> float:
        W, a = self.split(theta)
        r = np.maximum(self.X @ W.T, 0.0) @ a - self.y
        return float(0.5 * np.dot(r, r) / self.n)

    def grad(self, theta: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        W, a = self.split(theta)
        Xb = self.X if idx is None else self.X[idx]
        yb = self.y if idx is None else self.y[idx]
        Z = Xb @ W.T
        act = Z > 0
        S = Z * act
        r = S @ a - yb
        B = Xb.shape[0]
        g_a = S.T @ r / B
        g_W = ((r[:, None] * act) * a).T @ Xb / B
        return np.concatenate([g_W.ravel(), g_a])

    def sgd1_chunk(
        self, theta: np.ndarray, idx: np.ndarray, lrs: np.ndarray, clip: float | None
    ) -> None:
        if clip is not None:
            super().sgd1_chunk(theta, idx, lrs, clip)
            return
        W, a = self.split(theta)  # views
        X, y = self.X, self.y
        for i, lr in zip(idx.tolist(), lrs.tolist()):
            x = X[i]
            z = W @ x
            act = z > 0
            s = z * act
            r = float(np.dot(a, s)) - y[i]
            coef = (lr * r) * (a * act)
            a -= (lr * r) * s
            W -= np.outer(coef, x)


def _fast_loop(
    model: _Model,
    theta: np.ndarray,
    *,
    lr: float,
    max_steps: int,
    batch_size: int | None = 1,
    warmup_steps: int = 0,
    warmup_power: float = 3.0,
    seed: int = 0,
    stop_loss: float = 1e-10,
    min_full_lr_fraction: float = 0.2,
    check_every: int = 100,
    divergence_loss: float = 1e12,
    clip: float | None = None,
    monitor: Callable[[np.ndarray], Mapping[str, float]] | None = None,
    record_every: int | None = None,
    progress: bool = False,
) -> FastRunResult:
    """Run SGD (``batch_size`` = B, with replacement) or GD (``batch_size=None``) in place.

    Defaults and meaning of the settings: :class:`FastOptions`.
    """
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}.")
    if max_steps < 1 or check_every < 1:
        raise ValueError(
            f"max_steps and check_every must be >= 1; got {max_steps} and {check_every}."
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (GD); got {batch_size}.")
    if record_every and record_every % check_every:
        raise ValueError(
            f"record_every must be a multiple of check_every; got {record_every} and "
            f"{check_every}. Round record_every to a multiple of check_every."
        )
    rng = np.random.default_rng([seed, _STREAM_SAMPLER])
    hist: dict[str, list[float]] = {"step": [], "lr": [], "loss": []}

    def record(t: int, lr_t: float, loss: float) -> None:
        hist["step"].append(float(t))
        hist["lr"].append(lr_t)
        hist["loss"].append(loss)
        if monitor is not None:
            for k, v in monitor(theta).items():
                hist.setdefault(k, []).append(float(v))

    start = time.perf_counter()
    loss = model.loss(theta)
    if record_every:
        record(0, 0.0, loss)
    chunk = check_every
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, desc=f"lr={lr:.3g}", leave=False)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, lr_t, t, converged, diverged, lr_conv, lr_1e6, step_1e6 = _run_chunks(
            model,
            theta,
            rng,
            record,
            bar,
            lr=lr,
            max_steps=max_steps,
            batch_size=batch_size,
            warmup_steps=warmup_steps,
            warmup_power=warmup_power,
            stop_loss=stop_loss,
            min_full_lr_fraction=min_full_lr_fraction,
            chunk=chunk,
            divergence_loss=divergence_loss,
            clip=clip,
            record_every=record_every,
        )
    if bar is not None:
        bar.close()
    if diverged:
        warnings.warn(
            f"fast-path training diverged at step {t}: loss {loss:.3g} at lr={lr_t:.3g}. The run "
            "is flagged diverged=True; lower lr or lengthen the warm-up.",
            DivergenceWarning,
            stacklevel=3,
        )
    elif not converged and stop_loss > 0:
        warnings.warn(
            f"fast-path training did not converge in {max_steps} steps (loss {loss:.3g} > "
            f"{stop_loss:g} or < {min_full_lr_fraction:g} of the steps at full lr); flagged "
            "converged=False. Increase the step budget.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return FastRunResult(
        converged=converged,
        diverged=diverged,
        steps_run=t,
        final_loss=float(loss),
        lr_at_convergence=lr_conv,
        lr_at_1e6=lr_1e6,
        step_at_1e6=step_1e6,
        seconds=time.perf_counter() - start,
        history=hist,
    )


def _run_chunks(
    model: _Model,
    theta: np.ndarray,
    rng: np.random.Generator,
    record: Callable[[int, float, float], None],
    bar: Any,
    *,
    lr: float,
    max_steps: int,
    batch_size: int | None,
    warmup_steps: int,
    warmup_power: float,
    stop_loss: float,
    min_full_lr_fraction: float,
    chunk: int,
    divergence_loss: float,
    clip: float | None,
    record_every: int | None,
) -> tuple[float, float, int, bool, bool, float | None, float | None, int | None]:
    """The training loop of :func:`_fast_loop` (updates ``theta`` in place)."""
    t = 0
    lr_t = 0.0
    loss = float("nan")
    converged = diverged = False
    lr_conv: float | None = None
    lr_1e6: float | None = None
    step_1e6: int | None = None
    while t < max_steps:
        count = min(chunk, max_steps - t)
        lrs = lr * warmup_multipliers(t, count, warmup_steps, warmup_power)
        if batch_size is None:
            for lr_t in lrs.tolist():
                g = model.grad(theta, None)
                if clip is not None:
                    nrm = float(np.linalg.norm(g))
                    if nrm > clip:
                        g *= clip / nrm
                theta -= lr_t * g
        elif batch_size == 1:
            idx = rng.integers(0, model.n, size=count)
            model.sgd1_chunk(theta, idx, lrs, clip)
        else:
            for lr_t in lrs.tolist():
                g = model.grad(theta, rng.integers(0, model.n, size=batch_size))
                if clip is not None:
                    nrm = float(np.linalg.norm(g))
                    if nrm > clip:
                        g *= clip / nrm
                theta -= lr_t * g
        lr_t = float(lrs[-1])
        t += count
        if bar is not None:
            bar.update(count)
        loss = model.loss(theta)
        if not math.isfinite(loss) or loss > divergence_loss:
            diverged = True
            if record_every:
                record(t, lr_t, loss)
            break
        if loss > LR_PROBE_LOSS:
            lr_1e6 = step_1e6 = None
        elif lr_1e6 is None:
            lr_1e6, step_1e6 = lr_t, t
        full_steps = max(0, t - warmup_steps)
        if loss <= stop_loss and full_steps >= min_full_lr_fraction * t:
            converged, lr_conv = True, lr_t
            if record_every:
                record(t, lr_t, loss)
            break
        if record_every and t % record_every == 0:
            record(t, lr_t, loss)
    return loss, lr_t, t, converged, diverged, lr_conv, lr_1e6, step_1e6


class FastOptions(TypedDict, total=False):
    """Optional settings of :func:`train_diagonal_fast` / :func:`train_relu_fast`.

    Keys (defaults in brackets):
        batch_size: B for SGD with replacement; ``None`` for full-batch GD [1].
        warmup_steps: T_w, 0 = constant η [0].
        warmup_power: k (3 = cubic, the spec's A6) [3.0].
        seed: Seed of the batch sampler [0].
        stop_loss: Convergence tolerance on L [1e−10].
        min_full_lr_fraction: Fraction of the steps that must be at full η (A7) [0.2].
        check_every: Steps between loss checks (and the granularity of ``steps_run``) [100].
        divergence_loss: A loss above this (or non-finite) stops the run as diverged [1e12].
        clip: Optional gradient-norm clipping threshold (A6 option) [None].
        record_every: Record (step, lr, loss, monitor) every this many steps (a multiple of
            ``check_every``); None records nothing [None].
        progress: Show a tqdm bar [False].
    """

    batch_size: int | None
    warmup_steps: int
    warmup_power: float
    seed: int
    stop_loss: float
    min_full_lr_fraction: float
    check_every: int
    divergence_loss: float
    clip: float | None
    record_every: int | None
    progress: bool


def train_diagonal_fast(
    X: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    lr: float,
    max_steps: int,
    monitor: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
    **options: Unpack[FastOptions],
) -> tuple[np.ndarray, np.ndarray, FastRunResult]:
    """Train f(x) = ⟨a⊙b, x⟩ with SGD (B, with replacement) or GD on the ½-MSE loss.

    Update: θ_{t+1} = θ_t − η_t (1/B) Σ_{i∈I_t} ∇ℓ_i(θ_t), η_t = lr·min(1, (t+1)/T_w)^k,
    with ∇_a ℓ_i = r_i b⊙x_i and ∇_b ℓ_i = r_i a⊙x_i, r_i = ⟨a⊙b, x_i⟩ − y_i. Cost per B = 1
    step: O(d) NumPy work (≈ 5–10 µs at d = 1000). The loss is checked every ``check_every``
    steps (O(nd)); stopping follows the module's convergence rule (A7).

    Args:
        X: Inputs ``(n, d)``.
        y: Targets ``(n,)``.
        a: Initial first layer ``(d,)`` (copied).
        b: Initial second layer ``(d,)`` (copied).
        lr: Target learning rate η > 0.
        max_steps: Maximum number of updates.
        monitor: ``monitor(a, b) -> {name: value}`` evaluated at each recorded point.
        **options: :class:`FastOptions` (batch size, warm-up, sampler seed, stopping rule, ...).

    Returns:
        ``(a_T, b_T, result)``.

    Raises:
        ValueError: On non-positive ``lr``, ``max_steps``, ``check_every`` or ``batch_size``.
    """
    d = X.shape[1]
    model = _DiagonalModel(X, y)
    theta = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    mon = None if monitor is None else (lambda th: monitor(th[:d], th[d:]))
    res = _fast_loop(model, theta, lr=lr, max_steps=max_steps, monitor=mon, **options)
    return theta[:d].copy(), theta[d:].copy(), res


def train_relu_fast(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    a: np.ndarray,
    *,
    lr: float,
    max_steps: int,
    monitor: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
    **options: Unpack[FastOptions],
) -> tuple[np.ndarray, np.ndarray, FastRunResult]:
    """Train f(x) = Σ_j a_j σ(w_jᵀx) with SGD (B, with replacement) or GD on the ½-MSE loss.

    Gradients: ∇_{a_j} ℓ_i = r_i σ(w_jᵀx_i), ∇_{w_j} ℓ_i = r_i a_j 1{w_jᵀx_i > 0} x_i (the
    subgradient σ'(0) = 0, as in autograd). Cost per B = 1 step: O(md). Arguments as in
    :func:`train_diagonal_fast`, with ``W`` of shape ``(m, d)`` and ``a`` of shape ``(m,)``.

    Returns:
        ``(W_T, a_T, result)``.

    Raises:
        ValueError: As for :func:`train_diagonal_fast`.
    """
    m = W.shape[0]
    model = _ReLUModel(X, y, m)
    theta = np.concatenate([np.asarray(W, np.float64).ravel(), np.asarray(a, np.float64)])
    mon = None if monitor is None else (lambda th: monitor(*model.split(th)))
    res = _fast_loop(model, theta, lr=lr, max_steps=max_steps, monitor=mon, **options)
    W_T, a_T = model.split(theta)
    return W_T.copy(), a_T.copy(), res


# --------------------------------------------------------------------------------------
# Thresholds and analysis helpers
# --------------------------------------------------------------------------------------


def sgd_curvature_threshold(
    lr: float, n: int, batch_size: int = 1, sampling: str = "with"
) -> float:
    """The R1 bound on Tr H at an SGD-stable minimum: 2/(η q), q = p + (1 − p)/n.

    q comes from :func:`dynstab.criteria.q_factor`; for B = 1 (either scheme) q = 1 and the
    bound is 2/η (:func:`dynstab.criteria.gd_threshold` evaluated at η).

    Example:
        >>> sgd_curvature_threshold(0.1, 300)
        20.0
    """
    from dynstab.criteria.sampling import q_factor

    return 2.0 / (lr * q_factor(n, batch_size, sampling))


def effective_lr(run: Mapping[str, Any]) -> float:
    """The learning rate to test a converged run against (A7): ``lr_at_1e6`` if set, else ``lr``."""
    lr_1e6 = run.get("lr_at_1e6")
    return float(lr_1e6) if lr_1e6 else float(run["lr"])


def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN if none)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(np.median(arr)) if arr.size else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties; NaN if < 3 points or constant).

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 8, 9, 1]), 12)
        -0.8
    """
    from scipy.stats import rankdata

    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}.")
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def fmt(x: float | None, digits: int = 3) -> str:
    """Format a number compactly (``'nan'``/``'—'`` for missing).

    Example:
        >>> fmt(0.000123456), fmt(None)
        ('0.000123', '—')
    """
    if x is None:
        return "—"
    return f"{x:.{digits}g}"


def make_claim(claim_id: str, statement: str, measured: str, passed: bool, criterion: str) -> Claim:
    """Build a :class:`~dynstab_repro.base.Claim` (NaN comparisons count as failed)."""
    return Claim(claim_id, statement, measured, bool(passed), criterion)


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


def gd_curvature_threshold(lr: float) -> float:
    """The GD bound on λ_max at a GD-stable minimum: 2/η (:func:`dynstab.criteria.gd_threshold`).

    Example:
        >>> gd_curvature_threshold(0.5)
        4.0
    """
    try:
        from dynstab.criteria import gd_threshold
    except ImportError:  # pragma: no cover - stability package not assembled yet
        return 2.0 / lr
    return float(gd_threshold(lr))


def save_figure_pair(fig: Any, fig_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` in ``fig_dir`` (atomic) and close it."""
    from dynstab.plotting.figures import save_figure

    return [Path(p) for p in save_figure(fig, Path(fig_dir) / stem)]


def styled(fn: F) -> F:
    """Decorator: run a plotting function inside :func:`dynstab.plotting.style.rc_context`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dynstab.plotting.style import rc_context

        with rc_context():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# One sweep unit: train once, measure at initialization and at convergence (E1–E4)
# --------------------------------------------------------------------------------------

_FAMILIES: dict[str, tuple[Callable[..., Any], Callable[..., dict[str, float]]]] = {
    "diagonal": (train_diagonal_fast, diagonal_measures),
    "relu": (train_relu_fast, relu_measures),
}


def sweep_specs(config: Any, field_name: str, values: Iterable[float]) -> list[RunSpec]:
    """One unit per (optimizer, value, seed) of a sweep over ``field_name``.

    E1 sweeps ``lr``, E4 ``label``; keys read ``<opt>_lr=<value>_seed=<seed>``.

    Example:
        >>> [s.key for s in sweep_specs(SweepConfig(seeds=(0,), optimizers=("gd",)), "lr", [0.1])]
        ['gd_lr=0.1_seed=0']
    """
    return [
        RunSpec(f"{opt}_lr={v:.5g}_seed={seed}", {"optimizer": opt, field_name: v, "seed": seed})
        for opt in config.optimizers
        for v in values
        for seed in config.seeds
    ]


def gd_warmup_steps(config: Any, lr: float, lambda_max0: float) -> int:
    """GD warm-up length (A12): ``gd_warmup_steps`` when needed or forced, else 0.

    ``config.gd_warmup_steps`` if ``gd_warmup`` is ``"always"``, or ``"auto"`` and
    η > 2/λ_max(G_0); otherwise 0 (plain GD at constant η).

    Example:
        >>> gd_warmup_steps(SweepConfig(), 0.1, 30.0), gd_warmup_steps(SweepConfig(), 0.01, 30.0)
        (5000, 0)
    """
    needs = lr > 2.0 / lambda_max0
    use = config.gd_warmup == "always" or (config.gd_warmup == "auto" and needs)
    return int(config.gd_warmup_steps) if use else 0


def run_unit(
    config: Any,
    *,
    opt: str,
    lr: float,
    seed: int,
    params0: tuple[np.ndarray, np.ndarray] | None = None,
    steps: int | None = None,
    warmup_steps: int | None = None,
    record_points: int | None = None,
    monitor_keys: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one E1–E4 run with the fast trainer and return its JSON-able metrics.

    The model family follows the config: a :class:`DiagonalDataConfig` trains f = ⟨a⊙b, x⟩,
    a :class:`ReLUDataConfig` the two-layer ReLU net, on ``config.problem(seed)``. SGD uses
    B = ``config.batch_size``, loss checks every 100 steps and (by default) the budget
    ``sgd_steps``/``sgd_warmup_steps``; GD uses loss checks every 10 steps, ``gd_steps`` and
    the warm-up of :func:`gd_warmup_steps` (decided on λ_max(G_0)).

    Args:
        config: An E1–E4 config (data fields, :class:`TrainerConfig` fields and, unless
            ``steps``/``warmup_steps`` are given, :class:`SweepConfig` fields).
        opt: ``"sgd"`` or ``"gd"``.
        lr: Target learning rate η.
        seed: Seed of data, initialization and sampler.
        params0: Initial parameters ((a, b) or (W, a)); default ``config.initial_params(seed)``.
        steps: Step budget (default from the config, see above).
        warmup_steps: Warm-up length (default from the config, see above).
        record_points: Record about this many history points (None: no history).
        monitor_keys: Cheap measures (``spectrum=False``) recorded at each history point.
        extra: Entries merged into the result.

    Returns:
        ``optimizer, lr, seed, used_warmup``, the trainer's :meth:`FastRunResult.to_dict`, the
        final measures of :func:`diagonal_measures`/:func:`relu_measures` (NaN if diverged), the
        same measures at initialization prefixed ``init_``, ``history`` (≤ ``record_points``
        points) if requested, and ``extra``.

    Raises:
        ValueError: For an unknown optimizer.
        TypeError: For a config that is neither a diagonal nor a ReLU data config.
    """
    if opt not in ("sgd", "gd"):
        raise ValueError(f"optimizer must be 'sgd' or 'gd'; got {opt!r}.")
    if isinstance(config, DiagonalDataConfig):
        family = "diagonal"
    elif isinstance(config, ReLUDataConfig):
        family = "relu"
    else:
        raise TypeError(
            "config must be a DiagonalDataConfig or ReLUDataConfig (E1–E4); got "
            f"{type(config).__name__}. Pass an E1–E4 config."
        )
    train, measures = _FAMILIES[family]
    problem = config.problem(seed)
    p0, q0 = config.initial_params(seed) if params0 is None else params0
    init = measures(p0, q0, problem)
    if opt == "sgd":
        steps = config.sgd_steps if steps is None else steps
        warm = config.sgd_warmup_steps if warmup_steps is None else warmup_steps
        batch, check = config.batch_size, 100
    else:
        steps = config.gd_steps if steps is None else steps
        warm = (
            gd_warmup_steps(config, lr, init["lambda_max"])
            if warmup_steps is None
            else warmup_steps
        )
        batch, check = None, 10
    record_every = None
    monitor = None
    if record_points:
        record_every = max(check, (steps // record_points) // check * check)

        def monitor(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
            m = measures(p, q, problem, spectrum=False)
            return {k: m[k] for k in monitor_keys}

    p, q, res = train(
        problem.X,
        problem.y,
        p0,
        q0,
        lr=lr,
        max_steps=steps,
        monitor=monitor,
        batch_size=batch,
        warmup_steps=warm,
        warmup_power=config.warmup_power,
        seed=seed,
        stop_loss=config.stop_loss,
        min_full_lr_fraction=config.min_full_lr_fraction,
        check_every=check,
        clip=config.clip,
        record_every=record_every,
        progress=config.progress,
    )
    out: dict[str, Any] = {"optimizer": opt, "lr": lr, "seed": seed, "used_warmup": warm > 0}
    out.update(res.to_dict())
    if res.diverged or not math.isfinite(res.final_loss):
        out.update({k: float("nan") for k in init})
    else:
        out.update(measures(p, q, problem))
    out.update({f"init_{k}": v for k, v in init.items()})
    if record_points:
        out["history"] = subsample_history(res.history, record_points)
    if extra:
        out.update(extra)
    return out


# --------------------------------------------------------------------------------------
# Selection and summaries of unit results (medians over seeds)
# --------------------------------------------------------------------------------------


def is_ok(run: Mapping[str, Any]) -> bool:
    """A run that converged and did not diverge."""
    return bool(run.get("converged")) and not run.get("diverged")


def select(
    results: Mapping[str, Mapping[str, Any]],
    optimizer: str,
    *,
    converged_only: bool = True,
    **match: float,
) -> list[dict[str, Any]]:
    """The runs of ``optimizer`` whose fields equal ``match`` (rel. tol 1e−9), e.g. ``lr=0.05``.

    Example:
        >>> res = {"a": {"optimizer": "sgd", "lr": 0.1, "converged": True},
        ...        "b": {"optimizer": "sgd", "lr": 0.2, "converged": False}}
        >>> len(select(res, "sgd")), len(select(res, "sgd", converged_only=False, lr=0.2))
        (1, 1)
    """
    return _select(results, optimizer, converged_only, match)


def _select(
    results: Mapping[str, Mapping[str, Any]],
    optimizer: str,
    converged_only: bool,
    match: Mapping[str, float],
) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in results.values()
        if r.get("optimizer") == optimizer
        and all(math.isclose(r[k], v, rel_tol=1e-9) for k, v in match.items())
        and (not converged_only or is_ok(r))
    ]


def medians(
    results: Mapping[str, Mapping[str, Any]],
    optimizer: str,
    key: str,
    by: str,
    values: Iterable[float],
    **fixed: float,
) -> list[float]:
    """Median over the converged runs of ``key`` for each value of the field ``by``.

    Example:
        >>> res = {str(i): {"optimizer": "gd", "lr": 0.1, "converged": True, "t": i}
        ...        for i in range(3)}
        >>> medians(res, "gd", "t", "lr", [0.1, 0.2])
        [1.0, nan]
    """
    return [
        median([r[key] for r in _select(results, optimizer, True, {**fixed, by: v})])
        for v in values
    ]


def worst_trace_ratio(runs: Iterable[Mapping[str, Any]], n: int, batch_size: int) -> float:
    """Maximum over ``runs`` of Tr G / (2/(q η_eff)) (R1 at the effective η, A7).

    NaN if there are no runs or any ratio is non-finite (see :func:`strict_max`).
    """
    ratios = [r["trace"] / sgd_curvature_threshold(effective_lr(r), n, batch_size) for r in runs]
    return strict_max(ratios)


def max_over_min(values: Sequence[float], *, skip_missing: bool = False) -> float:
    """Ratio max/min of positive values (NaN if empty, non-positive or with missing values).

    A non-finite value makes the result NaN unless ``skip_missing``, which drops it.

    Example:
        >>> max_over_min([2.0, 4.0]), max_over_min([2.0, float("nan")], skip_missing=True)
        (2.0, 1.0)
    """
    v = [x for x in values if math.isfinite(x)] if skip_missing else list(values)
    if not v or not all(math.isfinite(x) for x in v) or min(v) <= 0:
        return float("nan")
    return max(v) / min(v)


def strict_min(values: Sequence[float]) -> float:
    """Minimum of ``values``, NaN if empty or if any value is non-finite (order-independent).

    Python's ``min`` ignores a NaN unless it comes first; a claim must instead fail on a
    missing (NaN) median wherever it sits.

    Example:
        >>> strict_min([2.0, 1.0]), strict_min([1.0, float("nan")]), strict_min([])
        (1.0, nan, nan)
    """
    v = list(values)
    if not v or not all(math.isfinite(x) for x in v):
        return float("nan")
    return float(min(v))


def strict_max(values: Sequence[float]) -> float:
    """Maximum of ``values``, NaN if empty or if any value is non-finite (order-independent).

    Example:
        >>> strict_max([2.0, 1.0]), strict_max([1.0, float("nan")])
        (2.0, nan)
    """
    v = list(values)
    if not v or not all(math.isfinite(x) for x in v):
        return float("nan")
    return float(max(v))


def count_finite(values: Iterable[float]) -> int:
    """How many of ``values`` are finite (e.g. medians of η values with a converged run).

    Example:
        >>> count_finite([1.0, float("nan"), float("inf"), 2.0])
        2
    """
    return sum(1 for x in values if math.isfinite(x))


def summary_cells(
    optimizer: str, runs: Sequence[Mapping[str, Any]], keys: Iterable[str]
) -> dict[str, Any]:
    """Table cells ``<optimizer>_<key>`` (medians over ``runs``) and ``<optimizer>_converged``."""
    row: dict[str, Any] = {f"{optimizer}_{k}": median([r[k] for r in runs]) for k in keys}
    row[f"{optimizer}_converged"] = f"{sum(bool(r.get('converged')) for r in runs)}/{len(runs)}"
    return row


# --------------------------------------------------------------------------------------
# Plotting helpers
# --------------------------------------------------------------------------------------


def loglog_panel(
    ax: Any,
    *,
    xlabel: str,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
) -> None:
    """Log–log axes with labels, title and a small legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)


def plot_optimizer_medians(
    ax: Any,
    results: Mapping[str, Mapping[str, Any]],
    optimizers: Iterable[str],
    key: str,
    by: str,
    values: Sequence[float],
    *,
    label_suffix: str = "",
    **fixed: float,
) -> None:
    """One line of :func:`medians` per configured optimizer (SGD: circles, GD: squares)."""
    for opt, mk in (("sgd", "o"), ("gd", "s")):
        if opt in optimizers:
            med = medians(results, opt, key, by, values, **fixed)
            ax.plot(values, med, marker=mk, label=opt.upper() + label_suffix)


# --------------------------------------------------------------------------------------
# Experiment plumbing
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with one BLAS/OpenMP thread (``threadpoolctl``) and one torch thread.

    The fast-path trainers multiply small matrices (at most 300×1000) thousands of times; a
    multi-threaded BLAS only adds synchronisation cost there (measured 6× slower on 2 busy
    cores), and the runner parallelises over units anyway. The framework's own limit
    (:mod:`dynstab_repro.executors`) is ``cores // workers`` threads and applies only to
    the ``local`` executor's worker processes, not to ``serial`` runs nor to fewer workers than
    cores, hence this guard. torch's thread count is restored on exit.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional dependency
            yield
            return
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


class WuSuExperiment(Experiment):
    """Shared plumbing of E1–E5: :meth:`run_one` computes a unit inside :func:`single_thread_blas`.

    Subclasses implement :meth:`compute` (plus ``specs``, ``analyze`` and the metadata).
    """

    def run_one(self, config: Any, spec: RunSpec) -> dict[str, Any]:
        """Compute one unit with one BLAS/OpenMP/torch thread (see :func:`single_thread_blas`)."""
        with single_thread_blas():
            return self.compute(config, spec)

    @abc.abstractmethod
    def compute(self, config: Any, spec: RunSpec) -> dict[str, Any]:
        """Compute one unit; return JSON-able metrics."""
