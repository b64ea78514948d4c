"""Closed-form gradients of the ½-MSE for the paper models, batched over many runs at once.

A model that can write its gradient by hand implements :class:`ClosedFormModel`:

    ``model.closed_form_grad(params, X, y) -> (grads, losses)``
    ``model.closed_form_loss(params, X, y) -> losses``

for R stacked runs. ``params`` maps every parameter name of the model to a tensor of shape
``(R, *shape)`` (run ``r``'s parameters in row ``r``); ``X`` holds one batch per run, shape
``(R, B, *in)`` (full-batch GD passes ``X.expand(R, *X.shape)``, a view); ``y`` is
``(R, B)`` or ``(R, B, C)``. The result holds, for each run, the gradient of the batch loss

    L_r = (1/B) Σ_b ½ ‖f(x_b; θ_r) − y_b‖²      (:func:`dynstab.losses.half_mse`)

with the shapes of ``params``, and the batch losses ``L_r`` of shape ``(R,)``
(``closed_form_loss``: the losses alone, from the forward pass only). Sub-gradients
at kinks follow autograd (ReLU'(0) = 0), so the result equals ``torch.autograd`` to round-off;
the tests check 1e-12 in float64. The training engine (:mod:`dynstab.training.engine`) uses
these methods for its closed-form stepper: a handful of batched kernels per step instead of an
autograd graph.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dynstab._types import Params

__all__ = ["ClosedFormModel"]


@runtime_checkable
class ClosedFormModel(Protocol):
    """A model with a hand-written gradient of the ½-MSE, batched over runs (module docstring)."""

    def closed_form_grad(self, params: Params, X: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """Return the per-run gradients (shapes of ``params``) and batch losses ``(R,)``."""
        ...

    def closed_form_loss(self, params: Params, X: Tensor, y: Tensor) -> Tensor:
        """Return the per-run batch losses ``(R,)`` (forward pass only)."""
        ...


# The helpers below are shared by the model files (internal; not part of the public API).


def batched_inputs(X: Tensor, runs: int, features: int) -> Tensor:
    """Return the per-run batches ``X`` of shape ``(R, B, *in)`` as ``(R, B, features)``.

    Raises:
        ValueError: If ``X`` does not hold ``R`` batches of inputs with ``features`` entries.
    """
    if X.ndim < 2 or X.shape[0] != runs or X.numel() != runs * X.shape[1] * features:
        raise ValueError(
            f"closed_form_grad expects one batch per run, inputs of shape (R, B, ...) with R = "
            f"{runs} and {features} features per sample; got {tuple(X.shape)}. For full-batch GD "
            "pass X.expand(R, *X.shape)."
        )
    return X.reshape(runs, X.shape[1], features)


def linear_apply(X: Tensor, W: Tensor) -> Tensor:
    """Return the per-run products W_r X_rᵀ, shape ``(R, K, B)`` (features first).

    ``X`` is ``(R, B, F)``, ``W`` is ``(R, K, F)`` (weights laid out as in ``nn.Linear``). When
    every run sees the same inputs (``X`` an expanded view, stride 0 along runs, as for
    full-batch GD) this is one ``(R·K) × F`` by ``F × B`` matrix product instead of R batched
    ones (CPU ``bmm`` is several times slower for these shapes).
    """
    R, K, F = W.shape
    if X.stride(0) == 0 or R == 1:
        return (W.reshape(R * K, F) @ X[0].T).reshape(R, K, -1)
    # CPU bmm is fast for (row block) × (matrix), several times slower for (matrix) × (column):
    # put the smaller of K and B first.
    if X.shape[1] >= K:
        return torch.bmm(W, X.transpose(1, 2))
    return torch.bmm(X, W.transpose(1, 2)).transpose(1, 2)


def linear_grad(delta: Tensor, X: Tensor) -> Tensor:
    """Return the per-run products δ_r X_r, shape ``(R, K, F)``.

    The weight gradients of :func:`linear_apply` for output gradients ``delta`` ``(R, K, B)``
    and inputs ``X`` ``(R, B, F)`` (shared inputs: one matrix product).
    """
    R, K, B = delta.shape
    if X.stride(0) == 0 or R == 1:
        return (delta.reshape(R * K, B) @ X[0]).reshape(R, K, -1)
    if B == 1:
        return delta * X  # outer products, (R, K, 1) · (R, 1, F): 3× faster than bmm
    return torch.bmm(delta, X)


def relu_backward(grad: Tensor, z: Tensor) -> Tensor:
    """Return ``grad`` where z > 0 and 0 elsewhere: the ReLU backward of autograd itself.

    ``torch.ops.aten.threshold_backward`` is the kernel autograd runs for ``relu`` (so
    ReLU'(0) = 0 exactly as in autograd); one fused pass, without the boolean mask and the
    mixed-dtype product of ``grad * (z > 0)``, which cost 10–40× more on CPU.
    """
    return torch.ops.aten.threshold_backward(grad, z, 0.0)


def half_mse_residual(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Return the residual r = out − y (shape of ``out``: ``(R, B, C)``) and L_r ``(R,)``.

    ``y`` holds the runs' targets, ``(R, B)`` or ``(R, B, C)``; L_r = (1/B) Σ_b ½‖r_{r,b}‖².
    """
    R, B, C = out.shape
    r = out - y.reshape(R, B, C).to(out.dtype)
    loss = (r * r).sum(dim=(1, 2)) * (0.5 / B)
    return r, loss


def check_params(params: Params, names: tuple[str, ...]) -> int:
    """Validate the parameter names and return the number of runs R (their leading size)."""
    if set(params) != set(names):
        raise ValueError(
            f"closed_form_grad needs exactly the parameters {list(names)}; got {sorted(params)}. "
            "Pass the model's named parameters stacked along a leading run dimension."
        )
    return int(next(iter(params.values())).shape[0])
