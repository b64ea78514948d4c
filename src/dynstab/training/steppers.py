"""Steppers: how the training engine gets the gradients of R runs at once.

A :class:`Stepper` answers two questions about a stack of R runs whose parameters are stacked
along a leading run dimension (``params[name]`` of shape ``(R, *shape)``):

* :meth:`Stepper.gradients` — the gradient of each run's batch-mean loss on its own batch
  (a :data:`Batch`: inputs ``(R, B, *in)``, targets ``(R, B, *out)``), or on the stepper's
  training set ``(X, y)`` when the batch is None (full-batch GD), and the batch losses ``(R,)``;
* :meth:`Stepper.losses` — each run's full training loss ``(R,)`` (on ``(X, y)``, or on each
  run's own training set passed as a :data:`Batch` of size n).

Three implementations:

* :class:`AutogradStepper` — ``torch.autograd`` on a live ``nn.Module`` (any architecture, any
  loss); one run (R = 1) whose parameters *are* the module's (the engine updates them in place).
* :class:`VmapStepper` — ``torch.func.functional_call`` vectorised over the runs with
  ``torch.func.vmap``: one forward and one backward pass for all R runs (the gradient of
  Σ_r L_r with respect to run r's parameters is ∇L_r, runs being independent).
* :class:`ClosedFormStepper` — the model's own closed-form gradient
  (:class:`dynstab.models.ClosedFormModel`, ½-MSE only): a few batched kernels per step.

Frozen parameters (``requires_grad=False``) and buffers travel as ``fixed`` tensors, stacked
like ``params``; they are never updated.
"""

from __future__ import annotations

import copy
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from dynstab._types import LossFn, Params
from dynstab.losses import half_mse
from dynstab.models import ClosedFormModel

__all__ = [
    "GRADIENT_METHODS",
    "AutogradStepper",
    "Batch",
    "ClosedFormStepper",
    "Stepper",
    "VmapStepper",
    "check_gradient",
    "make_stepper",
]

#: One batch per run: inputs ``(R, B, *in)`` and targets ``(R, B, *out)``.
Batch = tuple[Tensor, Tensor]

#: Values of the ``gradient`` argument of the trainers.
GRADIENT_METHODS: tuple[str, ...] = ("auto", "autograd", "closed_form")


@runtime_checkable
class Stepper(Protocol):
    """Gradients and losses of R stacked runs (see the module docstring)."""

    def gradients(
        self, params: Params, fixed: Params, batch: Batch | None
    ) -> tuple[Params, Tensor]:
        """Return per-run gradients (shapes of ``params``) and batch losses ``(R,)``.

        Args:
            params: Trainable parameters, ``(R, *shape)`` each.
            fixed: Frozen parameters and buffers, ``(R, *shape)`` each.
            batch: One batch per run, or None for the training set ``(X, y)``.
        """
        ...

    def losses(self, params: Params, fixed: Params, data: Batch | None = None) -> Tensor:
        """Return each run's full training loss ``(R,)`` on ``(X, y)`` or on its own ``data``."""
        ...


class AutogradStepper:
    """``torch.autograd`` on a live module: one run whose parameters are the module's.

    ``params`` passed to the methods must be views of the module's trainable parameters with
    a leading run dimension of 1 (``{k: p.detach()[None]}``): the engine updates them in
    place, so the module always holds the current iterate and monitors can read it. Gradients
    come from ``torch.autograd.grad`` (``.grad`` attributes are never touched); the module is
    run in the mode it is in.

    Args:
        model: The network (its trainable parameters are trained).
        X: Training inputs ``(n, *in)``.
        y: Training targets ``(n, *out)``.
        loss_fn: Batch-mean loss ``loss_fn(outputs, targets)``.
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, loss_fn: LossFn) -> None:
        self.model, self.X, self.y, self.loss_fn = model, X, y, loss_fn
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.names = [k for k, _ in named]
        self.leaves = [p for _, p in named]

    def gradients(
        self, params: Params, fixed: Params, batch: Batch | None
    ) -> tuple[Params, Tensor]:
        """Gradient and loss of the module on ``batch`` (run 0's; or the training set)."""
        xb, yb = (self.X, self.y) if batch is None else (batch[0][0], batch[1][0])
        # autograd.grad is ~3x cheaper per step than torch.func.grad_and_value on small nets.
        with torch.enable_grad():
            loss = self.loss_fn(self.model(xb), yb)
            grads = torch.autograd.grad(loss, self.leaves, materialize_grads=True)
        return {k: g[None] for k, g in zip(self.names, grads, strict=True)}, loss.detach()[None]

    def losses(self, params: Params, fixed: Params, data: Batch | None = None) -> Tensor:
        """Full training loss of the module, shape ``(1,)``."""
        X, y = (self.X, self.y) if data is None else (data[0][0], data[1][0])
        with torch.no_grad():
            return self.loss_fn(self.model(X), y).detach()[None]


class VmapStepper:
    """``functional_call`` of one architecture vectorised over R runs with ``torch.func.vmap``.

    Args:
        model: Template of the architecture (its values are not used; a copy on the ``meta``
            device is kept). No train-mode BatchNorm or active Dropout.
        X: Training inputs ``(n, *in)``.
        y: Training targets ``(n, *out)``.
        loss_fn: Batch-mean loss; must be ``vmap``-compatible (``half_mse`` is).
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, loss_fn: LossFn) -> None:
        self.base = copy.deepcopy(model).to("meta")
        self.X, self.y, self.loss_fn = X, y, loss_fn

        def loss_one(p: Params, b: Params, xb: Tensor, yb: Tensor) -> Tensor:
            return loss_fn(functional_call(self.base, (p, b), (xb,)), yb)

        self._full = vmap(loss_one, in_dims=(0, 0, None, None))
        self._batch = vmap(loss_one, in_dims=(0, 0, 0, 0))

    def gradients(
        self, params: Params, fixed: Params, batch: Batch | None
    ) -> tuple[Params, Tensor]:
        """Vectorised forward of every run on its batch, one backward of Σ_r L_r."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            losses = self._losses(leaves, fixed, batch)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()), materialize_grads=True)
        return dict(zip(leaves, grads, strict=True)), losses.detach()

    def losses(self, params: Params, fixed: Params, data: Batch | None = None) -> Tensor:
        """Vectorised full training loss of every run."""
        with torch.no_grad():
            return self._losses(params, fixed, data)

    def _losses(self, params: Params, fixed: Params, batch: Batch | None) -> Tensor:
        if batch is None:
            return self._full(params, fixed, self.X, self.y)
        return self._batch(params, fixed, *batch)


class ClosedFormStepper:
    """The model's closed-form ½-MSE gradient (:class:`dynstab.models.ClosedFormModel`).

    Full-batch steps and full training losses pass ``X.expand(R, *X.shape)`` (a view, which
    the models multiply as one shared matrix); the losses are the model's
    ``closed_form_loss`` (its forward pass alone).

    Args:
        model: A model with ``closed_form_grad`` whose parameters all require grad and that has
            no buffers.
        X: Training inputs ``(n, *in)``.
        y: Training targets ``(n, *out)``.

    Raises:
        TypeError: If the model has no closed-form gradient.
        ValueError: If it has frozen parameters or buffers.
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor) -> None:
        if not isinstance(model, ClosedFormModel):
            raise TypeError(
                f"{type(model).__name__} has no closed-form gradient (closed_form_grad and "
                "closed_form_loss methods); "
                "use gradient='autograd'."
            )
        frozen = [k for k, p in model.named_parameters() if not p.requires_grad]
        buffers = [k for k, _ in model.named_buffers()]
        if frozen or buffers:
            raise ValueError(
                "the closed-form gradient trains every parameter and knows no buffers; got frozen "
                f"parameters {frozen} and buffers {buffers}. Use gradient='autograd'."
            )
        self.model: ClosedFormModel = model
        self.X, self.y = X, y

    def gradients(
        self, params: Params, fixed: Params, batch: Batch | None
    ) -> tuple[Params, Tensor]:
        """``model.closed_form_grad`` on every run's batch (or the expanded training set)."""
        return self.model.closed_form_grad(params, *self._data(params, batch))

    def losses(self, params: Params, fixed: Params, data: Batch | None = None) -> Tensor:
        """Full training loss of every run (``closed_form_loss`` on the expanded training set)."""
        return self.model.closed_form_loss(params, *self._data(params, data))

    def _data(self, params: Params, batch: Batch | None) -> Batch:
        if batch is not None:
            return batch
        R = next(iter(params.values())).shape[0]
        return self.X.expand(R, *self.X.shape), self.y.expand(R, *self.y.shape)


def supports_closed_form(model: nn.Module, loss_fn: LossFn) -> bool:
    """Whether :class:`ClosedFormStepper` applies: ½-MSE, a closed form, nothing frozen."""
    return (
        loss_fn is half_mse
        and isinstance(model, ClosedFormModel)
        and all(p.requires_grad for p in model.parameters())
        and not any(True for _ in model.buffers())
    )


def check_gradient(gradient: str, loss_fn: LossFn) -> str:
    """Validate a ``gradient`` method (one of :data:`GRADIENT_METHODS`) for ``loss_fn``.

    Raises:
        ValueError: If ``gradient`` is unknown, or ``"closed_form"`` with a loss other than
            :func:`dynstab.losses.half_mse`.
    """
    if gradient not in GRADIENT_METHODS:
        raise ValueError(
            f"gradient must be one of {list(GRADIENT_METHODS)}; got {gradient!r}. Use 'auto' "
            "(closed form when the model has one) or 'autograd'."
        )
    if gradient == "closed_form" and loss_fn is not half_mse:
        raise ValueError(
            "gradient='closed_form' is the gradient of dynstab.losses.half_mse; got loss_fn="
            f"{getattr(loss_fn, '__name__', loss_fn)!r}. Use gradient='autograd'."
        )
    return gradient


def make_stepper(
    model: nn.Module, X: Tensor, y: Tensor, loss_fn: LossFn, gradient: str, *, live: bool
) -> Stepper:
    """Build the stepper that ``gradient`` asks for.

    Args:
        model: The network (the live module when ``live``, else the template).
        X: Training inputs.
        y: Training targets.
        loss_fn: Batch-mean loss.
        gradient: ``"autograd"``, ``"closed_form"`` or ``"auto"`` (closed form when the model
            has one, the loss is ``half_mse`` and every parameter is trained; else autograd).
        live: One run on the live module (:class:`AutogradStepper` for autograd) instead of
            stacked runs (:class:`VmapStepper`).

    Returns:
        The stepper.

    Raises:
        ValueError: If ``gradient`` is unknown, or ``"closed_form"`` with another loss.
        TypeError: If ``"closed_form"`` is asked of a model without one.
    """
    check_gradient(gradient, loss_fn)
    if gradient == "closed_form" or (gradient == "auto" and supports_closed_form(model, loss_fn)):
        return ClosedFormStepper(model, X, y)
    if live:
        return AutogradStepper(model, X, y, loss_fn)
    return VmapStepper(model, X, y, loss_fn)
