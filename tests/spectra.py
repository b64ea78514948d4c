"""Registry of hard symmetric spectra with known eigenvalues, for the Krylov engine's tests.

Each :class:`SpectrumCase` builds an operator whose eigenvalues are known exactly (to float64
round-off): a diagonal, a dense orthogonal similarity ``Q diag(λ) Qᵀ`` with a random orthogonal
``Q``, or a matrix-free similarity ``H diag(λ) H`` with ``H`` a product of Householder
reflectors (cheap for large ``p``). Float32 cases store the float32 matrix and take as reference
the exact eigenvalues of that float32 matrix (computed in float64).

Stable API: ``SPECTRA`` (list of cases), ``SPECTRUM_IDS``, ``get_spectrum(name)``,
``SpectrumCase.build() -> BuiltSpectrum`` with ``op`` and ``eigenvalues`` (descending, float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

DTYPE = torch.float64


class Diagonal:
    """Matrix-free ``diag(λ)`` (exact products up to one rounding per entry)."""

    def __init__(self, lam: Tensor) -> None:
        self.lam = lam
        self.shape = (lam.numel(), lam.numel())
        self.dtype = lam.dtype
        self.device = lam.device

    def __matmul__(self, V: Tensor) -> Tensor:
        return self.lam * V if V.ndim == 1 else self.lam.unsqueeze(1) * V


class HouseholderSimilarity:
    """Matrix-free ``A = H diag(λ) H`` with ``H = H_1 ⋯ H_r`` a product of reflectors.

    ``H`` is orthogonal and symmetric-free (``H⁻¹ = Hᵀ = H_r ⋯ H_1``), so the eigenvalues of
    ``A = H diag(λ) Hᵀ`` are exactly ``λ``. Products cost ``O(p·r)``.
    """

    def __init__(self, lam: Tensor, reflectors: Tensor) -> None:
        self.lam = lam
        self.U = reflectors  # (p, r), unit columns
        self.shape = (lam.numel(), lam.numel())
        self.dtype = lam.dtype
        self.device = lam.device

    def _apply_H(self, X: Tensor, transpose: bool) -> Tensor:
        cols = range(self.U.shape[1])
        for j in reversed(cols) if not transpose else cols:
            u = self.U[:, j : j + 1]
            X = X - 2.0 * u @ (u.T @ X)
        return X

    def __matmul__(self, V: Tensor) -> Tensor:
        X = V.unsqueeze(1) if V.ndim == 1 else V
        Y = self._apply_H(self.lam.unsqueeze(1) * self._apply_H(X, True), False)
        return Y.squeeze(1) if V.ndim == 1 else Y


@dataclass
class BuiltSpectrum:
    """An operator and its exact eigenvalues (descending, float64)."""

    op: object
    eigenvalues: Tensor
    size: int
    norm: float


@dataclass(frozen=True)
class SpectrumCase:
    """A named operator with a known spectrum.

    Attributes:
        name: Registry key.
        spectrum: ``spectrum(generator) -> λ`` (float64, any order).
        form: ``"diag"``, ``"dense"`` (random orthogonal similarity) or ``"householder"``.
        dtype: Operator dtype.
        tags: Labels (``"cluster"``, ``"multiple"``, ``"rank"``, ``"indefinite"``, …).
        seed: Seed of the private generator.
    """

    name: str
    spectrum: Callable[[torch.Generator], Tensor]
    form: str = "dense"
    dtype: torch.dtype = DTYPE
    tags: tuple[str, ...] = ()
    seed: int = 0

    @property
    def id(self) -> str:
        return self.name

    def build(self) -> BuiltSpectrum:
        g = torch.Generator().manual_seed(self.seed)
        lam = self.spectrum(g).to(DTYPE)
        p = lam.numel()
        if self.form == "diag":
            d = lam.to(self.dtype)
            ref = d.to(DTYPE)
            op: object = Diagonal(d)
        elif self.form == "dense":
            Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=DTYPE))
            A64 = (Q * lam) @ Q.T
            A64 = 0.5 * (A64 + A64.T)
            A = A64.to(self.dtype)
            # the exact spectrum of the stored matrix (float32 rounding included)
            ref = torch.linalg.eigvalsh(A.to(DTYPE)) if self.dtype != DTYPE else lam
            op = A
        elif self.form == "householder":
            U = torch.randn(p, 3, generator=g, dtype=DTYPE)
            U = U / torch.linalg.vector_norm(U, dim=0)
            op = HouseholderSimilarity(lam.to(self.dtype), U.to(self.dtype))
            ref = lam
        else:  # pragma: no cover - registry typo
            raise ValueError(self.form)
        ref = ref.sort(descending=True).values
        return BuiltSpectrum(op, ref, p, float(ref.abs().max()))


def _bulk(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=DTYPE)


def _clustered(p: int, gap: float) -> Callable[[torch.Generator], Tensor]:
    def f(g: torch.Generator) -> Tensor:
        lam = _bulk(g, p, 0.0, 0.8)
        lam[0], lam[1] = 1.0, 1.0 - gap
        return lam

    return f


def _multiple(p: int, mult: int) -> Callable[[torch.Generator], Tensor]:
    def f(g: torch.Generator) -> Tensor:
        lam = _bulk(g, p, 0.0, 0.7)
        lam[:mult] = 2.0
        lam[mult] = 1.5
        return lam

    return f


def _rank(p: int, r: int) -> Callable[[torch.Generator], Tensor]:
    def f(g: torch.Generator) -> Tensor:
        lam = torch.zeros(p, dtype=DTYPE)
        lam[:r] = _bulk(g, r, 0.5, 3.0)
        return lam

    return f


def _indefinite(p: int) -> Callable[[torch.Generator], Tensor]:
    def f(g: torch.Generator) -> Tensor:
        lam = _bulk(g, p, -1.0, 1.0)
        lam[0], lam[1] = 1.6, 1.6 * (1 - 1e-3)
        lam[-1], lam[-2], lam[-3] = -2.5, -2.5, -2.4
        return lam

    return f


def _hessian_like(p: int) -> Callable[[torch.Generator], Tensor]:
    """A few outliers above a decaying bulk with negative tail (a typical loss Hessian)."""

    def f(g: torch.Generator) -> Tensor:
        i = torch.arange(1, p + 1, dtype=DTYPE)
        lam = 10.0 / i**1.2
        lam[:5] = torch.tensor([40.0, 39.0, 38.96, 25.0, 24.0], dtype=DTYPE)
        lam[-p // 10 :] = -0.05 * torch.rand(p // 10, generator=g, dtype=DTYPE)
        return lam

    return f


def _tiny() -> Callable[[torch.Generator], Tensor]:
    def f(g: torch.Generator) -> Tensor:
        return torch.tensor([3.0, 3.0, -1.0, 0.5, 0.0], dtype=DTYPE)

    return f


SPECTRA: list[SpectrumCase] = [
    *[
        SpectrumCase(f"cluster_{gap:.0e}", _clustered(200, gap), tags=("cluster",), seed=i)
        for i, gap in enumerate([1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    ],
    SpectrumCase("cluster_1e-3_p2000_hh", _clustered(2000, 1e-3), "householder", tags=("cluster",)),
    SpectrumCase("cluster_1e-6_diag", _clustered(400, 1e-6), "diag", tags=("cluster",)),
    *[
        SpectrumCase(f"multiple_{m}", _multiple(150, m), tags=("multiple",), seed=10 + m)
        for m in (2, 3, 4)
    ],
    SpectrumCase("multiple_3_p1500_hh", _multiple(1500, 3), "householder", tags=("multiple",)),
    SpectrumCase("rank_1", _rank(60, 1), tags=("rank",), seed=20),
    SpectrumCase("rank_5_of_80", _rank(80, 5), tags=("rank",), seed=21),
    SpectrumCase("rank_3_diag", _rank(40, 3), "diag", tags=("rank",), seed=22),
    SpectrumCase("indefinite", _indefinite(160), tags=("indefinite",), seed=30),
    SpectrumCase("hessian_like_p800_hh", _hessian_like(800), "householder", tags=("indefinite",)),
    SpectrumCase("tiny_p5", _tiny(), tags=("multiple", "indefinite"), seed=40),
    SpectrumCase(
        "float32_cluster_1e-3", _clustered(200, 1e-3), dtype=torch.float32, tags=("float32",)
    ),
    SpectrumCase("float32_multiple_2", _multiple(120, 2), dtype=torch.float32, tags=("float32",)),
    SpectrumCase(
        "float32_diag_p3000", _clustered(3000, 1e-2), "diag", torch.float32, tags=("float32",)
    ),
    # where the segment-mode bound max(τ − η, floor) is most at risk: float32 products whose
    # round-off (a dense p = 300 product errs by up to ~√p units) is of the order of tol, a top
    # pair inside the floor, and matrix-free products with several roundings each
    SpectrumCase(
        "float32_cluster_1e-6_p300",
        _clustered(300, 1e-6),
        dtype=torch.float32,
        tags=("float32", "cluster"),
        seed=50,
    ),
    SpectrumCase(
        "float32_hessian_like_p800_hh",
        _hessian_like(800),
        "householder",
        torch.float32,
        tags=("float32", "indefinite"),
        seed=51,
    ),
]
SPECTRUM_IDS = [c.id for c in SPECTRA]


def get_spectrum(name: str) -> SpectrumCase:
    """The registry case called ``name``."""
    for c in SPECTRA:
        if c.name == name:
            return c
    raise KeyError(name)
