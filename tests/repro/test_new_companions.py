"""Tests of the companions eos/lr-drop, mms21/kink, wws22/scaling, wws22/linear-alignment."""

from __future__ import annotations

import pytest
import torch
from test_companions import run_quick_profile

from dynstab.criteria import alignment_factor
from dynstab.function_space import knot_on_data_point
from dynstab_repro import registry
from dynstab_repro.base import ClaimStatus
from dynstab_repro.companions import GROUPS
from dynstab_repro.companions.eos_lr_drop import LRDropConfig, analyze_lr_drop, lr_drop_metrics
from dynstab_repro.companions.mms21_kink import (
    KinkConfig,
    analyze_kink,
    kink_minimum,
    mode_hessians,
)
from dynstab_repro.companions.wws22_linear_alignment import (
    LINEAR_ARCHS,
    LinearAlignmentConfig,
    alignment_standard_error,
    analyze_linear_alignment,
    population_alignment_linear,
)
from dynstab_repro.companions.wws22_scaling import ScalingConfig, analyze_scaling

NEW = ["eos/lr-drop", "mms21/kink", "wws22/scaling", "wws22/linear-alignment"]


def _status(claims):
    return {c.id: ClaimStatus(str(c.status)).value for c in claims}


def test_registered_in_their_groups_and_in_companions():
    groups = registry.list_groups()
    for name in NEW:
        assert name in groups["companions"]
        assert name in GROUPS[name.split("/")[0]]


@pytest.mark.parametrize("name", NEW)
def test_profiles_differ_and_have_enough_seeds(name):
    cls = registry.get_experiment(name).config_cls
    quick, full = cls.profile("quick"), cls.profile("full")
    assert quick != full
    assert full == cls()
    assert cls.from_dict(quick.to_dict()) == quick
    assert len(quick.seeds) >= 2
    assert len(full.seeds) >= 3
    exp = registry.get_experiment(name)
    for cfg in (quick, full):
        keys = [s.key for s in exp.specs(cfg)]
        assert keys
        assert len(keys) == len(set(keys))


# ------------------------------------------------------------------------------- eos/lr-drop


def test_lr_drop_metrics_by_hand():
    # edges 2/η₁ = 10, 2/η₂ = 15; drop at 25
    m = lr_drop_metrics(
        [0, 10, 20, 30, 40, 50],
        [5.0, 9.8, 10.4, 12.0, 14.5, 15.5],
        lr1=0.2,
        lr2=2 / 15,
        drop_step=25,
        cross_frac=0.95,
    )
    assert m["pre_crossing_step"] == 10
    assert m["pre_median_ratio"] == pytest.approx((0.98 + 1.04) / 2)
    assert m["post_crossing_step"] == 40  # 14.5/15 = 0.967 ≥ 0.95
    assert m["post_median_ratio"] == pytest.approx((14.5 / 15 + 15.5 / 15) / 2)
    assert m["post_max_ratio"] == pytest.approx(15.5 / 15)
    none = lr_drop_metrics([0, 30], [1.0, 2.0], lr1=0.2, lr2=0.1, drop_step=25, cross_frac=0.95)
    assert none["pre_crossing_step"] is None
    assert none["post_median_ratio"] is None


def _drop_run(seed, pre, post, diverged=False):
    return {
        "seed": seed,
        "pre_median_ratio": pre,
        "post_median_ratio": post,
        "pre_crossing_step": 10,
        "post_crossing_step": 40,
        "post_max_ratio": post,
        "diverged": diverged,
    }


def test_analyze_lr_drop_pass_and_fail():
    cfg = LRDropConfig(seeds=(0, 1))
    ok = {f"seed={s}": _drop_run(s, 1.02, 0.98) for s in (0, 1)}
    assert _status(analyze_lr_drop(cfg, ok)) == {"D1": "adapted", "D2": "adapted"}
    assert all("3 : 2" in c.note for c in analyze_lr_drop(cfg, ok))
    stuck = {f"seed={s}": _drop_run(s, 1.02, None) for s in (0, 1)}  # never reaches 2/η₂
    assert _status(analyze_lr_drop(cfg, stuck))["D2"] == "failed"
    div = {**ok, "seed=1": _drop_run(1, 1.02, 0.98, diverged=True)}
    assert _status(analyze_lr_drop(cfg, div)) == {"D1": "failed", "D2": "failed"}


# -------------------------------------------------------------------------------- mms21/kink


def test_kink_minimum_interpolates_with_a_knot_on_a_data_point_and_its_modes():
    cfg = KinkConfig()
    c = 2.0
    net, X, y = kink_minimum(cfg, c)
    with torch.no_grad():
        assert torch.equal(net(X), y)
    assert knot_on_data_point(net, X[:, 0], tol=0.0)
    Hs, gs = mode_hessians(net, X, y, cfg.offset)
    n = X.shape[0]
    # The modes differ only in the row of the sample x = 0: by Δ = (a/c)·e_{b1_0} (∂f(0)/∂b1_0 =
    # w2_0 when active, 0 when inactive). By hand, that row in the inactive mode is
    # J0 = [w1: 0, 0, 0 | b1: 0, 1, −1 | w2: 0, relu(0.5), relu(0.5) | b2: 1] (neurons 1, 2 are
    # active at 0 with w2 = ±1), so H₊ − H₋ = (ΔJ0ᵀ + J0Δᵀ + ΔΔᵀ)/n; the rest is O(offset).
    J0 = torch.tensor([0, 0, 0, 0, 1, -1, 0, 0.5, 0.5, 1], dtype=torch.float64)
    delta = torch.zeros(10, dtype=torch.float64)
    delta[3] = cfg.jump / c  # parameter order w1 (3), b1 (3), w2 (3), b2
    expected = (torch.outer(delta, J0) + torch.outer(J0, delta) + torch.outer(delta, delta)) / n
    diff = Hs[0] - Hs[1]
    assert torch.allclose(diff, expected, atol=10 * cfg.offset)
    assert all(float(g.abs().max()) == 0.0 for g in gs)  # exact interpolation: ∇ψ_m(θ*) = 0
    with pytest.raises(ValueError, match="odd"):
        kink_minimum(KinkConfig(n=8), 1.0)
    with pytest.raises(ValueError, match=r"±0\.5"):
        kink_minimum(KinkConfig(n=9), 1.0)


def _kink_run(c, pred, escaped, stayed, ratio):
    return {
        "balance": c,
        "prediction": pred,
        "escaped": escaped,
        "stayed": stayed,
        "diverged": False,
        "max_distance_over_radius": ratio,
    }


def test_analyze_kink_pass_and_fail():
    cfg = KinkConfig(balances=(1.0, 4.0), seeds=(0,))
    ok = {
        "a": _kink_run(1.0, "stay", False, True, 1.0),
        "b": _kink_run(4.0, "escape", True, False, 1e4),
    }
    assert _status(analyze_kink(cfg, ok)) == {"K1": "reproduced", "K2": "reproduced"}
    bad = {**ok, "b": _kink_run(4.0, "escape", False, False, 5.0)}
    assert _status(analyze_kink(cfg, bad))["K1"] == "failed"
    none_stay = {"a": _kink_run(1.0, "escape", True, False, 1e4), "b": ok["b"]}
    assert _status(analyze_kink(cfg, none_stay))["K2"] == "failed"  # no case: cannot confirm


# ----------------------------------------------------------------------------- wws22/scaling


def _size(n, w, method, seed, fro, bound=10.0, conv=True):
    return {
        "kind": "size",
        "n": n,
        "width": w,
        "method": method,
        "seed": seed,
        "frobenius": fro,
        "bound": bound,
        "converged": conv,
    }


def _esc(seed, fit, se, lyap, lse, rho, ms=1.5):
    return {
        "kind": "escape",
        "seed": seed,
        "fitted_rate": fit,
        "fitted_rate_se": se,
        "two_lyapunov": lyap,
        "two_lyapunov_se": lse,
        "log_rho": rho,
        "ms_ratio": ms,
        "fit_points": 50,
        "gd_converged": True,
    }


def test_analyze_scaling_pass_and_fail():
    cfg = ScalingConfig(ns=(16, 32), widths=(32, 64), seeds=(0, 1))
    res = {}
    for n, w in ((16, 32), (32, 32), (16, 64)):
        for s in (0, 1):
            res[f"{n}{w}s{s}"] = _size(n, w, "sgd", s, 6.0 + s)
            res[f"{n}{w}g{s}"] = _size(n, w, "gd", s, 20.0)
    for s in (0, 1):
        res[f"e{s}"] = _esc(s, 0.05, 0.002, 0.052, 1e-5, 0.2)
    assert _status(analyze_scaling(cfg, res)) == {
        "S1": "reproduced",
        "S2": "reproduced",
        "S3": "reproduced",
    }
    loose = {k: ({**r, "frobenius": 5.0} if r.get("method") == "gd" else r) for k, r in res.items()}
    assert _status(analyze_scaling(cfg, loose))["S1"] == "not reproduced"  # bound never binds
    sharp = {**res, "1632s0": _size(16, 32, "sgd", 0, 12.0)}
    assert _status(analyze_scaling(cfg, sharp))["S1"] == "failed"
    spread = {**res, "1664s0": _size(16, 64, "sgd", 0, 1.0), "1664s1": _size(16, 64, "sgd", 1, 1.0)}
    assert _status(analyze_scaling(cfg, spread))["S2"] == "failed"
    slow = {**res, "e1": _esc(1, 0.01, 0.001, 0.05, 1e-5, 0.2)}
    assert _status(analyze_scaling(cfg, slow))["S3"] == "failed"
    # one run over T = 50 steps spreads around 2λ₁ by 2·se(λ₁)·√(runs·steps/T) =
    # 0.002·√(16·20000/50) = 0.16 here, so the same fit is then within 3 SE
    noisy = {**res, "e1": _esc(1, 0.01, 0.001, 0.05, 0.002, 0.2)}
    assert _status(analyze_scaling(cfg, noisy))["S3"] == "reproduced"
    # runs that never reached a minimum cannot test the claims: not reproduced, with a note
    no_gd = {**res, "e0": {**res["e0"], "gd_converged": False}}
    claims = {c.id: c for c in analyze_scaling(cfg, no_gd)}
    assert claims["S3"].status == "not reproduced"
    assert "GD did not reach" in claims["S3"].note
    unconv = {
        k: ({**r, "converged": False} if r.get("method") == "sgd" else r) for k, r in res.items()
    }
    st = _status(analyze_scaling(cfg, unconv))
    assert (st["S1"], st["S2"]) == ("not reproduced", "not reproduced")


# -------------------------------------------------------------------- wws22/linear-alignment


def test_population_alignment_linear_by_hand():
    assert population_alignment_linear(torch.eye(2), torch.tensor([1.0, 0.0])) == pytest.approx(1.5)
    # A = diag(2, 1): M = diag(4, 1), w = e2: 1 + 1/(1·17)
    A = torch.diag(torch.tensor([2.0, 1.0]))
    assert population_alignment_linear(A, torch.tensor([0.0, 1.0])) == pytest.approx(1 + 1 / 17)
    with pytest.raises(ValueError, match="w ≠ 0"):
        population_alignment_linear(A, torch.zeros(2))


def test_empirical_alignment_of_a_linear_model_matches_isserlis_within_its_standard_error():
    """μ̂ on n Gaussian samples estimates μ_pop; checked through the delta-method SE."""
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    r = X @ w
    K = X @ X.T / n  # J = X for f(x) = βᵀx
    mu = alignment_factor(K, r)
    se = alignment_standard_error(X, r)
    mu_pop = population_alignment_linear(torch.eye(d, dtype=torch.float64), w)
    assert 0 < se < 0.1
    assert abs(mu - mu_pop) <= 4 * se, (mu, mu_pop, se)


def _la(arch, seed, mu, se, conv=True, width=None):
    return {
        "arch": arch,
        "seed": seed,
        "mu": mu,
        "mu_se": se,
        "mu_pop": 1.1,
        "converged": conv,
        "width": width,
    }


def test_analyze_linear_alignment_pass_and_fail():
    cfg = LinearAlignmentConfig(widths=(8, 16), seeds=(0, 1))
    res = {f"{a}{s}": _la(a, s, 1.0, 0.05) for a in LINEAR_ARCHS for s in (0, 1)}
    res.update({f"rf{m}{s}": _la("rf", s, 1.0, 0.05, width=m) for m in (8, 16) for s in (0, 1)})
    assert _status(analyze_linear_alignment(cfg, res)) == {"LA1": "reproduced", "LA2": "adapted"}
    low = {**res, "linear0": _la("linear", 0, 0.8, 0.05)}  # 4 SE below the bound
    assert _status(analyze_linear_alignment(cfg, low))["LA1"] == "failed"
    nc = {**res, "diagonal1": _la("diagonal", 1, 1.0, 0.05, conv=False)}
    assert _status(analyze_linear_alignment(cfg, nc))["LA1"] == "failed"
    shrink = {**res, **{f"rf16{s}": _la("rf", s, 0.3, 0.05, width=16) for s in (0, 1)}}
    assert _status(analyze_linear_alignment(cfg, shrink))["LA2"] == "failed"


# -------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", NEW)
def test_quick_profile_end_to_end(tmp_path, name):
    """The quick profile runs; every claim has a status, the paper's statement and a source."""
    res = run_quick_profile(tmp_path, name)
    for c in res.claims:
        assert ClaimStatus(str(c.status)) != ClaimStatus.FAILED, c.to_dict()
        for field in (c.paper, c.source, c.criterion, c.measured):
            assert field, c.to_dict()
    assert any(p.suffix == ".pdf" for p in res.figures)
