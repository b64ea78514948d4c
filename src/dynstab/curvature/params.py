"""Which parameters a curvature quantity is taken with respect to: one resolver for all.

Every model-facing function of :mod:`dynstab.curvature` (operators, Jacobians, the Gram
matrix, dense oracles) and :func:`dynstab.sharpness` resolve their ``params=`` argument here,
so a selection means the same thing everywhere:

* ``None`` (default): the parameters with ``requires_grad=True`` — what
  :func:`dynstab.training.train` updates and what PyHessian differentiates. Frozen parameters
  stay fixed at their values.
* a submodule of the model (``model.fc2``, or ``model`` itself for every parameter): its
  parameters, named as in ``model.named_parameters()``;
* a parameter name or a list/tuple of names;
* a predicate ``(name, param) -> bool`` applied to ``model.named_parameters()``;
* a ``dict[str, Tensor]``: those names, evaluated at the given values (the other parameters
  keep the model's values).

Explicit selections are taken as given, frozen parameters included. The selected tensors keep
``model.named_parameters()`` order, and flat vectors of length ``p`` concatenate them in that
order. The Hessian of a selection is the corresponding principal block of the full Hessian.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from dynstab._checks import count_non_finite
from dynstab._types import Params, ParamSpec
from dynstab.errors import DeviceError, ParameterSelectionError

__all__ = ["ParameterSelection", "select_parameters"]


@dataclass(frozen=True)
class ParameterSelection:
    """The parameters a curvature quantity was measured with respect to.

    Attributes:
        names: Selected names, in ``model.named_parameters()`` order.
        shapes: Their shapes.
        model_numel: Number of scalar parameters of the whole model (for "p of P" reports).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
        >>> sel = select_parameters(model, model[1])[0]
        >>> sel.names, sel.numel, sel.count, sel.model_numel
        (('1.weight', '1.bias'), 4, 2, 13)
        >>> sel.unflatten(torch.arange(4.0))["1.bias"]
        tensor([3.])
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    model_numel: int

    @property
    def count(self) -> int:
        """Number of selected tensors."""
        return len(self.names)

    @cached_property
    def numels(self) -> tuple[int, ...]:
        """Number of scalars of each selected tensor."""
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @cached_property
    def numel(self) -> int:
        """Total size ``p`` of the selection (length of flat vectors)."""
        return sum(self.numels)

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenate ``tensors[name]`` for the selected names into a vector ``(p,)``.

        Raises:
            KeyError: If a selected name is missing from ``tensors``.
        """
        return torch.cat([tensors[name].reshape(-1) for name in self.names])

    def unflatten(self, vec: Tensor) -> Params:
        """Split a flat vector ``(p,)`` or block ``(p, k)`` into parameter-shaped views.

        Returns:
            ``{name: tensor}`` with shapes ``shape`` (or ``(*shape, k)`` for a block).

        Raises:
            ValueError: If ``vec.shape[0] != p``.
        """
        p = self.numel
        if not isinstance(vec, Tensor) or vec.ndim not in (1, 2) or vec.shape[0] != p:
            shape = tuple(vec.shape) if isinstance(vec, Tensor) else type(vec).__name__
            raise ValueError(f"vec must have shape ({p},) or ({p}, k); got {shape}.")
        out: Params = {}
        start = 0
        extra = tuple(vec.shape[1:])
        for name, shape, size in zip(self.names, self.shapes, self.numels):
            out[name] = vec[start : start + size].reshape(*shape, *extra)
            start += size
        return out

    def columns(self, grads: Sequence[Tensor | None], s: int | None, like: Tensor) -> Tensor:
        """Stack per-parameter results into a ``(p, s)`` block.

        Args:
            grads: One entry per selected tensor, shaped ``(s, *shape)`` (vectorised results)
                or ``shape`` when ``s`` is ``None``; ``None`` entries are zeros.
            s: Number of columns, or ``None`` for a single column.
            like: Tensor whose dtype and device the zeros take.

        Returns:
            Tensor ``(p, s)`` (``(p, 1)`` when ``s`` is ``None``).
        """
        cols = 1 if s is None else s
        parts = []
        for g, size in zip(grads, self.numels):
            if g is None:
                parts.append(like.new_zeros(size, cols))
            elif s is None:
                parts.append(g.reshape(size, 1))
            else:
                parts.append(g.reshape(s, size).T)
        return torch.cat(parts, dim=0)

    def summary(self) -> str:
        """One line, e.g. ``"p=7 of 37 (2 tensors: 2.weight, 2.bias)"``."""
        shown = ", ".join(self.names[:4]) + (", …" if self.count > 4 else "")
        return f"p={self.numel} of {self.model_numel} ({self.count} tensors: {shown})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: names, shapes, count, p and the model's total size."""
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "count": self.count,
            "numel": self.numel,
            "model_numel": self.model_numel,
        }


def _listing(names: list[str]) -> str:
    """The first twelve names, for messages."""
    return f"{names[:12]}{' …' if len(names) > 12 else ''}"


def _spec_kind(spec: object) -> str:
    return f"{spec!r}"[:80] + f" ({type(spec).__name__})"


def _names_of_module(model: nn.Module, module: nn.Module, who: str) -> list[str]:
    if module is model:
        return [name for name, _ in model.named_parameters()]
    if not any(m is module for m in model.modules()):
        raise ParameterSelectionError(
            f"{who}: a module given as params must be a submodule of the model; got "
            f"{type(module).__name__}, which is not among model.modules(). Pass e.g. "
            "params=model.layer (an attribute of this model), a list of names or a predicate."
        )
    own = {id(t) for t in module.parameters()}
    return [name for name, t in model.named_parameters() if id(t) in own]


def _refuse_unknown(names: Iterable[str], all_names: list[str], problem: str, fix: str) -> None:
    """Raise :class:`ParameterSelectionError` for names that are not the model's parameters.

    The message is ``"{problem} [names] (the model's parameters are ...). {fix} names from
    model.named_parameters()."``.
    """
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        raise ParameterSelectionError(
            f"{problem} {unknown} (the model's parameters are {_listing(all_names)}). {fix} "
            "names from model.named_parameters()."
        )


def _names_of_list(names: Sequence[str], all_names: list[str], who: str) -> list[str]:
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(
            f"{who}: a list given as params must hold parameter names (str); got "
            f"{_spec_kind(bad[0])}. Use names from model.named_parameters()."
        )
    _refuse_unknown(names, all_names, f"{who}: unknown parameter names", "Use names from")
    wanted = set(names)
    return [n for n in all_names if n in wanted]


def _check_values(
    given: Mapping[str, object], named: Mapping[str, Tensor], all_names: list[str], who: str
) -> None:
    _refuse_unknown(
        given,
        all_names,
        f"{who}: params and model disagree; unexpected keys",
        "Pass a dict keyed by",
    )
    for name, t in given.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{who}[{name!r}] must be a Tensor; got {type(t).__name__}.")
        if t.shape != named[name].shape:
            raise ParameterSelectionError(
                f"{who}[{name!r}] must have shape {tuple(named[name].shape)}; got {tuple(t.shape)}."
            )


def select_parameters(
    model: nn.Module, params: ParamSpec = None, *, who: str = "params"
) -> tuple[ParameterSelection, Params]:
    """Resolve a ``params=`` argument into a selection and the values to evaluate at.

    Args:
        model: The network.
        params: ``None`` (parameters with ``requires_grad=True``), a submodule, a name or a
            list/tuple of names, a predicate ``(name, param) -> bool``, or a
            ``dict[str, Tensor]`` (those names at the given values). See the module docstring.
        who: Name used in error messages.

    Returns:
        ``(selection, values)``: the :class:`ParameterSelection` and ``{name: tensor}`` with
        the (detached, not copied) values of the selected parameters, in selection order.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``params`` has an unsupported type.
        ParameterSelectionError: (a ``ValueError``) if the selection is empty, names unknown
            parameters or has wrong shapes.
        ValueError: If the selected values are not finite or do not share one floating dtype.
        DeviceError: (a ``ValueError``) if a parameter is on the ``meta`` device or the
            selected values are on several devices.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
        >>> model[0].requires_grad_(False)  # doctest: +ELLIPSIS
        Linear(...)
        >>> select_parameters(model)[0].names  # default: the trainable parameters
        ('1.weight', '1.bias')
        >>> select_parameters(model, lambda name, t: name.endswith("bias"))[0].names
        ('0.bias', '1.bias')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    named = dict(model.named_parameters())
    all_names = list(named)
    if not all_names:
        raise ValueError(f"{who}: the model has no parameters; there is no curvature to measure.")
    meta = [n for n, t in named.items() if t.is_meta]
    if meta:
        raise DeviceError(
            f"{who}: the model has parameters on the meta device ({meta[:4]}), i.e. without "
            "values; curvature needs real values. Materialise the model first, e.g. "
            "model.to_empty(device='cpu') followed by load_state_dict(...)."
        )
    values: dict[str, Tensor] = {}
    if params is None:
        names = [n for n, t in named.items() if t.requires_grad]
        if not names:
            raise ParameterSelectionError(
                f"{who}: every parameter of the model has requires_grad=False, so the default "
                "selection (the trainable parameters) is empty. Pass params=model to measure "
                "all parameters, or a submodule, names or a predicate."
            )
    elif isinstance(params, nn.Module):
        names = _names_of_module(model, params, who)
    elif isinstance(params, Mapping):
        _check_values(params, named, all_names, who)
        names = [n for n in all_names if n in params]
        values = {n: params[n] for n in names}
    elif isinstance(params, str):
        names = _names_of_list([params], all_names, who)
    elif isinstance(params, Sequence):
        names = _names_of_list(list(params), all_names, who)
    elif callable(params):
        predicate: Callable[[str, Tensor], bool] = params
        names = [n for n, t in named.items() if bool(predicate(n, t))]
    else:
        raise TypeError(
            f"{who} must be None, a submodule of the model, a parameter name or list of names, "
            f"a predicate (name, param) -> bool, or a dict[str, Tensor]; got {_spec_kind(params)}."
        )
    if not names:
        raise ParameterSelectionError(
            f"{who}: the selection {_spec_kind(params)} matches no parameter of the model "
            f"(parameters: {_listing(all_names)}). Check the "
            "module, names or predicate."
        )
    out = {n: (values[n] if n in values else named[n]).detach() for n in names}
    dtypes = {t.dtype for t in out.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(
            f"{who}: all parameters must share one floating dtype; got {sorted(map(str, dtypes))}. "
            "Convert the model with model.double() (recommended) or model.float()."
        )
    dtype = next(iter(dtypes))
    others = {str(t.dtype) for n, t in named.items() if n not in out and t.is_floating_point()}
    if values and others and others != {str(dtype)}:
        raise ValueError(
            f"{who}: the given values are {dtype} but the parameters not given keep the model's "
            f"dtype {sorted(others)}; pass values of the model's dtype (or all parameters)."
        )
    devices = {t.device for t in out.values()}
    if len(devices) != 1:
        raise DeviceError(
            f"{who}: the selected parameters must be on one device; got "
            f"{sorted(map(str, devices))}. Move the model with model.to(device) or select the "
            "parameters of one device."
        )
    for name, t in out.items():
        bad = count_non_finite(t)
        if bad:
            raise ValueError(
                f"{who}: parameter {name!r} must be finite; got {bad} non-finite entries "
                f"(of {t.numel()}). Curvature is undefined there: check for divergence or load "
                "valid weights."
            )
    selection = ParameterSelection(
        names=tuple(names),
        shapes=tuple(tuple(t.shape) for t in out.values()),
        model_numel=sum(t.numel() for t in named.values()),
    )
    return selection, out
