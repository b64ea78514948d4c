"""Linearized SGD at an interpolating minimum: exact second moments and Lyapunov exponents.

Near an interpolating minimum of the ½-square loss, SGD is δ_{t+1} = (I − ηH_{I_t})δ_t with
H_I = (1/B) Σ_{i∈I} J_iᵀJ_i. In residual coordinates r = Jδ ∈ ℝ^{nC} this is

    r_{t+1} = (I − ηK S_t) r_t,   S_t = (n/B) Σ_{i∈I_t} E_i   (E_i: projector on sample i's
    C rows, counted with multiplicity),

and the second moment R_t = E r_t r_tᵀ evolves by the exact linear map

    𝒯_η(R) = R − η(KR + RK) + η² K[(1 − p)R + n p BlkDiag(R)]K.

On the row space (coordinates of :func:`~dynstab.criteria.gram_coordinates`, R = ĜΣĜᵀ) the same
map is the symmetric Q_z(Σ) = Σ − η(ΛΣ + ΣΛ) + η²D_z(Σ), whose spectral radius (= λ_max by
Mulayoff & Michaeli 2024, Thm 6) is the per-step growth of E‖δ_t‖² and E‖r_t‖², and crosses 1
exactly at η = η*.

Mean-square growth is driven by rare batches: the top Lyapunov exponent λ₁ = lim (1/t) log‖δ_t‖
of a *typical* run can be negative although E‖δ_t‖² grows; Jensen gives exp(λ₁) ≤ √ρ(Q).

Each function is a thin wrapper of the :class:`~dynstab.criteria.StabilityProblem` method of the
same name (build the problem once to query several learning rates or samplings).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynstab.criteria._docs import criteria_docs
from dynstab.criteria.gram import GramCoordinates
from dynstab.criteria.problem import StabilityProblem
from dynstab.criteria.results import LyapunovResult

__all__ = [
    "LyapunovResult",
    "lyapunov_exponent",
    "propagate_second_moment",
    "second_moment_growth",
]


@criteria_docs
def second_moment_growth(  # noqa: D417
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
    the svec basis or Lanczos from X₀ = I (O(nCρ²) flops per product), chosen by cost.
    Mean-square stable iff the value is ≤ 1, i.e. iff lr ≤ η*.

    Args:
        %(gram_lr_args)s
        %(outputs)s
        %(growth_solver_args)s
        %(coords)s

    Returns:
        The spectral radius as a float (1.0 when K = 0: everything is frozen).

    Raises:
        ValueError: On bad K, lr, sampling or method.
        TypeError: If lr is not a real number (``True`` is refused).

    Example:
        >>> second_moment_growth(torch.eye(2), 0.5, 2, "without")  # GD: (1 − ηλ)² = 0.25
        0.25
    """
    prob = StabilityProblem.from_gram(K, outputs, coordinates=coords)
    return prob.second_moment_growth(
        prob.sampling(batch_size, sampling), lr, method=method, tol=tol, max_iters=max_iters
    )


@criteria_docs
def propagate_second_moment(  # noqa: D417
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

    No sampling is involved: 𝒯_η is the exact expectation over the batch, so the ratio of
    consecutive entries tends to :func:`second_moment_growth`. Computed on the row space
    (R = ĜΣĜᵀ, Σ ↦ Q_z(Σ)), O(nCρ²) flops per step after one eigen-decomposition.

    Args:
        %(gram_lr_args)s
        steps: Number of steps, >= 0.
        %(outputs)s
        R0: Initial second moment ``(nC, nC)``, symmetric PSD; it is projected onto range(K)
            (r = Jδ always lies there). Default K/Tr K (an isotropic δ₀ in the row space,
            unit trace).

    Returns:
        Tensor of shape ``(steps + 1,)`` (float64).

    Raises:
        ValueError: On bad K, lr, steps or R0 (shape or non-finite entries).

    Example:
        >>> propagate_second_moment(torch.eye(1), 0.5, 1, steps=2)  # (1 − 0.5)² per step
        tensor([1.0000, 0.2500, 0.0625], dtype=torch.float64)
    """
    prob = StabilityProblem.from_gram(K, outputs)
    return prob.propagate_second_moment(prob.sampling(batch_size, sampling), lr, steps=steps, R0=R0)


@criteria_docs
def lyapunov_exponent(  # noqa: D417
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
        %(gram_lr_args)s
        %(outputs)s
        num_steps: Steps per run after burn-in, >= 1.
        num_runs: Independent runs (their spread gives ``stderr``), >= 2.
        burn_in: Discarded initial steps (default ``num_steps // 10``).
        generator: Random source (batches and δ₀), a ``torch.Generator`` or None.
        %(coords)s

    Returns:
        :class:`LyapunovResult`.

    Raises:
        ValueError: On bad K, lr, sampling or step counts.
        TypeError: If ``generator`` is not a ``torch.Generator``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> r = lyapunov_exponent(torch.eye(1), 0.5, 1, num_steps=10, num_runs=2, generator=g)
        >>> round(r.growth_factor, 12)  # 1-D, one sample: |1 − 0.5·1| exactly
        0.5
    """
    prob = StabilityProblem.from_gram(K, outputs, coordinates=coords)
    return prob.lyapunov_exponent(
        prob.sampling(batch_size, sampling),
        lr,
        num_steps=num_steps,
        num_runs=num_runs,
        burn_in=burn_in,
        generator=generator,
    )
