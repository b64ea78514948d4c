"""Closed forms of Tr G and the parameter norms they are equivalent to (Wu & Su, ICML 2023).

Conventions: scalar-output models, loss ½·mean squared error (:func:`dynstab.losses.half_mse`),
G(θ) = (1/n) Σ_i g_i g_iᵀ = JᵀJ/n with g_i = ∇_θ f(x_i; θ). At an interpolating minimum
H = G, so Tr G is the quantity bounded by SGD's stability, Tr H ≤ 2/η (batch size 1).

Data weights: s_j := (1/n) Σ_i x_ij² (the second moment of coordinate j).

* Diagonal net, form ``ab``: Tr G = Σ_j s_j (a_j² + b_j²) ≥ 2 Σ_j s_j |a_j b_j| = 2‖β‖_{1,s},
  equality iff |a_j| = |b_j| (balanced). Form ``uv``: Tr G = 4 Σ_j s_j (u_j² + v_j²) ≥ 4‖β‖_{1,s}.
* Two-layer ReLU net: Tr G = (1/n) Σ_i Σ_j [σ(w_jᵀx_i)² + a_j² 1{w_jᵀx_i > 0} ‖x_i‖²]
  ≥ 2 κ_n ‖θ‖_P, with path norm ‖θ‖_P = Σ_j |a_j| ‖w_j‖ and
  κ_n = inf_{‖u‖=1} (1/n) Σ_i ‖x_i‖ σ(uᵀx_i).

Every closed form here costs O(n·p) flops and no Hessian- or Jacobian-vector products, and
returns a Python float (measurements, not differentiable losses).

:func:`diagonal_gram` and :func:`relu_gram` give the Gram matrix K = JJᵀ/n itself in closed
form (no Jacobian). Two functions read measures off a given Gram matrix K = JJᵀ/n (shape
``(nC, nC)``, e.g. from :func:`dynstab.curvature.gram_matrix`), whose non-zero spectrum is that
of G:
:func:`gram_spectrum` (Tr G, ‖G‖_F, λ_max(G)) and :func:`wme18_non_uniformity` (the
non-uniformity s of Wu, Ma & E (2018) at an interpolating minimum). Each costs one symmetric
eigendecomposition of K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_int, check_square_matrix
from dynstab._docs import DocFragments
from dynstab.models.diagonal_linear import DiagonalLinearNet
from dynstab.models.two_layer_relu import TwoLayerReLU

__all__ = [
    "GramSpectrum",
    "balance_diagonal",
    "balance_relu",
    "balancedness",
    "data_weights",
    "diagonal_gram",
    "diagonal_trace_G",
    "gram_spectrum",
    "kappa_n",
    "path_norm",
    "relu_gram",
    "relu_trace_G",
    "weighted_l1",
    "wme18_non_uniformity",
]


_docs = DocFragments(
    diagonal_model="model: A :class:`~dynstab.models.DiagonalLinearNet`.",
    relu_model="model: A :class:`~dynstab.models.TwoLayerReLU`.",
    X="X: Inputs, shape ``(n, d)``.",
    training_X="X: Training inputs, shape ``(n, d)``.",
    trace_G_returns="Tr G as a Python float (computed in the parameters' dtype).",
    gram_returns="K (detached) in the parameters' dtype.",
    diagonal_raises="""
        TypeError: If ``model`` is not a DiagonalLinearNet.
        ValueError: If ``X`` does not have shape ``(n, d)``.
        """,
    relu_raises="""
        TypeError: If ``model`` is not a TwoLayerReLU.
        ValueError: If ``X`` does not have shape ``(n, d)``.
        """,
)
"""The Args, Returns and Raises entries of the closed forms, each written once (``%(name)s``)."""


def _check_X(X: Tensor, d: int | None = None) -> Tensor:
    if not isinstance(X, Tensor):
        raise TypeError(f"X must be a torch.Tensor of shape (n, d); got {type(X).__name__}.")
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must have shape (n, d) with n >= 1; got {tuple(X.shape)}.")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"X must have d = {d} columns to match the model; got {tuple(X.shape)}.")
    return X


def _check_model(model: object, cls: type, fn: str) -> None:
    if not isinstance(model, cls):
        raise TypeError(
            f"{fn} needs a {cls.__name__}; got {type(model).__name__}. For other models use "
            "dynstab.sharpness(..., measures=('trace',)) or the Gram matrix."
        )


def data_weights(X: Tensor) -> Tensor:
    """Return s_j = (1/n) Σ_i x_ij², shape ``(d,)``, for inputs ``X`` of shape ``(n, d)``.

    Example:
        >>> data_weights(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
        tensor([5., 2.])
    """
    X = _check_X(X)
    return (X * X).mean(dim=0)


@_docs
def diagonal_trace_G(model: DiagonalLinearNet, X: Tensor) -> float:  # noqa: D417
    """Closed-form Tr G for a diagonal linear net.

    Tr G = (1/n) Σ_i ‖∇_θ f(x_i)‖² = Σ_j s_j (a_j² + b_j²) (form ``ab``) or
    4 Σ_j s_j (u_j² + v_j²) (form ``uv``), s_j = (1/n) Σ_i x_ij². Exact for every θ.

    Args:
        %(diagonal_model)s
        %(training_X)s

    Returns:
        %(trace_G_returns)s

    Raises:
        %(diagonal_raises)s

    Example:
        >>> net = DiagonalLinearNet.from_tensors(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]))
        >>> diagonal_trace_G(net, torch.tensor([[1.0, 1.0]]))  # 1 + 9 + 4 + 0
        14.0
    """
    _check_model(model, DiagonalLinearNet, "diagonal_trace_G")
    s = data_weights(_check_X(X, model.d)).to(model.beta().dtype)
    first, second = model.factors()
    with torch.no_grad():
        total = float((s * (first * first + second * second)).sum())
    return total if model.form == "ab" else 4.0 * total


def weighted_l1(beta: Tensor, X: Tensor | None = None) -> float:
    """Return the data-weighted ℓ1 norm ‖β‖_{1,s} = Σ_j s_j |β_j|, s_j = (1/n) Σ_i x_ij².

    Args:
        beta: Linear predictor, shape ``(d,)``.
        X: Inputs of shape ``(n, d)``; None uses s = 1 (the plain ℓ1 norm).

    Returns:
        ‖β‖_{1,s} as a Python float.

    Raises:
        ValueError: If the shapes disagree.

    Example:
        >>> weighted_l1(torch.tensor([1.0, -2.0]), torch.tensor([[2.0, 1.0]]))
        6.0
    """
    if beta.ndim != 1:
        raise ValueError(f"beta must have shape (d,); got {tuple(beta.shape)}.")
    beta = beta.detach()
    if X is None:
        return float(beta.abs().sum())
    s = data_weights(_check_X(X, beta.shape[0])).to(beta.dtype)
    return float((s * beta.abs()).sum())


@_docs
def relu_trace_G(model: TwoLayerReLU, X: Tensor) -> float:  # noqa: D417
    """Closed-form Tr G for the bias-free two-layer ReLU net f = Σ_j a_j σ(w_jᵀx).

    Tr G = (1/n) Σ_i Σ_j [σ(w_jᵀx_i)² + a_j² 1{w_jᵀx_i > 0} ‖x_i‖²] (the derivative of σ at 0
    is taken as 0, as autograd does).

    Args:
        %(relu_model)s
        %(training_X)s

    Returns:
        %(trace_G_returns)s

    Raises:
        %(relu_raises)s

    Example:
        >>> net = TwoLayerReLU(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.w.copy_(torch.tensor([[1.0, 0.0]])); _ = net.a.fill_(2.0)
        >>> relu_trace_G(net, torch.tensor([[3.0, 4.0], [-1.0, 0.0]]))  # (9 + 4·25)/2
        54.5
    """
    _check_model(model, TwoLayerReLU, "relu_trace_G")
    X = _check_X(X, model.d).to(model.w.dtype)
    with torch.no_grad():
        pre = X @ model.w.T  # (n, m)
        active = (pre > 0).to(X.dtype)
        sq_norms = (X * X).sum(dim=1)  # (n,)
        first = (torch.relu(pre) ** 2).sum() / X.shape[0]
        second = (model.a * model.a * (active * sq_norms[:, None]).mean(dim=0)).sum()
    return float(first + second)


@_docs
def diagonal_gram(model: DiagonalLinearNet, X: Tensor) -> Tensor:  # noqa: D417
    """Closed-form Gram matrix K = JJᵀ/n of a diagonal linear net, shape ``(n, n)``.

    Form ``ab``: g_i = (b⊙x_i, a⊙x_i), so K = X diag(a² + b²) Xᵀ/n; form ``uv``:
    K = 4 X diag(u² + v²) Xᵀ/n. Equals :func:`dynstab.curvature.gram_matrix` for every θ at
    O(n²d) cost with no Jacobian. Its trace is :func:`diagonal_trace_G`.

    Args:
        %(diagonal_model)s
        %(X)s

    Returns:
        %(gram_returns)s

    Raises:
        %(diagonal_raises)s

    Example:
        >>> net = DiagonalLinearNet.from_tensors(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]))
        >>> diagonal_gram(net, torch.eye(2)).tolist()
        [[0.5, 0.0], [0.0, 2.5]]
    """
    _check_model(model, DiagonalLinearNet, "diagonal_gram")
    first, second = model.factors()
    X = _check_X(X, model.d).to(first.dtype)
    with torch.no_grad():
        w = first * first + second * second
        K = (X * w) @ X.T / X.shape[0]
    return K if model.form == "ab" else 4.0 * K


@_docs
def relu_gram(model: TwoLayerReLU, X: Tensor) -> Tensor:  # noqa: D417
    """Closed-form Gram matrix K = JJᵀ/n of the bias-free two-layer ReLU net, ``(n, n)``.

    With S = σ(XWᵀ) and A = 1{XWᵀ > 0} diag(a) (σ'(0) = 0, as autograd),
    K = (SSᵀ + (AAᵀ) ∘ (XXᵀ))/n: the first term from ∂f/∂a_j = σ(w_jᵀx), the second from
    ∂f/∂w_j = a_j 1{w_jᵀx > 0} x. Equals :func:`dynstab.curvature.gram_matrix` at O(n²(m + d))
    cost with no Jacobian. Its trace is :func:`relu_trace_G`.

    Args:
        %(relu_model)s
        %(X)s

    Returns:
        %(gram_returns)s

    Raises:
        %(relu_raises)s

    Example:
        >>> net = TwoLayerReLU(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.w.copy_(torch.tensor([[1.0, 0.0]])); _ = net.a.fill_(2.0)
        >>> relu_gram(net, torch.tensor([[3.0, 4.0], [-1.0, 0.0]])).tolist()  # (9 + 4·25)/2
        [[54.5, 0.0], [0.0, 0.0]]
    """
    _check_model(model, TwoLayerReLU, "relu_gram")
    X = _check_X(X, model.d).to(model.w.dtype)
    with torch.no_grad():
        Z = X @ model.w.T
        S = torch.relu(Z)
        A = (Z > 0).to(X.dtype) * model.a
        return (S @ S.T + (A @ A.T) * (X @ X.T)) / X.shape[0]


def path_norm(model: TwoLayerReLU) -> float:
    """Return the path norm ‖θ‖_P = Σ_j |a_j| ‖w_j‖₂ of a two-layer ReLU net.

    Raises:
        TypeError: If ``model`` is not a TwoLayerReLU.

    Example:
        >>> net = TwoLayerReLU(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.w.copy_(torch.tensor([[3.0, 4.0]])); _ = net.a.fill_(-2.0)
        >>> path_norm(net)
        10.0
    """
    _check_model(model, TwoLayerReLU, "path_norm")
    with torch.no_grad():
        return float((model.a.abs() * model.w.norm(dim=1)).sum())


def balancedness(model: DiagonalLinearNet | TwoLayerReLU, X: Tensor | None = None) -> float:
    """Return the balancedness ratio r(θ) ≥ 1 (= 1 iff balanced).

    * Diagonal net, form ``ab``: r = Σ_j s_j (a_j² + b_j²) / (2 Σ_j s_j |a_j b_j|)
      = Tr G / (2‖β‖_{1,s}); form ``uv``: r = Σ_j s_j (u_j² + v_j²) / Σ_j s_j |u_j² − v_j²|.
      s_j = (1/n) Σ_i x_ij², or s = 1 when ``X`` is None.
    * Two-layer ReLU net: r = Σ_j (a_j² + ‖w_j‖²) / (2 Σ_j |a_j| ‖w_j‖) (``X`` is ignored).

    Args:
        model: A DiagonalLinearNet or TwoLayerReLU.
        X: Optional inputs ``(n, d)`` for the s-weighted diagonal-net ratio.

    Returns:
        r(θ) as a Python float; ``inf`` when the predictor is zero but the parameters are not,
        ``nan`` when all parameters are zero.

    Raises:
        TypeError: For other models.

    Example:
        >>> a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0])
        >>> balancedness(DiagonalLinearNet.from_tensors(a, b))
        1.0
    """
    with torch.no_grad():
        if isinstance(model, DiagonalLinearNet):
            first, second = model.factors()
            s = torch.ones_like(first) if X is None else data_weights(_check_X(X, model.d))
            s = s.to(first.dtype)
            num = (s * (first**2 + second**2)).sum()
            den = (s * model.beta().abs()).sum() * (2.0 if model.form == "ab" else 1.0)
        elif isinstance(model, TwoLayerReLU):
            norms = model.w.norm(dim=1)
            num = (model.a**2 + norms**2).sum()
            den = 2.0 * (model.a.abs() * norms).sum()
        else:
            raise TypeError(
                "balancedness needs a DiagonalLinearNet or a TwoLayerReLU; got "
                f"{type(model).__name__}."
            )
        if float(den) == 0.0:
            return math.nan if float(num) == 0.0 else math.inf
        return float(num / den)


def balance_diagonal(model: DiagonalLinearNet, X: Tensor | None = None) -> DiagonalLinearNet:
    """Return the balanced copy of a diagonal net with the same predictor β.

    Form ``ab``: a_j = sign(β_j)√|β_j|, b_j = √|β_j|; form ``uv``: u_j = √max(β_j, 0),
    v_j = √max(−β_j, 0). This minimises Tr G over all parameterizations of β coordinate by
    coordinate, for every s_j > 0, so Tr G(balanced) = 2‖β‖_{1,s} (form ``ab``) or
    4‖β‖_{1,s} (form ``uv``) exactly.

    Args:
        model: A DiagonalLinearNet (not modified).
        X: Accepted for symmetry with :func:`balance_relu`; the optimum does not depend on it.

    Returns:
        A new DiagonalLinearNet of the same form and dtype.

    Raises:
        TypeError: If ``model`` is not a DiagonalLinearNet.

    Example:
        >>> net = DiagonalLinearNet.from_tensors(torch.tensor([4.0]), torch.tensor([-1.0]))
        >>> bal = balance_diagonal(net)
        >>> bal.a.data, bal.b.data
        (tensor([-2.]), tensor([2.]))
    """
    _check_model(model, DiagonalLinearNet, "balance_diagonal")
    if X is not None:
        _check_X(X, model.d)
    with torch.no_grad():
        beta = model.beta().detach()
        if model.form == "ab":
            root = beta.abs().sqrt()
            first, second = torch.sign(beta) * root, root
        else:
            first, second = beta.clamp(min=0).sqrt(), (-beta).clamp(min=0).sqrt()
    return DiagonalLinearNet.from_tensors(first, second, form=model.form)


@_docs
def balance_relu(model: TwoLayerReLU, X: Tensor) -> TwoLayerReLU:  # noqa: D417
    """Return the copy of a two-layer ReLU net whose per-neuron scales minimise Tr G.

    The rescaling (a_j, w_j) → (a_j/c_j, c_j w_j), c_j > 0, leaves f unchanged (σ is positively
    homogeneous) and changes neuron j's Tr G term to c_j² A_j + B_j/c_j², with A_j = (1/n) Σ_i
    σ(w_jᵀx_i)² and B_j = a_j² (1/n) Σ_i 1{w_jᵀx_i > 0} ‖x_i‖². The minimiser is c_j =
    (B_j/A_j)^{1/4}, giving 2√(A_j B_j) (Wu & Su (2023), two-layer ReLU nets). Neurons inactive on
    every x_i (A_j = 0) are left unchanged; neurons with a_j = 0 and A_j > 0 have infimum 0, reached
    by setting w_j = 0 (the function is unchanged).

    Args:
        model: A TwoLayerReLU (not modified).
        %(training_X)s

    Returns:
        A new TwoLayerReLU with the same outputs on every input and Tr G(X) no larger.

    Raises:
        %(relu_raises)s
    """
    _check_model(model, TwoLayerReLU, "balance_relu")
    X = _check_X(X, model.d)
    with torch.no_grad():
        w, a = model.w.detach(), model.a.detach()
        X = X.to(w.dtype)
        pre = X @ w.T
        A = (torch.relu(pre) ** 2).mean(dim=0)
        B = a * a * ((pre > 0).to(X.dtype) * (X * X).sum(dim=1)[:, None]).mean(dim=0)
        dead = A == 0
        safe_A = torch.where(dead, torch.ones_like(A), A)
        c = torch.where(dead, torch.ones_like(A), (B / safe_A) ** 0.25)
        zero_a = (B == 0) & ~dead
        new_w = c[:, None] * w
        new_a = torch.where(zero_a | dead, a, a / torch.where(c == 0, torch.ones_like(c), c))
        new = TwoLayerReLU(
            model.d, model.m, init=model.init, dtype=w.dtype, generator=torch.Generator()
        ).to(w.device)
        new.w.copy_(new_w)
        new.a.copy_(new_a)
    return new


def _phi(U: Tensor, X: Tensor, norms: Tensor) -> Tensor:
    """(1/n) Σ_i ‖x_i‖ σ(u_kᵀx_i) for each row u_k of U; shape ``(K,)``."""
    return torch.relu(U @ X.T) @ norms / X.shape[0]


def _kappa_exact_2d(X: Tensor, norms: Tensor) -> float:
    # φ(u) is linear on each arc between consecutive directions ⟂ some x_i and positive there,
    # so its minimum over the circle is attained at one of those 2n break points.
    perp = torch.stack([-X[:, 1], X[:, 0]], dim=1)
    perp = perp[perp.norm(dim=1) > 0]
    if perp.shape[0] == 0:
        return 0.0
    cand = torch.cat([perp, -perp]) / perp.norm(dim=1).repeat(2)[:, None]
    return float(_phi(cand, X, norms).min())


@_docs
def kappa_n(  # noqa: D417
    X: Tensor,
    *,
    num_directions: int = 2048,
    generator: torch.Generator | None = None,
    optimize: bool = True,
    num_steps: int = 200,
) -> float:
    """Estimate κ_n = inf_{u ∈ S^{d−1}} (1/n) Σ_i ‖x_i‖ σ(uᵀx_i) (Wu & Su 2023, ReLU nets).

    κ_n is the constant in Tr G ≥ 2 κ_n ‖θ‖_P. For d = 1 and d = 2 the infimum is computed
    exactly (d = 2: φ is linear on the arcs between the 2n directions orthogonal to the x_i,
    so the minimum is at one of them). For d ≥ 3 the value is the minimum over
    ``num_directions`` directions drawn uniformly on the sphere, refined (``optimize=True``)
    by projected subgradient descent on the sphere from the 8 best directions; it is an
    **upper estimate** of the infimum (every returned value is attained by some unit u).
    For x ~ Unif(√d S^{d−1}), κ_n → √(d/2π) as n → ∞.

    Args:
        %(X)s
        num_directions: Number of random directions (d ≥ 3), >= 1.
        generator: Random source for the directions.
        optimize: Whether to refine by projected subgradient descent.
        num_steps: Refinement steps per start, >= 0.

    Returns:
        The estimate as a Python float (float64 arithmetic).

    Raises:
        ValueError: If ``X`` is not ``(n, d)`` or the counts are invalid.

    Example:
        >>> kappa_n(torch.tensor([[1.0], [-2.0], [3.0]]))  # min((1 + 9)/3, 4/3)
        1.3333333333333333
    """
    X = _check_X(X).to(torch.float64)
    check_int("num_directions", num_directions, minimum=1)
    check_int("num_steps", num_steps, minimum=0)
    n, d = X.shape
    norms = X.norm(dim=1)
    if d == 1:
        return float(_phi(torch.tensor([[1.0], [-1.0]], dtype=X.dtype), X, norms).min())
    if d == 2:
        return _kappa_exact_2d(X, norms)
    U = torch.randn(num_directions, d, generator=generator, dtype=X.dtype)
    U = U / U.norm(dim=1, keepdim=True)
    vals = _phi(U, X, norms)
    best = float(vals.min())
    if not optimize or num_steps == 0:
        return best
    starts = U[torch.argsort(vals)[: min(8, num_directions)]]
    scale = float((norms * norms).mean())  # Lipschitz scale of φ
    for u0 in starts:
        u = u0.clone()
        for t in range(num_steps):
            active = (X @ u > 0).to(X.dtype)
            grad = (active * norms) @ X / n
            grad = grad - (grad @ u) * u  # tangent component
            step = 0.5 * best / (scale * math.sqrt(t + 1) + 1e-300)
            u = u - step * grad
            u = u / u.norm()
            best = min(best, float(_phi(u[None], X, norms)[0]))
    return best


# ---------------------------------------------------------------------------------------------
# Measures of a given Gram matrix


def _symmetric_gram(K: Tensor, outputs: int) -> Tensor:
    check_square_matrix("K", K)
    check_int("outputs", outputs, minimum=1)
    if K.shape[0] == 0 or K.shape[0] % outputs:
        raise ValueError(
            f"K must have shape (n*C, n*C) with n >= 1 and C = outputs = {outputs}; got "
            f"{tuple(K.shape)}. Build K = JJᵀ/n with dynstab.curvature.gram_matrix."
        )
    K = K.detach().to(torch.float64)
    return 0.5 * (K + K.T)


@dataclass(frozen=True)
class GramSpectrum:
    """Tr G, ‖G‖_F and λ_max(G) read off the Gram matrix K (float64).

    Attributes:
        trace: Tr G = Tr K.
        frobenius: ‖G‖_F = ‖K‖_F.
        lambda_max: λ_max(G) = λ_max(K) (= λ_max(H) at an interpolating minimum).
    """

    trace: float
    frobenius: float
    lambda_max: float

    def as_dict(self) -> dict[str, float]:
        """``{"trace": ..., "frobenius": ..., "lambda_max": ...}``."""
        return {"trace": self.trace, "frobenius": self.frobenius, "lambda_max": self.lambda_max}


def gram_spectrum(K: Tensor) -> GramSpectrum:
    """Return Tr G, ‖G‖_F and λ_max(G) from the Gram matrix K = JJᵀ/n, exactly.

    G = JᵀJ/n (p×p) and K = JJᵀ/n (nC×nC) share their non-zero eigenvalues, so the three
    measures of G are those of K: its trace, the norm of its eigenvalues and the largest one
    (symmetrised, float64 ``eigvalsh``). Cost: O((nC)³).

    Args:
        K: Gram matrix, shape ``(nC, nC)``, symmetric positive semi-definite.

    Returns:
        :class:`GramSpectrum`.

    Raises:
        TypeError: If ``K`` is not a floating tensor.
        ValueError: If ``K`` is not square, empty or has non-finite entries.

    Example:
        >>> gram_spectrum(torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64)))
        GramSpectrum(trace=7.0, frobenius=5.0, lambda_max=4.0)
    """
    K = _symmetric_gram(K, 1)
    eig = torch.linalg.eigvalsh(K)
    return GramSpectrum(
        trace=float(torch.trace(K)),
        frobenius=float(torch.linalg.vector_norm(eig)),
        lambda_max=float(eig[-1]),
    )


def wme18_non_uniformity(K: Tensor, outputs: int = 1) -> float:
    """Return the non-uniformity s = λ_max(Σ)^{1/2} of Wu, Ma & E (2018) at a minimum, from K.

    At an interpolating minimum of the ½-MSE the per-sample Hessians are H_i = J_iᵀJ_i and
    Σ = (1/n) Σ_i H_i² − H² (Wu, Ma & E 2018, Sec. 3: the covariance behind their
    sharpness–non-uniformity diagram). In the coordinates of K's row space its non-zero
    spectrum is that of K^{1/2} (n·BlkDiag(K)) K^{1/2} − K², where BlkDiag keeps the C×C
    diagonal blocks of K.
    Cost: two symmetric eigendecompositions of the nC×nC matrix.

    Args:
        K: Gram matrix, shape ``(nC, nC)`` (rows ``i*C + c``).
        outputs: Number of outputs C.

    Returns:
        s >= 0 as a Python float.

    Raises:
        TypeError: If ``K`` is not a floating tensor.
        ValueError: If ``K`` is not square, has non-finite entries, or nC is not a multiple
            of ``outputs``.

    Example:
        >>> K = torch.tensor([[0.1, 0.0], [0.0, 1.9]], dtype=torch.float64)  # Wu, Ma & E 2018
        >>> round(wme18_non_uniformity(K), 6)  # per-sample curvatures 0.2, 3.8 on orthogonal axes
        1.9
    """
    K = _symmetric_gram(K, outputs)
    n = K.shape[0] // outputs
    lam, U = torch.linalg.eigh(K)
    root = (U * lam.clamp_min(0.0).sqrt()) @ U.T
    blocks = K.reshape(n, outputs, n, outputs).diagonal(dim1=0, dim2=2)  # (C, C, n)
    blk = torch.block_diag(*blocks.permute(2, 0, 1).unbind(0))
    S = root @ (n * blk) @ root - K @ K
    top = torch.linalg.eigvalsh(0.5 * (S + S.T))[-1]
    return float(top.clamp_min(0.0).sqrt())
