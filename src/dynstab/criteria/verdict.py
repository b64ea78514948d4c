"""Stability verdicts: is a minimum linearly stable for GD and for SGD (mean square) at (η, B)?

:func:`check_stability` is the one-call verdict on a Gram matrix K = JJᵀ/n (and optional
residuals); :func:`stability` builds the problem from a model and its data (a pair, a list of
batches or a ``DataLoader``) with :meth:`StabilityProblem.from_model` — along the cheaper exact
route, within a memory budget — and calls :meth:`StabilityProblem.check`. All thresholds assume
an interpolating minimum of the ½-square loss (``dynstab.losses.half_mse``, H = G = JᵀJ/n); away
from interpolation H ≠ G and a :class:`~dynstab.errors.NotInterpolatingWarning` is emitted.

Every η-threshold row reports a *margin* lr/threshold (= η·quantity/2 for the 2/η forms):
≤ 1 passes. GD is stable iff margin_gd ≤ 1; SGD is mean-square stable iff lr ≤ η* (margin
η·λ_max(C†D)/2 ≤ 1). The other rows are necessary conditions (a margin > 1 proves
instability) and Wu, Ma & E (2018)'s sufficient condition (a margin ≤ 1 proves stability).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from dynstab._checks import check_generator, check_lr
from dynstab._types import Data, LossFn, Params
from dynstab.criteria.problem import INTERPOLATION_TOL, StabilityProblem
from dynstab.criteria.results import BoundRow, StabilityReport
from dynstab.curvature import GaussNewtonOperator, HessianOperator
from dynstab.curvature.functional import prepare_data
from dynstab.linalg import LinearOperator, lanczos_top_eigenpairs
from dynstab.losses import half_mse

__all__ = ["BoundRow", "StabilityReport", "check_stability", "stability"]


def check_stability(
    K: Tensor,
    residuals: Tensor | None = None,
    *,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    outputs: int = 1,
    method: str = "auto",
    rank_one: bool = True,
    growth: bool = True,
    interpolation_tol: float = INTERPOLATION_TOL,
    train_loss: float | None = None,
    generator: torch.Generator | None = None,
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
        method: η* solver, as for :func:`~dynstab.criteria.eta_star`.
        rank_one: Whether to run the rank-one ascent (Mulayoff & Michaeli 2024, eq. 24).
        growth: Whether to compute ρ(Q) at lr (one more eigenproblem of η*'s size).
        interpolation_tol: Largest max|residual| still called interpolating.
        train_loss: The caller's training loss, reported as is.
        generator: Random source of the rank-one restarts.

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
    generator = check_generator("generator", generator)
    prob = StabilityProblem.from_gram(K, outputs, residuals=residuals)
    return prob.check(
        lr,
        prob.sampling(batch_size, sampling),
        method=method,
        rank_one=rank_one,
        growth=growth,
        interpolation_tol=interpolation_tol,
        train_loss=train_loss,
        generator=generator,
    )


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
    route: str = "auto",
    max_memory: float | None = None,
) -> StabilityReport:
    """Verdict on GD and SGD (mean-square) linear stability of ``model`` at lr and batch size.

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
        loss_fn: ``loss_fn(outputs, targets)``, mean over samples; reported as train loss.
        data: ``(X, y)`` or an iterable of such batches (a list, a ``DataLoader``; read once).
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        params: Parameters to evaluate at / measure, passed to the curvature resolver
            unchanged (``None``: the model's own).
        method: η* solver, as for :func:`~dynstab.criteria.eta_star`.
        rank_one: Whether to run the rank-one ascent.
        growth: Whether to compute ρ(Q) at lr.
        interpolation_tol: Largest max|residual| still called interpolating.
        residual_term: When the point is not interpolating, estimate ‖H − G‖₂ (½-square
            loss) by Lanczos on Hessian minus Gauss–Newton products (≤ 80 of each).
        generator: Random source of the rank-one restarts and the Lanczos start.
        route: ``"auto"``, ``"gram"`` or ``"parameter"`` (see :class:`StabilityProblem`).
        max_memory: Memory budget in bytes (None: half the available memory).

    Returns:
        :class:`StabilityReport`.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``, ``data`` is not a pair or an
            iterable of pairs, lr is not a real number or ``generator`` not a Generator.
        ValueError: If the model has train-mode BatchNorm or active Dropout, ``data`` is
            empty or its inputs and targets disagree, ``params`` does not match the model,
            outputs and targets differ in size, or as for :func:`check_stability`.
        MemoryBudgetError: If no exact route fits ``max_memory`` (the message names the
            alternatives).
    """
    lr = check_lr(lr)
    generator = check_generator("generator", generator)
    ds = prepare_data(data)
    prob = StabilityProblem.from_model(
        model, ds, params=params, loss_fn=loss_fn, route=route, max_memory=max_memory
    )
    report = prob.check(
        lr,
        prob.sampling(batch_size, sampling),
        method=method,
        rank_one=rank_one,
        growth=growth,
        interpolation_tol=interpolation_tol,
        generator=generator,
    )
    if residual_term and report.interpolating is False:
        report = dataclasses.replace(
            report,
            residual_term=_residual_term(model, (ds.inputs(), ds.targets()), params, generator),
        )
    return report


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
