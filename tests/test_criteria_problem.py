"""StabilityProblem: every route equals the Kronecker reference; set-up once; memory; bad input."""

import json
import math
import pickle
from unittest.mock import patch

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from criteria_cases import J_REG, K_REG, random_jacobians, route_cases
from dynstab.criteria import (
    StabilityProblem,
    alignment_bound,
    alignment_factor,
    alignment_infimum,
    check_stability,
    critical_lr,
    eta_star,
    frobenius_bound,
    gd_bound,
    lyapunov_exponent,
    mm23_bound_15,
    mm23_bound_16,
    propagate_second_moment,
    rank_one_bound,
    second_moment_growth,
    stability,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria import problem as problem_module
from dynstab.criteria import spectral as spectral_module
from dynstab.criteria.gram import _per_sample_term
from dynstab.criteria.reference import (
    gram_from_jacobians,
    parameter_space_eta_star,
    parameter_space_operators,
    parameter_space_Q,
    parameter_space_wme18_lr,
)
from dynstab.criteria.routes import choose_route, route_costs
from dynstab.criteria.spectral import FACTOR_MIN_SIZE
from dynstab.curvature import per_sample_jacobian
from dynstab.curvature.functional import resolve_params
from dynstab.errors import MemoryBudgetError, NotInterpolatingWarning
from dynstab.losses import half_mse
from dynstab.sampling import Sampling

CASES = route_cases(seed=7)


def _problems(J):
    """The same instance along every exact route: K given, J → K, J → H."""
    C = J.shape[1]
    return {
        "gram(K)": StabilityProblem.from_gram(gram_from_jacobians(J), C),
        "gram(J)": StabilityProblem.from_jacobians(J, route="gram"),
        "parameter": StabilityProblem.from_jacobians(J, route="parameter"),
    }


def _samplings(n):
    out = [("with", B) for B in sorted({1, 2, n, n + 1})]
    out += [("without", B) for B in sorted({1, 2, n}) if n >= B]
    return out


@pytest.mark.parametrize(("label", "J"), CASES, ids=[c[0] for c in CASES])
def test_every_route_and_solver_equals_the_kronecker_reference(label, J):
    n = J.shape[0]
    probs = _problems(J)
    assert probs["gram(J)"].route == "gram"
    assert probs["parameter"].route == "parameter"
    checked = 0
    for scheme, B in _samplings(n):
        ref = parameter_space_eta_star(J, B, scheme)
        for name, prob in probs.items():
            s = prob.sampling(B, scheme)
            for method in ("dense", "matrix_free"):
                res = prob.eta_star(s, method=method)
                assert res.eta_star == pytest.approx(ref, rel=1e-9), (label, name, method, B)
                assert res.route == prob.route
                assert res.converged
                checked += 1
    assert checked >= 6 * len(_samplings(n))


@pytest.mark.parametrize(("label", "J"), CASES, ids=[c[0] for c in CASES])
def test_routes_agree_on_every_bound_and_invariant(label, J):
    n, C, _ = J.shape
    probs = list(_problems(J).values())
    base = probs[0]
    H = torch.einsum("icp,icq->pq", J, J) / n
    assert base.trace == pytest.approx(float(H.trace()), rel=1e-12)
    assert base.frobenius == pytest.approx(float(torch.linalg.norm(H)), rel=1e-12)
    lam_ref = float(torch.linalg.eigvalsh(H)[-1])
    r = torch.randn(n * C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for prob in probs:
        assert prob.lambda_max == pytest.approx(lam_ref, rel=1e-10)
        assert prob.rank == base.rank
        assert prob.alignment_infimum() == pytest.approx(
            base.alignment_infimum(), rel=1e-8, abs=1e-12
        )
        assert prob.alignment_factor(r) == pytest.approx(base.alignment_factor(r), rel=1e-9)
        for scheme, B in _samplings(n):
            s, s0 = prob.sampling(B, scheme), base.sampling(B, scheme)
            for bound in ("trace_bound", "frobenius_bound", "mm23_bound_15", "mm23_bound_16"):
                got, want = getattr(prob, bound)(s), getattr(base, bound)(s0)
                assert got == pytest.approx(want, rel=1e-9), (label, bound)
            wme = prob.wme18_sufficient_lr(s)
            assert wme == pytest.approx(parameter_space_wme18_lr(J, B, scheme), rel=1e-8)
            ab, ab0 = prob.alignment_bound(s), base.alignment_bound(s0)
            assert ab == pytest.approx(ab0, rel=1e-7) or (math.isinf(ab) and math.isinf(ab0))


# Q has the frozen eigenvalue 1 on null(H): compare ρ(Q) where H has full rank.
FULL_RANK = [
    c
    for c in CASES
    if int(torch.linalg.matrix_rank(parameter_space_operators(c[1], 1)[2])) == c[1].shape[2]
]


@pytest.mark.parametrize(("label", "J"), FULL_RANK, ids=[c[0] for c in FULL_RANK])
def test_growth_and_propagation_agree_with_the_kronecker_map(label, J):
    n, C, P = J.shape
    assert len(FULL_RANK) >= 5
    Jf = J.reshape(n * C, P)
    for prob in _problems(J).values():
        for scheme, B, lr in (("with", 1, 0.05), ("without", 2, 0.3)):
            Q = parameter_space_Q(J, lr, B, scheme)
            ref = float(torch.linalg.eigvals(Q).abs().max())
            s = prob.sampling(B, scheme)
            for method in ("dense", "matrix_free"):
                got = prob.second_moment_growth(s, lr, method=method)
                assert got == pytest.approx(ref, rel=1e-9)
            Sigma = torch.eye(P, dtype=torch.float64) / (n * prob.trace)
            expected = []
            for _ in range(4):
                expected.append(float((Jf @ Sigma @ Jf.T).trace()))
                Sigma = (Q @ Sigma.reshape(-1)).reshape(P, P)
            got_m = prob.propagate_second_moment(s, lr, steps=3)
            torch.testing.assert_close(got_m, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("C", [1, 2, 3])
def test_per_sample_term_equals_its_definition(C):
    g = torch.Generator().manual_seed(30 + C)
    J = random_jacobians(g, 7, 5, C)
    c = StabilityProblem.from_jacobians(J).coordinates
    X = torch.randn(c.rank, c.rank, generator=g, dtype=torch.float64)
    X = X + X.T
    Gr = c.Ghat.reshape(c.n, C, c.rank)
    ref = sum(Gr[i].T @ Gr[i] @ X @ Gr[i].T @ Gr[i] for i in range(c.n)) / c.n
    torch.testing.assert_close(_per_sample_term(c, X), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("C", [1, 2])
def test_large_low_rank_gram_uses_pivoted_cholesky_and_stays_exact(C):
    g = torch.Generator().manual_seed(40 + C)
    n = 2 * FACTOR_MIN_SIZE // C
    J = random_jacobians(g, n, 6, C)
    J[5] = J[2]  # a duplicated sample
    prob = StabilityProblem.from_gram(gram_from_jacobians(J), C)
    assert prob.spectral_method.startswith("pivoted Cholesky")
    small = StabilityProblem.from_jacobians(J, route="parameter")
    assert small.spectral_method == "eigh"
    assert prob.rank == small.rank == 6
    for scheme, B in (("with", 1), ("without", 7), ("with", 64)):
        ref = parameter_space_eta_star(J, B, scheme)
        for p in (prob, small):
            s = p.sampling(B, scheme)
            assert p.eta_star(s, method="dense").eta_star == pytest.approx(ref, rel=1e-9)
            assert p.eta_star(s, method="matrix_free").eta_star == pytest.approx(ref, rel=1e-9)
        for bound in ("mm23_bound_15", "mm23_bound_16", "wme18_sufficient_lr", "alignment_bound"):
            a = getattr(prob, bound)(prob.sampling(B, scheme))
            b = getattr(small, bound)(small.sampling(B, scheme))
            assert a == pytest.approx(b, rel=1e-8), bound


def test_full_rank_large_gram_uses_eigh():
    g = torch.Generator().manual_seed(3)
    n = FACTOR_MIN_SIZE + 10
    K = gram_from_jacobians(random_jacobians(g, n, n + 5))
    prob = StabilityProblem.from_gram(K)
    prob.certify()
    assert prob.spectral_method == "eigh"
    assert prob.rank == n


def _indefinite_large():
    """A symmetric K ≥ 256 rows with a positive diagonal but λ_min < 0 (not a Gram matrix)."""
    g = torch.Generator().manual_seed(4)
    N = FACTOR_MIN_SIZE + 44
    K = gram_from_jacobians(random_jacobians(g, N, 5)) + 0.01 * torch.eye(N, dtype=torch.float64)
    u = torch.ones(N, dtype=torch.float64) / math.sqrt(N)
    K = K - 1.0 * torch.outer(u, u)
    assert float(K.diagonal().min()) > 0
    assert float(torch.linalg.eigvalsh(K)[0]) < -0.5
    return K


@pytest.mark.parametrize("make", [lambda: -torch.eye(3, dtype=torch.float64), _indefinite_large])
def test_a_gram_matrix_that_is_not_psd_is_refused_by_every_function(make):
    K = make()
    N = K.shape[0]
    r = torch.ones(N, dtype=torch.float64)
    calls = {
        "gd_bound": lambda: gd_bound(K),
        "trace_bound": lambda: trace_bound(K, 1),
        "frobenius_bound": lambda: frobenius_bound(K, 1),
        "mm23_bound_15": lambda: mm23_bound_15(K, 1),
        "mm23_bound_16": lambda: mm23_bound_16(K, 1),
        "rank_one_bound": lambda: rank_one_bound(K, 1, num_iters=5),
        "wme18": lambda: wme18_sufficient_lr(K, 1),
        "alignment_bound": lambda: alignment_bound(K, 1),
        "alignment_infimum": lambda: alignment_infimum(K),
        "alignment_factor": lambda: alignment_factor(K, r),
        "eta_star": lambda: eta_star(K, 1),
        "critical_lr": lambda: critical_lr(K, batch_size=1),
        "check_stability": lambda: check_stability(K, lr=0.1, batch_size=1),
        "growth": lambda: second_moment_growth(K, 0.1, 1),
        "propagate": lambda: propagate_second_moment(K, 0.1, 1, steps=1),
        "lyapunov": lambda: lyapunov_exponent(K, 0.1, 1, num_steps=2, num_runs=2),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="positive semi-definite"):
            call()
        assert name  # every entry raised


def test_problem_validates_and_decomposes_once_for_a_whole_verdict(monkeypatch):
    counts = {"validate": 0, "eigh": 0}
    validate, eigh = problem_module.validate_gram, torch.linalg.eigh

    def counting_validate(*args, **kwargs):
        counts["validate"] += 1
        return validate(*args, **kwargs)

    def counting_eigh(*args, **kwargs):
        counts["eigh"] += 1
        return eigh(*args, **kwargs)

    monkeypatch.setattr(problem_module, "validate_gram", counting_validate)
    monkeypatch.setattr(torch.linalg, "eigh", counting_eigh)
    rep = check_stability(K_REG, torch.zeros(3), lr=0.5, batch_size=2, sampling="without")
    assert counts == {"validate": 1, "eigh": 1}
    assert rep.eta_star == pytest.approx(0.7775166986, abs=1e-10)


def test_one_problem_many_queries_equal_the_one_call_functions():
    prob = StabilityProblem.from_gram(K_REG)
    coords = prob.coordinates
    for scheme in ("with", "without"):
        for B in (1, 2, 3):
            s = prob.sampling(B, scheme)
            assert prob.coordinates is coords
            assert prob.eta_star(s).eta_star == eta_star(K_REG, B, scheme).eta_star
            assert prob.trace_bound(s) == trace_bound(K_REG, B, scheme)
            assert prob.mm23_bound_16(s) == mm23_bound_16(K_REG, B, scheme)
            assert prob.wme18_sufficient_lr(s) == wme18_sufficient_lr(K_REG, B, scheme)
    gd = prob.sampling(None)
    assert gd.is_full_batch
    assert prob.eta_star(gd).eta_star == pytest.approx(prob.gd_bound(), rel=1e-12)


def test_sampling_argument_is_checked():
    prob = StabilityProblem.from_gram(K_REG)
    with pytest.raises(TypeError, match=r"dynstab\.sampling\.Sampling; got int"):
        prob.eta_star(2)
    with pytest.raises(ValueError, match="n = 3; got Sampling\\(n=4"):
        prob.trace_bound(Sampling(4, 2, "with"))
    with pytest.raises(ValueError, match=r"i\.i\.d\. batches"):
        prob.eta_star(Sampling(3, 1, "reshuffle"))
    with pytest.raises(ValueError, match="unknown sampling 'reshuffle'"):
        prob.sampling(1, "reshuffle")
    with pytest.raises(TypeError, match="batch_size must be an int"):
        prob.sampling(True)


def _mlp(width, seed):
    torch.manual_seed(seed)  # nn.Linear init only
    return torch.nn.Sequential(
        torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)
    ).double()


@pytest.mark.parametrize(("n", "width", "route"), [(40, 2, "parameter"), (4, 6, "gram")])
def test_from_model_takes_the_cheaper_route_and_equals_the_reference(n, width, route):
    model = _mlp(width, seed=n)
    g = torch.Generator().manual_seed(n)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = model(X).detach()
    prob = StabilityProblem.from_model(model, (X, y), loss_fn=half_mse)
    assert prob.route == route
    assert "fewest flops" in prob.route_reason
    J = per_sample_jacobian(model, X)
    names = tuple(resolve_params(model, None))
    assert prob.param_names == names
    assert prob.num_params == J.shape[-1]
    other = StabilityProblem.from_model(
        model, (X, y), route="gram" if route == "parameter" else "parameter"
    )
    for scheme, B in (("with", 1), ("without", 3)):
        ref = parameter_space_eta_star(J, B, scheme)
        res = prob.eta_star(prob.sampling(B, scheme))
        assert res.eta_star == pytest.approx(ref, rel=1e-9)
        assert res.param_names == names
        assert res.num_params == J.shape[-1]
        assert other.eta_star(other.sampling(B, scheme)).eta_star == pytest.approx(ref, rel=1e-9)
    assert prob.train_loss == 0.0
    assert all(p.grad is None for p in model.parameters())


def test_critical_lr_and_stability_accept_a_dataloader():
    model = _mlp(3, seed=1).eval()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(18, 3, generator=g, dtype=torch.float64)
    y = model(X).detach()
    loader = DataLoader(TensorDataset(X, y), batch_size=5, shuffle=False)
    ref = critical_lr(model, (X, y), batch_size=2, sampling="without")
    got = critical_lr(model, loader, batch_size=2, sampling="without")
    assert got.eta_star == pytest.approx(ref.eta_star, rel=1e-12)
    assert got.param_names == tuple(resolve_params(model, None))
    listed = critical_lr(model, [(X[:7], y[:7]), (X[7:], y[7:])], batch_size=2, sampling="without")
    assert listed.eta_star == pytest.approx(ref.eta_star, rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    rep = stability(model, half_mse, loader, lr=0.05, batch_size=2, generator=gen)
    assert rep.n == 18
    assert rep.eta_star == pytest.approx(critical_lr(model, X, batch_size=2).eta_star, rel=1e-12)


def test_reports_name_the_parameters_and_route():
    model = _mlp(2, seed=3).eval()
    X = torch.randn(12, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = model(X).detach()
    rep = stability(model, half_mse, (X, y), lr=0.05, batch_size=2, rank_one=False)
    names = tuple(resolve_params(model, None))
    assert rep.param_names == names
    assert rep.num_params == sum(p.numel() for p in model.parameters())
    assert rep.eta_star_route == "parameter"
    text = rep.table()
    assert f"parameters measured: {rep.num_params} ({', '.join(names)})" in text
    assert "η* route: parameter (fewest flops" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["param_names"] == list(names)
    plain = check_stability(K_REG, lr=0.1, batch_size=1)
    assert plain.param_names is None
    assert "parameters measured" not in plain.table()


def _kronecker_eta_star_from_features(F, B, scheme):
    """η* of the linear model f(x) = Fθ with n ≫ 1: dense p²×p² Kronecker formula, vectorised."""
    n, P = F.shape
    p = Sampling(n, B, scheme).p
    H = F.T @ F / n
    M4 = torch.einsum("ia,ib,ic,id->abcd", F, F, F, F).reshape(P * P, P * P) / n
    eye = torch.eye(P, dtype=torch.float64)
    Cm = 0.5 * (torch.kron(H, eye) + torch.kron(eye, H))
    D = (1 - p) * torch.kron(H, H) + p * M4
    c, V = torch.linalg.eigh(Cm)
    S = V * c.rsqrt()
    return 2.0 / float(torch.linalg.eigvalsh(S.T @ D @ S)[-1])


def test_150k_samples_on_a_three_parameter_model_take_the_3x3_route():
    # Regression: the Gram route would need K of shape (150000, 150000), 180 GB in float64.
    model = torch.nn.Linear(2, 1).double().eval()
    X = torch.randn(150_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(X).detach()
    gen = torch.Generator().manual_seed(0)
    rep = stability(model, half_mse, (X, y), lr=0.1, batch_size=32, max_memory=1e9, generator=gen)
    assert rep.eta_star_route == "parameter"
    assert rep.n == 150_000
    F = torch.cat([X, torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)  # J_i = [x_i, 1]
    ref = _kronecker_eta_star_from_features(F, 32, "with")
    assert rep.eta_star == pytest.approx(ref, rel=1e-9)
    assert rep.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(F.T @ F / F.shape[0])[-1]))
    with pytest.raises(MemoryBudgetError) as info:
        critical_lr(model, (X, y), batch_size=32, route="gram", max_memory=1e9)
    err = info.value
    assert isinstance(err, MemoryError)
    assert isinstance(err, ValueError)
    msg = str(err)
    assert "(150000, 150000)" in msg
    assert "route='parameter' needs" in msg
    assert "method='sampled'" in msg
    assert "Nothing was allocated" in msg
    assert err.required_bytes > 180e9
    assert err.budget_bytes == 1_000_000_000
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == msg
    assert again.required_bytes == err.required_bytes


def test_solver_memory_budget_picks_matrix_free_or_refuses_dense():
    J = random_jacobians(torch.Generator().manual_seed(5), 60, 60)
    prob = StabilityProblem.from_jacobians(J, max_memory=70e6)
    s = prob.sampling(4)
    assert prob.rank == 60  # m = 1830: the dense matrices need ≈ 80 MB
    with pytest.raises(MemoryBudgetError, match="method='matrix_free' needs about"):
        prob.eta_star(s, method="dense")
    res = prob.eta_star(s)
    assert res.method == "matrix_free"
    roomy = StabilityProblem.from_jacobians(J, max_memory=math.inf)
    assert res.eta_star == pytest.approx(roomy.eta_star(roomy.sampling(4), method="dense").eta_star)


def test_memory_budget_argument_is_checked():
    with pytest.raises(TypeError, match="max_memory must be a number of bytes"):
        StabilityProblem.from_jacobians(J_REG, max_memory=True)
    with pytest.raises(ValueError, match="max_memory must be finite and > 0"):
        StabilityProblem.from_jacobians(J_REG, max_memory=-1)


def test_learning_rate_batch_size_and_generator_are_checked():
    for bad in (True, "0.1", None, torch.ones(2)):
        with pytest.raises(TypeError, match="lr must be a real number"):
            check_stability(K_REG, lr=bad, batch_size=1)
    for bad in (math.nan, -0.1, 0.0, math.inf):
        with pytest.raises(ValueError, match="lr must be finite and > 0"):
            second_moment_growth(K_REG, bad, 1)
    assert second_moment_growth(K_REG, np.float32(0.5), 1) == second_moment_growth(K_REG, 0.5, 1)
    for bad in (True, 2.0):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            eta_star(K_REG, bad)
    with pytest.raises(
        TypeError, match=r"generator must be a torch\.Generator or None; got 0 \(int\)"
    ):
        check_stability(K_REG, lr=0.1, batch_size=1, generator=0)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        rank_one_bound(K_REG, 1, generator=np.random.default_rng(0))
    model = _mlp(2, seed=4)
    X = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="lr must be a real number"):
        stability(model, half_mse, (X, model(X).detach()), lr=True, batch_size=1)


def test_residuals_as_numpy_arrays_are_accepted_and_other_types_refused():
    r = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    want = alignment_factor(K_REG, r)
    assert alignment_factor(K_REG, r.numpy()) == pytest.approx(want, rel=1e-15)
    assert alignment_factor(K_REG, r.numpy().astype(np.float32)) == pytest.approx(want, rel=1e-6)
    with pytest.warns(NotInterpolatingWarning):
        rep = check_stability(K_REG, r.numpy(), lr=0.1, batch_size=1, rank_one=False)
    assert rep.alignment == pytest.approx(want, rel=1e-15)
    with pytest.raises(TypeError, match=r"torch\.Tensor or a NumPy array; got list"):
        alignment_factor(K_REG, [0.1, -0.2, 0.05])
    with pytest.raises(ValueError, match="residuals must be finite"):
        alignment_factor(K_REG, np.array([0.1, np.nan, 0.0]))
    with pytest.raises(ValueError, match="residuals must have n\\*C = 3 entries"):
        alignment_factor(K_REG, np.ones(4))


def test_non_finite_inputs_never_flow_through():
    K_inf = K_REG.clone()
    K_inf[1, 1] = math.inf
    with pytest.raises(ValueError, match="K must have finite entries"):
        alignment_factor(K_inf, torch.ones(3))
    with pytest.raises(ValueError, match="R0 must be finite"):
        propagate_second_moment(K_REG, 0.1, 1, steps=2, R0=torch.full((3, 3), math.nan))
    with pytest.raises(ValueError, match="jacobians must be finite"):
        StabilityProblem.from_jacobians(torch.tensor([[1.0, math.nan]]))


@pytest.mark.parametrize("route", ["parameter", "gram"])
def test_non_finite_curvature_gives_a_clear_error(route):
    model = _mlp(2, seed=5)
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan  # every Jacobian entry becomes nan
    X = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"must be finite") as info:
        critical_lr(model, X, batch_size=1, route=route)
    assert not isinstance(info.value, torch.linalg.LinAlgError)
    y = torch.zeros(6, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="must be finite"):
        stability(model, half_mse, (X, y), lr=0.1, batch_size=1)


def test_jacobian_shapes_are_checked():
    with pytest.raises(ValueError, match=r"shape \(n, p\) \(scalar output\) or \(n, C, p\)"):
        StabilityProblem.from_jacobians(torch.ones(2, 2, 2, 2))
    with pytest.raises(TypeError, match=r"torch\.Tensor or a NumPy array"):
        StabilityProblem.from_jacobians([[1.0]])
    with pytest.raises(ValueError, match="needs the per-sample Jacobians"):
        choose_route(
            route_costs(3, 1, None, "gram"),
            "parameter",
            problem_module.memory_budget(None, torch.device("cpu")),
            "test",
        )


def test_route_costs_are_reported():
    prob = StabilityProblem.from_jacobians(random_jacobians(torch.Generator(), 50, 4))
    costs = {c.route: c for c in prob.route_costs}
    assert set(costs) == {"gram", "parameter"}
    assert costs["parameter"].flops < costs["gram"].flops
    assert costs["parameter"].bytes < costs["gram"].bytes
    assert prob.route == "parameter"
    assert "(50, 50)" in costs["gram"].what
    assert repr(prob) == "StabilityProblem(n=50, C=1, p=4, route='parameter', residuals=no)"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    N=st.integers(2, 40),
    rank=st.integers(0, 40),
    neg=st.floats(1e-4, 1.0),
)
def test_psd_certificate_property(seed, N, rank, neg):
    # Small FACTOR_MIN_SIZE so that the pivoted-Cholesky certificate runs on small matrices too.
    g = torch.Generator().manual_seed(seed)
    rank = min(rank, N)
    J = torch.randn(N, rank, generator=g, dtype=torch.float64) * torch.rand(rank, generator=g)
    K = J @ J.T / N
    with patch.object(spectral_module, "FACTOR_MIN_SIZE", 2):
        good = StabilityProblem.from_gram(K)
        good.certify()
        want = torch.linalg.eigvalsh(K).flip(0)
        scale = max(float(want[0]), 1e-300)
        got = good.coordinates.lam
        keep = want[want > 1e-10 * scale]
        assert got.numel() == keep.numel() or float(keep[got.numel() :].max()) <= 1e-6 * scale
        torch.testing.assert_close(got, keep[: got.numel()], rtol=0, atol=1e-9 * scale)
        v = torch.randn(N, generator=g, dtype=torch.float64)
        v = v / torch.linalg.norm(v)
        lam_max = max(scale, 1.0)
        bad = K - (neg * lam_max + scale) * torch.outer(v, v)
        if float(torch.linalg.eigvalsh(bad)[0]) < -1e-5 * float(torch.linalg.norm(bad, 2)):
            with pytest.raises(ValueError, match="positive semi-definite"):
                StabilityProblem.from_gram(bad).certify()


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.complex_numbers()))
def test_learning_rates_of_the_wrong_type_are_refused(value):
    with pytest.raises(TypeError, match="lr must be a real number"):
        second_moment_growth(K_REG, value, 1)


@settings(max_examples=60, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_learning_rates_are_accepted_iff_finite_and_positive(value):
    if math.isfinite(value) and value > 0:
        assert second_moment_growth(K_REG, value, 1, method="dense") >= 0.0
    else:
        with pytest.raises(ValueError, match="lr must be finite and > 0"):
            second_moment_growth(K_REG, value, 1)


def test_huge_learning_rates_give_inf_not_nan():
    growth = second_moment_growth(K_REG, 1e200, 1, method="dense")
    assert math.isinf(growth)
    assert second_moment_growth(K_REG, 1e100, 1, method="matrix_free") > 1e199
    m = propagate_second_moment(K_REG, 1e100, 1, steps=5)
    assert not bool(torch.isnan(m).any())
    assert math.isinf(float(m[-1]))


def test_from_model_streams_loaders_and_dict_batches_to_the_same_problem():
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model = model.double()
    X = torch.randn(12, 3, dtype=torch.float64, generator=g)
    y = model(X).detach()
    ref = StabilityProblem.from_model(model, (X, y))
    loader = DataLoader(TensorDataset(X, y), batch_size=5)
    dicts = [{"input": X[i : i + 4], "y": y[i : i + 4]} for i in range(0, 12, 4)]
    for data in (loader, dicts):
        prob = StabilityProblem.from_model(model, data)
        assert prob.n == 12
        s = Sampling(12, 2, "with")
        assert prob.eta_star(s).eta_star == pytest.approx(ref.eta_star(s).eta_star, rel=1e-10)
