import pytest
import torch

from dynstab.linalg import DenseOperator, LinearOperator, as_operator, to_dense
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
    with pytest.raises(TypeError, match=r"square torch\.Tensor or an operator"):
        as_operator([[1.0]])


def test_matmul_rejects_wrong_shape():
    op = DenseOperator(torch.eye(3))
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, k\)"):
        op @ torch.ones(4)


def test_to_dense_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk_size"):
        to_dense(torch.eye(2), chunk_size=0)
