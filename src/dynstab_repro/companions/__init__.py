"""Companion reproductions of issue 6, on the same runner and report format as Wu & Su (2023).

Registered experiments (``related_criteria.md`` sections in brackets):

* ``eos/gd-sweep``, ``eos/sgd-batch`` — edge of stability (§7, E6.1–E6.3) on mnist1d;
* ``wme18/toy``, ``wme18/sharpness`` — Wu, Ma & E 2018 (§3);
* ``mm23/sweep`` — Mulayoff & Michaeli 2023 (§4);
* ``mms21/switch``, ``mms21/weight``, ``mms21/sweep`` — Mulayoff, Michaeli & Soudry 2021 (§5);
* ``wws22/alignment`` — Wu, Wang & Su 2022 (§2).

Groups: ``eos``, ``wme18``, ``mm23``, ``mms21``, ``wws22`` and ``companions`` (all of them).

Conventions shared by every companion: the loss is the ½-MSE
L(θ) = (1/n) Σ_i ½‖f(x_i; θ) − y_i‖² (:func:`dynstab.losses.half_mse`), so the GD threshold is
λ_max(H) ≤ 2/η; every stability verdict is computed in float64 from the Gram matrix
K = JJᵀ/n (exact at interpolating minima, where H = G) or from Lanczos on Hessian-vector
products; every unit of work (:class:`~dynstab_repro.RunSpec`) is one independent training
run, so the runner parallelises and resumes them; histories are thinned to at most
:data:`MAX_POINTS` points.

This module holds the helpers the companions share; the experiments live in the submodules.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from dynstab.models import UnivariateReLU

__all__ = [
    "MAX_POINTS",
    "GramMonitor",
    "ShallowNet",
    "alignment_record",
    "batch_indices",
    "digits_task",
    "fast_train",
    "finite",
    "fmt",
    "gram_float64",
    "gram_summary",
    "median",
    "non_uniformity",
    "thin",
    "train_scalar_run",
]

#: Largest number of points stored per recorded curve.
MAX_POINTS = 500


def thin(values: Sequence[Any], max_points: int = MAX_POINTS) -> list[Any]:
    """Evenly spaced subsequence of at most ``max_points`` entries, keeping first and last.

    Example:
        >>> thin(list(range(10)), 4)
        [0, 3, 6, 9]
    """
    vals = list(values)
    if len(vals) <= max_points:
        return vals
    idx = np.unique(np.round(np.linspace(0, len(vals) - 1, max_points)).astype(int))
    return [vals[i] for i in idx]


def finite(x: Any) -> float | None:
    """``float(x)`` if finite, else None (JSON-able marker of a diverged value).

    Example:
        >>> finite(1), finite(float("nan"))
        (1.0, None)
    """
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def median(values: Sequence[float | None]) -> float:
    """Median of the non-None entries (NaN when there are none).

    Example:
        >>> median([3.0, None, 1.0, 2.0])
        2.0
    """
    vals = [float(v) for v in values if v is not None]
    return float(np.median(vals)) if vals else float("nan")


def fmt(x: float | None, digits: int = 3) -> str:
    """Compact human formatting for claim ``measured`` strings.

    Example:
        >>> fmt(0.123456), fmt(None), fmt(12345.0)
        ('0.123', 'n/a', '1.23e+04')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def gram_float64(model: nn.Module, X: Tensor) -> Tensor:
    """Float64 Gram matrix K = JJᵀ/n (rows ``i*C + c``) of a float64 copy of ``model``.

    The model itself is not modified (its dtype, mode and ``.grad`` stay as they are).
    """
    from dynstab.curvature import gram_matrix

    m64 = copy.deepcopy(model).to(torch.float64)
    return gram_matrix(m64, X.to(torch.float64)).detach()


def non_uniformity(K: Tensor, outputs: int = 1) -> float:
    """WME18 non-uniformity s = λ_max(Σ_WME)^{1/2} at an interpolating minimum, from K.

    Σ_WME = (1/n) Σ_i H_i² − H² with H_i = J_iᵀJ_i. In Gram coordinates its nonzero spectrum is
    that of K^{1/2} (n·BlkDiag(K)) K^{1/2} − K², where BlkDiag keeps the C×C diagonal blocks
    (``related_criteria.md`` §3.3). Cost: one eigendecomposition of the nC×nC matrix K.

    Example:
        >>> K = torch.tensor([[0.1, 0.0], [0.0, 1.9]], dtype=torch.float64)  # WME18 toy, 2-D
        >>> round(non_uniformity(K), 6)  # per-sample curvatures 0.2, 3.8 on orthogonal axes
        1.9
    """
    K = 0.5 * (K + K.T)
    N = K.shape[0]
    n = N // outputs
    lam, U = torch.linalg.eigh(K)
    lam = lam.clamp_min(0.0)
    root = (U * lam.sqrt()) @ U.T
    blk = torch.zeros_like(K)
    for i in range(n):
        s = slice(i * outputs, (i + 1) * outputs)
        blk[s, s] = K[s, s]
    S = root @ (n * blk) @ root - K @ K
    return float(torch.linalg.eigvalsh(0.5 * (S + S.T)).max().clamp_min(0.0).sqrt())


def gram_summary(
    K: Tensor,
    *,
    lr: float,
    batch_size: int,
    sampling: str,
    outputs: int = 1,
    exact: bool = True,
    bounds: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Curvature and stability quantities of a (near-)interpolating minimum from K = JJᵀ/n.

    Returns JSON-able floats: ``lambda_max`` = λ_max(H) = λ_max(K), ``trace`` = Tr K,
    ``frobenius`` = ‖K‖_F, ``non_uniformity`` (WME18 s), ``q`` and ``p`` of the sampling scheme,
    ``gd_ratio`` = η·λ_max/2 and, with ``exact``, the MM23 threshold ``eta_star`` = 2/λ_max(C†D)
    (:func:`dynstab.criteria.eta_star`), ``generalized_sharpness`` = λ_max(C†D) and
    ``ms_ratio`` = η·λ_max(C†D)/2 (≤ 1 ⇔ mean-square stable). With ``bounds`` also the MM23
    generalized-sharpness lower bounds ``bound15`` and ``bound24`` (2/η-bound of (15) and of the
    optimized rank-one bound (24)). A GD run is ``batch_size = n`` with ``sampling="without"``.
    """
    from dynstab.criteria import eta_star, mixing_p, q_factor

    K = K.to(torch.float64)
    N = K.shape[0]
    n = N // outputs
    evals = torch.linalg.eigvalsh(0.5 * (K + K.T))
    lam = float(evals.max())
    out: dict[str, Any] = {
        "lambda_max": lam,
        "trace": float(torch.trace(K)),
        "frobenius": float(torch.linalg.norm(K)),
        "non_uniformity": non_uniformity(K, outputs),
        "p": mixing_p(n, batch_size, sampling),
        "q": q_factor(n, batch_size, sampling),
        "gd_ratio": lr * lam / 2.0,
    }
    if exact:
        res = eta_star(K, batch_size, sampling, outputs=outputs)
        out.update(
            eta_star=finite(res.eta_star),
            generalized_sharpness=finite(res.generalized_sharpness),
            ms_ratio=lr * res.generalized_sharpness / 2.0,
            eta_star_method=res.method,
            eta_star_converged=bool(res.converged),
        )
    if bounds:
        from dynstab.criteria import mm23_bound_15, rank_one_bound

        b15 = mm23_bound_15(K, batch_size, sampling, outputs=outputs)
        b24 = rank_one_bound(K, batch_size, sampling, outputs=outputs, generator=generator)
        out["bound15"] = finite(_as_sharpness(b15))
        out["bound24"] = finite(_as_sharpness(b24))
    return out


def _as_sharpness(bound: Any) -> float:
    """Generalized-sharpness value 2/η_bound of a bound result (float η-bound or result object)."""
    for attr in ("generalized_sharpness", "sharpness", "value"):
        if hasattr(bound, attr):
            return float(getattr(bound, attr))
    eta = float(bound.eta) if hasattr(bound, "eta") else float(bound)
    return 2.0 / eta if eta > 0 else math.inf


class GramMonitor:
    """Training monitor that records functions of the float64 Gram matrix every ``every`` steps.

    ``fn(K, residuals) -> dict[str, float]`` receives K = JJᵀ/n (float64, rows ``i*C + c``) and
    the flattened float64 residuals r = f(X) − y at θ_t. Follows the
    :class:`dynstab.training.Monitor` calling convention ``monitor(t, model, context)``, where
    ``context["X"]``, ``context["y"]`` are the training data.
    """

    def __init__(
        self, fn: Callable[[Tensor, Tensor], Mapping[str, float]], every: int, name: str = "gram"
    ) -> None:
        self.fn = fn
        self.every = int(every)
        self.name = name

    def reset(self) -> None:
        """Nothing to reset (stateless)."""

    def __call__(self, t: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Evaluate ``fn`` at the model's current parameters."""
        X, y = context["X"], context["y"]
        K = gram_float64(model, X)
        m64 = copy.deepcopy(model).to(torch.float64)
        with torch.no_grad():
            r = (m64(X.to(torch.float64)).reshape(X.shape[0], -1)).reshape(-1) - y.to(
                torch.float64
            ).reshape(-1)
        return dict(self.fn(K, r))


def save_figure(fig: Any, fig_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``fig_dir/stem.png`` and ``.pdf`` (:func:`dynstab.plotting.save_figure`)."""
    from dynstab.plotting import save_figure as _save

    return list(_save(fig, Path(fig_dir) / stem))


def new_figure(ncols: int = 1, nrows: int = 1) -> Any:
    """Styled ``(fig, axes)`` (:func:`dynstab.plotting.new_figure`), axes shape (nrows, ncols)."""
    from dynstab.plotting import new_figure as _new

    return _new(nrows, ncols)


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
    from sklearn.datasets import load_digits

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


def alignment_record(K: Tensor, r: Tensor) -> dict[str, float]:
    """μ(θ_t) (WWS22 alignment factor, §1.7), ‖K‖_F and the loss from K and residuals r."""
    from dynstab.criteria import alignment_factor

    loss = 0.5 * float((r * r).sum()) / K.shape[0]
    mu = float(alignment_factor(K, r)) if loss > 0 else float("nan")
    return {"mu": mu, "frobenius": float(torch.linalg.norm(K)), "gram_loss": loss}


@dataclasses.dataclass
class ShallowNet:
    """One-hidden-layer scalar network f(x) = Σ_j a_j φ(w_jᵀx + b_j) + c (float64 tensors).

    The same function as ``dynstab.models.MLP([d, m, 1], activation=φ)`` with
    ``layers.0.weight = W``, ``layers.0.bias = b``, ``layers.1.weight = a``,
    ``layers.1.bias = c`` (:meth:`to_mlp`). Closed-form gradients and Jacobians make the
    companions' many small SGD runs cost tens of microseconds per step.
    """

    W: Tensor
    b: Tensor
    a: Tensor
    c: Tensor
    activation: str = "tanh"

    @classmethod
    def init(
        cls,
        d: int,
        m: int,
        *,
        init_scale: float,
        activation: str,
        seed: int,
        bias_scale: float = 0.0,
    ) -> ShallowNet:
        """Gaussian init: w_j ~ N(0, s²I_d), b_j ~ N(0, β²), a_j ~ N(0, s²/m), c = 0.

        Here s = ``init_scale`` and β = ``bias_scale``.

        For unit-norm inputs the pre-activations are N(0, s²): s ≈ 1 puts tanh units in their
        curved range, and larger s gives sharper nearby minima (MM23's "large initialization").
        """
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(m, d, generator=g, dtype=torch.float64) * init_scale
        a = torch.randn(m, generator=g, dtype=torch.float64) * init_scale / math.sqrt(m)
        b = torch.randn(m, generator=g, dtype=torch.float64) * bias_scale
        return cls(W, b, a, torch.zeros(1, dtype=torch.float64), activation)

    def copy(self) -> ShallowNet:
        """Deep copy."""
        return ShallowNet(
            self.W.clone(), self.b.clone(), self.a.clone(), self.c.clone(), self.activation
        )

    def _act(self, Z: Tensor) -> tuple[Tensor, Tensor]:
        if self.activation == "tanh":
            A = torch.tanh(Z)
            return A, 1.0 - A * A
        if self.activation == "relu":
            return torch.relu(Z), (Z > 0).to(Z.dtype)
        raise ValueError(f"activation must be 'tanh' or 'relu'; got {self.activation!r}.")

    def __call__(self, X: Tensor) -> Tensor:
        """Outputs f(X), shape ``(n,)``."""
        A, _ = self._act(X @ self.W.T + self.b)
        return A @ self.a + self.c

    def step(self, X: Tensor, y: Tensor, lr: float) -> float:
        """One GD step on the ½-MSE of (X, y) (a batch); returns the batch loss before it."""
        A, dA = self._act(X @ self.W.T + self.b)
        r = A @ self.a + self.c - y
        B = X.shape[0]
        dZ = (r[:, None] * self.a[None, :]) * dA
        ga = A.T @ r / B
        self.W -= lr * (dZ.T @ X) / B
        self.b -= lr * dZ.mean(0)
        self.a -= lr * ga
        self.c -= lr * r.mean()
        return 0.5 * float(r @ r) / B

    def jacobian(self, X: Tensor) -> Tensor:
        """Per-sample output gradients J, shape ``(n, p)``, ordered like the MLP's parameters."""
        A, dA = self._act(X @ self.W.T + self.b)
        D = dA * self.a[None, :]
        n = X.shape[0]
        JW = (D[:, :, None] * X[:, None, :]).reshape(n, -1)
        return torch.cat([JW, D, A, torch.ones(n, 1, dtype=X.dtype)], dim=1)

    def gram(self, X: Tensor) -> Tensor:
        """K = JJᵀ/n in closed form: (D Dᵀ)∘(XXᵀ + 1) + AAᵀ + 1, all over n."""
        A, dA = self._act(X @ self.W.T + self.b)
        D = dA * self.a[None, :]
        n = X.shape[0]
        return ((D @ D.T) * (X @ X.T + 1.0) + A @ A.T + 1.0) / n

    def to_univariate(self) -> UnivariateReLU:
        """The equivalent float64 :class:`dynstab.models.UnivariateReLU` (needs d = 1, ReLU)."""
        from dynstab.models import UnivariateReLU

        m, d = self.W.shape
        if d != 1 or self.activation != "relu":
            raise ValueError(
                f"to_univariate needs d = 1 and activation 'relu'; got d = {d}, "
                f"activation {self.activation!r}."
            )
        net = UnivariateReLU(m, dtype=torch.float64)
        net.load_state_dict(
            {
                "w1": self.W[:, 0].clone(),
                "b1": self.b.clone(),
                "w2": self.a.clone(),
                "b2": self.c.clone(),
            }
        )
        return net

    def to_mlp(self) -> nn.Module:
        """The equivalent float64 :class:`dynstab.models.MLP`."""
        from dynstab.models import MLP

        m, d = self.W.shape
        net = MLP([d, m, 1], activation=self.activation).to(torch.float64)
        sd = {
            "layers.0.weight": self.W.clone(),
            "layers.0.bias": self.b.clone(),
            "layers.1.weight": self.a.clone()[None, :],
            "layers.1.bias": self.c.clone(),
        }
        net.load_state_dict(sd)
        return net


def batch_indices(
    n: int, batch_size: int, sampling: str, count: int, rng: torch.Generator
) -> Tensor:
    """``count`` i.i.d. batches of size B as rows of an int tensor ``(count, B)``.

    ``sampling="with"``: B i.i.d. uniform indices (a multiset); ``"without"``: a uniform
    B-subset (the first B entries of a uniform random permutation).
    """
    if sampling == "with":
        return torch.randint(n, (count, batch_size), generator=rng)
    return torch.rand(count, n, generator=rng).argsort(dim=1)[:, :batch_size]


def fast_train(
    net: ShallowNet,
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    sampling: str = "without",
    warmup_steps: int = 0,
    seed: int = 0,
    stop_loss: float = 1e-10,
    min_full_lr_fraction: float = 0.2,
    check_every: int = 50,
    divergence_threshold: float = 1e8,
    lr_fn: Callable[[int], float] | None = None,
    record: Callable[[int, ShallowNet, float], None] | None = None,
    record_every: int = 0,
) -> dict[str, Any]:
    """Plain SGD/GD on the ½-MSE, the update of :func:`dynstab.training.train`, in place.

    θ_{t+1} = θ_t − η_t (1/B) Σ_{i∈I_t} ∇ℓ_i(θ_t) with η_t = η·min(1, (t+1)/T_w)³ (cubic
    warm-up; ``lr_fn(t)`` overrides η_t), batches i.i.d. across steps (``batch_size`` 0 or n
    with ``"without"`` is GD). Stops when the full loss (checked every ``check_every`` steps)
    is ≤ ``stop_loss`` and ≥ ``min_full_lr_fraction`` of the updates used the full η
    (``converged``), or exceeds ``divergence_threshold``/is non-finite (``diverged``).

    Returns:
        Dict with ``converged``, ``diverged``, ``steps_run``, ``final_loss``, ``lr_at_1e-6``,
        ``loss_steps``/``loss_values`` (full loss at the checks, ≤ :data:`MAX_POINTS` points).
    """
    n = X.shape[0]
    gd = batch_size == 0 or (batch_size >= n and sampling == "without")
    rng = torch.Generator().manual_seed(seed)
    idx_buf: Tensor | None = None
    full_steps = 0
    lr_1e6 = None
    losses: list[tuple[int, float]] = []
    converged = diverged = False
    t = 0
    for t in range(steps + 1):
        if lr_fn is not None:
            eta = lr_fn(t)
        elif warmup_steps > 0:
            eta = lr * min(1.0, (t + 1) / warmup_steps) ** 3
        else:
            eta = lr
        if t % check_every == 0 or t == steps:
            r = net(X) - y
            L = 0.5 * float(r @ r) / n
            losses.append((t, L))
            if not math.isfinite(L) or divergence_threshold < L:
                diverged = True
                break
            if L <= 1e-6 and lr_1e6 is None:
                lr_1e6 = eta
            if stop_loss >= L and full_steps >= min_full_lr_fraction * max(t, 1):
                converged = True
                break
        if record is not None and record_every > 0 and t % record_every == 0:
            record(t, net, eta)
        if t == steps:
            break
        if gd:
            net.step(X, y, eta)
        else:
            k = t % 1024
            if k == 0 or idx_buf is None:
                idx_buf = batch_indices(n, batch_size, sampling, 1024, rng)
            I = idx_buf[k]
            net.step(X[I], y[I], eta)
        if eta == lr:
            full_steps += 1
    pts = thin(losses)
    return {
        "converged": converged,
        "diverged": diverged,
        "steps_run": t,
        "final_loss": finite(losses[-1][1]) if losses else None,
        "lr_at_1e-6": lr_1e6,
        "loss_steps": [s for s, _ in pts],
        "loss_values": [finite(v) for _, v in pts],
    }


def train_scalar_run(
    X: Tensor,
    y: Tensor,
    *,
    width: int,
    activation: str,
    init_scale: float,
    lr: float,
    batch_size: int,
    seed: int,
    steps: int,
    warmup_steps: int,
    stop_loss: float,
    min_full_lr_fraction: float = 0.2,
    bounds: bool = False,
    init_seed: int = 0,
    record_every: int = 0,
    sampling: str = "without",
) -> dict[str, Any]:
    """Train a :class:`ShallowNet` on a scalar ½-MSE task and measure the minimum.

    The initialization (seeded by ``init_seed``, shared by all runs as in MM23) is
    :meth:`ShallowNet.init`. Training is :func:`fast_train` (cubic warm-up, ``batch_size`` 0 =
    GD). At the final iterate the float64 K = JJᵀ/n gives :func:`gram_summary` (exact η*
    included; with ``bounds`` also MM23 (15) and (24)). With ``record_every`` > 0 the WWS22
    alignment μ(θ_t) (:func:`dynstab.criteria.alignment_factor`) and ‖H‖_F = ‖K‖_F are
    recorded along training.

    Returns:
        JSON-able dict: run settings, ``converged``, ``diverged``, ``final_loss``,
        ``steps_run``, ``init_lambda_max``, the :func:`gram_summary` fields and, if recorded,
        ``history`` = {"step", "mu", "frobenius", "loss"} (≤ :data:`MAX_POINTS` points).
    """
    import time

    t0 = time.perf_counter()
    n, d = X.shape
    net = ShallowNet.init(d, width, init_scale=init_scale, activation=activation, seed=init_seed)
    init_lambda = float(torch.linalg.eigvalsh(net.gram(X)).max())
    hist: dict[str, list[Any]] = {"step": [], "mu": [], "frobenius": [], "loss": []}

    def rec(t: int, model: ShallowNet, eta: float) -> None:
        vals = alignment_record(model.gram(X), model(X) - y)
        hist["step"].append(t)
        hist["mu"].append(finite(vals["mu"]))
        hist["frobenius"].append(finite(vals["frobenius"]))
        hist["loss"].append(finite(vals["gram_loss"]))

    gd = batch_size == 0 or (batch_size >= n and sampling == "without")
    res = fast_train(
        net,
        X,
        y,
        lr=lr,
        steps=steps,
        batch_size=0 if gd else batch_size,
        sampling=sampling,
        warmup_steps=warmup_steps,
        seed=seed,
        stop_loss=stop_loss,
        min_full_lr_fraction=min_full_lr_fraction,
        record=rec if record_every > 0 else None,
        record_every=record_every,
    )
    out: dict[str, Any] = {
        "lr": lr,
        "B": 0 if gd else batch_size,
        "seed": seed,
        "width": width,
        "n": n,
        "init_lambda_max": init_lambda,
        **res,
    }
    if not res["diverged"]:
        out.update(
            gram_summary(
                net.gram(X),
                lr=lr,
                batch_size=n if gd else batch_size,
                sampling="without" if gd else sampling,
                bounds=bounds,
                generator=torch.Generator().manual_seed(seed),
            )
        )
    if record_every > 0:
        idx = thin(list(range(len(hist["step"]))))
        out["history"] = {k: [v[i] for i in idx] for k, v in hist.items()}
    out["seconds"] = time.perf_counter() - t0
    return out


# Submodules register their experiments on import (after the helpers above exist).
from dynstab_repro.companions import (  # noqa: E402
    edge_of_stability,
    mm23,
    mms21,
    wme18,
    wws22,
)
from dynstab_repro.registry import register_group  # noqa: E402

GROUPS: dict[str, tuple[str, ...]] = {
    "eos": ("eos/gd-sweep", "eos/sgd-batch"),
    "wme18": ("wme18/toy", "wme18/sharpness"),
    "mm23": ("mm23/sweep",),
    "mms21": ("mms21/switch", "mms21/weight", "mms21/sweep"),
    "wws22": ("wws22/alignment",),
}
for _group, _members in GROUPS.items():
    register_group(_group, _members)
register_group("companions", tuple(m for ms in GROUPS.values() for m in ms))

_ = (edge_of_stability, mm23, mms21, wme18, wws22)
