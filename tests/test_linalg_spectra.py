"""The Krylov engine on the registry of hard spectra (tests/spectra.py).

For every case, seed, ``k``, end and solver variant: either every returned value is within
``tol`` of the true eigenvalue of its rank and ``converged=True``, or ``converged=False``; and
``error_bounds`` are never below the true errors. The bounds hold with probability at least
``1 − failure_probability`` (1e-3) over the random start vectors, so over the ~300 runs here a
violation would have probability below 0.3 even if every run spent its whole δ — in practice
the bound is far from tight in δ (a violation needs a start vector nearly orthogonal to an
eigenvector), and none occurs.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dynstab.errors import ConvergenceWarning
from dynstab.linalg import LanczosConfig, as_operator, lanczos_top_eigenpairs
from dynstab.linalg.krylov import KrylovEngine, default_basis_dtype
from spectra import SPECTRA, BuiltSpectrum, SpectrumCase

_BUILT: dict[str, BuiltSpectrum] = {}


def _build(case: SpectrumCase) -> BuiltSpectrum:
    if case.name not in _BUILT:
        _BUILT[case.name] = case.build()
    return _BUILT[case.name]


def _tol(case: SpectrumCase) -> float:
    # float32 products are modelled accurate to 4·eps32·‖A‖ each: 1e-6 is near their floor,
    # reached by recomputing the returned vectors' products afresh
    return 1e-6


def _check(case: SpectrumCase, k: int, which: str, cfg: LanczosConfig, seed: int) -> None:
    b = _build(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = lanczos_top_eigenpairs(
            b.op,
            k,
            which=which,
            config=cfg,
            generator=torch.Generator().manual_seed(seed),
            return_vectors=False,
        )
    ev = b.eigenvalues  # descending
    n = res.values.numel()
    kt = n if which == "largest" else (0 if which == "smallest" else min(k, n))
    true = torch.cat([ev[:kt], ev.flip(0)[: n - kt]])
    err = (res.values - true).abs()
    assert (err <= res.error_bounds).all(), (err, res.error_bounds, res.certificate)
    if res.converged:
        wanted = min(2 * k, b.size) if which == "both" else k
        assert n == wanted
        eps = torch.finfo(case.dtype).eps
        zero = true.abs() <= 100 * eps * b.norm
        allowed = torch.where(zero, cfg.tol * b.norm, cfg.tol * true.abs())
        assert (err <= allowed).all(), (err, allowed)


def _ends(case: SpectrumCase) -> list[str]:
    return (
        ["largest", "smallest", "both"] if {"indefinite", "rank"} & set(case.tags) else ["largest"]
    )


_DEFAULT = [
    pytest.param(case, which, k, seed, id=f"{case.id}-{which}-k{k}-s{seed}")
    for case in SPECTRA
    for which in _ends(case)
    for k in (1, 4)
    for seed in (0, 1)
]


@pytest.mark.parametrize(("case", "which", "k", "seed"), _DEFAULT)
def test_default_solver_is_right_or_says_so(case, which, k, seed):
    _check(case, k, which, LanczosConfig(tol=_tol(case), max_iters=120), seed)


_VARIANTS = [
    pytest.param(case, which, k, variant, id=f"{case.id}-{which}-k{k}-{variant}")
    for case in SPECTRA
    for which in _ends(case)[:1]
    for k in (1, 4)
    for variant in ("residual", "small_basis", "block2")
]


def _variant(variant: str, tol: float) -> LanczosConfig:
    """The solver variant: residual criterion, a 24-vector basis (thick restarts) or blocks of 2."""
    if variant == "residual":
        return LanczosConfig(tol=tol, max_iters=120, criterion="residual")
    if variant == "small_basis":
        return LanczosConfig(tol=tol, max_iters=120, max_basis=24)
    return LanczosConfig(tol=tol, max_iters=120, block_size=2)


@pytest.mark.parametrize(("case", "which", "k", "variant"), _VARIANTS)
def test_solver_variants_are_right_or_say_so(case, which, k, variant):
    _check(case, k, which, _variant(variant, _tol(case)), seed=2)


@pytest.mark.parametrize("case", [c for c in SPECTRA if "multiple" in c.tags], ids=lambda c: c.id)
def test_multiplicities_are_found(case):
    b = _build(case)
    mult = int((b.eigenvalues == b.eigenvalues[0]).sum())
    res = lanczos_top_eigenpairs(
        b.op, mult + 1, tol=1e-8, max_iters=400, generator=torch.Generator().manual_seed(0)
    )
    assert res.converged
    torch.testing.assert_close(
        res.values, b.eigenvalues[: mult + 1], rtol=1e-8, atol=0.0, check_dtype=False
    )


_FLOAT32 = [c for c in SPECTRA if c.dtype == torch.float32]


@pytest.mark.parametrize("case", _FLOAT32, ids=lambda c: c.id)
def test_float32_largest_bound_holds_over_many_starts(case):
    """k = 1 at the largest end certifies from the random segment alone (segment mode), where
    the bound is ``max(τ − η, floor)`` rather than their sum: the float32 round-off is then
    covered only by τ's pad and the floor. Ten start vectors per float32 case, tol at the
    float32 floor (1e-6) and below it (2e-7, where the run must say it did not converge)."""
    for tol in (1e-6, 2e-7):
        for seed in range(10):
            _check(case, 1, "largest", LanczosConfig(tol=tol, max_iters=150), seed=100 + seed)


_LOOSE = [
    pytest.param(case, which, k, tol, seed, id=f"{case.id}-{which}-k{k}-tol{tol:g}-s{seed}")
    for case in _FLOAT32
    for which in _ends(case)
    for k in (1, 4)
    for tol in (1e-3, 1e-4)
    for seed in (0, 1, 2)
]


@pytest.mark.parametrize(("case", "which", "k", "tol", "seed"), _LOOSE)
def test_float32_basis_default_at_loose_tol_is_right_or_says_so(case, which, k, tol, seed):
    """At tol >= 1e-4 a float32 operator runs on a float32 basis by default (no float64
    Gram–Schmidt); the bounds then carry the loss of orthogonality measured on the stored basis
    and must still cover the true errors on every hard float32 spectrum, at every end."""
    b = _build(case)
    op = as_operator(b.op)
    assert default_basis_dtype(op.dtype, op.device, tol) == torch.float32
    engine = KrylovEngine(op, k, which, LanczosConfig(tol=tol), v0=None, generator=None)
    assert engine.bdt == torch.float32
    _check(case, k, which, LanczosConfig(tol=tol, max_iters=120), seed=10 + seed)


_LOOSE_VARIANTS = [
    pytest.param(case, which, k, variant, id=f"{case.id}-{which}-k{k}-{variant}")
    for case in _FLOAT32
    for which in _ends(case)
    for k in (1, 4)
    for variant in ("residual", "small_basis", "block2")
]


@pytest.mark.parametrize(("case", "which", "k", "variant"), _LOOSE_VARIANTS)
def test_float32_basis_variants_at_loose_tol_are_right_or_say_so(case, which, k, variant):
    """The float32 basis through thick restarts (a 24-vector basis), locking, blocks and the
    residual criterion: the measured loss of orthogonality covers rotated and locked rows."""
    _check(case, k, which, _variant(variant, 1e-3), seed=7)
