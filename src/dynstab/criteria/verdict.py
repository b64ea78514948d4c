"""Stability verdicts: is a minimum linearly stable for GD and for SGD (mean square) at (η, B)?

:func:`check_stability` is the one-call verdict on a Gram matrix K = JJᵀ/n (and optional
residuals); :func:`stability` builds the problem from a model and its data (a pair, a list of
batches or a ``DataLoader``) with :meth:`StabilityProblem.from_model` — along the cheaper exact
route, within a memory budget — and calls :meth:`StabilityProblem.check`; with
``method="sampled"`` (or ``"auto"`` when no exact route fits the budget, or, with momentum,
when the exact momentum criteria are estimated to exceed ``max_time``) it runs the sampled
route of :mod:`dynstab.criteria.sampled` instead, at any n. All thresholds assume
an interpolating minimum of the ½-square loss (``dynstab.losses.half_mse``, H = G = JᵀJ/n); away
from interpolation H ≠ G and a :class:`~dynstab.errors.NotInterpolatingWarning` is emitted.

Every η-threshold row reports a *margin* lr/threshold (= η·quantity/2 for the 2/η forms):
≤ 1 passes. GD is stable iff margin_gd ≤ 1; SGD is mean-square stable iff lr ≤ η* (margin
η·λ_max(C†D)/2 ≤ 1). The other rows are necessary conditions (a margin > 1 proves
instability) and Wu, Ma & E (2018)'s sufficient condition (a margin ≤ 1 proves stability).
"""

from __future__ import annotations

import dataclasses
from typing import Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_generator, check_lr, check_options
from dynstab._types import Data, LossFn, Params
from dynstab.criteria.momentum import check_momentum
from dynstab.criteria.problem import (
    INTERPOLATION_TOL,
    CheckOptions,
    RouteOptions,
    StabilityProblem,
    memory_fallback_reason,
    route_options,
    time_plan,
)
from dynstab.criteria.results import BoundRow, StabilityReport
from dynstab.criteria.sampled import (
    SampledConfig,
    SampledStability,
    SampledStabilityReport,
)
from dynstab.curvature import GaussNewtonOperator, HessianOperator
from dynstab.curvature.functional import prepare_data
from dynstab.errors import MemoryBudgetError
from dynstab.linalg import LinearOperator, lanczos_top_eigenpairs
from dynstab.losses import half_mse

__all__ = ["STABILITY_METHODS", "BoundRow", "StabilityReport", "check_stability", "stability"]

#: ``method=`` values of :func:`stability`: the route (``"auto"``, ``"exact"``, ``"sampled"``)
#: or, for the exact route, its η* solver (``"dense"``, ``"matrix_free"``).
STABILITY_METHODS = ("auto", "exact", "sampled", "dense", "matrix_free")


def check_stability(
    K: Tensor,
    residuals: Tensor | None = None,
    *,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    outputs: int = 1,
    **options: Unpack[CheckOptions],
) -> StabilityReport:
    """Verdict on GD and SGD stability at lr from the Gram matrix K = JJᵀ/n (pure numerics).

    Computes λ_max, Tr, ‖·‖_F of H (= those of K), the exact η*, every necessary bound of
    :mod:`dynstab.criteria.bounds` and the alignment bound, Wu, Ma & E (2018)'s sufficient
    learning rate, ρ(Q) at lr, and the alignment factors — K validated and decomposed once
    (:meth:`StabilityProblem.check`). Assumes the ½-square loss at an interpolating minimum
    (H = G); when the residuals say otherwise it warns
    :class:`~dynstab.errors.NotInterpolatingWarning` and says so in ``notes``.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, sample-major.
        residuals: f(x_i) − y_i, shape ``(nC,)`` or ``(n, C)`` (Tensor or NumPy array); None
            skips the interpolation check and μ(θ).
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        **options: ``method``, ``rank_one``, ``growth``, ``interpolation_tol``, ``train_loss``,
            ``generator`` (:class:`~dynstab.criteria.CheckOptions`).

    Returns:
        :class:`StabilityReport`.

    Raises:
        ValueError: On bad K (empty, non-finite, not symmetric PSD), residuals of the wrong
            size or non-finite, lr, batch size or sampling.
        TypeError: If lr is not a real number, batch_size not an int or generator not a
            ``torch.Generator``.

    Example:
        >>> rep = check_stability(torch.eye(4), lr=0.4, batch_size=1)
        >>> rep.stable_gd, rep.stable_sgd, rep.eta_star  # η* = 2/Tr for orthogonal samples
        (True, True, 0.5)
    """
    lr = check_lr(lr)
    check_options("check_stability", options, CheckOptions)
    check_generator("generator", options.get("generator"))
    prob = StabilityProblem.from_gram(K, outputs, residuals=residuals)
    return prob.check(lr, prob.sampling(batch_size, sampling), **options)


def stability(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    params: Params | None = None,
    method: str = "auto",
    rank_one: bool = True,
    growth: bool = True,
    interpolation_tol: float = INTERPOLATION_TOL,
    residual_term: bool = True,
    generator: torch.Generator | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    **options: Unpack[RouteOptions],
) -> StabilityReport | SampledStabilityReport:
    """Verdict on GD and SGD (mean-square) linear stability of ``model`` at lr and batch size.

    **Routes.** ``method="exact"`` (or its solvers ``"dense"``/``"matrix_free"``) takes an
    exact route below and returns a :class:`StabilityReport`; ``method="sampled"`` simulates
    the linearised SGD dynamics with per-batch curvature products
    (:class:`~dynstab.criteria.sampled.SampledStability`: η̂* with its 95% interval, the
    growth ρ̂(lr) with its interval, a verdict "stable"/"unstable"/"undecided at this budget",
    certified λ_max and Hutchinson Tr H, ‖H‖_F with the trace and Frobenius bounds; memory
    O(p·m), any n) and returns a :class:`~dynstab.criteria.sampled.SampledStabilityReport`;
    ``method="auto"`` (default) takes the exact route when it fits ``max_memory`` and the
    sampled route otherwise (with ``route="auto"``; an explicitly requested exact route is never
    replaced), and also when, with momentum, the exact momentum criteria are estimated to take
    longer than ``max_time`` seconds and the sampled route less
    (:func:`~dynstab.criteria.sampled.route_time`) — the report's ``route_reason`` says which
    ran and why.

    Builds a :class:`StabilityProblem` with :meth:`StabilityProblem.from_model` — the
    per-sample Jacobians (parameter route) or K = JJᵀ/n (Gram route), whichever is cheaper and
    fits ``max_memory``, in float64 afterwards (use a float64 model for trustworthy verdicts) —
    and the residuals f(x_i) − y_i, then calls :meth:`StabilityProblem.check`. Train-mode
    BatchNorm and active Dropout are refused before any forward pass (call ``model.eval()``
    first); outputs are computed by :func:`torch.func.functional_call`, so the model's buffers,
    mode and ``.grad`` are left unchanged. The thresholds assume ``loss_fn`` is the ½-square
    loss (:func:`dynstab.losses.half_mse`); a different scaling is noted in the report. The
    report lists the parameters measured (as the curvature resolver selects them from
    ``params``) and the route taken.

    Args:
        model: The network, at (or near) an interpolating minimum.
        loss_fn: ``loss_fn(outputs, targets)``, mean over samples; reported as train loss
            (exact route) or differentiated per batch (sampled route).
        data: ``(X, y)`` or an iterable of such batches (a list, a ``DataLoader``; read once).
            The sampled route draws batches by sample index: tensors ``(X, y)``, a map-style
            ``Dataset`` or a ``DataLoader`` over one.
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        params: Parameters to evaluate at / measure, passed to the curvature resolver
            unchanged (``None``: the model's own).
        method: ``"auto"``, ``"exact"``, ``"sampled"``, or an exact η* solver (``"dense"``,
            ``"matrix_free"``, as for :func:`~dynstab.criteria.eta_star`).
        rank_one: Whether to run the rank-one ascent.
        growth: Whether to compute ρ(Q) at lr.
        interpolation_tol: Largest max|residual| still called interpolating.
        residual_term: When the point is not interpolating, estimate ‖H − G‖₂ (½-square
            loss) by Lanczos on Hessian minus Gauss–Newton products (≤ 80 of each).
        generator: Random source of the rank-one restarts and the Lanczos start.
        momentum: Heavy-ball momentum β in [0, 1) of ``torch.optim.SGD(momentum=β)``
            (dampening 0): the verdict is then for SGD with momentum, ``eta_gd`` is
            2(1 + β)/λ_max ((2 + 2β)/((1 + 2β)λ_max) with Nesterov). Default 0.
        nesterov: PyTorch's Nesterov form (needs β > 0).
        **options: ``route``, ``max_memory``, ``config``, ``max_time``: how the route is
            picked (:class:`~dynstab.criteria.RouteOptions`).

    Returns:
        :class:`StabilityReport` (exact route) or
        :class:`~dynstab.criteria.sampled.SampledStabilityReport` (sampled route).

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``, ``data`` is not a pair or an
            iterable of pairs, lr is not a real number or ``generator`` not a Generator.
        ValueError: If the model has train-mode BatchNorm or active Dropout, ``data`` is
            empty or its inputs and targets disagree, ``params`` does not match the model,
            outputs and targets differ in size, or as for :func:`check_stability`.
        MemoryBudgetError: If ``method="exact"`` and no exact route fits ``max_memory`` (the
            message names the alternatives).

    Example:
        >>> from dynstab.losses import half_mse
        >>> X = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> y = model(X).detach()  # H = mean x² = 2.5: GD with β = 0.5 is stable iff η ≤ 1.2
        >>> stability(model, half_mse, (X, y), lr=1.0, batch_size=2, sampling="without",
        ...           momentum=0.5).eta_gd
        1.2
    """
    lr = check_lr(lr)
    generator = check_generator("generator", generator)
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a str, one of {list(STABILITY_METHODS)}; got {type(method).__name__}."
        )
    check_choice("method", method, STABILITY_METHODS)
    momentum = check_momentum(momentum, nesterov)
    route, max_memory, config, max_time = route_options("stability", options)
    if method == "sampled":
        return _sampled(
            model, loss_fn, data, lr, batch_size, sampling, params, momentum, nesterov, config,
            generator, "method='sampled' requested",
        )  # fmt: skip
    solver = "auto" if method == "exact" else method
    try:
        ds = prepare_data(data)
        prob = StabilityProblem.from_model(
            model, ds, params=params, loss_fn=loss_fn, route=route, max_memory=max_memory
        )
        s = prob.sampling(batch_size, sampling)
        plan = None
        if momentum and method == "auto" and route == "auto":
            plan = time_plan(prob, s, momentum, config, max_time, growth=growth)
            if plan.sampled:
                return _sampled(
                    model, loss_fn, data, lr, batch_size, sampling, params, momentum, nesterov,
                    config, generator, plan.reason,
                )  # fmt: skip
        report = prob.check(
            lr,
            s,
            method=solver,
            rank_one=rank_one,
            growth=growth,
            interpolation_tol=interpolation_tol,
            generator=generator,
            momentum=momentum,
            nesterov=nesterov,
        )
    except MemoryBudgetError as exc:
        if method != "auto" or route != "auto":  # an exact route was asked for explicitly
            raise
        why = memory_fallback_reason(exc)
        return _sampled(
            model, loss_fn, data, lr, batch_size, sampling, params, momentum, nesterov, config,
            generator, why,
        )  # fmt: skip
    if method == "auto":
        why = f"; {plan.reason}" if plan is not None else ""
        report = dataclasses.replace(
            report,
            route_reason=f"{report.route_reason}; method='auto': an exact route fits the "
            f"memory budget, so the sampled route was not needed{why}",
        )
    if residual_term and report.interpolating is False:
        report = dataclasses.replace(
            report,
            residual_term=_residual_term(model, (ds.inputs(), ds.targets()), params, generator),
        )
    return report


def _sampled(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    lr: float,
    batch_size: int,
    sampling: str,
    params: Params | None,
    momentum: float,
    nesterov: bool,
    config: SampledConfig | None,
    generator: torch.Generator | None,
    why: str,
) -> SampledStabilityReport:
    """The sampled route's report at lr, with the reason it ran."""
    runner = SampledStability(
        model, loss_fn, data, batch_size=batch_size, sampling=sampling, params=params,
        momentum=momentum, nesterov=nesterov, config=config, generator=generator,
    )  # fmt: skip
    return dataclasses.replace(runner.report(lr), route_reason=why)


def _residual_term(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    params: Params | None,
    generator: torch.Generator | None,
) -> float:
    """‖H − G‖₂ of the ½-square loss by Lanczos at both ends of the spectrum of H − G."""
    H = HessianOperator(model, half_mse, data, params)
    G = GaussNewtonOperator(model, half_mse, data, params)

    class _Difference(LinearOperator):
        def _matmat(self, V: Tensor) -> Tensor:
            return H @ V - G @ V

    op = _Difference(H.shape[0], H.dtype, H.device)
    size = H.shape[0]
    res = lanczos_top_eigenpairs(
        op,
        1,
        which="both",
        tol=1e-6,
        max_iters=min(size, 80),
        generator=generator,
        return_vectors=False,
    )
    return float(res.values.abs().max())
