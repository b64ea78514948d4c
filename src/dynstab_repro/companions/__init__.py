"""Companion reproductions, on the same runner and report format as Wu & Su (2023).

Registered experiments (paper in brackets):

* ``eos/gd-sweep``, ``eos/sgd-batch`` — edge of stability on mnist1d (Cohen et al., ICLR 2021);
* ``eos/cifar-cnn`` — C21's CNN trained by SGD with momentum, tracked by ``StabilityTracker``;
* ``wme18/toy``, ``wme18/sharpness`` — sharpness and non-uniformity (Wu, Ma & E, NeurIPS 2018);
* ``mm23/sweep`` — exact mean-square stability (Mulayoff & Michaeli, COLT 2024);
* ``mms21/switch``, ``mms21/weight``, ``mms21/sweep`` — minima stability in function space
  (Mulayoff, Michaeli & Soudry, NeurIPS 2021);
* ``wws22/alignment`` — alignment of SGD noise (Wu, Wang & Su, NeurIPS 2022);
* ``eos/lr-drop``, ``mms21/kink``, ``wws22/scaling``, ``wws22/linear-alignment`` — the
  learning-rate drop (C21), kink minima as switching systems (MMS21), ‖H‖_F vs n and width and
  the SGD escape rate, the alignment at minima of linear nets and random-feature models (WWS22).

Groups: ``eos``, ``wme18``, ``mm23``, ``mms21``, ``wws22`` and ``companions`` (all of them).

Conventions shared by every companion: the loss is the ½-MSE
L(θ) = (1/n) Σ_i ½‖f(x_i; θ) − y_i‖² (:func:`dynstab.losses.half_mse`), so the GD threshold is
λ_max(H) ≤ 2/η; networks are :mod:`dynstab.models` trained by :mod:`dynstab.training`
(:mod:`.scalar_nets`); every stability verdict is computed in float64 from the Gram matrix
K = JJᵀ/n (exact at interpolating minima, where H = G; :mod:`.minima`) or from Lanczos on
Hessian-vector products; every unit of work (:class:`~dynstab_repro.RunSpec`) is an
independent training run, so the runner parallelises and resumes them; curves are thinned to at
most :data:`~.results.MAX_POINTS` points (:mod:`.results`).
"""

from dynstab_repro.companions import (
    edge_of_stability,
    eos_cifar_cnn,
    eos_lr_drop,
    mm23,
    mms21,
    mms21_kink,
    wme18,
    wws22,
    wws22_linear_alignment,
    wws22_scaling,
)
from dynstab_repro.registry import register_group

__all__ = ["GROUPS"]

#: The companion groups and their experiments.
GROUPS: dict[str, tuple[str, ...]] = {
    "eos": ("eos/gd-sweep", "eos/sgd-batch", "eos/lr-drop", "eos/cifar-cnn"),
    "wme18": ("wme18/toy", "wme18/sharpness"),
    "mm23": ("mm23/sweep",),
    "mms21": ("mms21/switch", "mms21/weight", "mms21/sweep", "mms21/kink"),
    "wws22": ("wws22/alignment", "wws22/scaling", "wws22/linear-alignment"),
}
for _group, _members in GROUPS.items():
    register_group(_group, _members)
register_group("companions", tuple(m for ms in GROUPS.values() for m in ms))

_ = (edge_of_stability, eos_cifar_cnn, mm23, mms21, wme18, wws22)
_new = (eos_lr_drop, mms21_kink, wws22_linear_alignment, wws22_scaling)
