"""Data sets and initial networks of the Wu & Su (2023) reproduction, drawn by the library.

Every unit draws its data set with :func:`dynstab.data.make_regression_dataset` (a sparse linear
teacher on Gaussian, spherical or cube inputs for the diagonal net; a sum-of-ReLUs teacher on
spherical inputs for the ReLU net) and its initial network with the :mod:`dynstab.models`
constructors (:class:`~dynstab.models.DiagonalLinearNet`, :class:`~dynstab.models.TwoLayerReLU`,
or :func:`dynstab.data.unbalanced_diagonal_init` for a prescribed balancedness), each from its
own ``torch.Generator``: random stream ``stream`` of unit seed ``seed`` is seeded with the first
word of ``numpy.random.SeedSequence([seed, stream])`` (:func:`stream_seed`), so data,
initialization and the SGD batch stream are independent and a unit depends only on its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from dynstab.data import (
    Dataset,
    ReLUTeacher,
    SparseLinearTeacher,
    make_regression_dataset,
    unbalanced_diagonal_init,
)
from dynstab.models import DiagonalLinearNet, TwoLayerReLU

if TYPE_CHECKING:  # configs imports this module: the data config is only a type here
    from dynstab_repro.wu_su_2023.configs import DiagonalDataConfig

__all__ = [
    "INPUT_KINDS",
    "STREAM_SAMPLER",
    "Problem",
    "diagonal_problem",
    "init_diagonal",
    "init_relu",
    "init_unbalanced",
    "relu_problem",
    "stream_seed",
    "torch_generator",
]

INPUT_KINDS: tuple[str, ...] = ("gaussian", "sphere", "cube")

# Random streams per unit seed (data, sampler and initializations are independent).
_STREAM_DIAGONAL_DATA, _STREAM_RELU_DATA = 1, 2
#: Stream of the SGD batch indices.
STREAM_SAMPLER = 3
_STREAM_DIAGONAL_INIT, _STREAM_UNBALANCED_INIT, _STREAM_RELU_INIT = 4, 5, 6


def stream_seed(seed: int, stream: int) -> int:
    """The 64-bit torch seed of random stream ``stream`` of unit seed ``seed``.

    The first word of ``SeedSequence([seed, stream])``: different streams of one seed and
    equal streams of different seeds are independent.

    Example:
        >>> stream_seed(0, 1) == stream_seed(0, 1) != stream_seed(0, 2)
        True
    """
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint64)[0]
    return int(state)


def torch_generator(seed: int, stream: int) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`stream_seed` ``(seed, stream)``.

    Example:
        >>> g1, g2 = torch_generator(0, 1), torch_generator(0, 1)
        >>> bool(torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2)))
        True
    """
    return torch.Generator().manual_seed(stream_seed(seed, stream))


@dataclass(frozen=True)
class Problem:
    """A noiseless regression data set (float64 tensors).

    Attributes:
        X: Training inputs ``(n, d)``.
        y: Training targets ``(n,)``.
        X_test: Fresh test inputs ``(n_test, d)``.
        y_test: Their targets ``(n_test,)``.
        teacher: Teacher parameters (β* ``(d,)`` for the linear teacher, V ``(k, d)`` for ReLU).
    """

    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor
    teacher: Tensor

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Problem:
        """Take a :class:`dynstab.data.Dataset` with a sparse-linear or ReLU teacher.

        Raises:
            TypeError: If the data set has another (or no) teacher.
        """
        t = ds.teacher
        if isinstance(t, SparseLinearTeacher):
            teacher = t.beta_star
        elif isinstance(t, ReLUTeacher):
            teacher = t.V
        else:
            raise TypeError(
                "Problem needs a SparseLinearTeacher or ReLUTeacher data set; got teacher "
                f"{type(t).__name__}. Build it with dynstab.data.make_regression_dataset."
            )

        def f64(v: Tensor) -> Tensor:
            return v.detach().to(torch.float64)

        return cls(f64(ds.X), f64(ds.y), f64(ds.X_test), f64(ds.y_test), f64(teacher))


def diagonal_problem(data: DiagonalDataConfig, seed: int) -> Problem:
    """Sparse linear teacher β* = (1, …, 1, 0, …) (``data.support`` ones) on ``data.inputs`` data.

    ``data`` gives the sizes d, n, n_test, the input law and the support; drawn by
    :func:`dynstab.data.make_regression_dataset` (X, then X_test).

    Raises:
        ValueError: For an unknown ``inputs`` (``"gaussian"``, ``"sphere"``, ``"cube"``).

    Example:
        >>> from dynstab_repro.wu_su_2023.configs import DiagonalDataConfig
        >>> p = diagonal_problem(DiagonalDataConfig(d=5, n=3, n_test=4, support=2), seed=0)
        >>> tuple(p.X.shape), p.teacher.tolist(), bool(torch.allclose(p.y, p.X @ p.teacher))
        ((3, 5), [1.0, 1.0, 0.0, 0.0, 0.0], True)
    """
    ds = make_regression_dataset(
        "sparse_linear",
        data.n,
        data.n_test,
        data.d,
        input_dist=data.inputs,
        sparsity=data.support,
        generator=torch_generator(seed, _STREAM_DIAGONAL_DATA),
    )
    return Problem.from_dataset(ds)


def relu_problem(*, d: int, n: int, n_test: int, k: int, seed: int) -> Problem:
    """Sum-of-k-ReLU teacher f*(x) = Σ_i σ(v_iᵀx), v_i ~ Unif(S^{d−1}), spherical inputs.

    Drawn by :func:`dynstab.data.make_regression_dataset` (V, X, then X_test).

    Example:
        >>> p = relu_problem(d=4, n=3, n_test=2, k=2, seed=0)
        >>> bool(torch.allclose(p.teacher.norm(dim=1), torch.ones(2, dtype=torch.float64)))
        True
    """
    ds = make_regression_dataset(
        "relu", n, n_test, d, k=k, generator=torch_generator(seed, _STREAM_RELU_DATA)
    )
    return Problem.from_dataset(ds)


def init_diagonal(d: int, scale: float, seed: int) -> DiagonalLinearNet:
    """``DiagonalLinearNet(d, init_scale=scale)`` in float64: a_j, b_j ~ iid N(0, scale²).

    Example:
        >>> init_diagonal(4, 1.0, 0).a.shape
        torch.Size([4])
    """
    return DiagonalLinearNet(
        d,
        init_scale=scale,
        generator=torch_generator(seed, _STREAM_DIAGONAL_INIT),
        dtype=torch.float64,
    )


def init_unbalanced(d: int, r0: float, std: float, seed: int) -> DiagonalLinearNet:
    """A diagonal net with balancedness r(θ_0) = r0 exactly (:func:`unbalanced_diagonal_init`).

    a ~ N(0, std²), b = c ε a with ε = ±1 and c = r0 + √(r0² − 1).

    Raises:
        ValueError: If ``r0 < 1`` or ``std <= 0``.

    Example:
        >>> from dynstab.norms import balancedness
        >>> round(balancedness(init_unbalanced(50, 3.0, 0.1, 0)), 12)
        3.0
    """
    a, b = unbalanced_diagonal_init(
        d, r0, std=std, generator=torch_generator(seed, _STREAM_UNBALANCED_INIT)
    )
    return DiagonalLinearNet.from_tensors(a.to(torch.float64), b.to(torch.float64))


def init_relu(d: int, m: int, init: str, seed: int) -> TwoLayerReLU:
    """``TwoLayerReLU(d, m, init=init)`` in float64 (rows N(0, I/d) for ``"lw"``).

    Raises:
        ValueError: For an unknown ``init``.

    Example:
        >>> init_relu(3, 2, "lw", 0).w.shape
        torch.Size([2, 3])
    """
    return TwoLayerReLU(
        d, m, init=init, generator=torch_generator(seed, _STREAM_RELU_INIT), dtype=torch.float64
    )
