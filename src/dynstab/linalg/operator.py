"""Square linear operators that count their matrix-vector products.

Every estimator in :mod:`dynstab.linalg` accepts either a dense square ``Tensor`` or an object
with ``shape``, ``dtype``, ``device`` and ``@`` (see :class:`dynstab._types.LinearOperatorLike`).
:func:`as_operator` wraps both into a :class:`LinearOperator`, whose ``num_matvecs`` counts the
vectors it has been applied to (a ``(p, k)`` block counts as ``k`` products).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from dynstab._types import LinearOperatorLike

__all__ = ["DenseOperator", "LinearOperator", "as_operator", "to_dense"]


class LinearOperator(ABC):
    """Abstract square operator ``A`` of shape ``(p, p)`` applied with ``A @ v``.

    Subclasses implement :meth:`_matmat` on a ``(p, k)`` block. ``A @ v`` accepts a vector
    ``(p,)`` or a block ``(p, k)``, casts it to ``A.dtype``/``A.device`` and adds ``k`` to
    :attr:`num_matvecs`.

    Class attributes ``SELF_ADJOINT`` and ``PSD`` tag symmetric and positive semi-definite
    operators so that estimators can rely on them.
    """

    SELF_ADJOINT: bool = True
    PSD: bool = False

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self._size = int(size)
        self._dtype = dtype
        self._device = torch.device(device)
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(p, p)``."""
        return (self._size, self._size)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the products."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device of the products."""
        return self._device

    @abstractmethod
    def _matmat(self, V: Tensor) -> Tensor:
        """Return ``A @ V`` for a block ``V`` of shape ``(p, k)`` (already cast)."""

    def __matmul__(self, other: Tensor) -> Tensor:
        if not isinstance(other, Tensor):
            raise TypeError(
                f"{type(self).__name__} @ x needs a torch.Tensor; got {type(other).__name__}."
            )
        p = self._size
        if other.ndim not in (1, 2) or other.shape[0] != p:
            raise ValueError(
                f"{type(self).__name__} of shape {self.shape} can be applied to tensors of shape "
                f"({p},) or ({p}, k); got {tuple(other.shape)}."
            )
        V = other.to(dtype=self._dtype, device=self._device)
        block = V.unsqueeze(1) if V.ndim == 1 else V
        self.num_matvecs += block.shape[1]
        out = self._matmat(block)
        return out.squeeze(1) if other.ndim == 1 else out

    def to_dense(self, chunk_size: int = 64) -> Tensor:
        """Materialise ``A`` as a ``(p, p)`` tensor from ``p`` products with identity columns.

        Args:
            chunk_size: Number of identity columns per block product. Default: ``64``.

        Returns:
            Tensor of shape ``(p, p)`` and dtype :attr:`dtype`. Costs ``p`` matvecs.
        """
        return to_dense(self, chunk_size=chunk_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self._dtype})"


class DenseOperator(LinearOperator):
    """A dense square tensor viewed as a :class:`LinearOperator` (counts its products).

    Args:
        A: Square floating tensor of shape ``(p, p)``.
        symmetric: Whether ``A`` is symmetric (sets ``SELF_ADJOINT``). Default: ``True``.

    Example:
        >>> op = DenseOperator(torch.eye(3))
        >>> (op @ torch.ones(3)).tolist(), op.num_matvecs
        ([1.0, 1.0, 1.0], 1)
    """

    def __init__(self, A: Tensor, *, symmetric: bool = True) -> None:
        if not isinstance(A, Tensor):
            raise TypeError(f"DenseOperator needs a torch.Tensor; got {type(A).__name__}.")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(
                f"DenseOperator needs a square 2-D tensor; got shape {tuple(A.shape)}."
            )
        if not A.is_floating_point():
            raise TypeError(f"DenseOperator needs a floating tensor; got dtype {A.dtype}.")
        super().__init__(A.shape[0], A.dtype, A.device)
        self.A = A
        self.SELF_ADJOINT = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self.A @ V


class _WrappedOperator(LinearOperator):
    """Counting wrapper around a foreign operator-like object."""

    def __init__(self, op: LinearOperatorLike) -> None:
        shape = tuple(op.shape)
        super().__init__(int(shape[0]), op.dtype, op.device)
        self.op = op

    def _matmat(self, V: Tensor) -> Tensor:
        return self.op @ V


def as_operator(op: Tensor | LinearOperatorLike) -> LinearOperator:
    """Return ``op`` as a :class:`LinearOperator` (dense tensors are wrapped, not copied).

    Args:
        op: Square floating tensor of shape ``(p, p)`` or an operator-like object.

    Returns:
        ``op`` itself if it already is a :class:`LinearOperator`, else a counting wrapper.

    Raises:
        TypeError: If ``op`` is neither a tensor nor operator-like, or is not floating point.
        ValueError: If ``op`` is not square.
    """
    if isinstance(op, LinearOperator):
        return op
    if isinstance(op, Tensor):
        return DenseOperator(op)
    if isinstance(op, LinearOperatorLike):
        shape = tuple(op.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"operator must be square (p, p); got shape {shape}.")
        if not op.dtype.is_floating_point:
            raise TypeError(f"operator must have a floating dtype; got {op.dtype}.")
        return _WrappedOperator(op)
    raise TypeError(
        "expected a square torch.Tensor or an operator with shape, dtype, device and @; "
        f"got {type(op).__name__}."
    )


def to_dense(op: Tensor | LinearOperatorLike, *, chunk_size: int = 64) -> Tensor:
    """Materialise a square operator from products with blocks of identity columns.

    Args:
        op: Square tensor or operator of shape ``(p, p)``.
        chunk_size: Identity columns per block product, >= 1. Default: ``64``.

    Returns:
        Tensor of shape ``(p, p)`` with ``op``'s dtype; column ``j`` is ``op @ e_j``.
        Costs ``p`` matvecs.

    Raises:
        ValueError: If ``chunk_size < 1``.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
        >>> torch.equal(to_dense(DenseOperator(A), chunk_size=1), A)
        True
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    A = as_operator(op)
    p = A.shape[0]
    cols = []
    for start in range(0, p, chunk_size):
        stop = min(p, start + chunk_size)
        E = torch.zeros(p, stop - start, dtype=A.dtype, device=A.device)
        E[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        cols.append(A @ E)
    return torch.cat(cols, dim=1)
