"""Validated Gram-type matrices: symmetry, finiteness, PSD certificate and the kept spectrum.

A Gram matrix K = JJᵀ/n (or H = JᵀJ/n) is checked **once** by :func:`validate_gram` and then
wrapped in a :class:`PSDMatrix`, which computes lazily, at most once each:

* a PSD certificate within a tolerance scaled to the matrix: λ_min ≥ −``PSD_RTOL``·‖A‖₂;
* the spectrum above the rank cut (eigenvalues > ``rank_tol``·λ_max) with orthonormal
  eigenvectors.

Both come from LAPACK's pivoted Cholesky ``dpstrf`` when the matrix is large, on the CPU and of
low rank r ≤ N/2: A = Πᵀ L Lᵀ Π + Πᵀ(0 ⊕ S)Π with the (N − r)² Schur complement S formed
explicitly, so λ_min(A) ≥ −‖S‖_F certifies PSD-ness and, when ‖S‖_F ≤ ``rank_tol``·λ_max, the
spectrum is that of the r×r matrix LᵀL (O(Nr²) instead of an O(N³) eigendecomposition, with the
same rank cut). Otherwise one ``torch.linalg.eigh`` of A gives both. A plain Cholesky of the
leading (⌊N/2⌋ + 1)-block (N³/24 flops) first screens out matrices of rank > N/2, on which
``dpstrf`` would run to completion (N³/3 flops) only to fail. References: Higham,
"Analysis of the Cholesky decomposition of a semi-definite matrix" (1990); Harbrecht, Peters &
Schneider, "On the low-rank approximation by the pivoted Cholesky decomposition" (2012).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack
from torch import Tensor

from dynstab._checks import check_int, check_square_matrix

__all__ = ["PSD_RTOL", "PSDMatrix", "Spectrum", "validate_gram"]

#: Relative tolerance of the PSD test: λ_min ≥ −PSD_RTOL·‖A‖₂ (and of the symmetry test).
PSD_RTOL = 1e-6
#: Matrices at least this large (on the CPU) try the pivoted-Cholesky route first.
FACTOR_MIN_SIZE = 256
#: Relative pivot (of max diag A) above which every pivot of the leading-block Cholesky must lie
#: for the screen to call A "rank > N/2" (with ``rank_tol`` when that is larger).
HIGH_RANK_PIVOT_RTOL = 1e-8
_EPS = float(np.finfo(np.float64).eps)


def validate_gram(K: object, outputs: int, *, name: str = "K") -> Tensor:
    """Check a Gram matrix K = JJᵀ/n cheaply and return it symmetrised in float64.

    Checks (O(N²)): a floating square 2-D tensor with finite entries, N = n·C ≥ 1 with C =
    ``outputs``, symmetry within ``PSD_RTOL``·max|K|, and no diagonal entry below
    −``PSD_RTOL``·max|K| (a negative diagonal already proves K is not PSD). The full PSD
    certificate is :meth:`PSDMatrix.certify`.

    Args:
        K: The matrix, shape ``(nC, nC)``.
        outputs: Number of outputs C.
        name: Name used in messages.

    Returns:
        ½(K + Kᵀ) in float64 on K's device.

    Raises:
        TypeError: If K is not a floating-point Tensor or ``outputs`` not an int.
        ValueError: If K is empty, not square, not finite, not symmetric, has a negative
            diagonal entry, or its size is not a multiple of ``outputs``.
    """
    if not isinstance(K, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (the Gram matrix J Jᵀ / n); got {type(K).__name__}. "
            "Convert it with torch.as_tensor(...)."
        )
    check_square_matrix(name, K)
    check_int("outputs", outputs, minimum=1)
    N = K.shape[0]
    if N == 0:
        raise ValueError(
            f"{name} must describe at least one sample; got shape (0, 0). Build K = JJᵀ/n from "
            "non-empty data."
        )
    if N % outputs != 0:
        raise ValueError(
            f"{name} must have shape (n*C, n*C) with C = outputs = {outputs}; got shape "
            f"{tuple(K.shape)}. Pass outputs equal to the number of model outputs."
        )
    K = K.detach().to(torch.float64)
    scale = max(float(K.abs().max()), 1e-300)
    asym = float((K - K.T).abs().max())
    if asym > PSD_RTOL * scale:
        raise ValueError(
            f"{name} must be symmetric (a Gram matrix JJᵀ/n); got max |K − Kᵀ| = {asym:.3e} "
            f"with max |K| = {scale:.3e}. Build K with dynstab.curvature.gram_matrix."
        )
    d = K.diagonal()
    i = int(d.argmin())
    if float(d[i]) < -PSD_RTOL * scale:
        raise ValueError(
            f"{name} must be positive semi-definite (a Gram matrix JJᵀ/n); got the negative "
            f"diagonal entry {name}[{i}, {i}] = {float(d[i]):.3e} (max |K| = {scale:.3e}). "
            "Pass K = J Jᵀ / n."
        )
    return 0.5 * (K + K.T)


@dataclass(frozen=True)
class Spectrum:
    """Kept eigenpairs of a PSD matrix A (float64).

    Attributes:
        values: Eigenvalues above ``rank_tol``·λ_max, shape ``(ρ,)``, descending.
        vectors: Orthonormal eigenvectors, shape ``(N, ρ)``.
        lambda_max: Largest eigenvalue of A (≥ 0).
        how: ``"eigh"`` or ``"pivoted Cholesky (rank r)"``.
    """

    values: Tensor
    vectors: Tensor
    lambda_max: float
    how: str


@dataclass(frozen=True)
class _Factor:
    """A = Πᵀ(LLᵀ + 0 ⊕ S)Π from ``dpstrf``: L in the original row order, ‖S‖_F."""

    L: np.ndarray
    schur_fro: float


class PSDMatrix:
    """A validated symmetric float64 matrix with a lazy PSD certificate and kept spectrum.

    Args:
        A: Symmetric float64 matrix (from :func:`validate_gram`, or JJᵀ/n / JᵀJ/n).
        rank_tol: Relative eigenvalue cut-off in [0, 1).
        name: Name used in messages.
        trusted: Whether A is PSD by construction (a product JJᵀ/n computed here); skips the
            certificate.

    Example:
        >>> M = PSDMatrix(torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)), 1e-10)
        >>> M.certify(); M.spectrum().values.tolist()
        [2.0, 1.0]
    """

    def __init__(self, A: Tensor, rank_tol: float, *, name: str = "K", trusted: bool = False):
        self.A = A
        self.rank_tol = rank_tol
        self.name = name
        self._certified = trusted
        self._factor: _Factor | None = None
        self._factor_tried = False
        self._spectrum: Spectrum | None = None

    @property
    def size(self) -> int:
        """N, the number of rows."""
        return int(self.A.shape[0])

    def _try_factor(self) -> _Factor | None:
        """Pivoted Cholesky when large, on the CPU and of rank ≤ N/2 (else None); once."""
        if self._factor_tried:
            return self._factor
        self._factor_tried = True
        A, N = self.A, self.size
        if N < FACTOR_MIN_SIZE or A.device.type != "cpu":
            return None
        An = A.numpy()
        maxdiag = float(np.max(np.diag(An)))
        if maxdiag <= 0.0 or _rank_above_half(
            A, max(self.rank_tol, HIGH_RANK_PIVOT_RTOL) * maxdiag
        ):
            return None
        tol = max(self.rank_tol * maxdiag / N, 64 * _EPS * maxdiag)
        # A is symmetric, so its C-ordered buffer read as Fortran is A itself.
        c, piv, r, info = lapack.dpstrf(An.T, tol=tol, lower=1, overwrite_a=0)
        if info < 0 or r > N // 2:
            return None
        piv = piv - 1
        Lp = np.tril(c[:, :r])  # rows in pivoted order: A[piv][:, piv] = Lp Lpᵀ + 0 ⊕ S
        rest = piv[r:]
        S = An[np.ix_(rest, rest)] - Lp[r:] @ Lp[r:].T
        L = np.empty_like(Lp)
        L[piv] = Lp
        self._factor = _Factor(L, float(np.linalg.norm(S)))
        return self._factor

    def certify(self) -> None:
        """Certify λ_min(A) ≥ −PSD_RTOL·‖A‖₂ (at most once; pivoted Cholesky when it can).

        Raises:
            ValueError: If A is not PSD within the tolerance, naming its smallest eigenvalue.
        """
        if self._certified:
            return
        f = self._try_factor()
        scale = float(self.A.diagonal().max())  # ≤ λ_max: a conservative scale
        if f is not None and f.schur_fro <= PSD_RTOL * scale:
            self._certified = True
            return
        if self._spectrum is None:
            self._spectrum = self._eigh()  # raises when not PSD
        self._certified = True

    def spectrum(self) -> Spectrum:
        """Eigenpairs above ``rank_tol``·λ_max (certifying PSD-ness on the way), cached."""
        if self._spectrum is not None:
            return self._spectrum
        f = self._try_factor()
        if f is not None:
            M = torch.from_numpy(f.L.T @ f.L)
            mu, W = torch.linalg.eigh(M)
            mu, W = mu.flip(0), W.flip(1)
            lmax = max(float(mu[0]), 0.0) if mu.numel() else 0.0
            # Dropping S moves each eigenvalue by at most ‖S‖₂ ≤ ‖S‖_F: accept the factor when
            # that is below the rank cut (and the PSD tolerance), else decide with eigh.
            if lmax > 0 and f.schur_fro <= min(self.rank_tol, PSD_RTOL) * lmax:
                keep = mu > self.rank_tol * lmax
                mu, W = mu[keep], W[:, keep]
                vectors = torch.from_numpy(f.L) @ (W / mu.sqrt())
                self._certified = True
                self._spectrum = Spectrum(
                    mu, vectors, lmax, f"pivoted Cholesky (rank {f.L.shape[1]})"
                )
                return self._spectrum
        self._spectrum = self._eigh()
        self._certified = True
        return self._spectrum

    def lambda_max(self) -> float:
        """λ_max(A): from the cached spectrum, or eigenvalues only (no eigenvectors)."""
        if self._spectrum is None and self._certified and self._try_factor() is None:
            return max(float(_eigvalsh(self.A, self.name)[-1]), 0.0)
        return self.spectrum().lambda_max

    def _eigh(self) -> Spectrum:
        try:
            lam, U = _eigh_descending(self.A)
        except (torch.linalg.LinAlgError, np.linalg.LinAlgError) as exc:  # finite input:
            raise ValueError(  # only ill-conditioning is left
                f"the eigendecomposition of {self.name} (shape {tuple(self.A.shape)}) failed: "
                f"{exc}. Check that {self.name} is a well-scaled Gram matrix."
            ) from exc
        lmax = float(lam[0])
        lmin = float(lam[-1])
        if not self._certified and lmin < -PSD_RTOL * max(abs(lmax), abs(lmin), 1e-300):
            raise ValueError(
                f"{self.name} must be positive semi-definite (a Gram matrix JJᵀ/n); got smallest "
                f"eigenvalue {lmin:.3e} with largest {lmax:.3e}. Pass K = J Jᵀ / n."
            )
        keep = lam > self.rank_tol * lmax if lmax > 0 else torch.zeros_like(lam, dtype=torch.bool)
        if bool(keep.all()):  # full rank: no copy
            return Spectrum(lam, U, max(lmax, 0.0), "eigh")
        return Spectrum(lam[keep], U[:, keep], max(lmax, 0.0), "eigh")


def _eigh_descending(A: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and orthonormal eigenvectors of a symmetric matrix.

    float64 on the CPU with N >= ``FACTOR_MIN_SIZE``: LAPACK's divide-and-conquer ``dsyevd``
    through SciPy (the same algorithm as ``torch.linalg.eigh``; SciPy's OpenBLAS build took
    0.6× the CPU time of torch's MKL build on the AMD EPYC of the benchmarks at N = 2000–3000,
    one thread); the eigenvectors come back column-major (columns reversed by contiguous
    copies). Otherwise (small, other devices or dtypes) ``torch.linalg.eigh``.

    Raises:
        torch.linalg.LinAlgError | numpy.linalg.LinAlgError: If LAPACK does not converge.
    """
    if A.device.type == "cpu" and A.dtype == torch.float64 and A.shape[0] >= FACTOR_MIN_SIZE:
        w, V = scipy.linalg.eigh(A.numpy(), driver="evd", check_finite=False)
        return torch.from_numpy(w[::-1].copy()), torch.from_numpy(np.asfortranarray(V[:, ::-1]))
    lam, U = torch.linalg.eigh(A)
    return lam.flip(0), U.flip(1)


def _rank_above_half(A: Tensor, pivot_min: float) -> bool:
    """Screen for rank > N/2: the leading (⌊N/2⌋ + 1)-block has Cholesky pivots all > pivot_min.

    Pivots far above round-off mean that principal block is nonsingular, so A has rank > N/2
    (Cauchy interlacing) and the pivoted Cholesky would not stop at rank ≤ N/2. A heuristic
    (pivots do not bound the block's smallest eigenvalue from below) for a speed decision
    only: both routes of :meth:`PSDMatrix.spectrum` are exact, so a wrong answer costs time
    (the failed ``dpstrf``, or an ``eigh`` where a factor would do), never accuracy. A
    rank-deficient block fails the factorisation or shows a pivot at round-off level (far below
    ``pivot_min``). Cost: one LAPACK ``potrf`` of size N/2 (N³/24 flops), which stops at the
    first non-positive pivot.
    """
    h = A.shape[0] // 2 + 1
    L, info = torch.linalg.cholesky_ex(A[:h, :h])
    if int(info) != 0:
        return False
    return float(L.diagonal().min()) ** 2 > pivot_min


def _eigvalsh(A: Tensor, name: str) -> Tensor:
    try:
        return torch.linalg.eigvalsh(A)
    except torch.linalg.LinAlgError as exc:
        raise ValueError(
            f"the eigenvalues of {name} (shape {tuple(A.shape)}) could not be computed: {exc}. "
            f"Check that {name} is a well-scaled Gram matrix."
        ) from exc


def eigen_flops(size: int) -> float:
    """Rough flop count of a symmetric eigendecomposition with vectors (≈ 9N³)."""
    return 9.0 * float(size) ** 3 if size > 0 else 0.0
