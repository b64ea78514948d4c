"""Teacher functions for noiseless regression (the experiments of Wu & Su, ICML 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynstab._checks import check_int

__all__ = ["ReLUTeacher", "SparseLinearTeacher"]


def _check_inputs(X: Tensor, d: int) -> None:
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"inputs must have shape (n, {d}); got {tuple(X.shape)}.")


class SparseLinearTeacher:
    """Linear teacher f*(x) = β*ᵀx (``wu-su-2023/e1``, ``e2`` use β* = (1, 1, 1, 0, …, 0)).

    Args:
        beta_star: Teacher vector, shape ``(d,)``.

    Example:
        >>> SparseLinearTeacher(torch.tensor([1.0, 0.0]))(torch.tensor([[2.0, 5.0]]))
        tensor([2.])
    """

    def __init__(self, beta_star: Tensor) -> None:
        beta = torch.as_tensor(beta_star)
        if beta.ndim != 1 or not beta.is_floating_point():
            raise ValueError(
                f"beta_star must be a floating 1-D tensor of shape (d,); got {tuple(beta.shape)} "
                f"({beta.dtype})."
            )
        self.beta_star = beta.detach().clone()

    @classmethod
    def first_k(
        cls, d: int, k: int = 3, *, dtype: torch.dtype = torch.float64
    ) -> SparseLinearTeacher:
        """Return the teacher with β* = (1, …, 1, 0, …, 0) (k ones, d entries)."""
        check_int("d", d, minimum=1)
        check_int("k", k, minimum=0, maximum=d)
        beta = torch.zeros(d, dtype=dtype)
        beta[:k] = 1.0
        return cls(beta)

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.beta_star.shape[0])

    def __call__(self, X: Tensor) -> Tensor:
        """Return β*ᵀx_i for inputs ``(n, d)``; shape ``(n,)``."""
        _check_inputs(X, self.d)
        return X @ self.beta_star.to(X.dtype)

    def __repr__(self) -> str:
        return f"SparseLinearTeacher(d={self.d}, nnz={int((self.beta_star != 0).sum())})"


class ReLUTeacher:
    """Sum-of-k-ReLU teacher f*(x) = Σ_{i=1}^k σ(v_iᵀx) with v_i iid Unif(S^{d−1}).

    Its path norm is k (``wu-su-2023/e3``, ``e4``: k = 10, d = 100).

    Args:
        k: Number of teacher neurons, >= 1.
        d: Input dimension, >= 1.
        generator: Random source for the directions.
        dtype: dtype of the directions (float64 by default).

    Example:
        >>> t = ReLUTeacher(3, 5, generator=torch.Generator().manual_seed(0))
        >>> t.V.norm(dim=1)
        tensor([1.0000, 1.0000, 1.0000], dtype=torch.float64)
    """

    def __init__(
        self,
        k: int,
        d: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        check_int("k", k, minimum=1)
        check_int("d", d, minimum=1)
        V = torch.randn(k, d, generator=generator, dtype=torch.float64)
        self.V = (V / V.norm(dim=1, keepdim=True)).to(dtype)

    @property
    def k(self) -> int:
        """Number of teacher neurons."""
        return int(self.V.shape[0])

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.V.shape[1])

    def __call__(self, X: Tensor) -> Tensor:
        """Return Σ_i σ(v_iᵀx) for inputs ``(n, d)``; shape ``(n,)``."""
        _check_inputs(X, self.d)
        return torch.relu(X @ self.V.to(X.dtype).T).sum(dim=1)

    def __repr__(self) -> str:
        return f"ReLUTeacher(k={self.k}, d={self.d})"
