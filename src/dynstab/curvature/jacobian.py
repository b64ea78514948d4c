"""Per-sample output Jacobians and the Gram (empirical NTK) matrix, built batch by batch.

For ``n`` samples and ``C`` outputs per sample, ``J_i = ∂f(x_i; θ)/∂θ ∈ ℝ^{C×p}`` (θ the
selected parameters, default those with ``requires_grad=True``). Stacking them sample-major
gives ``J ∈ ℝ^{nC×p}`` (row ``i*C + c``) and the normalised Gram matrix

    K = J Jᵀ / n ∈ ℝ^{nC×nC},

whose non-zero spectrum equals that of the Gauss–Newton matrix ``G = JᵀJ/n`` under ½-MSE
(so ``tr G = tr K``, ``‖G‖_F = ‖K‖_F``, ``λ_max(G) = λ_max(K)``). Jacobians are computed with
``vmap(jacrev)`` over the samples of each batch (``chunk_size`` samples at a time) through
:func:`torch.func.functional_call`; the data are streamed batch by batch and the model is never
modified. :func:`gram_matrix` never holds more than ``MAX_JACOBIAN_ENTRIES`` Jacobian entries
at once (beyond one parameter tensor's columns): it accumulates ``K = Σ_g J_g J_gᵀ / n`` over
groups ``g`` of parameter tensors, one pass over the data per group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Unpack, cast

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from dynstab._checks import check_int
from dynstab._types import Data, Inputs, Params, ParamSpec
from dynstab.curvature.data import input_tensors, map_inputs
from dynstab.curvature.functional import describe_inputs
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import (
    CurvatureProblem,
    DataOptions,
    Progress,
    ProgressFn,
    check_options,
)

__all__ = ["JacobianOptions", "gram_matrix", "per_sample_jacobian"]


class JacobianOptions(DataOptions, total=False):
    """Keywords of :func:`per_sample_jacobian` and :func:`gram_matrix`: DataOptions and two more.

    Attributes:
        chunk_size: Samples per ``vmap`` chunk (memory control), >= 1; ``None`` (default) = a
            batch at once.
        callback: Receives a :class:`~dynstab.curvature.Progress` record per batch (and, in
            :func:`gram_matrix`, per group of parameter tensors). Default: ``None``.
    """

    chunk_size: int | None
    callback: ProgressFn | None


#: Largest number of Jacobian entries :func:`gram_matrix` holds at once (see the module doc).
MAX_JACOBIAN_ENTRIES = 2**25


def jacobian_problem(
    model: nn.Module,
    inputs: Tensor | Data | object,
    params: ParamSpec,
    *,
    who: str,
    **options: Unpack[JacobianOptions],
) -> CurvatureProblem:
    """Validate the shared arguments of the Jacobian routines; return a scanned problem."""
    check_options(who, options, JacobianOptions)
    chunk_size = options.pop("chunk_size", None)
    options.pop("callback", None)
    if isinstance(inputs, Tensor) and (inputs.ndim == 0 or inputs.shape[0] == 0):
        raise ValueError(
            f"inputs must have a non-empty leading sample axis; got shape {tuple(inputs.shape)}."
        )
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, minimum=1)
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
                raise ValueError(
                    f"{who}: submodule {name or type(m).__name__!r} is BatchNorm in train mode, so "
                    "a sample's output depends on the whole batch and per-sample Jacobians are "
                    "not defined. Call model.eval() first (allow_stochastic does not apply here)."
                )
    try:
        data_options = cast(DataOptions, options)  # chunk_size and callback popped above
        problem = CurvatureProblem(model, None, inputs, params, who=who, **data_options)
        problem.scan()
    except ValueError as exc:
        if str(exc).startswith("model(inputs) failed"):
            raise ValueError(f"per-sample Jacobian failed: {exc}") from exc
        raise
    except TypeError as exc:
        if isinstance(model, nn.Module) and "loss_fn" not in str(exc):
            raise TypeError(
                f"{who}: inputs must be a Tensor (n, …), one batch or an iterable of batches (e.g. "
                f"a DataLoader); {exc}"
            ) from None
        raise
    return problem


def batch_jacobian(
    problem: CurvatureProblem, inputs: Inputs, names: list[str], chunk_size: int | None
) -> dict[str, Tensor]:
    """Per-sample Jacobians of one batch w.r.t. ``names``: ``{name: (n_b, C, numel)}``.

    Use inside :meth:`CurvatureProblem.evaluation`.

    Raises:
        ValueError: If the model cannot be evaluated per sample (explained).
    """
    point = problem.point
    others = {k: v for k, v in point.items() if k not in names}

    def f(sub: Params, x: Inputs) -> Tensor:
        one = map_inputs(x, lambda t: t.unsqueeze(0))
        return problem.outputs({**others, **sub}, one, explain=False).reshape(-1)

    sub = {k: point[k] for k in names}
    randomness = "different" if problem.allow_stochastic else "error"
    jac_fn: Callable[..., dict[str, Tensor]] = vmap(
        jacrev(f), in_dims=(None, 0), chunk_size=chunk_size, randomness=randomness
    )
    try:
        jac = jac_fn(sub, inputs)
    except RuntimeError as exc:
        raise ValueError(
            f"per-sample Jacobian failed for inputs of {describe_inputs(inputs)}: {exc}. Check "
            "the input shape/dtype; models must act on a batch of one sample."
        ) from exc
    n_b = int(input_tensors(inputs)[0].shape[0])
    return {k: j.reshape(n_b, j.shape[1], -1) for k, j in jac.items()}


def _groups(selection: ParameterSelection, rows: int, budget: int) -> list[list[str]]:
    """Consecutive tensors whose Jacobian columns fit ``budget`` entries (>= 1 tensor each)."""
    groups: list[list[str]] = []
    size = 0
    for name, numel in zip(selection.names, selection.numels):
        if groups and (size + numel) * rows <= budget:
            groups[-1].append(name)
            size += numel
        else:
            groups.append([name])
            size = numel
    return groups


def problem_jacobian(
    problem: CurvatureProblem,
    names: list[str] | None = None,
    *,
    chunk_size: int | None = None,
    callback: ProgressFn | None = None,
    step: int = 0,
    total: int | None = None,
) -> Tensor:
    """Stacked Jacobian ``(n*C, Σ numel)`` of the problem w.r.t. ``names`` (default: all).

    Streams the batches; ``callback`` gets a ``"jacobian"`` record per batch.
    """
    names = list(problem.selection.names) if names is None else names
    numel = sum(dict(zip(problem.selection.names, problem.selection.numels))[k] for k in names)
    C, n = problem.outputs_per_sample, problem.n
    J = torch.empty(n * C, numel, dtype=problem.dtype, device=problem.device)
    row = 0
    with problem.evaluation():
        for b, inputs, _, _ in problem.batches():
            jac = batch_jacobian(problem, inputs, names, chunk_size)
            block = torch.cat([jac[k] for k in names], dim=2)
            J[row : row + block.shape[0] * C] = block.reshape(-1, numel)
            row += block.shape[0] * C
            del jac, block
            if callback is not None:
                callback(Progress("jacobian", "step", step + b + 1, total))
    return J


def problem_gram(
    problem: CurvatureProblem,
    *,
    chunk_size: int | None = None,
    callback: ProgressFn | None = None,
) -> Tensor:
    """``K = JJᵀ/n`` of the problem, accumulated over groups of parameter tensors."""
    C, n = problem.outputs_per_sample, problem.n
    groups = _groups(problem.selection, n * C, MAX_JACOBIAN_ENTRIES)
    total = len(groups) * problem.data.num_batches
    K = torch.zeros(n * C, n * C, dtype=problem.dtype, device=problem.device)
    for g, names in enumerate(groups):
        Jg = problem_jacobian(problem, names, chunk_size=chunk_size, callback=callback,
                              step=g * problem.data.num_batches, total=total)  # fmt: skip
        K.addmm_(Jg, Jg.T)
        del Jg
    return K / n


def jacobian_transpose(problem: CurvatureProblem, U: Tensor) -> Tensor:
    """``Jᵀ U`` for ``U`` of shape ``(n*C, k)`` (rows sample-major): ``(p, k)``.

    One vectorised vector-Jacobian product per batch (``is_grads_batched``; a loop over the
    ``k`` columns where the model's backward cannot be vectorised).
    """
    C = problem.outputs_per_sample
    k = U.shape[1]
    out = torch.zeros(problem.selection.numel, k, dtype=problem.dtype, device=problem.device)
    leaves = problem.leaves()
    row = 0
    with problem.evaluation():
        for _, inputs, _, _ in problem.batches():
            F = problem.outputs(leaves, inputs)
            rows = F.shape[0] * C
            Ub = U[row : row + rows].T.reshape(k, *F.shape).to(F.dtype)
            row += rows
            sel, L = problem.selection, list(leaves.values())
            try:
                grads = torch.autograd.grad(F, L, grad_outputs=Ub, allow_unused=True,
                                            is_grads_batched=True, retain_graph=True)  # fmt: skip
                out += sel.columns(grads, k, out)
            except (RuntimeError, NotImplementedError):  # no batching rule: one VJP per column
                for j in range(k):
                    g = torch.autograd.grad(F, L, grad_outputs=Ub[j], allow_unused=True,
                                            retain_graph=True)  # fmt: skip
                    out[:, j : j + 1] += sel.columns(g, None, out)
    return out


def per_sample_jacobian(
    model: nn.Module,
    inputs: Tensor | Data | object,
    params: ParamSpec = None,
    **options: Unpack[JacobianOptions],
) -> Tensor:
    """Per-sample output Jacobians ``J_i = ∂f(x_i)/∂θ``.

    Args:
        model: The network; outputs ``(n,)`` (``C = 1``) or ``(n, C…)`` (flattened to ``C``).
        inputs: Inputs ``(n, …)``, or data: one batch or an iterable of batches (a
            ``DataLoader``; targets are ignored), streamed batch by batch.
        params: Parameter selection (default: the parameters with ``requires_grad=True``;
            see :mod:`dynstab.curvature.params`).
        **options: ``chunk_size`` (samples per ``vmap`` chunk), ``callback`` (a
            :class:`~dynstab.curvature.Progress` record per batch) and the
            :class:`~dynstab.curvature.DataOptions` (:class:`JacobianOptions`).

    Returns:
        Tensor of shape ``(n, C, p)`` (selected parameters flattened in ``named_parameters``
        order). Costs ``C`` backward passes per sample (vectorised).

    Raises:
        TypeError: If ``inputs`` is neither a tensor nor data.
        ValueError: On empty inputs, a bad selection, stochastic layers, or a failing forward.

    Example:
        >>> model = torch.nn.Linear(3, 2, bias=False)
        >>> X = torch.randn(4, 3)
        >>> J = per_sample_jacobian(model, X)
        >>> J.shape, torch.allclose(J[1, 0, :3], X[1])  # ∂f_0/∂W[0] = x
        (torch.Size([4, 2, 6]), True)
    """
    problem = jacobian_problem(model, inputs, params, who="per_sample_jacobian", **options)
    J = problem_jacobian(
        problem,
        chunk_size=options.get("chunk_size"),
        callback=options.get("callback"),
        total=problem.data.num_batches,
    )
    return J.reshape(problem.n, problem.outputs_per_sample, -1)


def gram_matrix(
    model: nn.Module,
    inputs: Tensor | Data | object,
    params: ParamSpec = None,
    **options: Unpack[JacobianOptions],
) -> Tensor:
    """Normalised Gram matrix ``K = J Jᵀ / n`` of the per-sample output Jacobians.

    Rows and columns are ordered sample-major (``i*C + c``). The Jacobian is built batch by
    batch and at most ``MAX_JACOBIAN_ENTRIES`` of its entries (or one parameter tensor's
    columns) are held at once: ``K = Σ_g J_g J_gᵀ / n`` over groups ``g`` of parameter tensors.

    Args:
        model: The network.
        inputs: Inputs ``(n, …)``, or data: one batch or an iterable of batches (targets are
            ignored), streamed.
        params: Parameter selection (default: the parameters with ``requires_grad=True``).
        **options: As for :func:`per_sample_jacobian` (:class:`JacobianOptions`); ``callback``
            receives a record per batch and group of parameter tensors.

    Returns:
        Symmetric PSD tensor of shape ``(n*C, n*C)`` in the parameters' dtype.

    Raises:
        TypeError: If ``inputs`` is neither a tensor nor data.
        ValueError: On empty inputs, a bad selection, stochastic layers, or a failing forward.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> gram_matrix(model, X).tolist()  # X Xᵀ / n for a linear model
        [[0.5, 0.5], [0.5, 2.5]]

    References:
        Jacot, Gabriel & Hongler (2018), "Neural tangent kernel", NeurIPS (K as the empirical
        NTK); Wu & Su (2023), ICML, and Mulayoff & Michaeli (2024), COLT (K carries the exact
        SGD stability threshold at an interpolating minimum).
    """
    problem = jacobian_problem(model, inputs, params, who="gram_matrix", **options)
    return problem_gram(
        problem, chunk_size=options.get("chunk_size"), callback=options.get("callback")
    )
