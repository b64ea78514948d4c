"""Curvature and stability at a (near-)interpolating minimum, from the float64 Gram matrix.

Everything is computed by the library: K = JJᵀ/n by :func:`dynstab.curvature.gram_matrix`,
its spectrum by :func:`dynstab.norms.gram_spectrum`, the non-uniformity of Wu, Ma & E (2018) by
:func:`dynstab.norms.wme18_non_uniformity`, the exact threshold η* of Mulayoff & Michaeli
(COLT 2024) and their bounds (15) and (24) by the methods of one
:class:`dynstab.criteria.StabilityProblem` (``eta_star``, ``mm23_bound_15``, ``rank_one_bound``)
under one :class:`dynstab.sampling.Sampling`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynstab.criteria import StabilityProblem
from dynstab.curvature import gram_matrix
from dynstab.norms import gram_spectrum, wme18_non_uniformity
from dynstab.sampling import Sampling
from dynstab_repro.companions.results import finite

__all__ = ["JSONScalar", "MinimumSummary", "gram_float64", "gram_summary"]

#: A JSON scalar as stored in the units' records.
JSONScalar = float | int | str | bool | None


def gram_float64(model: nn.Module, X: Tensor) -> Tensor:
    """Float64 Gram matrix K = JJᵀ/n (rows ``i*C + c``) of a float64 copy of ``model``, on the CPU.

    K is computed on the model's device and returned on the CPU, where every verdict is
    computed. The model itself is not modified (its dtype, mode and ``.grad`` stay as they are).
    """
    m64 = copy.deepcopy(model).to(torch.float64)
    device = next(m64.parameters()).device
    return gram_matrix(m64, X.to(device=device, dtype=torch.float64)).detach().cpu()


@dataclass(frozen=True)
class MinimumSummary:
    """Curvature and stability at a minimum (see :func:`gram_summary` for the definitions)."""

    lambda_max: float
    trace: float
    frobenius: float
    non_uniformity: float
    p: float
    q: float
    gd_ratio: float
    eta_star: float | None = None
    generalized_sharpness: float | None = None
    ms_ratio: float | None = None
    eta_star_method: str | None = None
    eta_star_converged: bool | None = None
    bound15: float | None = None
    bound24: float | None = None
    exact: bool = False
    bounds: bool = False

    def to_dict(self) -> dict[str, JSONScalar]:
        """The JSON-able record (the exact and bound fields only when computed)."""
        out: dict[str, JSONScalar] = {
            k: getattr(self, k)
            for k in ("lambda_max", "trace", "frobenius", "non_uniformity", "p", "q", "gd_ratio")
        }
        if self.exact:
            for k in (
                "eta_star",
                "generalized_sharpness",
                "ms_ratio",
                "eta_star_method",
                "eta_star_converged",
            ):
                out[k] = getattr(self, k)
        if self.bounds:
            out.update(bound15=self.bound15, bound24=self.bound24)
        return out


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
) -> MinimumSummary:
    """Curvature and stability quantities of a (near-)interpolating minimum from K = JJᵀ/n.

    ``lambda_max`` = λ_max(H) = λ_max(K), ``trace`` = Tr K, ``frobenius`` = ‖K‖_F,
    ``non_uniformity`` (the WME18 s), ``q`` and ``p`` of the sampling scheme, ``gd_ratio`` =
    η·λ_max/2 and, with ``exact``, the exact threshold ``eta_star`` = 2/λ_max(C†D),
    ``generalized_sharpness`` = λ_max(C†D) and ``ms_ratio`` = η·λ_max(C†D)/2 (≤ 1 ⇔
    mean-square stable). With ``bounds`` also the lower bounds on the generalized sharpness of
    Mulayoff & Michaeli (2024): ``bound15`` = 2/η₁₅ of their eq. (15) and ``bound24`` = the
    optimized rank-one functional of their eq. (24). A GD run is ``batch_size = n`` with
    ``sampling="without"``. Non-finite values are None.
    """
    K = K.to(torch.float64)
    n = K.shape[0] // outputs
    spec = gram_spectrum(K)
    rule = Sampling(n, batch_size, sampling)
    fields: dict[str, float | str | bool | None] = {}
    if exact or bounds:  # one validated problem for every query: K is decomposed once
        problem = StabilityProblem.from_gram(K, outputs)
    if exact:
        res = problem.eta_star(rule)
        fields.update(
            eta_star=finite(res.eta_star),
            generalized_sharpness=finite(res.generalized_sharpness),
            ms_ratio=lr * res.generalized_sharpness / 2.0,
            eta_star_method=res.method,
            eta_star_converged=bool(res.converged),
        )
    if bounds:
        eta15 = problem.mm23_bound_15(rule)
        b24 = problem.rank_one_bound(rule, generator=generator)
        fields.update(
            bound15=finite(2.0 / eta15 if eta15 > 0 else math.inf), bound24=finite(b24.value)
        )
    return MinimumSummary(
        lambda_max=spec.lambda_max,
        trace=spec.trace,
        frobenius=spec.frobenius,
        non_uniformity=wme18_non_uniformity(K, outputs),
        p=rule.p,
        q=rule.q,
        gd_ratio=lr * spec.lambda_max / 2.0,
        exact=exact,
        bounds=bounds,
        **fields,  # type: ignore[arg-type]
    )
