import math

import pytest
import torch

from dynstab import _checks
from dynstab.losses import cross_entropy, half_mse, per_sample_half_mse


def test_half_mse_matches_definition_vector_outputs():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    expected = 0.5 * ((out - y) ** 2).sum() / 5
    assert math.isclose(float(half_mse(out, y)), float(expected), rel_tol=1e-14)
    assert per_sample_half_mse(out, y).shape == (5,)


def test_half_mse_scalar_shapes_agree():
    out = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0], [1.0]], dtype=torch.float64)
    assert float(half_mse(out, y)) == pytest.approx((1 + 0 + 9) / 6)


def test_half_mse_is_half_of_torch_mse_times_outputs():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randn(7, 4, generator=g, dtype=torch.float64)
    torch_mse = torch.nn.functional.mse_loss(out, y)
    assert float(half_mse(out, y)) == pytest.approx(float(torch_mse) * 4 / 2, rel=1e-13)


def test_half_mse_shape_errors():
    with pytest.raises(ValueError, match="same number of samples"):
        half_mse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="matching per-sample sizes"):
        half_mse(torch.zeros(3, 2), torch.zeros(3, 3))


def test_half_mse_supports_forward_over_reverse():
    w = torch.tensor([0.5, -1.0], dtype=torch.float64)
    X = torch.tensor([[1.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)

    def loss(p):
        return half_mse(X @ p, y)

    v = torch.tensor([1.0, 0.0], dtype=torch.float64)
    _, hvp = torch.func.jvp(torch.func.grad(loss), (w,), (v,))
    torch.testing.assert_close(hvp, (X.T @ X / 2) @ v)


def test_cross_entropy_indices_and_probabilities_agree():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    onehot = torch.nn.functional.one_hot(labels, 3).double()
    ref = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(cross_entropy(logits, labels), ref)
    torch.testing.assert_close(cross_entropy(logits, onehot), ref)


def test_checks_messages():
    with pytest.raises(ValueError, match="lr must be finite and > 0; got -1"):
        _checks.check_positive("lr", -1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        _checks.check_positive("lr", "fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        _checks.check_int("batch_size", 0, minimum=1)
    with pytest.raises(TypeError, match="must be an int"):
        _checks.check_int("batch_size", 2.0, minimum=1)  # type: ignore[arg-type]
    msg = r"unknown sampling 'both'; choose from \['with', 'without'\]"
    with pytest.raises(ValueError, match=msg):
        _checks.check_choice("sampling", "both", ("without", "with"))
    with pytest.raises(ValueError, match="square"):
        _checks.check_square_matrix("K", torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"missing keys \['b'\], unexpected keys \['c'\]"):
        _checks.check_keys("op", ["a", "c"], ["a", "b"])
    assert _checks.check_positive("x", 0, allow_zero=True) == 0.0
