"""Monitors: named measurements taken during training and stored in the run's History.

A monitor is called as ``monitor(step, model, context) -> dict[str, float]`` every
``monitor.every`` steps (on θ_t, before update t) and once more on the final iterate. The
returned names become History columns, so two monitors of the same kind need distinct
``prefix``es. ``context`` is a dict the trainer fills with:

* ``"X"``, ``"y"``, ``"loss_fn"``, ``"n"`` — the training data and loss;
* ``"batch_size"``, ``"sampling"`` — B and the scheme (GD: B = n, ``"without"``);
* ``"step"``, ``"lr"`` (η_t), ``"target_lr"`` (η), ``"loss"`` (full loss at θ_t, or None when
  it was not evaluated at this step), ``"history"`` (the run's History so far).

Curvature monitors use :mod:`dynstab.curvature`, :mod:`dynstab.linalg` and
:mod:`dynstab.criteria`. Every monitor leaves the
model's parameters, mode and ``.grad`` untouched. All curvature conventions are those of
:func:`dynstab.losses.half_mse` (½·mean), for which the GD threshold is λ_max(H) = 2/η.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import LossFn
from dynstab.criteria import (
    alignment_factor,
    eta_star,
    frobenius_bound,
    gd_bound,
    q_factor,
    trace_bound,
)
from dynstab.curvature import gram_matrix
from dynstab.linalg import LanczosConfig, TraceConfig
from dynstab.norms import gram_spectrum
from dynstab.training.meter import CurvatureMeter

__all__ = [
    "GradientNormMonitor",
    "GramMonitor",
    "LossMonitor",
    "Monitor",
    "NormMonitor",
    "SharpnessMonitor",
    "StabilityMonitor",
    "TestErrorMonitor",
    "TraceMonitor",
    "gradient_norm",
]

_SHARPNESS_MEASURES = ("lambda_max", "trace", "frobenius")


class Monitor:
    """Base class: a named measurement taken every ``every`` steps.

    Subclasses implement :meth:`__call__` and may override :meth:`reset` (called by the
    trainer at the start of each run, e.g. to drop a warm start).

    Args:
        name: Name of the monitor (also the History column of single-valued monitors).
        every: Period in steps, >= 1.

    Raises:
        ValueError: If ``name`` is empty or ``every`` < 1.
    """

    def __init__(self, name: str, every: int = 1) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"monitor name must be a non-empty str; got {name!r}.")
        self.name = name
        self.every = check_int("every", every, minimum=1)

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return the measurements at ``step`` as ``{column name: value}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    @property
    def copyable(self) -> bool:
        """Whether a deep copy is an independent monitor.

        :func:`~dynstab.training.train_runs` gives every run its own deep copy of a shared
        monitor only when this holds; it is False for monitors that write to a file or log
        that the copies would share.
        """
        return True

    def reset(self) -> None:
        """Forget state carried between calls (no-op by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, every={self.every})"


def _data(X: Tensor | None, y: Tensor | None, context: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    if X is None:
        return context["X"], context["y"]
    return X, (context["y"] if y is None else y)


def _to_model(model: nn.Module, t: Tensor) -> Tensor:
    p = next(model.parameters())
    return t.to(device=p.device, dtype=p.dtype) if t.is_floating_point() else t.to(p.device)


class LossMonitor(Monitor):
    """Loss ``loss_fn(f(X), y)`` on a data set (default: the training set, i.e. L(θ_t)).

    Costs one forward pass over ``X``. Useful for SGD runs (whose full loss the trainer only
    evaluates every ``eval_every`` steps) and for validation sets.

    Args:
        X: Inputs ``(m, ...)``; None uses the training inputs.
        y: Targets ``(m, ...)``; None uses the training targets (requires ``X`` None too).
        every: Period in steps. Default 1.
        loss_fn: Loss; None uses the trainer's ``loss_fn``.
        name: History column. Default ``"train_loss"``.

    Raises:
        ValueError: If exactly one of ``X``, ``y`` is given.
    """

    def __init__(
        self,
        X: Tensor | None = None,
        y: Tensor | None = None,
        *,
        every: int = 1,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        name: str = "train_loss",
    ) -> None:
        super().__init__(name, every)
        if (X is None) != (y is None):
            raise ValueError(
                f"{type(self).__name__} needs both X and y, or neither (training set); got one."
            )
        self.X, self.y, self.loss_fn = X, y, loss_fn

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return ``{name: loss}``."""
        X, y = _data(self.X, self.y, context)
        loss_fn = self.loss_fn or context["loss_fn"]
        with torch.no_grad():
            out = model(_to_model(model, X))
            return {self.name: float(loss_fn(out, _to_model(model, y)))}


class TestErrorMonitor(Monitor):
    """Test error on held-out data.

    Reports ``{prefix}mse`` = (1/m) Σ_i ‖f(x_i) − y_i‖² (no ½; summed over outputs),
    ``{prefix}rel_mse`` = mse / ((1/m) Σ_i ‖y_i‖²) and, for classification (targets one-hot of
    shape ``(m, C)`` with C > 1, or integer labels ``(m,)``), ``{prefix}error`` = fraction of
    samples whose arg-max output differs from the label. Integer labels give only the error.

    Args:
        X_test: Test inputs ``(m, ...)``.
        y_test: Test targets ``(m,)``, ``(m, C)`` or integer labels ``(m,)``.
        every: Period in steps. Default 1.
        prefix: Column prefix. Default ``"test_"``.
        name: Monitor name. Default ``"test_error"``.

    Raises:
        ValueError: If ``X_test`` and ``y_test`` hold different numbers of samples.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        X_test: Tensor,
        y_test: Tensor,
        *,
        every: int = 1,
        prefix: str = "test_",
        name: str = "test_error",
    ) -> None:
        super().__init__(name, every)
        if X_test.shape[0] != y_test.shape[0] or X_test.shape[0] == 0:
            raise ValueError(
                "X_test and y_test must hold the same number m >= 1 of samples; got shapes "
                f"{tuple(X_test.shape)} and {tuple(y_test.shape)}."
            )
        self.X, self.y, self.prefix = X_test, y_test, prefix

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return the test MSE, relative MSE and (classification) error rate."""
        with torch.no_grad():
            out = model(_to_model(model, self.X))
        m = out.shape[0]
        out2 = out.reshape(m, -1)
        res: dict[str, float] = {}
        if not self.y.is_floating_point():
            res[f"{self.prefix}error"] = float(
                (out2.argmax(1) != self.y.to(out.device)).double().mean()
            )
            return res
        y2 = _to_model(model, self.y).reshape(m, -1)
        mse = float(((out2 - y2) ** 2).sum(1).mean())
        res[f"{self.prefix}mse"] = mse
        denom = float((y2**2).sum(1).mean())
        res[f"{self.prefix}rel_mse"] = mse / denom if denom > 0 else math.nan
        if y2.shape[1] > 1:
            res[f"{self.prefix}error"] = float((out2.argmax(1) != y2.argmax(1)).double().mean())
        return res


def _param_norm(model: nn.Module) -> float:
    with torch.no_grad():
        return math.sqrt(sum(float((p.double() ** 2).sum()) for p in model.parameters()))


class NormMonitor(Monitor):
    """Any scalar function of the model, e.g. a path norm or the balancedness r(θ).

    Args:
        name: History column.
        fn: ``fn(model) -> float`` (or 0-dim tensor); None gives the parameter norm ‖θ‖₂.
        every: Period in steps. Default 1.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> _ = model.weight.data.copy_(torch.tensor([[3.0, -4.0]]))
        >>> NormMonitor("param_norm")(0, model, {})  # ‖θ‖₂ = 5
        {'param_norm': 5.0}
    """

    def __init__(
        self, name: str, fn: Callable[[nn.Module], Any] | None = None, every: int = 1
    ) -> None:
        super().__init__(name, every)
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be callable as fn(model) -> float; got {fn!r}.")
        self.fn = fn if fn is not None else _param_norm

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return ``{name: fn(model)}``."""
        with torch.no_grad():
            return {self.name: float(self.fn(model))}


def gradient_norm(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> float:
    """Return ‖∇_θ L(θ)‖₂ of L = ``loss_fn(model(X), y)`` over the trainable parameters.

    Uses ``torch.autograd.grad`` (``.grad`` attributes are left untouched); parameters unused by
    the loss count as zero gradient. Cost: one forward and one backward pass.

    Args:
        model: The network (evaluated in its current mode).
        loss_fn: Batch-mean loss, e.g. :func:`dynstab.losses.half_mse`.
        X: Inputs ``(n, ...)``.
        y: Targets ``(n, ...)``.

    Returns:
        The Euclidean norm of the gradient as a Python float.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = model.weight.data.fill_(0.0)
        >>> gradient_norm(model, half_mse, torch.ones(2, 1), 3 * torch.ones(2, 1))  # |0 − 3|
        3.0
    """
    leaves = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = loss_fn(model(_to_model(model, X)), _to_model(model, y))
        grads = torch.autograd.grad(loss, leaves, materialize_grads=True)
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))


class GradientNormMonitor(LossMonitor):
    """The norm of the full training-loss gradient, ‖∇L(θ_t)‖₂ (:func:`gradient_norm`).

    Arguments as for :class:`LossMonitor` (default column ``"grad_norm"``); costs one forward
    and one backward pass over ``X``.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = model.weight.data.fill_(0.0)
        >>> ctx = {"X": torch.ones(2, 1), "y": 3 * torch.ones(2, 1), "loss_fn": half_mse}
        >>> GradientNormMonitor()(0, model, ctx)
        {'grad_norm': 3.0}
    """

    def __init__(
        self,
        X: Tensor | None = None,
        y: Tensor | None = None,
        *,
        every: int = 1,
        loss_fn: LossFn | None = None,
        name: str = "grad_norm",
    ) -> None:
        super().__init__(X, y, every=every, loss_fn=loss_fn, name=name)

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return ``{name: ‖∇L‖}``."""
        X, y = _data(self.X, self.y, context)
        return {self.name: gradient_norm(model, self.loss_fn or context["loss_fn"], X, y)}


class SharpnessMonitor(Monitor):
    """Hessian (or Gauss–Newton) sharpness on a data set, λ_max warm-started between calls.

    The measurement is :class:`~dynstab.training.meter.CurvatureMeter`'s (the one implementation
    shared with :class:`~dynstab.training.StabilityTracker`): ``lambda_max`` by the Lanczos
    engine on :class:`dynstab.curvature.HessianOperator` of L = ``loss_fn`` mean over the data,
    started from the previous call's top eigenvector, within the budget of ``lanczos``
    (default: relative tolerance ``tol`` within ``max_hvps`` products); ``trace`` and
    ``frobenius`` from the shared probes of ``trace`` (default: ``num_probes`` Rademacher
    probes). Budget per call: ≤ ``lanczos.max_iters`` + ``trace.num_matvecs`` HVPs.

    Columns (with ``prefix``): ``lambda_max``, ``lambda_max_error_bound``,
    ``lambda_max_residual``, ``lambda_max_hvps``, ``lambda_max_converged`` (1.0/0.0);
    ``trace``, ``trace_stderr``; ``frobenius``, ``frobenius_stderr``; ``hutchinson_hvps``.

    Args:
        X: Inputs; None uses the training inputs (the C21 protocol may pass a subset).
        y: Targets; None uses the training targets.
        every: Period in steps. Default 1.
        measures: Subset of ``("lambda_max", "trace", "frobenius")``.
        curvature: ``"hessian"`` or ``"gauss_newton"``.
        loss_fn: Loss; None uses the trainer's ``loss_fn``.
        max_hvps: Lanczos budget per call (its ``max_iters``), >= 1, when ``lanczos`` is None.
            Default 50.
        tol: Lanczos relative tolerance when ``lanczos`` is None. Default 1e-4.
        num_probes: Hutchinson probes for trace/frobenius when ``trace`` is None. Default 20.
        seed: Seed of the monitor's own generator (start vector and probes). Default 0.
        warm_start: Reuse the previous top eigenvector as the Lanczos start. Default True.
        prefix: Column prefix. Default ``""``.
        name: Monitor name. Default ``"sharpness"``.
        lanczos: Lanczos settings (:class:`~dynstab.linalg.LanczosConfig`); overrides
            ``tol``/``max_hvps``.
        trace: Trace-estimator settings (:class:`~dynstab.linalg.TraceConfig`); overrides
            ``num_probes``.

    Raises:
        ValueError: If a measure or ``curvature`` is unknown, or exactly one of ``X``, ``y``.
    """

    def __init__(
        self,
        X: Tensor | None = None,
        y: Tensor | None = None,
        *,
        every: int = 1,
        measures: Sequence[str] = ("lambda_max",),
        curvature: str = "hessian",
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        max_hvps: int = 50,
        tol: float = 1e-4,
        num_probes: int = 20,
        seed: int = 0,
        warm_start: bool = True,
        prefix: str = "",
        name: str = "sharpness",
        lanczos: LanczosConfig | None = None,
        trace: TraceConfig | None = None,
    ) -> None:
        super().__init__(name, every)
        if isinstance(measures, str):
            measures = (measures,)
        if not measures:
            raise ValueError(
                f"measures must name at least one of {list(_SHARPNESS_MEASURES)}; got none."
            )
        for m in measures:
            check_choice("sharpness measure", m, _SHARPNESS_MEASURES)
        if (X is None) != (y is None):
            raise ValueError(
                "SharpnessMonitor needs both X and y, or neither (training set); got one."
            )
        if lanczos is None:
            lanczos = LanczosConfig(
                tol=check_positive("tol", tol),
                max_iters=check_int("max_hvps", max_hvps, minimum=1),
            )
        if trace is None:
            trace = TraceConfig(num_matvecs=check_int("num_probes", num_probes, minimum=1))
        self.X, self.y = X, y
        self.loss_fn = loss_fn
        self.prefix = prefix
        self.meter = CurvatureMeter(
            measures,
            curvature=curvature,
            lanczos=lanczos,
            trace=trace,
            seed=seed,
            warm_start=warm_start,
        )
        self.measures = self.meter.measures

    def reset(self) -> None:
        """Drop the warm start and reseed the generator."""
        self.meter.reset()

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return the requested sharpness measures of the model at its current parameters."""
        X, y = _data(self.X, self.y, context)
        data = (_to_model(model, X), _to_model(model, y))
        reading = self.meter.measure(model, self.loss_fn or context["loss_fn"], data)
        return {f"{self.prefix}{k}": v for k, v in reading.values.items()}


class TraceMonitor(SharpnessMonitor):
    """Hutchinson estimate of Tr H (or Tr G) every ``every`` steps; ``num_probes`` HVPs per call.

    A :class:`SharpnessMonitor` with ``measures=("trace",)``; see it for the arguments.
    Columns: ``{prefix}trace``, ``{prefix}trace_stderr``, ``{prefix}hutchinson_hvps``.
    """

    def __init__(
        self,
        X: Tensor | None = None,
        y: Tensor | None = None,
        *,
        every: int = 1,
        curvature: str = "hessian",
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        num_probes: int = 20,
        seed: int = 0,
        prefix: str = "",
        name: str = "trace",
    ) -> None:
        super().__init__(
            X,
            y,
            every=every,
            measures=("trace",),
            curvature=curvature,
            loss_fn=loss_fn,
            num_probes=num_probes,
            seed=seed,
            prefix=prefix,
            name=name,
        )


def _gram(model: nn.Module, X: Tensor | None, context: Mapping[str, Any]) -> tuple[Tensor, int]:
    Xd = context["X"] if X is None else X
    n = int(Xd.shape[0])
    K = gram_matrix(model, _to_model(model, Xd)).detach().to(torch.float64)
    return K, n


_GRAM_MEASURES = ("trace", "frobenius", "lambda_max", "alignment")


class GramMonitor(Monitor):
    """Exact Tr G, ‖G‖_F, λ_max(G) and the SGD-noise alignment from K = JJᵀ/n (small n only).

    G = JᵀJ/n is the Gauss–Newton matrix of the ½-MSE (= H at an interpolating minimum) and
    shares its nonzero spectrum with K (nC×nC, sample-major), so the first three measures come
    from :func:`dynstab.norms.gram_spectrum`. ``"alignment"`` is the alignment factor μ(θ_t) of
    Wu, Wang & Su (2022) in Gram form (:func:`dynstab.criteria.alignment_factor`) from K and
    the residuals r = f(X) − y (NaN where r = 0, at interpolation). Cost: the per-sample
    Jacobian (n·C backward passes' worth) plus an O((nC)³) eigendecomposition in float64.

    Columns (with ``prefix``, default ``"gram_"``): ``trace``, ``frobenius``, ``lambda_max``,
    ``alignment``, as requested.

    Args:
        X: Inputs; None uses the training inputs (``"alignment"`` then also uses the training
            targets).
        every: Period in steps. Default 1.
        measures: Subset of ``("trace", "frobenius", "lambda_max", "alignment")``. Default: the
            first three.
        prefix: Column prefix. Default ``"gram_"``.
        name: Monitor name. Default ``"gram"``.

    Raises:
        ValueError: If a measure is unknown, or ``"alignment"`` is asked with an explicit ``X``.
    """

    def __init__(
        self,
        X: Tensor | None = None,
        *,
        every: int = 1,
        measures: Sequence[str] = ("trace", "frobenius", "lambda_max"),
        prefix: str = "gram_",
        name: str = "gram",
    ) -> None:
        super().__init__(name, every)
        if isinstance(measures, str):
            measures = (measures,)
        for m in measures:
            check_choice("Gram measure", m, _GRAM_MEASURES)
        if not measures:
            raise ValueError(f"measures must name at least one of {list(_GRAM_MEASURES)}.")
        if "alignment" in measures and X is not None:
            raise ValueError(
                "GramMonitor's 'alignment' needs the training set (its residuals); got an explicit "
                "X. Drop X or the 'alignment' measure."
            )
        self.X, self.prefix, self.measures = X, prefix, tuple(measures)

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return the requested measures (float64)."""
        K, n = _gram(model, self.X, context)
        P, out = self.prefix, {}
        if set(self.measures) & {"trace", "frobenius", "lambda_max"}:
            spec = gram_spectrum(K).as_dict()
            out.update({f"{P}{m}": spec[m] for m in self.measures if m in spec})
        if "alignment" in self.measures:
            X, y = context["X"], context["y"]
            with torch.no_grad():
                r = model(_to_model(model, X)).reshape(-1).double() - y.reshape(-1).double()
            out[f"{P}alignment"] = (
                float(alignment_factor(K, r, K.shape[0] // n)) if bool(r.any()) else math.nan
            )
        return out


class StabilityMonitor(Monitor):
    """Stability margins of the current iterate (a margin <= 1 means "stable" for that test).

    With K = JJᵀ/n (the Gram form of G, = H at an interpolating minimum; shape ``(nC, nC)``),
    η the learning rate, C the number of outputs and q = q_factor(n, B, sampling)
    (:func:`dynstab.criteria.q_factor`), every margin is η divided by the threshold that the
    stability layer computes, exactly as the rows of :func:`dynstab.criteria.check_stability`:

    * ``gd_margin``        = η/:func:`~dynstab.criteria.gd_bound` = η·λ_max(K)/2 — GD /
      first-moment condition λ_max ≤ 2/η (:func:`~dynstab.criteria.gd_threshold` of λ_max(K));
    * ``trace_margin``     = η/:func:`~dynstab.criteria.trace_bound` = η·q·Tr K/(2C) —
      necessary SGD condition Tr H ≤ 2C/(qη) (Wu & Su 2023; the factor C because H_i has rank ≤ C);
    * ``frobenius_margin`` = η/:func:`~dynstab.criteria.frobenius_bound` = η·√q·‖K‖_F/(2√C) —
      necessary condition ‖H‖_F ≤ 2√C/(η√q);
    * ``sgd_margin``       = η/η* = η·λ_max(C†D)/2 — exact mean-square condition (MM23 Thm 3),
      via :func:`dynstab.criteria.eta_star`; only when nC <= ``max_exact_size``.

    A margin ≤ 1 means the condition holds (0 when the threshold is infinite, K = 0). GD is
    B = n without replacement (q = 1/n, η* = 2/λ_max). The empirical ``"reshuffle"`` mode is
    scored as ``"without"`` (each of its batches is marginally a uniform B-subset) although no
    theory covers it. Cost: the Gram matrix, one O((nC)³) eigendecomposition, plus η*.

    Args:
        X: Inputs; None uses the training inputs.
        lr: η; None uses the current η_t from the trainer (``context["lr"]``).
        batch_size: B; None uses the trainer's.
        sampling: ``"with"``/``"without"``/``"reshuffle"``; None uses the trainer's.
        every: Period in steps. Default 1.
        max_exact_size: Largest nC for the exact η* (``eta_star`` is O(ρ⁶) dense). Default 200.
        prefix: Column prefix. Default ``""``.
        name: Monitor name. Default ``"stability"``.

    Columns also include ``eta_star`` (when computed), ``q`` and the current ``lr`` used.
    """

    def __init__(
        self,
        X: Tensor | None = None,
        *,
        lr: float | None = None,
        batch_size: int | None = None,
        sampling: str | None = None,
        every: int = 1,
        max_exact_size: int = 200,
        prefix: str = "",
        name: str = "stability",
    ) -> None:
        super().__init__(name, every)
        if lr is not None:
            check_positive("lr", lr)
        if batch_size is not None:
            check_int("batch_size", batch_size, minimum=1)
        if sampling is not None:
            check_choice("sampling", sampling, ("with", "without", "reshuffle"))
        self.X, self.lr, self.batch_size, self.sampling = X, lr, batch_size, sampling
        self.max_exact_size = check_int("max_exact_size", max_exact_size, minimum=0)
        self.prefix = prefix

    def __call__(self, step: int, model: nn.Module, context: Mapping[str, Any]) -> dict[str, float]:
        """Return the margins and the quantities they are built from."""
        K, n = _gram(model, self.X, context)
        eta = float(self.lr if self.lr is not None else context["lr"])
        B = int(self.batch_size if self.batch_size is not None else context["batch_size"])
        sampling = self.sampling if self.sampling is not None else context["sampling"]
        if sampling == "reshuffle":
            sampling = "without"
        outputs = K.shape[0] // n
        q = q_factor(n, B, sampling)
        P = self.prefix
        res = {
            f"{P}lr": eta,
            f"{P}q": q,
            f"{P}gd_margin": eta / gd_bound(K, outputs=outputs),
            f"{P}trace_margin": eta / trace_bound(K, B, sampling, outputs=outputs),
            f"{P}frobenius_margin": eta / frobenius_bound(K, B, sampling, outputs=outputs),
        }
        if K.shape[0] <= self.max_exact_size:
            est = eta_star(K, B, sampling, outputs=outputs)
            res[f"{P}eta_star"] = est.eta_star
            res[f"{P}sgd_margin"] = eta / est.eta_star
        return res
