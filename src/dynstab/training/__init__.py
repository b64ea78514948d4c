"""Training with stability monitors: one GD/SGD engine, samplers, schedules, monitors, history.

* :func:`train` — one GD/SGD run (model trained in place) -> :class:`TrainResult`.
* :func:`train_batched` — many small runs (η × seed grid) at once; equal to :func:`train` run
  by run.
* :func:`train_runs` — any list of :class:`Run` s (own η, sampler seed, initial parameters,
  schedule) of one architecture, at once.
* One :class:`TrainSettings` (steps, batches, loss, stopping rule, gradient, momentum) is
  shared by all three, given as keywords (:class:`TrainOptions`) or as a ready object
  (``settings=``).
* All three are front-ends of one engine (:mod:`dynstab.training.engine`) whose gradients come
  from a :class:`Stepper`: :class:`AutogradStepper` (any ``nn.Module``), :class:`VmapStepper`
  (``torch.func.vmap`` over runs) or :class:`ClosedFormStepper` (the model's
  ``closed_form_grad``); one :class:`StoppingRule` defines convergence, divergence and the
  effective learning rate of every run.
* :class:`StabilityTracker` — curvature vs stability thresholds (2/η, 2(1 + β)/η, Adam's
  38/η, 2C/(qη)) in any training loop (``tracker.step()``), or as a monitor of :func:`train`;
  :func:`lightning_callback` for PyTorch Lightning. Its measurements and the curvature
  monitors' are one implementation, :class:`CurvatureMeter`.
* Momentum: ``train(..., momentum=β, nesterov=...)`` steps exactly as ``torch.optim.SGD``.
* Schedules :func:`constant`, :func:`warmup`; samplers :class:`BatchSampler`.
* Monitors :class:`LossMonitor`, :class:`TestErrorMonitor`, :class:`NormMonitor`,
  :class:`GradientNormMonitor`,
  :class:`SharpnessMonitor`, :class:`TraceMonitor`, :class:`GramMonitor`,
  :class:`StabilityMonitor`; results in a :class:`History` (JSON/CSV, atomic save).

Loss convention: ½·mean squared error (:func:`dynstab.losses.half_mse`), so GD is stable at a
minimum iff λ_max(H) ≤ 2/η.
"""

from dynstab.training.batched import train_batched
from dynstab.training.engine import Run, train_runs
from dynstab.training.history import History
from dynstab.training.meter import CurvatureMeter
from dynstab.training.monitors import (
    GradientNormMonitor,
    GramMonitor,
    LossMonitor,
    Monitor,
    NormMonitor,
    SharpnessMonitor,
    StabilityMonitor,
    TestErrorMonitor,
    TraceMonitor,
    gradient_norm,
)
from dynstab.training.result import StoppingRule, TrainResult
from dynstab.training.samplers import BatchSampler, draw_batches
from dynstab.training.schedules import Constant, Schedule, Warmup, constant, warmup
from dynstab.training.settings import TrainOptions, TrainSettings
from dynstab.training.steppers import AutogradStepper, ClosedFormStepper, Stepper, VmapStepper
from dynstab.training.tracker import StabilityTracker, lightning_callback
from dynstab.training.trainer import train

__all__ = [
    "AutogradStepper",
    "BatchSampler",
    "ClosedFormStepper",
    "Constant",
    "CurvatureMeter",
    "GradientNormMonitor",
    "GramMonitor",
    "History",
    "LossMonitor",
    "Monitor",
    "NormMonitor",
    "Run",
    "Schedule",
    "SharpnessMonitor",
    "StabilityMonitor",
    "StabilityTracker",
    "Stepper",
    "StoppingRule",
    "TestErrorMonitor",
    "TraceMonitor",
    "TrainOptions",
    "TrainResult",
    "TrainSettings",
    "VmapStepper",
    "Warmup",
    "constant",
    "draw_batches",
    "gradient_norm",
    "lightning_callback",
    "train",
    "train_batched",
    "train_runs",
    "warmup",
]
