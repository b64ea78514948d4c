"""Stability of GD at non-differentiable minima as a switching system (MMS21, Sec. 3).

Near a minimum θ* where the loss is not twice differentiable (e.g. a ReLU knot on a training
input), the loss is a *switching system* of smooth mode losses ψ_m, one per activation pattern,
and GD near θ* is θ_{t+1} − θ* = (I − ηH_m)(θ_t − θ*) − η∇ψ_m(θ*) with the mode m of the
current iterate (Mulayoff, Michaeli & Soudry, NeurIPS 2021, Sec. 3). Its two lemmas:

* **instability**: if the mode Hessians share an approximate eigenvector q (unit,
  ‖H_m q − λ_m q‖ ≤ δ for all m, λ_m = qᵀH_m q) and λ_lower = min_m λ_m > 2/η + δ + γ/ε with
  γ = max_m |qᵀ∇ψ_m(θ*)|, GD started ε-close to θ* along q leaves: θ* is not strongly stable;
* **stability**: if max_m λ_max(H_m) ≤ 2/η, every mode map is non-expansive and θ* is
  strongly stable for GD.

:func:`switching_lemma` evaluates both for given mode Hessians and gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from dynstab._checks import all_finite, check_lr, check_positive, check_square_matrix

__all__ = ["SwitchingLemma", "switching_lemma"]


@dataclasses.dataclass(frozen=True)
class SwitchingLemma:
    """MMS21's switching-system quantities at a non-differentiable minimum.

    Attributes:
        lambdas: λ_m = qᵀH_m q per mode (Rayleigh quotients along the common direction q).
        lambda_lower: min_m λ_m.
        delta: max_m ‖H_m q − λ_m q‖ (how far q is from a common eigenvector).
        gamma: max_m |qᵀ∇ψ_m(θ*)| (0 at an interpolating minimum).
        lambda_max_modes: λ_max(H_m) per mode.
        prediction: ``"escape"`` (λ_lower > 2/η + δ + γ/ε: not strongly stable),
            ``"stay"`` (max_m λ_max(H_m) ≤ 2/η: strongly stable) or ``"undetermined"``.
        direction: The unit vector q used (float64, shape ``(P,)``; not part of ``==`` or
            the repr).
    """

    lambdas: tuple[float, ...]
    lambda_lower: float
    delta: float
    gamma: float
    lambda_max_modes: tuple[float, ...]
    prediction: str
    direction: Tensor = dataclasses.field(compare=False, repr=False)


def switching_lemma(
    hessians: Sequence[Tensor], gradients: Sequence[Tensor], lr: float, radius: float
) -> SwitchingLemma:
    """Evaluate MMS21's instability and stability conditions for a switching GD system.

    q runs over the top eigenvectors of each H_m and of their mean (symmetrised, float64); the
    one with the largest λ_lower − δ is kept (any unit q is admissible in the instability
    lemma, so the choice only decides how sharp the test is). The stability condition uses the
    exact λ_max(H_m). Cost: M + 1 dense eigendecompositions of P×P matrices (M modes).

    Args:
        hessians: Mode Hessians H_m at θ*, each ``(P, P)`` (symmetrised here).
        gradients: Mode gradients ∇ψ_m(θ*), each with P entries.
        lr: Learning rate η > 0.
        radius: ε > 0, the radius of the initial perturbation.

    Returns:
        A :class:`SwitchingLemma`.

    Raises:
        ValueError: If no mode is given, the numbers of Hessians and gradients differ, the
            shapes disagree, an entry is not finite, or ``lr``/``radius`` is not > 0.

    Example:
        >>> H1 = torch.diag(torch.tensor([5.0, 1.0])); H2 = torch.diag(torch.tensor([4.0, 3.0]))
        >>> z = torch.zeros(2)
        >>> r = switching_lemma([H1, H2], [z, z], lr=0.5, radius=1e-3)  # 2/η = 4
        >>> r.lambda_lower, r.delta, r.prediction  # q = e1: λ = (5, 4), exact eigenvector
        (4.0, 0.0, 'undetermined')
        >>> switching_lemma([H1, H2], [z, z], lr=0.4, radius=1e-3).prediction  # 2/η = 5
        'stay'
        >>> switching_lemma([H1, H2], [z, z], lr=0.6, radius=1e-3).prediction  # 2/η = 3.33
        'escape'
    """
    if not hessians or len(hessians) != len(gradients):
        raise ValueError(
            f"switching_lemma needs one gradient per mode Hessian (≥ 1); got {len(hessians)} "
            f"Hessians and {len(gradients)} gradients. Pass one (H_m, ∇ψ_m) pair per mode."
        )
    lr = check_lr(lr)
    radius = check_positive("radius", radius)
    Hs = []
    for i, H in enumerate(hessians):
        H = check_square_matrix(f"hessians[{i}]", H).to(torch.float64)
        if H.shape != hessians[0].shape:
            raise ValueError(
                f"every mode Hessian must have the shape of hessians[0] "
                f"{tuple(hessians[0].shape)}; got {tuple(H.shape)} for hessians[{i}]."
            )
        Hs.append(0.5 * (H + H.T))
    P = Hs[0].shape[0]
    gs = []
    for i, g in enumerate(gradients):
        g = torch.as_tensor(g).to(torch.float64).reshape(-1)
        finite = all_finite(g)
        if g.numel() != P or not finite:
            raise ValueError(
                f"gradients[{i}] must have P = {P} finite entries (the Hessians' size); got "
                f"{g.numel()} entries{'' if finite else ', not all finite'}."
            )
        gs.append(g)
    candidates = [torch.linalg.eigh(H).eigenvectors[:, -1] for H in Hs]
    candidates.append(torch.linalg.eigh(sum(Hs) / len(Hs)).eigenvectors[:, -1])
    best: tuple[float, tuple[float, ...], float, Tensor] | None = None
    for q in candidates:
        lams = tuple(float(q @ H @ q) for H in Hs)
        delta = max(float(torch.linalg.vector_norm(H @ q - lam * q)) for H, lam in zip(Hs, lams))
        score = min(lams) - delta
        if best is None or score > best[0]:
            best = (score, lams, delta, q)
    assert best is not None
    _, lams, delta, q = best
    gamma = max(abs(float(q @ g)) for g in gs)
    lmax = tuple(float(torch.linalg.eigvalsh(H)[-1]) for H in Hs)
    edge = 2.0 / lr
    if min(lams) > edge + delta + gamma / radius:
        prediction = "escape"
    elif max(lmax) <= edge:
        prediction = "stay"
    else:
        prediction = "undetermined"
    return SwitchingLemma(lams, min(lams), delta, gamma, lmax, prediction, q)
