"""Training with stability monitors: GD/SGD trainers, samplers, schedules, monitors, history.

* :func:`train` — one GD/SGD run (model trained in place) -> :class:`TrainResult`.
* :func:`train_batched` — many small runs (η × seed grid) at once with ``torch.func.vmap``;
  equal to :func:`train` run by run.
* Schedules :func:`constant`, :func:`warmup`; samplers :class:`BatchSampler`.
* Monitors :class:`LossMonitor`, :class:`TestErrorMonitor`, :class:`NormMonitor`,
  :class:`SharpnessMonitor`, :class:`TraceMonitor`, :class:`GramMonitor`,
  :class:`StabilityMonitor`; results in a :class:`History` (JSON/CSV, atomic save).

Loss convention: ½·mean squared error (:func:`dynstab.losses.half_mse`), so GD is stable at a
minimum iff λ_max(H) ≤ 2/η.
"""

from dynstab.training.batched import train_batched
from dynstab.training.history import History
from dynstab.training.monitors import (
    GramMonitor,
    LossMonitor,
    Monitor,
    NormMonitor,
    SharpnessMonitor,
    StabilityMonitor,
    TestErrorMonitor,
    TraceMonitor,
)
from dynstab.training.samplers import BatchSampler
from dynstab.training.schedules import Constant, Schedule, Warmup, constant, warmup
from dynstab.training.trainer import TrainResult, train

__all__ = [
    "BatchSampler",
    "Constant",
    "GramMonitor",
    "History",
    "LossMonitor",
    "Monitor",
    "NormMonitor",
    "Schedule",
    "SharpnessMonitor",
    "StabilityMonitor",
    "TestErrorMonitor",
    "TraceMonitor",
    "TrainResult",
    "Warmup",
    "constant",
    "train",
    "train_batched",
    "warmup",
]
