"""Shared machinery of the Wu & Su (ICML 2023) reproduction (spec ``wu_su_2023.md``).

Contents:

* data sets (Gaussian / sphere / cube inputs, sparse-linear and sum-of-ReLU teachers) drawn
  from a NumPy ``Generator`` seeded per run, so every unit of work is reproducible on its own;
* closed-form per-sample output gradients of the two model families and their Gram matrices
  K = JJᵀ/n (n×n), whose spectrum equals that of G = JᵀJ/n (spec §2, R4, R7);
* private *fast-path trainers*: tight NumPy loops with closed-form gradients for SGD/GD on the
  diagonal linear net f(x) = ⟨a⊙b, x⟩ and the bias-free two-layer ReLU net
  f(x) = Σ_j a_j σ(w_jᵀx). They implement exactly the update of :func:`dynstab.training.train`
  (½-MSE, θ ← θ − η_t (1/B) Σ_{i∈I_t} ∇ℓ_i, warm-up η_t = η·min(1, (t+1)/T_w)^k) but cost a few
  microseconds per B = 1 step instead of the generic trainer's autograd overhead, which makes
  the spec's 3·10⁵-step SGD runs take seconds;
* small analysis helpers (medians over seeds, Spearman correlation, claim formatting).

Loss convention (A9): ℓ_i(θ) = ½ (f(x_i; θ) − y_i)², L(θ) = (1/n) Σ_i ℓ_i(θ). Without the ½
every threshold 2/η below would become 1/η.

Convergence rule (shared protocol, A7): a run stops at the first loss check with
L ≤ ``stop_loss`` *and* at least ``min_full_lr_fraction`` of its steps taken at the full η,
i.e. t − T_w ≥ fraction·t. The learning rate in effect when the loss fell below 1e−6 for the
last time (checked every ``check_every`` steps) is recorded as ``lr_at_1e6``; bounds are tested
against it (:func:`effective_lr`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dynstab.errors import ConvergenceWarning, DivergenceWarning
from dynstab.experiments.base import Claim

__all__ = [
    "INPUT_KINDS",
    "FastRunResult",
    "Problem",
    "diagonal_gram",
    "diagonal_measures",
    "diagonal_problem",
    "effective_lr",
    "fmt",
    "gd_curvature_threshold",
    "make_claim",
    "make_inputs",
    "median",
    "relu_gram",
    "relu_measures",
    "relu_problem",
    "save_figure_pair",
    "sgd_curvature_threshold",
    "single_thread_blas",
    "spearman",
    "spectral_measures",
    "styled",
    "subsample_history",
    "train_diagonal_fast",
    "train_relu_fast",
    "warmup_multipliers",
]

F = TypeVar("F", bound=Callable[..., Any])

INPUT_KINDS: tuple[str, ...] = ("gaussian", "sphere", "cube")

#: Loss level whose first crossing defines the "effective" learning rate (spec A7).
LR_PROBE_LOSS = 1e-6


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def make_inputs(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` inputs in R^d (float64, shape ``(n, d)``).

    ``"gaussian"``: x ~ N(0, I_d); ``"sphere"``: x ~ Unif(√d S^{d−1}) (‖x‖ = √d);
    ``"cube"``: x ~ Unif[−1, 1]^d.

    Raises:
        ValueError: For an unknown ``kind``.

    Example:
        >>> X = make_inputs("sphere", 4, 9, np.random.default_rng(0))
        >>> np.allclose(np.linalg.norm(X, axis=1), 3.0)
        True
    """
    if kind == "gaussian":
        return rng.standard_normal((n, d))
    if kind == "sphere":
        Z = rng.standard_normal((n, d))
        return math.sqrt(d) * Z / np.linalg.norm(Z, axis=1, keepdims=True)
    if kind == "cube":
        return rng.uniform(-1.0, 1.0, size=(n, d))
    raise ValueError(f"inputs must be one of {list(INPUT_KINDS)}; got {kind!r}.")


@dataclass(frozen=True)
class Problem:
    """A regression data set with a noiseless teacher.

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


def diagonal_problem(
    *, d: int, n: int, n_test: int, inputs: str, support: int, seed: int
) -> Problem:
    """Sparse linear teacher β* = (1, …, 1, 0, …) (``support`` ones) on ``inputs`` data (E1, E2).

    Example:
        >>> p = diagonal_problem(d=5, n=3, n_test=4, inputs="gaussian", support=2, seed=0)
        >>> p.X.shape, p.teacher.tolist(), np.allclose(p.y, p.X @ p.teacher)
        ((3, 5), [1.0, 1.0, 0.0, 0.0, 0.0], True)
    """
    rng = np.random.default_rng([seed, 1])
    beta_star = np.zeros(d)
    beta_star[:support] = 1.0
    X = make_inputs(inputs, n, d, rng)
    X_test = make_inputs(inputs, n_test, d, rng)
    return Problem(X, X @ beta_star, X_test, X_test @ beta_star, beta_star)


def relu_problem(*, d: int, n: int, n_test: int, k: int, seed: int) -> Problem:
    """Sum-of-k-ReLU teacher f*(x) = Σ_i σ(v_iᵀx), v_i ~ Unif(S^{d−1}), spherical inputs (E3, E4).

    Example:
        >>> p = relu_problem(d=4, n=3, n_test=2, k=2, seed=0)
        >>> np.allclose(np.linalg.norm(p.teacher, axis=1), 1.0), p.y.shape
        (True, (3,))
    """
    rng = np.random.default_rng([seed, 2])
    V = rng.standard_normal((k, d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    X = make_inputs("sphere", n, d, rng)
    X_test = make_inputs("sphere", n_test, d, rng)
    return Problem(X, relu_teacher(V, X), X_test, relu_teacher(V, X_test), V)


def relu_teacher(V: np.ndarray, X: np.ndarray) -> np.ndarray:
    """f*(x) = Σ_i σ(v_iᵀx) for the rows v_i of ``V``."""
    return np.maximum(X @ V.T, 0.0).sum(axis=1)


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
    batch_size: int | None,
    warmup_steps: int,
    warmup_power: float,
    seed: int,
    stop_loss: float,
    min_full_lr_fraction: float,
    check_every: int,
    divergence_loss: float,
    clip: float | None,
    monitor: Callable[[np.ndarray], Mapping[str, float]] | None,
    record_every: int | None,
    progress: bool,
) -> FastRunResult:
    """Run SGD (``batch_size`` = B, with replacement) or GD (``batch_size=None``) in place."""
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
    rng = np.random.default_rng([seed, 3])
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


def train_diagonal_fast(
    X: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
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
    monitor: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
    record_every: int | None = None,
    progress: bool = False,
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
        batch_size: B for SGD with replacement; ``None`` for full-batch GD.
        warmup_steps: T_w (0 = constant η).
        warmup_power: k (3 = cubic, the spec's A6).
        seed: Seed of the batch sampler.
        stop_loss: Convergence tolerance on L.
        min_full_lr_fraction: Fraction of the steps that must be at full η (A7).
        check_every: Steps between loss checks (and the granularity of ``steps_run``).
        divergence_loss: A loss above this (or non-finite) stops the run as diverged.
        clip: Optional gradient-norm clipping threshold (A6 option).
        monitor: ``monitor(a, b) -> {name: value}`` evaluated at each recorded point.
        record_every: Record (step, lr, loss, monitor) every this many steps (multiple of
            ``check_every``); None records nothing.
        progress: Show a tqdm bar.

    Returns:
        ``(a_T, b_T, result)``.

    Raises:
        ValueError: On non-positive ``lr``, ``max_steps``, ``check_every`` or ``batch_size``.
    """
    d = X.shape[1]
    model = _DiagonalModel(X, y)
    theta = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    mon = None if monitor is None else (lambda th: monitor(th[:d], th[d:]))
    res = _fast_loop(
        model,
        theta,
        lr=lr,
        max_steps=max_steps,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        warmup_power=warmup_power,
        seed=seed,
        stop_loss=stop_loss,
        min_full_lr_fraction=min_full_lr_fraction,
        check_every=check_every,
        divergence_loss=divergence_loss,
        clip=clip,
        monitor=mon,
        record_every=record_every,
        progress=progress,
    )
    return theta[:d].copy(), theta[d:].copy(), res


def train_relu_fast(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    a: np.ndarray,
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
    monitor: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
    record_every: int | None = None,
    progress: bool = False,
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
    res = _fast_loop(
        model,
        theta,
        lr=lr,
        max_steps=max_steps,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        warmup_power=warmup_power,
        seed=seed,
        stop_loss=stop_loss,
        min_full_lr_fraction=min_full_lr_fraction,
        check_every=check_every,
        divergence_loss=divergence_loss,
        clip=clip,
        monitor=mon,
        record_every=record_every,
        progress=progress,
    )
    W_T, a_T = model.split(theta)
    return W_T.copy(), a_T.copy(), res


# --------------------------------------------------------------------------------------
# Thresholds and analysis helpers
# --------------------------------------------------------------------------------------


def sgd_curvature_threshold(
    lr: float, n: int, batch_size: int = 1, sampling: str = "with"
) -> float:
    """The R1 bound on Tr H at an SGD-stable minimum: 2/(η q), q = p + (1 − p)/n.

    q comes from :func:`dynstab.stability.q_factor`; for B = 1 (either scheme) q = 1 and the
    bound is 2/η (:func:`dynstab.stability.gd_threshold` evaluated at η).

    Example:
        >>> sgd_curvature_threshold(0.1, 300)
        20.0
    """
    from dynstab.stability.sampling import q_factor

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
    """Build a :class:`~dynstab.experiments.base.Claim` (NaN comparisons count as failed)."""
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
    """The GD bound on λ_max at a GD-stable minimum: 2/η (:func:`dynstab.stability.gd_threshold`).

    Example:
        >>> gd_curvature_threshold(0.5)
        4.0
    """
    try:
        from dynstab.stability import gd_threshold
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


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Limit BLAS/OpenMP to one thread inside the block (via ``threadpoolctl`` if installed).

    The fast-path trainers multiply small matrices (at most 300×1000) thousands of times; a
    multi-threaded BLAS only adds synchronisation cost there (measured 6× slower on 2 busy
    cores), and the runner parallelises over units anyway.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        yield
        return
    with threadpool_limits(limits=1):
        yield
