"""Per-sample output Jacobians and the Gram (empirical NTK) matrix.

For ``n`` samples and ``C`` outputs per sample, ``J_i = ∂f(x_i; θ)/∂θ ∈ ℝ^{C×p}``. Stacking
them sample-major gives ``J ∈ ℝ^{nC×p}`` (row ``i*C + c``) and the normalised Gram matrix

    K = J Jᵀ / n ∈ ℝ^{nC×nC},

whose non-zero spectrum equals that of the Gauss–Newton matrix ``G = JᵀJ/n`` under ½-MSE
(so ``tr G = tr K``, ``‖G‖_F = ‖K‖_F``, ``λ_max(G) = λ_max(K)``). Jacobians are computed with
``vmap(jacrev)`` over samples (``chunk_size`` samples at a time) through
:func:`torch.func.functional_call`; the model is never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from dynstab._checks import check_int
from dynstab._types import Params
from dynstab.curvature.functional import check_model_mode, resolve_params

__all__ = ["gram_matrix", "per_sample_jacobian"]

#: Above this many Jacobian entries, :func:`gram_matrix` accumulates K tensor by tensor.
MAX_JACOBIAN_ENTRIES = 2**25


def _detached_params(
    model: nn.Module,
    inputs: Tensor,
    params: Params | None,
    chunk_size: int | None,
    allow_stochastic: bool,
    who: str,
) -> Params:
    """Validate the shared arguments of the public functions; return detached parameters."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor; got {type(inputs).__name__}.")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs must have a non-empty leading sample axis; got shape {tuple(inputs.shape)}."
        )
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, minimum=1)
    P = {k: v.detach() for k, v in resolve_params(model, params, who=who).items()}
    check_model_mode(model, allow_stochastic=allow_stochastic)
    return P


def _jacobian_dict(
    model: nn.Module, P: Params, names: list[str], inputs: Tensor, chunk_size: int | None
) -> dict[str, Tensor]:
    """Per-sample Jacobians w.r.t. ``P[name]`` for ``name in names``: ``(n, C, numel)`` each."""
    fixed = {k: v for k, v in P.items() if k not in names}

    def f(sub: Params, x: Tensor) -> Tensor:
        return functional_call(model, {**fixed, **sub}, (x.unsqueeze(0),)).reshape(-1)

    sub = {k: P[k] for k in names}
    jac_fn: Callable[..., dict[str, Tensor]] = vmap(
        jacrev(f), in_dims=(None, 0), chunk_size=chunk_size
    )
    try:
        jac = jac_fn(sub, inputs)
    except RuntimeError as exc:
        raise ValueError(
            f"per-sample Jacobian failed for inputs of shape {tuple(inputs.shape)} and dtype "
            f"{inputs.dtype}: {exc}. Check the input shape/dtype; models must act on a batch "
            "of one sample."
        ) from exc
    n = inputs.shape[0]
    return {k: j.reshape(n, j.shape[1], -1) for k, j in jac.items()}


def per_sample_jacobian(
    model: nn.Module,
    inputs: Tensor,
    params: Params | None = None,
    *,
    chunk_size: int | None = None,
    allow_stochastic: bool = False,
) -> Tensor:
    """Per-sample output Jacobians ``J_i = ∂f(x_i)/∂θ``.

    Args:
        model: The network; outputs ``(n,)`` (``C = 1``) or ``(n, C…)`` (flattened to ``C``).
        inputs: Inputs of shape ``(n, …)``.
        params: Point to evaluate at; ``None`` means the model's current parameters.
        chunk_size: Samples per ``vmap`` chunk (memory control); ``None`` = all at once.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout. Default: ``False``.

    Returns:
        Tensor of shape ``(n, C, p)`` (parameters flattened in ``named_parameters`` order).
        Costs ``C`` backward passes per sample (vectorised).

    Raises:
        TypeError: If ``inputs`` is not a tensor.
        ValueError: On empty inputs, wrong params keys, stochastic layers, or a failing forward.

    Example:
        >>> model = torch.nn.Linear(3, 2, bias=False)
        >>> X = torch.randn(4, 3)
        >>> J = per_sample_jacobian(model, X)
        >>> J.shape, torch.allclose(J[1, 0, :3], X[1])  # ∂f_0/∂W[0] = x
        (torch.Size([4, 2, 6]), True)
    """
    P = _detached_params(model, inputs, params, chunk_size, allow_stochastic, "per_sample_jacobian")
    jac = _jacobian_dict(model, P, list(P), inputs, chunk_size)
    return torch.cat([jac[k] for k in P], dim=2)


def gram_matrix(
    model: nn.Module,
    inputs: Tensor,
    params: Params | None = None,
    *,
    chunk_size: int | None = None,
    allow_stochastic: bool = False,
) -> Tensor:
    """Normalised Gram matrix ``K = J Jᵀ / n`` of the per-sample output Jacobians.

    Rows and columns are ordered sample-major (``i*C + c``). When ``n·C·p`` exceeds
    ``MAX_JACOBIAN_ENTRIES`` the full ``J`` is never held: ``K = Σ_t J_t J_tᵀ / n`` is
    accumulated over the parameter tensors ``t``.

    Args:
        model: The network.
        inputs: Inputs of shape ``(n, …)``.
        params: Point to evaluate at; ``None`` means the model's current parameters.
        chunk_size: Samples per ``vmap`` chunk; ``None`` = all at once.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout. Default: ``False``.

    Returns:
        Symmetric PSD tensor of shape ``(n*C, n*C)`` in the parameters' dtype.

    Raises:
        TypeError: If ``inputs`` is not a tensor.
        ValueError: On empty inputs, wrong params keys, stochastic layers, or a failing forward.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> gram_matrix(model, X).tolist()  # X Xᵀ / n for a linear model
        [[0.5, 0.5], [0.5, 2.5]]
    """
    P = _detached_params(model, inputs, params, chunk_size, allow_stochastic, "gram_matrix")
    n = inputs.shape[0]
    p = sum(t.numel() for t in P.values())
    groups = [list(P)]
    if n * p * 16 > MAX_JACOBIAN_ENTRIES:  # C unknown yet; assume up to 16 outputs
        groups = [[k] for k in P]
    K: Tensor | None = None
    for names in groups:
        jac = _jacobian_dict(model, P, names, inputs, chunk_size)
        for k in names:
            Jt = jac[k].reshape(-1, jac[k].shape[-1])  # (n*C, numel), sample-major
            K = Jt @ Jt.T if K is None else K + Jt @ Jt.T
        del jac
    assert K is not None
    return K / n
