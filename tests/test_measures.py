import dataclasses
import json
import math
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cases import INTERPOLATING_CASES, get_case
from dynstab.curvature import dense_gauss_newton, dense_hessian
from dynstab.losses import half_mse
from dynstab.measures import Measure, SharpnessReport, sharpness
from helpers import assert_close

ALL = ("lambda_max", "top_k", "trace", "frobenius", "lambda_min")


def spectrum(A: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(0.5 * (A + A.T)).flip(0)


def check_against(report: SharpnessReport, A: torch.Tensor, k: int, rtol: float) -> None:
    eig = spectrum(A)
    scale = float(eig.abs().max())
    assert_close(report.lambda_max.value, eig[0], rtol=rtol, atol=1e-10 * scale)
    assert_close(
        torch.tensor(report.top_k.value, dtype=torch.float64),
        eig[:k],
        rtol=rtol,
        atol=1e-10 * scale,
    )
    assert_close(report.trace.value, A.trace(), rtol=rtol, atol=1e-10 * scale)
    assert_close(report.frobenius.value, torch.linalg.norm(A), rtol=rtol)
    assert_close(report.lambda_min.value, eig[-1], rtol=rtol, atol=1e-10 * scale)


def test_exact_hessian_measures_match_dense(case):
    rep = sharpness(case.model, case.loss_fn, case.data, ALL, k=3, method="exact")
    assert rep.method == "exact-dense"
    assert rep.lambda_max.method == "exact-dense"
    check_against(rep, dense_hessian(case.model, case.loss_fn, case.data), 3, rtol=1e-8)
    assert rep.num_matvecs == rep.p == case.num_params
    assert rep.n == case.X.shape[0]
    assert rep.outputs == case.case.outputs


def test_lanczos_eigenvalues_match_dense(case, generator):
    tol = 1e-9
    rep = sharpness(case.model, case.loss_fn, case.data, ("lambda_max", "top_k", "lambda_min"),
                    k=2, method="lanczos", tol=tol, generator=generator)  # fmt: skip
    eig = spectrum(dense_hessian(case.model, case.loss_fn, case.data))
    scale = float(eig.abs().max())
    assert rep.lambda_max.method == "lanczos"
    assert rep.lambda_max.converged
    assert_close(rep.lambda_max.value, eig[0], rtol=10 * tol)
    assert_close(
        torch.tensor(rep.top_k.value, dtype=torch.float64),
        eig[:2],
        rtol=10 * tol,
        atol=10 * tol * scale,
    )
    assert_close(rep.lambda_min.value, eig[-1], rtol=10 * tol, atol=10 * tol * scale)
    assert rep.lambda_max.error_bound <= tol * abs(rep.lambda_max.value)
    assert rep.lambda_max.error_bound <= rep.lambda_max.residual
    assert len(rep.top_k.error_bound) == 2
    assert rep.num_matvecs == rep.top_k.num_matvecs + rep.lambda_min.num_matvecs


def test_lanczos_residual_criterion_passed_through(generator):
    pr = get_case("mlp_tanh").build()
    tol = 1e-9
    kw = {"method": "lanczos", "tol": tol, "lanczos_start": "random"}
    by_res = sharpness(pr.model, half_mse, pr.data, "lambda_max", criterion="residual",
                       generator=torch.Generator().manual_seed(4), **kw)  # fmt: skip
    by_eig = sharpness(pr.model, half_mse, pr.data, "lambda_max",
                       generator=torch.Generator().manual_seed(4), **kw)  # fmt: skip
    eig = spectrum(dense_hessian(pr.model, half_mse, pr.data))
    assert by_res.lambda_max.converged
    assert by_eig.lambda_max.converged
    assert by_res.lambda_max.residual <= tol * abs(by_res.lambda_max.value)
    # the certified eigenvalue bound needs about the residual the residual rule asks for, so
    # the eigenvalue criterion is no longer cheaper than the residual one (it was an
    # uncertified estimate before); it is never more expensive
    assert by_eig.lambda_max.num_matvecs <= by_res.lambda_max.num_matvecs
    for rep in (by_res, by_eig):
        assert_close(rep.lambda_max.value, eig[0], rtol=tol)


@pytest.mark.parametrize("lanczos_start", ["gradient", "random"])
def test_lanczos_starts_agree(lanczos_start, generator):
    pr = get_case("mlp_relu").build()
    rep = sharpness(pr.model, half_mse, pr.data, "lambda_max", method="lanczos", tol=1e-10,
                    generator=generator, lanczos_start=lanczos_start)  # fmt: skip
    eig = spectrum(dense_hessian(pr.model, half_mse, pr.data))
    assert_close(rep.lambda_max.value, eig[0], rtol=1e-9)


@pytest.mark.parametrize(
    ("trace_estimator", "budgets"), [("hutchinson", (50, 800)), ("hutchpp", (30, 240))]
)
def test_trace_and_frobenius_within_standard_errors(trace_estimator, budgets):
    pr = get_case("mlp_tanh").build()
    H = dense_hessian(pr.model, half_mse, pr.data)
    tr, fro = float(H.trace()), float(torch.linalg.norm(H))
    ses = []
    for m in budgets:
        rep = sharpness(pr.model, half_mse, pr.data, ("trace", "frobenius"), method="hutchinson",
                        trace_estimator=trace_estimator, num_probes=m,
                        generator=torch.Generator().manual_seed(m))  # fmt: skip
        assert rep.trace.method == rep.frobenius.method == trace_estimator
        assert rep.trace.converged
        assert rep.frobenius.converged
        assert rep.trace.num_matvecs == rep.frobenius.num_matvecs == m
        assert rep.num_matvecs == m  # one shared set of products
        assert rep.trace.stderr > 0
        assert abs(rep.trace.value - tr) <= 5 * rep.trace.stderr
        assert abs(rep.frobenius.value - fro) <= 5 * rep.frobenius.stderr
        ses.append((rep.trace.stderr, rep.frobenius.stderr))
    expected = math.sqrt(budgets[0] / budgets[1])  # 1/√(probe ratio)
    (tr0, fro0), (tr1, fro1) = ses
    if trace_estimator == "hutchinson":
        assert 0.4 * expected <= tr1 / tr0 <= 2 * expected
        assert 0.4 * expected <= fro1 / fro0 <= 2 * expected
    else:  # the deflated remainder shrinks too: at least the Monte Carlo rate
        assert tr1 / tr0 <= 2 * expected
        assert fro1 / fro0 <= 2 * expected


def test_hutchpp_beats_hutchinson_stderr_on_decaying_spectrum():
    """Deflating the top of the spectrum leaves a much smaller remainder to sample."""
    pr = get_case("mlp_tanh").build()
    kw = {"method": "hutchinson", "num_probes": 90}
    both = ("trace", "frobenius")
    hpp = sharpness(pr.model, half_mse, pr.data, both, trace_estimator="hutchpp",
                    generator=torch.Generator().manual_seed(1), **kw)  # fmt: skip
    hut = sharpness(pr.model, half_mse, pr.data, both,
                    generator=torch.Generator().manual_seed(1), **kw)  # fmt: skip
    assert hut.trace.method == "hutchinson"
    assert hpp.num_matvecs == hut.num_matvecs == 90
    assert hpp.trace.stderr < hut.trace.stderr
    assert hpp.frobenius.stderr < hut.frobenius.stderr


def test_gauss_newton_exact_gram_matches_dense(mse_case):
    rep = sharpness(mse_case.model, half_mse, mse_case.data, ALL, k=2, curvature="gauss_newton")
    assert rep.method == "exact-gram"
    assert rep.num_matvecs == 0
    G = dense_gauss_newton(mse_case.model, half_mse, mse_case.data)
    check_against(rep, G, 2, rtol=1e-8)
    nC = mse_case.X.shape[0] * mse_case.case.outputs
    if rep.p > nC:
        assert rep.lambda_min.value == 0.0  # G is singular when p > nC


def test_gauss_newton_lambda_min_positive_when_p_below_nc():
    pr = get_case("linear").build()  # p = 5 < n = 12: λ_min(XᵀX/n) > 0
    rep = sharpness(pr.model, half_mse, pr.data, "lambda_min", curvature="gauss_newton")
    expected = torch.linalg.eigvalsh(pr.X.T @ pr.X / 12)[0]
    assert rep.lambda_min.method == "exact-gram"
    assert_close(rep.lambda_min.value, expected, rtol=1e-10)


def test_gauss_newton_cross_entropy_uses_dense_route():
    pr = get_case("mlp_cross_entropy").build()
    rep = sharpness(pr.model, pr.loss_fn, pr.data, ALL, k=2, curvature="gauss_newton")
    assert rep.method == "exact-dense"
    check_against(rep, dense_gauss_newton(pr.model, pr.loss_fn, pr.data), 2, rtol=1e-8)


@pytest.mark.parametrize("c", INTERPOLATING_CASES, ids=[c.id for c in INTERPOLATING_CASES])
def test_interpolating_point_hessian_gn_gram_agree(c):
    pr = c.build()
    h = sharpness(pr.model, half_mse, pr.data, ALL, k=3, method="exact")
    g = sharpness(pr.model, half_mse, pr.data, ALL, k=3, curvature="gauss_newton")
    assert g.method == "exact-gram"
    for name in ("lambda_max", "trace", "frobenius"):
        assert_close(getattr(h, name).value, getattr(g, name).value, rtol=1e-8)
    assert_close(
        torch.tensor(h.top_k.value, dtype=torch.float64),
        torch.tensor(g.top_k.value, dtype=torch.float64),
        rtol=1e-8,
    )
    assert abs(h.lambda_min.value) <= 1e-10 * h.lambda_max.value  # H is PSD and singular
    assert h.loss_value <= 1e-25


def test_matrix_free_when_too_large_for_dense(generator):
    pr = get_case("mlp_tanh").build()
    rep = sharpness(pr.model, half_mse, pr.data, ("lambda_max", "trace"), max_dense=10,
                    num_probes=8, generator=generator)  # fmt: skip
    assert rep.method == "matrix-free"
    assert rep.lambda_max.method == "lanczos"
    assert rep.trace.method == "hutchinson"
    assert rep.num_matvecs == rep.lambda_max.num_matvecs + 8


def test_dataloader_matches_tensors(generator):
    pr = get_case("mlp_vector_output").build()
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=3)
    a = sharpness(pr.model, half_mse, pr.data, ALL, k=2)
    b = sharpness(pr.model, half_mse, loader, ALL, k=2)
    for name in ("lambda_max", "trace", "frobenius", "lambda_min"):
        assert_close(getattr(b, name).value, getattr(a, name).value, rtol=1e-10)
    assert b.loss_value == pytest.approx(a.loss_value, rel=1e-12)


def test_density_exact_and_slq_moments(generator):
    pr = get_case("mlp_relu").build()
    H = dense_hessian(pr.model, half_mse, pr.data)
    p = H.shape[0]
    exact = sharpness(pr.model, half_mse, pr.data, "density")
    assert exact.density.moment(1) == pytest.approx(float(H.trace()) / p, rel=1e-10)
    slq = sharpness(pr.model, half_mse, pr.data, "density", method="lanczos", density_probes=60,
                    density_iters=10, generator=generator)  # fmt: skip
    nodes, w = slq.density.nodes, slq.density.weights
    per_probe = (w * 60 * nodes).reshape(60, -1).sum(1)
    se = float(per_probe.std()) / math.sqrt(60)
    assert abs(slq.density.moment(1) - float(H.trace()) / p) <= 5 * se
    assert "density" in json.loads(json.dumps(slq.to_dict()))


def test_table_is_the_cli_rendering_and_str():
    from dynstab.cli.sharpness_cmd import format_table

    pr = get_case("mlp_tanh").build()
    g = torch.Generator().manual_seed(0)
    rep = sharpness(pr.model, half_mse, pr.data, ("lambda_max", "top_k", "trace"), k=2,
                    method="lanczos", num_probes=4, generator=g)  # fmt: skip
    text = rep.table()
    assert str(rep) == text
    assert text == format_table(rep)
    lines = text.splitlines()
    assert lines[0].startswith(f"curvature=hessian  loss=half_mse (L={rep.loss_value:.6g})")
    assert lines[1].split() == ["measure", "value", "method", "matvecs", "residual", "stderr",
                                "converged"]  # fmt: skip
    assert set(lines[2]) == {"-", " "}
    rows = {line.split()[0]: line for line in lines[3:]}
    assert list(rows) == ["lambda_max", "top_k", "trace"]
    assert rows["lambda_max"].split()[1] == f"{rep.lambda_max.value:.10g}"
    assert f"{max(rep.top_k.residual):.10g}" in rows["top_k"]
    assert rows["trace"].split()[2:6] == ["hutchinson", "4", "-", f"{rep.trace.stderr:.10g}"]
    # columns are aligned: every row starts its "method" cell at the same offset
    offsets = {line.index(m) for line, m in zip(lines[3:], ("lanczos", "lanczos", "hutchinson"))}
    assert len(offsets) == 1


def test_report_is_frozen_and_json_able():
    pr = get_case("linear").build()
    rep = sharpness(pr.model, half_mse, pr.data, ALL, k=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.lambda_max = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.trace.value = 0.0
    d = json.loads(json.dumps(rep.to_dict()))
    assert set(d["measures"]) == set(ALL)
    assert d["loss"] == "half_mse"
    assert d["p"] == 5
    assert d["n"] == 12
    assert isinstance(d["measures"]["top_k"]["value"], list)
    assert rep.frobenius is not None
    assert isinstance(rep.frobenius, Measure)
    only = sharpness(pr.model, half_mse, pr.data, "trace")
    assert only.lambda_max is None
    assert list(only.measures()) == ["trace"]


def test_mode_and_grad_left_exactly_as_found(generator):
    pr = get_case("mlp_tanh").build()
    model = pr.model
    model.train()
    model[2].eval()
    model[0].bias.grad = torch.full_like(model[0].bias, -1.0)
    modes = [m.training for m in model.modules()]
    for method in ("exact", "lanczos"):
        for curvature in ("hessian", "gauss_newton"):
            sharpness(model, half_mse, pr.data, ALL, method=method, curvature=curvature,
                      num_probes=4, generator=generator)  # fmt: skip
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].bias.grad, torch.full_like(model[0].bias, -1.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.bias")


# -- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"measures": ("lambda_max", "sharpness")}, "unknown measure 'sharpness'"),
        ({"measures": ()}, "at least one"),
        ({"curvature": "fisher"}, "unknown curvature"),
        ({"method": "arpack"}, "unknown method"),
        ({"method": "exact", "max_dense": 3}, "method='exact' needs p <= max_dense"),
        ({"measures": "top_k", "k": 200}, "k must be <="),
        ({"k": 0}, "k must be >= 1"),
        ({"num_probes": 0}, "num_probes"),
        ({"num_probes": 2, "trace_estimator": "hutchpp"}, "num_probes must be >= 3"),
        ({"trace_estimator": "xtrace"}, "trace_estimator"),
        ({"criterion": "ritz"}, "criterion"),
        ({"lanczos_start": "warm"}, "unknown lanczos_start"),
        ({"params": {"0.wieght": torch.zeros(8, 3)}}, r"unexpected keys \['0.wieght'\]"),
        ({"params": {"0.weight": torch.zeros(8, 3)}}, "values are torch.float32"),
        ({"params": ["0.weight", "9.bias"]}, r"unknown parameter names \['9.bias'\]"),
        ({"params": lambda name, t: False}, "matches no parameter"),
    ],
)
def test_bad_arguments(kwargs, match):
    pr = get_case("mlp_tanh").build()
    with pytest.raises(ValueError, match=match):
        sharpness(pr.model, half_mse, pr.data, **kwargs)


def test_bad_data_and_loss():
    pr = get_case("mlp_tanh").build()
    with pytest.raises(ValueError, match="data is empty"):
        sharpness(pr.model, half_mse, [])
    with pytest.raises(ValueError, match="same number of samples"):
        sharpness(pr.model, half_mse, (pr.X, pr.y[:4]))
    with pytest.raises(ValueError, match=r"model\(inputs\) failed"):
        sharpness(pr.model, half_mse, (pr.X[:, :2], pr.y))
    with pytest.raises(ValueError, match="matching per-sample sizes"):
        sharpness(pr.model, half_mse, (pr.X, torch.zeros(10, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="loss is not finite"):
        sharpness(pr.model, half_mse, (pr.X * float("inf"), pr.y))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        sharpness(pr.model, None, pr.data)


def test_dropout_refused_unless_allowed():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Linear(4, 1)).double()
    X, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Dropout\(p=0.2\) in train mode.*model.eval\(\)"):
        sharpness(model, half_mse, (X, y))
    sharpness(model, half_mse, (X, y), allow_stochastic=True)
    assert model.training


# -- acceptance: the 784-512-512-10 MLP ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_lambda_max_mlp_784_512_512_10_certified(act):
    """λ_max certified to relative 1e-6 (default tol) against a tight reference run.

    Product budget: the uncertified Ritz-gap rule of dynstab 0.1 stopped after <= 30 HVPs; a
    *certified* stop must also exclude a hidden eigenvalue above θ, which costs about
    ln(√p/δ)/(2√gap) more products (see dynstab.linalg.krylov): measured 27 (ReLU) and 55
    (Tanh, top gap ≈ 1%) HVPs. The bound below (60) is that measurement, not a target.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), act(), nn.Linear(512, 512), act(),
                          nn.Linear(512, 10)).double()  # fmt: skip
    X, y = torch.randn(1000, 784, dtype=torch.float64), torch.randn(1000, 10, dtype=torch.float64)
    t0 = time.perf_counter()
    rep = sharpness(
        model, half_mse, (X, y), "lambda_max", generator=torch.Generator().manual_seed(1)
    )
    elapsed = time.perf_counter() - t0
    ref = sharpness(model, half_mse, (X, y), "lambda_max", tol=1e-10, lanczos_start="random",
                    criterion="residual", generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert rep.method == "matrix-free"
    assert rep.lambda_max.converged
    assert rep.lambda_max.num_matvecs <= 60
    err = abs(rep.lambda_max.value - ref.lambda_max.value)
    assert err <= 1e-6 * ref.lambda_max.value
    assert err <= rep.lambda_max.error_bound + ref.lambda_max.error_bound
    print(
        f"HVPs={rep.lambda_max.num_matvecs} seconds={elapsed:.1f} lambda_max={rep.lambda_max.value}"
    )


def test_matrix_free_same_seed_same_report():
    pr = get_case("mlp_relu").build()

    def go():
        return sharpness(pr.model, half_mse, pr.data, ALL, k=2, method="lanczos", num_probes=6,
                         generator=torch.Generator().manual_seed(11)).to_dict()  # fmt: skip

    assert go() == go()


def test_float32_model_supported():
    pr = get_case("mlp_tanh").build()
    model = pr.model.float()
    rep = sharpness(model, half_mse, (pr.X.float(), pr.y.float()), "lambda_max", method="lanczos",
                    tol=1e-4, generator=torch.Generator().manual_seed(0))  # fmt: skip
    ref = spectrum(dense_hessian(pr.model.double(), half_mse, pr.data))[0]
    assert rep.dtype == "float32"
    assert_close(rep.lambda_max.value, ref, rtol=1e-4)


# -- parameter selections, eigenvectors, progress ------------------------------------------------


def test_per_layer_sharpness_with_a_module_and_a_predicate():
    pr = get_case("mlp_relu").build()  # Linear(4,10) ReLU Linear(10,10) ReLU Linear(10,1)
    model = pr.model
    H_all = dense_hessian(model, half_mse, pr.data, params=model)
    start = model[0].weight.numel() + model[0].bias.numel()
    size = model[2].weight.numel() + model[2].bias.numel()
    block = H_all[start : start + size, start : start + size]
    by_module = sharpness(model, half_mse, pr.data, ("lambda_max", "trace"), params=model[2])
    by_rule = sharpness(model, half_mse, pr.data, ("lambda_max", "trace"), method="lanczos",
                        params=lambda name, t: name.startswith("2."), tol=1e-10, num_probes=4,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert by_module.p == by_rule.p == size == 110
    assert by_module.parameters.names == ("2.weight", "2.bias")
    assert_close(by_module.lambda_max.value, spectrum(block)[0], rtol=1e-10)
    assert_close(by_module.trace.value, block.trace(), rtol=1e-10)
    assert_close(by_rule.lambda_max.value, spectrum(block)[0], rtol=1e-8)


def _check_eigenvectors(rep, A: torch.Tensor, k: int, tol: float) -> None:
    """Each returned column is a unit vector with A v = λ v to the method's accuracy."""
    V = rep.top_k.vectors.to(torch.float64)
    assert V.shape == (A.shape[0], k)
    vals = torch.tensor(rep.top_k.value, dtype=torch.float64)
    assert_close(torch.linalg.vector_norm(V, dim=0), torch.ones(k, dtype=torch.float64), rtol=1e-8)
    resid = torch.linalg.vector_norm(A @ V - V * vals, dim=0)
    assert float(resid.max()) <= tol * float(vals.abs().max())
    assert torch.equal(rep.lambda_max.vectors, rep.top_k.vectors[:, :1])
    shaped = rep.eigenvectors("top_k")
    assert len(shaped) == k
    for name, shape in zip(rep.parameters.names, rep.parameters.shapes):
        assert shaped[0][name].shape == shape
    flat = torch.cat([shaped[1][n].reshape(-1) for n in rep.parameters.names])
    assert torch.equal(flat, rep.top_k.vectors[:, 1])


@pytest.mark.parametrize(
    ("method", "curvature", "tol"),
    [("exact", "hessian", 1e-10), ("exact", "gauss_newton", 1e-9), ("lanczos", "hessian", 1e-4)],
)
def test_eigenvectors_exact_gram_and_lanczos(method, curvature, tol):
    pr = get_case("mlp_vector_output").build()  # p = 59 > nC = 24 for the Gram route
    ref = (dense_hessian if curvature == "hessian" else dense_gauss_newton)(
        pr.model, half_mse, pr.data
    )
    rep = sharpness(pr.model, half_mse, pr.data, ("lambda_max", "top_k"), k=3, method=method,
                    curvature=curvature, return_vectors=True, tol=1e-12,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    expected_family = {"hessian": "exact-dense", "gauss_newton": "exact-gram"}
    if method == "exact":
        assert rep.method == expected_family[curvature]
    else:
        assert rep.method == "matrix-free"
    _check_eigenvectors(rep, 0.5 * (ref + ref.T), 3, tol)
    assert "vectors" not in rep.to_dict()["measures"]["top_k"]
    json.dumps(rep.to_dict())


def test_gram_route_cannot_give_null_space_vectors_and_falls_back():
    pr = get_case("mlp_vector_output").build()  # p = 59 > nC = 24: λ_min(G) = 0
    rep = sharpness(pr.model, half_mse, pr.data, ("lambda_min",), curvature="gauss_newton",
                    return_vectors=True)  # fmt: skip
    assert rep.method == "exact-dense"
    G = dense_gauss_newton(pr.model, half_mse, pr.data)
    v = rep.lambda_min.vectors[:, 0]
    assert float(torch.linalg.vector_norm(G @ v)) <= 1e-10 * float(G.abs().max())
    no_vectors = sharpness(pr.model, half_mse, pr.data, ("lambda_min",), curvature="gauss_newton")
    assert no_vectors.method == "exact-gram"
    with pytest.raises(ValueError, match="return_vectors=True"):
        no_vectors.eigenvectors("lambda_min")


def test_callback_reports_every_phase_and_product():
    pr = get_case("mlp_tanh").build()
    loader = DataLoader(TensorDataset(pr.X, pr.y), batch_size=4)  # 3 batches
    records = []
    rep = sharpness(pr.model, half_mse, loader, ("lambda_max", "trace"), method="lanczos",
                    num_probes=40, generator=torch.Generator().manual_seed(0),
                    callback=records.append)  # fmt: skip
    phases = [r.phase for r in records]
    assert phases[:3] == ["scan"] * 3  # one record per batch of the validation pass
    lanczos = [r for r in records if r.phase == "lanczos"]
    assert lanczos[0].event == "start"
    assert lanczos[0].total == 100
    assert lanczos[-1].event == "end"
    assert lanczos[-1].detail["value"] == rep.lambda_max.value
    steps = [r for r in lanczos if r.event == "step"]
    assert len(steps) == rep.lambda_max.num_matvecs  # one record per Lanczos product
    assert [r.step for r in steps] == list(range(1, len(steps) + 1))
    hutch = [r for r in records if r.phase == "hutchinson"]
    assert hutch[0].event == "start"
    assert hutch[-1].step == 40
    assert hutch[-1].num_matvecs == rep.num_matvecs  # products of the whole call so far
    gram = []
    sharpness(pr.model, half_mse, loader, "lambda_max", curvature="gauss_newton",
              callback=gram.append)  # fmt: skip
    jac = [r for r in gram if r.phase == "jacobian" and r.event == "step"]
    assert [r.step for r in jac] == [1, 2, 3]
    dense = []
    sharpness(pr.model, half_mse, pr.data, "lambda_max", callback=dense.append)
    assert [r.step for r in dense if r.phase == "dense" and r.event == "step"] == [64, 113]


def test_progress_bar_goes_to_stderr(capsys):
    pr = get_case("mlp_tanh").build()
    sharpness(pr.model, half_mse, pr.data, "lambda_max", method="lanczos", progress=True,
              generator=torch.Generator().manual_seed(0))  # fmt: skip
    captured = capsys.readouterr()
    assert "dynstab lanczos" in captured.err
    assert captured.out == ""


class _CudaGenerator(torch.Generator):
    """Stands in for a CUDA generator on a CPU-only build (only ``.device`` is read)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")


@pytest.mark.parametrize(
    ("generator", "exc", "match"),
    [
        (0, TypeError, r"generator must be a torch.Generator or None; got 0 \(int\)"),
        (_CudaGenerator(), ValueError, "CPU torch.Generator"),
    ],
)
def test_generator_is_checked(generator, exc, match):
    pr = get_case("linear").build()
    with pytest.raises(exc, match=match):
        sharpness(pr.model, half_mse, pr.data, generator=generator)


def test_callback_must_be_callable():
    pr = get_case("linear").build()
    with pytest.raises(TypeError, match=r"callback must be callable as callback\(progress\)"):
        sharpness(pr.model, half_mse, pr.data, callback="print")


# -- configuration objects -----------------------------------------------------------------


def test_config_object_equals_keyword_shortcuts():
    from dynstab.linalg import LanczosConfig, TraceConfig
    from dynstab.measures import SharpnessConfig

    pr = get_case("mlp_tanh").build()
    cfg = SharpnessConfig(
        method="lanczos",
        lanczos=LanczosConfig(tol=1e-9, max_iters=150),
        trace=TraceConfig(num_matvecs=20),
    )
    a = sharpness(
        pr.model, half_mse, pr.data, config=cfg, generator=torch.Generator().manual_seed(0)
    )
    b = sharpness(pr.model, half_mse, pr.data, method="lanczos", tol=1e-9, max_iters=150,
                  num_probes=20, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert a.lambda_max == b.lambda_max
    assert a.trace == b.trace
    assert a.trace.num_matvecs == 20
    # a shortcut overrides the object's field
    c = sharpness(pr.model, half_mse, pr.data, "trace", config=cfg, num_probes=8,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert c.trace.num_matvecs == 8


def test_config_rejects_unknown_options_and_wrong_types():
    from dynstab.measures import SharpnessConfig

    pr = get_case("mlp_tanh").build()
    with pytest.raises(TypeError, match="unknown sharpness option"):
        sharpness(pr.model, half_mse, pr.data, num_probess=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="config must be a SharpnessConfig"):
        sharpness(pr.model, half_mse, pr.data, config={"method": "exact"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lanczos must be a LanczosConfig"):
        SharpnessConfig(lanczos={"tol": 1e-3})  # type: ignore[arg-type]


def test_xtrace_trace_against_dense():
    pr = get_case("mlp_tanh").build()
    H = dense_hessian(pr.model, half_mse, pr.data)
    rep = sharpness(pr.model, half_mse, pr.data, "trace", method="hutchinson",
                    trace_estimator="xtrace", num_probes=40,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert rep.trace.method == "xtrace"
    assert abs(rep.trace.value - float(H.trace())) <= 4 * rep.trace.stderr + 1e-9


def test_callback_receives_certified_lanczos_iterations():
    pr = get_case("mlp_tanh").build()
    events: list = []
    rep = sharpness(pr.model, half_mse, pr.data, "lambda_max", method="lanczos", tol=1e-8,
                    generator=torch.Generator().manual_seed(0), callback=events.append)  # fmt: skip
    its = [e for e in events if e.phase == "lanczos" and e.event == "iteration"]
    assert its, "the engine's per-step records are forwarded"
    assert its[-1].detail["value"] == pytest.approx(rep.lambda_max.value, rel=1e-8)
    assert its[-1].detail["error_bound"] <= 1e-8 * rep.lambda_max.value
    bounds = [e.detail["error_bound"] for e in its]
    assert math.isinf(bounds[0]) or bounds[0] >= bounds[-1]
