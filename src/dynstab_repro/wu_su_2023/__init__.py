"""Reproduction of Wu & Su (ICML 2023), "The Implicit Regularization of Dynamical Stability in SGD".

Registered experiments:

* ``wu-su-2023/e1`` — diagonal linear net, LR sweep, SGD vs GD (:mod:`.e1_diagonal_sweep`);
* ``wu-su-2023/e2`` — diagonal linear net, SGD balances the layers (:mod:`.e2_balancing`);
* ``wu-su-2023/e3`` — two-layer ReLU net, SGD training dynamics (:mod:`.e3_relu_dynamics`);
* ``wu-su-2023/e4`` — two-layer ReLU net, LR sweep, SGD (√d·η axis) vs GD (:mod:`.e4_relu_sweep`);
* ``wu-su-2023/e5`` — theory checks: exact η* vs trace bound, H = G, closed forms, min-ℓ2 vs
  sparse interpolator (:mod:`.e5_theory_checks`);

and the group ``wu-su-2023`` (all five). Run with ``dynstab reproduce wu-su-2023 --quick`` or
:func:`dynstab_repro.reproduce`. The quick profile checks every claim on smaller settings with
2 seeds (E5.e2 needs d = 1000, n = 300 and is full-only); the full profile uses the full
settings and 3 seeds. Each claim states the paper's statement and where it is in the paper,
the acceptance rule, our number as median and range over seeds, and a status (reproduced,
adapted, not reproduced, failed; :func:`.analysis.paper_claim`). Runs are counted by category
(converged at the target η, converged during the warm-up, not converged, diverged;
:func:`.analysis.run_outcome`) in claims, tables and figures.

Shared modules, by concern: :mod:`.problems` (data sets and initial networks, drawn by
:mod:`dynstab.data` and :mod:`dynstab.models`), :mod:`.configs` (config fields, quick profiles,
documented defaults), :mod:`.units` (training with :func:`dynstab.training.train_runs` and the
library's measures), :mod:`.analysis` (selections, medians, claims) and :mod:`.plots`.

Conventions: ½-MSE loss, float64, SGD with B = 1 sampled with replacement, cubic warm-up then
constant η, convergence at L ≤ 1e−10 with ≥ 20 % of the updates at the full η, bounds tested at
the effective η (:attr:`dynstab.training.TrainResult.effective_lr`); one BLAS/torch thread per
unit.
"""

from dynstab_repro.registry import register, register_group
from dynstab_repro.wu_su_2023.e1_diagonal_sweep import E1Config, E1DiagonalSweep
from dynstab_repro.wu_su_2023.e2_balancing import E2Balancing, E2Config
from dynstab_repro.wu_su_2023.e3_relu_dynamics import E3Config, E3ReLUDynamics
from dynstab_repro.wu_su_2023.e4_relu_sweep import E4Config, E4ReLUSweep
from dynstab_repro.wu_su_2023.e5_theory_checks import E5Config, E5TheoryChecks

__all__ = [
    "GROUP",
    "E1Config",
    "E1DiagonalSweep",
    "E2Balancing",
    "E2Config",
    "E3Config",
    "E3ReLUDynamics",
    "E4Config",
    "E4ReLUSweep",
    "E5Config",
    "E5TheoryChecks",
]

#: Registry group of the five experiments.
GROUP = "wu-su-2023"

for _cls in (E1DiagonalSweep, E2Balancing, E3ReLUDynamics, E4ReLUSweep, E5TheoryChecks):
    register(_cls)
register_group(
    GROUP,
    [c.name for c in (E1DiagonalSweep, E2Balancing, E3ReLUDynamics, E4ReLUSweep, E5TheoryChecks)],
)
