import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator as ScipyOperator
from scipy.sparse.linalg import eigsh

from dynstab.curvature import HessianOperator, dense_hessian
from dynstab.linalg import (
    DenseOperator,
    FunctionOperator,
    LinearOperator,
    as_operator,
    hutchinson_trace,
    lanczos_top_eigenpairs,
    slq_density,
    to_dense,
)
from helpers import assert_close


def _sym(p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(p, p, generator=g, dtype=torch.float64)
    return A + A.T


def test_dense_operator_counts_vectors_and_blocks():
    A = _sym(6)
    op = DenseOperator(A)
    v = torch.randn(6, dtype=torch.float64)
    assert_close(op @ v, A @ v, rtol=1e-15)
    V = torch.randn(6, 4, dtype=torch.float64)
    assert_close(op @ V, A @ V, rtol=1e-15)
    assert op.num_matvecs == 5
    assert op.shape == (6, 6)
    assert op.dtype == torch.float64


def test_to_dense_recovers_matrix_with_any_chunk():
    A = _sym(7)
    for chunk in (1, 3, 7, 100):
        op = DenseOperator(A)
        assert torch.equal(to_dense(op, chunk_size=chunk), A)
        assert op.num_matvecs == 7


def test_as_operator_wraps_foreign_operator_like():
    A = _sym(5)

    class Foreign:
        shape = (5, 5)
        dtype = torch.float64
        device = torch.device("cpu")

        def __matmul__(self, other):
            return A @ other

    op = as_operator(Foreign())
    assert isinstance(op, LinearOperator)
    assert torch.equal(op.to_dense(), A)
    assert op.num_matvecs == 5


def test_matmul_casts_dtype():
    op = DenseOperator(torch.eye(3, dtype=torch.float64))
    out = op @ torch.ones(3, dtype=torch.float32)
    assert out.dtype == torch.float64


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(2, 3), "square"),
        (torch.zeros(2, 2, dtype=torch.int64), "floating"),
    ],
)
def test_dense_operator_rejects_bad_matrices(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DenseOperator(bad)


def test_as_operator_rejects_non_operators():
    with pytest.raises(TypeError, match=r"square torch\.Tensor, numpy array, scipy"):
        as_operator([[1.0]])


def test_matmul_rejects_wrong_shape():
    op = DenseOperator(torch.eye(3))
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, k\)"):
        op @ torch.ones(4)


def test_to_dense_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk_size"):
        to_dense(torch.eye(2), chunk_size=0)


# -- interop: scipy in, scipy out, functions on any vector shape ------------------------------


def test_scipy_linear_operator_in():
    A = _sym(30, seed=2)
    An = A.numpy()
    calls = []

    def matmat(X):
        calls.append(X.shape)
        return An @ X

    sop = ScipyOperator((30, 30), matvec=lambda x: An @ x, matmat=matmat, dtype=np.float64)
    op = as_operator(sop)
    assert op.shape == (30, 30)
    assert op.dtype == torch.float64
    assert_close(op.to_dense(), A, rtol=1e-15)
    res = lanczos_top_eigenpairs(sop, 2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert_close(res.values, torch.linalg.eigvalsh(A).flip(0)[:2], rtol=1e-10)
    assert hutchinson_trace(sop, 4).num_matvecs == 4
    assert slq_density(sop, num_probes=2, num_iters=5).num_matvecs == 10
    # scipy sparse matrices and numpy arrays are accepted as well
    S = sp.random(40, 40, density=0.1, random_state=0, format="csr")
    S = S + S.T
    assert_close(as_operator(S).to_dense(), torch.from_numpy(S.toarray()), rtol=1e-15)
    assert_close(as_operator(An).to_dense(), A, rtol=0)


def test_to_scipy_round_trip_on_a_curvature_operator(case):
    H = HessianOperator(case.model, case.loss_fn, case.data)
    dense = dense_hessian(case.model, case.loss_fn, case.data)
    S = H.to_scipy()
    assert S.shape == dense.shape
    assert S.dtype == np.float64
    p = dense.shape[0]
    X = np.random.default_rng(0).standard_normal((p, 3))
    np.testing.assert_allclose(S.matmat(X), dense.numpy() @ X, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(S.rmatvec(X[:, 0]), dense.numpy() @ X[:, 0], rtol=1e-10, atol=1e-12)
    before = H.num_matvecs
    S.matvec(X[:, 0])
    assert H.num_matvecs == before + 1
    if p > 2:
        top = eigsh(S, k=1, which="LA", tol=1e-12)[0][0]
        assert top == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-9, abs=1e-12)


def test_function_operator_batched_and_per_column_agree():
    M = _sym(4, seed=3)

    def apply(X):  # X of shape (..., 4, 4)
        return M @ X + X @ M

    per_col = FunctionOperator(apply, (4, 4), dtype=torch.float64)
    batched = FunctionOperator(apply, (4, 4), dtype=torch.float64, batched=True)
    V = torch.randn(16, 5, dtype=torch.float64)
    assert_close(per_col @ V, batched @ V, rtol=1e-14)
    assert per_col.num_matvecs == batched.num_matvecs == 5


@pytest.mark.parametrize(
    ("args", "kwargs", "err", "match"),
    [
        ((1, (2, 2)), {"dtype": torch.float64}, TypeError, "callable"),
        ((abs, (0, 2)), {"dtype": torch.float64}, ValueError, "positive"),
        ((abs, (2,)), {"dtype": torch.int64}, TypeError, "floating"),
    ],
)
def test_function_operator_rejects_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        FunctionOperator(*args, **kwargs)
