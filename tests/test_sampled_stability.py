"""The sampled (matrix-free) SGD stability route against the exact Gram route.

Coverage of the η* confidence intervals is tested as a binomial count: if the intervals have
their nominal 95% coverage, the number of problems (out of N) whose interval contains the exact
η* is Binomial(N, 0.95), and fewer than ``binom.ppf(1e-3, N, 0.95)`` hits happen with probability
below 0.1%; every problem, seed and generator is fixed, so the test is deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy.stats import binom

import dynstab
from dynstab.criteria import (
    SampledConfig,
    SampledEtaStar,
    SampledStability,
    SampledStabilityReport,
    StabilityReport,
    critical_lr,
    stability,
)
from dynstab.criteria.momentum import momentum_solve_flops
from dynstab.criteria.sampled import REFERENCE_FLOP_RATE, _TensorPeak, route_time
from dynstab.curvature import (
    BatchCurvature,
    CurvatureProblem,
    IndexedData,
    dense_gauss_newton,
    dense_hessian,
)
from dynstab.errors import DataError, MemoryBudgetError
from dynstab.losses import half_mse
from dynstab.measures import SharpnessConfig

#: Nominal level of the intervals.
LEVEL = 0.95
#: False-alarm probability of the coverage tests.
ALPHA = 1e-3


def _problem(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, int, str]:
    """A small interpolating problem (H = G exactly): a linear model or a tanh MLP."""
    g = torch.Generator().manual_seed(1000 + seed)
    n = int(torch.randint(8, 25, (1,), generator=g))
    d = int(torch.randint(2, 5, (1,), generator=g))
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = X * (0.3 + 2 * torch.rand(n, 1, generator=g, dtype=torch.float64))  # uneven norms
    torch.manual_seed(seed)  # the model's default init (the test's RNG, not the library's)
    if seed % 2 == 0:
        model: torch.nn.Module = torch.nn.Linear(d, 1, bias=False).double()
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(d, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)
        ).double()
    y = model(X).detach()
    B = (1, 2, 4)[seed % 3]
    scheme = ("with", "without")[(seed // 3) % 2]
    return model, X, y, B, scheme


def _coverage(num: int) -> tuple[int, list[float], int]:
    hits, widths, staged = 0, [], 0
    for seed in range(num):
        model, X, y, B, scheme = _problem(seed)
        exact = critical_lr(model, (X, y), batch_size=B, sampling=scheme, method="exact")
        s = SampledStability(
            model,
            half_mse,
            (X, y),
            batch_size=B,
            sampling=scheme,
            generator=torch.Generator().manual_seed(seed),
        )
        est = s.eta_star()
        assert est.bracketed
        lo, hi = est.ci
        assert lo <= est.eta_star <= hi
        hits += lo <= exact.eta_star <= hi
        widths.append(0.5 * (hi - lo) / exact.eta_star)
        staged += est.replicas > SampledConfig().replicas  # a second stage ran
    return hits, widths, staged


def _check_coverage(num: int) -> None:
    hits, widths, staged = _coverage(num)
    # the two-stage rule is exercised: tiny problems need more than the first stage's replicas
    assert staged >= 1
    least = int(binom.ppf(ALPHA, num, LEVEL))
    assert hits >= least, f"{hits}/{num} intervals cover η*; nominal 95% needs >= {least}"
    assert all(w > 0 for w in widths)  # an interval of zero width would be a false certainty


def test_eta_star_intervals_cover_the_exact_eta_star_fast() -> None:
    _check_coverage(5)


def test_default_budget_interval_within_ten_percent_at_n_200() -> None:
    # the target: a 95% interval no wider than ±10% of η* on small problems (n ≈ 200)
    g = torch.Generator().manual_seed(5)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model = model.double()
    y = model(X).detach()
    exact = critical_lr(model, (X, y), batch_size=4, method="exact").eta_star
    est = critical_lr(
        model, (X, y), batch_size=4, method="sampled", generator=torch.Generator().manual_seed(0)
    )
    assert 0.5 * (est.ci[1] - est.ci[0]) <= 0.10 * exact
    assert est.ci[0] <= exact <= est.ci[1]


def test_two_stage_budget_adds_replicas_and_keeps_the_first_stage_spread() -> None:
    # Stein's two-stage rule: the first stage (R₀ = 4) decides R from its own interval; the
    # final standard error is s₀/√R with s₀ the spread of the first stage's replicas
    model, X, y, B, scheme = _problem(1)
    exact = critical_lr(model, (X, y), batch_size=B, sampling=scheme, method="exact").eta_star

    def run(**kw: object) -> SampledStability:
        cfg = SampledConfig(bias_correction="none", **kw)  # type: ignore[arg-type]
        return SampledStability(model, half_mse, (X, y), batch_size=B, sampling=scheme,
                                config=cfg, generator=torch.Generator().manual_seed(4))  # fmt: skip

    one, two = run(target_width=None), run(target_width=0.02, max_replicas=12)
    e1, e2 = one.eta_star(), two.eta_star()
    assert e1.replicas == one.replicas == 4
    assert e2.replicas == two.replicas == 12  # ±2% needs more than the cap allows
    assert 0.5 * (e2.ci[1] - e2.ci[0]) < 0.5 * (e1.ci[1] - e1.ci[0])
    assert e2.ci[0] <= exact <= e2.ci[1]
    g = two.growth(0.5 * exact)
    theta = torch.tensor(g.replicas, dtype=torch.float64)
    assert theta.numel() == 12
    assert g.log_growth == pytest.approx(float(theta.mean()), rel=1e-12)
    s0 = float(theta[:4].std(correction=1))
    assert g.stderr == pytest.approx(s0 / math.sqrt(12), rel=1e-12)
    # the first stage's replicas are the same random numbers in both runs
    g1 = one.growth(0.5 * exact)
    assert g.replicas[:4] == g1.replicas
    # the cap was reached short of ±2%: the report says the budget is spent
    assert any("budget is spent" in note for note in two.report(0.5 * exact).notes)
    assert not any("budget is spent" in note for note in one.report(0.5 * exact).notes)
    # a first stage that meets the target stops there
    wide = run(target_width=10.0)
    assert wide.eta_star().replicas == 4
    with pytest.raises(ValueError, match="max_replicas"):
        SampledConfig(replicas=8, max_replicas=4)
    with pytest.raises(ValueError, match="target_width"):
        SampledConfig(target_width=0.0)


@pytest.mark.slow
def test_eta_star_intervals_cover_the_exact_eta_star_at_the_nominal_rate() -> None:
    _check_coverage(50)


def test_sampled_momentum_eta_star_covers_the_exact_momentum_threshold() -> None:
    hits, num = 0, 2
    for seed in range(num):
        model, X, y, B, scheme = _problem(2 * seed)  # linear models
        for nesterov in (False, True):
            exact = critical_lr(
                model, (X, y), batch_size=B, sampling=scheme, momentum=0.5, nesterov=nesterov
            )
            est = critical_lr(
                model,
                (X, y),
                batch_size=B,
                sampling=scheme,
                momentum=0.5,
                nesterov=nesterov,
                method="sampled",
                generator=torch.Generator().manual_seed(seed),
            )
            assert est.momentum == 0.5
            assert est.route_reason == "method='sampled' requested"
            hits += est.ci[0] <= exact.eta_star <= est.ci[1]
    assert hits >= int(binom.ppf(ALPHA, 2 * num, LEVEL))


def _linear(n: int = 16, d: int = 3, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = torch.nn.Linear(d, 1, bias=False).double()
    return model, (X, model(X).detach())


def test_report_fields_verdicts_and_scalable_bounds() -> None:
    model, data = _linear()
    X = data[0]
    n = X.shape[0]
    K = X @ X.T / n
    exact = critical_lr(K, batch_size=2)
    s = SampledStability(
        model, half_mse, data, batch_size=2, generator=torch.Generator().manual_seed(0)
    )
    low, high = s.report(0.5 * exact.eta_star), s.report(1.6 * exact.eta_star)
    assert low.verdict == "stable"
    assert low.stable is True
    assert low.growth_ci[1] < 1.0
    assert high.verdict == "unstable"
    assert high.growth_ci[0] > 1.0
    # the growth above η* estimates ρ(Q) itself: compare with the exact value through its CI
    rho = dynstab.criteria.StabilityProblem.from_gram(K)
    exact_growth = rho.second_moment_growth(rho.sampling(2), 1.6 * exact.eta_star)
    g = high.growth_estimate
    assert abs(g.log_growth - math.log(exact_growth)) <= 5 * g.stderr
    for rep in (low, high):
        assert rep.eta_star_ci[0] <= rep.eta_star <= rep.eta_star_ci[1]
        assert rep.num_products > 0
        assert rep.wall_time > 0
        assert rep.route == "sampled"
        assert rep.verdict in ("stable", "unstable", "undecided at this budget")
    lam, tr = float(torch.linalg.eigvalsh(K)[-1]), float(K.trace())
    fro = float(torch.linalg.norm(K))
    rows = {r.name: r for r in low.rows}
    assert set(rows) == {"gd", "trace", "frobenius", "sgd_sampled"}
    # certified λ_max: Ritz value ≤ λ_max ≤ Ritz value + error bound
    lm = low.sharpness.lambda_max  # type: ignore[union-attr]
    assert lm.value <= lam * (1 + 1e-12)
    assert lam <= lm.value + lm.error_bound + 1e-12
    assert low.eta_gd == pytest.approx(2.0 / lm.value)
    # Hutchinson Tr H and ‖H‖_F with standard errors (a 5σ band)
    assert rows["trace"].stderr is not None
    assert abs(rows["trace"].value - tr) <= 5 * rows["trace"].stderr
    assert abs(rows["frobenius"].value - fro) <= 5 * rows["frobenius"].stderr  # type: ignore[operator]
    q = s.sampling.q
    assert rows["trace"].eta_threshold == pytest.approx(2.0 / (q * rows["trace"].value))
    assert rows["frobenius"].eta_threshold == pytest.approx(
        2.0 / (math.sqrt(q) * rows["frobenius"].value)
    )
    # both bounds are necessary: η* ≤ each threshold (checked on the exact values here)
    assert exact.eta_star <= 2.0 / (q * tr) * (1 + 1e-12)
    text = low.table()
    assert "sampled η*" in text
    assert "Tr H ≤ 2C/(qη)" in text
    d = low.to_dict()
    assert d["verdict"] == "stable"


def test_gd_growth_is_exact() -> None:
    X = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    model = torch.nn.Linear(1, 1, bias=False).double()
    s = SampledStability(
        model, half_mse, (X, model(X).detach()), batch_size=None,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for eta in (0.3, 0.6, 0.9):
        assert s.growth(eta).growth == pytest.approx((1 - 2.5 * eta) ** 2, rel=1e-12)


def test_auto_routing_takes_exact_when_it_fits_and_sampled_otherwise() -> None:
    model, data = _linear()
    rep = stability(model, half_mse, data, lr=0.1, batch_size=2, rank_one=False)
    assert isinstance(rep, StabilityReport)
    assert "an exact route fits the memory budget" in rep.route_reason
    sampled = stability(
        model, half_mse, data, lr=0.1, batch_size=2, method="sampled",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert isinstance(sampled, SampledStabilityReport)
    assert sampled.route_reason == "method='sampled' requested"
    # both routes are over a 1 MB budget for n = 3000 samples and p = 1000 parameters
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3000, 1000, generator=g, dtype=torch.float64)
    big = torch.nn.Linear(1000, 1, bias=False).double()
    y = big(X).detach()
    tiny = SampledConfig(
        replicas=2, particles=4, pilot_steps=3, burn_in=1, steps=2, max_rounds=0,
        bounds=SharpnessConfig(method="lanczos").with_options(max_iters=3, num_probes=2),
    )  # fmt: skip
    with pytest.raises(MemoryBudgetError):
        stability(big, half_mse, (X, y), lr=0.1, batch_size=2, method="exact", max_memory=1e6)
    with pytest.raises(MemoryBudgetError):  # an explicitly requested exact route is kept
        stability(big, half_mse, (X, y), lr=0.1, batch_size=2, route="gram", max_memory=1e6)
    with pytest.warns(dynstab.ConvergenceWarning):
        rep2 = stability(
            big, half_mse, (X, y), lr=0.1, batch_size=2, max_memory=1e6, config=tiny,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    assert isinstance(rep2, SampledStabilityReport)
    assert rep2.route_reason.startswith("method='auto': no exact route fits the memory budget")
    assert "route: sampled (method='auto'" in rep2.table()
    with pytest.warns(dynstab.ConvergenceWarning):
        est = critical_lr(
            big, (X, y), batch_size=2, max_memory=1e6, config=tiny,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    assert est.route_reason.startswith("method='auto': no exact route fits")


def test_sampled_budget_products_by_hand() -> None:
    # pilot R·m·pilot_steps, then per η R·1.5m·(burn_in + steps); momentum stretches pilot and
    # burn-in by 1/√(1 − β) = 2 at β = 0.75
    assert SampledConfig().products() == 4 * 32 * 150 + 12 * 4 * 48 * (40 + 20)
    assert SampledConfig().products(0.75) == 4 * 32 * 300 + 12 * 4 * 48 * (80 + 20)
    cfg = SampledConfig(replicas=4, particles=16, bias_correction="none")
    assert cfg.products(evaluations=3) == 4 * 16 * 150 + 3 * 4 * 16 * 60


def test_momentum_cost_model_by_hand() -> None:
    # rank 10: N = 55 ≤ 200, dense: N products of 4nCρ² flops to build Cov, then 40 eigvals
    assert momentum_solve_flops(10, 200) == 55 * 4 * 200 * 100 + 40 * 10.0 * 55**3
    # rank 30: N = 465 > 200, ARPACK: 40 evaluations × 100 products of 4nCρ² + 20N flops
    assert momentum_solve_flops(30, 200) == 40 * 100 * (4 * 200 * 900 + 20 * 465)
    # the growth factor adds 20 evaluations of the same reduced criterion (and Cov once more)
    extra = 55 * 4 * 200 * 100 + 20 * 10.0 * 55**3
    assert momentum_solve_flops(10, 200, growth=True) == momentum_solve_flops(10, 200) + extra
    # rank 30 (ARPACK): 20 evaluations of 100 products each
    arpack = 20 * 100 * (4 * 200 * 900 + 20 * 465)
    assert momentum_solve_flops(30, 200, growth=True) == momentum_solve_flops(30, 200) + arpack
    assert momentum_solve_flops(0, 200) == 0.0
    # C outputs multiply the per-product cost
    assert momentum_solve_flops(30, 100, 2) == momentum_solve_flops(30, 200)


@pytest.mark.parametrize(
    ("rank", "n", "p", "B", "growth", "sampled"),
    [
        (10, 200, 200, 4, True, False),  # exact: milliseconds
        (60, 200, 193, 4, False, False),  # exact ≈ 3 s: within the 60 s budget
        # the n = 200 MLP: ≈ 45 s with the growth factor on the reduced space (ARPACK on the
        # ρ(2ρ + 1)-dimensional map took over 8 minutes and was routed to the sampled route)
        (193, 200, 193, 4, True, False),
        (300, 200, 193, 4, True, True),  # ≈ 110 s: over the 60 s budget
        (400, 2000, 5000, 4, False, True),  # exact ≈ 20 min, sampled ≈ 40 s
        (400, 2000, 10**7, 64, False, False),  # over budget, but the sampled route is slower
    ],
)
def test_auto_route_time_decision_on_sizes(
    rank: int, n: int, p: int, B: int, growth: bool, sampled: bool
) -> None:
    t = route_time(rank=rank, n=n, outputs=1, num_params=p, batch_size=B, momentum=0.9,
                   growth=growth)  # fmt: skip
    assert t.sampled is sampled
    assert t.exact_seconds == momentum_solve_flops(rank, n, growth=growth) / REFERENCE_FLOP_RATE
    assert ("over the time budget of 60 s" in t.reason) is sampled
    never = route_time(rank=rank, n=n, outputs=1, num_params=p, batch_size=B, momentum=0.9,
                       growth=growth, max_time=math.inf)  # fmt: skip
    assert not never.sampled
    # the exact estimate grows with the rank, the sampled one with p and B (not the rank)
    more = route_time(rank=2 * rank, n=n, outputs=1, num_params=p, batch_size=B, momentum=0.9,
                      growth=growth)  # fmt: skip
    assert more.exact_seconds > t.exact_seconds
    assert more.sampled_seconds == t.sampled_seconds
    wider = route_time(rank=rank, n=n, outputs=1, num_params=2 * p, batch_size=B,
                       momentum=0.9, growth=growth)  # fmt: skip
    assert wider.sampled_seconds > t.sampled_seconds
    with pytest.raises(ValueError, match="max_time"):
        route_time(rank=rank, n=n, outputs=1, num_params=p, batch_size=B, momentum=0.9,
                   max_time=0.0)  # fmt: skip


def test_auto_routes_momentum_by_time_and_says_so() -> None:
    # rank 40 (a linear model on 40 samples in 40 dimensions): the exact momentum threshold is
    # estimated at ≈ 0.27 s and a small sampled budget at ≈ 0.17 s, so a 10 ms budget re-routes
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 40, generator=g, dtype=torch.float64)
    torch.manual_seed(3)
    model = torch.nn.Linear(40, 1, bias=False).double()
    y = model(X).detach()
    small = SampledConfig(replicas=3, pilot_steps=40, burn_in=8, steps=4, max_rounds=0)
    plan = route_time(rank=40, n=40, outputs=1, num_params=40, batch_size=2, momentum=0.5,
                      config=small, max_time=0.01)  # fmt: skip
    assert plan.sampled
    est = critical_lr(
        model, (X, y), batch_size=2, momentum=0.5, max_time=0.01, config=small,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert isinstance(est, SampledEtaStar)
    assert est.route_reason == plan.reason
    assert "over the time budget of 0.01 s" in est.route_reason
    exact = critical_lr(model, (X, y), batch_size=2, momentum=0.5, max_time=math.inf)
    assert isinstance(exact, dynstab.EtaStarResult)
    assert exact.route_reason.endswith("time budget inf s")  # the estimate, and no re-route
    assert exact.rank == 40
    rep = stability(
        model, half_mse, (X, y), lr=0.5 * exact.eta_star, batch_size=2, momentum=0.5,
        max_time=0.01, config=small, generator=torch.Generator().manual_seed(0), rank_one=False,
    )  # fmt: skip
    assert isinstance(rep, SampledStabilityReport)
    assert "over the time budget" in rep.route_reason
    with pytest.raises(ValueError, match="max_time"):
        critical_lr(model, (X, y), batch_size=2, momentum=0.9, max_time=-1.0)
    # without momentum, or with an explicit method, time never re-routes
    plain = critical_lr(model, (X, y), batch_size=2, max_time=1e-9)
    assert not isinstance(plain, SampledEtaStar)
    forced = critical_lr(model, (X, y), batch_size=2, momentum=0.5, max_time=1e-9,
                         method="exact")  # fmt: skip
    assert not isinstance(forced, SampledEtaStar)


def test_bad_input_is_refused_with_clear_messages() -> None:
    model, data = _linear()
    X, y = data
    common = {"lr": 0.1, "batch_size": 2}
    with pytest.raises(ValueError, match="unknown method 'bogus'; choose from"):
        stability(model, half_mse, data, method="bogus", **common)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="method must be a str"):
        stability(model, half_mse, data, method=3, **common)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        stability(model, half_mse, data, method="sampled", momentum=1.5, **common)
    with pytest.raises(TypeError, match="config must be"):
        stability(model, half_mse, data, method="sampled", config={"replicas": 2}, **common)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="reshuffle"):
        stability(
            model, half_mse, data, method="sampled", lr=0.1, batch_size=2, sampling="reshuffle"
        )
    with pytest.raises(TypeError, match="random access"):
        stability(model, half_mse, [(X[:8], y[:8]), (X[8:], y[8:])], method="sampled", **common)
    with pytest.raises(ValueError, match="lr must be"):
        stability(model, half_mse, data, method="sampled", lr=-1.0, batch_size=2)
    with pytest.raises(ValueError, match="needs a model"):
        critical_lr(X @ X.T, batch_size=1, method="sampled")
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        SampledStability(model, half_mse, data, batch_size=99, sampling="without")
    with pytest.raises(ValueError, match="replicas must be >= 2"):
        SampledConfig(replicas=1)
    with pytest.raises(ValueError, match="confidence"):
        SampledConfig(confidence=1.0)
    with pytest.raises(DataError, match="first \\(sample\\) axis"):
        SampledStability(model, half_mse, (X, y[:3]), batch_size=1)


def test_model_state_is_left_unchanged() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64)
    model.train()
    model(X)  # fill the running statistics
    model.eval()
    y = model(X).detach()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rep = stability(
        model, half_mse, (X, y), lr=0.05, batch_size=2, method="sampled",
        config=SampledConfig(pilot_steps=20, burn_in=5, steps=4, max_rounds=0),
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert isinstance(rep, SampledStabilityReport)
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for p in model.parameters():
        assert p.grad is not None
        assert torch.equal(p.grad, torch.full_like(p, 7.0))
    # the same generator seed gives the same numbers
    again = stability(
        model, half_mse, (X, y), lr=0.05, batch_size=2, method="sampled",
        config=SampledConfig(pilot_steps=20, burn_in=5, steps=4, max_rounds=0),
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert again.eta_star == rep.eta_star
    assert again.growth == rep.growth


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
@pytest.mark.parametrize("engine", ["vmap", "loop"])
def test_batch_curvature_products_equal_dense_per_batch_matrices(
    curvature: str, engine: str
) -> None:
    g = torch.Generator().manual_seed(4)
    X = torch.randn(9, 3, generator=g, dtype=torch.float64)
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()
    y = torch.randn(9, 2, generator=g, dtype=torch.float64)  # not interpolating: H ≠ G
    bc = BatchCurvature(
        CurvatureProblem(model, half_mse, (X, y)), IndexedData((X, y)),
        curvature=curvature, engine=engine,
    )  # fmt: skip
    idx = torch.tensor([[0, 0, 5], [8, 2, 3], [1, 7, 7]])  # duplicates count twice
    p = bc.p
    V = torch.randn(3, 2, p, generator=g, dtype=torch.float64)
    Y = bc.apply(idx, V)
    dense = dense_hessian if curvature == "hessian" else dense_gauss_newton
    for k in range(3):
        A = dense(model, half_mse, (X[idx[k]], y[idx[k]]))
        torch.testing.assert_close(Y[k], V[k] @ A.T, rtol=1e-10, atol=1e-12)
    assert bc.num_products == 6
    assert bc.num_batches == 3
    full = dense(model, half_mse, (X, y))
    torch.testing.assert_close(bc.apply_full(V)[0], V[0] @ full.T, rtol=1e-10, atol=1e-12)


def _mlp(width: int = 50, n: int = 64, d: int = 5) -> tuple[torch.nn.Module, tuple]:
    g = torch.Generator().manual_seed(7)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    torch.manual_seed(7)
    model = torch.nn.Sequential(
        torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)
    ).double()
    return model, (X, model(X).detach())


def _small_config(budget: int | None, momentum: bool = False) -> SampledConfig:
    return SampledConfig(
        replicas=2, particles=8, pilot_steps=12 if momentum else 6, burn_in=2, steps=4,
        grid=(0.9, 1.0, 1.1), max_rounds=1, target_width=None, memory_budget=budget,
    )  # fmt: skip


def test_product_working_memory_is_measured_and_linear_in_batches_and_vectors() -> None:
    # the set-up probe models a product's working memory as call + k·(batch + s·vector); the
    # tracker's count of a larger product (k = 7 batches, s = 3 vectors) must match it, and a
    # vector's share holds at least its own output (p float64 entries)
    model, data = _mlp()
    s = SampledStability(
        model, half_mse, data, batch_size=4, config=_small_config(None),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    call, batch, vector = s.memory.product_bytes
    assert vector >= 8 * s.products.p
    V = torch.randn(7, 3, s.products.p, dtype=torch.float64, generator=torch.Generator())
    idx = torch.randint(0, 64, (7, 4), generator=torch.Generator().manual_seed(1))
    with _TensorPeak() as tracker:
        s.products.apply(idx, V)
    predicted = call + 7 * (batch + 3 * vector)
    assert 0.9 * predicted <= tracker.peak <= predicted


@pytest.mark.filterwarnings("ignore::dynstab.errors.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:SampledStability. m = 8:dynstab.errors.DynstabWarning")
@pytest.mark.parametrize(
    # with momentum the stepping phase (9 vectors per particle) outweighs a product on B = 4
    # samples; B = 16 makes the product the larger phase, so that it must be chunked
    ("momentum", "batch_size"),
    [(0.0, 4), (0.5, 16), (0.0, None)],
    ids=["sgd", "heavy", "gd"],
)
def test_memory_budget_is_honoured_by_chunking_with_identical_numbers(
    momentum: float, batch_size: int | None
) -> None:
    # a budget that fits the requested 8 particles per replica but not a whole step's product:
    # the products run in chunks, every tensor allocated (set-up included) stays within the
    # budget, and every number equals the unchunked run's with the same seed
    model, data = _mlp()
    kw = {"batch_size": batch_size, "momentum": momentum}

    def build(budget: int | None) -> SampledStability:
        return SampledStability(
            model, half_mse, data, config=_small_config(budget, momentum > 0),
            generator=torch.Generator().manual_seed(3), **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    free = build(None)
    est = free.eta_star()
    grow = free.growth(0.8 * est.eta_star if est.eta_star > 0 else 0.1)
    assert not free.memory.chunked
    assert free.particles == 8
    rows, cached = int(2 * 8 * 1.5), 2 * 8
    # room for products on 3 batches at a time beside the particles (one η per simulation)
    budget = free._peak_bytes(rows, 1, 3, cached)
    assert budget < free.memory.planned_bytes  # the unchunked run would not fit
    with _TensorPeak() as tracker:
        tight = build(budget)
        est2 = tight.eta_star()
        grow2 = tight.growth(grow.lr)
    mem = tight.memory
    assert tracker.peak <= budget, (tracker.peak, budget)
    assert mem.particles == 8
    assert mem.chunk is not None
    assert 2 <= mem.chunk < rows
    assert mem.etas_per_group == 1
    assert mem.planned_bytes <= budget
    if batch_size is None:
        # full-batch GD: the full-data operator multiplies a block of columns at once, and a
        # smaller block changes its summation order in the last bit (no resampling amplifies it)
        for x, y in ((est2.eta_star, est.eta_star), (grow2.growth, grow.growth)):
            assert x == pytest.approx(y, rel=1e-12)
        assert est2.ci == pytest.approx(est.ci, rel=1e-12)
    else:
        assert est2 == dataclasses.replace(est, wall_time=est2.wall_time)
        assert (grow2.growth, grow2.ci, grow2.replicas) == (grow.growth, grow.ci, grow.replicas)
    assert tight.num_products == free.num_products
    rep = tight.report(grow.lr, bounds=False)
    assert rep.memory == tight.memory
    assert f"products in chunks of {mem.chunk} of" in rep.table()


def test_too_small_a_budget_shrinks_the_population_and_says_so() -> None:
    # 300 kB hold the state of 6 of the 8 requested particles per replica (p = 351): the
    # population shrinks, the report says so, and the run stays within the budget
    model, data = _mlp()
    with _TensorPeak() as tracker:
        with pytest.warns(dynstab.DynstabWarning, match="only m = 6 particles per replica fit"):
            s = SampledStability(
                model, half_mse, data, batch_size=4, config=_small_config(300_000),
                generator=torch.Generator().manual_seed(3),
            )  # fmt: skip
        rep = s.report(0.1, bounds=False)
    assert tracker.peak <= 300_000
    assert rep.particles == 6
    assert rep.memory is not None
    assert "particles reduced to 6 of 8" in rep.table()
    assert any("memory budget" in note and "6 of 8 particles" in note for note in rep.notes)
    # below what 4 particles need: one warning saying the budget cannot be kept
    with pytest.warns(dynstab.DynstabWarning) as caught:
        SampledStability(
            model, half_mse, data, batch_size=4, config=_small_config(10_000),
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
    messages = [str(w.message) for w in caught]
    assert any("smaller than the smallest population" in m for m in messages)
    assert not any("fit the memory budget" in m for m in messages)
