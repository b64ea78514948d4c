"""Reproduction of Wu & Su (ICML 2023), "The Implicit Regularization of Dynamical Stability in SGD".

Spec: ``wu_su_2023.md`` (§4 E1–E5, ambiguities A1–A14). Registered experiments:

* ``wu-su-2023/e1`` — diagonal linear net, LR sweep, SGD vs GD (:mod:`.e1_diagonal_sweep`);
* ``wu-su-2023/e2`` — diagonal linear net, SGD balances the layers (:mod:`.e2_balancing`);
* ``wu-su-2023/e3`` — two-layer ReLU net, SGD training dynamics (:mod:`.e3_relu_dynamics`);
* ``wu-su-2023/e4`` — two-layer ReLU net, LR sweep, SGD (√d·η axis) vs GD (:mod:`.e4_relu_sweep`);
* ``wu-su-2023/e5`` — theory checks: exact η* vs trace bound, H = G, closed forms, R6 table
  (:mod:`.e5_theory_checks`);

and the group ``wu-su-2023`` (all five). Run with ``dynstab reproduce wu-su-2023 --quick`` or
:func:`dynstab_repro.reproduce`.

Runtimes (measured on a shared 2-core machine): the quick profile (every claim checked on
smaller but honest settings; E5.e2 needs d = 1000, n = 300 and is full-only) takes about 25 s
serially for the whole group, process start included (28 claims). The full profile (the
spec's settings, 3 seeds; 29 claims) takes about 8.6 CPU-minutes of units (E1 28 s, E2 70 s,
E3 52 s, E4 352 s, E5 13 s), about 5.6 minutes wall with two workers; every claim of E1–E5
passes in both profiles.

Conventions: ½-MSE loss (A9), float64, SGD with B = 1 sampled with replacement (A2), cubic
warm-up then constant η (A6), convergence at L ≤ 1e−10 with ≥ 20 % of the steps at full η (A7).
Data and initializations come from :mod:`dynstab.data` and :mod:`dynstab.models` (seeded
per unit); training uses the closed-form NumPy fast paths of :mod:`.common` (identical updates
to :func:`dynstab.training.train`, a few µs per SGD step), one BLAS/torch thread per unit.
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
