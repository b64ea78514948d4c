"""Tests of the Wu & Su (2023) reproduction (dynstab_repro.wu_su_2023).

Covers: configs and profiles, the registry entries, the data and initial networks drawn through
dynstab.data / dynstab.models, the shared helpers (selection, medians, documented defaults, the
GD warm-up rule, the one-thread guard), the units trained by dynstab's engine (equal to
dynstab.training.train run by run, the convergence rule, the library's measures), the
analysis of every claim family on synthetic records (one passing and one failing case per
claim), and end-to-end runs of the quick profiles through the runner.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from dynstab.curvature import gram_matrix
from dynstab.data import make_regression_dataset, unbalanced_diagonal_init
from dynstab.losses import half_mse
from dynstab.models import DiagonalLinearNet, TwoLayerReLU
from dynstab.norms import balancedness, gram_spectrum, path_norm
from dynstab.training import train, warmup
from dynstab_repro import get_experiment, list_groups, reproduce, run_experiment
from dynstab_repro.base import RunSpec
from dynstab_repro.wu_su_2023 import analysis as A
from dynstab_repro.wu_su_2023 import configs as CF
from dynstab_repro.wu_su_2023 import problems as P
from dynstab_repro.wu_su_2023 import units as U
from dynstab_repro.wu_su_2023.e1_diagonal_sweep import E1Config, E1DiagonalSweep, analyze_e1
from dynstab_repro.wu_su_2023.e2_balancing import E2Config, analyze_e2
from dynstab_repro.wu_su_2023.e3_relu_dynamics import E3Config, analyze_e3
from dynstab_repro.wu_su_2023.e4_relu_sweep import E4Config, E4ReLUSweep, analyze_e4, run_table
from dynstab_repro.wu_su_2023.e5_theory_checks import E5Config, E5TheoryChecks, analyze_e5

# --------------------------------------------------------------------------------------
# Configs and registry
# --------------------------------------------------------------------------------------


def test_e1_defaults_are_the_spec_settings():
    cfg = E1Config()
    assert (cfg.d, cfg.n, cfg.n_test, cfg.support, cfg.batch_size) == (1000, 300, 3000, 3, 1)
    np.testing.assert_allclose(cfg.lrs, np.logspace(-2.4, -0.9, 6), rtol=1e-12)
    assert cfg.seeds == (0, 1, 2)
    assert (cfg.sgd_steps, cfg.gd_steps, cfg.stop_loss) == (300_000, 30_000, 1e-10)
    assert cfg.min_full_lr_fraction == 0.2
    assert cfg.warmup_power == 3.0
    assert cfg.inputs == "gaussian"
    assert cfg.init_scale == 1.0
    assert E1Config.profile("full") == cfg


@pytest.mark.parametrize("cls", [E1Config, E2Config, E3Config, E4Config, E5Config])
def test_quick_profile_is_smaller_and_round_trips(cls):
    full, quick = cls.profile("full"), cls.profile("quick")
    assert quick != full
    assert cls.from_dict(quick.to_dict()) == quick
    with pytest.raises(ValueError, match="unknown config key"):
        cls.from_dict({"not_a_field": 1})


def test_overrides_parse_by_field_type():
    cfg = E1Config.profile("quick").with_overrides(["lrs=0.01,0.1", "seeds=3,4", "clip=none"])
    assert cfg.lrs == (0.01, 0.1)
    assert cfg.seeds == (3, 4)
    assert cfg.clip is None
    with pytest.raises(ValueError, match="must be one of"):
        E1Config().with_overrides(["inputs=laplace"])


def test_e2_e3_e4_spec_defaults():
    assert E2Config().lr == 0.05
    assert E2Config().r0s == (1.05, 2.0, 4.0, 8.0, 16.0)
    e3 = E3Config()
    assert (e3.d, e3.m, e3.n, e3.k, e3.init) == (100, 100, 300, 10, "lw")
    np.testing.assert_allclose(E4Config().lr_labels, np.logspace(-3, -1, 10), rtol=1e-12)


def test_registry_entries_and_group():
    names = [f"wu-su-2023/e{i}" for i in range(1, 6)]
    for name in names:
        assert get_experiment(name).name == name
    assert list_groups()["wu-su-2023"] == tuple(names)


def test_specs_are_one_unit_per_optimizer_with_unique_keys():
    cfg = dataclasses.replace(E1Config.profile("quick"), seeds=(0, 1))
    specs = E1DiagonalSweep().specs(cfg)
    assert [s.key for s in specs] == ["sgd", "gd"]
    e2 = get_experiment("wu-su-2023/e2")
    specs2 = e2.specs(E2Config.profile("quick"))
    assert len({s.key for s in specs2}) == len(specs2)
    # E2's SGD unit trains the r0 sweep and the η sweep; the shared (0.05, r0 = 8) run once.
    runs = E2Config.profile("quick").runs_of("sgd")
    assert len(runs) == len(set(runs)) == 4 + 3 - 1
    assert E2Config.profile("quick").runs_of("gd") == [(0.05, r0) for r0 in (2.0, 4.0, 8.0, 16.0)]


def test_flatten_runs_reads_units_of_many_runs_and_single_runs():
    res = {"sgd": {"runs": {"a": {"lr": 1.0}, "b": {"lr": 2.0}}}, "e": {"lr": 3.0}}
    assert U.flatten_runs(res) == {"a": {"lr": 1.0}, "b": {"lr": 2.0}, "e": {"lr": 3.0}}


# --------------------------------------------------------------------------------------
# Data, initial networks, measures and thresholds
# --------------------------------------------------------------------------------------


def test_unbalanced_init_has_exact_r0_and_rejects_r0_below_one():
    for r0 in (1.0, 1.05, 2.0, 16.0):
        net = P.init_unbalanced(40, r0, 0.1, seed=3)
        assert isinstance(net, DiagonalLinearNet)
        assert balancedness(net) == pytest.approx(r0, rel=1e-12)
    with pytest.raises(ValueError, match="r0 must be >= 1"):
        P.init_unbalanced(5, 0.5, 0.1, 0)


def test_inputs_kinds_and_errors():
    p = P.diagonal_problem(
        CF.DiagonalDataConfig(d=4, n=50, n_test=3, inputs="cube", support=1), seed=0
    )
    assert p.X.min() >= -1
    assert p.X.max() <= 1
    p = P.diagonal_problem(
        CF.DiagonalDataConfig(d=9, n=5, n_test=3, inputs="sphere", support=1), seed=0
    )
    torch.testing.assert_close(p.X.norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    bad = CF.DiagonalDataConfig(d=2, n=2, n_test=1, inputs="laplace", support=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown input_dist"):
        P.diagonal_problem(bad, seed=0)
    with pytest.raises(ValueError, match="unknown init"):
        P.init_relu(3, 2, "xavier", 0)


def test_data_and_inits_come_from_the_library():
    p = P.diagonal_problem(
        CF.DiagonalDataConfig(d=6, n=4, n_test=3, inputs="gaussian", support=2), seed=5
    )
    ds = make_regression_dataset(
        "sparse_linear",
        4,
        3,
        6,
        input_dist="gaussian",
        sparsity=2,
        generator=P.torch_generator(5, 1),
    )
    assert torch.equal(p.X, ds.X)
    assert torch.equal(p.y_test, ds.y_test)
    assert p.teacher.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    rp = P.relu_problem(d=5, n=4, n_test=2, k=3, seed=5)
    rds = make_regression_dataset("relu", 4, 2, 5, k=3, generator=P.torch_generator(5, 2))
    assert torch.equal(rp.X, rds.X)
    torch.testing.assert_close(rp.y, torch.relu(rp.X @ rp.teacher.T).sum(1), rtol=1e-12, atol=0)
    net = DiagonalLinearNet(
        7, init_scale=0.5, generator=P.torch_generator(2, 4), dtype=torch.float64
    )
    assert torch.equal(P.init_diagonal(7, 0.5, seed=2).a, net.a)
    ta, tb = unbalanced_diagonal_init(7, 4.0, std=0.1, generator=P.torch_generator(2, 5))
    unb = P.init_unbalanced(7, 4.0, 0.1, seed=2)
    assert torch.equal(unb.a, ta.double())
    assert torch.equal(unb.b, tb.double())
    rnet = TwoLayerReLU(5, 3, init="r3p", generator=P.torch_generator(2, 6), dtype=torch.float64)
    assert torch.equal(P.init_relu(5, 3, "r3p", seed=2).w, rnet.w)
    # Same seed and stream: same draw; other stream or seed: a different draw.
    x = [torch.randn(4, generator=P.torch_generator(s, t)) for s, t in ((1, 1), (1, 1), (1, 2))]
    x.append(torch.randn(4, generator=P.torch_generator(2, 1)))
    assert torch.equal(x[0], x[1])
    assert not torch.equal(x[0], x[2])
    assert not torch.equal(x[0], x[3])
    # The data of a unit do not depend on the other units (E1 and E2 share seed → data).
    cfg1, cfg2 = E1Config.profile("quick"), E2Config.profile("quick")
    assert torch.equal(cfg1.problem(0).X, cfg2.problem(0).X)


def test_shared_config_fields_and_documented_defaults():
    e1, e4 = E1Config(), E4Config()
    assert isinstance(e1, CF.SweepConfig)
    assert isinstance(e1, CF.DiagonalDataConfig)
    assert isinstance(e4, CF.ReLUDataConfig)
    assert isinstance(E3Config(), CF.TrainerConfig)
    assert not isinstance(E3Config(), CF.SweepConfig)
    # E4 keeps its own warm-up lengths on top of the shared sweep fields.
    assert (e4.sgd_warmup_steps, e4.gd_warmup_steps) == (100_000, 10_000)
    assert (e1.sgd_warmup_steps, e1.gd_warmup_steps) == (50_000, 5_000)
    assert E2Config.profile("quick").d == E1Config.profile("quick").d == CF.QUICK_DIAGONAL["d"]
    assert E3Config.profile("quick").k == E4Config.profile("quick").k == CF.QUICK_RELU["k"]
    amb = CF.documented_defaults(["GD schedule", "convergence"], {"inputs": "x"})
    assert list(amb) == ["GD schedule", "convergence", "inputs"]
    assert amb["convergence"].startswith("converged")
    with pytest.raises(KeyError):
        CF.documented_defaults(["A99"])
    for i in range(1, 6):
        exp = get_experiment(f"wu-su-2023/e{i}")
        assert exp.reference.startswith("Wu & Su (ICML 2023)")
        text = " ".join(
            [exp.description, exp.reference, *exp.ambiguities, *exp.ambiguities.values()]
        )
        assert "spec" not in text
        assert ".md" not in text
        assert "§" not in text


def test_gd_warmup_rule():
    cfg = E1Config()
    # η > 2/λ_max(G_0) needs the warm-up under "auto"; η ≤ 2/λ_max(G_0) does not.
    assert U.gd_warmup_steps(cfg, 0.1, 25.0) == cfg.gd_warmup_steps
    assert U.gd_warmup_steps(cfg, 0.08, 25.0) == 0
    always = dataclasses.replace(cfg, gd_warmup="always")
    never = dataclasses.replace(cfg, gd_warmup="never")
    assert U.gd_warmup_steps(always, 0.01, 25.0) == cfg.gd_warmup_steps
    assert U.gd_warmup_steps(never, 1.0, 25.0) == 0
    assert U.sweep_warmup(cfg, "sgd", 0.01, 25.0) == cfg.sgd_warmup_steps


def test_selection_medians_and_ratios():
    res = {
        "a": {"optimizer": "sgd", "lr": 0.1, "r0": 2.0, "converged": True, "trace": 10.0},
        "b": {"optimizer": "sgd", "lr": 0.1, "r0": 4.0, "converged": True, "trace": 16.0},
        "c": {"optimizer": "sgd", "lr": 0.2, "r0": 2.0, "converged": False, "trace": 99.0},
        "d": {"optimizer": "sgd", "lr": 0.2, "r0": 2.0, "converged": True, "diverged": True},
        "e": {"optimizer": "gd", "lr": 0.1, "r0": 2.0, "converged": True, "trace": 1.0},
    }
    assert [r["trace"] for r in A.select(res, "sgd")] == [10.0, 16.0]
    assert len(A.select(res, "sgd", converged_only=False, lr=0.2)) == 2
    assert A.medians(res, "sgd", "trace", "lr", [0.1, 0.2])[0] == 13.0
    assert math.isnan(A.medians(res, "sgd", "trace", "lr", [0.1, 0.2])[1])
    assert A.medians(res, "sgd", "trace", "r0", [4.0], lr=0.1) == [16.0]
    cells = A.summary_cells("sgd", A.select(res, "sgd", lr=0.1), ["trace"])
    assert cells == {"sgd_trace": 13.0, "sgd_runs": "2 converged"}
    # An unconverged or diverged run is counted, never a median entry or a blank.
    cells = A.summary_cells("sgd", [res["c"], res["d"]], ["trace"])
    assert math.isnan(cells["sgd_trace"])
    assert cells["sgd_runs"] == "1 not converged, 1 diverged"
    # The trace bound at the effective learning rate: Tr G·η_eff/2 (B = 1, q = 1).
    runs = [{"trace": 10.0, "lr": 0.1, "effective_lr": 0.15}, {"trace": 12.0, "lr": 0.1}]
    assert A.worst_trace_ratio(runs, 100, 1) == pytest.approx(max(10 * 0.15 / 2, 12 * 0.1 / 2))
    assert math.isnan(A.worst_trace_ratio([], 100, 1))
    assert A.max_over_min([2.0, 8.0, 4.0]) == 4.0
    assert math.isnan(A.max_over_min([2.0, float("nan")]))
    assert A.max_over_min([2.0, float("nan"), 3.0], skip_missing=True) == 1.5
    assert math.isnan(A.max_over_min([]))


def test_run_one_uses_one_thread_and_restores_torch_threads():
    # threadpoolctl is optional (it comes with scikit-learn); without it only torch is capped.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = {}

    class Probe(U.WuSuExperiment):
        name = "wu-su-2023/probe"
        config_cls = E5Config

        def specs(self, config):
            return [RunSpec("x")]

        def compute(self, config, spec):
            np.ones((4, 4)) @ np.ones((4, 4))
            seen["torch"] = torch.get_num_threads()
            seen["blas"] = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
            return {}

        def analyze(self, config, results):
            return []

    before = torch.get_num_threads()
    assert Probe().run_one(E5Config(), RunSpec("x")) == {}
    assert seen["torch"] == 1
    assert seen["blas"]
    assert all(t == 1 for t in seen["blas"])
    assert torch.get_num_threads() == before


def test_measures_are_the_librarys_and_exact():
    prob = P.diagonal_problem(
        CF.DiagonalDataConfig(d=6, n=4, n_test=5, inputs="gaussian", support=2), seed=0
    )
    net = P.init_diagonal(6, 1.0, 2)
    full = U.diagonal_measures(net, prob)
    cheap = U.diagonal_measures(net, prob, spectrum=False)
    exact = gram_spectrum(gram_matrix(net, prob.X))  # autograd Jacobian
    assert full["trace"] == pytest.approx(exact.trace, rel=1e-12)
    assert full["frobenius"] == pytest.approx(exact.frobenius, rel=1e-12)
    assert full["lambda_max"] == pytest.approx(exact.lambda_max, rel=1e-12)
    assert cheap["trace"] == pytest.approx(full["trace"], rel=1e-12)
    s = (prob.X**2).mean(0)
    beta = (net.a * net.b).detach()
    assert full["weighted_l1"] == pytest.approx(float((s * beta.abs()).sum()), rel=1e-12)
    assert full["trace"] >= 2 * full["weighted_l1"]  # Tr G ≥ 2‖β‖_{1,s} (AM–GM)
    with torch.no_grad():
        assert full["train_loss"] == pytest.approx(float(half_mse(net(prob.X), prob.y)), rel=1e-12)
    rp = P.relu_problem(d=5, n=6, n_test=4, k=2, seed=0)
    rnet = P.init_relu(5, 7, "lw", 0)
    f, c = U.relu_measures(rnet, rp), U.relu_measures(rnet, rp, spectrum=False)
    exact = gram_spectrum(gram_matrix(rnet, rp.X))
    assert f["lambda_max"] == pytest.approx(exact.lambda_max, rel=1e-12)
    assert c["trace"] == pytest.approx(f["trace"], rel=1e-12)
    assert f["path_norm"] == pytest.approx(path_norm(rnet))
    g = torch.autograd.grad(half_mse(rnet(rp.X), rp.y), list(rnet.parameters()))
    assert f["grad_norm"] == pytest.approx(math.sqrt(sum(float((x**2).sum()) for x in g)))
    with pytest.raises(TypeError, match="DiagonalLinearNet or TwoLayerReLU"):
        U.solution_measures(torch.nn.Linear(2, 1), rp)


def test_thresholds_come_from_the_criteria():
    assert A.sgd_curvature_threshold(0.1, 300) == pytest.approx(20.0)
    # without replacement, B = 4: q = 1/B → 2B/η
    assert A.sgd_curvature_threshold(0.1, 300, 4, "without") == pytest.approx(80.0)
    assert A.gd_curvature_threshold(0.5) == pytest.approx(4.0)


def test_spearman_and_history_helpers():
    assert A.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(A.spearman([1, 2], [1, 2]))
    with pytest.raises(ValueError, match="same length"):
        A.spearman([1, 2, 3], [1, 2])
    h = U.subsample_history({"step": list(range(1000)), "loss": list(range(1000))}, 50)
    assert len(h["step"]) <= 50
    assert h["step"][0] == 0
    assert h["step"][-1] == 999
    assert A.median([1.0, float("nan"), 3.0]) == 2.0


# --------------------------------------------------------------------------------------
# Units: dynstab's engine, run by run equal to dynstab.training.train
# --------------------------------------------------------------------------------------


def _cfg(**kw):
    return dataclasses.replace(E1Config.profile("quick"), **({"seeds": (0,)} | kw))


@pytest.mark.parametrize("optimizer", ["sgd", "gd"])
def test_a_unit_equals_train_run_by_run(optimizer):
    # Two learning rates of one unit (batched) against two single runs of dynstab.training.train
    # with the unit's index stream, schedule and stopping rule. Both use the closed-form
    # gradient (equal to autograd per step to round-off, tests/test_training_engine.py). GD
    # stays below 2/λ_max(G): in the unstable regime (η > 2/λ_max, as during a warm-up from an
    # unstable start) the round-off differences between one run's and two runs' matrix
    # products grow to 1e-4 and run-by-run equality to 1e-12 cannot hold.
    cfg = _cfg(
        d=30,
        n=12,
        n_test=20,
        sgd_steps=8000,
        gd_steps=3000,
        sgd_warmup_steps=500,
        gd_warmup="always",
        gd_warmup_steps=300,
    )
    prob = cfg.problem(0)
    model = P.init_diagonal(cfg.d, 1.0, 0)
    init = U.solution_measures(model, prob)
    lam = init["lambda_max"]
    lrs = (0.01, 0.02) if optimizer == "sgd" else (0.5 / lam, 1.5 / lam)  # GD: warm-ups
    plans = [
        U.PlannedRun(f"r{i}", lr, 0, prob, model, U.sweep_warmup(cfg, optimizer, lr, lam), init)
        for i, lr in enumerate(lrs)
    ]
    steps = U.sweep_steps(cfg, optimizer)
    recs = U.train_and_measure(cfg, plans, optimizer=optimizer, steps=steps)
    for plan in plans:
        net = DiagonalLinearNet.from_tensors(model.a, model.b)
        res = train(
            net,
            prob.X,
            prob.y,
            lr=plan.lr,
            steps=steps,
            batch_size=1 if optimizer == "sgd" else None,
            seed=P.stream_seed(0, P.STREAM_SAMPLER) if optimizer == "sgd" else None,
            schedule=warmup(plan.warmup_steps) if plan.warmup_steps else None,
            stop_loss=cfg.stop_loss,
            require_full_lr=True,
            divergence_threshold=U.DIVERGENCE_LOSS,
            eval_every=U.SGD_CHECK_EVERY if optimizer == "sgd" else U.GD_CHECK_EVERY,
            gradient="closed_form",
        )
        rec = recs[plan.key]
        assert (rec["steps_run"], rec["converged"]) == (res.steps_run, res.converged)
        assert rec["effective_lr"] == res.effective_lr
        assert rec["trace"] == pytest.approx(U.diagonal_measures(net, prob)["trace"], rel=1e-12)
        assert rec["init_trace"] == init["trace"]
        assert (rec["optimizer"], rec["seed"], rec["lr"]) == (optimizer, 0, plan.lr)
    assert all(r["converged"] for r in recs.values())
    assert recs["r0"]["steps_run"] != recs["r1"]["steps_run"]


def test_unit_convergence_needs_full_lr_steps_and_flags_divergence():
    cfg = _cfg(d=40, n=5, n_test=10, gd_steps=20_000, gd_warmup="always", gd_warmup_steps=1000)
    prob = P.diagonal_problem(
        CF.DiagonalDataConfig(d=40, n=5, n_test=10, inputs="gaussian", support=1), seed=0
    )
    model = DiagonalLinearNet.from_tensors(
        torch.full((40,), 0.3, dtype=torch.float64), torch.full((40,), 0.3, dtype=torch.float64)
    )
    plans = [
        U.PlannedRun("ok", 0.02, 0, prob, model, 1000),
        U.PlannedRun("bad", 50.0, 0, prob, model, 0),
    ]
    with pytest.warns(UserWarning, match="diverged"):
        recs = U.train_and_measure(cfg, plans, optimizer="gd", steps=20_000)
    # The loss is tiny long before the warm-up ends, but ≥ 20 % of the updates must be at the
    # full η: update 999 is the first at full rate, so no stop before (1000 − 1)/0.8.
    ok = recs["ok"]
    assert ok["converged"]
    assert ok["steps_run"] >= 999 / 0.8
    assert ok["final_loss"] <= 1e-10
    assert ok["lr_at_convergence"] == pytest.approx(0.02)
    assert ok["converged_at_full_lr"]
    bad = recs["bad"]
    assert bad["diverged"]
    assert not bad["converged"]
    assert math.isnan(bad["trace"])
    with pytest.raises(ValueError, match="optimizer must be"):
        U.train_and_measure(cfg, plans[:1], optimizer="adam", steps=1)


def test_relu_unit_records_a_history_of_library_monitors():
    cfg = dataclasses.replace(E3Config.profile("quick"), d=6, m=8, n=10, n_test=20, k=2)
    prob = cfg.problem(0)
    plan = U.PlannedRun("sgd", 0.02, 0, prob, cfg.initial_model(0), 200)
    keys = ("test_mse", "grad_norm", "trace", "path_norm")
    rec = U.train_and_measure(
        cfg, [plan], optimizer="sgd", steps=1000, record_points=5, monitor_keys=keys
    )["sgd"]
    h = rec["history"]
    assert set(h) == {"step", "lr", "loss", *keys}
    assert h["step"][0] == 0
    assert len(h["step"]) == len(h["trace"]) <= 5 + 1
    assert all(s % U.SGD_CHECK_EVERY == 0 for s in h["step"][:-1])
    assert h["path_norm"][0] == pytest.approx(path_norm(cfg.initial_model(0)))
    assert h["trace"][0] == pytest.approx(rec["init_trace"], rel=1e-12)


def test_small_sgd_unit_respects_the_trace_bound():
    cfg = _cfg(d=80, n=20, n_test=100, sgd_steps=20_000, sgd_warmup_steps=4000)
    out = E1DiagonalSweep().compute(
        dataclasses.replace(cfg, lrs=(0.05,)),
        RunSpec("sgd", {"optimizer": "sgd"}),
    )
    (rec,) = out["runs"].values()
    assert rec["converged"]
    assert not rec["diverged"]
    assert rec["trace"] <= 2 / A.effective_lr(rec) * 1.05
    assert rec["init_trace"] > rec["trace"]


# --------------------------------------------------------------------------------------
# Analysis on synthetic result dicts: one passing and one failing case per claim
# --------------------------------------------------------------------------------------


def _status(claims):
    return {c.id: c.passed for c in claims}


def _check(analyze, cfg, good, mutate, target):
    ok = _status(analyze(cfg, good))
    assert ok
    assert all(ok.values()), ok
    bad = copy.deepcopy(good)
    mutate(bad)
    st = _status(analyze(cfg, bad))
    assert st[target] is False, st
    assert all(v for k, v in st.items() if k != target), st


def _e1_results(cfg):
    res = {}
    for lr in cfg.lrs:
        base = {
            "lr": lr,
            "seed": 0,
            "converged": True,
            "diverged": False,
            "effective_lr": lr,
            "init_lambda_max": 20.0,
        }
        res[f"sgd_{lr}"] = base | {
            "optimizer": "sgd",
            "trace": 0.8 * 2 / lr,
            "frobenius": 0.1 * lr**-0.5,
            "lambda_max": 2.0,
            "test_mse": 1e-3 / lr**2,
        }
        res[f"gd_{lr}"] = base | {
            "optimizer": "gd",
            "trace": 800.0,
            "frobenius": 80.0,
            "lambda_max": 18.0,
            "test_mse": 180.0,
        }
    return res


def _set(key, **values):
    def mutate(res):
        res[key].update(values)

    return mutate


E1_CASES = {
    "E1.1": _set("sgd_0.04", trace=1.2 * 2 / 0.04),
    "E1.2": lambda r: [r[k].update(trace=0.3 * 2 / r[k]["lr"]) for k in r if k.startswith("sgd")],
    "E1.3": lambda r: [
        r[k].update(frobenius=0.5 * r[k]["trace"]) for k in r if k.startswith("sgd")
    ],
    "E1.4": _set("gd_0.004", trace=1600.0),
    "E1.5": lambda r: [r[k].update(test_mse=1.0) for k in r if k.startswith("sgd")],
    "E1.6": _set("gd_0.004", test_mse=400.0),
}


@pytest.mark.parametrize("target", sorted(E1_CASES))
def test_analyze_e1(target):
    cfg = E1Config.profile("quick")
    _check(analyze_e1, cfg, _e1_results(cfg), E1_CASES[target], target)


def test_analyze_e1_without_results_fails_instead_of_crashing():
    claims = analyze_e1(E1Config.profile("quick"), {})
    assert claims
    assert not any(c.passed for c in claims)


def test_e1_4_e1_6_need_two_gd_stable_lrs_with_converged_runs():
    # with only one of the GD-stable-at-init η converged, max/min over the
    # finite medians is 1.0 and E1.4/E1.6 passed trivially; they must fail now.
    cfg = E1Config.profile("quick")  # λ_max(G_0) = 20 ⇒ stable η: 0.004, 0.0126, 0.04
    res = _e1_results(cfg)
    for lr in (0.004, 0.0126):
        res[f"gd_{lr}"]["converged"] = False
    meds = A.medians(res, "gd", "trace", "lr", [0.004, 0.0126, 0.04])
    assert A.max_over_min(meds, skip_missing=True) == 1.0  # the previously trivial situation
    claims = {c.id: c for c in analyze_e1(cfg, res)}
    assert claims["E1.4"].passed is False
    assert "(1 with a converged GD run)" in claims["E1.4"].measured
    assert claims["E1.6"].passed is False
    assert "1/3 with a converged run" in claims["E1.6"].measured
    # Two converged stable η remain enough.
    res["gd_0.0126"]["converged"] = True
    st = _status(analyze_e1(cfg, res))
    assert st["E1.4"], st
    assert st["E1.6"], st


def test_e1_6_fails_when_sgd_at_the_largest_lr_did_not_converge():
    # A NaN SGD median at the largest η made GD/SGD = inf (pass); now it fails.
    cfg = E1Config.profile("quick")
    res = _e1_results(cfg)
    res["sgd_0.126"]["converged"] = False
    assert _status(analyze_e1(cfg, res))["E1.6"] is False


def _e2_results(cfg):
    res = {}
    sweep = {0.025: 2.5, 0.05: 1.7, 0.1: 1.3}
    for r0 in cfg.r0s:
        base = {
            "lr": cfg.lr,
            "r0": r0,
            "converged": True,
            "diverged": False,
            "effective_lr": cfg.lr,
        }
        res[f"sgd_{r0}"] = base | {"optimizer": "sgd", "balancedness": 1.7, "trace": 32.0}
        res[f"gd_{r0}"] = base | {"optimizer": "gd", "balancedness": 1.5 * r0, "trace": 500.0}
    for lr, rt in sweep.items():
        res[f"sgd_sweep_{lr}"] = {
            "optimizer": "sgd",
            "lr": lr,
            "r0": cfg.lr_sweep_r0,
            "converged": True,
            "diverged": False,
            "effective_lr": lr,
            "balancedness": rt,
            "trace": 0.8 * 2 / lr,
        }
    del res["sgd_sweep_0.05"]  # the (0.05, r0 = 8) unit is shared with the r0 sweep
    res["sgd_8.0"]["balancedness"] = 1.7
    return res


E2_CASES = {
    "E2.1": _set("sgd_4.0", balancedness=3.0),
    "E2.2": lambda r: (
        r["sgd_2.0"].update(balancedness=1.05),
        r["sgd_16.0"].update(balancedness=4.0),
    ),
    "E2.3": lambda r: (
        r["sgd_sweep_0.025"].update(balancedness=1.3),
        r["sgd_sweep_0.1"].update(balancedness=2.5),
    ),
    "E2.4": _set("gd_4.0", balancedness=3.0),
    "E2.5": _set("sgd_2.0", trace=1.2 * 2 / 0.05),
}


@pytest.mark.parametrize("target", sorted(E2_CASES))
def test_analyze_e2(target):
    cfg = E2Config.profile("quick")
    _check(analyze_e2, cfg, _e2_results(cfg), E2_CASES[target], target)


@pytest.mark.parametrize("r0", [2.0, 4.0, 8.0, 16.0])
def test_e2_4_rejects_a_missing_gd_median_at_any_position(r0):
    # the builtin min skipped a NaN unless it came first.
    cfg = E2Config.profile("quick")
    res = _e2_results(cfg)
    res[f"gd_{r0}"]["converged"] = False
    st = _status(analyze_e2(cfg, res))
    assert st["E2.4"] is False, st


def test_strict_min_max_and_count_finite_are_order_independent():
    nan = float("nan")
    for vals in ([nan, 1.0, 2.0], [1.0, nan, 2.0], [1.0, 2.0, nan]):
        assert math.isnan(A.strict_min(vals))
        assert math.isnan(A.strict_max(vals))
        assert A.count_finite(vals) == 2
    assert A.strict_min([3.0, 1.0, 2.0]) == 1.0
    assert A.strict_max([3.0, 1.0, 2.0]) == 3.0
    assert math.isnan(A.strict_min([]))
    assert math.isnan(A.strict_max([]))
    runs = [{"trace": 10.0, "lr": 0.1}, {"trace": nan, "lr": 0.1}]
    assert math.isnan(A.worst_trace_ratio(runs, 300, 1))


def _e3_results(cfg):
    # Tr G crosses 2/η at index 70 (step 28 283); ‖∇L‖ then falls 1e3 in 15 points (6 061
    # steps = 0.15 of the 40 000 steps run, E3.2 bound 0.25).
    lr = cfg.lr
    thr = 2 / lr
    steps = np.linspace(0, 40_000, 100)
    grad = np.concatenate([np.geomspace(10, 1, 70), np.geomspace(1, 1e-6, 30)])
    trace = np.concatenate([np.geomspace(20 * thr, 1.2 * thr, 70), np.full(30, 0.8 * thr)])
    return {
        "sgd_seed=0": {
            "seed": 0,
            "lr": lr,
            "effective_lr": lr,
            "converged": True,
            "final_loss": 9e-11,
            "trace": 0.8 * 2 / lr,
            "init_trace": 20 * 2 / lr,
            "path_norm": 15.0,
            "test_mse": 1.0,
            "init_test_mse": 20.0,
            "history": {
                "step": steps.tolist(),
                "path_norm": np.linspace(70, 15, 100).tolist(),
                "grad_norm": grad.tolist(),
                "trace": trace.tolist(),
            },
        }
    }


def _hist(key, values):
    def mutate(res):
        res["sgd_seed=0"]["history"][key] = values

    return mutate


E3_CASES = {
    "E3.1": _set("sgd_seed=0", converged=False),
    "E3.2": _hist("grad_norm", np.geomspace(10, 1.0, 100).tolist()),
    "E3.3": _set("sgd_seed=0", trace=0.3 * 2 / (0.1 / math.sqrt(50))),
    "E3.4": _hist("path_norm", np.linspace(20, 15, 100).tolist()),
    "E3.5": _set("sgd_seed=0", test_mse=15.0),
}


def _e3_cfg():
    return dataclasses.replace(E3Config.profile("quick"), seeds=(0,))


@pytest.mark.parametrize("target", sorted(E3_CASES))
def test_analyze_e3(target):
    cfg = _e3_cfg()
    _check(analyze_e3, cfg, _e3_results(cfg), E3_CASES[target], target)


def test_e3_2_needs_a_fast_drop_after_entering_the_stable_region():
    # E3.2 used max/final ‖∇L‖ ≥ 1e3, implied by reaching loss ≤ 1e-10. A run that
    # converges with a steady geometric decay over the whole run must now fail E3.2 only.
    cfg = _e3_cfg()
    good = _e3_results(cfg)
    claims = {c.id: c for c in analyze_e3(cfg, good)}
    # t_s = step of index 70, t_d = index 85: (85 − 70)/99 of the steps run.
    assert f"{15 / 99:.3g}" in claims["E3.2"].measured
    assert claims["E3.2"].passed
    slow = copy.deepcopy(good)
    h = slow["sgd_seed=0"]["history"]
    thr = 2 / cfg.lr
    h["grad_norm"] = np.geomspace(10, 1e-5, 100).tolist()  # max/final = 1e6 (old test passed)
    h["trace"] = np.concatenate([np.full(10, 5 * thr), np.full(90, 0.8 * thr)]).tolist()
    st = _status(analyze_e3(cfg, slow))
    assert st["E3.2"] is False, st
    assert all(v for k, v in st.items() if k != "E3.2"), st
    # (t_d − t_s)/steps = 50/99: the 3-decade drop from index 10 takes 49.5 → 50 points.
    assert f"{50 / 99:.3g}" in {c.id: c for c in analyze_e3(cfg, slow)}["E3.2"].measured
    never = copy.deepcopy(good)
    never["sgd_seed=0"]["history"]["trace"] = np.full(100, 1.5 * thr).tolist()
    st = _status(analyze_e3(cfg, never))
    assert st["E3.2"] is False, st
    assert st["E3.1"] is True, st


def test_e3_3_uses_the_effective_learning_rate():
    # The final Tr G is judged at the effective η, not the nominal η.
    cfg = _e3_cfg()
    low = _e3_results(cfg)
    low["sgd_seed=0"]["effective_lr"] = 0.5 * cfg.lr  # η_eff·Tr G/2 = 0.4 (nominal: 0.8)
    c = {c.id: c for c in analyze_e3(cfg, low)}["E3.3"]
    assert c.passed is False, c
    assert "0.4" in c.measured, c
    high = _e3_results(cfg)
    high["sgd_seed=0"].update(effective_lr=0.5 * cfg.lr, trace=1.5 * 2 / cfg.lr)  # 0.75 (nom. 1.5)
    c = {c.id: c for c in analyze_e3(cfg, high)}["E3.3"]
    assert c.passed is True, c
    assert "0.75" in c.measured, c


def _e4_results(cfg):
    res = {}
    sq = math.sqrt(cfg.d)
    pn_sgd = {0.003: 70.0, 0.01: 55.0, 0.03: 33.0, 0.1: 15.0}
    te_sgd = {0.003: 11.0, 0.01: 5.7, 0.03: 2.5, 0.1: 1.0}
    gd = {
        0.003: (67.0, 0.003, 72.0, 11.0),
        0.01: (67.0, 0.01, 72.0, 11.0),
        0.03: (67.0, 0.003, 72.0, 11.0),
        0.1: (24.0, 0.056, 46.0, 4.0),
    }
    for lab in cfg.lr_labels:
        eta = lab / sq
        res[f"sgd_{lab}"] = {
            "optimizer": "sgd",
            "seed": 0,
            "label": lab,
            "lr": eta,
            "effective_lr": eta,
            "converged": True,
            "diverged": False,
            "init_trace": 2000.0,
            "trace": min(1900.0, 0.8 * 2 / eta),
            "path_norm": pn_sgd[lab],
            "test_mse": te_sgd[lab],
        }
        lam, eff, pn, te = gd[lab]
        res[f"gd_{lab}"] = {
            "optimizer": "gd",
            "seed": 0,
            "label": lab,
            "lr": lab,
            "effective_lr": eff,
            "converged": True,
            "diverged": False,
            "init_lambda_max": 67.0,
            "lambda_max": lam,
            "path_norm": pn,
            "test_mse": te,
        }
    return res


E4_CASES = {
    "E4.1": _set("sgd_0.03", trace=0.3 * 2 / (0.03 / math.sqrt(50))),
    "E4.2": lambda r: [
        r[f"sgd_{x}"].update(path_norm=10 + 100 * x) for x in (0.003, 0.01, 0.03, 0.1)
    ],
    "E4.3": _set("gd_0.003", lambda_max=200.0),
    "E4.4": _set("gd_0.003", path_norm=100.0),
    "E4.5": lambda r: [r[f"sgd_{x}"].update(test_mse=1 + 10 * x) for x in (0.003, 0.01, 0.03, 0.1)],
}


@pytest.mark.parametrize("target", sorted(E4_CASES))
def test_analyze_e4(target):
    cfg = E4Config.profile("quick")
    _check(analyze_e4, cfg, _e4_results(cfg), E4_CASES[target], target)


@pytest.mark.parametrize("label", [0.003, 0.01, 0.03, 0.1])
def test_e4_1_fails_when_any_sgd_run_did_not_converge(label):
    # a NaN median (no converged run at a label) fails E4.1 wherever it sits in
    # the label order, and every SGD run must converge.
    cfg = E4Config.profile("quick")
    res = _e4_results(cfg)
    res[f"sgd_{label}"]["converged"] = False
    assert _status(analyze_e4(cfg, res))["E4.1"] is False


def test_e4_1_and_e4_3_require_every_run_to_converge():
    # A second seed that did not converge leaves every median finite; E4.1/E4.3 must still fail.
    cfg = E4Config.profile("quick")
    for opt, target in (("sgd", "E4.1"), ("gd", "E4.3")):
        res = _e4_results(cfg)
        extra = copy.deepcopy(res[f"{opt}_0.01"]) | {"seed": 1, "converged": False}
        res[f"{opt}_0.01_seed1"] = extra
        st = _status(analyze_e4(cfg, res))
        assert st[target] is False, (target, st)
        assert "1 not converged" in {c.id: c for c in analyze_e4(cfg, res)}[target].measured


def _e5_results():
    rnd = {
        "kind": "random",
        "eta_star": 1.0,
        "eta_star_kronecker": 1.0,
        "frobenius_bound": 1.5,
        "trace_bound": 1.25,
        "ratio": 0.8,
    }
    orth = rnd | {"kind": "orthogonal", "ratio": 1.0, "trace_bound": 1.0}
    up = np.geomspace(1, 1e6, 50).tolist()
    down = np.geomspace(1, 1e-3, 50).tolist()
    b_runs = [
        {"factor": 1.1, "growth": 1.1, "exact_residual": up, "exact_param": up},
        {"factor": 0.9, "growth": 0.9, "exact_residual": down, "exact_param": down},
    ]
    hg = {"loss": 1e-30, "H_minus_G_rel": 1e-15, "trace_rel_err": 1e-16}
    init = {"loss": 1.0, "H_minus_G_rel": 0.3, "trace_rel_err": 0.0}
    return {
        "a": {"instances": [rnd, copy.deepcopy(rnd), orth]},
        "b": {"runs": b_runs},
        "c": {
            "diagonal_interp": hg,
            "relu_interp": dict(hg),
            "diagonal_init": init,
            "relu_init": dict(init),
        },
        "d": {
            "diagonal": {
                "trace_autograd": 10.0,
                "trace_closed_form": 10.0,
                "grad_closed_form_rel_err": 1e-16,
                "balanced_trace": 4.0,
                "balanced_2_weighted_l1": 4.0,
                "beta_change": 0.0,
            },
            "relu": {
                "trace_autograd": 9.0,
                "trace_closed_form": 9.0,
                "grad_closed_form_rel_err": 0.0,
                "ratio_before": 1.8,
                "ratio_balanced": 0.99,
                "f_change": 1e-15,
            },
        },
        "e_seed=0": {
            "ref_norm2": 3.0,
            "min_l2": {
                "l1": 21.0,
                "lambda_max": 0.925,
                "trace": 41.9,
                "test_mse": 2.09,
                "train_loss": 1e-30,
            },
            "sparse": {
                "l1": 3.0,
                "lambda_max": 2.25,
                "trace": 5.82,
                "test_mse": 0.0,
                "train_loss": 0.0,
            },
        },
    }


E5_CASES = {
    "E5.a1": lambda r: r["a"]["instances"][0].update(ratio=1.1),
    "E5.a2": lambda r: r["a"]["instances"][1].update(eta_star_kronecker=1.001),
    "E5.b": lambda r: r["b"]["runs"][1].update(growth=1.01),
    "E5.c": lambda r: r["c"]["relu_interp"].update(H_minus_G_rel=1e-5),
    "E5.d1": lambda r: r["d"]["relu"].update(trace_closed_form=9.0001),
    "E5.d2": lambda r: r["d"]["relu"].update(ratio_balanced=1.3),
    "E5.e1": lambda r: r["e_seed=0"]["sparse"].update(test_mse=0.1),
    "E5.e2": lambda r: r["e_seed=0"]["min_l2"].update(l1=40.0),
}


@pytest.mark.parametrize("target", sorted(E5_CASES))
def test_analyze_e5(target):
    cfg = E5Config()  # e_d = 1000, e_n = 300 also enables E5.e2
    _check(analyze_e5, cfg, _e5_results(), E5_CASES[target], target)


# --------------------------------------------------------------------------------------
# Claim model: paper side, statuses fixed by the rules, run categories, seeds
# --------------------------------------------------------------------------------------


def _by_id(claims):
    return {c.id: c for c in claims}


@pytest.mark.parametrize(
    ("analyze", "cfg", "results"),
    [
        (analyze_e1, E1Config.profile("quick"), lambda c: _e1_results(c)),
        (analyze_e2, E2Config.profile("quick"), lambda c: _e2_results(c)),
        (analyze_e3, dataclasses.replace(E3Config.profile("quick"), seeds=(0,)), _e3_results),
        (analyze_e4, E4Config.profile("quick"), lambda c: _e4_results(c)),
        (analyze_e5, E5Config(), lambda c: _e5_results()),
    ],
)
def test_every_claim_has_the_papers_side_and_a_rule(analyze, cfg, results):
    for c in analyze(cfg, results(cfg)):
        assert c.paper.strip(), c.id
        assert c.source.strip(), c.id
        assert c.criterion.strip(), c.id
        assert c.measured.strip(), c.id


def test_profiles_run_enough_seeds():
    for cls in (E1Config, E2Config, E3Config, E4Config):
        assert len(cls.profile("full").seeds) >= 3, cls
        assert len(cls.profile("quick").seeds) >= 2, cls
    assert len(E5Config.profile("full").e_seeds) >= 3
    assert len(E5Config.profile("quick").e_seeds) >= 2


def test_claims_report_median_and_range_over_seeds():
    cfg = E1Config.profile("quick")
    res = _e1_results(cfg)
    for key, rec in list(res.items()):
        other = copy.deepcopy(rec) | {"seed": 1}
        other["trace"] = rec["trace"] * 0.9
        res[key + "_s1"] = other
    c = _by_id(analyze_e1(cfg, res))["E1.1"]
    assert c.measurement is not None
    assert c.measurement.n_seeds == 2
    assert c.measurement.low == pytest.approx(0.8 * 0.9)
    assert c.measurement.high == pytest.approx(0.8)
    assert "median of 2 seeds" in c.measured


def test_e2_1_includes_r0_2_and_reports_it_as_not_reproduced():
    cfg = E2Config.profile("quick")
    assert 2.0 in cfg.r0s
    assert 2.0 in E2Config().r0s
    res = _e2_results(cfg)  # r_T = 1.7 everywhere: r_T/r0 = 0.85 at r0 = 2, ≤ 0.43 above
    c = _by_id(analyze_e2(cfg, res))["E2.1"]
    assert c.status.value == "not reproduced", c
    assert "r0 = 2" in c.note
    assert "0.85" in c.measured
    # Well below r0 = 2 as well → reproduced.
    for key in ("sgd_2.0",):
        res[key]["balancedness"] = 1.1
    assert _by_id(analyze_e2(cfg, res))["E2.1"].status.value == "reproduced"
    # A miss at r0 ≥ 4 is a failure, not a 'not reproduced'.
    res["sgd_4.0"]["balancedness"] = 3.0
    assert _by_id(analyze_e2(cfg, res))["E2.1"].status.value == "failed"


def test_e3_2_is_adapted_and_states_its_t_s():
    cfg = _e3_cfg()
    c = _by_id(analyze_e3(cfg, _e3_results(cfg)))["E3.2"]
    assert c.status.value == "adapted"
    assert "after measuring" in c.note
    assert "end of the warm-up" in c.note
    assert "·T_w" in c.measured


def test_run_outcome_categories():
    assert A.run_outcome({"diverged": True, "converged": False, "lr": 0.1}) == "diverged"
    assert A.run_outcome({"converged": False, "lr": 0.1}) == "not converged"
    assert A.run_outcome({"converged": True, "lr": 0.1, "effective_lr": 0.1}) == "converged"
    warm = {"converged": True, "lr": 0.1, "effective_lr": 0.0999}
    assert A.run_outcome(warm) == "converged in warm-up"
    assert A.is_minimum(warm)
    assert not A.is_ok(warm)
    res = {"w": warm | {"optimizer": "gd"}}
    assert A.select(res, "gd") == []
    assert A.minima(res, "gd") == [res["w"]]


def test_e4_warm_up_minima_are_their_own_category():
    # GD at labels 0.03 and 0.1 converged during the warm-up (η_eff/η = 0.1 and 0.56).
    cfg = E4Config.profile("quick")
    res = _e4_results(cfg)
    claims = _by_id(analyze_e4(cfg, res))
    e43 = claims["E4.3"]
    assert "2 converged in warm-up" in e43.measured
    # No GD run above 2/λ_max(G_0) = 0.0299 at its target η: not reproduced, with the reason.
    assert e43.status.value == "not reproduced", e43
    assert "during the warm-up" in e43.note
    # Not counted as runs at the target η: the medians at those labels are missing ...
    assert math.isnan(A.medians(res, "gd", "lambda_max", "label", [0.1])[0])
    # ... and they are listed in the report table with η_eff/η.
    rows = run_table(res)
    assert {(r["optimizer"], r["label"]) for r in rows} == {("gd", 0.03), ("gd", 0.1)}
    assert {r["outcome"] for r in rows} == {"converged in warm-up"}
    assert sorted(r["eta_eff/eta"] for r in rows) == pytest.approx([0.1, 0.56])
    # A GD run at the largest label at its target η makes E4.3 testable again.
    res["gd_0.1"]["effective_lr"] = 0.1
    res["gd_0.1"]["lambda_max"] = 19.0
    assert _by_id(analyze_e4(cfg, res))["E4.3"].status.value == "reproduced"
    # SGD runs that converged in warm-up leave their label out of the trends, said so.
    res["sgd_0.003"]["effective_lr"] = 0.5 * res["sgd_0.003"]["lr"]
    e42 = _by_id(analyze_e4(cfg, res))["E4.2"]
    assert e42.status.value == "reproduced"
    assert "0.003 (1 converged in warm-up)" in e42.measured


def test_e4_diverged_runs_are_counted_and_drawn(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynstab_repro.wu_su_2023 import plots

    cfg = E4Config.profile("quick")
    res = _e4_results(cfg)
    res["sgd_0.1"].update(diverged=True, converged=False, trace=float("nan"))
    e41 = _by_id(analyze_e4(cfg, res))["E4.1"]
    assert e41.status.value == "failed"
    assert "1 diverged" in e41.measured
    assert any(r["outcome"] == "diverged" for r in run_table(res))
    fig, ax = plt.subplots()
    counts = plots.mark_runs(
        ax, A.select(res, "sgd", converged_only=False), lambda r: r["label"], lambda r: r["trace"]
    )
    assert counts == {"converged": 3, "diverged": 1}
    labels = [t.get_text() for t in ax.legend().get_texts()]
    assert labels == ["diverged (1)"]
    plt.close(fig)
    figs = E4ReLUSweep().plot(cfg, {"sgd": {"runs": res}}, tmp_path)
    assert any(p.suffix == ".png" for p in figs)


def test_e5_unknown_part_raises():
    with pytest.raises(ValueError, match="unknown E5 part"):
        E5TheoryChecks().run_one(E5Config.profile("quick"), RunSpec("z", {"part": "z"}))


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------


def test_e5_quick_profile_end_to_end(tmp_path):
    res = run_experiment(
        "wu-su-2023/e5", out_dir=tmp_path, profile="quick", executor="serial", progress=False
    )
    assert not res.failures
    assert res.claims
    assert all(c.passed for c in res.claims), [c for c in res.claims if not c.passed]
    assert {c.id for c in res.claims} >= {"E5.a1", "E5.a2", "E5.b", "E5.c", "E5.d1", "E5.d2"}
    assert any(p.suffix == ".png" for p in res.figures)
    assert any(p.suffix == ".pdf" for p in res.figures)
    assert (res.run_dir / "report.md").exists()


def test_quick_group_passes_every_claim(tmp_path):
    # The whole wu-su-2023 quick group, serial (CI smoke test).
    out = reproduce(
        "wu-su-2023", out_dir=tmp_path, profile="quick", executor="serial", progress=False
    )
    for exp in out.experiments:
        assert not exp.failures, exp.name
        assert exp.claims, exp.name
        assert all(c.passed for c in exp.claims), (exp.name, exp.claims)
        assert all(c.paper and c.source for c in exp.claims), exp.name
    claims = {c.id: c for exp in out.experiments for c in exp.claims}
    assert claims["E3.2"].status.value == "adapted"
    assert claims["E2.1"].status.value in ("reproduced", "not reproduced")
    summary = (tmp_path / "summary.md").read_text()
    assert "| paper | ours | rule | status |" in summary
    assert "adapted (" in summary
