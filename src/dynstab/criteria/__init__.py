"""Linear stability of GD and SGD at interpolating minima of the ½-square loss.

Set up once, query many: :class:`StabilityProblem` holds the validated Gram matrix K = JJᵀ/n
(shape ``(nC, nC)``, sample-major) or the per-sample Jacobians, and answers every criterion for
any :class:`dynstab.sampling.Sampling`. The one-call functions are thin wrappers of its methods.

* :mod:`~dynstab.criteria.problem` — :class:`StabilityProblem` (from K, Jacobians or a model;
  the Gram or the parameter route, chosen by a cost model within a memory budget),
  :func:`eta_star`, :func:`critical_lr`, :func:`gram_coordinates`;
* :mod:`~dynstab.criteria.gram` — the operators of the exact mean-square threshold η*
  (Mulayoff & Michaeli 2024) in row-space coordinates and their dense and matrix-free solvers;
  the commuting / 1-D closed form (Wu, Ma & E 2018);
* :mod:`~dynstab.criteria.bounds` and :mod:`~dynstab.criteria.alignment` — cheap necessary
  bounds on η*, Wu, Ma & E (2018)'s sufficient learning rate, the alignment factor μ (Wu, Wang
  & Su 2022);
* :mod:`~dynstab.criteria.linearized` — exact second-moment propagation and Lyapunov
  exponents of linearized SGD;
* :mod:`~dynstab.criteria.verdict` — :func:`check_stability` and :func:`stability` reports;
* :mod:`~dynstab.criteria.sampled` — the sampled (matrix-free) route at any n:
  :class:`SampledStability` (η̂* and ρ̂ with confidence intervals by population dynamics with
  per-batch curvature products, scalable bounds), reached through :func:`stability`;
* :mod:`~dynstab.criteria.momentum` — heavy-ball and Nesterov momentum: GD thresholds
  (:func:`momentum_gd_threshold`) and the exact mean-square threshold in Gram coordinates;
* :mod:`~dynstab.criteria.switching` — GD at non-differentiable minima as a switching system
  (Mulayoff, Michaeli & Soudry 2021): :func:`switching_lemma`;
* :mod:`~dynstab.criteria.routes` — the Gram and parameter routes and their cost model;
* :mod:`~dynstab.criteria.spectral` — validation, PSD certificate and kept spectrum of K;
* :mod:`~dynstab.criteria.resources` — memory budgets;
* :mod:`~dynstab.criteria.sampling` — mixture weights p and q (from :mod:`dynstab.sampling`);
* :mod:`~dynstab.criteria.reference` — parameter-space Kronecker references for tests.
"""

from dynstab.criteria.alignment import alignment_bound, alignment_factor, alignment_infimum
from dynstab.criteria.bounds import (
    frobenius_bound,
    gd_bound,
    mm23_bound_15,
    mm23_bound_16,
    rank_one_bound,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria.gram import GramCoordinates, commuting_eta_star, gd_threshold
from dynstab.criteria.linearized import (
    lyapunov_exponent,
    propagate_second_moment,
    second_moment_growth,
)
from dynstab.criteria.momentum import momentum_gd_threshold
from dynstab.criteria.problem import (
    CheckOptions,
    RouteOptions,
    StabilityProblem,
    critical_lr,
    eta_star,
    gram_coordinates,
)
from dynstab.criteria.results import (
    BoundRow,
    EtaStarResult,
    LyapunovResult,
    RankOneBoundResult,
    StabilityReport,
)
from dynstab.criteria.routes import RouteCost
from dynstab.criteria.sampled import (
    GrowthEstimate,
    SampledBound,
    SampledConfig,
    SampledEtaStar,
    SampledStability,
    SampledStabilityReport,
)
from dynstab.criteria.sampling import SAMPLING_SCHEMES, mixing_p, q_factor
from dynstab.criteria.switching import SwitchingLemma, switching_lemma
from dynstab.criteria.verdict import check_stability, stability

__all__ = [
    "SAMPLING_SCHEMES",
    "BoundRow",
    "CheckOptions",
    "EtaStarResult",
    "GramCoordinates",
    "GrowthEstimate",
    "LyapunovResult",
    "RankOneBoundResult",
    "RouteCost",
    "RouteOptions",
    "SampledBound",
    "SampledConfig",
    "SampledEtaStar",
    "SampledStability",
    "SampledStabilityReport",
    "StabilityProblem",
    "StabilityReport",
    "SwitchingLemma",
    "alignment_bound",
    "alignment_factor",
    "alignment_infimum",
    "check_stability",
    "commuting_eta_star",
    "critical_lr",
    "eta_star",
    "frobenius_bound",
    "gd_bound",
    "gd_threshold",
    "gram_coordinates",
    "lyapunov_exponent",
    "mixing_p",
    "mm23_bound_15",
    "mm23_bound_16",
    "momentum_gd_threshold",
    "propagate_second_moment",
    "q_factor",
    "rank_one_bound",
    "second_moment_growth",
    "stability",
    "switching_lemma",
    "trace_bound",
    "wme18_sufficient_lr",
]
