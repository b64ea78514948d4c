import math

import pytest
import torch

from dynstab.linalg import slq_density


def _sym(p: int = 25, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(p, p, generator=g, dtype=torch.float64)
    return (B + B.T) / math.sqrt(p)


def test_quadrature_moments_equal_probe_moments():
    """Gauss quadrature with m nodes is exact for degree <= 2m-1: Σ w θ^k = mean vᵀA^kv / p."""
    A = _sym()
    p, m, probes = A.shape[0], 4, 6
    dens = slq_density(
        A, num_probes=probes, num_iters=m, generator=torch.Generator().manual_seed(1)
    )
    g = torch.Generator().manual_seed(1)
    V = []
    for _ in range(probes):  # the same probes, drawn the same way
        v = torch.randint(0, 2, (p,), generator=g, dtype=torch.int64).to(torch.float64)
        V.append(2 * v - 1)
    for k in range(0, 2 * m):
        Ak = torch.linalg.matrix_power(A, k)
        expected = sum(float(v @ Ak @ v) for v in V) / (probes * p)
        assert dens.moment(k) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert float(dens.weights.sum()) == pytest.approx(1.0, rel=1e-12)
    assert dens.num_matvecs == probes * m


def test_moments_estimate_normalized_traces_within_stderr():
    A = _sym()
    p = A.shape[0]
    probes = 200
    dens = slq_density(
        A, num_probes=probes, num_iters=6, generator=torch.Generator().manual_seed(2)
    )
    for k in (1, 2, 3):
        exact = float(torch.trace(torch.linalg.matrix_power(A, k))) / p
        # per-probe moments: nodes come in blocks of 6 per probe
        per_probe = (dens.weights * probes * dens.nodes**k).reshape(probes, -1).sum(1)
        se = float(per_probe.std()) / math.sqrt(probes)
        assert abs(dens.moment(k) - exact) <= 5 * se + 1e-12


def test_full_lanczos_recovers_spectrum_support():
    A = _sym(p=10)
    dens = slq_density(A, num_probes=1, num_iters=10, generator=torch.Generator().manual_seed(0))
    eig = torch.linalg.eigvalsh(A)
    assert torch.allclose(dens.nodes.sort().values, eig, rtol=1e-9, atol=1e-10)


def test_smoothed_density_integrates_to_one():
    dens = slq_density(
        _sym(), num_probes=3, num_iters=8, generator=torch.Generator().manual_seed(0)
    )
    grid = torch.linspace(-6, 6, 4001, dtype=torch.float64)
    vals = dens.smoothed(grid, sigma=0.1)
    assert float(torch.trapezoid(vals, grid)) == pytest.approx(1.0, rel=1e-6)


def test_probe_blocks_do_not_change_the_density():
    A = _sym(p=30)
    kw = {"num_probes": 7, "num_iters": 6}
    one = slq_density(A, generator=torch.Generator().manual_seed(4), block_size=1, **kw)
    all_ = slq_density(A, generator=torch.Generator().manual_seed(4), block_size=7, **kw)
    three = slq_density(A, generator=torch.Generator().manual_seed(4), block_size=3, **kw)
    for other in (all_, three):
        assert torch.allclose(one.nodes, other.nodes, rtol=1e-12, atol=1e-12)
        assert torch.allclose(one.weights, other.weights, rtol=1e-10, atol=1e-14)
        assert one.num_matvecs == other.num_matvecs == 42


def test_breakdown_truncates_the_quadrature():
    A = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0], dtype=torch.float64))
    dens = slq_density(A, num_probes=2, num_iters=5, generator=torch.Generator().manual_seed(0))
    # three distinct eigenvalues: each probe's Krylov space is invariant after 3 steps
    assert dens.nodes.numel() == 6
    assert float(dens.weights.sum()) == pytest.approx(1.0, rel=1e-12)
    assert dens.moment(1) == pytest.approx(float(torch.diagonal(A).mean()), rel=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_probes"):
        slq_density(torch.eye(3), num_probes=0)
    with pytest.raises(ValueError, match="num_iters"):
        slq_density(torch.eye(3), num_iters=0)
    with pytest.raises(ValueError, match="block_size"):
        slq_density(torch.eye(3), block_size=0)
