"""The block-triangular, chunked per-sample products of the exact η* (``criteria.gram``).

Every path of ``_per_sample_term`` (column blocks k = 1..6, chunks that do / do not divide the
samples, C = 1, 2, 3, either memory layout of Ĝ) against its definition, and the whole η* solve
with those paths forced on small instances against the dense float64 references: the svec matrix
of the Gram route and the Kronecker formula in parameter space (Mulayoff & Michaeli 2024, Thm 3),
on rank-deficient K, K with repeated eigenvalues, both samplings and several batch sizes.
"""

import itertools

import pytest
import torch

from criteria_cases import random_jacobians
from dynstab.criteria import StabilityProblem, eta_star
from dynstab.criteria import gram as gram_module
from dynstab.criteria.gram import (
    GramCoordinates,
    _apply_D,
    _apply_Q,
    _column_blocks,
    _per_sample_term,
    product_flops,
    solver_cost,
)
from dynstab.criteria.reference import gram_from_jacobians, parameter_space_eta_star


def _definition(c: GramCoordinates, X: torch.Tensor) -> torch.Tensor:
    Gr = c.Ghat.reshape(c.n, c.outputs, c.rank)
    return sum(Gr[i].T @ Gr[i] @ X @ Gr[i].T @ Gr[i] for i in range(c.n)) / c.n


def _sym_random(g: torch.Generator, rho: int) -> torch.Tensor:
    X = torch.randn(rho, rho, generator=g, dtype=torch.float64)
    return X + X.T


@pytest.mark.parametrize("C", [1, 2, 3])
def test_every_block_and_chunk_path_equals_the_definition(C):
    g = torch.Generator().manual_seed(10 + C)
    J = random_jacobians(g, 9, 13, C)
    c = StabilityProblem.from_jacobians(J).coordinates
    X = _sym_random(g, c.rank)
    ref = _definition(c, X)
    scale = float(ref.abs().max())
    for blocks, chunk in itertools.product([1, 2, 3, 5, 6, 100], [1, C, 2 * C, 4 * C + 1, 10**6]):
        got = _per_sample_term(c, X, blocks=blocks, chunk_rows=chunk)
        # float64 round-off of sums of ≤ nCρ products of size ≤ scale
        assert float((got - ref).abs().max()) <= 1e-13 * scale
        assert torch.equal(got, got.T)  # exactly symmetric, as _top_eigenvalue requires
        # the diagonal path (X = diag(w), the Lanczos start) against the same definition
        w = X.diagonal().clone()
        products = gram_module._PerSampleProducts(c, blocks=blocks, chunk_rows=chunk)
        got_d = products(None, diagonal=w)
        ref_d = _definition(c, torch.diag(w))
        assert float((got_d - ref_d).abs().max()) <= 1e-13 * float(ref_d.abs().max())
        assert torch.equal(got_d, got_d.T)


def test_row_major_ghat_gives_the_same_products():
    """GramCoordinates built by hand with a row-major Ĝ (ghat_t is then a copy, made once)."""
    g = torch.Generator().manual_seed(3)
    J = random_jacobians(g, 8, 6, 2)
    c = StabilityProblem.from_jacobians(J).coordinates
    assert c.ghat_t.is_contiguous()
    assert c.ghat_t.data_ptr() == c.Ghat.data_ptr()
    rowmajor = GramCoordinates(c.lam, c.U, c.Ghat.contiguous(), c.n, c.outputs, c.lambda_max)
    assert rowmajor.ghat_t is rowmajor.ghat_t  # cached
    X = _sym_random(g, c.rank)
    for blocks in (1, 3):
        a = _per_sample_term(c, X, blocks=blocks, chunk_rows=6)
        b = _per_sample_term(rowmajor, X, blocks=blocks, chunk_rows=6)
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14 * float(a.abs().max()))


def test_operators_act_on_the_symmetric_part_and_return_exact_symmetry():
    g = torch.Generator().manual_seed(4)
    J = random_jacobians(g, 7, 9, 1)
    c = StabilityProblem.from_jacobians(J).coordinates
    A = torch.randn(c.rank, c.rank, generator=g, dtype=torch.float64)  # not symmetric
    S = 0.5 * (A + A.T)
    for p in (0.0, 0.3, 1.0):
        D = _apply_D(c, p, A)
        assert torch.equal(D, D.T)
        ref = (1 - p) * torch.diag(c.lam) @ S @ torch.diag(c.lam) + p * _definition(c, S)
        torch.testing.assert_close(D, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
        for lr, inv in ((0.1, 1.0), (3.0, 1 / 3.0)):
            Q = _apply_Q(c, p, lr, A, inv)
            assert torch.equal(Q, Q.T)
            L = torch.diag(c.lam)
            refQ = inv**2 * (S - lr * (L @ S + S @ L) + lr**2 * ref)
            torch.testing.assert_close(Q, refQ, rtol=1e-12, atol=1e-12 * float(refQ.abs().max()))


def _repeated_eigenvalue_jacobians(g: torch.Generator, n: int, C: int) -> torch.Tensor:
    """J with orthogonal columns of equal norm: H = JᵀJ/n has a 3-fold repeated eigenvalue."""
    P = 5
    Q, _ = torch.linalg.qr(torch.randn(n * C, P, generator=g, dtype=torch.float64))
    J = Q * torch.tensor([2.0, 2.0, 2.0, 1.0, 0.5], dtype=torch.float64) * n**0.5
    return J.reshape(n, C, P)


def _instances() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2024)
    cases = []
    for C in (1, 2):
        cases.append((f"C{C}-rank-deficient-K", random_jacobians(g, 9, 5, C)))  # ρ = 5 < nC
        cases.append((f"C{C}-full-rank-K", random_jacobians(g, 6, 6 * C + 3, C)))  # ρ = nC
        cases.append((f"C{C}-repeated", _repeated_eigenvalue_jacobians(g, 7, C)))
        dup = random_jacobians(g, 6, 12, C)
        dup[4] = dup[1]  # duplicated sample: K rank-deficient, ρ = 5C
        cases.append((f"C{C}-duplicated", dup))
    return cases


@pytest.mark.parametrize(("name", "J"), _instances())
def test_forced_blocks_and_chunks_match_the_dense_references(name, J, monkeypatch):
    """η* by the matrix-free solver with k ≥ 2 blocks and several chunks, vs dense references.

    Tolerance: the solver's certified relative accuracy is tol = 1e-10 on λ_max(C†D); the two
    dense references are exact to float64 round-off of ρ(ρ+1)/2 ≤ 171-dimensional eigenproblems.
    """
    monkeypatch.setattr(gram_module, "_MIN_BLOCK", 2)  # ρ = 5..18: k = 2..6 column blocks
    monkeypatch.setattr(gram_module, "_CHUNK_ENTRIES", 16)  # one or two samples per chunk
    n, C = int(J.shape[0]), int(J.shape[1])
    prob = StabilityProblem.from_gram(gram_from_jacobians(J), C)
    rho = prob.rank
    assert len(_column_blocks(rho)) >= 2
    if name.endswith("repeated"):
        lam = prob.coordinates.lam
        assert float(lam[0] - lam[2]) <= 1e-12 * float(lam[0])  # a repeated top eigenvalue
    checked = 0
    for sampling in ("with", "without"):
        for B in sorted({1, 2, n // 2, n - 1}):
            s = prob.sampling(B, sampling)
            got = prob.eta_star(s, method="matrix_free")
            dense = prob.eta_star(s, method="dense").eta_star
            kron = parameter_space_eta_star(J, B, sampling)
            assert got.converged
            assert got.num_matvecs > 0
            assert got.eta_star == pytest.approx(dense, rel=1e-9)
            assert got.eta_star == pytest.approx(kron, rel=1e-9)
            checked += 1
    assert checked >= 6


def test_parameter_route_with_forced_blocks_matches_gram_route(monkeypatch):
    monkeypatch.setattr(gram_module, "_MIN_BLOCK", 3)
    monkeypatch.setattr(gram_module, "_CHUNK_ENTRIES", 40)
    g = torch.Generator().manual_seed(77)
    J = random_jacobians(g, 40, 12, 1)  # p = 12 < n: the parameter route
    a = StabilityProblem.from_jacobians(J)
    b = StabilityProblem.from_gram(gram_from_jacobians(J))
    assert a.route == "parameter"
    assert b.route == "gram"
    for B, sampling in ((1, "with"), (5, "without"), (39, "without")):
        ea = a.eta_star(a.sampling(B, sampling), method="matrix_free").eta_star
        eb = eta_star(gram_from_jacobians(J), B, sampling, method="dense").eta_star
        assert ea == pytest.approx(eb, rel=1e-9)
        assert ea == pytest.approx(parameter_space_eta_star(J, B, sampling), rel=1e-9)


def test_column_blocks_partition_and_product_flops():
    for rho in (1, 5, 399, 400, 801, 2000, 5000):
        cols = _column_blocks(rho)
        assert cols[0][0] == 0
        assert cols[-1][1] == rho
        assert all(a1 == b0 for (_, a1), (b0, _) in itertools.pairwise(cols))
        assert all(a1 > a0 for a0, a1 in cols)
    assert len(_column_blocks(2000)) == 6
    assert len(_column_blocks(100)) == 2
    assert len(_column_blocks(60)) == 1
    # k blocks: (k + 1)/(2k) of the 4Nρ² flops of plain products (k = 6 at ρ = 2000: 7/12)
    assert product_flops(2000, 1, 2000) == pytest.approx(7 / 12 * 4 * 2000**3 + 4 * 2000**2)
    assert product_flops(150_000, 1, 100) == pytest.approx(
        0.75 * 4 * 150_000 * 100**2 + 4 * 150_000 * 100
    )
    flops, memory = solver_cost(150_000, 1, 100, "matrix_free", 300)
    assert flops == pytest.approx(40 * product_flops(150_000, 1, 100))
    assert memory < 8 * 150_000 * 100  # the temporaries are chunked: less than one copy of Ĝ


# ---------------------------------------------------------------- svec Lanczos and its basis


@pytest.mark.parametrize("rho", [1, 2, 7, 40])
def test_sym_packing_is_an_isometry_and_round_trips(rho):
    g = torch.Generator().manual_seed(rho)
    pk = gram_module._SymPacking(rho, torch.device("cpu"))
    X, Y = _sym_random(g, rho), _sym_random(g, rho)
    x, y = pk.pack(X), pk.pack(Y)
    assert x.shape == (rho * (rho + 1) // 2,)
    inner = float((X * Y).sum())
    # ⟨svec X, svec Y⟩ = tr(XY): sums of ρ² products, each rounded once or twice
    assert float(x @ y) == pytest.approx(inner, rel=1e-13, abs=1e-13 * float(X.abs().max() ** 2))
    buf = torch.empty(rho, rho, dtype=torch.float64)
    for v, M in ((x, X), (y, Y), (x, X)):  # the work arrays are reused: no state leaks between
        got = pk.unpack(v, out=buf)
        assert got.data_ptr() == buf.data_ptr()
        assert torch.equal(got, got.T)
        torch.testing.assert_close(got, M, rtol=1e-15, atol=1e-15 * float(M.abs().max()))
    torch.testing.assert_close(pk.pack(pk.unpack(x)), x, rtol=1e-15, atol=0)


@pytest.mark.parametrize("rho", [1, 2, 7, 40])
def test_sym_packing_batches_match_one_matrix_and_the_basis(rho):
    """The batched paths (momentum's dense matrices and ARPACK) give the one-matrix svec."""
    g = torch.Generator().manual_seed(100 + rho)
    pk = gram_module._SymPacking(rho, torch.device("cpu"))
    Xs = torch.stack([torch.stack([_sym_random(g, rho) for _ in range(3)]) for _ in range(2)])
    V = pk.pack(Xs)
    assert V.shape == (2, 3, rho * (rho + 1) // 2)
    for i, j in itertools.product(range(2), range(3)):
        assert torch.equal(V[i, j], pk.pack(Xs[i, j]))
    back = pk.unpack(V)
    assert torch.equal(back, back.transpose(-1, -2))
    torch.testing.assert_close(back, Xs, rtol=1e-15, atol=1e-15 * float(Xs.abs().max()))
    # unpack of the unit vectors is the orthonormal basis {e_ae_aᵀ} ∪ {(e_ae_bᵀ + e_be_aᵀ)/√2}
    m = rho * (rho + 1) // 2
    E = pk.unpack(torch.eye(m, dtype=torch.float64))
    a, b = torch.triu_indices(rho, rho)
    for k in range(m):
        want = torch.zeros(rho, rho, dtype=torch.float64)
        w = 1.0 if a[k] == b[k] else 0.5**0.5
        want[a[k], b[k]] = want[b[k], a[k]] = w
        assert torch.equal(E[k], want)
    gram = torch.einsum("kab,lab->kl", E, E)  # orthonormal for the Frobenius inner product
    torch.testing.assert_close(gram, torch.eye(m, dtype=torch.float64), rtol=0, atol=1e-15)
    buf = torch.empty(4, rho, rho, dtype=torch.float64)
    assert pk.unpack(pk.pack(buf.copy_(Xs[0, 0])), out=buf).data_ptr() == buf.data_ptr()


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize("p", [0.0, 0.35, 1.0])
def test_sharpness_operator_is_the_dense_svec_matrix(C, p, monkeypatch):
    """The operator Lanczos runs on, column by column, against the dense solver's matrix.

    Both are C_z^{-1/2} D_z C_z^{-1/2} in the same orthonormal svec basis (entries a ≤ b row by
    row); blocks and chunks are forced small so that every work-array path is used, and the
    operator is applied to all unit vectors in turn (work arrays reused m times).
    """
    monkeypatch.setattr(gram_module, "_MIN_BLOCK", 2)
    monkeypatch.setattr(gram_module, "_CHUNK_ENTRIES", 16)
    g = torch.Generator().manual_seed(50 + C)
    J = random_jacobians(g, 6, 7, C)
    c = StabilityProblem.from_jacobians(J).coordinates
    op = gram_module._SharpnessOperator(c, p)
    m = op.pk.dim
    cols = [op(e) for e in torch.eye(m, dtype=torch.float64)]
    got = torch.stack(cols, dim=1)
    ref = gram_module._dense_sym_matrix(c, p)
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= 1e-12 * scale
    assert float((got - got.T).abs().max()) <= 1e-12 * scale  # symmetric in svec coordinates


def test_basis_columns_follow_the_memory_budget():
    rho, m = 2000, 2000 * 2001 // 2
    # the 256 MiB floor holds 16 svec vectors at ρ = 2000 (it held 8 full ρ×ρ matrices)
    assert gram_module.basis_columns(rho, 300) == (2**28) // (8 * m) == 16
    # a quarter of an 8 GiB budget: 134 vectors; never more than max_iters + 4
    assert gram_module.basis_columns(rho, 300, 8 * 2**30) == (2 * 2**30) // (8 * m)
    assert gram_module.basis_columns(rho, 20, 8 * 2**30) == 24
    assert gram_module.basis_columns(30, 300) == 304
    assert gram_module.basis_columns(5000, 300, 1) == 8  # at least 8
    small = solver_cost(2000, 1, rho, "matrix_free", 300)[1]
    large = solver_cost(2000, 1, rho, "matrix_free", 300, 8 * 2**30)[1]
    assert large - small == 8 * m * (134 - 16)  # the basis is what grows


def test_a_basis_that_holds_the_segment_certifies_in_no_more_products(monkeypatch):
    """With room for the whole Lanczos segment the certificate needs no thick restart.

    The same η* problem with the basis squeezed to 8 vectors (restarts) and with the budget's
    basis; both are checked against the dense svec solver (tol = 1e-10 on λ_max(C†D)).
    """
    g = torch.Generator().manual_seed(9)
    J = random_jacobians(g, 40, 35, 1)  # ρ = 35, m = 630
    c = StabilityProblem.from_jacobians(J).coordinates
    s = StabilityProblem.from_jacobians(J).sampling(4, "with")
    dense = gram_module.generalized_sharpness(c, s, method="dense", tol=1e-10, max_iters=300)[0]
    roomy = gram_module.generalized_sharpness(
        c, s, method="matrix_free", tol=1e-10, max_iters=300, budget_bytes=2**30
    )
    monkeypatch.setattr(gram_module, "_BASIS_BUDGET_BYTES", 8 * 8 * 630)
    assert gram_module.basis_columns(35, 300) == 8
    tight = gram_module.generalized_sharpness(c, s, method="matrix_free", tol=1e-10, max_iters=300)
    assert roomy[1]
    assert roomy[0] == pytest.approx(dense, rel=1e-9)
    assert roomy[2] < tight[2]  # 13 vs 19 products here
    assert tight[0] == pytest.approx(dense, rel=1e-9)
