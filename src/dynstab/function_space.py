"""Function-space view of minima stability for univariate ReLU nets (MMS21).

Mulayoff, Michaeli & Soudry (NeurIPS 2021), "The implicit bias of minima stability: a view
from function space". For f(x) = Σ_i w2_i σ(w1_i x + b1_i) + b2 fit with the ½·mean squared
error (:func:`dynstab.losses.half_mse`), a linearly stable interpolating minimum whose knots
avoid the data points satisfies (Theorem 1)

    ∫ |f''(x)| g(x) dx ≤ 1/η − 1/2,

where f'' is a sum of Diracs at the knots t_i = −b1_i/w1_i weighted by the slope jumps
a_i = w2_i |w1_i|, so ∫|f''| g = Σ_knots |a| g(t). The weight is g(x) = min{g⁻(x), g⁺(x)} on
[x_min, x_max] and 0 outside, with X uniform over the training inputs and

    g⁻(x) = P(X < x)² · E[x − X | X < x] · √(1 + E[X | X < x]²),
    g⁺(x) = P(X > x)² · E[X − x | X > x] · √(1 + E[X | X > x]²).

The key Lemma 4 reads λ_max(∇²L(θ)) ≥ 1 + 2 ∫|f''| g for every implementation θ of f.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import special
from torch import Tensor

from dynstab._checks import check_choice, check_positive
from dynstab.models.univariate_relu import UnivariateReLU

__all__ = [
    "knot_on_data_point",
    "knots_and_jumps",
    "mms21_bound",
    "mms21_sharpness_lower_bound",
    "population_weight_g",
    "stability_weight_g",
    "weighted_total_variation",
]

_DISTS = ("uniform", "gaussian", "laplace")


def _as_1d(name: str, x: Tensor | Sequence[float] | float) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (shape (n,) or (n, 1)); got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must have finite entries.")
    return t


def _check_model(model: object, fn: str) -> UnivariateReLU:
    if not isinstance(model, UnivariateReLU):
        raise TypeError(f"{fn} needs a UnivariateReLU; got {type(model).__name__}.")
    return model


def knots_and_jumps(model: UnivariateReLU, *, merge_tol: float = 0.0) -> tuple[Tensor, Tensor]:
    """Return the knots of a univariate ReLU net and the signed slope jumps there.

    Neuron i with w1_i ≠ 0 has its knot at t_i = −b1_i/w1_i and changes the slope of f by
    a_i = w2_i |w1_i| (right slope minus left slope). Knots closer than ``merge_tol`` (after
    sorting) are merged into one at their first position with the summed jump. Neurons with
    w1_i = 0 are constant and have no knot.

    Args:
        model: A :class:`~dynstab.models.UnivariateReLU`.
        merge_tol: Absolute distance below which consecutive knots merge, >= 0.

    Returns:
        ``(t, jumps)``, float64 tensors of shape ``(L,)`` with ``t`` increasing.

    Raises:
        TypeError: If ``model`` is not a UnivariateReLU.

    Example:
        >>> net = UnivariateReLU(2)
        >>> with torch.no_grad():
        ...     _ = net.w1.copy_(torch.tensor([2.0, -1.0]))
        ...     _ = net.b1.copy_(torch.tensor([-2.0, 1.0]))
        ...     _ = net.w2.copy_(torch.tensor([1.0, 3.0]))
        >>> knots_and_jumps(net)
        (tensor([1.], dtype=torch.float64), tensor([5.], dtype=torch.float64))
    """
    _check_model(model, "knots_and_jumps")
    tol = check_positive("merge_tol", merge_tol, allow_zero=True)
    with torch.no_grad():
        w1 = model.w1.detach().to(torch.float64)
        b1 = model.b1.detach().to(torch.float64)
        w2 = model.w2.detach().to(torch.float64)
        keep = w1 != 0
        t = -b1[keep] / w1[keep]
        a = w2[keep] * w1[keep].abs()
        order = torch.argsort(t)
        t, a = t[order], a[order]
    if t.numel() == 0:
        return t, a
    new_group = torch.ones_like(t, dtype=torch.bool)
    new_group[1:] = (t[1:] - t[:-1]) > tol
    group = torch.cumsum(new_group.to(torch.int64), 0) - 1
    jumps = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, a)
    return t[new_group], jumps


def stability_weight_g(
    x_train: Tensor | Sequence[float], t: Tensor | Sequence[float] | float
) -> Tensor:
    """Evaluate MMS21's empirical weight g = min(g⁻, g⁺) at the points ``t``.

    X is uniform over ``x_train``; g⁻(x) = P(X < x)² E[x − X | X < x] √(1 + E[X | X < x]²),
    g⁺(x) = P(X > x)² E[X − x | X > x] √(1 + E[X | X > x]²), with an empty conditioning set
    giving 0. Hence g = 0 on (−∞, x_min] ∪ [x_max, ∞). Cost O(n·len(t)).

    Args:
        x_train: Training inputs, shape ``(n,)`` or ``(n, 1)``.
        t: Evaluation points, a float or shape ``(L,)``.

    Returns:
        float64 tensor of shape ``(L,)``.

    Raises:
        ValueError: If the inputs are not 1-D or not finite.

    Example:
        >>> stability_weight_g(torch.tensor([-1.0, 1.0]), [-1.0, 0.0, 2.0])  # 0.25·1·√2 at 0
        tensor([0.0000, 0.3536, 0.0000], dtype=torch.float64)
    """
    x = _as_1d("x_train", x_train)
    tt = _as_1d("t", t)
    n = x.shape[0]
    if n == 0:
        raise ValueError("x_train must contain at least one sample; got an empty tensor.")

    def side(mask: Tensor, sign: float) -> Tensor:
        count = mask.sum(dim=1).to(torch.float64)
        safe = count.clamp(min=1.0)
        mean = (mask * x).sum(dim=1) / safe  # E[X | side]
        dist = sign * (mean - tt)  # E[X − x | X > x] or E[x − X | X < x]
        val = (count / n) ** 2 * dist * torch.sqrt(1.0 + mean * mean)
        return torch.where(count > 0, val, torch.zeros_like(val))

    below = (x[None, :] < tt[:, None]).to(torch.float64)
    above = (x[None, :] > tt[:, None]).to(torch.float64)
    return torch.minimum(side(below, -1.0), side(above, 1.0))


def _population_moments(dist: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return F(t) = P(X < t) and M(t) = E[X; X < t] for the standardized distribution."""
    if dist == "gaussian":
        F = special.ndtr(t)
        M = -np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    elif dist == "uniform":  # Unif[−√3, √3]
        c = math.sqrt(3.0)
        tc = np.clip(t, -c, c)
        F = (tc + c) / (2.0 * c)
        M = (tc * tc - c * c) / (4.0 * c)
    else:  # Laplace with scale b = 1/√2 (variance 2b² = 1)
        b = 1.0 / math.sqrt(2.0)
        neg = t < 0
        e_neg = 0.5 * np.exp(np.where(neg, t, 0.0) / b)
        e_pos = 0.5 * np.exp(-np.where(neg, 0.0, t) / b)
        F = np.where(neg, e_neg, 1.0 - e_pos)
        M = np.where(neg, e_neg * (t - b), -e_pos * (t + b))
    return F, M


def population_weight_g(dist: str, t: Tensor | Sequence[float] | float) -> Tensor:
    """Evaluate MMS21's weight g = min(g⁻, g⁺) for a standardized population distribution.

    The distributions have zero mean and unit variance: ``"uniform"`` = Unif[−√3, √3],
    ``"gaussian"`` = N(0, 1), ``"laplace"`` = Laplace(0, 1/√2). With F(t) = P(X < t) and
    M(t) = E[X 1{X < t}] in closed form (zero mean gives E[X 1{X > t}] = −M(t)):
    g⁻ = F (tF − M) √(1 + (M/F)²) and g⁺ = S (−M − tS) √(1 + (M/S)²), S = 1 − F. This is the
    n → ∞ limit of :func:`stability_weight_g` (MMS21 Fig. 2).

    Args:
        dist: ``"uniform"``, ``"gaussian"`` or ``"laplace"``.
        t: Evaluation points, a float or shape ``(L,)``.

    Returns:
        float64 tensor of shape ``(L,)``.

    Raises:
        ValueError: If ``dist`` is unknown.

    Example:
        >>> round(float(population_weight_g("uniform", 0.0)[0]), 6)  # ¼·(√3/2)·√(7/4)
        0.286411
    """
    check_choice("dist", dist, _DISTS)
    tt = _as_1d("t", t).numpy()
    F, M = _population_moments(dist, tt)
    S = 1.0 - F
    with np.errstate(divide="ignore", invalid="ignore"):
        g_minus = np.where(F > 0, F * (tt * F - M) * np.sqrt(1.0 + (M / F) ** 2), 0.0)
        g_plus = np.where(S > 0, S * (-M - tt * S) * np.sqrt(1.0 + (M / S) ** 2), 0.0)
    g = np.clip(np.minimum(g_minus, g_plus), 0.0, None)
    return torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64))


def weighted_total_variation(model: UnivariateReLU, x_train: Tensor | Sequence[float]) -> float:
    """Return ∫|f''| g = Σ_knots |a| g(t) with MMS21's empirical weight g of ``x_train``.

    Args:
        model: A :class:`~dynstab.models.UnivariateReLU`.
        x_train: Training inputs, shape ``(n,)`` or ``(n, 1)``.

    Returns:
        The weighted total variation as a Python float (float64).

    Raises:
        TypeError: If ``model`` is not a UnivariateReLU.

    Example:
        >>> net = UnivariateReLU(1)
        >>> with torch.no_grad():
        ...     _ = net.w1.fill_(1.0); _ = net.b1.fill_(0.0); _ = net.w2.fill_(2.0)
        >>> round(weighted_total_variation(net, [-1.0, 1.0]), 6)  # 2·g(0) = 2·0.25·√2
        0.707107
    """
    t, a = knots_and_jumps(model)
    if t.numel() == 0:
        return 0.0
    return float((a.abs() * stability_weight_g(x_train, t)).sum())


def mms21_sharpness_lower_bound(model: UnivariateReLU, x_train: Tensor | Sequence[float]) -> float:
    """Return 1 + 2 ∫|f''| g, MMS21 Lemma 4's lower bound on λ_max(∇²L) at an interpolant.

    Valid under the ½·mean squared error when f interpolates the data and no knot sits on a
    training input; the "1" is the output bias direction.

    Raises:
        TypeError: If ``model`` is not a UnivariateReLU.
    """
    return 1.0 + 2.0 * weighted_total_variation(model, x_train)


def mms21_bound(lr: float) -> float:
    """Return MMS21 Theorem 1's bound 1/η − 1/2 on ∫|f''| g for a stable minimum.

    Args:
        lr: Learning rate η > 0 (½·mean squared error convention).

    Raises:
        ValueError: If ``lr <= 0``.

    Example:
        >>> mms21_bound(0.5)
        1.5
    """
    return 1.0 / check_positive("lr", lr) - 0.5


def knot_on_data_point(
    model: UnivariateReLU, x_train: Tensor | Sequence[float], tol: float = 1e-6
) -> bool:
    """Return whether some knot (with a nonzero jump) lies within ``tol`` of a training input.

    Such minima are not twice differentiable; Theorem 1 does not apply (use Theorem 2).

    Raises:
        TypeError: If ``model`` is not a UnivariateReLU.
        ValueError: If ``tol < 0``.
    """
    check_positive("tol", tol, allow_zero=True)
    t, a = knots_and_jumps(model)
    t = t[a != 0]
    if t.numel() == 0:
        return False
    x = _as_1d("x_train", x_train)
    return bool(((t[:, None] - x[None, :]).abs() <= tol).any())
