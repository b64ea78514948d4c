"""Operators of the exact mean-square threshold η* in row-space coordinates, and their solvers.

Setting (interpolating minimum of the ½-square loss, ``dynstab.losses.half_mse``): per-sample
Jacobians J_i ∈ ℝ^{C×p} stacked into J ∈ ℝ^{nC×p}, H = G = JᵀJ/n, per-sample Hessians
H_i = J_iᵀJ_i, and the normalized Gram matrix **K = JJᵀ/n ∈ ℝ^{nC×nC}** with row index
``i*C + c`` (sample-major). Mulayoff & Michaeli (2024, Thm 3) give the exact mean-square
threshold

    η* = 2/λ_max(C†D),  C = ½(H ⊕ H),  D = (1 − p) H⊗H + p (1/n) Σ_i H_i⊗H_i,

with the mixture weight p of :class:`dynstab.sampling.Sampling`. On symmetric p×p matrices X,
C(X) = ½(HX + XH) and D(X) = (1 − p)HXH + (p/n) Σ_i H_iXH_i. Write the thin SVD of J as
J = √n UΛ^{1/2}Vᵀ (rank ρ; U ∈ ℝ^{nC×ρ} eigenvectors of K, V ∈ ℝ^{p×ρ} eigenvectors of H, Λ their
common nonzero eigenvalues) and **Ĝ := JV = √n UΛ^{1/2} ∈ ℝ^{nC×ρ}** (Ĝ_i = its C rows of
sample i). In the eigenbasis of H, C is diagonal, D maps everything into range(H) × range(H) and
annihilates the null-space components, so the same threshold lives on symmetric ρ×ρ matrices X:

    C_z(X)_ab = X_ab (λ_a + λ_b)/2,
    D_z(X)    = (1 − p) ΛXΛ + (p/n) Σ_i Ĝ_iᵀ (Ĝ_i X Ĝ_iᵀ) Ĝ_i,
    η*        = 2/λ_max(C_z^{-1/2} D_z C_z^{-1/2}).

Ĝ can be obtained from either side: from the eigenvectors U of K (the *Gram route*, nC×nC) or
from the eigenvectors V of H (the *parameter route*, p×p, Ĝ = JV); :class:`GramCoordinates`
holds the result and every solver here works on it. The top eigenvector is PSD (Mulayoff &
Michaeli 2024, Thm 6), so the eigenproblem is solved on symmetric matrices: densely in the
orthonormal ``svec`` basis (dimension ρ(ρ+1)/2), or matrix-free by Lanczos started from the
identity, O(nCρ²) flops per product and O(ρ²) memory per vector.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from dynstab._checks import check_positive
from dynstab.errors import ConvergenceWarning
from dynstab.linalg import FunctionOperator, LanczosConfig, lanczos_top_eigenpairs
from dynstab.sampling import Sampling, mixing_p

__all__ = ["GramCoordinates", "commuting_eta_star", "gd_threshold"]

#: Largest symmetric-space dimension ρ(ρ+1)/2 that ``method="auto"`` may solve densely.
DENSE_AUTO_MAX_DIM = 2000
#: Hard cap on the symmetric-space dimension for ``method="dense"``.
DENSE_MAX_DIM = 12000
#: Smallest memory the stored Lanczos basis may take (full reorthogonalisation): 256 MiB.
_BASIS_BUDGET_BYTES = 2**28
#: Share of the memory budget the stored Lanczos basis may take beyond that floor.
_BASIS_BUDGET_FRACTION = 0.25
#: Entries of the svec factor W built at once by the dense solver (chunks over samples).
_DENSE_CHUNK_ENTRIES = 2**23


def gd_threshold(lambda_max: float) -> float:
    """Return the GD stability threshold 2/λ_max (``inf`` when λ_max = 0).

    GD on the ½-square loss is linearly stable at a minimum iff η ≤ 2/λ_max(H); this is also
    the first-moment threshold of SGD (Mulayoff & Michaeli 2024, Thm 1).

    Args:
        lambda_max: Largest Hessian eigenvalue, >= 0.

    Returns:
        2/λ_max as a float.

    Raises:
        ValueError: If ``lambda_max`` is negative or not finite.

    Example:
        >>> gd_threshold(4.0)
        0.5
    """
    lam = check_positive("lambda_max", lambda_max, allow_zero=True)
    return math.inf if lam == 0.0 else 2.0 / lam


@dataclass(frozen=True, init=False)
class GramCoordinates:
    """Orthonormal row-space coordinates of J (equivalently of K = JJᵀ/n), in float64.

    Built by :attr:`dynstab.criteria.StabilityProblem.coordinates` (or
    :func:`dynstab.criteria.gram_coordinates`) through either exact route (module docstring).

    Attributes:
        lam: Kept eigenvalues λ_a of K (= those of H), shape ``(ρ,)``, descending.
        U: Matching unit eigenvectors of K, shape ``(nC, ρ)``. May be passed as None when
            ``Ghat`` is given: then U = Ĝ Λ^{-1/2}/√n is formed on first access (the parameter
            route does so: most criteria never read U, and an nC×ρ array costs a page-faulted
            allocation the size of Ĝ).
        Ghat: Ĝ = √n UΛ^{1/2} = JV, shape ``(nC, ρ)``; rows ``i*C .. i*C+C-1`` are Ĝ_i, the
            coordinates of the C output gradients of sample i (H_i = Ĝ_iᵀĜ_i in these
            coordinates). Any layout; :class:`~dynstab.criteria.StabilityProblem` stores it
            column-major, so that :attr:`ghat_t` is a view.
        n: Number of samples.
        outputs: Number of outputs C.
        lambda_max: Largest eigenvalue of K (0 for K = 0).
    """

    lam: Tensor
    _U: Tensor | None = field(repr=False, compare=False)
    Ghat: Tensor
    n: int
    outputs: int
    lambda_max: float

    def __init__(
        self,
        lam: Tensor,
        U: Tensor | None,
        Ghat: Tensor,
        n: int,
        outputs: int,
        lambda_max: float,
    ) -> None:
        for name, value in (
            ("lam", lam),
            ("_U", U),
            ("Ghat", Ghat),
            ("n", n),
            ("outputs", outputs),
            ("lambda_max", lambda_max),
        ):
            object.__setattr__(self, name, value)

    @cached_property
    def U(self) -> Tensor:
        """Unit eigenvectors of K, shape ``(nC, ρ)`` (given, or Ĝ Λ^{-1/2}/√n once)."""
        if self._U is not None:
            return self._U
        return self.Ghat / (self.n * self.lam).sqrt()

    @property
    def rank(self) -> int:
        """Number ρ of kept eigenvalues."""
        return int(self.lam.numel())

    @cached_property
    def ghat_t(self) -> Tensor:
        """Ĝᵀ as a contiguous ``(ρ, nC)`` tensor (a view when ``Ghat`` is column-major), once.

        The layout of the per-sample products: short-wide products with Ĝᵀ run up to twice as
        fast as tall-skinny ones with Ĝ when nC ≫ ρ.
        """
        Gt = self.Ghat.T
        return Gt if Gt.is_contiguous() else Gt.contiguous()


def _svec_indices(rho: int) -> tuple[Tensor, Tensor]:
    idx = torch.triu_indices(rho, rho)
    return idx[0], idx[1]


def _dense_sym_D(coords: GramCoordinates, p: float) -> tuple[Tensor, Tensor]:
    """D_z in the orthonormal svec basis (m×m, m = ρ(ρ+1)/2) and the diagonal of C_z there.

    The per-sample part is (p/n) Σ_i Σ_{c≤d} w_cd² svec(S_icd) svec(S_icd)ᵀ with
    S_icd = sym(ĝ_ic ĝ_idᵀ) and w_cd = √2 for c < d (the (c, d) and (d, c) terms coincide), built
    over chunks of samples so that memory stays O(m² + chunk·m). Flops: n·C(C+1)·m².
    """
    lam, Gh, n, C = coords.lam, coords.Ghat, coords.n, coords.outputs
    rho = coords.rank
    ia, ib = _svec_indices(rho)
    w = torch.full(ia.shape, math.sqrt(2.0), dtype=lam.dtype, device=lam.device)
    w[ia == ib] = 1.0
    ic, idd = torch.triu_indices(C, C)
    pair_w = torch.full(ic.shape, math.sqrt(2.0), dtype=lam.dtype, device=lam.device)
    pair_w[ic == idd] = 1.0
    m = ia.numel()
    D = torch.zeros(m, m, dtype=lam.dtype, device=lam.device)
    if p > 0.0:
        Gr = Gh.reshape(n, C, rho)
        pairs = ic.numel()
        chunk = max(1, _DENSE_CHUNK_ENTRIES // (pairs * m))
        for start in range(0, n, chunk):
            G = Gr[start : start + chunk]
            Ga, Gb = G[:, :, ia], G[:, :, ib]  # (b, C, m): g_ca and g_cb
            W = 0.5 * (Ga[:, ic] * Gb[:, idd] + Gb[:, ic] * Ga[:, idd])  # (b, pairs, m)
            W = (W * w * pair_w[:, None]).reshape(-1, m)
            D.addmm_(W.T, W, alpha=p / n)
    D.diagonal().add_((1.0 - p) * lam[ia] * lam[ib])
    return D, 0.5 * (lam[ia] + lam[ib])


def _dense_sym_matrix(coords: GramCoordinates, p: float) -> Tensor:
    """C_z^{-1/2} D_z C_z^{-1/2} in the orthonormal svec basis, shape (m, m)."""
    D, c = _dense_sym_D(coords, p)
    s = c.rsqrt()
    return s[:, None] * D * s[None, :]


#: Narrowest column block of the block-triangular products (narrower blocks lose GEMM speed).
#: With the row chunks of :data:`_CHUNK_ENTRIES`, blocks of 50 columns already pay: one thread,
#: ρ = 100 at n = 150,000: k = 2 blocks 0.89× the time of k = 1; ρ = 300: k = 3–6 0.72–0.75×;
#: ρ = 1000: k = 6 0.70×, k = 2 0.78×.
_MIN_BLOCK = 50
#: Most column blocks: k blocks cost (k + 1)/(2k) of the full products (k = 6: 58%).
_MAX_BLOCKS = 6
#: Entries of Ĝ processed at once by the per-sample products (at least ρ² and C·ρ): keeps the
#: temporaries of a tall Ĝ in cache and bounds their memory by O(ρ² + chunk). 2¹⁸ (2 MiB of
#: float64, the L2 of one core here) rather than 2²⁰: 0.86× the product time at ρ = 100,
#: n = 150,000 (one thread), neutral at ρ ≥ 300.
_CHUNK_ENTRIES = 2**18


def _column_blocks(rho: int, blocks: int | None = None) -> list[tuple[int, int]]:
    """Split 0..ρ into ``blocks`` (default: by :data:`_MIN_BLOCK`) contiguous column ranges."""
    k = max(1, min(_MAX_BLOCKS, rho // _MIN_BLOCK)) if blocks is None else max(1, min(blocks, rho))
    edges = [round(j * rho / k) for j in range(k + 1)]
    return [(edges[j], edges[j + 1]) for j in range(k)]


def _row_chunk(n: int, outputs: int, rho: int, chunk_rows: int | None = None) -> int:
    """Samples per chunk of the per-sample products (all rows of sample i stay together)."""
    rows = max(_CHUNK_ENTRIES // max(rho, 1), rho) if chunk_rows is None else chunk_rows
    return max(1, min(n, rows // outputs))


class _PerSampleProducts:
    """P(X) = (1/n) Σ_i Ĝ_iᵀ (Ĝ_i X Ĝ_iᵀ) Ĝ_i for symmetric ρ×ρ matrices X, set up once.

    The per-sample part of D_z; also Wu, Ma & E (2018)'s (1/n) Σ_i H_i² (X = I) and the
    alignment matrix (1/n) Σ_i H_iΛH_i (X = Λ) in row-space coordinates.

    Both products with Ĝ use the symmetry of X and of P(X): with the columns split into k blocks
    and X = X̃ + X̃ᵀ (X̃ = the block upper triangle of X, diagonal blocks halved),
    Ĝ_i X Ĝ_iᵀ = B_i + B_iᵀ with B_i = Σ_J (Ĝ_i X̃_{:,J}) Ĝ_{iJ}ᵀ, and only the upper block
    triangle of P(X) is formed: 2nCρ²(k + 1)/k + 4nC²ρ flops instead of 4nCρ² + 4nC²ρ. The
    samples are processed in chunks (:data:`_CHUNK_ENTRIES`) of the transposed layout
    ``coords.ghat_t``. Only the diagonal blocks and the upper block triangle of X are read.
    Every work array (the blocks of X̃, the chunk products, the result) is allocated once here
    and reused by every call, so that a Lanczos run does not page-fault fresh ρ² and ρ×chunk
    arrays in every product (2% of a product at ρ = 2000, 7% at ρ = 5000; one thread).

    Args:
        coords: Row-space coordinates.
        blocks: Number of column blocks (None: by size; 1 = plain products).
        chunk_rows: Rows of Ĝ per chunk (None: by size).
    """

    def __init__(
        self, coords: GramCoordinates, *, blocks: int | None = None, chunk_rows: int | None = None
    ) -> None:
        self.Gt, self.n, self.C, rho = coords.ghat_t, coords.n, coords.outputs, coords.rank
        self.cols = _column_blocks(rho, blocks)
        self.step = _row_chunk(self.n, self.C, rho, chunk_rows) * self.C
        dt, dev = self.Gt.dtype, self.Gt.device
        self.W = [torch.empty(a1, a1 - a0, dtype=dt, device=dev) for a0, a1 in self.cols]  # X̃
        self.out = torch.empty(rho, rho, dtype=dt, device=dev)
        self.M = torch.empty(rho * self.step, dtype=dt, device=dev)  # chunk products, by block
        self.R = torch.empty(rho * self.step, dtype=dt, device=dev)
        self.d = torch.empty(2, self.step // self.C, dtype=dt, device=dev)  # ĝ_iᵀXĝ_i, by block

    def __call__(
        self, X: Tensor | None, *, diagonal: Tensor | None = None, mirror: bool = True
    ) -> Tensor:
        """P(X) in the object's result array (valid until the next call).

        Args:
            X: Symmetric matrix ``(ρ, ρ)``; only its diagonal blocks and upper block triangle
                are read. None when ``diagonal`` is given.
            diagonal: Instead of X, the diagonal w of a diagonal X = diag(w), shape ``(ρ,)``:
                then Ĝ_i X Ĝ_iᵀ = Σ_a w_a ĝ_ia ĝ_iaᵀ costs O(Cρ) per row instead of the first
                product with Ĝ (Lanczos from X₀ = I starts with one such product).
            mirror: Whether to fill the lower block triangle (else only the upper block
                triangle and the diagonal blocks of the result hold P(X)).

        Returns:
            ``(ρ, ρ)`` tensor, exactly symmetric when ``mirror``.
        """
        Gt, n, C, cols, out = self.Gt, self.n, self.C, self.cols, self.out
        rho = out.shape[0]
        if diagonal is None:
            assert X is not None
            for (a0, a1), Wj in zip(cols, self.W, strict=True):
                Wj.copy_(X[:a1, a0:a1])
                Wj[a0:a1].mul_(0.5)
        out.zero_()
        for r0 in range(0, n * C, self.step):
            G = Gt[:, r0 : r0 + self.step]  # (ρ, bC): the rows of Ĝ of b samples, transposed
            bC = G.shape[1]
            b = bC // C
            R = self.R[: rho * bC].view(rho, bC)
            if diagonal is not None:
                Gw = torch.mul(G, diagonal[:, None], out=R)  # w_a ĝ_ia, then overwritten
                if C == 1:  # in place: a fresh (ρ, b) temporary would page-fault per chunk
                    d = torch.sum(Gw.mul_(G), 0, out=self.d[0, :b])
                    torch.mul(G, d, out=R)
                else:
                    Bm = torch.einsum("ric,rid->icd", Gw.view(rho, b, C), G.reshape(rho, b, C))
                    R = torch.einsum("rid,icd->ric", G.reshape(rho, b, C), Bm).reshape(rho, bC)
            elif C == 1:
                d, dj = self.d[0, :b], self.d[1, :b]
                for j, ((a0, a1), Wj) in enumerate(zip(cols, self.W, strict=True)):
                    Mj = torch.mm(Wj.T, G[:a1], out=self.M[: (a1 - a0) * bC].view(a1 - a0, bC))
                    torch.sum(Mj.mul_(G[a0:a1]), 0, out=d if j == 0 else dj)  # ĝ_iᵀX̃_{:,J}ĝ_iJ
                    if j > 0:
                        d.add_(dj)
                torch.mul(G, d.mul_(2.0), out=R)  # columns (Ĝ_i X Ĝ_iᵀ) ĝ_i
            else:
                Bm = torch.zeros(b, C, C, dtype=out.dtype, device=out.device)
                for (a0, a1), Wj in zip(cols, self.W, strict=True):
                    Mj = torch.mm(Wj.T, G[:a1], out=self.M[: (a1 - a0) * bC].view(a1 - a0, bC))
                    Bm += torch.einsum(
                        "wic,wid->icd", Mj.view(a1 - a0, b, C), G[a0:a1].reshape(a1 - a0, b, C)
                    )
                Bm = Bm + Bm.transpose(1, 2)  # Ĝ_i X Ĝ_iᵀ
                R = torch.einsum("rid,icd->ric", G.reshape(rho, b, C), Bm).reshape(rho, bC)
            for a0, a1 in cols:
                out[:a1, a0:a1].addmm_(G[:a1], R[a0:a1].T)
        for a0, a1 in cols:
            if mirror:
                out[a0:a1, :a0] = out[:a0, a0:a1].T
            D = out[a0:a1, a0:a1]
            D.copy_(0.5 * (D + D.T))
        return out.mul_(1.0 / n)


def _per_sample_term(
    coords: GramCoordinates,
    X: Tensor,
    *,
    blocks: int | None = None,
    chunk_rows: int | None = None,
) -> Tensor:
    """P(X) = (1/n) Σ_i Ĝ_iᵀ (Ĝ_i X Ĝ_iᵀ) Ĝ_i for a symmetric ρ×ρ matrix X, once.

    See :class:`_PerSampleProducts` (which a repeated caller should set up once).

    Args:
        coords: Row-space coordinates.
        X: Symmetric matrix, shape ``(ρ, ρ)``.
        blocks: Number of column blocks (None: by size; 1 = plain products).
        chunk_rows: Rows of Ĝ per chunk (None: by size).

    Returns:
        Exactly symmetric tensor of shape ``(ρ, ρ)``.
    """
    return _PerSampleProducts(coords, blocks=blocks, chunk_rows=chunk_rows)(X)


def _sym(X: Tensor) -> Tensor:
    """(X + Xᵀ)/2, exactly symmetric."""
    return torch.add(X, X.mT).mul_(0.5)


def _apply_D(coords: GramCoordinates, p: float, X: Tensor) -> Tensor:
    """D_z(X) = (1 − p)ΛXΛ + p·P(X) for the symmetric part of a ρ×ρ matrix X (O(nCρ²) flops).

    The result is exactly symmetric.
    """
    lam = coords.lam
    X = _sym(X)
    out = p * _per_sample_term(coords, X) if p > 0.0 else torch.zeros_like(X)
    return out.add_((1.0 - p) * (lam[:, None] * lam[None, :]) * X)


def _apply_Q(coords: GramCoordinates, p: float, lr: float, X: Tensor, inv: float = 1.0) -> Tensor:
    """inv²·Q_z(X) = inv²·[X − η(ΛX + XΛ) + η²D_z(X)], the exact map of E[w wᵀ] over one step.

    Acts on the symmetric part of X; the result is exactly symmetric. ``inv`` = 1/η for η > 1
    keeps every coefficient ≤ 1, so huge learning rates stay finite.
    """
    lam = coords.lam
    X = _sym(X)
    linear = (inv * inv) - (lr * inv * inv) * (lam[:, None] + lam[None, :])
    return _apply_D(coords, p, X).mul_((lr * inv) ** 2).addcmul_(linear, X)


class _SymPacking:
    """The isometry svec between symmetric ρ×ρ matrices and ℝ^m, m = ρ(ρ+1)/2.

    svec(X) lists the upper triangle of X row by row, the off-diagonal entries times √2, so that
    ⟨svec X, svec Y⟩ = ⟨X, Y⟩_F = tr(XY) (the coordinates of X in the orthonormal basis
    {e_ae_aᵀ} ∪ {(e_ae_bᵀ + e_be_aᵀ)/√2, a < b} of the symmetric matrices). Built from a boolean
    mask and the ρ diagonal positions, so one matrix costs ρ² bytes (no index arrays of length
    m): the η* Lanczos products, which reuse a work array between calls. A batch ``(..., ρ, ρ)``
    (the dense matrices and ARPACK operators of :mod:`dynstab.criteria.momentum`) goes through
    flat index arrays of length m, made on the first batched call.

    Example:
        >>> X = torch.tensor([[1.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
        >>> pk = _SymPacking(2, X.device)
        >>> v = pk.pack(X); [round(x, 6) for x in v.tolist()], float(v @ v) == float((X * X).sum())
        ([1.0, 2.828427, 3.0], True)
        >>> bool(torch.allclose(pk.unpack(v), X, rtol=1e-15, atol=0))
        True
        >>> bool(torch.equal(pk.pack(torch.stack([X, 2 * X])), torch.stack([v, 2 * v])))
        True
    """

    def __init__(self, rho: int, device: torch.device) -> None:
        self.rho = rho
        self.mask = torch.ones(rho, rho, dtype=torch.bool, device=device).triu_()
        a = torch.arange(rho, device=device)
        self.diag_pos = a * rho - a * (a - 1) // 2  # position of (a, a) in the packed vector
        self.dim = rho * (rho + 1) // 2
        self._upper: Tensor | None = None  # work array of unpack: its lower triangle stays 0
        self._batch: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # for batches

    def _batch_indices(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The batched paths' arrays (m entries each, made once).

        The flat positions of (a, b) and of (b, a), a ≤ b, in a ρ×ρ matrix, row by row, and
        the weights of unpack (1 on the diagonal, √½ off it) and of pack (1 and √2).
        """
        if self._batch is None:
            a, b = self.mask.nonzero().unbind(1)
            off = a != b
            to_matrix = torch.ones(a.shape, dtype=torch.float64, device=a.device)
            to_vector = to_matrix.clone()
            to_matrix[off] = math.sqrt(0.5)
            to_vector[off] = math.sqrt(2.0)
            self._batch = (a * self.rho + b, b * self.rho + a, to_matrix, to_vector)
        return self._batch

    def pack(self, X: Tensor) -> Tensor:
        """svec(X) of exactly symmetric matrices ``(..., ρ, ρ)``, shape ``(..., m)``.

        Only the upper triangles are read.
        """
        if X.ndim > 2:  # a batch (the dense matrices and ARPACK operators of momentum.py)
            upper, _, _, to_vector = self._batch_indices()
            return X.flatten(-2).index_select(-1, upper).mul_(to_vector)
        # one matrix (the Lanczos products): one concatenation of the ρ contiguous row
        # segments, at ρ = 5000 2–4× faster than torch.masked_select
        v = torch.cat([X[a, a:] for a in range(self.rho)]).mul_(math.sqrt(2.0))
        v[self.diag_pos] = X.diagonal()
        return v

    def unpack(self, v: Tensor, out: Tensor | None = None) -> Tensor:
        """The exactly symmetric matrices X ``(..., ρ, ρ)`` with svec(X) = v ``(..., m)``.

        One matrix is written into ``out`` (if given) through a work array kept between calls.
        """
        if v.ndim > 1:  # a batch
            upper, lower, to_matrix, _ = self._batch_indices()
            x = v * to_matrix
            X = v.new_zeros(*v.shape[:-1], self.rho * self.rho)
            X.index_copy_(-1, upper, x).index_copy_(-1, lower, x)
            X = X.unflatten(-1, (self.rho, self.rho))
            return X if out is None else out.copy_(X)
        if self._upper is None or self._upper.dtype != v.dtype:
            self._upper = torch.zeros(self.rho, self.rho, dtype=v.dtype, device=v.device)
        U = self._upper.masked_scatter_(self.mask, v)
        X = torch.empty_like(U) if out is None else out
        X.copy_(U.T).add_(U).mul_(math.sqrt(0.5))  # copy_ of a transpose is cache-blocked; add
        X.diagonal().copy_(v[self.diag_pos])  # of one is not (5× slower at ρ = 5000)
        return X


def basis_columns(rank: int, max_iters: int, budget_bytes: int | None = None) -> int:
    """Lanczos vectors the η* solvers store at once (svec vectors of ρ(ρ+1)/2 float64 entries).

    Enough for ``max_iters`` products without a thick restart (``max_iters + 4``) when they fit
    in max(256 MiB, ``_BASIS_BUDGET_FRACTION``·``budget_bytes``), else as many as fit (at least
    8). The certificate of :func:`_top_eigenvalue` rests on one unrestarted Lanczos segment, so
    a basis too small to hold it costs products and certification (15–20 products at
    tol = 1e-10 for a full-rank n = 2000 problem; a 256 MiB basis of ρ×ρ matrices held 8).

    Args:
        rank: ρ >= 1.
        max_iters: Product budget of the solve.
        budget_bytes: The caller's memory budget (None: the 256 MiB floor only).

    Returns:
        The ``max_basis`` passed to the engine.
    """
    vector = 8 * (rank * (rank + 1) // 2)
    room = _BASIS_BUDGET_BYTES
    if budget_bytes is not None:
        room = max(room, int(_BASIS_BUDGET_FRACTION * budget_bytes))
    return max(8, min(max_iters + 4, room // vector))


def _top_eigenvalue(
    apply: Callable[[Tensor], Tensor],
    pk: _SymPacking,
    dtype: torch.dtype,
    device: torch.device,
    *,
    tol: float,
    max_iters: int,
    budget_bytes: int | None = None,
) -> tuple[float, bool, int, float]:
    """Top eigenvalue of a symmetric positive map on ρ×ρ matrices: (θ, converged, products, r).

    The single place where the criteria call a Krylov solver: the project's engine
    (:func:`dynstab.linalg.lanczos_top_eigenpairs`) on the symmetric matrices in svec
    coordinates. ``apply`` is the map in those coordinates, ``svec ∘ A ∘ svec⁻¹`` on
    ℝ^{ρ(ρ+1)/2} (``pk`` = :class:`_SymPacking`; an isometry for the Frobenius inner product, so
    the packed map is symmetric and has the eigenvalues of A on symmetric matrices). Storing
    ρ(ρ+1)/2 instead of ρ² entries per vector halves the basis memory and the
    reorthogonalisation. Started from ``X0 = I`` and stopped when the Ritz residual and the
    certified error bound are both at most ``tol·θ``. The map is positive (it sends PSD
    matrices to PSD matrices), so its top eigenvector ``X*`` is PSD (Mulayoff & Michaeli 2024,
    Thm 6) and ``⟨I/√ρ, X*/‖X*‖_F⟩ = tr X*/(√ρ‖X*‖_F) ≥ 1/√ρ``: a proven overlap of the start
    vector, which the engine turns into a deterministic certificate (no random segment needed).
    The basis holds :func:`basis_columns` vectors (thick restarts beyond that).

    Returns:
        ``(θ, converged, products, relative residual ‖Ay − θy‖/|θ|)``.
    """
    rho = pk.rho
    op = FunctionOperator(apply, (pk.dim,), dtype=dtype, device=device)
    with warnings.catch_warnings():  # the callers report non-convergence in their own words
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = lanczos_top_eigenpairs(
            op,
            1,
            v0=pk.pack(torch.eye(rho, dtype=dtype, device=device)),
            return_vectors=False,
            config=LanczosConfig(
                tol=tol,
                max_iters=max_iters,
                criterion="residual",
                start_overlap=1.0 / math.sqrt(rho),
                max_basis=basis_columns(rho, max_iters, budget_bytes),
            ),
        )
    top = float(res.values[0])
    return top, res.converged, res.num_matvecs, float(res.residuals[0]) / max(abs(top), 1e-300)


class _SharpnessOperator:
    """C_z^{-1/2} D_z C_z^{-1/2} in svec coordinates, with its work arrays set up once.

    On symmetric X: diag⊙X + p·S⊙P(S⊙X) with S_ab = c_ab^{-1/2}, c_ab = (λ_a + λ_b)/2, and
    diag_ab = (1 − p)λ_aλ_b/c_ab (C_z^{-1/2}(1 − p)ΛXΛC_z^{-1/2}); every term is exactly
    symmetric for a symmetric X. Called by Lanczos with svec vectors (:class:`_SymPacking`); a
    diagonal X (the start X₀ = I) takes the cheaper diagonal path of :class:`_PerSampleProducts`.
    """

    def __init__(self, coords: GramCoordinates, p: float) -> None:
        lam, rho = coords.lam, coords.rank
        c = 0.5 * (lam[:, None] + lam[None, :])
        self.p = p
        self.S = c.rsqrt()
        self.pS = p * self.S
        self.diag = (1.0 - p) * (lam[:, None] * lam[None, :]) / c
        self.pk = _SymPacking(rho, lam.device)
        self.P = _PerSampleProducts(coords) if p > 0.0 else None
        self.X = torch.empty(rho, rho, dtype=lam.dtype, device=lam.device)
        self.Y = torch.empty(rho, rho, dtype=lam.dtype, device=lam.device)

    def __call__(self, v: Tensor) -> Tensor:
        X = self.pk.unpack(v, out=self.X)
        if self.P is None:
            return self.pk.pack(torch.mul(self.diag, X, out=self.Y))
        w = v[self.pk.diag_pos]
        if int(torch.count_nonzero(v)) == int(torch.count_nonzero(w)):  # X diagonal (X₀ = I)
            out = self.P(None, diagonal=self.S.diagonal() * w, mirror=False)
        else:  # pack reads the upper part only
            out = self.P(torch.mul(self.S, X, out=self.Y), mirror=False)
        return self.pk.pack(out.mul_(self.pS).addcmul_(self.diag, X))


def generalized_sharpness(
    coords: GramCoordinates,
    sampling: Sampling,
    *,
    method: str,
    tol: float,
    max_iters: int,
    budget_bytes: int | None = None,
) -> tuple[float, bool, int, float]:
    """λ_max(C†D) = λ_max(C_z^{-1/2} D_z C_z^{-1/2}) for a resolved method (ρ ≥ 1).

    Args:
        coords: Row-space coordinates with rank ρ >= 1.
        sampling: The i.i.d. sampling rule (p is read from it).
        method: ``"dense"`` or ``"matrix_free"``.
        tol: Relative Ritz-residual tolerance (matrix-free).
        max_iters: Maximum Lanczos products (matrix-free).
        budget_bytes: Memory budget that sizes the stored Lanczos basis (:func:`basis_columns`;
            None: 256 MiB).

    Returns:
        ``(value, converged, products, relative residual)``; dense gives ``(·, True, 0, 0.0)``.
    """
    p = sampling.p
    if method == "dense":
        top = float(torch.linalg.eigvalsh(_dense_sym_matrix(coords, p))[-1])
        return top, True, 0, 0.0
    op = _SharpnessOperator(coords, p)
    return _top_eigenvalue(
        op,
        op.pk,
        torch.float64,
        coords.lam.device,
        tol=tol,
        max_iters=max_iters,
        budget_bytes=budget_bytes,
    )


def second_moment_radius(
    coords: GramCoordinates,
    sampling: Sampling,
    lr: float,
    *,
    method: str,
    tol: float,
    max_iters: int,
    budget_bytes: int | None = None,
) -> tuple[float, bool, float]:
    """ρ(Q_z) at η = lr for a resolved method (ρ ≥ 1): ``(value, converged, residual)``.

    The spectral radius is the top eigenvalue (its eigenvector is PSD; Mulayoff & Michaeli
    2024, Thm 6), so Lanczos from X₀ = I computes it. For η > 1 the operator is solved as Q/η²,
    so any finite lr works; a radius beyond the float64 range is returned as ``inf``.
    """
    p = sampling.p
    inv = 1.0 / lr if lr > 1.0 else 1.0
    if method == "dense":
        D, cdiag = _dense_sym_D(coords, p)
        Q = (lr * inv) ** 2 * D
        Q.diagonal().add_(inv * inv - 2.0 * (lr * inv * inv) * cdiag)
        top = float(torch.linalg.eigvalsh(Q).abs().max())
        return top / inv / inv, True, 0.0
    pk = _SymPacking(coords.rank, coords.lam.device)
    top, converged, _, res = _top_eigenvalue(
        lambda v: pk.pack(_apply_Q(coords, p, lr, pk.unpack(v), inv)),
        pk,
        torch.float64,
        coords.lam.device,
        tol=tol,
        max_iters=max_iters,
        budget_bytes=budget_bytes,
    )
    return top / inv / inv, converged, res


def product_flops(n: int, outputs: int, rank: int) -> float:
    """Flops of one matrix-free product D_z(X) on rank-ρ coordinates (see ``_per_sample_term``).

    2nCρ²(k + 1)/k for the two block-triangular products with Ĝ (k column blocks) plus 4nC²ρ
    for the per-sample C×C blocks.
    """
    N, k = n * outputs, len(_column_blocks(rank))
    return 2.0 * N * rank * rank * (k + 1) / k + 4.0 * N * outputs * rank


def solver_cost(
    n: int,
    outputs: int,
    rank: int,
    method: str,
    max_iters: int,
    budget_bytes: int | None = None,
) -> tuple[float, int]:
    """Estimated ``(flops, bytes)`` of one η* eigen-solve on rank-ρ coordinates.

    Dense: the svec matrix (m = ρ(ρ+1)/2): n·C(C+1)·m² flops to form, ≈ 4m³ to diagonalise,
    three m×m float64 arrays. Matrix-free: 40 products of :func:`product_flops` (η* typically
    needs 10–40 at tol = 1e-10), ten ρ×ρ arrays (the work arrays of
    :class:`_SharpnessOperator` and :class:`_PerSampleProducts`, the scalings S, pS, diag and
    the svec temporaries of a product), the stored Lanczos basis (:func:`basis_columns` svec
    vectors for the memory budget ``budget_bytes``) and two work arrays of one chunk of Ĝ's
    rows.
    """
    N, C, rho = n * outputs, outputs, rank
    m = rho * (rho + 1) // 2
    if method == "dense":
        chunk = min(n, max(1, _DENSE_CHUNK_ENTRIES // (C * (C + 1) // 2 * m)))
        flops = float(n * C * (C + 1) * m * m + 4 * m**3)
        return flops, 8 * (3 * m * m + 4 * chunk * C * (C + 1) // 2 * m)
    flops = min(40, max_iters) * product_flops(n, C, rho)
    rows = min(N, _row_chunk(n, C, rho) * C)
    basis = basis_columns(rho, max_iters, budget_bytes) * 8 * m
    return flops, 8 * (10 * rho * rho + 2 * rows * rho) + basis


def commuting_eta_star(curvatures: Tensor, batch_size: int, sampling: str = "with") -> float:
    """Closed-form η* when all per-sample Hessians commute (WME18 1-D case and its extension).

    With per-sample curvatures h_{ia} ≥ 0 along shared eigen-directions a (H_i = diag(h_i)),
    C†D is diagonal in e_a⊗e_b and

        η* = min_{a,b} (h_a + h_b) / [(1 − p) h_a h_b + p (1/n) Σ_i h_{ia} h_{ib}],

    h = mean_i h_i. In 1-D this is Wu, Ma & E (2018)'s η* = 2a/(a² + p s²) with a = mean
    curvature and s² = its variance over samples (exact; Mulayoff & Michaeli 2024 reduce to it
    in 1-D).

    Args:
        curvatures: Shape ``(n,)`` (1-D) or ``(n, d)``, entries ≥ 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"``.

    Returns:
        η* as a float (``inf`` when every curvature is 0).

    Raises:
        ValueError: On negative or non-finite curvatures, or bad sampling arguments.

    Example:
        >>> round(commuting_eta_star(torch.tensor([0.2, 3.8]), 1), 4)  # WME18 toy, a=2, s=1.8
        0.5525

    References:
        Wu, Ma & E, "How SGD selects the global minima in over-parameterized learning: a
        dynamical stability perspective", NeurIPS 2018 (Sec. 4, the 1-D example).
    """
    if not isinstance(curvatures, Tensor) or curvatures.ndim not in (1, 2):
        raise ValueError(
            "curvatures must be a Tensor of shape (n,) or (n, d); got "
            f"{getattr(curvatures, 'shape', type(curvatures).__name__)}."
        )
    h = curvatures.detach().to(torch.float64)
    if h.ndim == 1:
        h = h[:, None]
    if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        raise ValueError("curvatures must be finite and >= 0 (per-sample PSD Hessians).")
    n = h.shape[0]
    p = mixing_p(n, batch_size, sampling)
    mean = h.mean(0)
    num = mean[:, None] + mean[None, :]
    den = (1 - p) * mean[:, None] * mean[None, :] + p * (h.T @ h) / n
    mask = num > 0
    if not bool(mask.any()):
        return math.inf
    return float((num[mask] / den[mask]).min())
