"""Type aliases shared across dynstab.

* ``Params``: a ``dict[str, Tensor]`` keyed like ``model.named_parameters()``; the
  currency of :func:`torch.func.functional_call`.
* ``LossFn``: ``loss_fn(outputs, targets) -> 0-dim Tensor``, the **mean over samples**
  of a per-sample loss (e.g. :func:`dynstab.losses.half_mse`). Batches of a data loader
  are combined with weights ``n_b / n`` so the total is the mean over the whole data set.
* ``Data``: either one ``(inputs, targets)`` pair of tensors (the whole data set) or an
  iterable of such pairs (a ``DataLoader`` without shuffling, or a list of batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor

Params: TypeAlias = dict[str, Tensor]
Batch: TypeAlias = tuple[Tensor, Tensor]
Data: TypeAlias = Batch | Iterable[Batch]
LossFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
MatVec: TypeAlias = Callable[[Tensor], Tensor]


@runtime_checkable
class LinearOperatorLike(Protocol):
    """Anything square that can be applied to vectors: a dense Tensor or a dynstab operator.

    Operators expose ``shape`` ``(p, p)``, ``dtype``, ``device`` and ``__matmul__`` accepting
    a vector of shape ``(p,)`` or a matrix of shape ``(p, k)``.
    """

    @property
    def shape(self) -> tuple[int, ...] | torch.Size: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def __matmul__(self, other: Tensor) -> Tensor: ...


# -- curvature inputs (appended by the curvature layer) ----------------------------------------

#: What the model is called with: one tensor, several positional tensors, or keyword tensors.
Inputs: TypeAlias = Tensor | tuple[Tensor, ...] | dict[str, Tensor]
#: ``unpack(batch) -> (inputs, targets)``: how a batch of a user's loader is split
#: (``targets`` may be ``None`` where only the model outputs are needed, e.g. Jacobians).
UnpackFn: TypeAlias = Callable[[object], tuple[Inputs, Tensor | None]]
#: ``forward(model, inputs) -> outputs``: how the model is called on unpacked inputs.
ForwardFn: TypeAlias = Callable[[torch.nn.Module, Inputs], Tensor]
#: Which parameters a curvature quantity is taken with respect to: ``None`` (those with
#: ``requires_grad=True``), a submodule, parameter names, a predicate ``(name, param) -> bool``
#: or a ``dict[str, Tensor]`` (those names, evaluated at the given values).
ParamSpec: TypeAlias = (
    torch.nn.Module | str | Sequence[str] | Callable[[str, Tensor], bool] | dict[str, Tensor] | None
)
