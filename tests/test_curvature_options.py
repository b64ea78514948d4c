"""The shared data options of the curvature one-call functions (DataOptions, JacobianOptions).

Every one-call function forwards its keywords to one CurvatureProblem: each option must take
effect exactly as the explicit keyword did, and an unknown keyword must be refused with a
TypeError that names the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from dynstab.curvature import (
    CurvatureProblem,
    DataOptions,
    GaussNewtonOperator,
    HessianOperator,
    JacobianOptions,
    dense_gauss_newton,
    dense_hessian,
    dense_jacobian,
    gram_matrix,
    per_sample_jacobian,
    preconditioned_sharpness,
)
from dynstab.losses import half_mse
from dynstab.measures import sharpness


def _data() -> tuple[nn.Module, Tensor, Tensor]:
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64))
    X = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    return model, X, torch.zeros(2, 1, dtype=torch.float64)


def _twice(m: nn.Module, x: object) -> Tensor:
    assert isinstance(x, Tensor)
    return 2.0 * m(x)


CALLS: dict[str, Callable[..., object]] = {
    "per_sample_jacobian": lambda m, X, y, **o: per_sample_jacobian(m, X, **o),
    "gram_matrix": lambda m, X, y, **o: gram_matrix(m, X, **o),
    "dense_jacobian": lambda m, X, y, **o: dense_jacobian(m, X, **o),
    "dense_gauss_newton": lambda m, X, y, **o: dense_gauss_newton(m, half_mse, (X, y), **o),
    "preconditioned_sharpness": lambda m, X, y, **o: preconditioned_sharpness(
        m, half_mse, (X, y), torch.optim.SGD(m.parameters(), lr=0.1), **o
    ),
    "CurvatureProblem": lambda m, X, y, **o: CurvatureProblem(m, half_mse, (X, y), **o),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_unknown_keyword_is_refused_with_the_valid_names(name: str) -> None:
    model, X, y = _data()
    with pytest.raises(TypeError, match=r"unknown .* option.*'devcie'.*'allow_stochastic'"):
        CALLS[name](model, X, y, devcie="cpu")


def test_dense_hessian_refuses_an_unknown_keyword() -> None:
    model, X, y = _data()
    with pytest.raises(TypeError, match="devcie"):
        dense_hessian(model, half_mse, (X, y), devcie="cpu")  # type: ignore[call-arg]


def test_forward_option_reaches_every_route() -> None:
    """forward = 2·model doubles J (so 4× K and G): hand-computed from J = X for a linear net."""
    model, X, y = _data()
    opts: DataOptions = {"forward": _twice}
    assert torch.equal(dense_jacobian(model, X, **opts), 2 * X)
    assert torch.equal(per_sample_jacobian(model, X, **opts)[:, 0, :], 2 * X)
    torch.testing.assert_close(gram_matrix(model, X, **opts), 4 * X @ X.T / 2)
    torch.testing.assert_close(dense_gauss_newton(model, half_mse, (X, y), **opts), 4 * X.T @ X / 2)
    torch.testing.assert_close(dense_hessian(model, half_mse, (X, y), **opts), 4 * X.T @ X / 2)
    r = preconditioned_sharpness(
        model,
        half_mse,
        (X, y),
        torch.optim.SGD(model.parameters(), lr=0.1),
        generator=torch.Generator().manual_seed(0),
        **opts,
    )
    lam = float(torch.linalg.eigvalsh(4 * X.T @ X / 2)[-1])
    assert abs(r.value - lam) <= r.error_bound + 1e-12 * lam


def test_jacobian_options_chunk_size_and_callback() -> None:
    model, X, _ = _data()
    seen: list[str] = []
    opts: JacobianOptions = {"chunk_size": 1, "callback": lambda p: seen.append(p.phase)}
    assert torch.equal(per_sample_jacobian(model, X, **opts)[:, 0, :], X)
    assert seen
    assert set(seen) == {"jacobian"}
    seen.clear()
    torch.testing.assert_close(gram_matrix(model, X, **opts), X @ X.T / 2)
    assert seen
    with pytest.raises(ValueError, match="chunk_size"):
        gram_matrix(model, X, chunk_size=0)


def test_allow_stochastic_and_device_options_are_honoured() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5), nn.Linear(2, 1)).double().train()
    _, X, y = _data()
    with pytest.raises(ValueError, match="allow_stochastic"):
        dense_gauss_newton(model, half_mse, (X, y))
    G = dense_gauss_newton(model, half_mse, (X, y), allow_stochastic=True, device="cpu")
    assert G.shape == (11, 11)
    assert torch.allclose(G, G.T)
    assert model.training  # left as found


def test_sharpness_takes_the_data_options_with_its_config_shortcuts() -> None:
    """sharpness(**options) splits DataOptions from the SharpnessOptions shortcuts."""
    model, X, y = _data()
    rep = sharpness(model, half_mse, (X, y), "lambda_max", forward=_twice, method="exact")
    lam = float(torch.linalg.eigvalsh(4 * X.T @ X / 2)[-1])
    assert rep.lambda_max is not None
    assert rep.lambda_max.value == pytest.approx(lam, rel=1e-12)
    with pytest.raises(TypeError, match=r"unknown sharpness option.*'devcie'.*'device'.*'tol'"):
        sharpness(model, half_mse, (X, y), devcie="cpu")  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [HessianOperator, GaussNewtonOperator])
def test_operators_take_the_data_options(cls: type[HessianOperator]) -> None:
    """The operators' constructors take the same DataOptions: forward = 2·model gives 4·XᵀX/n."""
    model, X, y = _data()
    op = cls(model, half_mse, (X, y), cache_graph=False, forward=_twice)
    torch.testing.assert_close(op.to_dense(), 4 * X.T @ X / 2)
    with pytest.raises(TypeError, match=rf"unknown {cls.__name__} option.*'devcie'"):
        cls(model, half_mse, (X, y), devcie="cpu")  # type: ignore[call-arg]
