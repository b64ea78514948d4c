"""Fast paths of the exact-criteria set-up: the finiteness check, lazily formed U, reused buffers.

Each fast path is checked against the plain computation it replaces, on the inputs where a
shortcut could go wrong (NaN beside ±inf, empty and integer tensors; repeated calls that reuse
work arrays; a rank-deficient Jacobian).
"""

from __future__ import annotations

import pytest
import torch

from criteria_cases import random_jacobians
from dynstab._checks import all_finite, check_finite
from dynstab.criteria import StabilityProblem, mm23_bound_15
from dynstab.criteria import gram as gram_module


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64]
)
def test_all_finite_equals_the_mask_on_every_kind_of_bad_entry(dtype):
    g = torch.Generator().manual_seed(0)
    for bad in (None, float("nan"), float("inf"), -float("inf")):
        for where in (0, 17, 299):
            A = torch.randn(20, 15, generator=g).to(dtype)
            if bad is not None:
                A.view(-1)[where] = bad
            assert all_finite(A) == bool(torch.isfinite(A).all()), (bad, where)
    both = torch.randn(30, generator=g).to(dtype)
    both[3], both[9] = float("inf"), float("nan")  # the NaN must win over the +inf extreme
    assert not all_finite(both)


def test_all_finite_on_empty_and_integer_tensors_and_the_error_message():
    assert all_finite(torch.empty(0, 3))
    assert all_finite(torch.arange(5))
    assert all_finite(torch.tensor([True, False]))
    J = torch.ones(4, 3, dtype=torch.float64)
    J[2, 1] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        check_finite("the Jacobian", J)
    with pytest.raises(ValueError, match="must be finite"):
        StabilityProblem.from_jacobians(J)


@pytest.mark.parametrize("shape", [(40, 6, 1), (12, 30, 2), (25, 25, 1)])
def test_parameter_route_forms_U_lazily_and_correctly(shape):
    n, P, C = shape
    g = torch.Generator().manual_seed(n + P)
    J = random_jacobians(g, n, P, C)
    J[1] = J[0]  # a duplicated sample: K is rank-deficient whenever P ≥ nC
    par = StabilityProblem.from_jacobians(J, route="parameter").coordinates
    assert par._U is None  # not formed until a criterion reads it
    U = par.U
    K = J.reshape(n * C, P) @ J.reshape(n * C, P).T / n
    rho = par.rank
    # U has orthonormal columns spanning K's range, and K U = U Λ (float64 round-off of ‖K‖)
    assert float((U.T @ U - torch.eye(rho, dtype=U.dtype)).abs().max()) <= 1e-10
    scale = float(par.lam[0])
    assert float((K @ U - U * par.lam).abs().max()) <= 1e-10 * scale
    assert par.U is U  # formed once
    gram = StabilityProblem.from_jacobians(J, route="gram").coordinates
    assert gram._U is gram.U  # the Gram route passes its eigenvectors
    # a criterion that reads U agrees across the routes
    a = mm23_bound_15(K, 2, outputs=C, coords=par)
    b = mm23_bound_15(K, 2, outputs=C, coords=gram)
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_per_sample_products_reuse_their_buffers_across_calls(blocks):
    g = torch.Generator().manual_seed(blocks)
    J = random_jacobians(g, 30, 9, 1)
    c = StabilityProblem.from_jacobians(J).coordinates
    products = gram_module._PerSampleProducts(c, blocks=blocks, chunk_rows=7)
    for _ in range(3):  # each call against a fresh object: no state leaks between calls
        X = torch.randn(c.rank, c.rank, generator=g, dtype=torch.float64)
        X = X + X.T
        fresh = gram_module._PerSampleProducts(c, blocks=blocks, chunk_rows=7)(X).clone()
        assert torch.equal(products(X), fresh)
        w = torch.rand(c.rank, generator=g, dtype=torch.float64)
        fresh_d = gram_module._PerSampleProducts(c, blocks=blocks, chunk_rows=7)(
            None, diagonal=w
        ).clone()
        assert torch.equal(products(None, diagonal=w), fresh_d)
