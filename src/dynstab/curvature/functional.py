"""Params dict ↔ flat vector, data normalisation and the functional loss.

Conventions (see ``docs/design.md``):

* ``params`` is a ``dict[str, Tensor]`` keyed like ``model.named_parameters()``; flat vectors
  concatenate the flattened tensors in that order.
* ``data`` is one ``(inputs, targets)`` pair or an iterable of pairs (a ``DataLoader``, a
  list). ``loss_fn`` returns the batch *mean*; batches are combined with weights ``n_b / n`` so
  the result is the mean over the whole data set, also for an uneven last batch. The iterable
  is read **once** and its batches are kept (references to the tensors), so every product of
  an operator sees the same batches even for a shuffling loader.
* Models run in the mode they are in. Train-mode BatchNorm and active Dropout make the loss
  random and batch-coupled; they are refused unless ``allow_stochastic=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dynstab._checks import check_keys
from dynstab._types import Batch, Data, LossFn, Params

__all__ = [
    "Dataset",
    "batch_loss",
    "check_model_mode",
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


def resolve_params(model: nn.Module, params: Params | None, *, who: str = "params") -> Params:
    """Return detached leaf copies (``requires_grad=True``) of the point to differentiate at.

    Args:
        model: The network.
        params: ``None`` for the model's current parameters, or a dict with exactly the names
            of ``model.named_parameters()``.
        who: Name used in error messages.

    Returns:
        Ordered dict (``named_parameters`` order) of fresh leaves; the model and its ``.grad``
        are never touched.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``params`` is not a dict of tensors.
        ValueError: If the keys differ from the model's, a shape differs, dtypes are mixed or
            the model has no parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    names = [name for name, _ in model.named_parameters()]
    if not names:
        raise ValueError(f"{who}: the model has no parameters; there is no curvature to measure.")
    source: dict[str, Tensor]
    if params is None:
        source = dict(model.named_parameters())
    else:
        if not isinstance(params, dict):
            raise TypeError(
                f"{who} must be a dict[str, Tensor] or None; got {type(params).__name__}."
            )
        check_keys(who, params.keys(), names)
        source = params
        model_shapes = dict(model.named_parameters())
        for name in names:
            t = source[name]
            if not isinstance(t, Tensor):
                raise TypeError(f"{who}[{name!r}] must be a Tensor; got {type(t).__name__}.")
            if t.shape != model_shapes[name].shape:
                raise ValueError(
                    f"{who}[{name!r}] must have shape {tuple(model_shapes[name].shape)}; got "
                    f"{tuple(t.shape)}."
                )
    out = {name: source[name].detach().clone().requires_grad_(True) for name in names}
    dtypes = {t.dtype for t in out.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(
            f"{who}: all parameters must share one floating dtype; got {sorted(map(str, dtypes))}. "
            "Convert the model with model.double() (recommended) or model.float()."
        )
    return out


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


@dataclass(frozen=True)
class Dataset:
    """Validated data: a list of batches and the total number of samples.

    Attributes:
        batches: ``[(inputs, targets), …]``, each with ``n_b >= 1`` samples.
        n: Total number of samples ``Σ n_b``.
    """

    batches: tuple[Batch, ...]
    n: int

    def weights(self) -> list[float]:
        """Batch weights ``n_b / n``."""
        return [b[0].shape[0] / self.n for b in self.batches]

    def inputs(self) -> Tensor:
        """All inputs concatenated along the sample axis."""
        return torch.cat([b[0] for b in self.batches])

    def targets(self) -> Tensor:
        """All targets concatenated along the sample axis."""
        return torch.cat([b[1] for b in self.batches])

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


def _length(obj: object) -> str:
    return f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""


def _check_batch(i: int, batch: object) -> Batch:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"data batch {i} must be an (inputs, targets) pair of tensors; got "
            f"{type(batch).__name__}{_length(batch)}."
        )
    X, y = batch
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"data batch {i} must hold tensors; got ({type(X).__name__}, {type(y).__name__})."
        )
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"data batch {i}: inputs and targets need a leading sample axis; got shapes "
            f"{tuple(X.shape)} and {tuple(y.shape)}."
        )
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"data batch {i}: inputs and targets must have the same number of samples; got "
            f"inputs {tuple(X.shape)} and targets {tuple(y.shape)}."
        )
    if X.shape[0] == 0:
        raise ValueError(f"data batch {i} is empty (0 samples); drop it or check the loader.")
    return X, y


def prepare_data(data: Data) -> Dataset:
    """Validate ``data`` and materialise its batches (an iterator is consumed once).

    Args:
        data: ``(inputs, targets)`` or an iterable of such pairs.

    Returns:
        :class:`Dataset`.

    Raises:
        TypeError: If ``data`` is not a pair of tensors or an iterable of pairs.
        ValueError: If ``data`` is empty or a batch has mismatched or zero samples.
    """
    if isinstance(data, Dataset):
        return data
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and isinstance(data[1], Tensor)
    ):
        batches: list[Batch] = [_check_batch(0, data)]
    elif isinstance(data, Iterable) and not isinstance(data, Tensor):
        batches = [_check_batch(i, b) for i, b in enumerate(data)]
    else:
        raise TypeError(
            "data must be an (inputs, targets) pair of tensors or an iterable of such pairs "
            f"(e.g. a DataLoader); got {type(data).__name__}."
        )
    if not batches:
        raise ValueError("data is empty (no batches); pass at least one (inputs, targets) pair.")
    return Dataset(tuple(batches), sum(b[0].shape[0] for b in batches))


def forward(model: nn.Module, params: Params, inputs: Tensor) -> Tensor:
    """Evaluate ``model`` at ``params`` on ``inputs`` via :func:`torch.func.functional_call`.

    Raises:
        ValueError: If the forward pass fails (typically an input shape or dtype mismatch).
    """
    try:
        return functional_call(model, params, (inputs,))
    except RuntimeError as exc:
        dtype = next(iter(params.values())).dtype
        raise ValueError(
            f"model(inputs) failed for inputs of shape {tuple(inputs.shape)} and dtype "
            f"{inputs.dtype} (parameters are {dtype}): {exc}. Check the input shape and dtype."
        ) from exc


def batch_loss(
    model: nn.Module, loss_fn: LossFn, params: Params, inputs: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(outputs, loss)`` of one batch, checking shapes and finiteness.

    Raises:
        ValueError: If outputs and targets disagree on the number of samples, the loss is not
            a scalar, or it is not finite.
    """
    out = forward(model, params, inputs)
    if out.ndim == 0 or out.shape[0] != targets.shape[0]:
        raise ValueError(
            f"model outputs must have a leading sample axis matching the targets; got outputs "
            f"{tuple(out.shape)} for targets {tuple(targets.shape)}."
        )
    loss = loss_fn(out, targets)
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
    return out, loss


def num_outputs(outputs: Tensor) -> int:
    """Outputs per sample ``C`` (1 for outputs of shape ``(n,)``)."""
    return int(outputs[0].numel()) if outputs.ndim > 1 else 1


def loss_name(loss_fn: LossFn) -> str:
    """A readable name for ``loss_fn`` (function name or class name)."""
    return str(getattr(loss_fn, "__name__", type(loss_fn).__name__))
