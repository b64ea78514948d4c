import math

import pytest
import torch

from dynstab.linalg import (
    DenseOperator,
    hutchinson_squared_frobenius,
    hutchinson_trace,
    hutchinson_trace_and_frobenius,
    hutchpp_trace,
    hutchpp_trace_and_frobenius,
)


def _sym(p: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(p, p, generator=g, dtype=torch.float64)
    return B + B.T + torch.diag(torch.linspace(0, 5, p, dtype=torch.float64))


def test_rademacher_trace_exact_for_diagonal(generator):
    A = torch.diag(torch.tensor([1.0, -2.0, 7.5], dtype=torch.float64))
    res = hutchinson_trace(A, 5, generator=generator)
    assert res.estimate == pytest.approx(6.5, rel=1e-15)
    assert res.stderr == 0.0
    assert res.num_matvecs == res.num_probes == 5


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_trace_and_frobenius_within_standard_errors(distribution):
    A = _sym()
    tr, fro2 = float(A.trace()), float((A * A).sum())
    ses = []
    for m in (100, 1600):
        t, f = hutchinson_trace_and_frobenius(
            A, m, generator=torch.Generator().manual_seed(m), distribution=distribution
        )
        assert abs(t.estimate - tr) <= 5 * t.stderr
        assert abs(f.estimate - fro2) <= 5 * f.stderr
        ses.append((t.stderr, f.stderr))
    # standard errors shrink like 1/√m (ratio 1/4 for 16x the probes)
    for a, b in zip(ses[0], ses[1]):
        assert 0.15 <= b / a <= 0.4


def test_shared_probes_equal_separate_calls():
    A = _sym()
    t, f = hutchinson_trace_and_frobenius(A, 40, generator=torch.Generator().manual_seed(1))
    t2 = hutchinson_trace(A, 40, generator=torch.Generator().manual_seed(1))
    f2 = hutchinson_squared_frobenius(A, 40, generator=torch.Generator().manual_seed(1))
    assert (t.estimate, t.stderr) == (t2.estimate, t2.stderr)
    assert (f.estimate, f.stderr) == (f2.estimate, f2.stderr)


def test_block_size_does_not_change_result():
    A = _sym()
    a = hutchinson_trace(A, 50, generator=torch.Generator().manual_seed(2), block_size=7)
    b = hutchinson_trace(A, 50, generator=torch.Generator().manual_seed(2), block_size=50)
    assert a.estimate == pytest.approx(b.estimate, rel=1e-12)


def test_single_probe_has_nan_stderr_and_counts(generator):
    op = DenseOperator(_sym())
    t, _ = hutchinson_trace_and_frobenius(op, 1, generator=generator)
    assert math.isnan(t.stderr)
    assert op.num_matvecs == 1


def test_dtype_float32_accepted(generator):
    A = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float32))
    assert hutchinson_trace(A, 3, generator=generator).estimate == pytest.approx(3.0)


def test_hutchpp_exact_for_low_rank(generator):
    g = torch.Generator().manual_seed(5)
    U = torch.randn(40, 3, generator=g, dtype=torch.float64)
    A = U @ U.T  # rank 3, deflated exactly by s = 4 probes
    res = hutchpp_trace(A, 12, generator=generator)
    assert res.estimate == pytest.approx(float(A.trace()), rel=1e-10)
    assert res.num_matvecs == 12


def test_hutchpp_counts_real_products_when_sketch_exceeds_p(generator):
    A = _sym(p=5)
    op = DenseOperator(A)
    tr, fro2 = hutchpp_trace_and_frobenius(op, 21, generator=generator)  # s = 7 > p = 5
    assert tr.num_matvecs == fro2.num_matvecs == op.num_matvecs == 7 + 5 + 7
    assert tr.num_probes == fro2.num_probes == 7
    assert tr.estimate == pytest.approx(float(A.trace()), rel=1e-10)
    assert fro2.estimate == pytest.approx(float((A * A).sum()), rel=1e-10)
    assert tr.stderr == pytest.approx(0.0, abs=1e-12)
    assert fro2.stderr == pytest.approx(0.0, abs=1e-12)


def test_hutchpp_trace_is_the_trace_half():
    A = _sym(p=50)
    alone = hutchpp_trace(A, 30, generator=torch.Generator().manual_seed(2))
    pair = hutchpp_trace_and_frobenius(A, 30, generator=torch.Generator().manual_seed(2))
    assert alone == pair[0]


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_hutchpp_frobenius_within_standard_error_and_beats_hutchinson(distribution):
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(150, 150, generator=g, dtype=torch.float64))
    A = U @ torch.diag(0.8 ** torch.arange(150, dtype=torch.float64)) @ U.T  # decaying spectrum
    kw = {"distribution": distribution}
    tr, fro2 = hutchpp_trace_and_frobenius(A, 45, generator=torch.Generator().manual_seed(4), **kw)
    assert tr.stderr > 0
    assert fro2.stderr > 0
    assert abs(tr.estimate - float(A.trace())) <= 5 * tr.stderr
    assert abs(fro2.estimate - float((A * A).sum())) <= 5 * fro2.stderr
    h_tr, h_fro2 = hutchinson_trace_and_frobenius(
        A, 45, generator=torch.Generator().manual_seed(4), **kw
    )
    assert fro2.stderr < 0.1 * h_fro2.stderr
    assert tr.stderr < 0.1 * h_tr.stderr


def test_hutchpp_within_standard_error():
    A = _sym(p=200)
    res = hutchpp_trace(A, 60, generator=torch.Generator().manual_seed(9))
    assert res.num_probes == 20
    assert res.stderr > 0
    assert abs(res.estimate - float(A.trace())) <= 5 * res.stderr


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (hutchinson_trace, {"num_probes": 0}, "num_probes"),
        (hutchinson_trace, {"num_probes": 2, "distribution": "cauchy"}, "unknown distribution"),
        (hutchinson_squared_frobenius, {"num_probes": 2, "block_size": 0}, "block_size"),
        (hutchpp_trace, {"num_matvecs": 2}, "num_matvecs"),
        (hutchpp_trace_and_frobenius, {"num_matvecs": 4, "distribution": "x"}, "distribution"),
    ],
)
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(torch.eye(3), **kwargs)


def test_non_square_rejected():
    with pytest.raises(ValueError, match="square"):
        hutchinson_trace(torch.zeros(2, 3), 2)
