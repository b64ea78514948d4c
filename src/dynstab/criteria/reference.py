"""Parameter-space (P²×P²) references for the Gram-space numerics; for tests and tiny P only.

Per-sample Jacobians J_i ∈ ℝ^{C×P} of the ½-square loss at an interpolating minimum give
H_i = J_iᵀJ_i, H = (1/n) Σ_i H_i, and MM23's Kronecker operators

    C = ½(H ⊗ I + I ⊗ H),  D = (1 − p) H⊗H + p (1/n) Σ_i H_i⊗H_i,
    Q(η) = I − 2ηC + η²D = (1 − p)(I − ηH)⊗(I − ηH) + p (1/n) Σ_i (I − ηH_i)⊗(I − ηH_i),

with η* = 2/λ_max(C†D). Everything here is dense and costs O(P⁶): keep P ≲ 15.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from dynstab._checks import check_positive
from dynstab.criteria._docs import criteria_docs
from dynstab.criteria.sampling import mixing_p

__all__ = [
    "enumerated_second_moment_operator",
    "gram_from_jacobians",
    "parameter_space_Q",
    "parameter_space_eta_star",
    "parameter_space_operators",
    "parameter_space_wme18_lr",
]


def _as_jacobians(jacobians: Tensor) -> Tensor:
    if not isinstance(jacobians, Tensor) or jacobians.ndim not in (2, 3):
        raise ValueError(
            "jacobians must be a Tensor of shape (n, P) (scalar output) or (n, C, P); got "
            f"{getattr(jacobians, 'shape', type(jacobians).__name__)}."
        )
    J = jacobians.detach().to(torch.float64)
    return J[:, None, :] if J.ndim == 2 else J


def gram_from_jacobians(jacobians: Tensor) -> Tensor:
    """Return K = JJᵀ/n, shape ``(nC, nC)``, sample-major (row ``i*C + c``).

    Args:
        jacobians: Per-sample Jacobians, shape ``(n, P)`` or ``(n, C, P)``.

    Returns:
        float64 Tensor ``(nC, nC)``.

    Example:
        >>> gram_from_jacobians(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        tensor([[0.5000, 0.5000],
                [0.5000, 1.0000]], dtype=torch.float64)
    """
    J = _as_jacobians(jacobians)
    n = J.shape[0]
    Jf = J.reshape(-1, J.shape[-1])
    return Jf @ Jf.T / n


def _sample_hessians(
    jacobians: Tensor, batch_size: int, sampling: str
) -> tuple[list[Tensor], Tensor, float]:
    """H_i = J_iᵀJ_i (P×P, float64), H = (1/n) Σ_i H_i and the mixture weight p of the sampling.

    Raises:
        ValueError: On bad Jacobians, batch size or sampling.
    """
    J = _as_jacobians(jacobians)
    n, _, P = J.shape
    p = mixing_p(n, batch_size, sampling)
    Hs = [J[i].T @ J[i] for i in range(n)]
    return Hs, sum(Hs, torch.zeros(P, P, dtype=torch.float64)) / n, p


@criteria_docs
def parameter_space_operators(  # noqa: D417
    jacobians: Tensor, batch_size: int, sampling: str = "with"
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Return (C, D, H, [H_i]) of MM23 in parameter space (C, D of shape (P², P²)).

    Args:
        %(jacobian_args)s

    Returns:
        The tuple ``(C, D, H, H_list)`` in float64.
    """
    Hs, H, p = _sample_hessians(jacobians, batch_size, sampling)
    n, P = len(Hs), H.shape[0]
    eye = torch.eye(P, dtype=torch.float64)
    Cm = 0.5 * (torch.kron(H, eye) + torch.kron(eye, H))
    D = (1 - p) * torch.kron(H, H)
    for Hi in Hs:
        D = D + (p / n) * torch.kron(Hi, Hi)
    return Cm, D, H, Hs


@criteria_docs
def parameter_space_eta_star(jacobians: Tensor, batch_size: int, sampling: str = "with") -> float:  # noqa: D417
    """Return η* = 2/λ_max(C†D) from the P²×P² Kronecker operators (MM23 Thm 3).

    C† is applied symmetrically: λ_max(C†D) = λ_max(C^{†1/2} D C^{†1/2}) (C ⪰ 0).

    Args:
        %(jacobian_args)s

    Returns:
        η* as a float.

    Example:
        >>> J = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]])
        >>> round(parameter_space_eta_star(J, 3, "without"), 10)  # GD: 2/λ_max
        0.9915103182
    """
    Cm, D, _, _ = parameter_space_operators(jacobians, batch_size, sampling)
    c, V = torch.linalg.eigh(Cm)
    keep = c > 1e-12 * c.max()
    S = V[:, keep] * c[keep].rsqrt()
    M = S.T @ D @ S
    return 2.0 / float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1])


@criteria_docs
def parameter_space_Q(  # noqa: D417
    jacobians: Tensor, lr: float, batch_size: int, sampling: str = "with"
) -> Tensor:
    """Return Q(η) = I − 2ηC + η²D, shape ``(P², P²)``: vec Σ_{t+1} = Q vec Σ_t.

    Args:
        %(jacobian_lr_args)s

    Returns:
        float64 Tensor ``(P², P²)``.
    """
    lr = check_positive("lr", lr)
    Cm, D, _, _ = parameter_space_operators(jacobians, batch_size, sampling)
    return torch.eye(Cm.shape[0], dtype=torch.float64) - 2 * lr * Cm + lr * lr * D


@criteria_docs
def enumerated_second_moment_operator(  # noqa: D417
    jacobians: Tensor, lr: float, batch_size: int, sampling: str = "with"
) -> Tensor:
    """Return E_I[(I − ηH_I)⊗(I − ηH_I)] by enumerating every batch (no mixture formula).

    With replacement: all n^B ordered index tuples; without: all B-subsets. Tiny n, B only.

    Args:
        %(jacobian_lr_args)s

    Returns:
        float64 Tensor ``(P², P²)``, equal to :func:`parameter_space_Q`.
    """
    lr = check_positive("lr", lr)
    Hs, H, _ = _sample_hessians(jacobians, batch_size, sampling)
    n, P = len(Hs), H.shape[0]
    if sampling == "with":
        batches = list(itertools.product(range(n), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    eye = torch.eye(P, dtype=torch.float64)
    total = torch.zeros(P * P, P * P, dtype=torch.float64)
    for batch in batches:
        HI = sum((Hs[i] for i in batch), torch.zeros(P, P, dtype=torch.float64)) / batch_size
        A = eye - lr * HI
        total += torch.kron(A, A)
    return total / len(batches)


@criteria_docs
def parameter_space_wme18_lr(  # noqa: D417
    jacobians: Tensor, batch_size: int, sampling: str = "with", *, rtol: float = 1e-13
) -> float:
    """Largest η with λ_max((I − ηH)² + η²pΣ_WME) ≤ 1, by bisection in parameter space.

    Σ_WME = (1/n) Σ_i H_i² − H² (WME18). The set of admissible η is an interval [0, η_WME].

    Args:
        %(jacobian_args)s
        rtol: Relative bisection tolerance.

    Returns:
        η_WME as a float.
    """
    Hs, H, p = _sample_hessians(jacobians, batch_size, sampling)
    n, P = len(Hs), H.shape[0]
    Sig = sum((Hi @ Hi for Hi in Hs), torch.zeros(P, P, dtype=torch.float64)) / n - H @ H
    eye = torch.eye(P, dtype=torch.float64)

    def ok(eta: float) -> bool:
        A = eye - eta * H
        M = A @ A + eta * eta * p * Sig
        return float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1]) <= 1.0 + 1e-14

    lo, hi = 0.0, 4.0 / float(torch.linalg.eigvalsh(H)[-1])
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo if math.isfinite(lo) else math.inf
