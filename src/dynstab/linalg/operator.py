"""Square linear operators that count their matrix-vector products.

Every estimator in :mod:`dynstab.linalg` accepts a dense square ``Tensor`` (or numpy array), a
``scipy.sparse.linalg.LinearOperator`` (or scipy sparse matrix), or an object with ``shape``,
``dtype``, ``device`` and ``@`` (see :class:`dynstab._types.LinearOperatorLike`).
:func:`as_operator` wraps all of them into a :class:`LinearOperator`, whose ``num_matvecs``
counts the vectors it has been applied to (a ``(p, k)`` block counts as ``k`` products), and
:meth:`LinearOperator.to_scipy` goes the other way (float64 numpy in and out), so dynstab's
curvature operators plug into scipy's ``eigsh``/``cg`` and curvlinops-style tooling.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from dynstab._types import LinearOperatorLike

if TYPE_CHECKING:  # scipy.sparse.linalg is imported lazily (about 0.4 s)
    import scipy.sparse.linalg as spla

__all__ = ["DenseOperator", "FunctionOperator", "LinearOperator", "as_operator", "to_dense"]


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

    def to_scipy(self) -> spla.LinearOperator:
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out).

        Products run in this operator's dtype and device (inputs are cast, outputs returned as
        float64 numpy arrays) and are counted in :attr:`num_matvecs`. Symmetric operators
        (``SELF_ADJOINT``) also provide ``rmatvec``.

        Returns:
            A scipy ``LinearOperator`` of shape ``(p, p)`` and dtype float64.

        Example:
            >>> from scipy.sparse.linalg import eigsh
            >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64)))
            >>> round(float(eigsh(op.to_scipy(), k=1, which="LA")[0][0]), 10)
            5.0
        """
        # deferred: scipy.sparse.linalg costs ~0.4 s to import and only this method needs it
        import scipy.sparse.linalg as spla

        p = self._size

        def matmat(X: np.ndarray) -> np.ndarray:
            V = torch.as_tensor(np.asarray(X, dtype=np.float64).reshape(p, -1))
            return (self @ V).to(dtype=torch.float64, device="cpu").numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(p, 1))[:, 0]

        adjoint = {"rmatvec": matvec, "rmatmat": matmat} if self.SELF_ADJOINT else {}
        return spla.LinearOperator(
            (p, p), matvec=matvec, matmat=matmat, dtype=np.float64, **adjoint
        )

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


class FunctionOperator(LinearOperator):
    """A symmetric operator given by a function on tensors of any shape.

    The operator acts on ``ℝ^{p}`` with ``p = prod(vector_shape)`` (the Frobenius inner product
    for matrices): ``A @ v = fn(v.reshape(vector_shape)).reshape(p)``. With ``batched=True``,
    ``fn`` receives a stack ``(k, *vector_shape)`` and must return the same shape (one call per
    block); otherwise it is called once per column.

    Args:
        fn: The linear map on tensors of shape ``vector_shape``.
        vector_shape: Shape of the vectors ``fn`` acts on, e.g. ``(ρ, ρ)`` for matrices.
        dtype: Floating dtype of the products.
        device: Device of the products. Default: CPU.
        batched: Whether ``fn`` accepts a leading batch dimension. Default: ``False``.
        symmetric: Whether ``fn`` is self-adjoint (sets ``SELF_ADJOINT``). Default: ``True``.

    Raises:
        TypeError: If ``fn`` is not callable or ``dtype`` is not floating.
        ValueError: If ``vector_shape`` has a non-positive entry.

    Example:
        >>> M = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
        >>> op = FunctionOperator(lambda X: M @ X + X @ M, (2, 2), dtype=torch.float64)
        >>> op.shape, (op @ torch.eye(2, dtype=torch.float64).reshape(4)).tolist()
        ((4, 4), [4.0, 0.0, 0.0, 6.0])
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        vector_shape: Sequence[int] | torch.Size,
        *,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        batched: bool = False,
        symmetric: bool = True,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
        shape = tuple(int(d) for d in vector_shape)
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"vector_shape must have positive entries; got {tuple(shape)}.")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be floating; got {dtype}.")
        super().__init__(math.prod(shape), dtype, torch.device(device))
        self.fn = fn
        self.vector_shape = shape
        self.batched = batched
        self.SELF_ADJOINT = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        p, k = V.shape
        if self.batched:
            out = self.fn(V.T.reshape(k, *self.vector_shape))
            return out.reshape(k, p).T.to(self._dtype)
        cols = [self.fn(V[:, j].reshape(self.vector_shape)).reshape(p) for j in range(k)]
        return torch.stack(cols, dim=1).to(self._dtype)


class _ScipyOperator(LinearOperator):
    """A ``scipy.sparse.linalg.LinearOperator`` seen from torch (CPU, float64 or float32)."""

    def __init__(self, op: spla.LinearOperator) -> None:
        shape = tuple(op.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"operator must be square (p, p); got shape {shape}.")
        dtype = torch.float32 if np.dtype(op.dtype) == np.float32 else torch.float64
        if not np.issubdtype(np.dtype(op.dtype), np.floating):
            raise TypeError(f"operator must have a real floating dtype; got {op.dtype}.")
        super().__init__(int(shape[0]), dtype, torch.device("cpu"))
        self.op = op

    def _matmat(self, V: Tensor) -> Tensor:
        out = self.op.matmat(V.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(out), dtype=self._dtype).reshape(V.shape)


def _as_scipy(op: object) -> spla.LinearOperator | None:
    """``op`` as a scipy LinearOperator if it is one (or a scipy sparse matrix), else None."""
    if "scipy.sparse" not in sys.modules:  # nobody made a scipy object: skip the import
        return None
    import scipy.sparse as sp  # deferred with the check above
    import scipy.sparse.linalg as spla

    if isinstance(op, spla.LinearOperator):
        return op
    if sp.issparse(op):
        return spla.aslinearoperator(op)
    return None


def as_operator(op: Tensor | LinearOperatorLike | object) -> LinearOperator:
    """Return ``op`` as a :class:`LinearOperator` (dense tensors are wrapped, not copied).

    Args:
        op: Square floating tensor or numpy array of shape ``(p, p)``, a dynstab or foreign
            operator-like object, a ``scipy.sparse.linalg.LinearOperator`` or a scipy sparse
            matrix.

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
    if isinstance(op, np.ndarray):
        return DenseOperator(torch.from_numpy(op))
    scipy_op = _as_scipy(op)
    if scipy_op is not None:
        return _ScipyOperator(scipy_op)
    if isinstance(op, LinearOperatorLike):
        shape = tuple(op.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"operator must be square (p, p); got shape {shape}.")
        if not op.dtype.is_floating_point:
            raise TypeError(f"operator must have a floating dtype; got {op.dtype}.")
        return _WrappedOperator(op)
    raise TypeError(
        "expected a square torch.Tensor, numpy array, scipy LinearOperator, or an operator "
        f"with shape, dtype, device and @; got {type(op).__name__}."
    )


def to_dense(op: Tensor | LinearOperatorLike | object, *, chunk_size: int = 64) -> Tensor:
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
