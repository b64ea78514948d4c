"""Data: streamed re-iterables, batch layouts, hooks, integer targets, validation."""

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cases import get_case
from dynstab.curvature import (
    GaussNewtonOperator,
    HessianOperator,
    dense_gauss_newton,
    dense_hessian,
    gram_matrix,
    per_sample_jacobian,
)
from dynstab.errors import DataError
from dynstab.losses import cross_entropy, half_mse
from dynstab.measures import sharpness
from helpers import assert_close, scale_atol


class CountingBatches:
    """A re-iterable that makes fresh batch tensors on every pass and counts passes."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        self.X, self.y, self.batch = X, y, batch
        self.passes = 0
        self.alive: list[weakref.ref] = []

    def __iter__(self):
        self.passes += 1
        for i in range(0, self.X.shape[0], self.batch):
            xb = self.X[i : i + self.batch].clone()  # fresh storage, like a real loader
            self.alive.append(weakref.ref(xb))
            yield xb, self.y[i : i + self.batch].clone()


@pytest.mark.parametrize("cls", [HessianOperator, GaussNewtonOperator])
def test_batches_are_streamed_not_held(cls):
    pr = get_case("mlp_vector_output").build()
    source = CountingBatches(pr.X, pr.y, 3)
    op = cls(pr.model, half_mse, source, cache_graph=False)
    passes = source.passes
    V = torch.randn(op.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    AV = op @ V
    assert source.passes == passes + 1  # one pass per block product, whatever the block size
    gc.collect()
    assert all(ref() is None for ref in source.alive)  # no batch kept after the product
    dense = dense_hessian if cls is HessianOperator else dense_gauss_newton
    ref = dense(pr.model, half_mse, pr.data)
    assert_close(AV, ref @ V, rtol=1e-10, atol=scale_atol(ref @ V))


def test_gram_and_jacobian_from_a_loader_equal_the_tensor_versions():
    pr = get_case("mlp_vector_output").build()
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=3)
    K = gram_matrix(pr.model, loader)
    assert_close(K, gram_matrix(pr.model, pr.X), rtol=1e-12, atol=scale_atol(K))
    J = per_sample_jacobian(pr.model, loader)
    assert_close(J, per_sample_jacobian(pr.model, pr.X), rtol=1e-12, atol=1e-14)


def test_shuffling_loader_gives_the_full_batch_curvature_and_leaves_rng_alone():
    pr = get_case("mlp_tanh").build()
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=4, shuffle=True)
    state = torch.get_rng_state()
    H = HessianOperator(pr.model, half_mse, loader).to_dense()
    assert torch.equal(torch.get_rng_state(), state)
    ref = dense_hessian(pr.model, half_mse, pr.data)
    assert_close(H, ref, rtol=1e-10, atol=scale_atol(ref))
    assert_close(H, H.T, rtol=0, atol=scale_atol(ref, 1e-13))


def test_loader_that_changes_between_passes_is_refused():
    pr = get_case("linear").build()

    class Shrinking:
        def __init__(self) -> None:
            self.k = 12

        def __iter__(self):
            self.k -= 2
            yield pr.X[: self.k], pr.y[: self.k]

    op = HessianOperator(pr.model, half_mse, Shrinking(), cache_graph=False)
    with pytest.raises(DataError, match="data changed between passes: batch 0 has 8 samples"):
        op @ torch.ones(5, dtype=torch.float64)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a(x) + self.b(z))


def _two_input_problem():
    g = torch.Generator().manual_seed(3)
    model = TwoInputs().double()
    x = torch.randn(6, 3, dtype=torch.float64, generator=g)
    z = torch.randn(6, 2, dtype=torch.float64, generator=g)
    y = torch.randn(6, 2, dtype=torch.float64, generator=g)
    return model, x, z, y


def _reference_hessian(model, x, z, y):
    """Hessian through a one-input wrapper (the layout dynstab accepted before)."""

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, xz: torch.Tensor) -> torch.Tensor:
            return self.m(xz[:, :3], xz[:, 3:])

    return dense_hessian(Packed(), half_mse, (torch.cat([x, z], 1), y))


def test_tuple_batches_with_several_inputs_and_dict_batches():
    model, x, z, y = _two_input_problem()
    ref = _reference_hessian(model, x, z, y)
    H_tuple = dense_hessian(model, half_mse, (x, z, y))
    assert_close(H_tuple, ref, rtol=1e-12, atol=scale_atol(ref))
    loader = DataLoader(TensorDataset(x, z, y), batch_size=4)  # yields [x, z, y] lists
    assert_close(dense_hessian(model, half_mse, loader), ref, rtol=1e-10, atol=scale_atol(ref))
    dicts = [{"x": x[:4], "z": z[:4], "labels": y[:4]}, {"x": x[4:], "z": z[4:], "labels": y[4:]}]
    H_dict = dense_hessian(model, half_mse, dicts)  # model(**{"x": …, "z": …})
    assert_close(H_dict, ref, rtol=1e-10, atol=scale_atol(ref))
    K = gram_matrix(model, dicts)
    J = per_sample_jacobian(model, (x, z, y)).reshape(12, -1)
    assert_close(K, J @ J.T / 6, rtol=1e-10, atol=scale_atol(K))


def test_unpack_and_forward_hooks():
    model, x, z, y = _two_input_problem()
    ref = _reference_hessian(model, x, z, y)
    records = [{"inp": (x[:3], z[:3]), "out": y[:3]}, {"inp": (x[3:], z[3:]), "out": y[3:]}]

    def unpack(batch):
        return batch["inp"], batch["out"]

    H = dense_hessian(model, half_mse, records, unpack=unpack)
    assert_close(H, ref, rtol=1e-10, atol=scale_atol(ref))

    def forward(m, inputs):  # the model takes a concatenation in this hook's convention
        return m(inputs[:, :3], inputs[:, 3:])

    xz = torch.cat([x, z], 1)
    H_fwd = dense_hessian(model, half_mse, (xz, y), forward=forward)
    assert_close(H_fwd, ref, rtol=1e-12, atol=scale_atol(ref))
    G = GaussNewtonOperator(model, half_mse, (xz, y), forward=forward).to_dense()
    G_ref = dense_gauss_newton(model, half_mse, (x, z, y))
    assert_close(G, G_ref, rtol=1e-10, atol=scale_atol(G_ref))
    rep = sharpness(model, half_mse, records, "lambda_max", unpack=unpack)
    assert_close(rep.lambda_max.value, torch.linalg.eigvalsh(ref)[-1], rtol=1e-10)
    with pytest.raises(TypeError, match=r"unpack\(batch\) must return an \(inputs, targets\)"):
        dense_hessian(model, half_mse, records, unpack=lambda b: b["inp"][0])
    with pytest.raises(TypeError, match="forward must be callable"):
        dense_hessian(model, half_mse, (xz, y), forward="call")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_class_targets_of_any_dtype(dtype):
    """Issue 12: uint8 targets were read as probabilities (loss 5.81 instead of 1.01)."""
    pr = get_case("mlp_cross_entropy").build()
    labels = pr.y.to(dtype)
    with torch.no_grad():
        logp = torch.log_softmax(pr.model(pr.X), -1)
    expected = float(-logp[torch.arange(9), pr.y.long()].mean())
    with torch.no_grad():
        loss = float(cross_entropy(pr.model(pr.X), labels))
    assert loss == pytest.approx(expected, rel=1e-14)
    rep = sharpness(pr.model, cross_entropy, (pr.X, labels), ("lambda_max", "trace"))
    ref = sharpness(pr.model, cross_entropy, (pr.X, pr.y.long()), ("lambda_max", "trace"))
    assert rep.loss_value == pytest.approx(expected, rel=1e-12)
    assert rep.lambda_max.value == pytest.approx(ref.lambda_max.value, rel=1e-12)


def test_labels_are_range_checked():
    pr = get_case("mlp_cross_entropy").build()  # 4 classes
    bad = pr.y.clone()
    bad[2] = 4
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] .* C=4 .* \[0, 4\]"):
        sharpness(pr.model, cross_entropy, (pr.X, bad))
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        cross_entropy(torch.zeros(2, 4), torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match=r"dtype torch.bool"):
        cross_entropy(torch.zeros(2, 4), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="class probabilities"):
        cross_entropy(torch.zeros(2, 4), torch.zeros(2))


@pytest.mark.parametrize(
    ("data", "exc", "match"),
    [
        ((x for x in []), TypeError, "one-shot iterator"),
        (TensorDataset(torch.zeros(3, 5), torch.zeros(3, 1)), TypeError, "wrap it in"),
        ({"x": torch.zeros(3, 5)}, TypeError, "pair of tensors"),
        ([{"x": torch.zeros(3, 5), "y": torch.zeros(3, 1), "labels": torch.zeros(3)}], DataError,
         "exactly one of"),
        ("data.csv", TypeError, "data must be"),
        ((torch.zeros(3, 5, dtype=torch.float64), torch.full((3, 1), float("nan"))), DataError,
         r"targets must be finite .* got 3 non-finite"),
        ((torch.full((3, 5), float("inf")), torch.zeros(3, 1)), DataError,
         "inputs must be finite"),
    ],
)  # fmt: skip
def test_bad_data_is_explained(data, exc, match):
    model = nn.Linear(5, 1).double()
    with pytest.raises(exc, match=match):
        HessianOperator(model, half_mse, data)
