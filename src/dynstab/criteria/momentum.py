"""Linear stability of SGD with heavy-ball or Nesterov momentum at interpolating minima.

**Iterates.** PyTorch's ``SGD(lr=η, momentum=β, dampening=0)`` keeps a buffer
b_t = βb_{t−1} + ∇L_{I_t}(θ_t) and steps θ_{t+1} = θ_t − ηb_t, which is the heavy ball
θ_{t+1} = θ_t − η∇L_{I_t}(θ_t) + β(θ_t − θ_{t−1}). With ``nesterov=True`` it steps
θ_{t+1} = θ_t − η(∇L_{I_t}(θ_t) + βb_t) (gradient at θ_t, not at a look-ahead point).

**Linearisation.** Near a minimum, with δ = θ − θ* and the batch curvature H_I, both are linear
maps z_{t+1} = M_{I_t} z_t of an augmented state, of the form M_I = F − η (g e₁ᵀ) ⊗ H_I:

* heavy ball, z = (δ_t, δ_{t−1}): F = [[1 + β, −β], [1, 0]], g = (1, 0);
* Nesterov, z = (δ_t, u_t) with u_t = ηb_{t−1}: u_{t+1} = βu_t + ηH_Iδ_t and
  δ_{t+1} = δ_t − ηH_Iδ_t − βu_{t+1}, so F = [[1, −β²], [0, β]], g = (1 + β, −1).

(The heavy ball in buffer coordinates (δ_t, u_t) is a fixed similarity of the first form, so
both have the same stability.) For Nesterov the pair (δ_t, δ_{t−1}) is not a Markov state
(δ_t − δ_{t−1} depends on the previous batch), hence the buffer coordinates.

**GD thresholds** (deterministic H with eigenvalue λ ≥ 0, a = ηλ). Heavy ball: the companion
polynomial z² − (1 + β − a)z + β is Schur stable iff 0 < a < 2(1 + β), so GD with momentum is
stable iff η ≤ 2(1 + β)/λ_max. Nesterov: M = [[1 − a(1+β), −β²], [a, β]] has trace
(1 + β)(1 − a) and determinant β(1 − a), i.e. z² − (1 + β)(1 − a)z + β(1 − a); the Jury
conditions 1 + c₁ + c₀ = a > 0, |c₀| < 1 and 1 − c₁ + c₀ = 1 + (1 + 2β)(1 − a) > 0 give
η ≤ (2 + 2β)/((1 + 2β)λ_max) (β = 0.9: 1.357/λ_max).

**Mean square.** Σ_t = E[z_tz_tᵀ] evolves by the positive map Q(Σ) = E_I[M_I Σ M_Iᵀ]. With the
batch-moment identity E_I[H_I X H_I] = (1 − p)HXH + p(1/n)Σ_i H_i X H_i (Mulayoff & Michaeli,
2024, Lemma 1; valid for every matrix X),

    Q(Σ) = FΣFᵀ − η[(FΣE₁)HGᵀ + GH(FΣE₁)ᵀ] + η² G D(E₁ᵀΣE₁) Gᵀ,

with F, G = g ⊗ I, E₁ = e₁ ⊗ I read blockwise and D(X) = (1 − p)HXH + (p/n) Σ_i H_iXH_i.

**Gram-space reduction.** At an interpolating minimum of the ½-square loss H_i = J_iᵀJ_i. Split
parameter space into the row space R of J (dimension ρ = rank K) and the null space N. Every
H_I vanishes on N and maps R into R, so M_I is block diagonal: on R ⊕ R it is the 2ρ×2ρ map
above in the coordinates of :func:`~dynstab.criteria.gram_coordinates` (H = Λ,
H_i = Ĝ_iᵀĜ_i); on N ⊕ N it is the deterministic M₀ = F (H = 0), whose eigenvalues are 1 and
β for both forms (heavy ball: z² − (1 + β)z + β = (z − 1)(z − β); Nesterov: the same). So the
N–N block of Σ stays bounded (the eigenvalue-1 mode is a rigid shift along the valley). The
cross blocks R–N evolve by the deterministic map X ↦ M̄_R X M₀ᵀ (M̄_R = E[M_I] on R), whose
spectral radius is ρ(M̄_R)·ρ(M₀) = ρ(M̄_R); since ‖E z‖² ≤ E‖z‖², ρ(M̄_R)² ≤ ρ(Q_R), so the
cross terms decay whenever the R–R block does. Hence mean-square stability holds iff
ρ(Q_R) ≤ 1, Q_R acting on symmetric 2ρ×2ρ matrices (dimension ρ(2ρ + 1)). Q_R is not
self-adjoint; by the Krein–Rutman theorem its spectral radius is an eigenvalue with a PSD
eigenvector. Both the threshold and the growth factor ρ(Q_R) are computed on the smaller
ρ(ρ + 1)/2-dimensional reduced criterion below (:func:`momentum_threshold`,
:func:`momentum_growth`): dense eigenvalues for small sizes, Arnoldi (ARPACK via
:func:`scipy.sparse.linalg.eigs`) otherwise.

**Threshold.** η* = sup{η: ρ(Q_R(η)) ≤ 1}. Mean-square stability implies first-moment
stability (E z_t = M̄_R^t z_0), so η* ≤ η_GD (the GD threshold above). :func:`momentum_threshold`
evaluates ρ on a grid of ``grid_points`` values in (0, η_GD], checks that the stable points
form an initial interval (reported as ``stable_set_interval``), and refines the first crossing
by Brent's bracketing method to relative precision ``rtol``.

References:
    Polyak (1964), "Some methods of speeding up the convergence of iteration methods", USSR
    Comput. Math. Math. Phys. 4(5) (heavy ball). Sutskever, Martens, Dahl & Hinton (2013),
    "On the importance of initialization and momentum in deep learning", ICML (Nesterov form
    used by PyTorch). Mulayoff & Michaeli (2024), "Exact mean square linear stability
    analysis for SGD", COLT (Lemma 1, Thm. 3). Cohen et al. (2021), "Gradient descent on
    neural networks typically occurs at the edge of stability", ICLR (momentum thresholds,
    App. B).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.sparse.linalg import ArpackNoConvergence, eigs
from scipy.sparse.linalg import LinearOperator as ScipyOperator
from torch import Tensor

from dynstab._checks import check_positive
from dynstab.criteria.gram import GramCoordinates, _SymPacking
from dynstab.sampling import Sampling

__all__ = ["check_momentum", "momentum_form", "momentum_gd_threshold", "momentum_solve_flops"]

#: Largest dimension ρ(ρ + 1)/2 of the reduced criterion that η* solves densely.
REDUCED_DENSE_MAX_DIM = 200
#: Evaluations of the reduced criterion by :func:`momentum_threshold` assumed by the cost model
#: (the 31-point scan plus Brent; 39–40 measured at ranks 10–190).
THRESHOLD_EVALUATIONS = 40
#: ARPACK products per evaluation of the reduced criterion assumed by the cost model (62–82
#: measured at ranks 30–190, n = 200).
THRESHOLD_ARPACK_PRODUCTS = 100
#: Evaluations of the reduced criterion ρ(K_{η,λ}) per growth factor (:func:`momentum_growth`:
#: the bracket and Brent's root in λ; 15–18 measured at ranks 30 and 190).
GROWTH_EVALUATIONS = 20
#: Flops of a dense non-symmetric eigenvalue computation of an N×N matrix, per N³ (LAPACK
#: ``geev`` without eigenvectors: Hessenberg reduction and QR iterations, ≈ 10N³).
EIGVALS_FLOPS_PER_CUBE = 10.0


def check_momentum(momentum: float, nesterov: bool) -> float:
    """Validate β ∈ [0, 1) and ``nesterov`` (which needs β > 0); return β as a float.

    Raises:
        TypeError: If β is not a real number.
        ValueError: If β is outside [0, 1) or ``nesterov`` is set with β = 0.
    """
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be a bool; got {type(nesterov).__name__}.")
    if isinstance(momentum, bool) or not isinstance(momentum, int | float):
        raise TypeError(
            f"momentum must be a real number in [0, 1); got {momentum!r} "
            f"({type(momentum).__name__})."
        )
    beta = check_positive("momentum", momentum, allow_zero=True)
    if beta >= 1.0:
        raise ValueError(
            f"momentum must lie in [0, 1) (the heavy ball diverges for β ≥ 1); got {momentum}."
        )
    if nesterov and beta == 0.0:
        raise ValueError(
            "nesterov=True needs momentum > 0 (as torch.optim.SGD requires); got momentum=0."
        )
    return beta


def momentum_form(momentum: float, nesterov: bool = False) -> tuple[Tensor, Tensor]:
    """The augmented linear map M_I = F − η (g e₁ᵀ) ⊗ H_I of SGD with momentum.

    Args:
        momentum: β in [0, 1).
        nesterov: PyTorch's Nesterov form (state (δ_t, η·b_{t−1})) instead of the heavy ball
            (state (δ_t, δ_{t−1})).

    Returns:
        ``(F, g)``: float64 tensors of shapes ``(2, 2)`` and ``(2,)`` (see the module
        docstring).

    Raises:
        ValueError: If β is outside [0, 1), or ``nesterov`` with β = 0.

    Example:
        >>> F, g = momentum_form(0.5)
        >>> F.tolist(), g.tolist()
        ([[1.5, -0.5], [1.0, 0.0]], [1.0, 0.0])
    """
    b = check_momentum(momentum, nesterov)
    if nesterov:
        F = [[1.0, -b * b], [0.0, b]]
        g = [1.0 + b, -1.0]
    else:
        F = [[1.0 + b, -b], [1.0, 0.0]]
        g = [1.0, 0.0]
    return torch.tensor(F, dtype=torch.float64), torch.tensor(g, dtype=torch.float64)


def momentum_gd_threshold(
    lambda_max: float, momentum: float = 0.0, *, nesterov: bool = False
) -> float:
    """GD-with-momentum stability threshold: 2(1 + β)/λ_max, or (2 + 2β)/((1 + 2β)λ_max).

    Full-batch GD with heavy-ball momentum β is linearly stable at a minimum iff
    η ≤ 2(1 + β)/λ_max(H); with PyTorch's Nesterov form iff η ≤ (2 + 2β)/((1 + 2β)λ_max)
    (derivations in the module docstring). Both are also the first-moment thresholds of SGD
    with momentum and therefore upper bounds on its mean-square threshold.

    Args:
        lambda_max: Largest Hessian eigenvalue, >= 0.
        momentum: β in [0, 1). Default 0 (plain GD: 2/λ_max).
        nesterov: Use the Nesterov threshold.

    Returns:
        The threshold (``inf`` when λ_max = 0).

    Raises:
        ValueError: If λ_max < 0 or not finite, β outside [0, 1), or ``nesterov`` with β = 0.

    Example:
        >>> momentum_gd_threshold(2.0, 0.9)  # 2(1 + β)/λ
        1.9
        >>> round(momentum_gd_threshold(2.0, 0.9, nesterov=True), 6)  # 3.8/(2.8·2)
        0.678571
    """
    lam = check_positive("lambda_max", lambda_max, allow_zero=True)
    b = check_momentum(momentum, nesterov)
    if lam == 0.0:
        return math.inf
    if nesterov:
        return (2.0 + 2.0 * b) / ((1.0 + 2.0 * b) * lam)
    return 2.0 * (1.0 + b) / lam


class _AugmentedQ:
    """Q(Σ) = E[M_I Σ M_Iᵀ] on symmetric 2ρ×2ρ matrices in Gram coordinates (batched)."""

    def __init__(self, coords: GramCoordinates, p: float, F: Tensor, g: Tensor) -> None:
        self.c = coords
        self.p = p
        rho = coords.rank
        self.rho = rho
        self.F = F
        self.g = g
        n, C = coords.n, coords.outputs
        self.Gr = coords.Ghat.reshape(n, C, rho)  # Ĝ_i, (n, C, ρ)
        self.lam = coords.lam

    def D(self, X: Tensor) -> Tensor:
        """The batch second moment E_I[H_I X H_I] = (1 − p)ΛXΛ + (p/n) Σ_i Ĝ_iᵀĜ_iXĜ_iᵀĜ_i.

        X has shape (..., ρ, ρ) and need not be symmetric.
        """
        lam = self.lam
        out = (1.0 - self.p) * (lam[:, None] * X * lam[None, :])
        if self.p > 0.0:
            Gr = self.Gr
            inner = torch.einsum("ncr,...rs,nds->...ncd", Gr, X, Gr)  # Ĝ_i X Ĝ_iᵀ
            out = out + (self.p / self.c.n) * torch.einsum("ncr,...ncd,nds->...rs", Gr, inner, Gr)
        return out

    def __call__(self, S: Tensor, eta: float) -> Tensor:
        """Q(S) for S of shape (..., 2ρ, 2ρ)."""
        rho = self.rho
        F, g, lam = self.F.tolist(), self.g.tolist(), self.lam
        blocks = [[S[..., a * rho : (a + 1) * rho, b * rho : (b + 1) * rho] for b in (0, 1)]
                  for a in (0, 1)]  # fmt: skip

        def fsf(i: int, j: int) -> Tensor:
            return sum(
                F[i][a] * F[j][b] * blocks[a][b]
                for a in (0, 1)
                for b in (0, 1)
                if F[i][a] * F[j][b]
            ) + torch.zeros_like(blocks[0][0])

        P = [F[i][0] * blocks[0][0] + F[i][1] * blocks[1][0] for i in (0, 1)]  # (FΣE₁)_i
        DX = self.D(blocks[0][0]) if any(g) else None
        rows = []
        for i in (0, 1):
            row = []
            for j in (0, 1):
                block = fsf(i, j)
                if g[j]:
                    block = block - (eta * g[j]) * (P[i] * lam[None, :])
                if g[i]:
                    block = block - (eta * g[i]) * (lam[:, None] * P[j].transpose(-1, -2))
                if g[i] and g[j]:
                    assert DX is not None
                    block = block + (eta * eta * g[i] * g[j]) * DX
                row.append(block)
            rows.append(torch.cat(row, dim=-1))
        return torch.cat(rows, dim=-2)


class _SymSpace:
    """Symmetric m×m matrices in the orthonormal svec basis of the η* solvers (one svec for both).

    Turns a linear map on symmetric matrices into a dense matrix (built from the basis in
    chunks of 256, so memory stays O(256·m² + N²)) or into a SciPy operator whose spectral
    radius ARPACK computes (:func:`scipy.sparse.linalg.eigs`, implicitly restarted Arnoldi: the
    maps here are positive but not self-adjoint, so the symmetric Krylov engine of
    :mod:`dynstab.linalg` does not apply). The coordinates and their packing are those of
    :class:`dynstab.criteria.gram._SymPacking`, applied to batches.
    """

    def __init__(self, m: int, device: torch.device) -> None:
        self.m, self.device = m, device
        self.pk = _SymPacking(m, device)
        self.N = self.pk.dim

    def matrix(self, apply: Callable[[Tensor], Tensor]) -> Tensor:
        """The N×N matrix of ``apply`` (batched over a leading axis) in the svec basis."""
        cols = []
        eye = torch.eye(self.N, dtype=torch.float64, device=self.device)
        for start in range(0, self.N, 256):  # bounded memory: 256 basis matrices at a time
            cols.append(self.pk.pack(apply(self.pk.unpack(eye[start : start + 256]))))
        return torch.cat(cols).T

    def radius(self, apply: Callable[[Tensor], Tensor], k: int, tol: float) -> float:
        """Spectral radius of ``apply`` by ARPACK, started from the identity (a positive start)."""

        def matvec(x: np.ndarray) -> np.ndarray:
            xt = torch.as_tensor(np.real(x), dtype=torch.float64, device=self.device)[None]
            return np.asarray(self.pk.pack(apply(self.pk.unpack(xt)))[0].cpu().numpy())

        op = ScipyOperator((self.N, self.N), matvec=matvec, dtype=np.float64)
        v0 = self.pk.pack(torch.eye(self.m, dtype=torch.float64, device=self.device)).cpu().numpy()
        try:
            vals = eigs(op, k=min(k, self.N - 2), which="LM", v0=v0, tol=tol,
                        maxiter=100 * self.N, return_eigenvectors=False)  # fmt: skip
        except ArpackNoConvergence as exc:
            vals = exc.eigenvalues
            if len(vals) == 0:
                raise
        return float(np.abs(vals).max())


class _StabilityCriterion:
    """The reduced mean-square criterion ρ(K_η) < 1 on symmetric ρ×ρ matrices.

    Split Q = A₀ + A₁ into the mean part A₀(X) = M̄XM̄ᵀ and the noise part
    A₁(X) = E[(M_I − M̄)X(M_I − M̄)ᵀ] = η² G Cov(X₁₁) Gᵀ with
    Cov(Z) = E[H_IZH_I] − HZH = p[(1/n)Σ_i H_iZH_i − HZH]. Both are positive maps, so
    (regular splitting; Damm, 2004, Thm. 3.2.10) ρ(Q) < 1 iff ρ(A₀) < 1 and
    ρ((I − A₀)⁻¹A₁) < 1, and the latter operator has the nonzero spectrum of
    K_η(Z) = η² Cov(s ∘ Z), where ∘ is the Hadamard product and, H = Λ being diagonal in
    Gram coordinates (M̄ decouples into the 2×2 blocks m_a = F − ηλ_a g e₁ᵀ),
    s_ab = [S_ab]₁₁ with S_ab − m_a S_ab m_bᵀ = ggᵀ (s = Σ_k c(k)c(k)ᵀ, c_a(k) = e₁ᵀm_aᵏg:
    a Gram matrix, so s ⪰ 0 and s∘ is a positive map). K_η is positive, so its spectral
    radius is an eigenvalue (Krein–Rutman), but it is not self-adjoint (Cov and s∘ are
    self-adjoint and indefinite): the dense path is one ``eigvals`` of dimension ρ(ρ + 1)/2 per
    η (the matrix of Cov is built once), the matrix-free path ARPACK on K_η, O(nCρ²) per
    product.
    """

    def __init__(self, Q: _AugmentedQ, method: str) -> None:
        self.Q = Q
        self.method = method
        self.space = _SymSpace(Q.rho, Q.lam.device)
        self.cov_matrix: Tensor | None = None
        if method == "dense":
            C1 = self.space.matrix(self.cov)  # ⟨E_j, Cov(E_k)⟩
            self.cov_matrix = 0.5 * (C1 + C1.T)

    def cov(self, Z: Tensor) -> Tensor:
        """Cov(Z) = D(Z) − ΛZΛ for Z of shape (..., ρ, ρ)."""
        lam = self.Q.lam
        return self.Q.D(Z) - lam[:, None] * Z * lam[None, :]

    def mean_blocks(self, eta: float) -> Tensor:
        """The 2×2 blocks m_a = F − ηλ_a g e₁ᵀ of the mean map M̄, shape (ρ, 2, 2)."""
        Q = self.Q
        F, g, lam = Q.F, Q.g, Q.lam
        e1 = torch.tensor([1.0, 0.0], dtype=torch.float64, device=lam.device)
        return F - eta * lam[:, None, None] * (g[:, None] * e1[None, :])

    def mean_radius(self, eta: float) -> float:
        """ρ(A₀) = ρ(M̄)² = max_a ρ(m_a)², the growth of the mean part X ↦ M̄XM̄ᵀ."""
        return float(torch.linalg.eigvals(self.mean_blocks(eta)).abs().max()) ** 2

    def multiplier(self, eta: float, scale: float = 1.0) -> Tensor | None:
        """The Hadamard multiplier s(η, λ) (ρ×ρ), or ``None`` when λ ≤ ρ(A₀).

        s_ab = [S_ab]₁₁ with λS_ab − m_a S_ab m_bᵀ = ggᵀ, i.e. s = Σ_k λ^{−k−1} c(k)c(k)ᵀ;
        λ = ``scale`` = 1 is the stability criterion, other λ the growth factor
        (:func:`momentum_growth`).
        """
        Q = self.Q
        g, lam = Q.g, Q.lam
        m = self.mean_blocks(eta)
        if float(torch.linalg.eigvals(m).abs().max()) ** 2 >= scale:
            return None
        rho = Q.rho
        kron = (m[:, None, :, None, :, None] * m[None, :, None, :, None, :]).reshape(
            rho, rho, 4, 4
        )  # m_a ⊗ m_b (row-major vec)
        rhs = (g[:, None] * g[None, :]).reshape(4).expand(rho, rho, 4)
        eye = torch.eye(4, dtype=torch.float64, device=lam.device)
        S = torch.linalg.solve(scale * eye - kron, rhs)
        return S[..., 0]

    def radius(self, eta: float, scale: float = 1.0) -> float:
        """ρ(K_{η,λ}) for λ = ``scale`` (``inf`` when λ ≤ ρ(A₀), e.g. η ≥ η_GD at λ = 1)."""
        s = self.multiplier(eta, scale)
        if s is None:
            return math.inf
        s = 0.5 * (s + s.T)
        if self.method == "dense":
            assert self.cov_matrix is not None
            M = self.cov_matrix * (eta * eta * s[self.space.pk.mask])[None, :]
            return float(torch.linalg.eigvals(M.cpu()).abs().max())
        return self.space.radius(lambda Z: (eta * eta) * self.cov(s * Z), 4, 1e-12)


@dataclass(frozen=True)
class MomentumSolve:
    """What :func:`momentum_threshold` found (wrapped into an ``EtaStarResult`` by the problem).

    Attributes:
        eta_star: η* = sup{η: SGD with momentum is mean-square stable} (``inf`` when ρ = 0).
        eta_gd: The GD-with-momentum threshold (an upper bound on η*).
        method: ``"dense"`` or ``"matrix_free"`` (ARPACK) for the reduced criterion.
        num_evaluations: Values of the reduced criterion ρ(K_η) computed.
        stable_set_interval: Whether, on the scan grid, ρ(K_η) < 1 before the first crossing
            and ≥ 1 after it (the stable set looked like an interval (0, η*]).
        residual: ρ(K_η*) − 1 at the returned root (0 when η* = η_GD is not a crossing).
    """

    eta_star: float
    eta_gd: float
    method: str
    num_evaluations: int
    stable_set_interval: bool
    residual: float


def momentum_threshold(
    coords: GramCoordinates,
    sampling: Sampling,
    momentum: float,
    nesterov: bool = False,
    *,
    method: str = "auto",
    rtol: float = 1e-12,
    grid_points: int = 32,
) -> MomentumSolve:
    """Exact mean-square threshold η* of SGD with heavy-ball or Nesterov momentum.

    Uses the reduced criterion (module docstring): mean-square stable at η iff η < η_GD and
    ρ(K_η) < 1, with K_η a positive operator on symmetric ρ×ρ matrices. ρ(K_η) is evaluated on
    ``grid_points − 1`` evenly spaced η in (0, η_GD); the first crossing of 1 is refined by
    Brent's method (:func:`scipy.optimize.brentq`) to relative precision ``rtol``. With β = 0
    it equals Mulayoff & Michaeli's η*; with p = 0 (GD) it equals η_GD.

    Args:
        coords: Row-space coordinates of K (:attr:`StabilityProblem.coordinates`).
        sampling: The i.i.d. sampling rule (p from it).
        momentum: β in [0, 1).
        nesterov: PyTorch's Nesterov form.
        method: ``"auto"`` (dense when ρ(ρ + 1)/2 ≤ 200), ``"dense"`` or ``"matrix_free"``.
        rtol: Relative tolerance of the root.
        grid_points: Grid size of the bracketing scan, >= 2.

    Returns:
        :class:`MomentumSolve`.

    Example:
        >>> from dynstab.criteria import gram_coordinates
        >>> c = gram_coordinates(torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)))
        >>> r = momentum_threshold(c, Sampling(2, None), 0.9)  # GD: 2(1 + β)/λ_max
        >>> round(r.eta_star, 12), r.eta_gd
        (0.95, 0.95)
    """
    beta = check_momentum(momentum, nesterov)
    F, g = momentum_form(beta, nesterov)
    c = coords
    if c.rank == 0:
        return MomentumSolve(math.inf, math.inf, "dense", 0, True, 0.0)
    Q = _AugmentedQ(c, sampling.p, F.to(c.lam.device), g.to(c.lam.device))
    N = c.rank * (c.rank + 1) // 2
    if method == "auto":
        method = "dense" if N <= REDUCED_DENSE_MAX_DIM else "matrix_free"
    if method == "matrix_free" and N < 8:
        method = "dense"  # ARPACK needs a few more dimensions than eigenvalues
    crit = _StabilityCriterion(Q, method)
    eta_gd = momentum_gd_threshold(c.lambda_max, beta, nesterov=nesterov)
    count = 0

    def excess(eta: float) -> float:
        nonlocal count
        count += 1
        r = crit.radius(eta)
        return r - 1.0 if math.isfinite(r) else 1.0

    grid: list[float] = []
    first = None
    for k in range(1, grid_points):
        value = excess(eta_gd * k / grid_points)
        grid.append(value)
        if value >= 0 and first is None:
            first = k
    if first is None:  # stable up to the first-moment threshold
        return MomentumSolve(eta_gd, eta_gd, method, count, True, 0.0)
    interval = all(v < 0 for v in grid[: first - 1]) and all(v >= 0 for v in grid[first - 1 :])
    hi = eta_gd * first / grid_points
    lo = eta_gd * (first - 1) / grid_points
    if lo == 0.0:
        lo = hi / 2
        while excess(lo) >= 0 and lo > hi * 1e-12:
            lo /= 2
    root = float(brentq(excess, lo, hi, xtol=rtol * lo * 1e-2, rtol=max(rtol, 4e-16), maxiter=500))
    return MomentumSolve(root, eta_gd, method, count, interval, excess(root))


def momentum_solve_flops(rank: int, n: int, outputs: int = 1, *, growth: bool = False) -> float:
    """Estimated flops of the exact momentum criteria at rank ρ (the cost model of ``auto``).

    One product of the reduced criterion K_η (or of D in Q_R) costs ≈ 4nCρ² flops (two
    contractions of Ĝ with a ρ×ρ matrix and back) plus O(N) for the Krylov basis. The
    threshold (:func:`momentum_threshold`) takes ``THRESHOLD_EVALUATIONS`` evaluations, each
    a dense ``eigvals`` of dimension N = ρ(ρ + 1)/2 (≈ 10N³, after building the N×N matrix of
    Cov once: N products) when N ≤ ``REDUCED_DENSE_MAX_DIM``, else
    ``THRESHOLD_ARPACK_PRODUCTS`` ARPACK products. The growth factor at lr
    (:func:`momentum_growth`, ``growth=True``) adds ``GROWTH_EVALUATIONS`` evaluations of the
    same reduced criterion (and, when dense, its Cov matrix once more). The constants were
    measured on random Gram matrices (n = 200, ranks 10–190) and a tanh MLP (n = 200,
    rank 193); the model is meant to be right within a factor of a few, which is what a
    routing decision needs.

    Args:
        rank: ρ = rank K (>= 0).
        n: Number of samples.
        outputs: Outputs per sample C.
        growth: Include the growth factor at one learning rate (what ``stability`` computes).

    Returns:
        Estimated floating-point operations.

    Example:
        >>> momentum_solve_flops(190, 200) > 10 * momentum_solve_flops(19, 200)
        True
    """
    if rank <= 0:
        return 0.0
    product = 4.0 * n * outputs * rank * rank
    N = rank * (rank + 1) // 2
    if N <= REDUCED_DENSE_MAX_DIM:
        flops = N * product + THRESHOLD_EVALUATIONS * EIGVALS_FLOPS_PER_CUBE * float(N) ** 3
    else:
        flops = THRESHOLD_EVALUATIONS * THRESHOLD_ARPACK_PRODUCTS * (product + 20.0 * N)
    if growth:
        if N <= REDUCED_DENSE_MAX_DIM:
            flops += N * product + GROWTH_EVALUATIONS * EIGVALS_FLOPS_PER_CUBE * float(N) ** 3
        else:
            flops += GROWTH_EVALUATIONS * THRESHOLD_ARPACK_PRODUCTS * (product + 20.0 * N)
    return flops


def momentum_growth(
    coords: GramCoordinates,
    sampling: Sampling,
    lr: float,
    momentum: float,
    nesterov: bool = False,
    *,
    method: str = "auto",
) -> float:
    """ρ(Q_R): the per-step growth factor of E‖z_t‖² of SGD with momentum on the row space.

    Computed on the reduced ρ(ρ + 1)/2-dimensional space, not on the ρ(2ρ + 1)-dimensional
    one of Q_R. Split Q_R = A₀ + A₁ into its mean part A₀(Σ) = M̄ΣM̄ᵀ (spectral radius
    ρ(M̄)² = max_a ρ(m_a)², from the 2×2 blocks) and its noise part A₁ (both positive maps).
    For λ > ρ(A₀), ρ(Q_R) < λ iff ρ((λ − A₀)⁻¹A₁) < 1 (regular splitting of λI − Q_R; Damm,
    2004, Thm. 3.2.10), and (λ − A₀)⁻¹A₁ has the nonzero spectrum of
    K_{η,λ}(Z) = η² Cov(s(λ) ∘ Z) with s_ab(λ) = Σ_k λ^{−k−1} c_a(k)c_b(k) (λ = 1 is the
    threshold's criterion, :func:`momentum_threshold`). s(λ) decreases in the PSD order as λ
    grows, so ρ(K_{η,λ}) is non-increasing in λ, and ρ(Q_R) = max(ρ(A₀), λ*) with λ* the
    crossing of ρ(K_{η,λ}) = 1, found by Brent's method (≈ 15–20 evaluations of the reduced
    criterion: dense ``eigvals`` of dimension ρ(ρ + 1)/2 up to 200, else ARPACK,
    :func:`scipy.sparse.linalg.eigs`, with O(nCρ²) flops per product). At rank 190 this takes
    seconds where ARPACK on the ρ(2ρ + 1) = 72,390-dimensional Q_R (eigenvalues clustered
    near 1) took over 8 minutes.

    Args:
        coords: Row-space coordinates of K.
        sampling: The i.i.d. sampling rule.
        lr: Learning rate η > 0.
        momentum: β in [0, 1).
        nesterov: PyTorch's Nesterov form.
        method: Solver of the reduced criterion: ``"auto"`` (dense when ρ(ρ + 1)/2 ≤ 200),
            ``"dense"`` or ``"matrix_free"``.

    Returns:
        ρ(Q_R) (1.0 when ρ = 0: everything is frozen).

    Example:
        >>> from dynstab.criteria import gram_coordinates
        >>> c = gram_coordinates(torch.eye(1, dtype=torch.float64))  # H = 1, GD, β = 0.5
        >>> round(momentum_growth(c, Sampling(1, None), 1.0, 0.5), 12)  # |roots|² = β
        0.5
    """
    beta = check_momentum(momentum, nesterov)
    c = coords
    if c.rank == 0:
        return 1.0
    F, g = momentum_form(beta, nesterov)
    Q = _AugmentedQ(c, sampling.p, F.to(c.lam.device), g.to(c.lam.device))
    N = c.rank * (c.rank + 1) // 2
    if method == "auto":
        method = "dense" if N <= REDUCED_DENSE_MAX_DIM else "matrix_free"
    if method == "matrix_free" and N < 8:
        method = "dense"
    crit = _StabilityCriterion(Q, method)
    mean = crit.mean_radius(lr)
    # ρ(K_λ) is non-increasing in λ > ρ(A₀) (s(λ) decreases in the PSD order): bracket its
    # crossing of 1 from below at ρ(A₀) (relative 1e-13) and from above by doubling
    lo = max(mean * (1.0 + 1e-13), 1e-300)

    def excess(scale: float) -> float:
        # 1 − 1/ρ(K): ρ(K_λ) has a pole at λ = ρ(A₀) when the noise couples to the mean
        # part's top mode, and its reciprocal is nearly linear there (Brent converges fast)
        r = crit.radius(lr, scale)
        return 1.0 - 1.0 / r if math.isfinite(r) and r > 0 else (1.0 if r > 0 else -1.0)

    if excess(lo) < 0.0:  # the noise cannot lift the growth above the mean part's
        return mean
    hi = max(2.0 * lo, 1.0)
    while excess(hi) >= 0.0:
        lo, hi = hi, 2.0 * hi
    root = float(brentq(excess, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500))
    return max(mean, root)
