"""dynstab: dynamical (linear) stability of GD and SGD at minima of neural-network losses.

The top level re-exports the entry points users reach for first; everything else lives in the
concept packages (see README "API overview" and docs/design.md):

* :mod:`dynstab.linalg` — Lanczos, power iteration, Hutchinson/Hutch++, SLQ on any operator.
* :mod:`dynstab.curvature` — Hessian / Gauss–Newton operators, Jacobians, the Gram matrix K.
* :mod:`dynstab.measures` — :func:`sharpness` and its report.
* :mod:`dynstab.criteria` — exact η*, bounds, verdicts (:func:`stability`), linearised dynamics.
* :mod:`dynstab.models`, :mod:`dynstab.norms`, :mod:`dynstab.function_space`, :mod:`dynstab.data`.
* :mod:`dynstab.training` — GD/SGD trainers, monitors, :class:`~dynstab.training.History`.
* :mod:`dynstab_repro` — reproductions (``dynstab run`` / ``dynstab reproduce``).

Conventions: loss ½·mean squared error (:func:`dynstab.losses.half_mse`), float64 verdicts,
explicit ``generator``/``seed`` arguments.
"""

from dynstab._version import __version__
from dynstab.criteria import (
    EtaStarResult,
    SampledConfig,
    SampledStability,
    SampledStabilityReport,
    StabilityReport,
    check_stability,
    critical_lr,
    eta_star,
    frobenius_bound,
    gd_threshold,
    mixing_p,
    momentum_gd_threshold,
    q_factor,
    stability,
    trace_bound,
)
from dynstab.curvature import GaussNewtonOperator, HessianOperator, gram_matrix, per_sample_jacobian
from dynstab.errors import (
    ConvergenceWarning,
    DivergenceWarning,
    DynstabWarning,
    NotInterpolatingWarning,
)
from dynstab.losses import cross_entropy, half_mse
from dynstab.measures import Measure, SharpnessReport, sharpness
from dynstab.training import History, StabilityTracker, TrainResult, train

__all__ = [
    "ConvergenceWarning",
    "DivergenceWarning",
    "DynstabWarning",
    "EtaStarResult",
    "GaussNewtonOperator",
    "HessianOperator",
    "History",
    "Measure",
    "NotInterpolatingWarning",
    "SampledConfig",
    "SampledStability",
    "SampledStabilityReport",
    "SharpnessReport",
    "StabilityReport",
    "StabilityTracker",
    "TrainResult",
    "__version__",
    "check_stability",
    "critical_lr",
    "cross_entropy",
    "eta_star",
    "frobenius_bound",
    "gd_threshold",
    "gram_matrix",
    "half_mse",
    "mixing_p",
    "momentum_gd_threshold",
    "per_sample_jacobian",
    "q_factor",
    "sharpness",
    "stability",
    "trace_bound",
    "train",
]

# Set up once, query many: the stability problem and the sharpness settings; and the error
# raised, before anything is allocated, when a planned allocation exceeds the memory budget.
from dynstab.criteria import StabilityProblem
from dynstab.errors import MemoryBudgetError
from dynstab.measures import SharpnessConfig

__all__ += ["MemoryBudgetError", "SharpnessConfig", "StabilityProblem"]
