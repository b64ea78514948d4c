"""Stochastic trace and Frobenius-norm estimators (Hutchinson, Hutch++).

For random probes ``v`` with ``E[v vᵀ] = I`` (Rademacher or standard normal):

    tr(A) = E[vᵀ A v],        ‖A‖_F² = tr(AᵀA) = E[‖A v‖²].

One set of ``m`` probes gives both estimates at the cost of ``m`` products. Each estimate is a
sample mean of i.i.d. terms, so its standard error is the sample standard deviation
(``ddof=1``) divided by ``√m`` (``nan`` when ``m = 1``). With Rademacher probes the trace
estimate is exact for diagonal ``A`` (every term equals ``tr A``, standard error 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int
from dynstab._types import LinearOperatorLike
from dynstab.linalg.operator import LinearOperator, as_operator

__all__ = [
    "TraceResult",
    "hutchinson_squared_frobenius",
    "hutchinson_trace",
    "hutchinson_trace_and_frobenius",
    "hutchpp_trace",
    "hutchpp_trace_and_frobenius",
]

_DISTRIBUTIONS = ("rademacher", "normal")


@dataclass(frozen=True)
class TraceResult:
    """A stochastic estimate with its standard error.

    Attributes:
        estimate: The estimate (float64 arithmetic).
        stderr: Standard error of the estimate (``nan`` if it cannot be estimated).
        num_matvecs: Operator products spent.
        num_probes: Number of random probes averaged.
    """

    estimate: float
    stderr: float
    num_matvecs: int
    num_probes: int


def _probes(
    p: int, k: int, distribution: str, generator: torch.Generator | None, A: LinearOperator
) -> Tensor:
    """Draw ``k`` probes as the columns of a ``(p, k)`` block.

    Probes are drawn one at a time, so the stream does not depend on the blocking.
    """
    cols = []
    for _ in range(k):
        if distribution == "rademacher":
            v = torch.randint(0, 2, (p,), generator=generator, dtype=torch.int64)
            cols.append(2.0 * v.to(torch.float64) - 1.0)
        else:
            cols.append(torch.randn(p, generator=generator, dtype=torch.float64))
    return torch.stack(cols, dim=1).to(dtype=A.dtype, device=A.device)


def _sample_mean(samples: Tensor, num_matvecs: int, offset: float = 0.0) -> TraceResult:
    """``offset + mean(samples)`` with the standard error ``std(ddof=1)/√m`` (``nan`` if m < 2)."""
    m = samples.numel()
    mean = offset + float(samples.mean())
    se = float(samples.std(correction=1)) / math.sqrt(m) if m >= 2 else float("nan")
    return TraceResult(mean, se, num_matvecs, m)


def _hutchinson_samples(
    op: Tensor | LinearOperatorLike,
    num_probes: int,
    generator: torch.Generator | None,
    distribution: str,
    block_size: int,
) -> tuple[Tensor, Tensor]:
    A = as_operator(op)
    check_int("num_probes", num_probes, minimum=1)
    check_int("block_size", block_size, minimum=1)
    check_choice("distribution", distribution, _DISTRIBUTIONS)
    p = A.shape[0]
    quad, sq = [], []
    for start in range(0, num_probes, block_size):
        b = min(block_size, num_probes - start)
        V = _probes(p, b, distribution, generator, A)
        AV = A @ V
        quad.append((V * AV).sum(0).to(torch.float64))
        sq.append((AV * AV).sum(0).to(torch.float64))
    return torch.cat(quad), torch.cat(sq)


def hutchinson_trace(
    op: Tensor | LinearOperatorLike,
    num_probes: int,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    block_size: int = 32,
) -> TraceResult:
    """Estimate ``tr(A)`` by averaging ``vᵀ A v`` over random probes.

    The trace half of :func:`hutchinson_trace_and_frobenius` (same arguments, same probes).

    Returns:
        :class:`TraceResult`; costs ``m = num_probes`` products.

    Raises:
        ValueError: If ``num_probes``/``block_size`` < 1 or ``distribution`` is unknown.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
        >>> res = hutchinson_trace(A, 4)  # exact when A is diagonal
        >>> res.estimate, res.stderr
        (6.0, 0.0)

    References:
        Hutchinson (1989), Comm. Stat. Simul. Comput. 18(3).
    """
    return hutchinson_trace_and_frobenius(
        op, num_probes, generator=generator, distribution=distribution, block_size=block_size
    )[0]


def hutchinson_squared_frobenius(
    op: Tensor | LinearOperatorLike,
    num_probes: int,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    block_size: int = 32,
) -> TraceResult:
    """Estimate ``‖A‖_F²`` by averaging ``‖A v‖²`` over random probes.

    The Frobenius half of :func:`hutchinson_trace_and_frobenius` (same arguments, same probes).

    Returns:
        :class:`TraceResult` estimating the *squared* norm; costs ``m = num_probes`` products.

    Raises:
        ValueError: If ``num_probes``/``block_size`` < 1 or ``distribution`` is unknown.

    Example:
        >>> res = hutchinson_squared_frobenius(torch.eye(3), 2)  # ‖Iv‖² = 3 for ±1 probes
        >>> res.estimate
        3.0
    """
    return hutchinson_trace_and_frobenius(
        op, num_probes, generator=generator, distribution=distribution, block_size=block_size
    )[1]


def hutchinson_trace_and_frobenius(
    op: Tensor | LinearOperatorLike,
    num_probes: int,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    block_size: int = 32,
) -> tuple[TraceResult, TraceResult]:
    """Estimate ``tr(A)`` and ``‖A‖_F²`` from one shared set of probes.

    Each probe ``v`` costs one product ``A v`` and contributes ``vᵀAv`` to the trace and
    ``‖Av‖²`` to the squared Frobenius norm.

    Args:
        op: Square tensor or operator of shape ``(p, p)``.
        num_probes: Number of probes ``m``, >= 1 (>= 2 for standard errors).
        generator: Random source (CPU); ``None`` uses torch's default generator.
        distribution: ``"rademacher"`` (±1 entries) or ``"normal"``. Default: ``"rademacher"``.
        block_size: Probes applied per block product (the results do not depend on it).
            Default: ``32``.

    Returns:
        ``(trace, squared_frobenius)`` :class:`TraceResult` pair; each reports the ``m``
        shared products as its ``num_matvecs`` (the total cost is ``m``, not ``2m``).

    Raises:
        ValueError: If ``num_probes``/``block_size`` < 1 or ``distribution`` is unknown.

    Example:
        >>> tr, fro2 = hutchinson_trace_and_frobenius(torch.diag(torch.tensor([1.0, 2.0])), 3)
        >>> tr.estimate, fro2.estimate
        (3.0, 5.0)
    """
    quad, sq = _hutchinson_samples(op, num_probes, generator, distribution, block_size)
    return _sample_mean(quad, num_probes), _sample_mean(sq, num_probes)


def hutchpp_trace(
    op: Tensor | LinearOperatorLike,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
) -> TraceResult:
    """Estimate ``tr(A)`` with Hutch++ (low-rank deflation plus Hutchinson on the rest).

    The trace half of :func:`hutchpp_trace_and_frobenius` (same arguments, same products).

    Returns:
        :class:`TraceResult`; see :func:`hutchpp_trace_and_frobenius` for its cost and
        standard error.

    Raises:
        ValueError: If ``num_matvecs < 3`` or ``distribution`` is unknown.

    Example:
        >>> A = torch.diag(torch.tensor([5.0, 1.0, 0.5], dtype=torch.float64))
        >>> round(hutchpp_trace(A, 9, generator=torch.Generator().manual_seed(0)).estimate, 8)
        6.5

    References:
        Meyer, Musco, Musco & Woodruff (2021), SOSA, "Hutch++".
    """
    return hutchpp_trace_and_frobenius(
        op, num_matvecs, generator=generator, distribution=distribution
    )[0]


def hutchpp_trace_and_frobenius(
    op: Tensor | LinearOperatorLike,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
) -> tuple[TraceResult, TraceResult]:
    """Estimate ``tr(A)`` and ``‖A‖_F²`` with Hutch++ from one set of products.

    With ``s = ⌊m/3⌋``: ``Q = orth(A S)`` for ``s`` random probes ``S`` and ``P = QQᵀ``; then,
    over ``m − 2s`` further probes ``gᵢ`` projected to ``g̃ᵢ = (I−P)gᵢ``,

        tr(A)   ≈ tr(QᵀAQ) + mean_i g̃ᵢᵀ A g̃ᵢ,
        ‖A‖_F²  ≈ ‖AQ‖_F² + mean_i ‖A g̃ᵢ‖²,

    both unbiased given ``Q`` (for symmetric ``A``, ``tr(A²) = ‖AQ‖_F² + tr((I−P)A²(I−P))``).
    The Frobenius part reuses the products ``AQ`` and ``A g̃ᵢ`` of the trace, so it is free.
    Hutch++ has no simple standard error; the one reported is that of the Hutchinson part
    (sample standard deviation of the ``m − 2s`` terms over ``√(m − 2s)``), i.e. conditional on
    the sketch ``Q``. When ``s > p`` the basis ``Q`` has only ``p`` columns, ``A Q`` costs
    ``p`` products and both estimates are exact.

    Args:
        op: Symmetric square tensor or operator of shape ``(p, p)``.
        num_matvecs: Total product budget ``m``, >= 3 (>= 5 for standard errors).
        generator: Random source (CPU); ``None`` uses torch's default generator.
        distribution: ``"rademacher"`` or ``"normal"``. Default: ``"rademacher"``.

    Returns:
        ``(trace, squared_frobenius)`` :class:`TraceResult` pair; each reports the
        ``s + min(s, p) + (m − 2s)`` shared products actually spent (``m`` unless ``s > p``)
        and ``num_probes = m − 2s``.

    Raises:
        ValueError: If ``num_matvecs < 3`` or ``distribution`` is unknown.

    Example:
        >>> A = torch.diag(torch.tensor([5.0, 1.0, 0.5], dtype=torch.float64))
        >>> tr, fro2 = hutchpp_trace_and_frobenius(A, 9, generator=torch.Generator().manual_seed(0))
        >>> round(tr.estimate, 8), round(fro2.estimate, 8)  # s = 3 = p: exact
        (6.5, 26.25)

    References:
        Meyer, Musco, Musco & Woodruff (2021), SOSA, "Hutch++".
    """
    A = as_operator(op)
    check_int("num_matvecs", num_matvecs, minimum=3)
    check_choice("distribution", distribution, _DISTRIBUTIONS)
    p = A.shape[0]
    s = num_matvecs // 3
    S = _probes(p, s, distribution, generator, A)
    Q, _ = torch.linalg.qr(A @ S)
    AQ = A @ Q
    low = float(torch.trace(Q.T @ AQ).to(torch.float64))
    low_sq = float((AQ * AQ).sum().to(torch.float64))
    G = _probes(p, num_matvecs - 2 * s, distribution, generator, A)
    G = G - Q @ (Q.T @ G)
    AG = A @ G
    sq = (AG * AG).sum(0).to(torch.float64)
    AG = AG - Q @ (Q.T @ AG)
    quad = (G * AG).sum(0).to(torch.float64)
    cost = s + Q.shape[1] + G.shape[1]
    return _sample_mean(quad, cost, offset=low), _sample_mean(sq, cost, offset=low_sq)
