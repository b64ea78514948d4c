"""Config fields shared by the Wu & Su (2023) experiments, quick profiles and documented defaults.

The defaults of every config are the reproduction's full settings; ``PROFILES["quick"]`` shrinks
them for CI. Where the paper leaves a setting open, the choice made here is stated in words in
each report (``ambiguities`` of the experiment), built with :func:`documented_defaults`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from dynstab.models import TwoLayerReLU
from dynstab_repro.config import ExperimentConfig
from dynstab_repro.wu_su_2023.problems import (
    Problem,
    diagonal_problem,
    init_relu,
    relu_problem,
)

__all__ = [
    "QUICK_DIAGONAL",
    "QUICK_RELU",
    "DiagonalDataConfig",
    "Overrides",
    "ReLUDataConfig",
    "SweepConfig",
    "TrainerConfig",
    "documented_defaults",
]

#: A profile's overrides of config fields (JSON-like values).
Overrides = dict[str, object]


@dataclass(frozen=True)
class DiagonalDataConfig(ExperimentConfig):
    """Data of the diagonal-net experiments (d = 1000, n = 300, n_test = 3000, 3-sparse β*).

    Attributes:
        d: Input dimension.
        n: Training samples.
        n_test: Test samples.
        inputs: Input law, ``"gaussian"`` (default) or ``"cube"``/``"sphere"``.
        support: Number of ones in β*.
    """

    d: int = 1000
    n: int = 300
    n_test: int = 3000
    inputs: Literal["gaussian", "sphere", "cube"] = "gaussian"
    support: int = 3

    def problem(self, seed: int) -> Problem:
        """The data set of unit seed ``seed``."""
        return diagonal_problem(self, seed)


@dataclass(frozen=True)
class ReLUDataConfig(ExperimentConfig):
    """Data and model of the ReLU-net experiments (d = m = 100, n = 300, n_test = 3000, k = 10).

    Attributes:
        d: Input dimension.
        m: Width of the student network.
        n: Training samples.
        n_test: Test samples.
        k: Teacher neurons.
        init: ``"lw"`` (w_j ~ N(0, I/d), default) or ``"r3p"`` (w_j ~ N(0, I/√d)).
    """

    d: int = 100
    m: int = 100
    n: int = 300
    n_test: int = 3000
    k: int = 10
    init: Literal["lw", "r3p"] = "lw"

    def problem(self, seed: int) -> Problem:
        """The data set of unit seed ``seed``."""
        return relu_problem(d=self.d, n=self.n, n_test=self.n_test, k=self.k, seed=seed)

    def initial_model(self, seed: int) -> TwoLayerReLU:
        """The initial network of unit seed ``seed`` (:func:`~.problems.init_relu`)."""
        return init_relu(self.d, self.m, self.init, seed)


@dataclass(frozen=True)
class TrainerConfig(ExperimentConfig):
    """Trainer settings shared by E1–E4 (B = 1 with replacement, cubic warm-up).

    Attributes:
        batch_size: SGD batch size B (sampling with replacement).
        warmup_power: Exponent k of the warm-up η·min(1, (t+1)/T_w)^k (3 = cubic).
        stop_loss: A run has converged when L ≤ stop_loss ...
        min_full_lr_fraction: ... with at least this fraction of its updates at the full η.
        clip: Optional gradient-norm clipping (None = off).
        trace_slack: Relative slack in "Tr G ≤ (1 + slack)·2/η" (5 %).
        progress: tqdm bars inside each unit.
    """

    batch_size: int = 1
    warmup_power: float = 3.0
    stop_loss: float = 1e-10
    min_full_lr_fraction: float = 0.2
    clip: float | None = None
    trace_slack: float = 0.05
    progress: bool = False


@dataclass(frozen=True)
class SweepConfig(TrainerConfig):
    """Settings of an SGD-vs-GD sweep (E1, E2, E4).

    Attributes:
        seeds: Seeds of data, initialization and sampler (3 seeds).
        optimizers: Subset of ``("sgd", "gd")``.
        sgd_steps: SGD step budget.
        sgd_warmup_steps: SGD warm-up length.
        gd_steps: GD step budget.
        gd_warmup: ``"auto"`` = warm up only if η > 2/λ_max(G_0), or always/never.
        gd_warmup_steps: Warm-up length for GD when used.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    optimizers: tuple[str, ...] = ("sgd", "gd")
    sgd_steps: int = 300_000
    sgd_warmup_steps: int = 50_000
    gd_steps: int = 30_000
    gd_warmup: Literal["auto", "always", "never"] = "auto"
    gd_warmup_steps: int = 5_000


#: Quick-profile overrides shared by E1 and E2 (diagonal net, two seeds).
QUICK_DIAGONAL: Overrides = {
    "d": 500,
    "n": 150,
    "n_test": 1000,
    "seeds": (0, 1),
    "sgd_steps": 100_000,
    "sgd_warmup_steps": 20_000,
    "gd_steps": 20_000,
    "gd_warmup_steps": 2_000,
}

#: Quick-profile overrides shared by E3 and E4 (ReLU net, two seeds).
QUICK_RELU: Overrides = {"d": 50, "m": 100, "n": 150, "n_test": 1000, "k": 5, "seeds": (0, 1)}

#: Documented defaults shared by several experiments, by topic.
_SHARED_DEFAULTS: dict[str, str] = {
    "sampling": "SGD batches sampled with replacement, B = 1",
    "initialization": "w_j ~ N(0, I_d/d), a_j ~ N(0, 1)",
    "convergence": "converged: L ≤ 1e-10 with ≥ 20% of the updates at the full η; bounds "
    "tested at the effective η (η_t at the last downward crossing of L = 1e-6)",
    "budget": "SGD ≤ 3e5 steps, GD ≤ 3e4 steps, 3 seeds, medians over seeds",
    "loss": "loss ½(f - y)^2 per sample",
    "GD schedule": "GD at constant η; warm-up only when η > 2/λ_max(G_0)",
}


def documented_defaults(
    shared: Iterable[str], specific: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The shared documented defaults named in ``shared``, then the ``specific`` ones.

    Raises:
        KeyError: For a shared topic without a shared text.

    Example:
        >>> list(documented_defaults(["loss", "sampling"], {"biases": "none"}))
        ['loss', 'sampling', 'biases']
    """
    out = {k: _SHARED_DEFAULTS[k] for k in shared}
    out.update(specific or {})
    return out
