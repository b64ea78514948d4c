"""Block products: vectorised backward passes equal single products on the whole registry."""

import warnings

import pytest
import torch

from cases import get_case
from dynstab.curvature import GaussNewtonOperator, HessianOperator, dense_gauss_newton
from dynstab.curvature.hessian import CPU_BLOCK_BYTES, CPU_MIN_BLOCK, MAX_BLOCK, block_size_for
from dynstab.errors import DynstabWarning
from dynstab.losses import half_mse
from helpers import assert_close, scale_atol


@pytest.mark.parametrize("cls", [HessianOperator, GaussNewtonOperator])
def test_blocks_equal_single_products_on_the_registry(case, cls, generator):
    """Blocks of 4 (with a remainder of 3), one block of 11, and single products agree."""
    V = None
    results = []
    for block_size in (4, 11, 1):
        op = cls(case.model, case.loss_fn, case.data, block_size=block_size)
        if V is None:
            V = torch.randn(op.shape[0], 11, generator=generator, dtype=torch.float64)
        results.append(op @ V)
        assert op.batched
        assert op.num_matvecs == 11
    for r in results[:2]:
        assert_close(r, results[2], rtol=1e-12, atol=scale_atol(results[2], 1e-13))


def test_default_block_size_vectorises_small_graphs_only():
    pr = get_case("mlp_tanh").build()
    op = HessianOperator(pr.model, half_mse, pr.data)
    assert op.block_size == MAX_BLOCK  # a few kB of graph: one vectorised pass per block
    cpu = torch.device("cpu")
    assert block_size_for(CPU_BLOCK_BYTES // (2 * CPU_MIN_BLOCK), cpu) == 2 * CPU_MIN_BLOCK
    assert block_size_for(CPU_BLOCK_BYTES // (CPU_MIN_BLOCK - 1), cpu) == 1  # too few columns
    assert block_size_for(1, cpu) == MAX_BLOCK


class _NoBatching(HessianOperator):
    """An operator whose vectorised path fails as it does for ops without batching rules."""

    def _apply(self, state, inputs, V, batched):
        if batched:
            raise RuntimeError("Batching rule not implemented for aten::fake_op")
        return super()._apply(state, inputs, V, batched)


def test_fallback_to_single_products_is_announced_once_and_exact(generator):
    pr = get_case("mlp_relu").build()
    ref = HessianOperator(pr.model, half_mse, pr.data, block_size=1)
    op = _NoBatching(pr.model, half_mse, pr.data, block_size=8)
    V = torch.randn(op.shape[0], 10, generator=generator, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = op @ V
        out2 = op @ V
    ours = [w for w in caught if issubclass(w.category, DynstabWarning)]
    assert len(ours) == 1
    assert "aten::fake_op" in str(ours[0].message)
    assert not op.batched
    assert op.batching_note == "Batching rule not implemented for aten::fake_op"
    assert_close(out, ref @ V, rtol=1e-12, atol=scale_atol(out, 1e-13))
    assert torch.equal(out, out2)


class _Square(torch.autograd.Function):
    """x², with a backward but no forward-mode rule (like many custom kernels)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_gauss_newton_without_forward_mode_uses_the_double_backward_jvp(generator):
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(3, 4).double()
    head = torch.nn.Linear(4, 2).double()
    model = torch.nn.Sequential(lin, torch.nn.Identity(), head)
    model[1].forward = lambda x: _Square.apply(x)  # type: ignore[method-assign]
    X = torch.randn(6, 3, dtype=torch.float64, generator=g)
    y = torch.randn(6, 2, dtype=torch.float64, generator=g)
    G = GaussNewtonOperator(model, half_mse, (X, y))
    V = torch.randn(G.shape[0], 5, generator=generator, dtype=torch.float64)
    with pytest.warns(DynstabWarning, match="forward-mode AD is not available"):
        GV = G @ V
    assert G.jvp_mode == "reverse"
    assert G.batched
    ref = dense_gauss_newton(model, half_mse, (X, y))
    assert_close(GV, ref @ V, rtol=1e-10, atol=scale_atol(ref @ V))
