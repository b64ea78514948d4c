import pytest
import torch

from cases import get_case
from dynstab.curvature import flatten_params, unflatten_like
from dynstab.curvature.functional import prepare_data, resolve_params


def test_flatten_unflatten_roundtrip_in_named_parameters_order():
    pr = get_case("mlp_tanh").build()
    P = dict(pr.model.named_parameters())
    vec = flatten_params(P)
    assert vec.shape == (pr.num_params,)
    back = unflatten_like(vec, P)
    assert list(back) == list(P)
    assert all(torch.equal(back[k], P[k]) for k in P)
    block = unflatten_like(torch.stack([vec, 2 * vec], dim=1), P)
    assert torch.equal(block["0.weight"][..., 1], 2 * P["0.weight"])


def test_unflatten_wrong_length():
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, k\)"):
        unflatten_like(torch.zeros(4), {"a": torch.zeros(3)})


def test_resolve_params_detaches_and_orders():
    pr = get_case("two_layer_relu").build()
    given = {"a": pr.model.a, "w": pr.model.w}  # any order in, model order out
    P = resolve_params(pr.model, given)
    assert list(P) == ["w", "a"]
    assert all(t.is_leaf and t.requires_grad for t in P.values())
    assert P["w"] is not pr.model.w


def test_resolve_params_rejects_mixed_dtypes():
    pr = get_case("two_layer_relu").build()
    with pytest.raises(ValueError, match="one floating dtype"):
        resolve_params(pr.model, {"w": pr.model.w.float(), "a": pr.model.a})


def test_prepare_data_streams_a_reiterable_and_refuses_one_shot_iterators():
    X, y = torch.zeros(3, 2), torch.zeros(3)
    ds = prepare_data([(X, y), (X[:1], y[:1])])
    assert ds.n == 4
    assert ds.weights() == [0.75, 0.25]
    assert len(list(ds)) == 2
    assert len(list(ds)) == 2
    with pytest.raises(TypeError, match="one-shot iterator"):
        prepare_data(iter([(X, y)]))
