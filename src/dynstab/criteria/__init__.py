"""Linear stability of GD and SGD at interpolating minima of the ½-square loss.

Pure numerics on the Gram matrix K = JJᵀ/n (shape ``(nC, nC)``, sample-major):

* :mod:`~dynstab.criteria.sampling` — mixture weights p and q of the sampling schemes;
* :mod:`~dynstab.criteria.gram` — the exact mean-square threshold η* (MM23) through the
  Gram reduction, dense or matrix-free, and the commuting / 1-D closed form (WME18);
* :mod:`~dynstab.criteria.bounds` and :mod:`~dynstab.criteria.alignment` — cheap necessary
  bounds on η*, WME18's sufficient learning rate, the alignment factor μ (WWS22);
* :mod:`~dynstab.criteria.linearized` — exact second-moment propagation and Lyapunov
  exponents of linearized SGD;
* :mod:`~dynstab.criteria.verdict` — :func:`check_stability` and :func:`stability` reports;
* :mod:`~dynstab.criteria.reference` — parameter-space (P²×P²) references for tests.
"""

from dynstab.criteria.alignment import alignment_bound, alignment_factor, alignment_infimum
from dynstab.criteria.bounds import (
    RankOneBoundResult,
    frobenius_bound,
    gd_bound,
    mm23_bound_15,
    mm23_bound_16,
    rank_one_bound,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria.gram import (
    EtaStarResult,
    GramCoordinates,
    commuting_eta_star,
    critical_lr,
    eta_star,
    gd_threshold,
    gram_coordinates,
)
from dynstab.criteria.linearized import (
    LyapunovResult,
    lyapunov_exponent,
    propagate_second_moment,
    second_moment_growth,
)
from dynstab.criteria.sampling import SAMPLING_SCHEMES, mixing_p, q_factor
from dynstab.criteria.verdict import BoundRow, StabilityReport, check_stability, stability

__all__ = [
    "SAMPLING_SCHEMES",
    "BoundRow",
    "EtaStarResult",
    "GramCoordinates",
    "LyapunovResult",
    "RankOneBoundResult",
    "StabilityReport",
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
    "propagate_second_moment",
    "q_factor",
    "rank_one_bound",
    "second_moment_growth",
    "stability",
    "trace_bound",
    "wme18_sufficient_lr",
]
