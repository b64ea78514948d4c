"""Params dict ↔ flat vector, parameter resolution, model-mode checks and the functional loss.

Conventions (see ``docs/design.md``):

* ``params`` selects the parameters to differentiate (see :mod:`dynstab.curvature.params`):
  by default those with ``requires_grad=True``; a submodule, names, a predicate or a
  ``dict[str, Tensor]`` otherwise. Flat vectors concatenate the selected tensors in
  ``model.named_parameters()`` order.
* ``data`` is one batch or a re-iterable of batches (see :mod:`dynstab.curvature.data`),
  streamed on every pass. ``loss_fn`` returns the batch *mean*; batches are combined with
  weights ``n_b / n`` so the result is the mean over the whole data set.
* Models run in the mode they are in. Train-mode BatchNorm and active Dropout make the loss
  random and batch-coupled; they are refused unless ``allow_stochastic=True``.
* Model evaluations force the math scaled-dot-product-attention kernel (the fused CPU/flash
  kernels have no double backward) and disable the fused ``nn.TransformerEncoderLayer`` fast
  path (no forward-mode derivative); both settings are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from dynstab._types import Inputs, LossFn, Params, ParamSpec
from dynstab.curvature.data import Dataset, input_tensors, prepare_data
from dynstab.curvature.params import select_parameters

__all__ = [
    "Dataset",
    "batch_loss",
    "check_loss",
    "check_model_mode",
    "differentiable_kernels",
    "flatten_params",
    "forward",
    "loss_name",
    "num_outputs",
    "prepare_data",
    "resolve_params",
    "unflatten_like",
]


def flatten_params(params: Params) -> Tensor:
    """Concatenate a params dict into one flat vector (dict order).

    Args:
        params: ``dict[str, Tensor]``, all of one dtype.

    Returns:
        Tensor of shape ``(p,)`` with ``p = Σ numel``.

    Example:
        >>> flatten_params({"w": torch.ones(2, 2), "b": torch.zeros(1)}).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0]
    """
    return torch.cat([t.reshape(-1) for t in params.values()])


def unflatten_like(vec: Tensor, params: Params) -> Params:
    """Split a flat vector (or a ``(p, k)`` block) into a dict shaped like ``params``.

    Args:
        vec: Tensor of shape ``(p,)`` or ``(p, k)``.
        params: Template dict; only names and shapes are used.

    Returns:
        Dict of views with shapes ``t.shape`` (or ``(*t.shape, k)`` for a block).

    Raises:
        ValueError: If ``vec.shape[0]`` differs from the number of parameters.

    Example:
        >>> unflatten_like(torch.arange(3.0), {"a": torch.zeros(2), "b": torch.zeros(1)})
        {'a': tensor([0., 1.]), 'b': tensor([2.])}
    """
    p = sum(t.numel() for t in params.values())
    if vec.ndim not in (1, 2) or vec.shape[0] != p:
        raise ValueError(f"vec must have shape ({p},) or ({p}, k); got {tuple(vec.shape)}.")
    out: Params = {}
    start = 0
    extra = tuple(vec.shape[1:])
    for name, t in params.items():
        out[name] = vec[start : start + t.numel()].reshape(*t.shape, *extra)
        start += t.numel()
    return out


def resolve_params(model: nn.Module, params: ParamSpec = None, *, who: str = "params") -> Params:
    """Return detached leaf copies (``requires_grad=True``) of the selected parameters.

    The selection rules are those of :func:`dynstab.curvature.params.select_parameters`
    (default: the parameters with ``requires_grad=True``).

    Args:
        model: The network.
        params: ``None``, a submodule, names, a predicate or a ``dict[str, Tensor]`` (those
            names at the given values).
        who: Name used in error messages.

    Returns:
        Ordered dict (``named_parameters`` order) of fresh leaves; the model and its ``.grad``
        are never touched.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``params`` has an unsupported type.
        ValueError: If the selection is empty or unknown, a shape differs, dtypes are mixed,
            values are not finite, or the model has no parameters.
    """
    _, values = select_parameters(model, params, who=who)
    return {name: t.clone().requires_grad_(True) for name, t in values.items()}


def check_model_mode(model: nn.Module, *, allow_stochastic: bool = False) -> None:
    """Refuse train-mode BatchNorm and active Dropout unless ``allow_stochastic``.

    Args:
        model: The network; its mode is inspected, never changed.
        allow_stochastic: Accept such layers (curvature then depends on the batch composition
            for BatchNorm and on the random masks for Dropout).

    Raises:
        ValueError: Naming the offending submodule and what to do.
    """
    if allow_stochastic:
        return
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"submodule {name or type(m).__name__!r} is BatchNorm in train mode, so the loss "
                "couples the samples of a batch and updates running statistics. Call model.eval() "
                "first, or pass allow_stochastic=True to measure the train-mode curvature."
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise ValueError(
                f"submodule {name or type(m).__name__!r} is Dropout(p={m.p}) in train mode, so the "
                "loss is random. Call model.eval() first, or pass allow_stochastic=True (one "
                "random mask per evaluation)."
            )


@contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Force twice-differentiable attention kernels for the duration of the block.

    Selects the math backend of :func:`torch.nn.functional.scaled_dot_product_attention` (the
    flash and memory-efficient kernels have no double backward) and turns off the fused
    ``nn.TransformerEncoderLayer``/``MultiheadAttention`` inference fast path (no
    forward-mode derivative). Both are restored on exit.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def describe_inputs(inputs: Inputs) -> str:
    """``shape (n, d) and dtype float64`` for one tensor; a list of shapes otherwise."""
    if isinstance(inputs, Tensor):
        return f"shape {tuple(inputs.shape)} and dtype {inputs.dtype}"
    ts = input_tensors(inputs)
    return f"shapes {[tuple(t.shape) for t in ts]} and dtypes {[str(t.dtype) for t in ts]}"


def call_model(module: nn.Module, values: Params, inputs: Inputs) -> Tensor:
    """``module(inputs)`` at ``values`` through :func:`torch.func.functional_call`.

    A tensor is passed positionally, a tuple as ``*inputs`` and a dict as ``**inputs``.
    """
    if isinstance(inputs, Tensor):
        return functional_call(module, values, (inputs,))
    if isinstance(inputs, dict):
        return functional_call(module, values, (), inputs)
    return functional_call(module, values, tuple(inputs))


def forward(model: nn.Module, params: Params, inputs: Inputs) -> Tensor:
    """Evaluate ``model`` at ``params`` on ``inputs`` via :func:`torch.func.functional_call`.

    Parameters missing from ``params`` keep the model's values. Runs under
    :func:`differentiable_kernels`.

    Raises:
        ValueError: If the forward pass fails (typically an input shape or dtype mismatch).
    """
    try:
        with differentiable_kernels():
            return call_model(model, params, inputs)
    except RuntimeError as exc:
        dtype = next(iter(params.values())).dtype if params else "unknown"
        raise ValueError(
            f"model(inputs) failed for inputs of {describe_inputs(inputs)} (parameters are "
            f"{dtype}): {exc}. Check the input shape and dtype."
        ) from exc


def check_loss(out: Tensor, targets: Tensor, loss: object) -> Tensor:
    """Check a batch's outputs against its targets and return the scalar, finite loss.

    Raises:
        ValueError: If outputs and targets disagree on the number of samples, the loss is not
            a scalar, or it is not finite.
    """
    if out.ndim == 0 or out.shape[0] != targets.shape[0]:
        raise ValueError(
            f"model outputs must have a leading sample axis matching the targets; got outputs "
            f"{tuple(out.shape)} for targets {tuple(targets.shape)}."
        )
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn(outputs, targets) must return a scalar tensor (the mean over samples); "
            f"got {shape}."
        )
    loss = loss.reshape(())
    if not bool(torch.isfinite(loss)):
        raise ValueError(
            f"the loss is not finite ({float(loss.detach())}) at these parameters; curvature is "
            "undefined. "
            "Check the inputs, targets and parameters for inf/nan or divergence."
        )
    return loss


def batch_loss(
    model: nn.Module, loss_fn: LossFn, params: Params, inputs: Inputs, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(outputs, loss)`` of one batch, checking shapes and finiteness.

    Raises:
        ValueError: If outputs and targets disagree on the number of samples, the loss is not
            a scalar, or it is not finite.
    """
    out = forward(model, params, inputs)
    return out, check_loss(out, targets, loss_fn(out, targets))


def num_outputs(outputs: Tensor) -> int:
    """Outputs per sample ``C`` (1 for outputs of shape ``(n,)``)."""
    return int(outputs[0].numel()) if outputs.ndim > 1 else 1


def loss_name(loss_fn: LossFn) -> str:
    """A readable name for ``loss_fn`` (function name or class name)."""
    return str(getattr(loss_fn, "__name__", type(loss_fn).__name__))
