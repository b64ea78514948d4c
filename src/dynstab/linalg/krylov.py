"""The one Krylov engine of dynstab: thick-restart block Lanczos with certified error bounds.

Every eigenvalue routine of :mod:`dynstab.linalg` runs on the code in this module: the
extreme-eigenpair solver (:func:`~dynstab.linalg.lanczos_top_eigenpairs`), the plain Lanczos
tridiagonals of stochastic Lanczos quadrature (:func:`~dynstab.linalg.slq_density`) and the
certificate of power iteration.

**Algorithm.** The basis is one preallocated matrix (``max_basis`` vectors of length ``p``, each
stored contiguously, float64 by default) split into *locked* vectors ``L`` (converged Ritz
vectors), the active Krylov *segment* ``W`` and the *pending* block ``P``. The projected
matrix is kept in Krylov–Schur form (Stewart 2001; thick-restart Lanczos, Wu & Simon 2000)::

    A W = W H + P F + L C,        Lᵀ A L = diag(θ_L) (+ small coupling, see below).

A step applies ``A`` to the pending block (one block product), orthogonalises the result
against the whole basis by classical Gram–Schmidt as two matrix products (BLAS-2/3; a second
pass only when the norm dropped by more than 1/√2, Daniel–Gragg–Kaufman–Stewart 1976) and
QR-factors it into the next pending block. A single-vector step (``b = 1``, e.g. every
``λ_max`` run) removes the local three-term part with one matrix–vector product over the two
coupled rows, then runs the same Gram–Schmidt as two matrix–vector products over the contiguous
basis rows; its norm after the pass is ``β`` (no further pass), and the new row is written once
(``y/β``). All projected quantities (``H``, ``F``, ``C``, Ritz problems) are float64 and kept
as small NumPy-backed arrays; the products run in the operator's dtype. When the basis is full the
segment is restarted thickly (its wanted Ritz vectors kept); converged Ritz vectors are locked;
a Krylov space that becomes invariant gives exact Ritz values and is locked whole.

**Certificates.** Write ``λ_1 ≥ λ_2 ≥ …`` for the eigenvalues of ``A`` and ``η_j`` for the
returned Ritz values (the ``j``-th largest). What holds:

1. *Deterministically* (up to the round-off floor): ``η_j ≤ λ_j`` (Cauchy interlacing: Ritz
   values of an orthonormal basis never overshoot), and each ``η_j`` lies within its residual
   ``‖A y_j − η_j y_j‖`` of *some* eigenvalue.
2. What a Krylov method can *not* prove: that no eigenvalue was missed. An eigenvector
   orthogonal to the start vector is invisible, and so is one with a small component whose
   eigenvalue sits within the Krylov resolution of a found one. For a cluster below the
   resolution the residual bound ``|θ − λ_1| ≤ r`` fails for about half of all random start
   vectors (the Ritz vector mixes the pair; the residual is ``|c_1 c_2|·gap``, the error
   ``c_2²·gap``), and single-vector Krylov spaces never see a repeated eigenvalue twice.
3. What holds *with probability ≥ 1 − δ* over the random start vectors
   (``δ = failure_probability``): for a Lanczos segment started from a uniformly random unit
   vector ``q`` in the complement of the locked vectors, the last Lanczos vector is
   ``π_m(B) q`` with ``π_m(t) = det(t − T_m)/(β_1⋯β_m)``, so every eigenpair ``(λ, u)`` of the
   deflated operator ``B`` satisfies ``|π_m(λ)|·|uᵀq| ≤ 1``. Since
   ``P(|uᵀq| < t) ≤ t·max(1, √(2(n−1)/π))`` for a uniform unit vector in ``ℝⁿ``, the largest
   eigenvalue of ``B`` is below the largest root ``τ`` of ``|π_m(t)| = 1/γ_min`` except with
   probability ``δ`` (van Dorsselaer, Hochstenbach & van der Vorst 2000; the a-posteriori form
   of Kuczyński & Woźniakowski 1992). With ``A ≅ [[diag θ_L, Eᵀ], [E, B]]`` and ``‖E‖ ≤ ρ``
   (the locked residuals), Weyl's inequality gives ``λ_j ≤ max(θ_{L,j}, τ) + ρ``, and when
   ``τ`` and the other locked values are separated from ``θ_{L,j}`` by ``η > 0`` the bound
   ``|λ_j − θ_{L,j}| ≤ 2e²/(η + √(η² + 4e²))`` (Li & Li 2005; ``e`` the residual of the
   cluster of ``θ_{L,j}``) replaces it — the gap is used only once it is certified this way.
   ``error_bounds[j] = max(0, U_j − η_j) + floor_j`` with ``U_j`` the smaller of the two.
   Without locked vectors (``U = τ`` from the same tridiagonal as ``η``, already widened by one
   product's error) the two sides are bounded separately: ``λ − η <= τ − η`` and the overshoot
   ``η − λ <= floor``, so ``error_bounds = max(τ − η + 4·ε_orth·‖A‖, floor)``.
4. The round-off floor ``floor_j = ‖A‖·(product_rtol·ω_j + 4·ε_orth)`` plus the observed
   asymmetry of the projected matrix (the same relation error also widens every residual and
   ``ρ``): ``product_rtol`` models the accuracy of one product
   (``‖fl(Av) − Av‖ ≤ product_rtol·‖A‖·‖v‖``, default four units of round-off of the operator's
   dtype), ``ω_j`` is the ℓ₁-weight of the products in the Ritz vector and ``ε_orth`` the loss of
   orthogonality of the basis: modelled as ``4·eps_basis·√m`` during the run, and at its end
   the larger of that and the measured ``‖YᵀY − I‖₂`` of the returned vectors and, for a float32
   basis, ``‖QᵀQ − I‖₂`` of the whole stored basis. ``‖A‖`` is estimated by the largest Ritz
   value or product norm.

So ``error_bounds`` are valid with probability ≥ ``1 − failure_probability`` over the random
start vectors, for every fixed symmetric operator, provided the products meet the
``product_rtol`` model (the polynomial bound treats their round-off as a perturbation of
``T`` of one product's size; errors adversarially aligned with a hidden eigenvector are not
covered). A user start vector (warm start) gives no probability statement by itself; the
engine then certifies with an additional random segment after locking. ``converged`` is
``True`` only when every returned value's bound meets ``tol·|η_j|`` (``tol·‖A‖`` for values
indistinguishable from zero at that bound).

**Cost of the certificate, and why it cannot be cheaper.** A single random segment knows
``A`` only through ``T_m`` and ``β_m``, i.e. the moments ``∫ t^i dμ``, ``i <= 2m``, of the
spectral measure ``μ = Σ_i (u_iᵀq)² δ_{λ_i}``. For any eigenpair ``(λ, u)`` the vector
``Q_{m+1}ᵀu = (uᵀq)·(p_0(λ), …, p_m(λ))`` (``p_j`` the orthonormal Lanczos polynomials,
``q_{j+1} = p_j(A) q``) has norm ``<= 1``, so ``(uᵀq)²·Σ_{j<=m} p_j(λ)² <= 1``; and this is
sharp: the Christoffel function ``1/Σ_{j<=m} p_j(t)²`` is the largest mass at ``t`` of any
measure with those moments, and the extremal measure (a Gauss–Radau rule with a node at
``t``) is the spectral measure of some symmetric matrix and start vector that produce exactly
the same ``T_m`` and ``β_m`` (Szegő 1939, ch. 3; Akhiezer 1965, ch. 2; Golub & Meurant 2010,
ch. 6). Hence *no* rule using this information can exclude an eigenvalue at
``θ(1 + tol)`` whose eigenvector has start component ``γ`` before
``Σ_{j<=m} p_j(θ(1 + tol))² >= 1/γ²``; and because ``uᵀq`` of a uniform random start has a
density ``≈ √(2p/π)`` at 0 (``small_ball_constant``), a certificate with failure probability
``δ`` must exclude components down to ``γ ≈ δ·√(π/(2p))`` — or (sketch) fail with probability
``≈ δ`` on a matrix whose top eigenvalue sits at ``θ(1 + tol)`` beyond a spectrum that the
start mostly sees. The engine's ``τ`` uses
the last term ``p_m(t)²`` of that sum; the earlier terms add ``Σ_{j<m} p_j(θ)² = 1/s_{1,1}²
≈ p`` (``s`` the Ritz vector's coefficients), ``< 10⁻⁵`` of ``1/γ² ≈ 10¹²`` on the benchmark
MLPs, so ``τ`` is the optimal moment bound up to the round-off pads (tested in
tests/test_krylov_certificate.py: the engine certifies within two products of that optimum and
never before it). On the 784-512-512-10 MLP (clustered top-5, seed 0, float32) the optimum at
``δ = 1e-3`` is step 44, the engine stops at 45 (44 + one fresh product for the float32
round-off), while the Ritz value is within 1e-6 from step 26: the ~18 extra products are the
price of the certificate itself (ruling out a top eigenvalue that a random start touches with
component ``≈ 10⁻⁶``), not of this implementation, and "within 2 of the first iterate that
meets tol" is impossible for any δ-certificate here (even ``δ = 0.5`` needs step 39). On the
CNN of the benchmarks (relative gap 5e-2): within 1e-6 at step 16, optimum 25 at ``δ = 1e-3``.
The moment bound grows only with ``ln(1/δ)``: each factor 10 in ``δ`` costs one to two
products (MLP: optimum 48, 44, 42, 40 at ``δ`` = 1e-6, 1e-3, 1e-2, 1e-1). A certification
segment must fit into ``max_basis`` unrestarted; a run whose random segment fills the basis
stops with ``converged=False`` instead of restarting it.

**Round-off.** When the accumulated round-off of the run (weight ``ω``) is what keeps a bound
above ``tol`` — typically float32 operators at ``tol = 1e-6`` — the returned vectors (or all
locked vectors) are re-orthonormalised in float64 and their products recomputed afresh
(``k`` extra products): Rayleigh–Ritz and explicit residuals then carry the error of ``k``
products only. A run whose bounds reached the floor and the floor exceeds ``tol`` stops
(``converged=False``). An operator of size ``p`` that the basis can span within the budget is
spanned completely, which makes every Ritz value exact.

References:
    Lanczos (1950); Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 10–11;
    Daniel, Gragg, Kaufman & Stewart (1976), Math. Comp. 30; Wu & Simon (2000), SIMAX 22;
    Stewart (2001), SIMAX 23 (Krylov–Schur); Stathopoulos & Saad (2007), ACM TOMS 33;
    Kuczyński & Woźniakowski (1992), SIMAX 13; van Dorsselaer, Hochstenbach & van der Vorst
    (2000), SIMAX 22; Szegő, *Orthogonal Polynomials* (1939), §3.1; Golub & Meurant,
    *Matrices, Moments and Quadrature* (2010), ch. 6; Akhiezer, *The Classical Moment Problem*
    (1965), ch. 2; Simchowitz, El Alaoui & Recht (2018), STOC (query lower bounds for
    eigenvalue estimation); Hochstenbach (2013), J. Sci. Comput. 57; Li & Li (2005), Linear
    Algebra Appl. 395; Efron & Stein (1981), Ann. Statist. 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int, check_positive
from dynstab.linalg.operator import LinearOperator

__all__ = ["EigenResult", "LanczosConfig", "LanczosProgress"]

_WHICH = ("largest", "smallest", "both")
_CRITERIA = ("eigenvalue", "residual")
_DGKS = 1.0 / math.sqrt(2.0)
_EPS64 = float(torch.finfo(torch.float64).eps)
_ROW_CHUNK_ELEMENTS = 1 << 22  # rows × columns handled at once by in-place basis rotations
#: Address space reserved for the basis up front (pages are only touched when rows are written,
#: so an unused reservation costs no memory); beyond it the basis grows by doubling (a copy).
_BASIS_RESERVE_BYTES = 4 * 2**30
#: Loosest ``tol`` that still takes a float64 basis for a float32 operator: at ``tol >= 1e-4``
#: the float32 basis's round-off floor (``4·ε_orth·‖A‖`` with ``ε_orth ≈ 4·eps32·√m``, ≈ 2e-5
#: at m = 100 vectors) stays well inside tol, and it halves the Gram–Schmidt traffic and skips
#: the float32↔float64 conversions of every product (MLP 784-256-256-10, tol = 1e-3, one
#: thread: 0.89× the wall time of the float64 basis at the same 32 products). Its loss of
#: orthogonality is measured on the stored basis at the end of the run and enters the final
#: bounds (:meth:`KrylovEngine.basis_orthogonality`).
FLOAT32_BASIS_TOL = 1e-4


@dataclass(frozen=True)
class LanczosConfig:
    """Settings of the Lanczos engine, set up once and passed as ``config=``.

    Explicit keyword arguments of :func:`~dynstab.linalg.lanczos_top_eigenpairs` override the
    fields they name.

    Attributes:
        tol: Relative accuracy wanted, > 0: every returned value's certified error bound must
            be ``<= tol·|θ|`` (``tol·‖A‖`` for values zero to within their bound). Default:
            ``1e-6``.
        max_iters: Budget of operator products (all segments together), >= 1. Default: ``100``.
        criterion: ``"eigenvalue"`` (stop when the error bounds meet ``tol``) or ``"residual"``
            (additionally require the Ritz residuals ``‖A y − θ y‖ <= tol·|θ|``, which makes
            the vectors accurate). Default: ``"eigenvalue"``.
        block_size: Vectors per block of the first Krylov segment, >= 1; choose at least the
            multiplicity you expect at the wanted end. ``None``: one (plain Lanczos).
        max_basis: Largest number of basis vectors held at once (locked + active + pending),
            >= ``2·block_size + 1``; when full, the segment is restarted thickly. ``None``:
            enough for ``max_iters`` products without restarts (capped at the size).
        basis_dtype: Dtype of the basis (``torch.float64`` or ``torch.float32``). ``None``:
            float32 for a float32 operator when ``tol >= 1e-4`` (:data:`FLOAT32_BASIS_TOL`),
            else float64 (float32 on devices without float64). A float32 basis halves the
            memory and the orthogonalisation traffic; its loss of orthogonality, measured on
            the stored basis at the end of the run, widens the final error bounds.
        failure_probability: ``δ`` in (0, 1): the error bounds hold with probability at
            least ``1 − δ`` over the random start vectors. Default: ``1e-3``.
        product_rtol: Modelled relative accuracy of one product,
            ``‖fl(Av) − Av‖ <= product_rtol·‖A‖·‖v‖``; ``None``: four units of round-off of the
            operator's dtype. Raise it for operators computed less accurately than that.
        start_overlap: A proven lower bound ``γ`` on ``|uᵀv0|/‖v0‖`` for the wanted extreme
            eigenvector ``u`` of a single start vector ``v0`` (e.g. ``1/√ρ`` for the identity
            start of a problem whose top eigenvector is a positive semi-definite ρ×ρ matrix).
            With it the first segment certifies the extreme value deterministically (no
            probability spent). ``None``: a user start vector proves nothing by itself.

    Example:
        >>> cfg = LanczosConfig(tol=1e-8, max_basis=40)
        >>> cfg.tol, cfg.max_iters, cfg.criterion
        (1e-08, 100, 'eigenvalue')
    """

    tol: float = 1e-6
    max_iters: int = 100
    criterion: str = "eigenvalue"
    block_size: int | None = None
    max_basis: int | None = None
    basis_dtype: torch.dtype | None = None
    failure_probability: float = 1e-3
    product_rtol: float | None = None
    start_overlap: float | None = None

    def __post_init__(self) -> None:
        check_positive("tol", self.tol)
        check_int("max_iters", self.max_iters, minimum=1)
        check_choice("criterion", self.criterion, _CRITERIA)
        if self.block_size is not None:
            check_int("block_size", self.block_size, minimum=1)
        if self.max_basis is not None:
            check_int("max_basis", self.max_basis, minimum=3)
        if self.basis_dtype not in (None, torch.float64, torch.float32):
            raise ValueError(
                f"basis_dtype must be torch.float64, torch.float32 or None; got {self.basis_dtype}."
            )
        delta = check_positive("failure_probability", self.failure_probability)
        if delta >= 1.0:
            raise ValueError(f"failure_probability must be in (0, 1); got {delta}.")
        if self.product_rtol is not None:
            check_positive("product_rtol", self.product_rtol)
        if self.start_overlap is not None:
            g = check_positive("start_overlap", self.start_overlap)
            if g > 1.0:
                raise ValueError(f"start_overlap must be in (0, 1]; got {g}.")


@dataclass(frozen=True)
class LanczosProgress:
    """What the engine reports to a ``callback`` after every block step.

    Attributes:
        iteration: Block steps taken so far.
        num_matvecs: Operator products spent so far.
        values: Current Ritz values at the wanted end(s), float64 (may be fewer than ``k``
            early on).
        error_bounds: Their current certified error bounds (``inf`` while uncertified).
        residuals: Their Ritz residual norms.
        phase: ``"search"`` while Ritz vectors are being converged, ``"certify"`` while a
            random segment bounds the rest of the spectrum.
        num_restarts: Thick restarts so far.
    """

    iteration: int
    num_matvecs: int
    values: Tensor
    error_bounds: Tensor
    residuals: Tensor
    phase: str
    num_restarts: int


ProgressCallback = Callable[[LanczosProgress], "bool | None"]


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalue estimates of a symmetric operator with their certificate.

    Attributes:
        values: Ritz values, shape ``(k,)``, float64 (order documented by the producer).
        vectors: Unit Ritz vectors, shape ``(p, k)`` in the operator's dtype, or ``None``.
        converged: Whether every returned value's error bound met the tolerance.
        num_matvecs: Operator products spent.
        residuals: Residual norms ``‖A y_i − θ_i y_i‖`` (unit ``y_i``), shape ``(k,)``, float64.
        error_bounds: Bounds on ``|θ_i − λ_i|`` with ``λ_i`` the eigenvalue of the same rank at
            the same end, shape ``(k,)``, float64, valid with probability at least
            ``1 − failure_probability`` (``inf`` when nothing could be certified); ``None``
            when the producer gives none. See :mod:`dynstab.linalg.krylov`.
        invariant_subspace: Whether a Krylov space became invariant (its Ritz values are then
            exact eigenvalues, e.g. the zeros of a rank-deficient operator).
        num_restarts: Thick restarts of the Lanczos basis.
        certificate: One paragraph stating what the bounds rest on.
        failure_probability: Probability (over the random start vectors) that some bound is
            violated; ``0.0`` when no probabilistic statement was used.
    """

    values: Tensor
    vectors: Tensor | None
    converged: bool
    num_matvecs: int
    residuals: Tensor
    error_bounds: Tensor | None = None
    invariant_subspace: bool = False
    num_restarts: int = 0
    certificate: str = ""
    failure_probability: float = 0.0


# --------------------------------------------------------------------------------------------
# shared numerical helpers (also used by power iteration and SLQ)
# --------------------------------------------------------------------------------------------
def work_dtype(device: torch.device) -> torch.dtype:
    """Default basis dtype: float64, except on devices without float64 (Apple MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def default_basis_dtype(op_dtype: torch.dtype, device: torch.device, tol: float) -> torch.dtype:
    """The basis dtype of a run with ``basis_dtype=None``.

    float32 for a float32 operator when ``tol >= FLOAT32_BASIS_TOL`` (the products' own
    round-off is then the accuracy limit, and the float32 basis's loss of orthogonality is
    measured at the end of the run), else :func:`work_dtype`.
    """
    if op_dtype == torch.float32 and tol >= FLOAT32_BASIS_TOL:
        return torch.float32
    return work_dtype(device)


def small_ball_constant(n: int) -> float:
    """``c_n`` with ``P(|uᵀq| <= t) <= c_n·t`` for ``q`` uniform on the unit sphere of ``ℝⁿ``.

    ``(uᵀq)² ~ Beta(1/2, (n−1)/2)``; bounding its density by ``x^{-1/2}/B(1/2, (n−1)/2)`` and
    the Beta function by Wendel's inequality gives ``c_n = √(2(n−1)/π)`` for ``n >= 3``; for
    ``n <= 2`` the exact law gives ``c_n <= 1``.
    """
    return max(1.0, math.sqrt(2.0 * max(n - 1, 0) / math.pi))


def moment_optimal_stop(
    alpha: Tensor, beta: Tensor, *, size: int, tol: float, failure_probability: float
) -> int | None:
    """First Lanczos step at which *any* δ-certificate of the largest eigenvalue could stop.

    The lower bound of the module docstring ("Cost of the certificate"): after ``m`` steps of
    single-vector Lanczos from a uniform random start, an eigenvalue at ``t = θ_m(1 + tol)``
    (``θ_m`` the largest Ritz value) whose eigenvector has start component ``γ`` is consistent
    with ``T_m, β_m`` unless ``γ²·Σ_{j<=m} p_j(t)² > 1`` (the Christoffel function, which is
    attained), and a certificate failing with probability at most ``δ`` must exclude
    ``γ = δ_1/c_p`` with ``δ_1 = 6δ/π²`` the first random segment's share of ``δ`` in this
    engine and ``c_p`` the small-ball constant. Round-off is ignored, so this is a lower
    bound on the engine's product count and an optimum no certificate of this kind beats.

    Args:
        alpha: Lanczos diagonal ``(M,)``.
        beta: Couplings ``(M,)``, ``beta[j]`` between steps ``j`` and ``j + 1``.
        size: Dimension ``p`` of the operator.
        tol: Relative tolerance of the certificate.
        failure_probability: ``δ``.

    Returns:
        The step ``m`` (products spent), or ``None`` when no step up to ``M`` qualifies.

    Example:
        >>> a = torch.tensor([1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
        >>> b = torch.tensor([0.3, 0.2, 0.1, 1e-12], dtype=torch.float64)
        >>> moment_optimal_stop(a, b, size=4, tol=1e-6, failure_probability=1e-3)
        4
    """
    a, b = alpha.tolist(), beta.tolist()
    gamma = failure_probability * 6.0 / math.pi**2 / small_ball_constant(size)
    limit = 1.0 / gamma**2
    for m in range(1, len(a) + 1):
        T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
        t = float(torch.linalg.eigvalsh(T.to(torch.float64))[-1])
        t += tol * abs(t)
        prev, cur, total = 0.0, 1.0, 1.0  # p_{-1}, p_0 and Σ p_j(t)²
        for j in range(m):  # β_j p_{j+1}(t) = (t − α_j) p_j(t) − β_{j−1} p_{j−1}(t)
            if b[j] == 0.0:  # invariant subspace: the Ritz values are exact
                return m
            prev, cur = cur, ((t - a[j]) * cur - (b[j - 1] if j else 0.0) * prev) / b[j]
            total += cur * cur
            if total > limit:
                break
        if total >= limit:
            return m
    return None


def hidden_eigenvalue_bound(theta: np.ndarray, log_limit: float, direction: float) -> float:
    """Point beyond the Ritz values where the Lanczos polynomial reaches ``exp(log_limit)``.

    With ``π(t) = Π_i (t − θ_i)/Π β``, returns the ``t`` beyond ``max θ`` (``direction = +1``)
    or ``min θ`` (``−1``) with ``Σ_i log|t − θ_i| = log_limit`` (``log_limit`` already includes
    ``Σ log β``). In ``s = log|t − θ_ext|`` the left side is convex and increasing, so Newton's
    method from the right decreases monotonically to the root and never crosses it: the value
    returned is on the safe (outer) side.
    """
    ext = float(theta.max()) if direction > 0 else float(theta.min())
    a = np.abs(theta - ext)
    m = a.size
    s = (log_limit + 1.0) / m  # Σ log(e^s + a_i) >= m·s: the start is right of the root
    for _ in range(200):
        es = math.exp(s)
        t = es + a
        g = float(np.log(t).sum()) - log_limit
        if g <= 1e-12 * (abs(log_limit) + 1.0):
            break
        gp = es * float((1.0 / t).sum())
        step = g / gp
        s -= step
        if step <= 1e-15 * (abs(s) + 1.0):
            break
    return ext + direction * math.exp(s)


def random_unit(
    p: int,
    generator: torch.Generator | None,
    *,
    dtype: torch.dtype,
    device: torch.device,
    against: Tensor | None = None,
) -> Tensor:
    """Uniform random unit vector of ``ℝᵖ``, optionally on the complement of ``against``.

    A normalised standard normal vector drawn in float64 on the CPU from ``generator``,
    projected onto the complement of the orthonormal columns ``against`` when given (so it is
    uniform on that complement's unit sphere).
    """
    g = torch.randn(p, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    if against is not None and against.shape[1] > 0:
        for _ in range(2):
            g = g - against @ (against.T @ g)
    norm = torch.linalg.vector_norm(g)
    if not bool(norm > 0):  # the complement is numerically empty
        return torch.zeros_like(g)
    return g / norm


def gram_schmidt(V: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """Orthogonalise the columns of ``Y`` against the orthonormal columns of ``V``.

    Classical Gram–Schmidt as two matrix products, repeated once when some column lost more
    than a factor ``1/√2`` of its norm (the DGKS criterion). Works on batches: ``V`` of shape
    ``(..., p, c)``, ``Y`` of shape ``(..., p, b)``. ``Y`` is updated in place (no ``p``-sized
    temporaries beyond the products themselves).

    Returns:
        ``(Y ⊥ V, coefficients)``; the coefficients ``(..., c, b)`` are float64.
    """
    if V.shape[-1] == 0:
        return Y, torch.zeros(*Y.shape[:-2], 0, Y.shape[-1], dtype=torch.float64)
    before = torch.linalg.vector_norm(Y, dim=-2)
    h = V.mT @ Y
    _subtract_product(Y, V, h)
    coeff = h.to(torch.float64)
    after = torch.linalg.vector_norm(Y, dim=-2)
    if bool((after < _DGKS * before).any()):
        h2 = V.mT @ Y
        _subtract_product(Y, V, h2)
        coeff = coeff + h2.to(torch.float64)
    return Y, coeff.cpu()


def _subtract_product(Y: Tensor, V: Tensor, h: Tensor) -> None:
    """``Y ← Y − V h`` in place (batched when ``Y`` has three dimensions)."""
    if Y.ndim == 2:
        Y.addmm_(V, h, alpha=-1.0)
    else:
        Y.baddbmm_(V, h, alpha=-1.0)


def rotate_rows(B: Tensor, start: int, stop: int, S: Tensor) -> None:
    """In place ``B[start:start+k] ← Sᵀ B[start:stop]`` (basis vectors stored as rows).

    ``S`` has shape ``(stop−start, k)`` with ``k <= stop−start``; the update runs over blocks of
    coordinates so no ``k × p`` copy is made.
    """
    p = B.shape[1]
    k = S.shape[1]
    St = S.T.to(dtype=B.dtype, device=B.device)
    cols = max(1, _ROW_CHUNK_ELEMENTS // max(1, stop - start))
    for c0 in range(0, p, cols):
        c1 = min(p, c0 + cols)
        B[start : start + k, c0:c1] = St @ B[start:stop, c0:c1]


def combine_rows(B: Tensor, S: Tensor, dtype: torch.dtype) -> Tensor:
    """``Bᵀ S`` of shape ``(p, k)`` in ``dtype`` (``B`` holds ``n`` basis vectors as rows)."""
    n, p = B.shape
    out = torch.empty(p, S.shape[1], dtype=dtype, device=B.device)
    Sd = S.to(dtype=B.dtype, device=B.device)
    cols = max(1, _ROW_CHUNK_ELEMENTS // max(1, n))
    for c0 in range(0, p, cols):
        c1 = min(p, c0 + cols)
        out[c0:c1] = (B[:, c0:c1].T @ Sd).to(dtype)
    return out


def orthogonality_loss(rows: Tensor) -> float:
    """Measured ``‖VVᵀ − I‖₂`` of the vectors in the rows of ``V`` ``(n, p)``, in float64.

    The Gram matrix is accumulated in float64 over column chunks copied into one reused
    buffer of ≈ 1 MiB (no float64 copy of all of V, no fresh pages per chunk: 2.2× faster than
    converting 32 MiB chunks at p = 269,322), so its own round-off (≈ eps64·√p) stays far below
    a float32 loss of orthogonality. Cost: one read of V and ``2n²p`` flops. On Apple MPS (no
    float64) the chunks go to the CPU.
    """
    n, p = rows.shape
    dev = torch.device("cpu") if rows.device.type == "mps" else rows.device
    gram = torch.zeros(n, n, dtype=torch.float64, device=dev)
    step = min(max(p, 1), max(256, 2**17 // max(n, 1)))
    buf = torch.empty(n, step, dtype=torch.float64, device=dev)
    for c0 in range(0, p, step):
        chunk = buf[:, : min(step, p - c0)]
        chunk.copy_(rows[:, c0 : c0 + step])
        gram.addmm_(chunk, chunk.T)
    gram = gram.cpu()
    gram.diagonal().sub_(1.0)
    return float(torch.linalg.matrix_norm(gram, ord=2))


def tridiagonal_eigh(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the symmetric tridiagonal matrix with diagonal ``alpha``.

    ``beta[j]`` couples ``j`` and ``j + 1`` (entries beyond ``len(alpha) − 1`` are ignored).
    """
    T = torch.diag(alpha)
    if alpha.numel() > 1:
        off = beta[: alpha.numel() - 1]
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(T)


def plain_lanczos(
    A: LinearOperator,
    Q0: Tensor,
    num_steps: int,
    *,
    basis_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Independent plain Lanczos runs (full reorthogonalisation) from the columns of ``Q0``.

    Every step applies ``A`` to the current vector of all ``s`` runs at once (one block
    product) and orthogonalises each against its own basis (batched Gram–Schmidt). A run stops
    at its invariant subspace (its later coefficients are zero). Used by SLQ (one run per probe).

    Args:
        A: Symmetric operator of shape ``(p, p)``.
        Q0: Start vectors ``(p, s)`` (normalised here).
        num_steps: Lanczos steps per run, >= 1 (capped at ``p``).
        basis_dtype: Basis dtype; ``None``: :func:`work_dtype`.

    Returns:
        ``(alpha (s, m), beta (s, m), basis (s, m, p), lengths (s,), num_matvecs)``;
        ``beta[:, j]`` couples step ``j`` to ``j + 1``; ``m`` is the number of steps taken and
        ``lengths[i] <= m`` the steps of run ``i`` before its invariant subspace.
    """
    p, s = Q0.shape
    bdt = basis_dtype or work_dtype(A.device)
    m_max = min(num_steps, p)
    Q = torch.zeros(s, m_max, p, dtype=bdt, device=A.device)  # one basis vector per row
    q = Q0.to(dtype=bdt, device=A.device).T.contiguous()  # (s, p)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    alpha = torch.zeros(s, m_max, dtype=torch.float64)
    beta = torch.zeros(s, m_max, dtype=torch.float64)
    alive = torch.ones(s, dtype=torch.bool)
    lengths = torch.zeros(s, dtype=torch.long)
    eps = float(torch.finfo(A.dtype).eps)
    used = 0
    m = 0
    scale = 0.0
    for j in range(m_max):
        Q[:, j] = q
        W = (A @ q.T.to(A.dtype)).to(bdt).T.unsqueeze(-1)  # (s, p, 1)
        used += s
        scale = max(scale, float(torch.linalg.vector_norm(W, dim=1).max()))
        W, h = gram_schmidt(Q[:, : j + 1].mT, W)
        alpha[:, j] = torch.where(alive, h[:, j, 0], torch.zeros(()))
        lengths = lengths + alive.long()
        b = torch.linalg.vector_norm(W, dim=1)[:, 0].to(torch.float64).cpu()
        broke = b <= 16.0 * eps * max(scale, 1e-300) * math.sqrt(j + 1)
        alive = alive & ~broke
        beta[:, j] = torch.where(alive, b, torch.zeros(()))
        m = j + 1
        if not bool(alive.any()):
            break
        denom = torch.where(alive, b, torch.ones(())).to(dtype=bdt, device=A.device)
        q = W[:, :, 0] / denom.view(s, 1)
        q[~alive.to(A.device)] = 0.0
    return alpha[:, :m], beta[:, :m], Q[:, :m], lengths, used


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------
@dataclass
class _Answer:
    """Ritz values at the wanted end(s) of the joint (locked + active) space and their bounds."""

    top: Tensor  # indices into the joint Ritz values, descending values
    bottom: Tensor  # indices, ascending values
    eta: Tensor  # all joint Ritz values
    S: Tensor  # joint eigenvectors (coefficients on [L, W])
    values: Tensor
    bounds: Tensor
    residuals: Tensor
    thresholds: Tensor
    certified: bool
    norm: float
    mode: str = "segment"  # "segment" (no locked vectors), "locked" (locked values), "joint"
    polish: bool = False  # certified after recomputing the vectors' products afresh


@dataclass
class _Segment:
    """The active Krylov segment: ``A W = W H + P F + L C``, ``W`` the basis rows ``l:l+m``."""

    b: int
    H: Tensor  # (m, m) float64, symmetric
    F: Tensor  # (b, m) float64
    C: Tensor  # (l, m) float64
    omega: Tensor  # (m,) ℓ1 weight of product errors per column
    abserr: Tensor  # (m,) absolute relation error per column (asymmetry)
    pure: bool  # single vector from a uniform random start on L⊥, never restarted
    dim: int  # dimension of L⊥ at the start (for the small-ball constant)
    delta: float  # failure probability spent on this segment's polynomial bound
    broken: bool = False
    counted: bool = False  # whether its δ has been added to the engine's total
    gamma: float | None = None  # proven start overlap (deterministic certificate)
    eig: tuple[Tensor, Tensor] | None = None  # cached eigh(H)

    def eigh(self) -> tuple[Tensor, Tensor]:
        """Ritz values and vectors of ``H`` (cached until ``H`` changes)."""
        if self.eig is None or self.eig[0].numel() != self.m:
            self.eig = torch.linalg.eigh(self.H)
        return self.eig

    @property
    def m(self) -> int:
        return int(self.H.shape[0])


@dataclass
class _Locked:
    """Locked Ritz vectors (basis rows ``:l``): values, residual groups, error weights."""

    theta: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    groups: list[Tensor] = field(default_factory=list)  # (b_g, l) residual coefficients
    omega: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    abserr: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    @property
    def l(self) -> int:  # noqa: E743 - the standard name of the locked count
        return int(self.theta.numel())

    def residuals(self) -> Tensor:
        """Per-vector residual bounds ``Σ_g ‖C_g[:, i]‖``."""
        r = torch.zeros(self.l, dtype=torch.float64)
        for G in self.groups:
            r = r + torch.linalg.vector_norm(G, dim=0)
        return r

    def rho(self) -> float:
        """Bound on the spectral norm of the residual block, ``√(Σ_g ‖C_g‖₂²)``."""
        total = 0.0
        for G in self.groups:
            if G.numel():
                total += float(torch.linalg.matrix_norm(G, ord=2)) ** 2
        return math.sqrt(total)


class KrylovEngine:
    """One eigen-solve: thick-restart block Lanczos with locking and certification.

    Construct with the operator and the settings, then call :meth:`run`. See the module
    docstring for the algorithm and what the bounds guarantee.
    """

    def __init__(
        self,
        A: LinearOperator,
        k: int,
        which: str,
        config: LanczosConfig,
        *,
        v0: Tensor | None,
        generator: torch.Generator | None,
        callback: ProgressCallback | None = None,
    ) -> None:
        self.A = A
        self.p = int(A.shape[0])
        self.k = k
        self.which = which
        self.cfg = config
        self.generator = generator
        self.callback = callback
        self.bdt = config.basis_dtype or default_basis_dtype(A.dtype, A.device, config.tol)
        self.eps_op = float(torch.finfo(A.dtype).eps)
        self.eps_basis = float(torch.finfo(self.bdt).eps)
        self.prod_rtol = config.product_rtol or 4.0 * self.eps_op
        # relation error per basis vector: the product's, or the rounding of a stored vector
        self.rel_rtol = max(self.prod_rtol, 2.0 * self.eps_basis)
        self.ends = 2 if which == "both" else 1
        self.b0 = config.block_size or 1
        if v0 is not None and v0.ndim == 2 and config.block_size is None:
            self.b0 = int(v0.shape[1])
        self.b0 = min(self.b0, self.p)
        default_cap = config.max_iters + 2 * self.b0 + 2 * k + 4
        self.cap = min(self.p + self.b0, config.max_basis or default_cap)
        if self.cap < min(2 * self.b0 + 1, self.p + self.b0):
            raise ValueError(
                f"max_basis must be >= 2·block_size + 1 = {2 * self.b0 + 1}; got "
                f"{config.max_basis}. Raise max_basis or lower block_size."
            )
        # the basis: one preallocated block, one basis vector per (contiguous) row
        itemsize = torch.empty((), dtype=self.bdt).element_size()
        reserve = _BASIS_RESERVE_BYTES // max(1, self.p * itemsize)
        self.B = torch.empty(
            min(self.cap, max(32, 4 * self.b0, reserve)), self.p, dtype=self.bdt, device=A.device
        )
        self._xbuf: Tensor | None = None  # the product's input block in the operator's dtype
        self.locked = _Locked()
        self.num_matvecs = 0
        self.iterations = 0
        self.num_restarts = 0
        self.num_pure = 0
        self.delta_spent = 0.0
        self.tau_hi = math.inf
        self.tau_lo = -math.inf
        self.norm_lower = 0.0
        self.invariant = False
        self.last_norm = 0.0
        self._ybuf: Tensor | None = None
        self._y1: Tensor | None = None  # the single-vector step's work vector
        self._tau_pad = 0.0
        #: ‖QᵀQ − I‖₂ of the stored basis when measured at the end of the run (float32 basis)
        self.measured_orthogonality: float | None = None
        # lock only at the Weyl-level residual: after a refinement, or when the residuals
        # themselves must meet tol
        self.strict = config.criterion == "residual"
        self.refines = 0
        self.seg = self._new_segment(v0)

    # ---------------------------------------------------------------- basis bookkeeping
    def _cols(self, start: int, stop: int) -> Tensor:
        """Basis vectors ``start:stop`` as the columns of a ``(p, stop−start)`` view."""
        return self.B[start:stop].T

    def _store_rows(self, start: int, X: Tensor) -> None:
        """Write the columns of ``X`` ``(p, b)`` into basis rows ``start:start+b``.

        Column by column into contiguous rows: a ``(1, p)`` transposed view as the source sends
        ``copy_`` down a strided path that is ~10× slower than a row copy.
        """
        for j in range(X.shape[1]):
            self.B[start + j].copy_(X[:, j])

    def _ensure_columns(self, n: int) -> None:
        if n <= self.B.shape[0]:
            return
        new = min(self.cap, max(n, 2 * self.B.shape[0]))
        B = torch.empty(new, self.p, dtype=self.bdt, device=self.A.device)  # rows used are written
        B[: self.B.shape[0]] = self.B
        self.B = B

    def _new_segment(self, start: Tensor | None) -> _Segment:
        """Put a fresh start block at rows ``l:l+b``: ``start`` or uniform random on L⊥."""
        l = self.locked.l
        L = self._cols(0, l)
        if start is not None:
            X = start.detach().to(dtype=self.bdt, device=self.A.device)
            X = X.unsqueeze(1) if X.ndim == 1 else X
            X, _ = gram_schmidt(L, X)
            X, _ = torch.linalg.qr(X)
            b = int(X.shape[1])
            overlap = self.cfg.start_overlap
            if overlap is not None and b == 1 and self.b0 == 1 and self.which != "both":
                self._ensure_columns(l + 1)
                self._store_rows(l, X)
                return self._segment(1, pure=True, delta=0.0, gamma=overlap)
            if b < self.b0:  # pad a short warm block with random columns
                extra = [
                    random_unit(
                        self.p,
                        self.generator,
                        dtype=self.bdt,
                        device=self.A.device,
                        against=torch.cat([L, X], dim=1),
                    )
                    for _ in range(self.b0 - b)
                ]
                X = torch.cat([X, torch.stack(extra, dim=1)], dim=1)
                b = self.b0
            pure = False
        else:
            b = self.b0 if self.num_matvecs == 0 else 1
            cols: list[Tensor] = []
            for _ in range(b):
                against = torch.cat([L, *[c.unsqueeze(1) for c in cols]], dim=1) if cols else L
                cols.append(
                    random_unit(
                        self.p,
                        self.generator,
                        dtype=self.bdt,
                        device=self.A.device,
                        against=against,
                    )
                )
            X = torch.stack(cols, dim=1)
            pure = b == 1
        self._ensure_columns(l + b)
        self._store_rows(l, X)
        delta = 0.0
        if pure:
            self.num_pure += 1
            delta = self.cfg.failure_probability * 6.0 / (math.pi**2 * self.num_pure**2)
        return self._segment(b, pure=pure, delta=delta)

    def _segment(self, b: int, *, pure: bool, delta: float, gamma: float | None = None) -> _Segment:
        z = torch.zeros(0, dtype=torch.float64)
        return _Segment(
            b=b,
            H=torch.zeros(0, 0, dtype=torch.float64),
            F=torch.zeros(b, 0, dtype=torch.float64),
            C=torch.zeros(self.locked.l, 0, dtype=torch.float64),
            omega=z,
            abserr=z.clone(),
            pure=pure,
            dim=self.p - self.locked.l,
            delta=delta,
            gamma=gamma,
        )

    def _empty(self) -> _Segment:
        """A segment with no columns (the whole space is locked)."""
        return self._segment(1, pure=False, delta=0.0)

    # ---------------------------------------------------------------- one block step
    def _product_input(self, start: int, b: int) -> Tensor:
        """Basis rows ``start:start+b`` as a ``(p, b)`` block in the operator's dtype.

        A view of the basis when the dtypes agree; otherwise converted into a buffer that is
        reused every step (a fresh ``p``-sized allocation per step costs page faults).
        """
        if self.A.dtype == self.bdt:
            return self._cols(start, start + b)
        if self._xbuf is None or self._xbuf.shape[1] < b:
            self._xbuf = torch.empty(self.p, b, dtype=self.A.dtype, device=self.A.device)
        X = self._xbuf[:, :b]
        for j in range(b):
            X[:, j].copy_(self.B[start + j])
        return X

    def _expand(self) -> None:
        seg, l = self.seg, self.locked.l
        m, b = seg.m, seg.b
        c0 = l + m
        self._ensure_columns(c0 + 2 * b)
        if b == 1:
            self._expand_single(seg, l, m, c0)
            return
        X = self._cols(c0, c0 + b)
        if self._ybuf is None or self._ybuf.shape[1] < b:
            self._ybuf = torch.empty(self.p, b, dtype=self.bdt, device=self.A.device)
        Y = self._ybuf[:, :b]
        Y.copy_(self.A @ self._product_input(c0, b))  # one float64 work block, reused every step
        self.num_matvecs += b
        self.iterations += 1
        self.norm_lower = max(self.norm_lower, float(torch.linalg.vector_norm(Y, dim=0).max()))
        # local part first (the pending block and the coupling F), then the full basis
        hx = (X.T @ Y).to(torch.float64).cpu()
        Y.addmm_(X, hx.to(dtype=self.bdt, device=Y.device), alpha=-1.0)
        nz = torch.nonzero(seg.F.abs().sum(0) > 0).flatten()
        if nz.numel():
            a0, a1 = int(nz[0]), int(nz[-1]) + 1
            FT = seg.F[:, a0:a1].T.to(dtype=self.bdt, device=Y.device)
            Y.addmm_(self.B[l + a0 : l + a1].T, FT, alpha=-1.0)  # contiguous rows: no copy
        Y, h = gram_schmidt(self._cols(0, c0 + b), Y)
        hL = h[:l]
        dW = h[l:c0]  # what remains of the coupling to W after the local step: asymmetry
        hx = hx + h[c0 : c0 + b]
        hx = 0.5 * (hx + hx.T)
        if b == 1:  # β = ‖y‖ >= 0, no QR needed
            beta = float(torch.linalg.vector_norm(Y))
            R = torch.tensor([[beta]], dtype=torch.float64)
            Q = Y  # divided by β when stored (one pass instead of two)
        else:
            Q, Rb = torch.linalg.qr(Y)
            R = Rb.to(torch.float64).cpu()
        scale = max(self.norm_lower, 1e-300)
        brk = 16.0 * (self.prod_rtol + self.eps_basis) * scale * math.sqrt(c0 + b)
        dead = torch.nonzero(torch.diagonal(R).abs() <= brk).flatten().tolist()
        if c0 + b >= self.p:  # the basis spans everything: the next block is only round-off
            dead = list(range(b))
        if dead:
            if b == 1:
                seg.broken = True
                self.invariant = True
            for i in dead:
                against = torch.cat([self._cols(0, c0 + b), Q[:, :i]], dim=1)
                Q[:, i] = random_unit(
                    self.p, self.generator, dtype=self.bdt, device=self.A.device, against=against
                )
                R[i, :] = 0.0
        asym = torch.linalg.vector_norm(dW, dim=0) if dW.numel() else torch.zeros(b)
        H = torch.zeros(m + b, m + b, dtype=torch.float64)
        H[:m, :m] = seg.H
        H[:m, m:] = seg.F.T
        H[m:, :m] = seg.F
        H[m:, m:] = hx
        seg.H = H
        seg.eig = None
        seg.F = torch.cat([torch.zeros(b, m, dtype=torch.float64), R], dim=1)
        seg.C = torch.cat([seg.C, hL], dim=1)
        seg.omega = torch.cat([seg.omega, torch.ones(b, dtype=torch.float64)])
        seg.abserr = torch.cat([seg.abserr, asym.to(torch.float64)])
        if b == 1 and not dead:  # β > brk > 0 here
            torch.div(Q[:, 0], beta, out=self.B[c0 + 1])
        else:
            self._store_rows(c0 + b, Q)
        if seg.pure:
            self._polynomial_bound()

    def _expand_single(self, seg: _Segment, l: int, m: int, c0: int) -> None:
        """One single-vector step (``b = 1``): the same relation as the block step, fewer passes.

        The product ``y = A x`` is orthogonalised first against the local three-term part
        (``x`` and the coupled earlier vectors, one matrix–vector pass over those rows), then by
        classical Gram–Schmidt against the whole basis as two matrix–vector products over the
        contiguous basis rows, repeated once when the norm dropped by more than ``1/√2``
        (DGKS). The norm that decides the repetition is ``β``, so no further pass computes it;
        the new basis row is written once (``y/β``).
        """
        B = self.B
        x = B[c0]
        if self._y1 is None:
            self._y1 = torch.empty(self.p, dtype=self.bdt, device=self.A.device)
        y = self._y1
        z = (self.A @ self._product_input(c0, 1))[:, 0]
        y.copy_(z)
        self.num_matvecs += 1
        self.iterations += 1
        # ‖y‖ from the product itself (fewer bytes when it is float32; accumulated in float64)
        znorm = torch.linalg.vector_norm(z, dtype=torch.float64)
        self.norm_lower = max(self.norm_lower, float(znorm))
        hx = float(torch.dot(x, y))
        f = seg.F[0].numpy()
        nz = np.flatnonzero(f)
        a0 = int(nz[0]) if nz.size else m
        coef = torch.from_numpy(np.append(f[a0:], hx))
        y.addmv_(B[l + a0 : c0 + 1].T, coef.to(dtype=self.bdt, device=y.device), alpha=-1.0)
        V = B[: c0 + 1]
        before = float(torch.linalg.vector_norm(y))
        hd = V @ y
        y.addmv_(V.T, hd, alpha=-1.0)
        beta = float(torch.linalg.vector_norm(y))
        h = hd.to(torch.float64).cpu()
        if beta < _DGKS * before:
            hd = V @ y
            y.addmv_(V.T, hd, alpha=-1.0)
            h = h + hd.to(torch.float64).cpu()
            beta = float(torch.linalg.vector_norm(y))
        scale = max(self.norm_lower, 1e-300)
        brk = 16.0 * (self.prod_rtol + self.eps_basis) * scale * math.sqrt(c0 + 1)
        dead = beta <= brk or c0 + 1 >= self.p
        hn = h.numpy()
        H = np.zeros((m + 1, m + 1))
        H[:m, :m] = seg.H.numpy()
        H[:m, m] = f
        H[m, :m] = f
        H[m, m] = hx + float(hn[c0])
        seg.H = torch.from_numpy(H)
        seg.eig = None
        F = np.zeros((1, m + 1))
        if not dead:
            F[0, m] = beta
        seg.F = torch.from_numpy(F)
        seg.C = torch.from_numpy(np.concatenate([seg.C.numpy(), hn[:l, None]], axis=1))
        # what remains of the coupling to W after the local step: the relation's asymmetry
        asym = float(np.linalg.norm(hn[l:c0])) if m else 0.0
        seg.omega = torch.from_numpy(np.append(seg.omega.numpy(), 1.0))
        seg.abserr = torch.from_numpy(np.append(seg.abserr.numpy(), asym))
        if dead:
            seg.broken = True
            self.invariant = True
            q = random_unit(
                self.p,
                self.generator,
                dtype=self.bdt,
                device=self.A.device,
                against=self._cols(0, c0 + 1),
            )
            B[c0 + 1].copy_(q)
        else:
            torch.div(y, beta, out=B[c0 + 1])
        if seg.pure:
            self._polynomial_bound()

    def _polynomial_bound(self) -> None:
        """Update ``τ`` from the Lanczos polynomial of the (pure, single-vector) segment."""
        seg = self.seg
        Hn = seg.H.numpy()
        last = abs(float(seg.F[0, -1]))
        beta = np.abs(np.append(np.diagonal(Hn, -1), last))
        theta = seg.eigh()[0].numpy()
        ends = (
            ("hi", "lo")
            if self.which == "both"
            else (("hi",) if self.which == "largest" else ("lo",))
        )
        if seg.gamma is not None:  # proven overlap: only the wanted end is certified
            gamma_min = seg.gamma
        else:
            gamma_min = seg.delta / len(ends) / small_ball_constant(seg.dim)
        if bool((beta == 0).any()):
            hi, lo = float(theta.max()), float(theta.min())
        else:  # only the end(s) in use: each root costs a Newton iteration
            log_limit = float(np.log(beta).sum()) + math.log(1.0 / gamma_min)
            hi = hidden_eigenvalue_bound(theta, log_limit, 1.0) if "hi" in ends else math.inf
            lo = hidden_eigenvalue_bound(theta, log_limit, -1.0) if "lo" in ends else -math.inf
        # T is the projection of A only up to the round-off of the products (and of a stored
        # float32 basis): the roots move with T's spectrum, by about one product's error
        ae = seg.abserr.numpy()
        asym = float(np.abs(ae).max()) if ae.size else 0.0
        pad = self.norm_lower * self.rel_rtol + asym
        self._tau_pad = pad
        hi, lo = hi + pad, lo - pad
        if not seg.counted:
            seg.counted = True
            self.delta_spent += seg.delta
        if "hi" in ends:
            self.tau_hi = min(self.tau_hi, hi)
        if "lo" in ends:
            self.tau_lo = max(self.tau_lo, lo)

    # ---------------------------------------------------------------- restart and lock
    def _restart(self, keep: Tensor) -> None:
        """Thick restart: keep the segment's Ritz vectors ``keep`` (indices into its eigh)."""
        seg, l = self.seg, self.locked.l
        m, b = seg.m, seg.b
        theta, S = seg.eigh()
        Sk = S[:, keep]
        rotate_rows(self.B, l, l + m, Sk)
        nk = int(keep.numel())
        self.B[l + nk : l + nk + b] = self.B[l + m : l + m + b].clone()
        seg.H = torch.diag(theta[keep])
        seg.eig = None
        seg.F = seg.F @ Sk
        seg.C = seg.C @ Sk
        seg.omega = Sk.abs().T @ seg.omega
        seg.abserr = Sk.abs().T @ seg.abserr
        seg.pure = False
        self.num_restarts += 1

    def _lock(self, idx: Tensor) -> None:
        """Lock the segment's Ritz vectors ``idx`` and discard the rest of the segment.

        The new locked set is Rayleigh–Ritz rotated so that ``Lᵀ A L`` is diagonal again.
        """
        seg, lk = self.seg, self.locked
        l, m = lk.l, seg.m
        theta, S = seg.eigh()
        Sz = S[:, idx]
        nz = int(idx.numel())
        rotate_rows(self.B, l, l + m, Sz)
        cross = seg.C @ Sz  # Lᵀ A Z
        G = torch.zeros(l + nz, l + nz, dtype=torch.float64)
        G[:l, :l] = torch.diag(lk.theta)
        G[:l, l:] = cross
        G[l:, :l] = cross.T
        G[l:, l:] = torch.diag(theta[idx])
        groups = [
            torch.cat([g, torch.zeros(g.shape[0], nz, dtype=torch.float64)], 1) for g in lk.groups
        ]
        newg = torch.cat([torch.zeros(seg.b, l, dtype=torch.float64), seg.F @ Sz], dim=1)
        groups.append(newg)
        omega = torch.cat([lk.omega, Sz.abs().T @ seg.omega])
        abserr = torch.cat([lk.abserr, Sz.abs().T @ seg.abserr])
        vals, Qg = torch.linalg.eigh(G)
        if l > 0:  # rotate the locked block so that Lᵀ A L is diagonal again
            rotate_rows(self.B, 0, l + nz, Qg)
            groups = [g @ Qg for g in groups]
            omega = Qg.abs().T @ omega
            abserr = Qg.abs().T @ abserr
        else:
            vals = theta[idx].clone()
        self.locked = _Locked(theta=vals, groups=groups, omega=omega, abserr=abserr)

    # ---------------------------------------------------------------- assessment
    def _assess(self, eps_orth: float | None = None) -> _Answer:
        """The current answer and its certificate (see the module docstring)."""
        if self.locked.l == 0 and self.seg.m > 0:
            return self._assess_segment(eps_orth)
        return self._assess_general(eps_orth)

    def _wanted_counts(self, n: int) -> tuple[int, int]:
        """How many of ``n`` Ritz values are wanted from the top and from the bottom.

        ``which="both"`` takes at most ``k`` from each end, never the same value twice and
        never more than the operator's size ``p`` in all.
        """
        kt = min(self.k, n) if self.which in ("largest", "both") else 0
        if self.which == "smallest":
            kb = min(self.k, n)
        elif self.which == "both":
            kb = max(0, min(self.k, n - kt, self.p - kt))
        else:
            kb = 0
        return kt, kb

    def _assess_general(self, eps_orth: float | None = None) -> _Answer:
        seg, lk = self.seg, self.locked
        l, m = lk.l, seg.m
        n = l + m
        mode = "joint"
        if l == 0:
            eta, S = seg.eigh()
            mode = "segment"
        elif m == 0 or not self._segment_has_wanted():
            mode = "locked"
            # the answer is the locked Ritz values (still Ritz values of an orthonormal basis);
            # the joint Rayleigh–Ritz would only move them by the tiny L–W coupling
            eta = lk.theta
            S = torch.cat(
                [torch.eye(l, dtype=torch.float64), torch.zeros(m, l, dtype=torch.float64)]
            )
            n = l
        else:
            G = torch.zeros(n, n, dtype=torch.float64)
            G[:l, :l] = torch.diag(lk.theta)
            G[:l, l:] = seg.C
            G[l:, :l] = seg.C.T
            G[l:, l:] = seg.H
            eta, S = torch.linalg.eigh(G)
        kt, kb = self._wanted_counts(n)
        top = torch.arange(n - 1, n - 1 - kt, -1, dtype=torch.long)
        bottom = torch.arange(0, kb, dtype=torch.long)
        idx = torch.cat([top, bottom])
        SL, SW = S[:l, idx], S[l:, idx]
        res = torch.linalg.vector_norm(seg.F @ SW, dim=0) if m else torch.zeros(idx.numel())
        for g in lk.groups:
            res = res + torch.linalg.vector_norm(g @ SL, dim=0)
        omega = torch.cat([lk.omega, seg.omega]).abs()
        abserr = torch.cat([lk.abserr, seg.abserr]).abs()
        Sabs = S[:, idx].abs()
        weight = Sabs.T @ omega if n else torch.zeros(0, dtype=torch.float64)
        aerr = Sabs.T @ abserr if n else torch.zeros(0, dtype=torch.float64)
        # ‖A‖ for the round-off floor: the largest Ritz value or product norm seen (τ is an
        # upper bound but a loose one until the segment converges)
        norm = max(self.norm_lower, float(eta.abs().max()) if n else 0.0)
        if eps_orth is None:
            eps_orth = self._orth_model(max(n, 1))
        # relation error of each returned vector (product round-off and observed asymmetry)
        # and of each locked vector; they enter the residuals and the Rayleigh quotients
        rel_err = norm * self.rel_rtol * weight + aerr
        floor = rel_err + 4.0 * eps_orth * norm
        res = res + floor
        fL = norm * self.rel_rtol * lk.omega.abs() + lk.abserr.abs()
        rho = lk.rho() + float(torch.linalg.vector_norm(fL))
        rL = lk.residuals() + fL
        raw = self._bounds(eta, top, bottom, rL, rho, self.tau_hi, self.tau_lo)
        bounds = self._combine(raw, floor, norm * 4.0 * eps_orth, mode)
        values = eta[idx]
        zeroish = values.abs() <= bounds
        thr = torch.where(
            zeroish, torch.full_like(values, self.cfg.tol * norm), self.cfg.tol * values.abs()
        )
        wanted = self.k * self.ends if self.which == "both" else self.k
        enough = idx.numel() >= min(wanted, self.p)
        ok = bool((bounds <= thr).all()) and enough
        if self.cfg.criterion == "residual":
            ok = ok and bool((res <= thr).all())
        # Would recomputing the products of the returned (segment mode) or locked vectors
        # afresh certify? It replaces the accumulated relation error (ℓ1 weight ω) by the
        # error of n fresh products; it pays off for float32 operators near their floor.
        polish = False
        n_pol = int(idx.numel()) if mode == "segment" else (l if mode == "locked" else 0)
        if not ok and enough and n_pol and self.num_matvecs + n_pol <= self.cfg.max_iters:
            # the polished vectors are re-orthonormalised in float64
            fresh = norm * math.sqrt(n_pol) * (self.prod_rtol + 4.0 * _EPS64)
            rho_f = lk.rho() + fresh if l else 0.0
            rL_f = lk.residuals() + fresh
            opt = self._combine(
                self._bounds(eta, top, bottom, rL_f, rho_f, self.tau_hi, self.tau_lo),
                torch.full_like(floor, fresh),
                norm * 4.0 * _EPS64 * math.sqrt(n_pol),
                mode,
            )
            polish = bool((opt <= thr).all())
            if self.cfg.criterion == "residual":
                polish = polish and bool((res - floor + fresh <= thr).all())
        self.last_norm = norm
        self._rho, self._rL, self._floor, self._raw = rho, rL, floor, raw
        return _Answer(
            top, bottom, eta, S, values, bounds, res, thr, ok, norm, mode=mode, polish=polish
        )

    def _assess_segment(self, eps_orth: float | None) -> _Answer:
        """:meth:`_assess` without locked vectors (``segment`` mode), on the small arrays.

        The same quantities as the general path with ``l = 0`` (no locked residuals: ``ρ = 0``
        and the upper bound of every wanted value is ``τ``), computed with NumPy on the
        segment's ``m``-sized arrays instead of a few dozen small tensor operations per step.
        """
        seg = self.seg
        m = seg.m
        eta_t, S_t = seg.eigh()
        eta, S = eta_t.numpy(), S_t.numpy()
        kt, kb = self._wanted_counts(m)
        top = np.arange(m - 1, m - 1 - kt, -1, dtype=np.int64)
        bottom = np.arange(0, kb, dtype=np.int64)
        idx = np.concatenate([top, bottom])
        Sw = S[:, idx]
        res = np.linalg.norm(seg.F.numpy() @ Sw, axis=0)
        Sabs = np.abs(Sw)
        weight = Sabs.T @ np.abs(seg.omega.numpy())
        aerr = Sabs.T @ np.abs(seg.abserr.numpy())
        # ‖A‖ for the round-off floor: the largest Ritz value or product norm seen
        norm = max(self.norm_lower, float(np.abs(eta).max()))
        if eps_orth is None:
            eps_orth = self._orth_model(m)
        floor = norm * self.rel_rtol * weight + aerr + 4.0 * eps_orth * norm
        res = res + floor
        # no locked vectors: U = τ for every wanted value (ρ = 0)
        raw = np.concatenate(
            [
                np.maximum(self.tau_hi - eta[top], 0.0),
                np.maximum(eta[bottom] - self.tau_lo, 0.0),
            ]
        )
        bounds = np.maximum(raw + norm * 4.0 * eps_orth, floor)
        values = eta[idx]
        thr = np.where(np.abs(values) <= bounds, self.cfg.tol * norm, self.cfg.tol * np.abs(values))
        wanted = self.k * self.ends if self.which == "both" else self.k
        enough = idx.size >= min(wanted, self.p)
        ok = bool((bounds <= thr).all()) and enough
        residual = self.cfg.criterion == "residual"
        if residual:
            ok = ok and bool((res <= thr).all())
        polish = False
        n_pol = int(idx.size)
        if not ok and enough and n_pol and self.num_matvecs + n_pol <= self.cfg.max_iters:
            # recomputing the n_pol products afresh (see _assess) replaces the floor
            fresh = norm * math.sqrt(n_pol) * (self.prod_rtol + 4.0 * _EPS64)
            opt = np.maximum(raw + norm * 4.0 * _EPS64 * math.sqrt(n_pol), fresh)
            polish = bool((opt <= thr).all())
            if residual:
                polish = polish and bool((res - floor + fresh <= thr).all())
        self.last_norm = norm
        raw_t, floor_t = torch.from_numpy(raw), torch.from_numpy(floor)
        self._rho, self._rL = 0.0, torch.zeros(0, dtype=torch.float64)
        self._floor, self._raw = floor_t, raw_t
        return _Answer(
            torch.from_numpy(top),
            torch.from_numpy(bottom),
            eta_t,
            S_t,
            torch.from_numpy(values),
            torch.from_numpy(bounds),
            torch.from_numpy(res),
            torch.from_numpy(thr),
            ok,
            norm,
            mode="segment",
            polish=polish,
        )

    @staticmethod
    def _combine(raw: Tensor, floor: Tensor, orth: float, mode: str) -> Tensor:
        """Error bounds from the one-sided part ``raw`` and the round-off ``floor``.

        ``raw = max(0, U − η)`` bounds the undershoot ``λ − η`` (``U`` an upper bound on
        ``λ``), ``floor`` the overshoot ``η − λ`` that round-off allows (Cauchy interlacing
        forbids any in exact arithmetic). With locked vectors ``U`` comes from Weyl/Li–Li
        bounds on Rayleigh quotients whose own round-off is the floor, so the two add. In
        ``segment`` mode ``U = τ`` is the Lanczos polynomial's root, computed from the same
        tridiagonal ``T`` as ``η`` and already widened by one product's error (``_tau_pad``):
        there ``|λ − η| <= max(raw + orth, floor)``, ``orth`` the loss-of-orthogonality term
        that separates the eigenvalues of ``T`` from those of ``QᵀAQ``.
        """
        if mode == "segment":
            return torch.maximum(raw + orth, floor)
        return raw + floor

    def _bounds(
        self,
        eta: Tensor,
        top: Tensor,
        bottom: Tensor,
        rL: Tensor,
        rho: float,
        tau_hi: float,
        tau_lo: float,
        theta_L: Tensor | None = None,
    ) -> Tensor:
        """``max(0, U_j − η_j)`` at the top and ``max(0, η_j − L_j)`` at the bottom."""
        kt, kb = int(top.numel()), int(bottom.numel())
        bounds = torch.full((kt + kb,), math.inf, dtype=torch.float64)
        if theta_L is None:
            theta_L = self.locked.theta
        if kt:
            up = self._upper_bounds(theta_L, rL, rho, tau_hi, kt)
            bounds[:kt] = (up - eta[top]).clamp(min=0.0)
        if kb:
            low = -self._upper_bounds(-theta_L, rL, rho, -tau_lo, kb)
            bounds[kt:] = (eta[bottom] - low).clamp(min=0.0)
        return bounds

    def _hopeless(self, ans: _Answer) -> bool:
        """Whether the locked set can never be certified, however far the random segment runs.

        The segment's extreme Ritz values are lower bounds of ``λ_max(B)`` (upper of
        ``λ_min(B)``), so no future ``τ`` can beat them; if even those leave a wanted bound above
        its threshold, the locked residuals are too large (a gap estimate was optimistic).
        """
        seg = self.seg
        if not seg.pure or self.locked.l == 0 or seg.m < 2 or self.refines >= 2:
            return False
        theta, _, top, bottom = self._wanted_in_segment()
        if bool((top | bottom).any()):
            return False  # the segment found a wanted value: it becomes a search
        best = self._bounds(
            ans.eta,
            ans.top,
            ans.bottom,
            self._rL,
            self._rho,
            float(theta.max()),
            float(theta.min()),
        )
        return not bool((best + self._floor <= ans.thresholds).all())

    def _refine(self) -> None:
        """Unlock everything and restart from the locked vectors with the strict lock target."""
        l = self.locked.l
        start = self._cols(0, l).clone()
        self.locked = _Locked()
        self.strict = True
        self.refines += 1
        self.tau_hi, self.tau_lo = math.inf, -math.inf  # they bounded the old deflated operator
        self.seg = self._new_segment(start)

    def reassess(self, eps_orth: float) -> _Answer:
        """The final assessment with the measured loss of orthogonality of the vectors."""
        return self._assess(eps_orth)

    def _orth_model(self, n: int) -> float:
        """The loss of orthogonality the bounds assume for ``n`` basis vectors, 4·eps_basis·√n."""
        return 4.0 * self.eps_basis * math.sqrt(n)

    @property
    def modelled_orthogonality(self) -> float:
        """:meth:`_orth_model` of the locked and active vectors at the end of the run."""
        return self._orth_model(max(self.locked.l + self.seg.m, 1))

    def basis_orthogonality(self) -> float:
        """Measured ``‖QᵀQ − I‖₂`` of the stored basis (locked, active and pending rows)."""
        n = min(self.locked.l + self.seg.m + self.seg.b, self.B.shape[0])
        return orthogonality_loss(self.B[:n])

    @staticmethod
    def _upper_bounds(theta_L: Tensor, rL: Tensor, rho: float, tau: float, k: int) -> Tensor:
        """Upper bounds ``U_j`` on the ``j``-th largest eigenvalue, ``j = 1..k`` (see module)."""
        order = torch.argsort(theta_L, descending=True)
        th = theta_L[order]
        r = rL[order]
        nl = th.numel()
        U = torch.full((k,), math.inf, dtype=torch.float64)
        if math.isinf(tau) and tau > 0:
            return U
        for j in range(k):
            base = float(th[j]) if j < nl else -math.inf
            U[j] = max(base, tau) + rho
            if j < nl and base > tau:
                # Li–Li with M1 = all locked values, M2 = the deflated operator (‖E‖ <= ρ)
                d = base - tau
                q = 2.0 * rho * rho / (d + math.sqrt(d * d + 4.0 * rho * rho))
                U[j] = min(float(U[j]), base + q)
        if nl == 0:
            return U
        # clusters of locked values: split where consecutive gaps exceed 2ρ
        gaps = (th[:-1] - th[1:]) > 2.0 * rho
        starts = [0] + [i + 1 for i in torch.nonzero(gaps).flatten().tolist()]
        ends = [*starts[1:], nl]
        for s0, s1 in zip(starts, ends):
            if s0 >= k:
                break
            low = float(th[s1 - 1])
            if not tau < low - rho:
                continue
            e = min(rho, float(torch.linalg.vector_norm(r[s0:s1])))
            others = torch.cat([th[:s0], th[s1:]])
            for i in range(s0, min(s1, k)):
                ti = float(th[i])
                d = ti - tau
                if others.numel():
                    d = min(d, float((others - ti).abs().min()))
                d -= rho
                if d > 0:
                    q = 2.0 * e * e / (d + math.sqrt(d * d + 4.0 * e * e))
                    U[i] = min(float(U[i]), ti + q)
        return U

    # ---------------------------------------------------------------- control
    def _segment_has_wanted(self) -> bool:
        """Whether a segment Ritz value ranks among the ``k`` wanted at some end."""
        theta = self.seg.eigh()[0]
        lt = self.locked.theta
        k = self.k
        if self.which in ("largest", "both"):
            kth = torch.sort(lt, descending=True).values[k - 1] if lt.numel() >= k else -math.inf
            if float(theta.max()) > float(kth):
                return True
        if self.which in ("smallest", "both"):
            kth = torch.sort(lt).values[k - 1] if lt.numel() >= k else math.inf
            if float(theta.min()) < float(kth):
                return True
        return False

    def _wanted_in_segment(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The segment's Ritz values, residual bounds, and which are wanted at the top/bottom.

        A segment Ritz value is wanted when it is among the ``k`` largest (smallest) of the
        locked values and the segment's values together.
        """
        seg, lk = self.seg, self.locked
        theta, S = seg.eigh()
        r = torch.linalg.vector_norm(seg.F @ S, dim=0)
        merged = torch.cat([lk.theta, theta])
        from_seg = torch.cat(
            [torch.zeros(lk.l, dtype=torch.bool), torch.ones(theta.numel(), dtype=torch.bool)]
        )
        top = torch.zeros(theta.numel(), dtype=torch.bool)
        bottom = torch.zeros(theta.numel(), dtype=torch.bool)
        if self.which in ("largest", "both"):
            for i in torch.argsort(merged, descending=True)[: self.k].tolist():
                if bool(from_seg[i]):
                    top[i - lk.l] = True
        if self.which in ("smallest", "both"):
            for i in torch.argsort(merged)[: self.k].tolist():
                if bool(from_seg[i]):
                    bottom[i - lk.l] = True
        return theta, r, top, bottom

    def _lock_threshold(self, ans: _Answer) -> float:
        """Half the smallest wanted threshold: the locked block's residual ``ρ`` must stay below.

        Locking vectors whose residuals meet it keeps Weyl's bound sufficient.
        """
        vals, res = ans.values, ans.residuals
        if vals.numel() == 0:
            return 0.0
        thr = torch.where(
            vals.abs() > res,
            self.cfg.tol * vals.abs(),
            torch.full_like(vals, self.cfg.tol * ans.norm),
        )
        return 0.5 * float(thr.min())

    def _maybe_lock(self, ans: _Answer, *, full: bool) -> bool:
        """Lock converged wanted Ritz vectors of the segment (returns whether it did).

        A pure segment holding at most one wanted value per end is left running: its Lanczos
        polynomial certifies that value directly. With ``full`` (the basis is full) it locks
        whatever has converged.
        """
        seg = self.seg
        if seg.m == 0:
            return False
        left = self.p - self.locked.l - seg.m  # directions not yet in the basis
        budget = self.cfg.max_iters - self.num_matvecs
        if not full and left <= min(16, budget):
            return False  # cheaper to span the whole space: the Ritz values become exact
        if seg.pure and self.k == 1 and not full:
            return False  # at most one wanted value per end: the segment certifies it (below)
        theta, r, top, bottom = self._wanted_in_segment()
        want = top | bottom
        if not bool(want.any()):
            return False
        n_lock = self.locked.l + int(want.sum())
        target = self._lock_threshold(ans) / math.sqrt(max(n_lock, 1))
        targets = torch.full_like(r, target)
        if not self.strict:
            # A gap to the rest of the spectrum makes the locked residual count quadratically
            # (Li & Li): lock once r <= ¼√(tol·|θ|·gap), the gap estimated from the segment's
            # unwanted Ritz values. The certificate later checks the gap; if it fails,
            # _refine() unlocks and converges to the strict (Weyl) target instead.
            others = theta[~want]
            for i in torch.nonzero(want).flatten().tolist():
                ti = float(theta[i])
                if bool(top[i]):
                    nb = others[others < ti]
                    gap = ti - float(nb.max()) if nb.numel() else math.inf
                else:
                    nb = others[others > ti]
                    gap = float(nb.min()) - ti if nb.numel() else math.inf
                if not math.isfinite(gap):
                    continue
                thr = self.cfg.tol * (abs(ti) if abs(ti) > float(r[i]) else ans.norm)
                relaxed = 0.25 * math.sqrt(thr * gap) / math.sqrt(max(n_lock, 1))
                targets[i] = max(target, min(relaxed, 0.1 * gap))
        if not bool((r[want] <= targets[want]).all()):
            return False
        if seg.pure and int(top.sum()) <= 1 and int(bottom.sum()) <= 1 and not full:
            return False
        # also lock converged neighbours of the wanted values: a cheaper certificate later
        chosen = set(torch.nonzero(want).flatten().tolist())
        extra = (~want) & (r <= target)
        budget = self.k + 2
        ordered: list[int] = []
        if self.which in ("largest", "both"):
            ordered += torch.argsort(theta, descending=True).tolist()
        if self.which in ("smallest", "both"):
            ordered += torch.argsort(theta).tolist()
        for i in ordered:
            if budget <= 0:
                break
            if bool(extra[i]) and i not in chosen:
                chosen.add(i)
                budget -= 1
        self._lock(torch.tensor(sorted(chosen), dtype=torch.long))
        return True

    def _restart_or_stop(self, ans: _Answer) -> bool:
        """Make room for one more block; returns ``False`` when no progress is possible."""
        seg, l = self.seg, self.locked.l
        room = self.cap - l - 2 * seg.b
        if seg.m <= room:
            return True
        if self._maybe_lock(ans, full=True):
            self.seg = self._new_segment(None)
            return self.cap - self.locked.l - 2 * self.seg.b >= self.seg.b
        theta, _, top, bottom = self._wanted_in_segment()
        want = top | bottom
        if seg.pure and self.locked.l > 0 and not bool(want.any()):
            # a certification segment filled the basis: restarting would void its polynomial
            # bound, and a new segment would be no longer than this one
            return False
        keep_n = max(int(want.sum()) + 1, room // 2)
        if keep_n >= room or keep_n >= seg.m:
            return False
        order = torch.argsort(theta, descending=True)
        if self.which == "smallest":
            order = torch.flip(order, [0])
        if self.which == "both":
            asc = torch.flip(order, [0])
            inter = torch.stack([order, asc], 1).flatten().tolist()
            seen: list[int] = []
            for i in inter:
                if i not in seen:
                    seen.append(i)
            order = torch.tensor(seen, dtype=torch.long)
        keep = [int(i) for i in order.tolist() if bool(want[i])]
        for i in order.tolist():
            if len(keep) >= keep_n:
                break
            if int(i) not in keep:
                keep.append(int(i))
        self._restart(torch.tensor(sorted(keep), dtype=torch.long))
        return True

    def run(self) -> tuple[_Answer, str]:
        """Iterate until certified, out of budget, or stuck; return the last assessment."""
        reason = "budget"
        ans = self._assess()
        while True:
            if self.locked.l >= self.p:  # the whole space is locked: nothing is unexplored
                self.tau_hi, self.tau_lo = -math.inf, math.inf
                ans = self._assess()
                reason = "complete" if ans.certified else "stuck"
                break
            if self.num_matvecs + self.seg.b > self.cfg.max_iters:
                reason = "budget"
                break
            if not self._restart_or_stop(ans):
                reason = "basis"
                break
            self._expand()
            ans = self._assess()
            if self.callback is not None:
                phase = "certify" if (self.seg.pure and self.locked.l > 0) else "search"
                stop = self.callback(
                    LanczosProgress(
                        iteration=self.iterations,
                        num_matvecs=self.num_matvecs,
                        values=ans.values.clone(),
                        error_bounds=ans.bounds.clone(),
                        residuals=ans.residuals.clone(),
                        phase=phase,
                        num_restarts=self.num_restarts,
                    )
                )
                if stop:
                    reason = "callback"
                    break
            if ans.certified:
                reason = "certified"
                break
            if ans.polish:
                reason = "polish"
                break
            if self._floor_blocks(ans):
                reason = "round-off floor"
                break
            if self.seg.broken:  # invariant subspace: its Ritz values are exact; lock it
                self._lock(torch.arange(self.seg.m))
                self.seg = self._new_segment(None) if self.locked.l < self.p else self._empty()
                ans = self._assess()
                if ans.certified:
                    reason = "certified"
                    break
                continue
            if self._hopeless(ans):
                if self.num_matvecs + self.locked.l > self.cfg.max_iters:
                    # no budget for one block step of the refined start: stop with what the
                    # locked vectors and the segment give (a refine would leave nothing)
                    reason = "budget"
                    break
                self._refine()
                continue
            if self._maybe_lock(ans, full=False):
                self.seg = self._new_segment(None)
        return self._assess(), reason

    def _floor_blocks(self, ans: _Answer) -> bool:
        """Whether the bounds have reached the round-off floor and it exceeds the tolerance.

        Then no further product can help: the run stops with the most accurate values its
        products allow (recomputed afresh when possible) and reports ``converged=False``.
        """
        n_pol = max(1, int(ans.values.numel()))
        fresh = ans.norm * math.sqrt(n_pol) * (self.prod_rtol + 4.0 * _EPS64)
        if ans.mode == "segment":
            fresh += self._tau_pad  # τ − η never falls below τ's round-off margin
        if not bool((ans.thresholds < fresh).any()):
            return False
        return bool((self._raw <= fresh).all())

    def polish(self, ans: _Answer) -> tuple[_Answer, Tensor]:
        """Recompute the products of the answer's (or all locked) vectors afresh.

        Rayleigh–Ritz and explicit residuals from one block of ``n`` products, whose round-off
        is that of ``n`` products instead of the accumulated relation error of the whole run
        (segment mode: the returned vectors; locked mode: all locked vectors). Returns the
        final answer and the vectors.
        """
        if ans.mode == "locked":
            Y = combine_rows(
                self.B[: self.locked.l],
                torch.eye(self.locked.l, dtype=torch.float64),
                torch.float64,
            )
        else:
            n_cols = self.locked.l + self.seg.m
            idx_ans = torch.cat([ans.top, ans.bottom])
            Y = combine_rows(self.B[:n_cols], ans.S[:, idx_ans], torch.float64)
        Y, _ = torch.linalg.qr(Y)  # float64 orthonormal basis of the same span
        n = Y.shape[1]
        AY = (self.A @ Y.to(self.A.dtype)).to(torch.float64)
        self.num_matvecs += n
        gram = (Y.T @ Y).cpu()
        eps_orth = float(torch.linalg.matrix_norm(gram - torch.eye(n, dtype=torch.float64), ord=2))
        G = (Y.T @ AY).cpu()
        G = 0.5 * (G + G.T)
        theta, Qg = torch.linalg.eigh(G)
        Qd = Qg.to(Y.device)
        Yr, AYr = Y @ Qd, AY @ Qd
        R = AYr - Yr * theta.to(Y.device)
        rcol = torch.linalg.vector_norm(R, dim=0).cpu()
        RtR = (R.T @ R).cpu()
        rho_R = math.sqrt(max(float(torch.linalg.eigvalsh(0.5 * (RtR + RtR.T))[-1]), 0.0))
        norm = max(ans.norm, float(theta.abs().max()))
        # n fresh products err by at most √n·product_rtol·‖A‖ (Frobenius), which bounds both
        # the error of the Rayleigh–Ritz values and that of the explicit residuals
        fresh = norm * (self.prod_rtol * math.sqrt(n) + 4.0 * eps_orth)
        kt = int(ans.top.numel())
        kb = int(ans.bottom.numel())
        top = torch.arange(n - 1, n - 1 - kt, -1, dtype=torch.long)
        bottom = torch.arange(0, kb, dtype=torch.long)
        idx = torch.cat([top, bottom])
        l_mode = ans.mode == "locked"
        if l_mode:
            raw = self._bounds(
                theta, top, bottom, rcol + fresh, rho_R + fresh, self.tau_hi, self.tau_lo, theta
            )
        else:  # no locked vectors: the values are bounded by the random segment alone
            empty = torch.zeros(0, dtype=torch.float64)
            raw = self._bounds(theta, top, bottom, empty, 0.0, self.tau_hi, self.tau_lo, empty)
        bounds = self._combine(
            raw,
            torch.full_like(raw, fresh),
            norm * 4.0 * eps_orth,
            "joint" if l_mode else "segment",
        )
        values = theta[idx]
        res = rcol[idx] + fresh
        zeroish = values.abs() <= bounds
        thr = torch.where(
            zeroish, torch.full_like(values, self.cfg.tol * norm), self.cfg.tol * values.abs()
        )
        ok = bool((bounds <= thr).all())
        if self.cfg.criterion == "residual":
            ok = ok and bool((res <= thr).all())
        S = torch.eye(n, dtype=torch.float64)
        final = _Answer(top, bottom, theta, S, values, bounds, res, thr, ok, norm, mode="polished")
        self.last_norm = norm
        return final, Yr[:, idx].to(self.A.dtype)

    def vectors(self, ans: _Answer) -> Tensor:
        """The returned Ritz vectors ``[L, W] S`` in the operator's dtype."""
        n = self.locked.l + self.seg.m
        idx = torch.cat([ans.top, ans.bottom])
        return combine_rows(self.B[:n], ans.S[:, idx], self.A.dtype)
