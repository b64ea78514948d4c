"""Tests of the companion reproductions: configs, helpers, training, analyses, quick runs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dynstab.curvature import gram_matrix
from dynstab.losses import half_mse
from dynstab.models import MLP
from dynstab.norms import gram_spectrum, wme18_non_uniformity
from dynstab.training import train, warmup
from dynstab_repro import registry, run_experiment
from dynstab_repro.companions import GROUPS
from dynstab_repro.companions.edge_of_stability import (
    EoSConfig,
    SGDBatchConfig,
    analyze_eos,
    analyze_sgd_batch,
    eos_run_metrics,
)
from dynstab_repro.companions.minima import gram_float64, gram_summary
from dynstab_repro.companions.mm23 import MM23Config, analyze_mm23
from dynstab_repro.companions.mms21 import (
    SweepConfig,
    SwitchConfig,
    WeightConfig,
    analyze_sweep,
    analyze_switch,
    analyze_weight,
)
from dynstab_repro.companions.results import thin
from dynstab_repro.companions.scalar_nets import (
    ScalarSweepConfig,
    digits_task,
    shallow_mlp,
    train_scalar,
    train_scalar_run,
)
from dynstab_repro.companions.wme18 import (
    SharpnessConfig,
    ToyConfig,
    _toy_runs,
    analyze_sharpness,
    analyze_toy,
    toy_gram,
    toy_loss,
)
from dynstab_repro.companions.wws22 import WWS22Config, analyze_wws22

NAMES = [
    "eos/gd-sweep",
    "eos/sgd-batch",
    "wme18/toy",
    "wme18/sharpness",
    "mm23/sweep",
    "mms21/switch",
    "mms21/weight",
    "mms21/sweep",
    "wws22/alignment",
]


def _passed(claims):
    return {c.id: c.passed for c in claims}


# --------------------------------------------------------------------------- registry, configs


def test_all_companions_registered_and_grouped():
    names = {e.name for e in registry.list_experiments()}
    assert set(NAMES) <= names
    groups = registry.list_groups()
    assert set(NAMES) <= set(groups["companions"])  # more in tests/repro/test_new_companions.py
    for g in ("eos", "wme18", "mm23", "mms21", "wws22"):
        assert set(groups[g]) == set(GROUPS[g])
        assert all(m.startswith(g + "/") for m in groups[g])
    assert {e.name for e in registry.resolve("all")} >= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_profiles_roundtrip_and_specs(name):
    exp = registry.get_experiment(name)
    cls = exp.config_cls
    quick, full = cls.profile("quick"), cls.profile("full")
    assert quick != full, "the quick profile must differ from the full settings"
    assert full == cls()
    assert cls.from_dict(quick.to_dict()) == quick
    with pytest.raises(ValueError, match="unknown config key"):
        cls.from_dict({"no_such_setting": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.seed = 3  # type: ignore[misc]
    for cfg in (quick, full):
        keys = [s.key for s in exp.specs(cfg)]
        assert keys
        assert len(keys) == len(set(keys))
    assert len(exp.specs(quick)) <= len(exp.specs(full))


# --------------------------------------------------------------------------- helpers


def test_thin_keeps_ends_and_bounds_length():
    xs = list(range(1234))
    t = thin(xs, 500)
    assert len(t) <= 500
    assert t[0] == 0
    assert t[-1] == 1233
    assert thin([1, 2], 500) == [1, 2]


def test_gram_summary_matches_a_hand_computed_example():
    # J = [[1,0,1,0],[0,2,0,1],[1,1,0,0]], B = 2 with replacement: η* = 0.6249971971 (MM23),
    # GD (B = 3 without replacement): 2/λ_max = 0.9915103182.
    J = torch.tensor([[1, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]], dtype=torch.float64)
    K = J @ J.T / 3
    s = gram_summary(K, lr=0.5, batch_size=2, sampling="with", bounds=True)
    assert s.eta_star == pytest.approx(0.6249971971, rel=1e-8)
    assert s.trace == pytest.approx(3.0, rel=1e-12)
    assert s.frobenius == pytest.approx(2.185813, rel=1e-6)
    assert s.ms_ratio == pytest.approx(0.5 / 0.6249971971, rel=1e-8)
    assert s.lambda_max == pytest.approx(gram_spectrum(K).lambda_max, rel=1e-15)
    assert s.non_uniformity == pytest.approx(wme18_non_uniformity(K), rel=1e-15)
    # MM23's chain λ_max ≤ (15) ≤ (24) ≤ λ_max(C†D)
    assert s.bound15 is not None
    assert s.bound24 is not None
    assert s.generalized_sharpness is not None
    assert s.lambda_max <= s.bound15 * (1 + 1e-9) <= s.bound24 * (1 + 1e-9)
    assert s.bound24 <= s.generalized_sharpness * (1 + 1e-9)
    d = s.to_dict()
    assert {"eta_star", "bound15", "bound24", "non_uniformity"} <= d.keys()
    gd = gram_summary(K, lr=0.5, batch_size=3, sampling="without", exact=True)
    assert gd.eta_star == pytest.approx(0.9915103182, rel=1e-8)
    assert "bound15" not in gd.to_dict()
    assert (
        "eta_star"
        not in gram_summary(K, lr=0.5, batch_size=2, sampling="with", exact=False).to_dict()
    )


def test_shallow_mlp_has_the_large_gaussian_initialization():
    net = shallow_mlp(4, 6, init_scale=1.5, activation="tanh", seed=3, bias_scale=0.5)
    assert isinstance(net, MLP)
    g = torch.Generator().manual_seed(3)  # drawn in the order W, a, b
    W = torch.randn(6, 4, generator=g, dtype=torch.float64) * 1.5
    a = torch.randn(6, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(6)
    b = torch.randn(6, generator=g, dtype=torch.float64) * 0.5
    p = dict(net.named_parameters())
    assert torch.equal(p["layers.0.weight"], W)
    assert torch.equal(p["layers.1.weight"][0], a)
    assert torch.equal(p["layers.0.bias"], b)
    assert torch.equal(p["layers.1.bias"], torch.zeros(1, dtype=torch.float64))


def test_train_scalar_is_the_library_trainer_with_the_protocols_rules():
    X, y = digits_task(12, classes=(3, 8))
    a = shallow_mlp(64, 8, init_scale=1.0, activation="tanh", seed=0)
    b = shallow_mlp(64, 8, init_scale=1.0, activation="tanh", seed=0)
    ra = train_scalar(a, X, y, lr=0.3, steps=300, batch_size=4, warmup_steps=100, seed=2)
    rb = train(
        b,
        X,
        y,
        lr=0.3,
        steps=300,
        batch_size=4,
        sampling="without",
        schedule=warmup(100),
        seed=2,
        require_full_lr=True,
        divergence_threshold=1e8,
        eval_every=50,
    )
    assert ra.steps_run == rb.steps_run
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    gd = train_scalar(
        shallow_mlp(64, 8, init_scale=1.0, activation="tanh", seed=0),
        X,
        y,
        lr=0.3,
        steps=5,
        batch_size=0,
        stop_loss=None,
    )
    assert gd.sampling == "full"
    bad = train_scalar(
        shallow_mlp(64, 8, init_scale=1.0, activation="tanh", seed=0),
        X,
        y,
        lr=1e4,
        steps=200,
        batch_size=0,
    )
    assert bad.diverged


def test_train_scalar_run_records_alignment_and_measures_the_minimum():
    X, y = digits_task(10, classes=(3, 8))
    settings = ScalarSweepConfig(steps=400, warmup_steps=100, stop_loss=1e-30)
    out = train_scalar_run(settings, X, y, width=16, lr=0.2, batch_size=2, seed=0, record_every=100)
    h = out["history"]
    assert h["step"] == [0, 100, 200, 300, 400]
    assert all(m is not None and m > 0 for m in h["mu"])
    assert h["loss"][0] == pytest.approx(
        float(half_mse(shallow_mlp(64, 16, init_scale=1.0, activation="tanh", seed=0)(X), y)),
        rel=1e-12,
    )
    assert out["lambda_max"] > 0
    assert "eta_star" in out
    assert out["B"] == 2
    net = shallow_mlp(64, 16, init_scale=1.0, activation="tanh", seed=0)
    assert out["init_lambda_max"] == pytest.approx(
        gram_spectrum(gram_matrix(net, X)).lambda_max, rel=1e-12
    )
    assert torch.equal(gram_float64(net, X), gram_matrix(net, X))


def test_toy_pieces():
    x = torch.tensor([0.5, 0.5], requires_grad=True)
    (g,) = torch.autograd.grad(toy_loss(x, torch.tensor([0.1, 1.9])), x)
    # ℓ' = 2c(x − 1) on the branch c(x − 1)² < x² (c = 0.1), 2x on the other: halves of the mean
    assert g.tolist() == pytest.approx([0.5 * 2 * 0.1 * (0.5 - 1.0), 0.5 * 2 * 0.5])
    K1 = toy_gram((0.1, 1.9), 1.0)
    assert gram_spectrum(K1).lambda_max == pytest.approx(2.0)  # a = mean h = 2
    assert wme18_non_uniformity(K1) == pytest.approx(1.8, rel=1e-12)  # s = std of (0.2, 3.8)
    cfg = ToyConfig.profile("quick")
    runs = _toy_runs(cfg, [0, 1], gd=False)
    assert [r.steps_run for r in runs] == [cfg.steps] * 2
    assert runs[0].params is not None
    assert runs[1].params is not None
    assert not torch.equal(runs[0].params["layers.0.weight"], runs[1].params["layers.0.weight"])


# --------------------------------------------------------------------------- analyses


def _toy_results(finals_sgd, final_gd):
    base = {
        "eta_star_library": 0.5524861878,
        "eta_star_commuting": 0.5524861878,
        "eta_star_closed_form": 0.5524861878,
        "gd_threshold": 1.0,
        "growth_x1": 1.7476,
        "growth_x0": 0.16,
        "growth_closed_form": 1.7476,
    }
    return {
        "gd": {**base, "final_x": [final_gd]},
        "sgd_chunk=0": {**base, "final_x": finals_sgd},
    }


def test_analyze_toy_pass_and_fail():
    cfg = ToyConfig.profile("quick")
    ok = _passed(analyze_toy(cfg, _toy_results([1e-30] * 40, 1.0)))
    assert all(ok.values())
    assert set(ok) == {"T1", "T2", "T3", "T4"}
    bad = _passed(analyze_toy(cfg, _toy_results([1e-30] * 30 + [1.0] * 10, 0.0)))
    assert not bad["T3"]
    assert not bad["T4"]
    assert bad["T1"]
    assert not _passed(analyze_toy(cfg, {}))["T1"]


def _mm_run(lr, B, lam_ratio, ms_ratio, converged=True, b15=None, b24=None):
    lam = 2 * lam_ratio / lr
    gen = 2 * ms_ratio / lr
    return {
        "lr": lr,
        "B": B,
        "converged": converged,
        "lambda_max": lam,
        "gd_ratio": lam_ratio,
        "ms_ratio": ms_ratio,
        "generalized_sharpness": gen,
        "bound15": lam + 0.25 * (gen - lam) if b15 is None else b15,
        "bound24": lam + 0.75 * (gen - lam) if b24 is None else b24,
        "init_lambda_max": 100.0,
    }


def test_analyze_mm23_pass_and_fail():
    cfg = MM23Config.profile("quick")  # B ∈ {2, 8, GD}, large_batch 8
    good = {
        "a": _mm_run(0.1, 2, 0.6, 0.95),
        "b": _mm_run(0.1, 8, 0.97, 0.98),
        "c": _mm_run(0.1, 0, 0.98, 0.98),
        "d": _mm_run(0.2, 2, 0.5, 0.96, b15=2 * 0.65 / 0.2),  # (15) gap 0.3 vs 0.146 at η=0.1
    }
    assert all(_passed(analyze_mm23(cfg, good)).values())
    bad = dict(good)
    bad["a"] = _mm_run(0.1, 2, 0.95, 1.3, b24=10.0)  # not flat, above 1.1, chain broken
    res = _passed(analyze_mm23(cfg, bad))
    assert not res["M1"]
    assert not res["M3"]
    assert not res["M4"]
    assert not any(_passed(analyze_mm23(cfg, {})).values())


def test_analyze_mm23_rank_one_and_gap_claims_can_fail():
    cfg = MM23Config.profile("quick")
    lam = 2 * 0.5 / 0.2
    base = {
        "a": _mm_run(0.1, 2, 0.6, 0.95, b15=2 * 0.61 / 0.1),  # (15) gap 1/60
        "b": _mm_run(0.2, 2, 0.5, 0.96, b15=lam * 1.2),  # gap 0.2: grows with η
        "c": _mm_run(0.1, 0, 0.98, 0.98),
        "d": _mm_run(0.2, 0, 0.98, 0.98),
    }
    res = _passed(analyze_mm23(cfg, base))
    assert res["M5"]
    assert res["M6"]
    # item 3: the rank-one bound explains only 40% of 2/η at a binding small-B minimum
    weak = {**base, "b": _mm_run(0.2, 2, 0.3, 0.96, b15=2 * 0.35 / 0.2, b24=2 * 0.4 / 0.2)}
    assert not _passed(analyze_mm23(cfg, weak))["M5"]
    # a non-binding minimum (η·λ_max(C†D)/2 < 0.85) does not count, and none binding fails
    loose = {k: v for k, v in base.items() if k != "b"}
    loose["a"] = _mm_run(0.1, 2, 0.3, 0.5, b24=2 * 0.31 / 0.1)
    assert not _passed(analyze_mm23(cfg, loose))["M5"]
    # item 4: the (15) gap shrinks as η grows
    shrink = {**base, "b": _mm_run(0.2, 2, 0.5, 0.96, b15=lam * 1.005)}
    assert not _passed(analyze_mm23(cfg, shrink))["M6"]
    # ... or grows by less than the required factor
    flat = {**base, "b": _mm_run(0.2, 2, 0.5, 0.96, b15=lam * (1 + 1.2 / 60))}
    assert not _passed(analyze_mm23(cfg, flat))["M6"]
    # a single converged η per small B cannot show the trend
    assert not _passed(analyze_mm23(cfg, {k: base[k] for k in ("a", "c")}))["M6"]


def _wws_run(lr, B, width, fro_ratio, mu, ms=0.95, gd=0.6):
    q = 1.0 / B
    fro = fro_ratio * 2 / (lr * math.sqrt(q))
    return {
        "lr": lr,
        "B": B,
        "width": width,
        "converged": True,
        "frobenius": fro,
        "q": q,
        "ms_ratio": ms,
        "gd_ratio": gd,
        "history": {"step": [0, 1, 2], "mu": [mu, mu, mu]},
    }


def _switch(ratio=1.3, jump=1e5, conv=True, fro_after=5.0):
    return {
        "gd_converged": True,
        "gd_ms_ratio_for_sgd": ratio,
        "gd_loss": 1e-11,
        "max_loss_in_window": 1e-11 * jump,
        "sgd_converged": conv,
        "gd_frobenius": 10.0,
        "sgd_frobenius": fro_after,
        "growth_lower_bound": 2.0,
    }


def test_analyze_wws22_pass_and_fail():
    cfg = WWS22Config.profile("quick")  # widths (32, 64)
    good = {
        "r1": _wws_run(0.1, 2, 32, 0.55, 0.5),
        "r2": _wws_run(0.2, 8, 64, 0.5, 0.4),
        "switch": _switch(),
    }
    assert all(_passed(analyze_wws22(cfg, good)).values())
    bad = {
        "r1": _wws_run(0.1, 2, 32, 1.3, 0.5),
        "r2": _wws_run(0.2, 8, 64, 0.1, 0.001),
        "switch": _switch(ratio=0.9),
    }
    res = _passed(analyze_wws22(cfg, bad))
    assert not any(res.values())


def test_eos_run_metrics_and_analysis():
    lr = 0.1
    steps = list(range(0, 1000, 10))
    lam = [min(20.0 * (0.2 + s / 500), 20.0 * (1.0 + 0.05 * ((s // 10) % 2))) for s in steps]
    loss = [1.0 / (1 + s / 100) for s in steps]
    m = eos_run_metrics(steps, lam, steps, loss, lr)
    assert m["crossing_step"] == 380
    assert 1.0 <= m["post_median_ratio"] <= 1.05
    assert m["post_fraction_in_band"] == 1.0
    assert m["loss_end_over_crossing"] < 1.0
    assert eos_run_metrics([0, 1], [1.0, 2.0], [0], [1.0], lr)["crossing_step"] is None
    cfg = dataclasses.replace(EoSConfig.profile("quick"), archs=("mlp",), lrs_mlp=(0.1, 0.2))
    r01 = {"arch": "mlp", "lr": 0.1, **m}
    m2 = eos_run_metrics([s // 4 for s in steps], [v / 2 for v in lam], steps, loss, 0.2)
    r02 = {"arch": "mlp", "lr": 0.2, **m2}
    assert all(_passed(analyze_eos(cfg, {"a": r01, "b": r02})).values())
    swapped = {"a": r01, "b": {**r02, "crossing_step": 5000}}  # later crossing at larger η
    assert not _passed(analyze_eos(cfg, swapped))["C5"]
    high = {"a": {**r01, "post_median_ratio": 1.4, "post_fraction_in_band": 0.5}, "b": r02}
    res = _passed(analyze_eos(cfg, high))
    assert not res["C2"]
    assert not res["C3"]


def test_analyze_sgd_batch_pass_and_fail():
    cfg = SGDBatchConfig.profile("quick")  # B ∈ {4, GD}, η = 0.1, whole-set Gram
    n = cfg.n_train
    common = {"final_loss": 1e-4, "subset": n}
    good = {
        "B=4": {
            "B": 4,
            "lambda_max": 8.0,
            "subset_ratio": 0.9,
            "subset_lambda_max": 8.01,
            **common,
        },
        "B=GD": {
            "B": 0,
            "lambda_max": 20.2,
            "subset_ratio": 1.01,
            "subset_lambda_max": 20.19,
            **common,
        },
    }
    assert all(_passed(analyze_sgd_batch(cfg, good)).values())
    bad = {
        "B=4": {
            "B": 4,
            "lambda_max": 19.0,
            "subset_ratio": 1.3,
            "subset_lambda_max": 18.0,
            **common,
        },
        "B=GD": good["B=GD"],
    }
    assert not any(_passed(analyze_sgd_batch(cfg, bad)).values())
    # E6.4 (B3): a 1% Lanczos/Gram mismatch fails; it is not checked away from interpolation
    # or when K covers only a subset, and with no eligible run B3 fails
    off = {**good, "B=GD": {**good["B=GD"], "subset_lambda_max": 20.2 / 1.011}}
    assert not _passed(analyze_sgd_batch(cfg, off))["B3"]
    loose = {**off, "B=GD": {**off["B=GD"], "final_loss": 2e-3}}
    assert _passed(analyze_sgd_batch(cfg, loose))["B3"]
    sub = {k: {**v, "subset": n // 2} for k, v in good.items()}
    assert not _passed(analyze_sgd_batch(cfg, sub))["B3"]
    # GD counts in B2 only when the Gram matrix covers the whole training set
    gd_high = {**good, "B=GD": {**good["B=GD"], "subset_ratio": 1.4}}
    assert not _passed(analyze_sgd_batch(cfg, gd_high))["B2"]
    proxy = dataclasses.replace(cfg, subset=16)
    assert _passed(analyze_sgd_batch(proxy, gd_high))["B2"]
    far = {k: {**v, "final_loss": 0.3} for k, v in good.items()}
    assert not _passed(analyze_sgd_batch(cfg, far))["B2"]  # nothing near interpolation


def _sweep_run(lr, tv, lam, flagged=False, converged=True):
    return {
        "lr": lr,
        "converged": converged,
        "weighted_tv": tv,
        "bound": 1 / lr - 0.5,
        "knot_on_data": flagged,
        "lambda_max": lam,
        "lemma4": 1 + 2 * tv,
    }


def test_analyze_mms21_sweep_pass_and_fail():
    cfg = SweepConfig.profile("quick")  # lrs 0.2, 0.3, 0.4
    good = {f"lr={lr}": _sweep_run(lr, 0.3, 2.0) for lr in cfg.lrs}
    assert all(_passed(analyze_sweep(cfg, good)).values())
    bad = dict(good)
    bad["lr=0.4"] = _sweep_run(0.4, 2.5, 6.0)  # TV above 1/η − 1/2 = 2 and λ above 2/η
    res = _passed(analyze_sweep(cfg, bad))
    assert not res["E1"]
    assert not res["E2"]
    flagged = {k: {**v, "knot_on_data": True} for k, v in good.items()}
    assert not _passed(analyze_sweep(cfg, flagged))["E1"]  # nothing left to check
    one_flagged = {**good, "lr=0.2": {**good["lr=0.2"], "knot_on_data": True}}
    assert not _passed(analyze_sweep(cfg, one_flagged))["E1"]  # only 2 of 3 η covered


def test_analyze_mms21_switch_pass_and_fail():
    cfg = SwitchConfig.profile("quick")
    a = {**_sweep_run(0.15, 0.39, 7.3), "final_loss": 1e-9, "lambda_at_switch": 6.9}
    b = {
        **_sweep_run(0.45, 0.35, 2.4),
        "final_loss": 1e-9,
        "loss_at_switch": 1e-4,
        "max_loss_after_switch": 7e-3,
        "lambda_at_switch": 6.9,
    }
    assert all(_passed(analyze_switch(cfg, {"constant": a, "switch": b})).values())
    worse = {**b, "weighted_tv": 0.5, "max_loss_after_switch": 2e-4}
    res = _passed(analyze_switch(cfg, {"constant": a, "switch": worse}))
    assert not res["W2"]
    assert not res["W3"]
    assert not _passed(analyze_switch(cfg, {"constant": a}))["W1"]


def test_analyze_mms21_weight_pass_and_fail():
    cfg = WeightConfig.profile("quick")

    def row(dist, dist_small, dist_large, argmax=0.0, edge=0.0, tail=0.001):
        side = {"argmax": [argmax] * 3, "g_inner_extremes_over_max": [0.01, edge, 0.02]}
        return {
            "dist": dist,
            "pop_argmax": 0.0,
            "pop_max": 0.3,
            "pop_tail": tail * 0.3,
            "small": {**side, "rel_l1": [dist_small] * 3},
            "large": {**side, "rel_l1": [dist_large] * 3},
        }

    good = {f"dist={d}": row(d, 0.2, 0.05) for d in cfg.dists}
    assert all(_passed(analyze_weight(cfg, good)).values())
    bad = {f"dist={d}": row(d, 0.2, 0.3, argmax=1.2, edge=0.5) for d in cfg.dists}
    assert not any(_passed(analyze_weight(cfg, bad)).values())
    # G2 fails on either half alone: one seed with a flat g near the extremes, or a heavy tail
    flat_edge = {**good, "dist=gaussian": row("gaussian", 0.2, 0.05, edge=0.3)}
    assert not _passed(analyze_weight(cfg, flat_edge))["G2"]
    heavy_tail = {**good, "dist=laplace": row("laplace", 0.2, 0.05, tail=0.05)}
    assert not _passed(analyze_weight(cfg, heavy_tail))["G2"]


def test_analyze_wme18_sharpness_pass_and_fail():
    cfg = SharpnessConfig.profile("quick")  # lrs 0.2, 0.4; B ∈ {4, GD}

    def run(lr, B, ratio, ms=0.9, init=25.0):
        return {
            "lr": lr,
            "B": B,
            "converged": True,
            "lambda_max": 2 * ratio / lr,
            "gd_ratio": ratio,
            "ms_ratio": ms,
            "init_lambda_max": init,
            "non_uniformity": 1.0,
        }

    good = {
        "a": run(0.2, 4, 0.6),
        "b": run(0.2, 0, 1.0),
        "c": run(0.4, 4, 0.7),  # 1.43× flatter than GD
        "d": run(0.4, 0, 1.0),
    }
    assert all(_passed(analyze_sharpness(cfg, good)).values())
    bad = {**good, "b": run(0.2, 0, 0.5), "c": run(0.4, 4, 1.0, ms=1.3)}
    res = _passed(analyze_sharpness(cfg, bad))
    assert not any(res.values())
    # S2 is checked per batch size at EVERY binding η, with B-specific factors
    spec_like = dataclasses.replace(
        cfg, batch_sizes=(4, 10, 0), flat_batch_sizes=(4, 10), flat_factors=(3.0, 1.5)
    )
    ok = {
        **good,
        "a": run(0.2, 4, 0.3),
        "c": run(0.4, 4, 0.25),
        "e": run(0.2, 10, 0.6),
        "f": run(0.4, 10, 0.5),
    }
    assert _passed(analyze_sharpness(spec_like, ok))["S2"]
    one_eta_short = {**ok, "c": run(0.4, 4, 0.4)}  # 2.5× < 3× at η = 0.4 only
    assert not _passed(analyze_sharpness(spec_like, one_eta_short))["S2"]
    b10_short = {**ok, "f": run(0.4, 10, 0.7)}  # 1.43× < 1.5× at B = 10
    assert not _passed(analyze_sharpness(spec_like, b10_short))["S2"]
    no_b10 = {k: v for k, v in ok.items() if k not in ("e", "f")}  # B = 10 in sweep, none ran
    assert not _passed(analyze_sharpness(spec_like, no_b10))["S2"]
    # a non-binding η (λ_max(θ₀) < 2/η) does not count
    loose = {**one_eta_short, "d": run(0.4, 0, 1.0, init=4.0)}
    assert _passed(analyze_sharpness(spec_like, loose))["S2"]


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", NAMES)
def test_quick_profile_end_to_end(tmp_path, name):
    """Every quick profile runs in CI and passes all its claims (one test per experiment, so
    ``pytest -n 2`` distributes them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_experiment(
            name, out_dir=tmp_path, profile="quick", executor="serial", progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert not res.failures
    assert res.claims
    assert all(c.passed for c in res.claims), [c.to_dict() for c in res.claims]
    for f in ("claims.json", "config.json", "report.md"):
        assert (res.run_dir / f).exists()
    assert any(p.suffix == ".png" for p in res.figures)
    assert any(p.suffix == ".pdf" for p in res.figures)
