"""Set up once, query many: the linear-stability problem of (S)GD at an interpolating minimum.

A :class:`StabilityProblem` holds what every criterion needs — the validated Gram matrix
K = JJᵀ/n (or the per-sample Jacobians J), the residuals, n, C, the parameters it was built
from — and computes lazily, at most once, its row-space coordinates (the eigen-decomposition),
λ_max, Tr and ‖·‖_F. The exact threshold η*, every bound, the second-moment growth and the
verdict are its methods, each taking the sampling rule as a :class:`dynstab.sampling.Sampling`
(p and q come from it)::

    prob = StabilityProblem.from_model(model, (X, y))      # K or J built and validated once
    for B in (1, 4, 16):
        s = prob.sampling(B, "with")
        print(B, prob.eta_star(s).eta_star, prob.trace_bound(s))
    print(prob.check(lr=0.01, sampling=prob.sampling(4)))   # the full verdict table

**Two exact routes** give the same coordinates Ĝ = JV = √n UΛ^{1/2} (see
:mod:`dynstab.criteria.gram`): the *Gram route* eigendecomposes the nC×nC matrix K (≈ 9(nC)³
flops, 4(nC)² floats), the *parameter route* the p×p matrix H = JᵀJ/n (≈ 2nCp² + 9p³ flops,
nCp + 4p² floats; needs J). With J or a model, ``route="auto"`` takes the one with fewer flops
among those within the memory budget and reports why (:attr:`StabilityProblem.route_reason`);
large low-rank matrices are factored by pivoted Cholesky instead of a full eigendecomposition
(:mod:`dynstab.criteria.spectral`). Inside either route, η* is solved densely (ρ(ρ+1)/2 square
matrix) or matrix-free (Lanczos), again chosen by flops and memory.

**Memory** is estimated before anything large is allocated and compared with ``max_memory``
(default: half of the available memory, see :mod:`dynstab.criteria.resources`); past it a
:class:`~dynstab.errors.MemoryBudgetError` names the allocation, the budget and the alternatives.

References:
    Mulayoff & Michaeli, "Exact mean square linear stability analysis for SGD", COLT 2024
    (Thm 3: η* = 2/λ_max(C†D); Thm 6: PSD top eigenvector). Wu & Su, "The implicit
    regularization of dynamical stability in stochastic gradient descent", ICML 2023 (Thm 3.3:
    the trace bound). Wu, Ma & E, NeurIPS 2018 (the sufficient condition). Wu, Wang & Su,
    NeurIPS 2022 (the alignment factor).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TypedDict, Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import (
    as_float64_tensor,
    check_choice,
    check_finite,
    check_generator,
    check_int,
    check_lr,
    check_options,
    check_positive,
)
from dynstab._types import Data, LossFn, Params, ParamSpec
from dynstab.criteria._docs import criteria_docs
from dynstab.criteria.gram import (
    DENSE_AUTO_MAX_DIM,
    DENSE_MAX_DIM,
    GramCoordinates,
    _apply_Q,
    _per_sample_term,
    gd_threshold,
    generalized_sharpness,
    second_moment_radius,
    solver_cost,
)
from dynstab.criteria.momentum import (
    REDUCED_DENSE_MAX_DIM,
    check_momentum,
    momentum_gd_threshold,
    momentum_growth,
    momentum_threshold,
)
from dynstab.criteria.resources import MemoryBudget, format_bytes, memory_budget
from dynstab.criteria.results import (
    BoundRow,
    EtaStarResult,
    LyapunovResult,
    RankOneBoundResult,
    StabilityReport,
)
from dynstab.criteria.routes import RouteCost, choose_route, route_costs
from dynstab.criteria.sampled import (
    RouteTime,
    SampledConfig,
    SampledEtaStar,
    SampledStability,
    check_max_time,
    route_time,
)
from dynstab.criteria.spectral import PSDMatrix, validate_gram
from dynstab.curvature import gram_matrix, per_sample_jacobian
from dynstab.curvature.functional import (
    Dataset,
    check_model_mode,
    forward,
    prepare_data,
    resolve_params,
)
from dynstab.errors import (
    ConvergenceWarning,
    DynstabWarning,
    MemoryBudgetError,
    NotInterpolatingWarning,
)
from dynstab.losses import half_mse
from dynstab.sampling import IID_SCHEMES, Sampling

__all__ = [
    "CheckOptions",
    "RouteOptions",
    "StabilityProblem",
    "critical_lr",
    "eta_star",
    "gram_coordinates",
]

#: Default tolerance on max_i |f(x_i) − y_i| for calling a point interpolating.
INTERPOLATION_TOL = 1e-5


class CheckOptions(TypedDict, total=False):
    """What a stability verdict computes: the options shared by the two verdict entry points.

    The keywords of :meth:`StabilityProblem.check` and :func:`~dynstab.criteria.check_stability`,
    documented and checked here once (an unknown name is a TypeError naming the valid ones).

    Attributes:
        method: η* solver: ``"auto"`` (default), ``"dense"`` or ``"matrix_free"``, as for
            :meth:`StabilityProblem.eta_star`.
        rank_one: Whether to run the rank-one ascent (Mulayoff & Michaeli 2024, eq. 24).
            Default: ``True``.
        growth: Whether to compute ρ(Q) at lr (one more eigenproblem of η*'s size).
            Default: ``True``.
        interpolation_tol: Largest max|residual| still called interpolating, >= 0.
            Default: ``INTERPOLATION_TOL`` = 1e-5.
        train_loss: The caller's training loss, reported as is (default: the problem's).
        generator: Random source of the rank-one restarts (a ``torch.Generator``); ``None``
            (default) uses torch's default generator.

    Example:
        >>> opts: CheckOptions = {"rank_one": False, "growth": False}
        >>> prob = StabilityProblem.from_gram(torch.eye(4))
        >>> prob.check(0.4, prob.sampling(1), **opts).growth_per_step is None
        True
    """

    method: str
    rank_one: bool
    growth: bool
    interpolation_tol: float
    train_loss: float | None
    generator: torch.Generator | None


class RouteOptions(TypedDict, total=False):
    """How a model-level criterion picks its route: an exact route or the sampled one.

    The keywords shared by :func:`critical_lr` and :func:`~dynstab.criteria.stability`,
    documented and checked here once. Under ``method="auto"`` a model takes the sampled route
    (:class:`~dynstab.criteria.sampled.SampledStability`) when no exact route fits
    ``max_memory``, or, with momentum, when the exact solve is estimated to take longer than
    ``max_time`` seconds and the sampled route less (:func:`~dynstab.criteria.sampled.route_time`).

    Attributes:
        route: The exact route: ``"auto"`` (default: the cheaper that fits the budget),
            ``"gram"`` or ``"parameter"`` (the parameter route needs a model; with K only
            ``"auto"``/``"gram"``). See :mod:`dynstab.criteria.routes`.
        max_memory: Memory budget in bytes (``None``, default: half the available memory;
            ``math.inf``: no limit). It also bounds the sampled route, unless ``config`` sets
            ``memory_budget`` itself.
        config: Monte-Carlo budget of the sampled route
            (:class:`~dynstab.criteria.sampled.SampledConfig`; ``None``: the defaults).
        max_time: Time budget in seconds of the exact momentum solve under ``method="auto"``
            (``None``: ``EXACT_TIME_BUDGET`` = 60 s of :mod:`dynstab.criteria.sampled`;
            ``math.inf``: never re-route by time). Ignored without momentum and with K.

    Example:
        >>> opts: RouteOptions = {"route": "gram", "max_memory": 2**30}
        >>> critical_lr(torch.eye(2), batch_size=2, sampling="without", **opts).eta_star
        2.0
    """

    route: str
    max_memory: float | None
    config: SampledConfig | None
    max_time: float | None


def route_options(
    who: str, options: RouteOptions
) -> tuple[str, float | None, SampledConfig | None, float | None]:
    """Check the :class:`RouteOptions` given to ``who``: (route, max_memory, config, max_time).

    Raises:
        TypeError: On an unknown option, a ``config`` that is not a ``SampledConfig`` or a
            ``max_memory`` that is not a number of bytes.
        ValueError: On a bad ``max_time`` or a ``max_memory`` that is not > 0.
    """
    check_options(who, options, RouteOptions)
    config, max_time = options.get("config"), options.get("max_time")
    check_max_time(max_time)
    if config is not None and not isinstance(config, SampledConfig):
        raise TypeError(
            f"config must be a dynstab.criteria.SampledConfig; got {type(config).__name__}."
        )
    max_memory = options.get("max_memory")
    memory_budget(max_memory, torch.device("cpu"))  # validates (resolves nothing yet)
    if max_memory is not None and math.isfinite(max_memory):
        # one budget for every route: the sampled route inherits max_memory unless its
        # config sets memory_budget itself
        base = SampledConfig() if config is None else config
        if base.memory_budget is None:
            config = dataclasses.replace(base, memory_budget=max(1, int(max_memory)))
    return options.get("route", "auto"), max_memory, config, max_time


def memory_fallback_reason(exc: MemoryBudgetError) -> str:
    """The ``route_reason`` of a ``method="auto"`` call re-routed because no exact route fits."""
    return (
        f"method='auto': no exact route fits the memory budget ({exc.what} needs about "
        f"{format_bytes(exc.required_bytes)}, budget {format_bytes(exc.budget_bytes)})"
    )


#: A dense η* solve below this many flops is preferred to Lanczos (exact, no iteration).
_DENSE_CHEAP_FLOPS = 5e8
_METHODS = ("auto", "dense", "matrix_free")
#: ``method=`` of :func:`critical_lr`: the exact solvers, ``"exact"`` and ``"sampled"``.
_CRITICAL_METHODS = ("auto", "exact", "sampled", "dense", "matrix_free")


def _check_solver(method: str, tol: float, max_iters: int) -> float:
    """Check the exact solver's settings (η* and ρ(Q) take the same); return ``tol`` as a float."""
    check_choice("method", method, _METHODS)
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    return tol


class StabilityProblem:
    """The linear-stability problem of SGD at an interpolating minimum, set up once.

    Build it with :meth:`from_gram` (a Gram matrix K = JJᵀ/n), :meth:`from_jacobians`
    (per-sample Jacobians) or :meth:`from_model` (a model and its data); then query η*, the
    bounds and the verdict for any number of batch sizes and sampling schemes. The input is
    validated once (symmetric, finite, PSD within a tolerance scaled to ‖K‖ for a given K;
    finite for J and residuals); the eigen-decomposition and the invariants are computed lazily,
    once. Every threshold assumes the ½-square loss (``dynstab.losses.half_mse``) at an
    interpolating minimum, where H = G = JᵀJ/n (Mulayoff & Michaeli 2024).

    Do not call the constructor directly; use the ``from_*`` class methods.

    Attributes:
        n: Number of samples.
        outputs: Outputs per sample C.
        route: ``"gram"`` or ``"parameter"`` (see :mod:`dynstab.criteria.routes`).
        route_reason: Why that route was taken (cost model, budget, or what was given).
        route_costs: The :class:`~dynstab.criteria.routes.RouteCost` of each available route.
        residuals: f(x_i) − y_i as a float64 vector of length nC, or None.
        param_names: Names of the parameters measured (None when only K was given).
        num_params: Their total number of entries p (None when only K was given).
        rank_tol: Relative eigenvalue cut-off.
        budget: The :class:`~dynstab.criteria.resources.MemoryBudget`.
        train_loss: The training loss ``loss_fn`` gave (:meth:`from_model`), or None.
        half_mse_loss: The ½-square loss at the same point (:meth:`from_model`), or None.

    Example:
        >>> prob = StabilityProblem.from_gram(torch.eye(4))
        >>> s = prob.sampling(1, "with")
        >>> prob.eta_star(s).eta_star, prob.trace_bound(s), prob.gd_bound()
        (0.5, 0.5, 2.0)
    """

    def __init__(
        self,
        *,
        n: int,
        outputs: int,
        gram: Tensor | None,
        jacobian: Tensor | None,
        route: str,
        route_reason: str,
        route_costs: tuple[RouteCost, ...],
        residuals: Tensor | None,
        param_names: tuple[str, ...] | None,
        num_params: int | None,
        rank_tol: float,
        budget: MemoryBudget,
        coordinates: GramCoordinates | None = None,
        train_loss: float | None = None,
        half_mse_loss: float | None = None,
        trusted: bool = False,
    ) -> None:
        self.n = n
        self.outputs = outputs
        self.route = route
        self.route_reason = route_reason
        self.route_costs = route_costs
        self.residuals = residuals
        self.param_names = param_names
        self.num_params = num_params
        self.rank_tol = rank_tol
        self.budget = budget
        self.train_loss = train_loss
        self.half_mse_loss = half_mse_loss
        self._K = gram
        self._J = jacobian
        self._trusted = trusted
        self._coords = coordinates
        self._small: PSDMatrix | None = None
        self._trace: float | None = None
        self._blocks2: float | None = None
        self._lmin: float | None = None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_gram(
        cls,
        K: Tensor,
        outputs: int = 1,
        *,
        residuals: Tensor | None = None,
        rank_tol: float = 1e-10,
        max_memory: float | None = None,
        coordinates: GramCoordinates | None = None,
    ) -> StabilityProblem:
        """Build the problem from a Gram matrix K = JJᵀ/n (the Gram route).

        K is checked here (square, finite, symmetric, no negative diagonal) and certified PSD
        within ``1e-6``·‖K‖₂ when first needed (pivoted Cholesky for large low-rank K, else the
        eigen-decomposition that η* needs anyway); a K that is not PSD (e.g. −I) is refused by
        every query.

        Args:
            K: Gram matrix, shape ``(nC, nC)``, sample-major (row ``i*C + c``), any float dtype.
            outputs: Number of outputs C per sample.
            residuals: f(x_i) − y_i, shape ``(nC,)`` or ``(n, C)``, Tensor or NumPy array
                (converted to float64); None when unknown.
            rank_tol: Relative cut-off on the eigenvalues of K, in [0, 1).
            max_memory: Memory budget in bytes (None: half the available memory; ``math.inf``:
                no limit).
            coordinates: Precomputed coordinates of this K (skips the eigen-decomposition and
                the PSD certificate, which they imply).

        Returns:
            The problem.

        Raises:
            TypeError: If K or the residuals have the wrong type.
            ValueError: If K is empty, not square, not finite, not symmetric, not PSD (on first
                use), its size is not a multiple of ``outputs``, or the residuals have the wrong
                size or are not finite.
            MemoryBudgetError: If K's eigen-decomposition would not fit the budget.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.diag(torch.tensor([2.0, 1.0])))
            >>> prob.n, prob.outputs, prob.lambda_max, prob.trace
            (2, 1, 2.0, 3.0)
        """
        rank_tol = _check_rank_tol(rank_tol)
        if isinstance(K, Tensor) and K.ndim == 2:
            size = int(K.shape[0])
            memory_budget(max_memory, K.device).check(
                8 * 2 * size * size,
                what=f"the validated float64 copy of K, shape ({size}, {size})",
                who="StabilityProblem.from_gram",
            )
        K64 = validate_gram(K, outputs)
        N = K64.shape[0]
        n = N // outputs
        if coordinates is not None and (
            not isinstance(coordinates, GramCoordinates)
            or coordinates.n != n
            or coordinates.outputs != outputs
        ):
            raise ValueError(
                "coordinates must be the GramCoordinates of this K (n = "
                f"{n}, outputs = {outputs}); got {type(coordinates).__name__}. Build them with "
                "gram_coordinates(K, outputs) or leave coordinates=None."
            )
        costs = route_costs(n, outputs, None, "gram")
        return cls(
            n=n,
            outputs=outputs,
            gram=K64,
            jacobian=None,
            route="gram",
            route_reason="Gram matrix K given",
            route_costs=tuple(costs.values()),
            residuals=_residuals(residuals, N),
            param_names=None,
            num_params=None,
            rank_tol=rank_tol,
            budget=memory_budget(max_memory, K64.device),
            coordinates=coordinates,
            trusted=coordinates is not None,
        )

    @classmethod
    def from_jacobians(
        cls,
        jacobians: Tensor,
        *,
        residuals: Tensor | None = None,
        route: str = "auto",
        rank_tol: float = 1e-10,
        max_memory: float | None = None,
        param_names: Sequence[str] | None = None,
    ) -> StabilityProblem:
        """Build the problem from per-sample Jacobians J_i = ∂f(x_i)/∂θ.

        ``route="auto"`` takes the parameter route (p×p matrix H = JᵀJ/n) or the Gram route
        (nC×nC matrix K = JJᵀ/n), whichever needs fewer flops within the memory budget.

        Args:
            jacobians: Shape ``(n, p)`` (C = 1) or ``(n, C, p)``; Tensor or NumPy array.
            residuals: f(x_i) − y_i, shape ``(nC,)`` or ``(n, C)``, or None.
            route: ``"auto"``, ``"gram"`` or ``"parameter"``.
            rank_tol: Relative cut-off on the eigenvalues of H (= those of K), in [0, 1).
            max_memory: Memory budget in bytes (None: half the available memory).
            param_names: Names of the parameters, for reports.

        Returns:
            The problem.

        Raises:
            TypeError: If the Jacobians are not a Tensor or NumPy array.
            ValueError: On a wrong shape, non-finite entries, bad residuals or route.
            MemoryBudgetError: If the chosen route would not fit the budget.

        Example:
            >>> J = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]])  # n = 3 < p = 4
            >>> a = StabilityProblem.from_jacobians(J)
            >>> b = StabilityProblem.from_jacobians(J, route="parameter")
            >>> a.route, round(a.eta_star(a.sampling(1)).eta_star, 10)
            ('gram', 0.4434007919)
            >>> b.route, round(b.eta_star(b.sampling(1)).eta_star, 10)
            ('parameter', 0.4434007919)
        """
        rank_tol = _check_rank_tol(rank_tol)
        J = as_float64_tensor(
            "jacobians", jacobians, "Check the model's parameters and inputs for inf/nan."
        )
        if J.ndim not in (2, 3) or J.shape[0] == 0 or J.shape[-1] == 0:
            raise ValueError(
                "jacobians must have shape (n, p) (scalar output) or (n, C, p) with n, p >= 1; "
                f"got {tuple(J.shape)}."
            )
        n = int(J.shape[0])
        C = 1 if J.ndim == 2 else int(J.shape[1])
        Jf = J.reshape(n * C, -1)
        p = int(Jf.shape[1])
        budget = memory_budget(max_memory, Jf.device)
        costs = route_costs(n, C, p, "jacobian")
        chosen, reason = choose_route(costs, route, budget, "StabilityProblem.from_jacobians")
        names = None if param_names is None else tuple(str(x) for x in param_names)
        return cls(
            n=n,
            outputs=C,
            gram=(Jf @ Jf.T) / n if chosen == "gram" else None,
            jacobian=Jf,
            route=chosen,
            route_reason=reason,
            route_costs=tuple(costs.values()),
            residuals=_residuals(residuals, n * C),
            param_names=names,
            num_params=p,
            rank_tol=rank_tol,
            budget=budget,
            trusted=True,
        )

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        data: Data | Dataset | Tensor,
        *,
        params: ParamSpec = None,
        loss_fn: LossFn | None = None,
        outputs: int | None = None,
        route: str = "auto",
        rank_tol: float = 1e-10,
        max_memory: float | None = None,
        chunk_size: int | None = None,
    ) -> StabilityProblem:
        """Build the problem from a model at its current (or given) parameters and its data.

        The parameters measured are those :func:`dynstab.curvature.functional.resolve_params`
        resolves from ``params`` (passed through unchanged) and are listed in every result.
        The data go through :func:`dynstab.curvature.functional.prepare_data` (one
        ``(inputs, targets)`` pair, a list of pairs, a ``DataLoader``), or are a bare input
        Tensor (no residuals). Train-mode BatchNorm and active Dropout are refused before any
        forward pass; the model, its mode, buffers and ``.grad`` are left unchanged. The route
        is chosen before the Jacobians are computed: the parameter route builds J with
        :func:`~dynstab.curvature.per_sample_jacobian`, the Gram route K with
        :func:`~dynstab.curvature.gram_matrix` (without holding J).

        Args:
            model: The network, at (or near) an interpolating minimum.
            data: ``(X, y)``, an iterable of such batches, or inputs ``X`` alone.
            params: Parameters to evaluate at / select (``None``: the model's own).
            loss_fn: The training loss, ``loss_fn(outputs, targets)`` (mean over samples),
                evaluated once and reported; None skips it.
            outputs: Expected outputs per sample C (None: inferred); must agree with the model.
            route: ``"auto"``, ``"gram"`` or ``"parameter"``.
            rank_tol: Relative eigenvalue cut-off, in [0, 1).
            max_memory: Memory budget in bytes (None: half the available memory).
            chunk_size: Samples per ``vmap`` chunk of the Jacobian computation.

        Returns:
            The problem.

        Raises:
            TypeError: If ``model`` is not an ``nn.Module`` or ``data`` has the wrong type.
            ValueError: On empty data, stochastic layers in train mode, outputs and targets of
                different sizes, ``outputs`` contradicting the model, or non-finite outputs,
                residuals or Jacobians.
            MemoryBudgetError: If no route fits the budget (the message names the routes).

        Example:
            >>> model = torch.nn.Linear(2, 1).double()
            >>> g = torch.Generator().manual_seed(0)
            >>> X = torch.randn(150, 2, dtype=torch.float64, generator=g)
            >>> prob = StabilityProblem.from_model(model, (X, model(X).detach()))
            >>> prob.route, prob.num_params, prob.param_names
            ('parameter', 3, ('weight', 'bias'))
        """
        who = "StabilityProblem.from_model"
        rank_tol = _check_rank_tol(rank_tol)
        if outputs is not None:
            check_int("outputs", outputs, minimum=1)
        P = {k: v.detach() for k, v in resolve_params(model, params).items()}
        check_model_mode(model)
        if isinstance(data, Tensor) and (data.ndim == 0 or data.shape[0] == 0):
            raise ValueError(
                "inputs must have a non-empty leading sample axis; got shape "
                f"{tuple(data.shape)}. Pass the training inputs."
            )
        # Streamed: one batch in memory at a time; only the (n, C) outputs are kept.
        ds = prepare_data(data, require_targets=not isinstance(data, Tensor))
        has_targets = not isinstance(data, Tensor)
        n = ds.n
        outs: list[Tensor] = []
        targets: list[Tensor] = []
        with torch.no_grad():
            for inputs, t in ds:
                o = forward(model, P, inputs)
                if o.ndim == 0:
                    raise ValueError(
                        "model outputs must have a leading sample axis; got a scalar output. "
                        "Return one output row per sample."
                    )
                outs.append(o)
                if t is not None:
                    targets.append(t)
                if not has_targets:
                    break  # input-only data: one batch tells the number of outputs C
        out = torch.cat(outs)
        y: Tensor | None = torch.cat(targets) if has_targets else None
        if has_targets and out.shape[0] != n:
            raise ValueError(
                f"model outputs must have a leading sample axis; got outputs {tuple(out.shape)} "
                f"for {n} samples."
            )
        C = int(out[0].numel())
        if y is not None and y[0].numel() != C:
            raise ValueError(
                "model outputs and targets must have the same number of entries per sample; "
                f"got outputs {tuple(out.shape)} for targets {tuple(y.shape)}. Reshape the "
                "targets to the model's output shape."
            )
        if outputs is not None and outputs != C:
            raise ValueError(
                f"outputs must equal the model's number of outputs per sample, C = {C} (K = "
                f"JJᵀ/n has shape {(n * C, n * C)} for n = {n} samples); got outputs={outputs}. "
                "Leave outputs=None with a model (it is inferred)."
            )
        resid: Tensor | None = None
        train_loss = ref_loss = None
        if y is not None:
            resid = (out.reshape(n, -1) - y.reshape(n, -1).to(out.dtype)).reshape(-1)
            resid = check_finite(
                "residuals",
                resid.detach().to(torch.float64),
                "The model outputs or targets hold inf/nan; check the data and the parameters.",
            )
            with torch.no_grad():
                if loss_fn is not None:
                    train_loss = float(loss_fn(out, y))
                ref_loss = float(half_mse(out, y))
        names = tuple(P)
        p = sum(t.numel() for t in P.values())
        largest = max(t.numel() for t in P.values())
        device = next(iter(P.values())).device
        budget = memory_budget(max_memory, device)
        costs = route_costs(n, C, p, "model", largest)
        chosen, reason = choose_route(costs, route, budget, who)
        hint = (
            "The model's per-sample Jacobians (its curvature) hold inf/nan at these parameters; "
            "check the parameters and inputs (the run may have diverged)."
        )
        J: Tensor | None = None
        K: Tensor | None = None
        if chosen == "parameter":
            Jt = per_sample_jacobian(model, ds, params, chunk_size=chunk_size)
            J = check_finite("per-sample Jacobians", Jt.detach().to(torch.float64), hint)
            J = J.reshape(n * C, -1)
        else:
            Kt = gram_matrix(model, ds, params, chunk_size=chunk_size)
            K = check_finite("the Gram matrix K", Kt.detach().to(torch.float64), hint)
            K = 0.5 * (K + K.T)
        return cls(
            n=n,
            outputs=C,
            gram=K,
            jacobian=J,
            route=chosen,
            route_reason=reason,
            route_costs=tuple(costs.values()),
            residuals=resid,
            param_names=names,
            num_params=p,
            rank_tol=rank_tol,
            budget=budget,
            train_loss=train_loss,
            half_mse_loss=ref_loss,
            trusted=True,
        )

    # ------------------------------------------------------------------ lazily computed parts

    def _gram_side(self) -> PSDMatrix:
        """The matrix the route eigendecomposes: K (Gram route) or H = JᵀJ/n (parameter route)."""
        if self._small is None:
            cost = next(c for c in self.route_costs if c.route == self.route)
            self.budget.check(
                cost.bytes, what=cost.what, who=f"StabilityProblem ({self.route} route)"
            )
            if self.route == "parameter":
                assert self._J is not None
                H = (self._J.T @ self._J) / self.n
                self._small = PSDMatrix(0.5 * (H + H.T), self.rank_tol, name="H", trusted=True)
            else:
                assert self._K is not None
                self._small = PSDMatrix(self._K, self.rank_tol, name="K", trusted=self._trusted)
        return self._small

    @property
    def coordinates(self) -> GramCoordinates:
        """Row-space coordinates (λ, U, Ĝ) of K, computed once along the problem's route.

        Raises:
            ValueError: If a given K turns out not to be PSD within the tolerance.
        """
        if self._coords is None:
            spec = self._gram_side().spectrum()
            lam = spec.values
            # Ĝ is stored column-major (Ĝᵀ contiguous): the layout of the per-sample products.
            if self.route == "parameter":
                assert self._J is not None
                Gh = (spec.vectors.T @ self._J.T).T
                U = None  # Ĝ Λ^{-1/2}/√n, formed by GramCoordinates.U if a criterion reads it
            else:
                U = spec.vectors
                Gh = (math.sqrt(self.n) * lam.sqrt()[:, None] * U.T).contiguous().T
            self._coords = GramCoordinates(lam, U, Gh, self.n, self.outputs, spec.lambda_max)
        return self._coords

    @property
    def spectral_method(self) -> str:
        """How the coordinates were obtained.

        ``"eigh"``, ``"pivoted Cholesky (rank r)"``, or ``"given"`` (coordinates passed to
        :meth:`from_gram`).
        """
        if self._coords is not None and self._small is None:
            return "given"
        return self._gram_side().spectrum().how

    def certify(self) -> None:
        """Certify that K is PSD within 1e-6·‖K‖₂ (done once; a no-op for J or a model).

        Raises:
            ValueError: If it is not, with its smallest eigenvalue.
        """
        if self._coords is None:
            self._gram_side().certify()

    @property
    def rank(self) -> int:
        """ρ, the number of eigenvalues of K above ``rank_tol``·λ_max."""
        return self.coordinates.rank

    @property
    def lambda_max(self) -> float:
        """λ_max(H) = λ_max(K) (H = G at an interpolating minimum)."""
        if self._coords is not None:
            return self._coords.lambda_max
        return self._gram_side().lambda_max()

    @property
    def trace(self) -> float:
        """Tr H = Tr K = ‖J‖_F²/n."""
        if self._trace is None:
            self.certify()
            if self._K is not None:
                self._trace = float(self._K.trace())
            else:
                assert self._J is not None
                self._trace = float((self._J * self._J).sum()) / self.n
        return self._trace

    @property
    def frobenius(self) -> float:
        """‖H‖_F = ‖K‖_F."""
        self.certify()
        return float(torch.linalg.norm(self._K if self._K is not None else self._gram_side().A))

    def _diag_blocks_sq(self) -> float:
        """Σ_i ‖K_ii‖_F² over the C×C diagonal blocks K_ii = J_iJ_iᵀ/n."""
        if self._blocks2 is None:
            n, C = self.n, self.outputs
            if self._K is not None:
                idx = torch.arange(n, device=self._K.device)
                blocks = self._K.reshape(n, C, n, C)[idx, :, idx, :]
            else:
                assert self._J is not None
                Jr = self._J.reshape(n, C, -1)
                blocks = (Jr @ Jr.transpose(1, 2)) / n
            self._blocks2 = float((blocks * blocks).sum())
        return self._blocks2

    # ------------------------------------------------------------------ sampling

    def sampling(self, batch_size: int | None = 1, scheme: str = "with") -> Sampling:
        """The i.i.d. sampling rule for this problem's n (``batch_size=None``: GD).

        Args:
            batch_size: B >= 1 (<= n without replacement), or None for full-batch GD.
            scheme: ``"with"`` or ``"without"`` replacement.

        Returns:
            ``Sampling(n, batch_size, scheme)``.

        Raises:
            TypeError: If ``batch_size`` is not an int (or None) or ``scheme`` not a str.
            ValueError: If the scheme is unknown or B is out of range.

        Example:
            >>> StabilityProblem.from_gram(torch.eye(3)).sampling(2, "without").p
            0.25
        """
        if not isinstance(scheme, str):
            raise TypeError(
                f"sampling must be a str, one of {list(IID_SCHEMES)}; got {type(scheme).__name__}."
            )
        check_choice("sampling", scheme, IID_SCHEMES)
        if batch_size is not None:
            check_int("batch_size", batch_size, minimum=1)
        return Sampling(self.n, batch_size, scheme)

    def _check_sampling(self, sampling: object) -> Sampling:
        if not isinstance(sampling, Sampling):
            raise TypeError(
                "sampling must be a dynstab.sampling.Sampling; got "
                f"{type(sampling).__name__}. Build one with problem.sampling(batch_size, scheme)."
            )
        if sampling.n != self.n:
            raise ValueError(
                f"sampling.n must equal the problem's number of samples n = {self.n}; got "
                f"Sampling(n={sampling.n}, ...). Build it with problem.sampling(B, scheme)."
            )
        if not sampling.iid:
            raise ValueError(
                "the mean-square criteria need i.i.d. batches (scheme 'with' or 'without'); got "
                f"scheme={sampling.scheme!r}. Use scheme='without' as its i.i.d. stand-in."
            )
        return sampling

    # ------------------------------------------------------------------ η* and growth

    def _solver(self, method: str, max_iters: int, who: str, prefer_dense: bool = False) -> str:
        """Resolve ``method`` for the current rank by flops and memory (dense or matrix-free).

        ``prefer_dense``: take the dense solver whenever it is allowed and fits (for ρ(Q), whose
        spectrum clusters near 1, so that Lanczos needs many products).
        """
        rho = self.rank
        m = rho * (rho + 1) // 2
        fd, bd = solver_cost(self.n, self.outputs, rho, "dense", max_iters)
        fm, bm = solver_cost(self.n, self.outputs, rho, "matrix_free", max_iters, self.budget.bytes)
        mf_alt = f"method='matrix_free' needs about {format_bytes(bm)}"
        if method == "dense":
            if m > DENSE_MAX_DIM:
                raise ValueError(
                    f"method='dense' needs a ρ(ρ+1)/2 = {m} square matrix, above the cap "
                    f"{DENSE_MAX_DIM}; use method='matrix_free' (or 'auto')."
                )
            self.budget.check(
                bd, what=f"the dense {m}×{m} symmetric-space matrix", who=who, alternatives=[mf_alt]
            )
            return "dense"
        dense_fits = m <= DENSE_AUTO_MAX_DIM and self.budget.allows(bd)
        if (
            method == "auto"
            and dense_fits
            and (prefer_dense or fd <= max(fm, _DENSE_CHEAP_FLOPS) or not self.budget.allows(bm))
        ):
            return "dense"
        self.budget.check(
            bm,
            what=f"the Lanczos vectors on {rho}×{rho} matrices and the per-sample products' "
            f"temporaries (rows of Ĝ, shape ({self.n * self.outputs}, {rho}), in chunks)",
            who=who,
        )
        return "matrix_free"

    def eta_star(
        self,
        sampling: Sampling,
        *,
        method: str = "auto",
        tol: float = 1e-10,
        max_iters: int = 300,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> EtaStarResult:
        """Exact mean-square threshold η* = 2/λ_max(C†D) for this sampling rule.

        Mean-square stability of linearized SGD holds iff η ≤ η* (Mulayoff & Michaeli 2024,
        Thm 3); η* = 2/λ_max for GD. Solved in the row-space coordinates: ``"dense"`` forms
        the ρ(ρ+1)/2 symmetric-space matrix, ``"matrix_free"`` runs Lanczos from X₀ = I
        (O(nCρ²) flops per product); ``"auto"`` takes the cheaper within the memory budget.

        With ``momentum=β > 0`` it is the exact threshold of SGD with heavy-ball momentum
        (PyTorch ``SGD(momentum=β)``, dampening 0) or its Nesterov form: the augmented-state
        second-moment map reduced to symmetric ρ×ρ matrices, its first crossing of ρ = 1 found
        by a grid scan and Brent's method (:mod:`dynstab.criteria.momentum`); ``eta_gd`` of the
        result is then 2(1 + β)/λ_max (Nesterov: (2 + 2β)/((1 + 2β)λ_max)).

        Args:
            sampling: The i.i.d. sampling rule (:meth:`sampling`).
            method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
            tol: Relative Ritz-residual tolerance of the matrix-free solver (with momentum: the
                relative tolerance of the root).
            max_iters: Maximum Lanczos products.
            momentum: Heavy-ball momentum β in [0, 1). Default 0 (plain SGD).
            nesterov: PyTorch's Nesterov form (needs β > 0).

        Returns:
            :class:`EtaStarResult` with the route, the solver and the parameters measured;
            non-convergence sets ``converged=False`` and warns
            :class:`~dynstab.errors.ConvergenceWarning`.

        Raises:
            TypeError: If ``sampling`` is not a :class:`~dynstab.sampling.Sampling`.
            ValueError: On a bad method, tol, max_iters, sampling or K.
            MemoryBudgetError: If the solver would not fit the budget.

        Example:
            >>> J = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
            >>> prob = StabilityProblem.from_gram(J @ J.T / 3)
            >>> [round(prob.eta_star(prob.sampling(B, "without")).eta_star, 10) for B in (1, 2, 3)]
            [0.4434007919, 0.7775166986, 0.9915103182]
            >>> r = prob.eta_star(prob.sampling(3, "without"), momentum=0.5)  # GD with momentum
            >>> round(r.eta_gd * prob.lambda_max, 12), round(r.eta_star / r.eta_gd, 10)  # 2(1 + β)
            (3.0, 1.0)
        """
        s = self._check_sampling(sampling)
        tol = _check_solver(method, tol, max_iters)
        momentum = check_momentum(momentum, nesterov)
        return self._eta_star(s, method, tol, max_iters, momentum, nesterov)

    def _eta_star(
        self,
        s: Sampling,
        method: str,
        tol: float,
        max_iters: int,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> EtaStarResult:
        c = self.coordinates
        p = s.p
        if momentum:
            return self._momentum_eta_star(s, method, tol, momentum, nesterov)
        if c.rank == 0:
            return self._result(math.inf, 0.0, "dense", True, 0, p, 0.0)
        method = self._solver(method, max_iters, "eta_star")
        top, converged, iters, res = generalized_sharpness(
            c, s, method=method, tol=tol, max_iters=max_iters, budget_bytes=self.budget.bytes
        )
        if not converged:
            why = (
                f"did not reach tol={tol:g} in max_iters={max_iters} products (relative residual "
                f"{res:.2e}); increase max_iters."
                if iters >= max_iters
                else f"stopped after {iters} of max_iters={max_iters} products: its certified "
                f"error bound cannot reach tol={tol:g}·θ (round-off floor of the "
                f"{c.rank * (c.rank + 1) // 2}-dimensional operator; relative residual "
                f"{res:.2e}). The value is uncertified at tol; a larger tol may be certified."
            )
            warnings.warn(f"eta_star: Lanczos {why}", ConvergenceWarning, stacklevel=3)
        return self._result(2.0 / top, top, method, converged, iters, p, res)

    def _momentum_eta_star(
        self, s: Sampling, method: str, tol: float, momentum: float, nesterov: bool
    ) -> EtaStarResult:
        c = self.coordinates
        if c.rank == 0:
            res = self._result(math.inf, 0.0, "dense", True, 0, s.p, 0.0)
        else:
            m = c.rank * (c.rank + 1) // 2
            if method == "auto":
                method = "dense" if m <= REDUCED_DENSE_MAX_DIM else "matrix_free"
            method = self._solver(method, 300, "eta_star (momentum)")
            sol = momentum_threshold(c, s, momentum, nesterov, method=method, rtol=tol)
            if not sol.stable_set_interval:
                warnings.warn(
                    "eta_star (momentum): on the scan grid the mean-square stable learning rates "
                    "do not form an interval (0, η*]; η* is the first crossing of ρ = 1.",
                    DynstabWarning,
                    stacklevel=4,
                )
            res = self._result(
                sol.eta_star,
                2.0 / sol.eta_star,
                sol.method,
                True,
                sol.num_evaluations,
                s.p,
                abs(sol.residual),
            )
        eta_gd = momentum_gd_threshold(self.lambda_max, momentum, nesterov=nesterov)
        return dataclasses.replace(res, momentum=momentum, nesterov=nesterov, eta_gd=eta_gd)

    def _result(
        self,
        eta: float,
        top: float,
        method: str,
        converged: bool,
        iters: int,
        p: float,
        res: float,
    ) -> EtaStarResult:
        return EtaStarResult(
            eta_star=eta,
            generalized_sharpness=top,
            method=method,
            converged=converged,
            num_matvecs=iters,
            rank=self.rank,
            p=p,
            residual=res,
            route=self.route,
            route_reason=self.route_reason,
            num_params=self.num_params,
            param_names=self.param_names,
            eta_gd=gd_threshold(self.lambda_max),
        )

    @criteria_docs
    def second_moment_growth(  # noqa: D417
        self,
        sampling: Sampling,
        lr: float,
        *,
        method: str = "auto",
        tol: float = 1e-12,
        max_iters: int = 300,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> float:
        """ρ(Q) = λ_max(Q_z), the exact per-step growth factor of E‖δ_t‖² at η = lr.

        Q_z(X) = X − η(ΛX + XΛ) + η²D_z(X) on symmetric ρ×ρ matrices; mean-square stable iff
        the value is ≤ 1, i.e. iff lr ≤ η*. With ``momentum=β > 0``: the spectral radius of
        the augmented-state map Σ ↦ E[M_IΣM_Iᵀ] on symmetric 2ρ×2ρ matrices (the growth of
        E‖z_t‖², :func:`~dynstab.criteria.momentum.momentum_growth`), computed on the reduced
        ρ(ρ+1)/2-dimensional space by a monotone root search in λ (dense ``eigvals`` or ARPACK
        for each evaluation of the reduced criterion).

        Args:
            sampling: The i.i.d. sampling rule.
            lr: Learning rate η > 0.
            %(growth_solver_args)s
            momentum: Heavy-ball momentum β in [0, 1).
            nesterov: PyTorch's Nesterov form (needs β > 0).

        Returns:
            The spectral radius (1.0 when K = 0: everything is frozen).

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(2))
            >>> prob.second_moment_growth(prob.sampling(None), 0.5)  # GD: (1 − ηλ)²
            0.25
        """
        s = self._check_sampling(sampling)
        lr = check_lr(lr)
        tol = _check_solver(method, tol, max_iters)
        momentum = check_momentum(momentum, nesterov)
        return self._growth(s, lr, method, tol, max_iters, momentum, nesterov)

    def _growth(
        self,
        s: Sampling,
        lr: float,
        method: str,
        tol: float,
        max_iters: int,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> float:
        c = self.coordinates
        if c.rank == 0:
            return 1.0
        if momentum:
            dim = c.rank * (c.rank + 1) // 2
            if method == "dense" and dim > DENSE_MAX_DIM:
                raise ValueError(
                    f"method='dense' with momentum needs a ρ(ρ+1)/2 = {dim} square matrix, above "
                    f"the cap {DENSE_MAX_DIM}; use method='matrix_free' (or 'auto')."
                )
            return momentum_growth(c, s, lr, momentum, nesterov, method=method)
        method = self._solver(method, max_iters, "second_moment_growth", prefer_dense=True)
        value, converged, res = second_moment_radius(
            c, s, lr, method=method, tol=tol, max_iters=max_iters, budget_bytes=self.budget.bytes
        )
        if not converged:
            warnings.warn(
                f"second_moment_growth: Lanczos did not reach tol={tol:g} in {max_iters} "
                f"products (relative residual {res:.2e}); increase max_iters.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return value

    def propagate_second_moment(
        self, sampling: Sampling, lr: float, *, steps: int, R0: Tensor | None = None
    ) -> Tensor:
        """Exact E‖r_t‖² = Tr R_t, t = 0..steps, of linearized SGD in residual space.

        R_t = E r_trᵀ_t with r = Jδ. Since r lies in range(K), R = ĜΣĜᵀ and the expectation over
        one batch is Σ ↦ Q_z(Σ) exactly (no sampling); Tr R = n Tr(ΛΣ). Cost O(nCρ²) per step.

        Args:
            sampling: The i.i.d. sampling rule.
            lr: Learning rate η > 0.
            steps: Number of steps, >= 0.
            R0: Initial second moment ``(nC, nC)``, symmetric; projected onto range(K).
                Default K/Tr K (an isotropic δ₀ in the row space, unit trace).

        Returns:
            float64 Tensor of shape ``(steps + 1,)``; entries past the float64 range are
            ``inf`` (never NaN).

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(1))
            >>> prob.propagate_second_moment(prob.sampling(1), 0.5, steps=2)
            tensor([1.0000, 0.2500, 0.0625], dtype=torch.float64)
        """
        s = self._check_sampling(sampling)
        lr = check_lr(lr)
        check_int("steps", steps, minimum=0)
        N = self.n * self.outputs
        if R0 is not None and (not isinstance(R0, Tensor) or tuple(R0.shape) != (N, N)):
            raise ValueError(
                f"R0 must be a Tensor of shape ({N}, {N}) like K; got "
                f"{tuple(R0.shape) if isinstance(R0, Tensor) else type(R0).__name__}."
            )
        c = self.coordinates
        out = torch.zeros(steps + 1, dtype=torch.float64)
        if c.rank == 0:
            return out
        lam, n = c.lam, self.n
        if R0 is None:
            Sig = torch.eye(c.rank, dtype=torch.float64, device=lam.device) / (n * float(lam.sum()))
        else:
            R = check_finite("R0", R0.detach().to(torch.float64).to(lam.device))
            W = c.Ghat / (n * lam)  # Ĝ Λ⁻¹/n: Σ = (ĜΛ⁻¹/n)ᵀ R (ĜΛ⁻¹/n)
            Sig = W.T @ (0.5 * (R + R.T)) @ W
        p = s.p
        for t in range(steps + 1):
            out[t] = n * float((lam * Sig.diagonal()).sum())
            if not math.isfinite(float(out[t])):  # overflow past float64: diverged
                out[t:] = math.inf
                break
            if t < steps:
                Sig = _apply_Q(c, p, lr, Sig)
        return out

    def lyapunov_exponent(
        self,
        sampling: Sampling,
        lr: float,
        *,
        num_steps: int = 20000,
        num_runs: int = 32,
        burn_in: int | None = None,
        generator: torch.Generator | None = None,
    ) -> LyapunovResult:
        """Top Lyapunov exponent of linearized SGD (the typical-run rate), by simulation.

        Simulates δ ← (I − (η/B) Σ_{i∈I} Ĝ_iᵀĜ_i) δ in the row-space coordinates with batches
        drawn by ``sampling.sampler`` semantics (i.i.d. across runs and steps), renormalising
        every step and averaging log‖δ_{t+1}‖/‖δ_t‖ after ``burn_in`` steps. Cost
        O(num_runs·B·C·ρ) per step. Jensen gives exp(λ₁) ≤ √ρ(Q).

        Args:
            sampling: The i.i.d. sampling rule.
            lr: Learning rate η > 0.
            num_steps: Steps per run after burn-in, >= 1.
            num_runs: Independent runs (their spread gives ``stderr``), >= 2.
            burn_in: Discarded initial steps (default ``num_steps // 10``).
            generator: Random source (batches and δ₀).

        Returns:
            :class:`LyapunovResult`.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(1))
            >>> g = torch.Generator().manual_seed(0)
            >>> s = prob.sampling(1)
            >>> r = prob.lyapunov_exponent(s, 0.5, num_steps=10, num_runs=2, generator=g)
            >>> round(r.growth_factor, 12)  # 1-D, one sample: |1 − 0.5·1| exactly
            0.5
        """
        s = self._check_sampling(sampling)
        lr = check_lr(lr)
        check_int("num_steps", num_steps, minimum=1)
        check_int("num_runs", num_runs, minimum=2)
        burn = num_steps // 10 if burn_in is None else check_int("burn_in", burn_in, minimum=0)
        generator = check_generator("generator", generator)
        c = self.coordinates
        n, C, rho, B = c.n, c.outputs, c.rank, s.B
        if rho == 0:
            return LyapunovResult(0.0, 1.0, 0.0, num_steps, num_runs)
        Gb = c.Ghat.reshape(n, C, rho)
        dev = Gb.device
        delta = torch.randn(num_runs, rho, generator=generator, dtype=torch.float64).to(dev)
        delta = delta / torch.linalg.norm(delta, dim=1, keepdim=True)
        total = torch.zeros(num_runs, dtype=torch.float64, device=dev)
        chunk = 256
        t = 0
        while t < burn + num_steps:
            size = min(chunk, burn + num_steps - t)
            idx = _sample_batches(n, B, s.scheme, (size, num_runs), generator).to(dev)
            for k in range(size):
                Gi = Gb[idx[k]]  # (runs, B, C, ρ)
                z = torch.einsum("rbcq,rq->rbc", Gi, delta)
                delta = delta - (lr / B) * torch.einsum("rbcq,rbc->rq", Gi, z)
                norm = torch.linalg.norm(delta, dim=1)
                if t >= burn:
                    total += torch.log(norm)
                delta = delta / norm[:, None]
                t += 1
        per_run = total / num_steps
        exponent = float(per_run.mean())
        stderr = float(per_run.std() / math.sqrt(num_runs))
        return LyapunovResult(exponent, math.exp(exponent), stderr, num_steps, num_runs)

    # ------------------------------------------------------------------ bounds

    def gd_bound(self) -> float:
        """2/λ_max(K): the GD threshold and a necessary bound on η* for every B.

        Example:
            >>> StabilityProblem.from_gram(torch.diag(torch.tensor([4.0, 1.0]))).gd_bound()
            0.5
        """
        return gd_threshold(self.lambda_max)

    def trace_bound(self, sampling: Sampling) -> float:
        """The trace bound η* ≤ 2C/(q Tr K) (Wu & Su 2023, Thm 3.3; Tr H ≤ 2/η for B = C = 1).

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))  # orthogonal equal-norm samples
            >>> prob.trace_bound(prob.sampling(1))  # tight: = η*
            0.5
        """
        s = self._check_sampling(sampling)
        tr = self.trace
        return math.inf if tr <= 0 else 2.0 * self.outputs / (s.q * tr)

    def frobenius_bound(self, sampling: Sampling) -> float:
        """The Frobenius bound η* ≤ 2√C/(√q ‖K‖_F) (Wu & Su 2023; ‖H‖_F ≤ 2/(η√q), C = 1).

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))
            >>> prob.frobenius_bound(prob.sampling(1))
            1.0
        """
        s = self._check_sampling(sampling)
        fro = self.frobenius
        return math.inf if fro <= 0 else 2.0 * math.sqrt(self.outputs) / (math.sqrt(s.q) * fro)

    def mm23_bound_16(self, sampling: Sampling) -> float:
        """Mulayoff & Michaeli (2024) eq. (16): η* ≤ 2 Tr K / ((1 − p)‖K‖_F² + p n Σ_i ‖K_ii‖_F²).

        This is uᵀQu ≤ 1 for u = vec(I)/√P; (p/n) Σ_i ‖H_i‖_F² = p n Σ_i ‖K_ii‖_F².

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))
            >>> prob.mm23_bound_16(prob.sampling(1))
            0.5
        """
        p = self._check_sampling(sampling).p
        den = (1 - p) * self.frobenius**2 + p * self.n * self._diag_blocks_sq()
        return math.inf if den <= 0 else 2.0 * self.trace / den

    def mm23_bound_15(self, sampling: Sampling) -> float:
        """Mulayoff & Michaeli (2024) eq. (15) in Gram form: η* ≤ 2/(λ(1 + p(n Σ_i ‖u_i‖⁴ − 1))).

        λ = λ_max(K) with unit eigenvector u (u_i its C entries of sample i); this is the
        rank-one functional of :meth:`rank_one_bound` at the top Hessian eigenvector.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))
            >>> round(prob.mm23_bound_15(prob.sampling(1)), 12)  # u = e_1: 2/(1·(1 + 4 − 1))
            0.5
        """
        s = self._check_sampling(sampling)
        c = self.coordinates
        if c.rank == 0:
            return math.inf
        u = c.U[:, 0].reshape(c.n, c.outputs)
        m4 = float(((u * u).sum(1) ** 2).sum())
        return 2.0 / (c.lambda_max * (1.0 + s.p * (c.n * m4 - 1.0)))

    def rank_one_bound(
        self,
        sampling: Sampling,
        *,
        num_restarts: int = 8,
        num_iters: int = 500,
        tol: float = 1e-12,
        generator: torch.Generator | None = None,
    ) -> RankOneBoundResult:
        """Maximise Mulayoff & Michaeli (2024)'s rank-one functional (eq. 24); the bound on η*.

        For unit v in the row space of J, z = Jv, a = (1/n) Σ_i ‖z_i‖² = vᵀHv and
        m₄ = (1/n) Σ_i ‖z_i‖⁴:  F(v) = (1 − p)a + p m₄/a ≤ λ_max(C†D) = 2/η*. Riemannian
        gradient ascent in the coordinates (z = Ĝw, ‖w‖ = 1) with an adaptive step; restart 0
        starts at the top eigenvector (so the result is at least the (15) value), the others at
        Gaussian directions. Cost per iteration: two products with Ĝ, O(nCρ) per restart.

        Args:
            sampling: The i.i.d. sampling rule.
            num_restarts: Number of starting points, >= 1.
            num_iters: Maximum ascent iterations per restart.
            tol: Stop a restart when its relative improvement stays below ``tol`` for 10 steps.
            generator: Random source for the restarts.

        Returns:
            :class:`RankOneBoundResult`; non-convergence also warns ConvergenceWarning.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))
            >>> prob.rank_one_bound(prob.sampling(1)).eta_bound  # F = λ + p(n−1)λ
            0.5
        """
        s = self._check_sampling(sampling)
        check_int("num_restarts", num_restarts, minimum=1)
        check_int("num_iters", num_iters, minimum=1)
        tol = check_positive("tol", tol)
        return self._rank_one(
            s, num_restarts, num_iters, tol, check_generator("generator", generator)
        )

    def _rank_one(
        self,
        s: Sampling,
        num_restarts: int,
        num_iters: int,
        tol: float,
        generator: torch.Generator | None,
    ) -> RankOneBoundResult:
        c = self.coordinates
        p = s.p
        rho = c.rank
        if rho == 0:
            return RankOneBoundResult(math.inf, 0.0, 0, True)
        W = torch.randn(rho, num_restarts, generator=generator, dtype=torch.float64)
        W[:, 0] = 0.0
        W[0, 0] = 1.0
        W = (W / torch.linalg.norm(W, dim=0)).to(c.Ghat.device)
        F, grad = _rank_one_F(c, p, W)
        step = torch.full((num_restarts,), 0.5 / c.lambda_max, dtype=torch.float64)
        step = step.to(c.Ghat.device)
        calm = torch.zeros(num_restarts, dtype=torch.long, device=c.Ghat.device)
        it = 0
        while it < num_iters:
            it += 1
            rg = grad - (grad * W).sum(0) * W
            Wn = W + step * rg
            Wn = Wn / torch.linalg.norm(Wn, dim=0)
            Fn, gn = _rank_one_F(c, p, Wn)
            better = Fn > F
            gain = torch.where(better, (Fn - F) / F.abs(), torch.zeros_like(F))
            W = torch.where(better, Wn, W)
            grad = torch.where(better, gn, grad)
            F = torch.where(better, Fn, F)
            step = torch.where(better, step * 1.2, step * 0.5)
            calm = torch.where(gain < tol, calm + 1, torch.zeros_like(calm))
            if bool((calm >= 10).all()):
                break
        converged = bool((calm >= 10).all())
        if not converged:
            warnings.warn(
                f"rank_one_bound: ascent did not settle within num_iters={num_iters}; the bound "
                "is still valid (any v gives one) but may be loose. Increase num_iters.",
                ConvergenceWarning,
                stacklevel=3,
            )
        best = float(F.max())
        return RankOneBoundResult(2.0 / best, best, it, converged)

    def wme18_sufficient_lr(self, sampling: Sampling) -> float:
        """Largest η with Wu, Ma & E (2018)'s sufficient condition λ_max((I − ηH)² + η²pΣ) ≤ 1.

        Σ = (1/n) Σ_i H_i² − H². In the coordinates the condition is
        η wᵀ D_z(I) w ≤ 2 wᵀΛw for all w, D_z(I) = (1 − p)Λ² + (p/n) Σ_i Ĝ_iᵀĜ_iĜ_iᵀĜ_i, so

            η_WME = 2/λ_max(Λ^{-1/2} D_z(I) Λ^{-1/2}) ≤ η*.

        Example:
            >>> g = torch.tensor([[0.2], [3.8]], dtype=torch.float64).sqrt()  # WME18 1-D toy
            >>> prob = StabilityProblem.from_gram(g @ g.T / 2)
            >>> round(prob.wme18_sufficient_lr(prob.sampling(1)), 4)  # = η* in 1-D
            0.5525
        """
        s = self._check_sampling(sampling)
        c = self.coordinates
        if c.rank == 0:
            return math.inf
        p = s.p
        eye = torch.eye(c.rank, dtype=torch.float64, device=c.lam.device)
        A = p * _per_sample_term(c, eye)
        A.diagonal().add_((1 - p) * c.lam**2)
        r = c.lam.rsqrt()
        A = r[:, None] * A * r[None, :]
        return 2.0 / float(torch.linalg.eigvalsh(0.5 * (A + A.T))[-1])

    def alignment_factor(self, residuals: Tensor | None = None) -> float:
        """Wu, Wang & Su (2022)'s alignment factor μ(θ) = [n rᵀBlkDiag(K²)r − rᵀK²r]/(‖r‖²‖K‖_F²).

        Equals Tr(Σ(θ)G(θ))/(2L(θ)‖G(θ)‖_F²) for the ½-square loss at any θ; computed in the
        coordinates: rᵀK²r = Σ_a λ_a (Ĝᵀr)_a²/n and n rᵀBlkDiag(K²)r = Σ_i ‖Λ^{1/2}Ĝ_iᵀr_i‖².

        Args:
            residuals: r = f(X) − y, shape ``(nC,)`` or ``(n, C)`` (Tensor or NumPy array);
                None uses the problem's residuals.

        Returns:
            μ ≥ 0.

        Raises:
            ValueError: If there are no residuals, they have the wrong size, are not finite or
                all zero, or K = 0.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(2))
            >>> round(prob.alignment_factor(torch.tensor([1.0, 0.0])), 12)
            0.5
        """
        r = self.residuals if residuals is None else _residuals(residuals, self.n * self.outputs)
        if r is None:
            raise ValueError(
                "alignment_factor needs residuals; the problem has none. Pass residuals=... or "
                "build the problem with targets."
            )
        c = self.coordinates
        rr = float(r @ r)
        fro2 = float((c.lam * c.lam).sum())
        if rr == 0.0 or fro2 == 0.0:
            raise ValueError(
                "alignment_factor needs nonzero residuals and K ≠ 0 (μ is 0/0 at an interpolating "
                "point); use alignment_infimum for the worst case."
            )
        r = r.to(c.Ghat.device)
        z = c.Ghat.T @ r
        kr2 = float((c.lam * z * z).sum()) / self.n
        Y = (c.Ghat.reshape(self.n, self.outputs, -1) * r.reshape(self.n, self.outputs, 1)).sum(1)
        quad = float((Y * Y * c.lam).sum())
        return (quad - kr2) / (rr * fro2)

    def alignment_infimum(self) -> float:
        """μ_inf = λ_min⁺(n BlkDiag(K²) − K²)/‖K‖_F², the worst alignment over r ∈ range K.

        In the coordinates n BlkDiag(K²) − K² restricted to range K is
        Λ^{-1/2}[(1/n) Σ_i H_iΛH_i]Λ^{-1/2} − Λ² with H_i = Ĝ_iᵀĜ_i (Wu, Wang & Su 2022).

        Example:
            >>> round(StabilityProblem.from_gram(torch.eye(2)).alignment_infimum(), 12)  # (2 − 1)/2
            0.5
        """
        lmin = self._lambda_min_plus()
        c = self.coordinates
        return 0.0 if c.rank == 0 else lmin / float((c.lam * c.lam).sum())

    def _lambda_min_plus(self) -> float:
        """λ_min⁺(n BlkDiag(K²) − K²) on range K, computed once."""
        if self._lmin is None:
            c = self.coordinates
            if c.rank == 0:
                self._lmin = 0.0
            else:
                r = c.lam.rsqrt()
                M = r[:, None] * _per_sample_term(c, torch.diag(c.lam)) * r[None, :]
                M = M - torch.diag(c.lam**2)
                self._lmin = max(float(torch.linalg.eigvalsh(0.5 * (M + M.T))[0]), 0.0)
        return self._lmin

    def alignment_bound(self, sampling: Sampling) -> float:
        """The alignment bound η* ≤ 1/√(p λ_min⁺(n BlkDiag(K²) − K²)) (``inf`` when p = 0).

        From the one-step identity E L̃_{t+1} ≥ (η²p/2) Tr(ΣH) ≥ η² p μ_inf ‖K‖_F² L̃_t
        (Wu, Wang & Su 2022, the alignment property).

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(2))
            >>> round(prob.alignment_bound(prob.sampling(1)), 12)  # 1/√(1·1)
            1.0
        """
        p, lmin = self._check_sampling(sampling).p, self._lambda_min_plus()
        return math.inf if p * lmin <= 0 else 1.0 / math.sqrt(p * lmin)

    # ------------------------------------------------------------------ verdict

    def check(
        self,
        lr: float,
        sampling: Sampling,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        **options: Unpack[CheckOptions],
    ) -> StabilityReport:
        """Verdict on GD and SGD (mean-square) stability at lr: every criterion, computed once.

        λ_max, Tr, ‖·‖_F of H, the exact η*, Mulayoff & Michaeli (2024)'s bounds (15), (16),
        (24), the trace and Frobenius bounds (Wu & Su 2023), the alignment bound and factor
        (Wu, Wang & Su 2022), Wu, Ma & E (2018)'s sufficient learning rate and ρ(Q) at lr. When
        the residuals say the point is not interpolating, warns
        :class:`~dynstab.errors.NotInterpolatingWarning` and says so in ``notes``.

        Args:
            lr: Learning rate η > 0.
            sampling: The i.i.d. sampling rule.
            momentum: Heavy-ball momentum β in [0, 1) of the optimizer (PyTorch
                ``SGD(momentum=β)``). With β > 0 the GD row is η ≤ 2(1 + β)/λ_max, the SGD row
                the exact threshold of SGD with momentum, ρ(Q) the augmented-state growth; the
                plain-SGD bounds (MM23, trace, Frobenius, alignment, rank-one, WME18) are left
                out (they do not hold with momentum) and a note says so.
            nesterov: PyTorch's Nesterov form (needs β > 0).
            **options: ``method``, ``rank_one``, ``growth``, ``interpolation_tol``,
                ``train_loss``, ``generator`` (:class:`CheckOptions`).

        Returns:
            :class:`StabilityReport`, with the route and the parameters measured.

        Example:
            >>> prob = StabilityProblem.from_gram(torch.eye(4))
            >>> rep = prob.check(0.4, prob.sampling(1))
            >>> rep.stable_gd, rep.stable_sgd, rep.eta_star  # η* = 2/Tr for orthogonal samples
            (True, True, 0.5)
        """
        lr = check_lr(lr)
        s = self._check_sampling(sampling)
        check_options("check", options, CheckOptions)
        method = check_choice("method", options.get("method", "auto"), _METHODS)
        interpolation_tol = check_positive(
            "interpolation_tol",
            options.get("interpolation_tol", INTERPOLATION_TOL),
            allow_zero=True,
        )
        generator = check_generator("generator", options.get("generator"))
        momentum = check_momentum(momentum, nesterov)
        rank_one, growth = options.get("rank_one", True), options.get("growth", True)
        train_loss = options.get("train_loss")
        if train_loss is None:
            train_loss = self.train_loss
        notes: list[str] = [
            "thresholds assume the ½-square loss at an interpolating minimum (H = G)"
        ]
        interpolating: bool | None = None
        max_res: float | None = None
        mu: float | None = None
        c = self.coordinates
        if self.residuals is not None:
            r = self.residuals
            max_res = float(r.abs().max())
            interpolating = max_res <= interpolation_tol
            if not interpolating:
                msg = (
                    f"not an interpolating point: max |f(x_i) − y_i| = {max_res:.3e} > "
                    f"{interpolation_tol:g}; H ≠ G (residual term (1/n) Σ r_i ∇²f_i ≠ 0), so η* "
                    "and the bounds describe the Gauss–Newton linearization only."
                )
                notes.append(msg)
                warnings.warn(msg, NotInterpolatingWarning, stacklevel=3)
            if float(r @ r) > 0 and c.rank > 0:
                mu = self.alignment_factor()
        lam, tr, fro = self.lambda_max, self.trace, self.frobenius
        es = self._eta_star(s, method, 1e-10, 300, momentum, nesterov)
        if not es.converged:
            notes.append("the η* solver did not converge; see ConvergenceWarning")
        eta_gd = momentum_gd_threshold(lam, momentum, nesterov=nesterov)

        def row(name: str, cond: str, kind: str, value: float, eta: float) -> BoundRow:
            return BoundRow(name, cond, kind, value, eta, 0.0 if math.isinf(eta) else lr / eta)

        lmin = self._lambda_min_plus()
        if momentum:
            rows = self._momentum_rows(lam, es, eta_gd, momentum, nesterov, lr)
            notes.append(
                "momentum: the MM23, trace, Frobenius, alignment, rank-one and WME18 bounds are "
                "plain-SGD results and are not shown"
            )
            return self._report(
                lr, s, es, eta_gd, rows, momentum, nesterov, method, growth, mu, lmin,
                interpolating, max_res, train_loss, notes,
            )  # fmt: skip
        b15, b16 = self.mm23_bound_15(s), self.mm23_bound_16(s)
        rows = [
            row("gd", "GD: λ_max(H) ≤ 2/η", "exact", lam, eta_gd),
            row(
                "sgd_exact", "SGD: λ_max(C†D) ≤ 2/η", "exact", es.generalized_sharpness, es.eta_star
            ),
            row("mm23_15", "MM23 (15)", "necessary", 2.0 / b15, b15),
            row("mm23_16", "MM23 (16)", "necessary", 2.0 / b16, b16),
            row("trace", "Tr H ≤ 2C/(qη)", "necessary", tr, self.trace_bound(s)),
            row("frobenius", "‖H‖_F ≤ 2√C/(η√q)", "necessary", fro, self.frobenius_bound(s)),
            row(
                "alignment",
                "‖H‖_F ≤ 1/(η√(p·μ_inf))",
                "necessary",
                fro,
                self.alignment_bound(s),
            ),
        ]
        if rank_one:
            r1 = self._rank_one(s, 8, 500, 1e-12, generator)
            rows.append(
                row("rank_one", "MM23 (24): max F(v) ≤ 2/η", "necessary", r1.value, r1.eta_bound)
            )
        wme = self.wme18_sufficient_lr(s)
        rows.append(row("wme18", "WME18: λ_max((I−ηH)²+η²pΣ) ≤ 1", "sufficient", 2.0 / wme, wme))
        if self.outputs > 1:
            notes.append("trace and Frobenius bounds carry the factor C (√C) for rank-C H_i")
        return self._report(
            lr, s, es, eta_gd, rows, 0.0, False, method, growth, mu, lmin, interpolating,
            max_res, train_loss, notes,
        )  # fmt: skip

    @staticmethod
    def _momentum_rows(
        lam: float, es: EtaStarResult, eta_gd: float, momentum: float, nesterov: bool, lr: float
    ) -> list[BoundRow]:
        """The two exact rows of the verdict with momentum: GD and SGD with momentum."""
        factor = (2 + 2 * momentum) / (1 + 2 * momentum) if nesterov else 2 + 2 * momentum
        form = "Nesterov" if nesterov else "heavy ball"
        rows = []
        for name, cond, value, eta in (
            ("gd", f"GD ({form} β={momentum:g}): λ_max(H) ≤ {factor:.6g}/η", lam, eta_gd),
            ("sgd_exact", f"SGD ({form} β={momentum:g}): ρ(Q) ≤ 1", es.generalized_sharpness,
             es.eta_star),
        ):  # fmt: skip
            rows.append(
                BoundRow(name, cond, "exact", value, eta, 0.0 if math.isinf(eta) else lr / eta)
            )
        return rows

    def _report(
        self,
        lr: float,
        s: Sampling,
        es: EtaStarResult,
        eta_gd: float,
        rows: list[BoundRow],
        momentum: float,
        nesterov: bool,
        method: str,
        growth: bool,
        mu: float | None,
        lmin: float,
        interpolating: bool | None,
        max_res: float | None,
        train_loss: float | None,
        notes: list[str],
    ) -> StabilityReport:
        c = self.coordinates
        lam, tr, fro = self.lambda_max, self.trace, self.frobenius
        rho_q = self._growth(s, lr, method, 1e-12, 300, momentum, nesterov) if growth else None
        ref = self.half_mse_loss
        if (
            train_loss is not None
            and ref is not None
            and abs(train_loss - ref) > 1e-12 + 1e-6 * abs(ref)
        ):
            notes.append(
                f"loss_fn gives {train_loss:.6g} but half_mse gives {ref:.6g}: the thresholds "
                "refer to the ½-square loss; rescale lr accordingly"
            )
        return StabilityReport(
            lr=lr,
            batch_size=s.B,
            sampling=s.scheme,
            n=self.n,
            outputs=self.outputs,
            p=s.p,
            q=s.q,
            lambda_max=lam,
            trace=tr,
            frobenius=fro,
            eta_gd=eta_gd,
            eta_star=es.eta_star,
            generalized_sharpness=es.generalized_sharpness,
            eta_star_method=es.method,
            eta_star_converged=es.converged,
            stable_gd=lr <= eta_gd,
            stable_sgd=lr <= es.eta_star,
            growth_per_step=rho_q,
            rows=tuple(rows),
            alignment=mu,
            alignment_inf=0.0 if c.rank == 0 else lmin / float((c.lam * c.lam).sum()),
            interpolating=interpolating,
            max_abs_residual=max_res,
            train_loss=train_loss,
            residual_term=None,
            notes=tuple(notes),
            eta_star_route=self.route,
            route_reason=self.route_reason,
            num_params=self.num_params,
            param_names=self.param_names,
            momentum=momentum,
            nesterov=nesterov,
        )

    def __repr__(self) -> str:
        params = "" if self.num_params is None else f", p={self.num_params}"
        return (
            f"StabilityProblem(n={self.n}, C={self.outputs}{params}, route={self.route!r}, "
            f"residuals={'yes' if self.residuals is not None else 'no'})"
        )


def _rank_one_F(c: GramCoordinates, p: float, W: Tensor) -> tuple[Tensor, Tensor]:
    """F(w) = (1 − p)a + p m₄/a and its Euclidean gradient, for the columns of W (ρ, R)."""
    n, C = c.n, c.outputs
    Z = c.Ghat @ W  # (nC, R)
    S = (Z.reshape(n, C, -1) ** 2).sum(1)  # (n, R)  ‖z_i‖²
    a = S.mean(0)
    m4 = (S * S).mean(0)
    ga = (2.0 / n) * (c.Ghat.T @ Z)
    gm = (4.0 / n) * (c.Ghat.T @ (S.repeat_interleave(C, dim=0) * Z))
    F = (1 - p) * a + p * m4 / a
    grad = (1 - p) * ga + p * (gm / a - m4 * ga / a**2)
    return F, grad


def _sample_batches(
    n: int, B: int, scheme: str, shape: tuple[int, int], generator: torch.Generator | None
) -> Tensor:
    """Batch indices of shape (*shape, B), i.i.d. across the leading dims (the i.i.d. schemes)."""
    if scheme == "with":
        return torch.randint(n, (*shape, B), generator=generator)
    u = torch.rand(*shape, n, generator=generator)
    return u.argsort(dim=-1)[..., :B]


def _check_rank_tol(rank_tol: float) -> float:
    rank_tol = check_positive("rank_tol", rank_tol, allow_zero=True)
    if rank_tol >= 1:
        raise ValueError(f"rank_tol must be in [0, 1); got {rank_tol}.")
    return rank_tol


def _residuals(residuals: object, size: int) -> Tensor | None:
    """Residuals as a flat float64 tensor of ``size`` finite entries (None stays None)."""
    if residuals is None:
        return None
    hint = "The model outputs or targets hold inf/nan; check the data and the parameters."
    if isinstance(residuals, Tensor) and residuals.numel() != size:
        raise ValueError(
            f"residuals must have n*C = {size} entries (sample-major); got shape "
            f"{tuple(residuals.shape)}."
        )
    r = as_float64_tensor("residuals", residuals, hint).reshape(-1)
    if r.numel() != size:
        raise ValueError(
            f"residuals must have n*C = {size} entries (sample-major); got {r.numel()} entries."
        )
    return r


# ---------------------------------------------------------------------- one-call functions


def gram_coordinates(K: Tensor, outputs: int = 1, *, rank_tol: float = 1e-10) -> GramCoordinates:
    """Eigendecompose K = JJᵀ/n and build the row-space coordinates Ĝ = √n UΛ^{1/2}.

    Eigenvalues ≤ ``rank_tol·λ_max`` are treated as zero (null space of J, frozen under SGD).
    Same as ``StabilityProblem.from_gram(K, outputs, rank_tol=rank_tol).coordinates``.

    Args:
        K: Gram matrix, shape ``(nC, nC)``, symmetric PSD, sample-major ordering.
        outputs: Number of outputs C per sample.
        rank_tol: Relative eigenvalue cut-off, in [0, 1).

    Returns:
        :class:`GramCoordinates` in float64.

    Raises:
        ValueError: If K is not square, symmetric, finite and PSD, or its size is not a
            multiple of ``outputs``.
        TypeError: If K is not a floating-point tensor.

    Example:
        >>> c = gram_coordinates(torch.diag(torch.tensor([2.0, 1.0, 0.0])))
        >>> c.rank, c.lam.tolist()
        (2, [2.0, 1.0])
    """
    return StabilityProblem.from_gram(K, outputs, rank_tol=rank_tol).coordinates


def _gram_bound(
    bound: Callable[[StabilityProblem, Sampling], float],
    K: Tensor,
    batch_size: int,
    sampling: str,
    outputs: int,
    coords: GramCoordinates | None = None,
) -> float:
    """The body of the one-call Gram bounds: ``bound`` of the problem of K at (B, sampling)."""
    prob = StabilityProblem.from_gram(K, outputs, coordinates=coords)
    return bound(prob, prob.sampling(batch_size, sampling))


def eta_star(
    K: Tensor,
    batch_size: int,
    sampling: str = "with",
    *,
    outputs: int = 1,
    method: str = "auto",
    tol: float = 1e-10,
    max_iters: int = 300,
    rank_tol: float = 1e-10,
    coords: GramCoordinates | None = None,
) -> EtaStarResult:
    """Exact mean-square threshold η* = 2/λ_max(C†D) of SGD from the Gram matrix K = JJᵀ/n.

    Assumes an interpolating minimum of the ½-square loss (H = G, H_i = J_iᵀJ_i) and i.i.d.
    batches of size B (``sampling`` with or without replacement); SGD's linearized second
    moment stays bounded iff η ≤ η*, and η* = 2/λ_max(K) for GD (B = n without replacement).
    A one-call form of :meth:`StabilityProblem.eta_star`: to query several B or samplings,
    build the problem once.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, row index ``i*C + c``.
        batch_size: Batch size B, >= 1 (<= n without replacement).
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of model outputs C.
        method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
        tol: Relative Ritz-residual tolerance of the matrix-free solver.
        max_iters: Maximum Lanczos iterations (= operator products).
        rank_tol: Relative cut-off on the eigenvalues of K.
        coords: Precomputed :func:`gram_coordinates` of K (skips the eigendecomposition).

    Returns:
        :class:`EtaStarResult`; non-convergence sets ``converged=False`` and warns
        :class:`~dynstab.errors.ConvergenceWarning`.

    Raises:
        ValueError: On a bad K, sampling name, batch size or method.

    Example:
        >>> J = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
        >>> round(eta_star(J @ J.T / 3, 1).eta_star, 10)  # B = 1, hand-computed instance
        0.4434007919

    References:
        Mulayoff & Michaeli, "Exact mean square linear stability analysis for SGD", COLT 2024,
        Thm 3.
    """
    tol = _check_solver(method, tol, max_iters)
    prob = StabilityProblem.from_gram(K, outputs, rank_tol=rank_tol, coordinates=coords)
    return prob._eta_star(prob.sampling(batch_size, sampling), method, tol, max_iters)


def critical_lr(
    source: Tensor | nn.Module,
    data: Data | Tensor | None = None,
    *,
    batch_size: int,
    sampling: str = "with",
    outputs: int | None = None,
    params: Params | None = None,
    method: str = "auto",
    tol: float = 1e-10,
    max_iters: int = 300,
    rank_tol: float = 1e-10,
    momentum: float = 0.0,
    nesterov: bool = False,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
    **options: Unpack[RouteOptions],
) -> EtaStarResult | SampledEtaStar:
    """Critical learning rate η* of SGD, from a Gram matrix or from a model and its data.

    ``critical_lr(K, batch_size=B)`` is :func:`eta_star` on a Gram matrix K = JJᵀ/n.
    ``critical_lr(model, data, batch_size=B)`` builds a :class:`StabilityProblem` with
    :meth:`StabilityProblem.from_model` (``data``: ``(X, y)``, ``X``, a list of batches or a
    ``DataLoader``; ``route="auto"`` takes the cheaper exact route) and infers C. The threshold
    assumes an interpolating minimum of the ½-square loss (``dynstab.losses.half_mse``); use
    :func:`dynstab.criteria.stability` to check that.

    With a model, ``method="sampled"`` estimates η* by simulating linearised SGD with per-batch
    curvature products at any n (:class:`~dynstab.criteria.sampled.SampledStability`) and
    returns a :class:`~dynstab.criteria.sampled.SampledEtaStar` with its 95% interval;
    ``method="auto"`` does so only when no exact route fits ``max_memory``, or, with
    momentum, when the exact momentum solve is estimated to exceed ``max_time`` seconds and
    the sampled route to be faster (:func:`~dynstab.criteria.sampled.route_time`); its
    ``route_reason`` says so. With K, only the exact solvers apply.

    Args:
        source: Gram matrix ``(nC, nC)`` or an ``nn.Module``.
        data: Inputs ``X``, a pair ``(X, y)`` or an iterable of pairs; required with a model,
            ignored with K.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C (default 1 for K; inferred for a model, where an
            explicit value must agree with the model).
        params: Parameters at which to evaluate (and which to measure), passed to the
            curvature resolver unchanged (``None``: the model's own).
        method: ``"auto"``, ``"exact"``, ``"sampled"`` (a model only), or an exact solver
            ``"dense"``/``"matrix_free"`` as for :func:`eta_star`.
        tol: As for :func:`eta_star`.
        max_iters: As for :func:`eta_star`.
        rank_tol: As for :func:`eta_star`.
        momentum: Heavy-ball momentum β in [0, 1) (PyTorch ``SGD(momentum=β)``, dampening 0):
            the exact mean-square threshold of SGD with momentum, and ``eta_gd`` =
            2(1 + β)/λ_max (:meth:`StabilityProblem.eta_star`). Default 0.
        nesterov: PyTorch's Nesterov form (needs β > 0).
        loss_fn: Batch-mean loss differentiated by the sampled route (default
            :func:`dynstab.losses.half_mse`, the loss the exact route assumes).
        generator: Random source of the sampled route.
        **options: ``route``, ``max_memory``, ``config``, ``max_time``: how the route is
            picked (:class:`RouteOptions`).

    Returns:
        :class:`EtaStarResult` (exact; with the route and the parameters measured) or
        :class:`~dynstab.criteria.sampled.SampledEtaStar` (sampled).

    Raises:
        TypeError: If ``source`` is neither a Tensor nor an ``nn.Module``.
        ValueError: If ``data`` is missing or empty for a model, ``outputs`` contradicts the
            model, the model has train-mode BatchNorm or active Dropout, or as for
            :func:`eta_star`.
        MemoryBudgetError: If no exact route fits ``max_memory``.

    Example:
        >>> K = torch.diag(torch.tensor([1.0, 1.0]))
        >>> critical_lr(K, batch_size=2, sampling="without").eta_star  # GD: 2/λ_max
        2.0
        >>> critical_lr(K, batch_size=2, sampling="without", momentum=0.9).eta_star  # 2(1 + β)
        3.8
    """
    if not isinstance(source, Tensor | nn.Module):
        raise TypeError(
            f"source must be a Gram matrix Tensor or an nn.Module; got {type(source).__name__}."
        )
    check_choice("method", method, _CRITICAL_METHODS)
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    momentum = check_momentum(momentum, nesterov)
    generator = check_generator("generator", generator)
    route, max_memory, config, max_time = route_options("critical_lr", options)
    solver = "auto" if method == "exact" else method
    if isinstance(source, Tensor):
        if method == "sampled":
            raise ValueError(
                "method='sampled' needs a model and its data (it simulates SGD with per-batch "
                "curvature products); got a Gram matrix. Use method='auto' or 'exact' with K."
            )
        check_choice("route", route, ("auto", "gram"))
        prob = StabilityProblem.from_gram(
            source, 1 if outputs is None else outputs, rank_tol=rank_tol, max_memory=max_memory
        )
        s = prob.sampling(batch_size, sampling)
        return prob._eta_star(s, solver, tol, max_iters, momentum, nesterov)
    if data is None:
        raise ValueError(
            "critical_lr(model, data, ...) needs the training inputs; got data=None. "
            "Pass data=(X, y), data=X or a DataLoader."
        )

    def sampled(why: str) -> SampledEtaStar:
        runner = SampledStability(
            source, half_mse if loss_fn is None else loss_fn, data, batch_size=batch_size,
            sampling=sampling, params=params, momentum=momentum, nesterov=nesterov,
            config=config, generator=generator,
        )  # fmt: skip
        return dataclasses.replace(runner.eta_star(), route_reason=why)

    if method == "sampled":
        return sampled("method='sampled' requested")
    try:
        prob = StabilityProblem.from_model(
            source,
            data,
            params=params,
            outputs=outputs,
            route=route,
            rank_tol=rank_tol,
            max_memory=max_memory,
        )
        s = prob.sampling(batch_size, sampling)
        if momentum and method == "auto" and route == "auto":
            plan = time_plan(prob, s, momentum, config, max_time, growth=False)
            if plan.sampled:
                return sampled(plan.reason)
            res = prob._eta_star(s, solver, tol, max_iters, momentum, nesterov)
            return dataclasses.replace(res, route_reason=f"{res.route_reason}; {plan.reason}")
        return prob._eta_star(s, solver, tol, max_iters, momentum, nesterov)
    except MemoryBudgetError as exc:
        if method != "auto" or route != "auto":  # an exact route was asked for explicitly
            raise
        return sampled(memory_fallback_reason(exc))


def time_plan(
    prob: StabilityProblem,
    s: Sampling,
    momentum: float,
    config: SampledConfig | None,
    max_time: float | None,
    *,
    growth: bool,
) -> RouteTime:
    """The time estimate of ``method="auto"`` for a built problem with momentum.

    Computes the row-space coordinates (needed by the exact route anyway) for the rank, then
    :func:`~dynstab.criteria.sampled.route_time`.

    Args:
        prob: The exact problem (from a model).
        s: The sampling rule (B from it).
        momentum: β in [0, 1).
        config: The sampled budget (None: the defaults).
        max_time: Time budget of the exact route in seconds (None: the default 60 s).
        growth: Whether the growth factor at lr is part of the call (``stability``).

    Returns:
        The :class:`~dynstab.criteria.sampled.RouteTime` decision.
    """
    return route_time(
        rank=prob.rank,
        n=prob.n,
        outputs=prob.outputs,
        num_params=prob.num_params or prob.n * prob.outputs,
        batch_size=s.B,
        momentum=momentum,
        config=config,
        max_time=max_time,
        growth=growth,
    )
