"""Synthetic inputs, regression data sets and initializations (Wu & Su 2023; MMS21).

All randomness comes from an explicit ``generator``; samples are drawn in float64 and cast to
``dtype`` so that the same seed gives the same data in every dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int, check_positive
from dynstab.data.dataset import Dataset
from dynstab.data.teachers import ReLUTeacher, SparseLinearTeacher

__all__ = [
    "INPUT_DISTRIBUTIONS",
    "cube_inputs",
    "gaussian_inputs",
    "make_regression_dataset",
    "one_d_dataset",
    "sphere_inputs",
    "unbalanced_diagonal_init",
]


def gaussian_inputs(
    n: int, d: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Draw n iid inputs x ~ N(0, I_d); shape ``(n, d)``.

    Example:
        >>> gaussian_inputs(4, 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3])
    """
    check_int("n", n, minimum=0)
    check_int("d", d, minimum=1)
    return torch.randn(n, d, generator=generator, dtype=torch.float64).to(dtype)


def sphere_inputs(
    n: int, d: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Draw n iid inputs x ~ Unif(√d S^{d−1}) (so ‖x‖ = √d and E xxᵀ = I_d); shape ``(n, d)``.

    Example:
        >>> x = sphere_inputs(2, 4, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(x.norm(dim=1), torch.full((2,), 2.0, dtype=torch.float64))
        True
    """
    Z = gaussian_inputs(n, d, generator=generator, dtype=torch.float64)
    return (math.sqrt(d) * Z / Z.norm(dim=1, keepdim=True)).to(dtype)


def cube_inputs(
    n: int, d: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Draw n iid inputs x ~ Unif[−1, 1]^d (s_j = E x_j² = 1/3); shape ``(n, d)``.

    Example:
        >>> bool(cube_inputs(100, 2, generator=torch.Generator().manual_seed(0)).abs().max() <= 1)
        True
    """
    check_int("n", n, minimum=0)
    check_int("d", d, minimum=1)
    U = torch.rand(n, d, generator=generator, dtype=torch.float64)
    return (2.0 * U - 1.0).to(dtype)


INPUT_DISTRIBUTIONS: dict[str, Callable[..., Tensor]] = {
    "gaussian": gaussian_inputs,
    "sphere": sphere_inputs,
    "cube": cube_inputs,
}

_KINDS = ("sparse_linear", "relu")


def make_regression_dataset(
    kind: str,
    n: int,
    n_test: int,
    d: int,
    *,
    input_dist: str | None = None,
    k: int = 10,
    beta_star: Tensor | None = None,
    sparsity: int = 3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Build a noiseless teacher–student regression data set (Wu & Su, ICML 2023).

    * ``kind="sparse_linear"``: y = β*ᵀx, β* = ``beta_star`` or (1, …, 1, 0, …, 0) with
      ``sparsity`` ones; default inputs N(0, I_d) (the diagonal-net experiments).
    * ``kind="relu"``: y = Σ_{i=1}^k σ(v_iᵀx), v_i ~ Unif(S^{d−1}); default inputs
      Unif(√d S^{d−1}) (the two-layer ReLU experiments).

    Draw order from ``generator``: teacher directions (``relu`` only), X, then X_test.

    Args:
        kind: ``"sparse_linear"`` or ``"relu"``.
        n: Training size, >= 1.
        n_test: Test size, >= 0.
        d: Input dimension, >= 1.
        input_dist: ``"gaussian"``, ``"sphere"`` or ``"cube"``; None picks the default above.
        k: Number of teacher ReLUs (``relu``).
        beta_star: Explicit teacher vector ``(d,)`` (``sparse_linear``).
        sparsity: Number of leading ones in the default β*.
        generator: Random source.
        dtype: dtype of X and y (float64 by default).

    Returns:
        A :class:`Dataset` with targets of shape ``(n,)``, ``teacher`` set and JSON-able meta.

    Raises:
        ValueError: On an unknown kind or input distribution or inconsistent sizes.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> ds = make_regression_dataset("relu", 5, 3, 4, k=2, generator=g)
        >>> ds.X.shape, ds.y.shape, ds.meta["input_dist"]
        (torch.Size([5, 4]), torch.Size([5]), 'sphere')
    """
    check_choice("kind", kind, _KINDS)
    check_int("n", n, minimum=1)
    check_int("n_test", n_test, minimum=0)
    check_int("d", d, minimum=1)
    if input_dist is None:
        input_dist = "gaussian" if kind == "sparse_linear" else "sphere"
    check_choice("input_dist", input_dist, INPUT_DISTRIBUTIONS)
    meta: dict[str, object] = {"kind": kind, "n": n, "n_test": n_test, "d": d}
    teacher: SparseLinearTeacher | ReLUTeacher
    if kind == "sparse_linear":
        if beta_star is None:
            teacher = SparseLinearTeacher.first_k(d, sparsity, dtype=torch.float64)
        else:
            if tuple(beta_star.shape) != (d,):
                raise ValueError(f"beta_star must have shape ({d},); got {tuple(beta_star.shape)}.")
            teacher = SparseLinearTeacher(beta_star.to(torch.float64))
        meta["teacher_l1"] = float(teacher.beta_star.abs().sum())
        meta["teacher_nnz"] = int((teacher.beta_star != 0).sum())
    else:
        teacher = ReLUTeacher(k, d, generator=generator, dtype=torch.float64)
        meta["k"] = k
    sample = INPUT_DISTRIBUTIONS[input_dist]
    X = sample(n, d, generator=generator, dtype=torch.float64)
    X_test = sample(n_test, d, generator=generator, dtype=torch.float64)
    meta["input_dist"] = input_dist
    return Dataset(
        X=X.to(dtype),
        y=teacher(X).to(dtype),
        X_test=X_test.to(dtype),
        y_test=teacher(X_test).to(dtype),
        meta=meta,
        teacher=teacher,
    )


def unbalanced_diagonal_init(
    d: int,
    r0: float,
    *,
    std: float = 0.1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Draw a diagonal-net initialization with balancedness exactly r(θ₀) = r0 (``wu-su-2023/e2``).

    a_j ~ N(0, std²), ε_j = ±1 with probability ½ each, b_j = c ε_j a_j with
    c = r0 + √(r0² − 1). Every coordinate has (a_j² + b_j²)/(2|a_j b_j|) = (1 + c²)/(2c) = r0,
    so r(θ₀) = r0 for the plain and for every s-weighted ratio. r0 = 1 gives b = ±a (signs of
    β frozen under gradient flow; prefer r0 ≥ 1.05).

    Args:
        d: Dimension, >= 1.
        r0: Target ratio, >= 1.
        std: Standard deviation of a, > 0.
        generator: Random source (a first, then ε).
        dtype: dtype of the returned vectors.

    Returns:
        ``(a, b)``, each of shape ``(d,)``; load with ``DiagonalLinearNet.from_tensors(a, b)``.

    Raises:
        ValueError: If ``r0 < 1`` or ``std <= 0``.

    Example:
        >>> a, b = unbalanced_diagonal_init(5, 4.0, generator=torch.Generator().manual_seed(0))
        >>> round(float((a**2 + b**2).sum() / (2 * (a * b).abs().sum())), 12)
        4.0
    """
    check_int("d", d, minimum=1)
    r = check_positive("r0", r0)
    if r < 1.0:
        raise ValueError(
            f"r0 must be >= 1 (r(θ) = Σ(a²+b²)/(2Σ|ab|) >= 1 by AM–GM); got {r0}. "
            "Use r0 = 1 for balanced, larger for unbalanced."
        )
    s = check_positive("std", std)
    a = torch.randn(d, generator=generator, dtype=torch.float64) * s
    eps = torch.randint(0, 2, (d,), generator=generator).to(torch.float64) * 2.0 - 1.0
    c = r + math.sqrt(r * r - 1.0)
    return a.to(dtype), (c * eps * a).to(dtype)


_ONE_D_KINDS = ("uniform", "gaussian", "laplace", "chebyshev")


def _one_d_inputs(kind: str, n: int, generator: torch.Generator | None) -> Tensor:
    if kind == "chebyshev":
        return torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    if kind == "gaussian":
        return torch.randn(n, generator=generator, dtype=torch.float64)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if kind == "uniform":  # Unif[−√3, √3]: zero mean, unit variance
        return math.sqrt(3.0) * (2.0 * u - 1.0)
    b = 1.0 / math.sqrt(2.0)  # Laplace(0, b) has variance 2b² = 1; inverse CDF
    v = u - 0.5
    return -b * torch.sign(v) * torch.log1p(-2.0 * v.abs())


def one_d_dataset(
    kind: str,
    n: int,
    *,
    labels: str | None = None,
    degree: int = 3,
    standardize: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Build a univariate data set for MMS21's function-space experiments.

    Inputs (returned sorted, shape ``(n, 1)``):

    * ``"uniform"``, ``"gaussian"``, ``"laplace"``: iid from the zero-mean, unit-variance
      Unif[−√3, √3], N(0, 1) or Laplace(0, 1/√2) (MMS21, Fig. 2);
    * ``"chebyshev"``: n points evenly spaced on [−1, 1] (C21's ``chebyshev-{deg}-{n}``).

    Labels: ``"random"`` (iid N(0, 1), the default for random inputs) or ``"chebyshev"``
    (T_degree(x), the default for ``kind="chebyshev"``). The test split is empty.

    Args:
        kind: One of ``"uniform"``, ``"gaussian"``, ``"laplace"``, ``"chebyshev"``.
        n: Number of points, >= 2.
        labels: ``"random"``, ``"chebyshev"`` or None (kind's default).
        degree: Chebyshev degree, >= 0.
        standardize: Rescale the inputs to empirical zero mean and unit std (ddof = 0).
        generator: Random source (inputs, then labels).
        dtype: dtype of X and y.

    Returns:
        A :class:`Dataset` with ``X`` of shape ``(n, 1)`` and ``y`` of shape ``(n,)``.

    Raises:
        ValueError: On unknown options or ``n < 2``.

    Example:
        >>> ds = one_d_dataset("chebyshev", 5, degree=2)
        >>> ds.y  # T_2(x) = 2x² − 1 on (−1, −0.5, 0, 0.5, 1)
        tensor([ 1.0000, -0.5000, -1.0000, -0.5000,  1.0000], dtype=torch.float64)
    """
    check_choice("kind", kind, _ONE_D_KINDS)
    check_int("n", n, minimum=2)
    check_int("degree", degree, minimum=0)
    if labels is None:
        labels = "chebyshev" if kind == "chebyshev" else "random"
    check_choice("labels", labels, ("random", "chebyshev"))
    x = torch.sort(_one_d_inputs(kind, n, generator)).values
    if standardize:
        x = (x - x.mean()) / x.std(unbiased=False)
    if labels == "chebyshev":
        y = torch.from_numpy(np.polynomial.chebyshev.chebval(x.numpy(), [0.0] * degree + [1.0]))
    else:
        y = torch.randn(n, generator=generator, dtype=torch.float64)
    meta = {"kind": kind, "n": n, "n_test": 0, "labels": labels, "standardized": standardize}
    if labels == "chebyshev":
        meta["degree"] = degree
    empty = torch.zeros(0, dtype=dtype)
    return Dataset(
        X=x[:, None].to(dtype),
        y=y.to(dtype),
        X_test=empty.reshape(0, 1),
        y_test=empty,
        meta=meta,
    )
