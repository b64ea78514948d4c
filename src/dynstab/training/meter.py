"""One curvature measurement along a training run: warm-started, cost-budgeted, side-effect free.

:class:`CurvatureMeter` is the single implementation behind every curvature monitor of
:mod:`dynstab.training` (:class:`~dynstab.training.SharpnessMonitor`,
:class:`~dynstab.training.TraceMonitor`) and behind :class:`~dynstab.training.StabilityTracker`
(any training loop, including :func:`~dynstab.training.train`). At the model's current
parameters it measures, on a fixed probe set,

* ``"lambda_max"`` — λ_max of the loss Hessian H (or Gauss–Newton G) by the Krylov engine of
  :mod:`dynstab.linalg` (certified error bound), started from the previous call's top
  eigenvector (the top eigenvector moves slowly along a trajectory, so a warm start needs few
  products), within the product budget of a :class:`~dynstab.linalg.LanczosConfig`;
* ``"preconditioned"`` — λ_max(P⁻¹(H + W)) of an optimizer's frozen preconditioner
  (:class:`~dynstab.curvature.Preconditioner`; Cohen et al. 2022), warm-started the same way;
* ``"trace"`` / ``"frobenius"`` — Tr H and ‖H‖_F by the stochastic estimator of a
  :class:`~dynstab.linalg.TraceConfig` (Hutchinson by default), with standard errors
  (‖H‖_F = √(E‖Hv‖²), its standard error by the delta method).

The model's parameters, mode, buffers, ``.grad`` and the global RNG state are left as found
(the curvature operators guarantee it; the meter draws from its own generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int
from dynstab._types import Data, LossFn
from dynstab.curvature import (
    CurvatureOperator,
    CurvatureProblem,
    GaussNewtonOperator,
    HessianOperator,
    Preconditioner,
)
from dynstab.linalg import LanczosConfig, TraceConfig, estimate_trace, lanczos_top_eigenpairs

__all__ = ["DEFAULT_LANCZOS", "DEFAULT_TRACE", "MEASURES", "CurvatureMeter", "Reading"]

#: Measures a :class:`CurvatureMeter` can take.
MEASURES = ("lambda_max", "preconditioned", "trace", "frobenius")

#: Default Lanczos budget per measurement: relative accuracy 1e-3 within 40 products (a warm
#: start typically certifies in 10–30; a cold start on a network Hessian in 20–40).
DEFAULT_LANCZOS = LanczosConfig(tol=1e-3, max_iters=40)

#: Default trace budget per measurement: 20 Hutchinson (Rademacher) probes.
DEFAULT_TRACE = TraceConfig(num_matvecs=20)


@dataclass(frozen=True)
class Reading:
    """One measurement: named values plus what the thresholds need.

    Attributes:
        values: Column name → value (float64 arithmetic; see :class:`CurvatureMeter`).
        n: Number of probe samples.
        outputs: Outputs per sample C of the model on the probe set.
        loss: The loss on the probe set at the measured parameters.
    """

    values: dict[str, float]
    n: int
    outputs: int
    loss: float


class CurvatureMeter:
    """Warm-started, budgeted curvature measurements at a model's current parameters.

    Columns of :meth:`measure` (only those of the requested measures):

    * ``lambda_max``, ``lambda_max_error_bound`` (certified |θ − λ_max|, ``inf`` when not
      certified), ``lambda_max_residual``, ``lambda_max_hvps``, ``lambda_max_converged``
      (1.0/0.0);
    * ``preconditioned_lambda_max``, ``preconditioned_error_bound``, ``preconditioned_hvps``,
      ``preconditioned_converged``;
    * ``trace``, ``trace_stderr``; ``frobenius``, ``frobenius_stderr``; ``hutchinson_hvps``
      (products of the trace estimator, shared by trace and Frobenius norm).

    Args:
        measures: Subset of :data:`MEASURES`.
        curvature: ``"hessian"`` (default) or ``"gauss_newton"``.
        lanczos: Lanczos settings per eigenvalue measurement (:data:`DEFAULT_LANCZOS`).
        trace: Trace-estimator settings (:data:`DEFAULT_TRACE`); ``"frobenius"`` needs the
            ``"hutchinson"`` or ``"hutchpp"`` estimator.
        seed: Seed of the meter's own generator (start and probe vectors). Default 0.
        warm_start: Start Lanczos from the previous call's eigenvector. Default True.

    Raises:
        ValueError: On an unknown or empty measure list, an unknown curvature, a negative
            seed, or ``"frobenius"`` with the ``"xtrace"`` estimator.
        TypeError: If ``lanczos``/``trace`` are not a ``LanczosConfig``/``TraceConfig``.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> meter = CurvatureMeter(("lambda_max", "trace"))
        >>> r = meter.measure(model, half_mse, (X, torch.zeros(2, 1, dtype=torch.float64)))
        >>> round(r.values["lambda_max"], 6), r.values["trace"]  # H = XᵀX/2 = diag(1/2, 2)
        (2.0, 2.5)
    """

    def __init__(
        self,
        measures: Sequence[str] = ("lambda_max",),
        *,
        curvature: str = "hessian",
        lanczos: LanczosConfig | None = None,
        trace: TraceConfig | None = None,
        seed: int = 0,
        warm_start: bool = True,
    ) -> None:
        if isinstance(measures, str):
            measures = (measures,)
        if not measures:
            raise ValueError(f"measures must name at least one of {list(MEASURES)}; got none.")
        for m in measures:
            check_choice("measure", m, MEASURES)
        check_choice("curvature", curvature, ("hessian", "gauss_newton"))
        lanczos = DEFAULT_LANCZOS if lanczos is None else lanczos
        trace = DEFAULT_TRACE if trace is None else trace
        if not isinstance(lanczos, LanczosConfig):
            raise TypeError(f"lanczos must be a LanczosConfig; got {type(lanczos).__name__}.")
        if not isinstance(trace, TraceConfig):
            raise TypeError(f"trace must be a TraceConfig; got {type(trace).__name__}.")
        if "frobenius" in measures and trace.estimator == "xtrace":
            raise ValueError(
                "the 'frobenius' measure needs a trace estimator that also estimates ‖H‖_F²; "
                "got TraceConfig(estimator='xtrace'). Use 'hutchinson' or 'hutchpp'."
            )
        self.measures = tuple(dict.fromkeys(measures))
        self.curvature = curvature
        self.lanczos, self.trace = lanczos, trace
        self.seed = check_int("seed", seed, minimum=0)
        self.warm_start = bool(warm_start)
        self.reset()

    def reset(self) -> None:
        """Drop the warm starts and reseed the generator."""
        self._vectors: dict[str, Tensor] = {}
        self._generator = torch.Generator().manual_seed(self.seed)

    def _top(self, key: str, op: object, p: int) -> dict[str, float]:
        v0 = self._vectors.get(key) if self.warm_start else None
        if v0 is not None and v0.shape[0] != p:
            v0 = None
        eig = lanczos_top_eigenpairs(
            op,  # type: ignore[arg-type]
            1,
            v0=v0,
            generator=self._generator,
            config=self.lanczos,
        )
        if eig.vectors is not None:
            self._vectors[key] = eig.vectors[:, 0].detach().clone()
        bound = float(eig.error_bounds[0]) if eig.error_bounds is not None else math.inf
        return {
            "lambda_max": float(eig.values[0]),
            "error_bound": bound,
            "residual": float(eig.residuals[0]),
            "hvps": float(eig.num_matvecs),
            "converged": float(eig.converged),
        }

    def measure(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Data,
        *,
        preconditioner: Preconditioner | None = None,
        params: Sequence[str] | None = None,
        allow_stochastic: bool = False,
    ) -> Reading:
        """Measure the requested quantities at the model's current parameters.

        Args:
            model: The network (left as found).
            loss_fn: Batch-mean loss.
            data: Probe data: one ``(inputs, targets)`` batch or a re-iterable of batches.
            preconditioner: The optimizer's frozen preconditioner, required by
                ``"preconditioned"`` (its selection then fixes the parameters).
            params: Names of the parameters to measure (default: those with
                ``requires_grad=True``).
            allow_stochastic: Accept train-mode BatchNorm / Dropout (see
                :class:`~dynstab.curvature.CurvatureProblem`).

        Returns:
            A :class:`Reading`.

        Raises:
            ValueError: If ``"preconditioned"`` is requested without a preconditioner, plus the
                curvature operators' errors on bad data or losses.
        """
        if "preconditioned" in self.measures and preconditioner is None:
            raise ValueError(
                "the 'preconditioned' measure needs the optimizer's preconditioner (pass "
                "optimizer=... to the tracker, or drop the measure)."
            )
        if preconditioner is not None:
            params = list(preconditioner.selection.names)
        problem = CurvatureProblem(
            model,
            loss_fn,
            data,
            None if params is None else list(params),
            allow_stochastic=allow_stochastic,
            who="CurvatureMeter",
        )
        cls: type[CurvatureOperator] = (
            HessianOperator if self.curvature == "hessian" else GaussNewtonOperator
        )
        op = cls.from_problem(problem)
        p = op.shape[0]
        out: dict[str, float] = {}
        if "lambda_max" in self.measures:
            top = self._top("lambda_max", op, p)
            out["lambda_max"] = top["lambda_max"]
            for k in ("error_bound", "residual", "hvps", "converged"):
                out[f"lambda_max_{k}"] = top[k]
        if "preconditioned" in self.measures:
            assert preconditioner is not None
            top = self._top("preconditioned", preconditioner.operator(op), p)
            out["preconditioned_lambda_max"] = top["lambda_max"]
            for k in ("error_bound", "hvps", "converged"):
                out[f"preconditioned_{k}"] = top[k]
        if "trace" in self.measures or "frobenius" in self.measures:
            tr, fro2 = estimate_trace(op, self.trace, generator=self._generator)
            out["hutchinson_hvps"] = float(tr.num_matvecs)
            if "trace" in self.measures:
                out["trace"], out["trace_stderr"] = float(tr.estimate), float(tr.stderr)
            if "frobenius" in self.measures:
                assert fro2 is not None  # checked in __init__
                fro = math.sqrt(max(float(fro2.estimate), 0.0))
                out["frobenius"] = fro
                out["frobenius_stderr"] = float(fro2.stderr) / (2 * fro) if fro > 0 else math.inf
        return Reading(out, problem.n, problem.outputs_per_sample, problem.loss_value)
