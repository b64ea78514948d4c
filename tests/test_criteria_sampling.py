import itertools

import pytest
import torch

from dynstab.criteria import mixing_p, q_factor
from dynstab.criteria.reference import enumerated_second_moment_operator, parameter_space_Q


def test_mixing_weights_match_closed_forms():
    assert mixing_p(3, 2, "without") == 0.25
    assert mixing_p(3, 2, "with") == 0.5
    assert mixing_p(10, 10, "without") == 0.0  # GD
    assert mixing_p(10, 10, "with") == pytest.approx(0.1)  # W with B = n is not GD
    assert mixing_p(7, 1, "with") == mixing_p(7, 1, "without") == 1.0
    assert mixing_p(1, 1, "without") == 0.0


@pytest.mark.parametrize(("n", "B"), [(2, 1), (5, 2), (5, 5), (9, 4)])
def test_q_factor(n, B):
    assert q_factor(n, B, "without") == pytest.approx(1.0 / B, rel=1e-14)
    assert q_factor(n, B, "with") == pytest.approx((n + B - 1) / (n * B), rel=1e-14)


def test_q_factor_with_replacement_allows_batch_above_n():
    assert q_factor(3, 5, "with") == pytest.approx(7 / 15)


@pytest.mark.parametrize(
    ("n", "B", "sampling"),
    [(n, B, "with") for n in (2, 3) for B in (1, 2, 3)]
    + [(n, B, "without") for n in (2, 3, 4) for B in range(1, n + 1)],
)
def test_mixture_formula_equals_batch_enumeration(n, B, sampling):
    g = torch.Generator().manual_seed(10 * n + B)
    J = torch.randn(n, 3, generator=g, dtype=torch.float64)
    Q_enum = enumerated_second_moment_operator(J, 0.3, B, sampling)
    Q_mix = parameter_space_Q(J, 0.3, B, sampling)
    torch.testing.assert_close(Q_enum, Q_mix, rtol=1e-12, atol=1e-12)


def test_mixture_formula_vector_outputs():
    g = torch.Generator().manual_seed(3)
    J = torch.randn(3, 2, 3, generator=g, dtype=torch.float64)
    for B, s in itertools.product((1, 2), ("with", "without")):
        torch.testing.assert_close(
            enumerated_second_moment_operator(J, 0.2, B, s),
            parameter_space_Q(J, 0.2, B, s),
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize(
    ("fn", "args", "exc", "match"),
    [
        (mixing_p, (4, 2, "reshuffle"), ValueError, "unknown sampling 'reshuffle'"),
        (mixing_p, (4, 5, "without"), ValueError, "batch_size must be <= n"),
        (q_factor, (4, 0, "with"), ValueError, "batch_size must be >= 1"),
        (mixing_p, (4, 2.0, "with"), TypeError, "batch_size must be an int"),
        (mixing_p, (4, 2, None), TypeError, "sampling must be a str"),
        (mixing_p, (0, 1, "with"), ValueError, "n must be >= 1"),
    ],
)
def test_sampling_errors(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)
