"""Linearized SGD at an interpolating minimum: exact second moments and Lyapunov exponents.

Near an interpolating minimum of the ½-square loss, SGD is δ_{t+1} = (I − ηH_{I_t})δ_t with
H_I = (1/B) Σ_{i∈I} J_iᵀJ_i. In residual coordinates r = Jδ ∈ ℝ^{nC} this is

    r_{t+1} = (I − ηK S_t) r_t,   S_t = (n/B) Σ_{i∈I_t} E_i   (E_i: projector on sample i's
    C rows, counted with multiplicity),

and the second moment R_t = E r_t r_tᵀ evolves by the exact linear map

    𝒯_η(R) = R − η(KR + RK) + η² K[(1 − p)R + n p BlkDiag(R)]K.

On the row space (coordinates of :func:`~dynstab.criteria.gram_coordinates`) the same map is
the symmetric Q_z(X) = X − η(ΛX + XΛ) + η²D_z(X), whose spectral radius (= λ_max by MM23
Thm 6) is the per-step growth of E‖δ_t‖² and E‖r_t‖², and crosses 1 exactly at η = η*.

Mean-square growth is driven by rare batches: the top Lyapunov exponent λ₁ = lim (1/t) log‖δ_t‖
of a *typical* run can be negative although E‖δ_t‖² grows; Jensen gives exp(λ₁) ≤ √ρ(Q).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int, check_positive
from dynstab.criteria.gram import (
    DENSE_AUTO_MAX_DIM,
    GramCoordinates,
    _apply_D,
    _as_gram,
    _coords_and_p,
    _dense_sym_D,
    _lanczos_top,
    gram_coordinates,
)
from dynstab.criteria.sampling import mixing_p
from dynstab.errors import ConvergenceWarning

__all__ = [
    "LyapunovResult",
    "lyapunov_exponent",
    "propagate_second_moment",
    "second_moment_growth",
]


def second_moment_growth(
    K: Tensor,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    outputs: int = 1,
    *,
    method: str = "auto",
    tol: float = 1e-12,
    max_iters: int = 300,
    coords: GramCoordinates | None = None,
) -> float:
    """Return ρ(Q) = λ_max(Q_z), the exact per-step growth factor of E‖δ_t‖² (and E‖r_t‖²).

    Q_z(X) = X − η(ΛX + XΛ) + η²D_z(X) on symmetric ρ×ρ matrices (module docstring). Dense in
    the svec basis when ρ(ρ+1)/2 ≤ 2000, else Lanczos from X₀ = I, O(nCρ²) flops per product.
    Mean-square stable iff the value is ≤ 1, i.e. iff lr ≤ η*.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
        tol: Relative Ritz-residual tolerance (matrix-free).
        max_iters: Maximum Lanczos products (matrix-free).
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        The spectral radius as a float (1.0 when K = 0: everything is frozen).

    Raises:
        ValueError: On bad K, lr, sampling or method.

    Example:
        >>> second_moment_growth(torch.eye(2), 0.5, 2, "without")  # GD: (1 − ηλ)² = 0.25
        0.25
    """
    lr = check_positive("lr", lr)
    check_choice("method", method, ("auto", "dense", "matrix_free"))
    c, p = _coords_and_p(K, outputs, coords, batch_size, sampling)
    rho = c.rank
    if rho == 0:
        return 1.0
    m = rho * (rho + 1) // 2
    if method == "dense" or (method == "auto" and m <= DENSE_AUTO_MAX_DIM):
        D, cdiag = _dense_sym_D(c, p)
        Q = lr * lr * D
        Q.diagonal().add_(1.0 - 2.0 * lr * cdiag)
        ev = torch.linalg.eigvalsh(Q)
        return float(ev.abs().max())
    lam = c.lam

    def apply(X: Tensor) -> Tensor:
        return X - lr * (lam[:, None] * X + X * lam[None, :]) + lr * lr * _apply_D(c, p, X)

    X0 = torch.eye(rho, dtype=torch.float64, device=lam.device)
    top, converged, _, res = _lanczos_top(apply, X0, tol=tol, max_iters=max_iters)
    if not converged:
        warnings.warn(
            f"second_moment_growth: Lanczos did not reach tol={tol:g} in {max_iters} products "
            f"(relative residual {res:.2e}); increase max_iters.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return top


def propagate_second_moment(
    K: Tensor,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    *,
    steps: int,
    outputs: int = 1,
    R0: Tensor | None = None,
) -> Tensor:
    """Propagate R_t = E r_t r_tᵀ exactly with 𝒯_η and return E‖r_t‖² = Tr R_t, t = 0..steps.

    No sampling is involved: 𝒯_η(R) = R − η(KR + RK) + η²K[(1 − p)R + n p BlkDiag(R)]K is the
    exact expectation over the batch, so the ratio of consecutive entries tends to
    :func:`second_moment_growth`. Cost O((nC)³) flops per step (plus one eigendecomposition).

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        steps: Number of steps, >= 0.
        outputs: Number of outputs C.
        R0: Initial second moment ``(nC, nC)``, symmetric PSD; it is projected onto range(K)
            (r = Jδ always lies there). Default K/Tr K (an isotropic δ₀ in the row space,
            unit trace).

    Returns:
        Tensor of shape ``(steps + 1,)`` (float64).

    Raises:
        ValueError: On bad K, lr, steps or R0 shape.

    Example:
        >>> propagate_second_moment(torch.eye(1), 0.5, 1, steps=2)  # (1 − 0.5)² per step
        tensor([1.0000, 0.2500, 0.0625], dtype=torch.float64)
    """
    K = _as_gram(K, outputs)
    lr = check_positive("lr", lr)
    check_int("steps", steps, minimum=0)
    N = K.shape[0]
    n, C = N // outputs, outputs
    p = mixing_p(n, batch_size, sampling)
    if R0 is None:
        tr = float(K.trace())
        R = K / tr if tr > 0 else torch.zeros_like(K)
    else:
        if not isinstance(R0, Tensor) or tuple(R0.shape) != (N, N):
            raise ValueError(
                f"R0 must be a Tensor of shape ({N}, {N}) like K; got "
                f"{tuple(R0.shape) if isinstance(R0, Tensor) else type(R0).__name__}."
            )
        R = R0.detach().to(torch.float64)
    # r = Jδ lives in range(K); projecting every step removes round-off that 𝒯_η would
    # otherwise freeze on null(K) (eigenvalue 1 there).
    U = gram_coordinates(K, outputs).U
    Pr = U @ U.T
    R = Pr @ R @ Pr
    mask = torch.block_diag(*([torch.ones(C, C, dtype=torch.float64)] * n))
    out = torch.empty(steps + 1, dtype=torch.float64)
    out[0] = R.trace()
    for t in range(1, steps + 1):
        KR = K @ R
        inner = (1 - p) * R + (n * p) * (mask * R)
        R = R - lr * (KR + KR.T) + lr * lr * (K @ inner @ K)
        R = Pr @ (0.5 * (R + R.T)) @ Pr
        out[t] = R.trace()
    return out


@dataclass(frozen=True)
class LyapunovResult:
    """Top Lyapunov exponent of linearized SGD, estimated by simulation with renormalisation.

    Attributes:
        exponent: λ₁ per step (of log‖δ_t‖), mean over runs.
        growth_factor: exp(λ₁), the typical per-step growth of ‖δ_t‖ (≤ √ρ(Q) by Jensen).
        stderr: Standard error of ``exponent`` across independent runs.
        num_steps: Steps per run (after burn-in).
        num_runs: Independent runs.
    """

    exponent: float
    growth_factor: float
    stderr: float
    num_steps: int
    num_runs: int


def _sample_batches(
    n: int, B: int, sampling: str, shape: tuple[int, int], generator: torch.Generator | None
) -> Tensor:
    """Indices of shape (*shape, B), i.i.d. across the leading dims."""
    if sampling == "with":
        return torch.randint(n, (*shape, B), generator=generator)
    u = torch.rand(*shape, n, generator=generator)
    return u.argsort(dim=-1)[..., :B]


def lyapunov_exponent(
    K: Tensor,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    num_steps: int = 20000,
    num_runs: int = 32,
    burn_in: int | None = None,
    generator: torch.Generator | None = None,
    coords: GramCoordinates | None = None,
) -> LyapunovResult:
    """Estimate the top Lyapunov exponent of linearized SGD (the typical-run escape rate).

    Simulates δ ← (I − (η/B) Σ_{i∈I} Ĝ_iᵀĜ_i) δ in the row-space coordinates (equivalent to
    r ← (I − (η/B)·nK Σ_{i∈I} E_i) r with r = Ĝδ, but immune to round-off drift into null(K)),
    renormalising every step and averaging log‖δ_{t+1}‖/‖δ_t‖ after ``burn_in`` steps.
    Cost O(num_runs·B·C·ρ) per step. For reliable values near the threshold use ≥ 4·10⁵ steps.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        num_steps: Steps per run after burn-in, >= 1.
        num_runs: Independent runs (their spread gives ``stderr``), >= 2.
        burn_in: Discarded initial steps (default ``num_steps // 10``).
        generator: Random source (batches and δ₀).
        coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.

    Returns:
        :class:`LyapunovResult`.

    Raises:
        ValueError: On bad K, lr, sampling or step counts.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> r = lyapunov_exponent(torch.eye(1), 0.5, 1, num_steps=10, num_runs=2, generator=g)
        >>> round(r.growth_factor, 12)  # 1-D, one sample: |1 − 0.5·1| exactly
        0.5
    """
    lr = check_positive("lr", lr)
    check_int("num_steps", num_steps, minimum=1)
    check_int("num_runs", num_runs, minimum=2)
    burn = num_steps // 10 if burn_in is None else check_int("burn_in", burn_in, minimum=0)
    c, _ = _coords_and_p(K, outputs, coords, batch_size, sampling)  # p only validates here
    n, C, rho = c.n, c.outputs, c.rank
    if rho == 0:
        return LyapunovResult(0.0, 1.0, 0.0, num_steps, num_runs)
    B = batch_size
    Gb = c.Ghat.reshape(n, C, rho)
    delta = torch.randn(num_runs, rho, generator=generator, dtype=torch.float64)
    delta = delta / torch.linalg.norm(delta, dim=1, keepdim=True)
    total = torch.zeros(num_runs, dtype=torch.float64)
    chunk = 256
    t = 0
    while t < burn + num_steps:
        size = min(chunk, burn + num_steps - t)
        idx = _sample_batches(n, B, sampling, (size, num_runs), generator)
        for s in range(size):
            Gi = Gb[idx[s]]  # (runs, B, C, ρ)
            z = torch.einsum("rbcq,rq->rbc", Gi, delta)
            delta = delta - (lr / B) * torch.einsum("rbcq,rbc->rq", Gi, z)
            norm = torch.linalg.norm(delta, dim=1)
            if t >= burn:
                total += torch.log(norm)
            delta = delta / norm[:, None]
            t += 1
    per_run = total / num_steps
    exponent = float(per_run.mean())
    stderr = float(per_run.std() / math.sqrt(num_runs))
    return LyapunovResult(exponent, math.exp(exponent), stderr, num_steps, num_runs)
