"""Parameter selection: one resolver, the same meaning in every curvature routine."""

import dataclasses

import pytest
import torch
from torch import nn

from cases import get_case
from dynstab.curvature import (
    GaussNewtonOperator,
    HessianOperator,
    ParameterSelection,
    dense_gauss_newton,
    dense_hessian,
    gram_matrix,
    per_sample_jacobian,
    select_parameters,
)
from dynstab.curvature.functional import resolve_params
from dynstab.errors import DeviceError, ParameterSelectionError
from dynstab.losses import half_mse
from dynstab.measures import sharpness
from helpers import assert_close, scale_atol


def _cols(model: nn.Module, names: list[str]) -> torch.Tensor:
    """Flat indices of the named tensors among all parameters (independent of dynstab)."""
    idx, start = [], 0
    for name, t in model.named_parameters():
        if name in names:
            idx.extend(range(start, start + t.numel()))
        start += t.numel()
    return torch.tensor(idx)


def _block(H_all: torch.Tensor, model: nn.Module, names: list[str]) -> torch.Tensor:
    """Principal block of a full-parameter matrix for the given names."""
    i = _cols(model, names)
    return H_all[i][:, i]


def test_frozen_first_layer_regression():
    """Issue 12: with the first layer frozen, p = 7 (not 37) and λmax is the trainable block's.

    train() updates only requires_grad=True parameters; measuring all 37 overstated λmax.
    """
    pr = get_case("frozen_first_layer").build()
    model = pr.model
    assert sum(t.numel() for t in model.parameters()) == 37
    H_all = dense_hessian(model, half_mse, pr.data, params=model)  # explicitly every parameter
    assert H_all.shape == (37, 37)
    H_train = _block(H_all, model, ["2.weight", "2.bias"])
    lam_train = float(torch.linalg.eigvalsh(H_train)[-1])
    lam_all = float(torch.linalg.eigvalsh(H_all)[-1])
    assert lam_all > 1.05 * lam_train  # the defect changed the answer materially
    rep = sharpness(model, half_mse, pr.data, ("lambda_max", "trace"))
    assert rep.p == 7
    assert rep.parameters.names == ("2.weight", "2.bias")
    assert rep.parameters.count == 2
    assert rep.parameters.model_numel == 37
    assert_close(rep.lambda_max.value, lam_train, rtol=1e-10)
    assert_close(rep.trace.value, H_train.trace(), rtol=1e-10)
    lanczos = sharpness(model, half_mse, pr.data, "lambda_max", method="lanczos", tol=1e-10,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert_close(lanczos.lambda_max.value, lam_train, rtol=1e-8)
    everything = sharpness(model, half_mse, pr.data, "lambda_max", params=model)
    assert everything.p == 37
    assert_close(everything.lambda_max.value, lam_all, rtol=1e-10)
    assert "p=7 of 37 (2 tensors)" in rep.table().splitlines()[0]
    assert rep.to_dict()["parameters"]["names"] == ["2.weight", "2.bias"]


@pytest.mark.parametrize(
    "spec",
    [
        "module",
        "names",
        "name",
        "predicate",
        "dict",
    ],
)
def test_every_form_selects_the_same_block(spec):
    pr = get_case("mlp_tanh").build()  # Linear(3,8) Tanh Linear(8,8) Tanh Linear(8,1)
    model = pr.model
    names = ["2.weight", "2.bias"]
    params = {
        "module": model[2],
        "names": names,
        "name": None,
        "predicate": lambda name, t: name.startswith("2."),
        "dict": {k: v.detach().clone() for k, v in model.named_parameters() if k in names},
    }[spec]
    if spec == "name":
        params, names = "2.bias", ["2.bias"]
    H_all = dense_hessian(model, half_mse, pr.data, params=model)
    ref = _block(H_all, model, names)
    H = dense_hessian(model, half_mse, pr.data, params=params)
    assert_close(H, ref, rtol=1e-10, atol=scale_atol(ref))
    G_ref = _block(dense_gauss_newton(model, half_mse, pr.data, params=model), model, names)
    G = GaussNewtonOperator(model, half_mse, pr.data, params).to_dense()
    assert_close(G, G_ref, rtol=1e-10, atol=scale_atol(G_ref))
    J_all = per_sample_jacobian(model, pr.X, params=model)
    J = per_sample_jacobian(model, pr.X, params=params)
    assert_close(J, J_all[..., _cols(model, names)], rtol=1e-12)
    K = gram_matrix(model, pr.X, params)
    Jf = J.reshape(-1, J.shape[-1])
    assert_close(K, Jf @ Jf.T / pr.X.shape[0], rtol=1e-10, atol=scale_atol(K))


def test_dict_values_set_the_point_of_the_selected_names(generator):
    pr = get_case("mlp_tanh").build()
    model = pr.model
    moved = {"4.weight": model[4].weight.detach() + 0.3}
    H = dense_hessian(model, half_mse, pr.data, params=moved)
    with torch.no_grad():
        model[4].weight.add_(0.3)
    ref = dense_hessian(model, half_mse, pr.data, params=["4.weight"])
    assert_close(H, ref, rtol=1e-12, atol=1e-14)


def test_selection_object_flatten_unflatten_and_summary():
    pr = get_case("mlp_tanh").build()
    sel, values = select_parameters(pr.model, pr.model[4])
    assert isinstance(sel, ParameterSelection)
    assert sel.names == ("4.weight", "4.bias")
    assert sel.shapes == ((1, 8), (1,))
    assert sel.numel == 9
    assert sel.model_numel == pr.num_params == 113
    vec = sel.flatten(values)
    back = sel.unflatten(vec)
    assert torch.equal(back["4.weight"], pr.model[4].weight.detach())
    block = sel.unflatten(torch.stack([vec, 2 * vec], dim=1))
    assert block["4.bias"].shape == (1, 2)
    assert sel.summary() == "p=9 of 113 (2 tensors: 4.weight, 4.bias)"
    with pytest.raises(ValueError, match=r"\(9,\) or \(9, k\)"):
        sel.unflatten(torch.zeros(10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sel.names = ()


def test_resolve_params_default_is_trainable_for_criteria_callers():
    """criteria calls resolve_params(model, params) and gram_matrix(model, X, params) unchanged."""
    pr = get_case("frozen_first_layer").build()
    P = resolve_params(pr.model, None)
    assert list(P) == ["2.weight", "2.bias"]
    assert all(t.requires_grad and t.is_leaf for t in P.values())
    K = gram_matrix(pr.model, pr.X, None)
    J = per_sample_jacobian(pr.model, pr.X).reshape(20, 7)
    assert_close(K, J @ J.T / 20, rtol=1e-12, atol=scale_atol(K))
    full = resolve_params(pr.model, dict(pr.model.named_parameters()))
    assert len(full) == 4  # a dict names its parameters explicitly, frozen ones included


def test_operator_reports_its_selection():
    pr = get_case("frozen_first_layer").build()
    H = HessianOperator(pr.model, half_mse, pr.data)
    assert H.shape == (7, 7)
    assert H.selection.names == ("2.weight", "2.bias")


# -- bad selections ------------------------------------------------------------------------------


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).double()


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        (["0.weight", "nope"], ParameterSelectionError, r"unknown parameter names \['nope'\]"),
        ({"nope": torch.zeros(1)}, ParameterSelectionError, r"unexpected keys \['nope'\]"),
        ({"0.bias": torch.zeros(4, dtype=torch.float64)}, ParameterSelectionError,
         r"must have shape \(3,\)"),
        (lambda n, t: False, ParameterSelectionError, "matches no parameter"),
        ([], ParameterSelectionError, "matches no parameter"),
        (nn.Linear(2, 3), ParameterSelectionError, "submodule of the model"),
        (3, TypeError, "a predicate"),
        ([1, 2], TypeError, "parameter names"),
        ({"0.bias": [0.0, 0.0, 0.0]}, TypeError, "must be a Tensor"),
    ],
)  # fmt: skip
def test_bad_selections_are_explained(params, exc, match):
    with pytest.raises(exc, match=match):
        select_parameters(_model(), params)


def test_all_frozen_default_is_explained():
    model = _model().requires_grad_(False)
    with pytest.raises(ParameterSelectionError, match=r"requires_grad=False.*params=model"):
        select_parameters(model)
    assert select_parameters(model, model)[0].numel == 13


def test_meta_device_model_is_refused():
    with torch.device("meta"):
        model = nn.Linear(3, 1)
    with pytest.raises(DeviceError, match=r"meta device.*to_empty"):
        sharpness(model, half_mse, (torch.zeros(2, 3), torch.zeros(2, 1)))


def test_non_finite_parameter_is_refused():
    model = _model()
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"parameter '1.bias' must be finite; got 1 non-finite"):
        HessianOperator(model, half_mse, (torch.zeros(4, 2, dtype=torch.float64),
                                          torch.zeros(4, 1, dtype=torch.float64)))  # fmt: skip


def test_device_argument_must_match_the_parameters():
    model = _model()
    data = (torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))
    with pytest.raises(DeviceError, match=r"device='cuda:1' but the parameters are on cpu"):
        sharpness(model, half_mse, data, device="cuda:1")
    with pytest.raises(TypeError, match=r"device must be a torch.device"):
        sharpness(model, half_mse, data, device="gpu-please")
    rep = sharpness(model, half_mse, data, device="cpu")
    assert rep.p == 13
