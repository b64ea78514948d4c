"""Exact mean-square threshold η* of linearized SGD through the Gram (n×n) reduction.

Setting (interpolating minimum of the ½-square loss, ``dynstab.losses.half_mse``): per-sample
Jacobians J_i ∈ ℝ^{C×P} stacked into J ∈ ℝ^{nC×P}, H = G = JᵀJ/n, per-sample Hessians
H_i = J_iᵀJ_i, and the normalized Gram matrix **K = JJᵀ/n ∈ ℝ^{nC×nC}** with row index
``i*C + c`` (sample-major). MM23 (Thm 3) give the exact mean-square threshold

    η* = 2/λ_max(C†D),  C = ½(H ⊕ H),  D = (1 − p) H⊗H + p (1/n) Σ_i H_i⊗H_i,

with the mixture weight p of :func:`dynstab.criteria.mixing_p`. With K = UΛUᵀ (eigenvalues
above ``rank_tol·λ_max`` kept; rank ρ) and Ĝ := √n UΛ^{1/2} ∈ ℝ^{nC×ρ} (Ĝ_i = its C rows of
sample i), the same threshold lives on symmetric ρ×ρ matrices X:

    C_z(X)_ab = X_ab (λ_a + λ_b)/2,
    D_z(X)    = (1 − p) ΛXΛ + (p/n) Σ_i Ĝ_iᵀ (Ĝ_i X Ĝ_iᵀ) Ĝ_i,
    η*        = 2/λ_max(C_z^{-1/2} D_z C_z^{-1/2}).

The top eigenvector is PSD (MM23 Thm 6), so the eigenproblem is solved on symmetric matrices:
densely in the orthonormal ``svec`` basis (dimension ρ(ρ+1)/2), or matrix-free by Lanczos
started from the identity, O(nCρ²) flops per product and O(ρ²) memory per vector.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int, check_positive, check_square_matrix
from dynstab.criteria.sampling import mixing_p
from dynstab.errors import ConvergenceWarning

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EtaStarResult",
    "GramCoordinates",
    "commuting_eta_star",
    "critical_lr",
    "eta_star",
    "gd_threshold",
    "gram_coordinates",
]

#: Largest symmetric-space dimension ρ(ρ+1)/2 that ``method="auto"`` solves densely.
DENSE_AUTO_MAX_DIM = 2000
#: Hard cap on the symmetric-space dimension for ``method="dense"``.
DENSE_MAX_DIM = 12000
_PSD_RTOL = 1e-6
_BASIS_BUDGET_BYTES = 2**28  # store Lanczos vectors (full reorthogonalisation) below 256 MiB


def gd_threshold(lambda_max: float) -> float:
    """Return the GD stability threshold 2/λ_max (``inf`` when λ_max = 0).

    GD on the ½-square loss is linearly stable at a minimum iff η ≤ 2/λ_max(H); this is also
    the first-moment threshold of SGD (MM23 Thm 1).

    Args:
        lambda_max: Largest Hessian eigenvalue, >= 0.

    Returns:
        2/λ_max as a float.

    Raises:
        ValueError: If ``lambda_max`` is negative or not finite.

    Example:
        >>> gd_threshold(4.0)
        0.5
    """
    lam = check_positive("lambda_max", lambda_max, allow_zero=True)
    return math.inf if lam == 0.0 else 2.0 / lam


@dataclass(frozen=True)
class GramCoordinates:
    """Orthonormal row-space coordinates of a Gram matrix K = JJᵀ/n (float64).

    Attributes:
        lam: Kept eigenvalues λ_a of K, shape ``(ρ,)``, descending.
        U: Matching unit eigenvectors, shape ``(nC, ρ)``.
        Ghat: Ĝ = √n UΛ^{1/2}, shape ``(nC, ρ)``; rows ``i*C .. i*C+C-1`` are Ĝ_i, the
            coordinates of the C output gradients of sample i (H_i = Ĝ_iᵀĜ_i).
        n: Number of samples.
        outputs: Number of outputs C.
        lambda_max: Largest eigenvalue of K (0 for K = 0).
    """

    lam: Tensor
    U: Tensor
    Ghat: Tensor
    n: int
    outputs: int
    lambda_max: float

    @property
    def rank(self) -> int:
        """Number ρ of kept eigenvalues."""
        return int(self.lam.numel())


def _as_gram(K: Tensor, outputs: int) -> Tensor:
    """Validate K (square, symmetric, PSD, nC×nC) and return it in float64."""
    check_square_matrix("K", K)
    check_int("outputs", outputs, minimum=1)
    N = K.shape[0]
    if N == 0:
        raise ValueError(
            "K must describe at least one sample; got shape (0, 0). Build K = JJᵀ/n from "
            "non-empty data."
        )
    if N % outputs != 0:
        raise ValueError(
            f"K must have shape (n*C, n*C) with C = outputs = {outputs}; got shape "
            f"{tuple(K.shape)}. Pass outputs equal to the number of model outputs."
        )
    K = K.detach().to(torch.float64)
    scale = float(K.abs().max())
    if float((K - K.T).abs().max()) > _PSD_RTOL * max(scale, 1e-300):
        raise ValueError(
            "K must be symmetric (a Gram matrix JJᵀ/n); got max |K − Kᵀ| = "
            f"{float((K - K.T).abs().max()):.3e}. Build K with dynstab.curvature.gram_matrix."
        )
    return 0.5 * (K + K.T)


def gram_coordinates(K: Tensor, outputs: int = 1, *, rank_tol: float = 1e-10) -> GramCoordinates:
    """Eigendecompose K = JJᵀ/n and build the row-space coordinates Ĝ = √n UΛ^{1/2}.

    Eigenvalues ≤ ``rank_tol·λ_max`` are treated as zero (null space of J, frozen under SGD).

    Args:
        K: Gram matrix, shape ``(nC, nC)``, symmetric PSD, sample-major ordering.
        outputs: Number of outputs C per sample.
        rank_tol: Relative eigenvalue cut-off, in [0, 1).

    Returns:
        :class:`GramCoordinates` in float64.

    Raises:
        ValueError: If K is not square, symmetric, finite and PSD, or its size is not a
            multiple of ``outputs``.
        TypeError: If K is not a floating-point tensor.

    Example:
        >>> c = gram_coordinates(torch.diag(torch.tensor([2.0, 1.0, 0.0])))
        >>> c.rank, c.lam.tolist()
        (2, [2.0, 1.0])
    """
    K = _as_gram(K, outputs)
    rank_tol = check_positive("rank_tol", rank_tol, allow_zero=True)
    if rank_tol >= 1:
        raise ValueError(f"rank_tol must be in [0, 1); got {rank_tol}.")
    N = K.shape[0]
    n = N // outputs
    lam, U = torch.linalg.eigh(K)
    lam, U = lam.flip(0), U.flip(1)
    lmax = float(lam[0])
    if float(lam[-1]) < -_PSD_RTOL * max(abs(lmax), abs(float(lam[-1])), 1e-300):
        raise ValueError(
            "K must be positive semi-definite (a Gram matrix JJᵀ/n); got smallest eigenvalue "
            f"{float(lam[-1]):.3e} with largest {lmax:.3e}. Pass K = J Jᵀ / n."
        )
    keep = lam > rank_tol * lmax if lmax > 0 else torch.zeros_like(lam, dtype=torch.bool)
    lam, U = lam[keep], U[:, keep]
    Ghat = math.sqrt(n) * U * lam.sqrt()
    return GramCoordinates(lam=lam, U=U, Ghat=Ghat, n=n, outputs=outputs, lambda_max=max(lmax, 0.0))


def _coords_and_p(
    K: Tensor,
    outputs: int,
    coords: GramCoordinates | None,
    batch_size: int,
    sampling: str,
    *,
    rank_tol: float = 1e-10,
) -> tuple[GramCoordinates, float]:
    """Return ``coords`` (or :func:`gram_coordinates` of K when None) and the mixture weight p."""
    c = gram_coordinates(K, outputs, rank_tol=rank_tol) if coords is None else coords
    return c, mixing_p(c.n, batch_size, sampling)


@dataclass(frozen=True)
class EtaStarResult:
    """Exact mean-square threshold of linearized SGD at an interpolating minimum.

    Attributes:
        eta_star: η* = 2/λ_max(C†D) (``inf`` when K = 0).
        generalized_sharpness: λ_max(C†D) = 2/η*.
        method: ``"dense"`` or ``"matrix_free"``.
        converged: False when Lanczos stopped at ``max_iters`` above its tolerance.
        num_matvecs: Applications of the ρ×ρ operator (0 for dense).
        rank: ρ, the number of kept eigenvalues of K.
        p: Mixture weight of the sampling scheme.
        residual: Relative Ritz residual ‖AX − θX‖/θ (0 for dense).
    """

    eta_star: float
    generalized_sharpness: float
    method: str
    converged: bool
    num_matvecs: int
    rank: int
    p: float
    residual: float


def _svec_indices(rho: int) -> tuple[Tensor, Tensor]:
    idx = torch.triu_indices(rho, rho)
    return idx[0], idx[1]


def _dense_sym_D(coords: GramCoordinates, p: float) -> tuple[Tensor, Tensor]:
    """D_z in the orthonormal svec basis (m×m, m = ρ(ρ+1)/2) and the diagonal of C_z there."""
    lam, Gh, n, C = coords.lam, coords.Ghat, coords.n, coords.outputs
    rho = coords.rank
    ia, ib = _svec_indices(rho)
    w = torch.full(ia.shape, math.sqrt(2.0), dtype=lam.dtype, device=lam.device)
    w[ia == ib] = 1.0
    Gr = Gh.reshape(n, C, rho)
    # svec(sym(ĝ_ic ĝ_idᵀ)) for all (i, c, d): entries (g_ca g_db + g_cb g_da)/2 · w_ab
    A = Gr[:, :, None, ia] * Gr[:, None, :, ib]  # (n, C, C, m)
    W = 0.5 * (A + A.transpose(1, 2)) * w
    W = W.reshape(n * C * C, -1)
    D = (p / n) * (W.T @ W)
    D.diagonal().add_((1.0 - p) * lam[ia] * lam[ib])
    return D, 0.5 * (lam[ia] + lam[ib])


def _dense_sym_matrix(coords: GramCoordinates, p: float) -> Tensor:
    """C_z^{-1/2} D_z C_z^{-1/2} in the orthonormal svec basis, shape (m, m)."""
    D, c = _dense_sym_D(coords, p)
    s = c.rsqrt()
    return s[:, None] * D * s[None, :]


def _apply_D(coords: GramCoordinates, p: float, X: Tensor) -> Tensor:
    """D_z(X) for a symmetric ρ×ρ matrix X (O(nCρ²) flops)."""
    lam, Gh, n, C = coords.lam, coords.Ghat, coords.n, coords.outputs
    out = (1.0 - p) * (lam[:, None] * X * lam[None, :])
    if p > 0.0:
        GX = Gh @ X
        if C == 1:
            d = (GX * Gh).sum(dim=1)
            out = out + (p / n) * (Gh.T @ (d[:, None] * Gh))
        else:
            rho = coords.rank
            Gr = Gh.reshape(n, C, rho)
            Bm = GX.reshape(n, C, rho) @ Gr.transpose(1, 2)  # (n, C, C) = Ĝ_i X Ĝ_iᵀ
            Z = (Bm @ Gr).reshape(n * C, rho)
            out = out + (p / n) * (Gh.T @ Z)
    return 0.5 * (out + out.T)


def _lanczos_top(
    apply: Any, X0: Tensor, *, tol: float, max_iters: int
) -> tuple[float, bool, int, float]:
    """Top eigenvalue of a symmetric operator on matrices (Frobenius inner product).

    Full reorthogonalisation while the basis fits in 256 MiB, three-term recurrence otherwise
    (the extreme Ritz value is unaffected by loss of orthogonality). Stops when the Ritz
    residual β_k|s_k| ≤ tol·θ.
    """
    store = X0.numel() * 8 * (max_iters + 1) <= _BASIS_BUDGET_BYTES
    V = X0 / torch.linalg.norm(X0)
    basis: list[Tensor] = [V]
    V_prev = torch.zeros_like(V)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    theta, res, converged, k = 0.0, math.inf, False, 0
    while k < max_iters:
        k += 1
        W = apply(V)
        alpha = float((W * V).sum())
        W = W - alpha * V - beta * V_prev
        if store:
            for Q in basis:
                W = W - float((W * Q).sum()) * Q
        alphas.append(alpha)
        beta = float(torch.linalg.norm(W))
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(T)
        theta = float(evals[-1])
        res = beta * abs(float(evecs[-1, -1]))
        scale = max(abs(theta), 1e-300)
        if res <= tol * scale or beta <= 1e-14 * scale:
            converged = True
            break
        betas.append(beta)
        V_prev, V = V, W / beta
        if store:
            basis.append(V)
    return theta, converged, k, res / max(abs(theta), 1e-300)


def eta_star(
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    method: str = "auto",
    tol: float = 1e-10,
    max_iters: int = 300,
    rank_tol: float = 1e-10,
    coords: GramCoordinates | None = None,
) -> EtaStarResult:
    """Exact mean-square threshold η* = 2/λ_max(C†D) of SGD from the Gram matrix K = JJᵀ/n.

    Assumes an interpolating minimum of the ½-square loss (H = G, H_i = J_iᵀJ_i) and i.i.d.
    batches of size B (``sampling`` with or without replacement); SGD's linearized second
    moment stays bounded iff η ≤ η*, and η* = 2/λ_max(K) for GD (B = n without replacement).
    The eigenproblem of C_z^{-1/2} D_z C_z^{-1/2} (module docstring) is solved on symmetric
    ρ×ρ matrices: ``"dense"`` forms the ρ(ρ+1)/2 square matrix (O(nC²ρ⁴ + ρ⁶) flops);
    ``"matrix_free"`` runs Lanczos from X₀ = I, O(nCρ²) flops per product; ``"auto"`` is
    dense when ρ(ρ+1)/2 ≤ 2000.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, row index ``i*C + c``.
        batch_size: Batch size B, >= 1 (<= n without replacement).
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of model outputs C.
        method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
        tol: Relative Ritz-residual tolerance of the matrix-free solver.
        max_iters: Maximum Lanczos iterations (= operator products).
        rank_tol: Relative cut-off on the eigenvalues of K.
        coords: Precomputed :func:`gram_coordinates` of K (skips the eigendecomposition).

    Returns:
        :class:`EtaStarResult`; non-convergence sets ``converged=False`` and warns
        :class:`~dynstab.errors.ConvergenceWarning`.

    Raises:
        ValueError: On a bad K, sampling name, batch size or method.

    Example:
        >>> J = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
        >>> round(eta_star(J @ J.T / 3, 1).eta_star, 10)  # B = 1, the §1.9.5 regression row
        0.4434007919

    References:
        Mulayoff & Michaeli, "Exact mean square linear stability analysis for SGD", COLT 2024.
    """
    check_choice("method", method, ("auto", "dense", "matrix_free"))
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    coords, p = _coords_and_p(K, outputs, coords, batch_size, sampling, rank_tol=rank_tol)
    rho = coords.rank
    if rho == 0:
        return EtaStarResult(math.inf, 0.0, "dense", True, 0, 0, p, 0.0)
    m = rho * (rho + 1) // 2
    if method == "auto":
        method = "dense" if m <= DENSE_AUTO_MAX_DIM else "matrix_free"
    if method == "dense":
        if m > DENSE_MAX_DIM:
            raise ValueError(
                f"method='dense' needs a ρ(ρ+1)/2 = {m} square matrix, above the cap "
                f"{DENSE_MAX_DIM}; use method='matrix_free' (or 'auto')."
            )
        top = float(torch.linalg.eigvalsh(_dense_sym_matrix(coords, p))[-1])
        return EtaStarResult(2.0 / top, top, "dense", True, 0, rho, p, 0.0)
    lam = coords.lam
    S = (0.5 * (lam[:, None] + lam[None, :])).rsqrt()

    def apply(X: Tensor) -> Tensor:
        return S * _apply_D(coords, p, S * X)

    X0 = torch.eye(rho, dtype=torch.float64, device=lam.device)
    top, converged, iters, res = _lanczos_top(apply, X0, tol=tol, max_iters=max_iters)
    if not converged:
        warnings.warn(
            f"eta_star: Lanczos did not reach tol={tol:g} in max_iters={max_iters} products "
            f"(relative residual {res:.2e}); increase max_iters.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return EtaStarResult(2.0 / top, top, "matrix_free", converged, iters, rho, p, res)


def critical_lr(
    source: Tensor | nn.Module,
    data: Tensor | tuple[Tensor, Tensor] | None = None,
    *,
    batch_size: int,
    sampling: str = "with",
    outputs: int | None = None,
    params: dict[str, Tensor] | None = None,
    method: str = "auto",
    tol: float = 1e-10,
    max_iters: int = 300,
    rank_tol: float = 1e-10,
) -> EtaStarResult:
    """Exact critical learning rate η* of SGD, from a Gram matrix or from a model and its data.

    ``critical_lr(K, batch_size=B)`` is :func:`eta_star` on a Gram matrix K = JJᵀ/n.
    ``critical_lr(model, (X, y), batch_size=B)`` (or ``data=X``) first builds K with
    :func:`dynstab.curvature.gram_matrix` at ``params`` (the model's own when None) and infers
    C from its shape. The threshold assumes an interpolating minimum of the ½-square loss
    (``dynstab.losses.half_mse``); use :func:`dynstab.criteria.stability` to check that.

    Args:
        source: Gram matrix ``(nC, nC)`` or an ``nn.Module``.
        data: Inputs ``X`` or a pair ``(X, y)``; required with a model, ignored with K.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C (default 1 for K; inferred for a model, where an
            explicit value must agree with the model).
        params: Parameters at which to evaluate the model (``None``: its current ones).
        method: As for :func:`eta_star`.
        tol: As for :func:`eta_star`.
        max_iters: As for :func:`eta_star`.
        rank_tol: As for :func:`eta_star`.

    Returns:
        :class:`EtaStarResult`.

    Raises:
        TypeError: If ``source`` is neither a Tensor nor an ``nn.Module``.
        ValueError: If ``data`` is missing or empty for a model, ``outputs`` contradicts the
            model, the model has train-mode BatchNorm or active Dropout, or as for
            :func:`eta_star`.

    Example:
        >>> K = torch.diag(torch.tensor([1.0, 1.0]))
        >>> critical_lr(K, batch_size=2, sampling="without").eta_star  # GD: 2/λ_max
        2.0
    """
    from torch import nn

    if isinstance(source, Tensor):
        K, C = source, 1 if outputs is None else outputs
    elif isinstance(source, nn.Module):
        if data is None:
            raise ValueError(
                "critical_lr(model, data, ...) needs the training inputs; got data=None. "
                "Pass data=(X, y) or data=X."
            )
        if isinstance(data, tuple | list):
            from dynstab.curvature.functional import prepare_data

            X = prepare_data(data).inputs()  # same checks (and messages) as dynstab.sharpness
        else:
            X = data
        K = _model_gram(source, X, params)
        n = X.shape[0]
        C = K.shape[0] // n
        if outputs is not None and outputs != C:
            raise ValueError(
                f"outputs must equal the model's number of outputs per sample, C = {C} (K has "
                f"shape {tuple(K.shape)} for n = {n} samples); got outputs={outputs}. Leave "
                "outputs=None with a model (it is inferred)."
            )
    else:
        raise TypeError(
            f"source must be a Gram matrix Tensor or an nn.Module; got {type(source).__name__}."
        )
    return eta_star(
        K,
        batch_size,
        sampling,
        outputs=C,
        method=method,
        tol=tol,
        max_iters=max_iters,
        rank_tol=rank_tol,
    )


def _model_gram(model: nn.Module, X: Tensor, params: dict[str, Tensor] | None) -> Tensor:
    from dynstab.curvature import gram_matrix

    return gram_matrix(model, X, params).detach().to(torch.float64)


def commuting_eta_star(curvatures: Tensor, batch_size: int, sampling: str = "with") -> float:
    """Closed-form η* when all per-sample Hessians commute (WME18 1-D case and its extension).

    With per-sample curvatures h_{ia} ≥ 0 along shared eigen-directions a (H_i = diag(h_i)),
    C†D is diagonal in e_a⊗e_b and

        η* = min_{a,b} (h_a + h_b) / [(1 − p) h_a h_b + p (1/n) Σ_i h_{ia} h_{ib}],

    h = mean_i h_i. In 1-D this is WME18's η* = 2a/(a² + p s²) with a = mean curvature and
    s² = its variance over samples (exact, MM23 = WME18 in 1-D).

    Args:
        curvatures: Shape ``(n,)`` (1-D) or ``(n, d)``, entries ≥ 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"``.

    Returns:
        η* as a float (``inf`` when every curvature is 0).

    Raises:
        ValueError: On negative or non-finite curvatures, or bad sampling arguments.

    Example:
        >>> round(commuting_eta_star(torch.tensor([0.2, 3.8]), 1), 4)  # WME18 toy, a=2, s=1.8
        0.5525
    """
    if not isinstance(curvatures, Tensor) or curvatures.ndim not in (1, 2):
        raise ValueError(
            "curvatures must be a Tensor of shape (n,) or (n, d); got "
            f"{getattr(curvatures, 'shape', type(curvatures).__name__)}."
        )
    h = curvatures.detach().to(torch.float64)
    if h.ndim == 1:
        h = h[:, None]
    if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        raise ValueError("curvatures must be finite and >= 0 (per-sample PSD Hessians).")
    n = h.shape[0]
    p = mixing_p(n, batch_size, sampling)
    mean = h.mean(0)
    num = mean[:, None] + mean[None, :]
    den = (1 - p) * mean[:, None] * mean[None, :] + p * (h.T @ h) / n
    mask = num > 0
    if not bool(mask.any()):
        return math.inf
    return float((num[mask] / den[mask]).min())
