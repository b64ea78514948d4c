"""Tests of the Wu & Su (2023) reproduction (dynstab_repro.wu_su_2023).

Covers: configs and profiles, the registry entries, the data and initializations drawn through
dynstab.data / dynstab.models, the shared helpers (selection, medians, ambiguities, the GD
warm-up rule, the one-thread guard), the closed-form Gram matrices against the autograd Gram
matrix, the NumPy fast-path trainers against dynstab.training.train (same index
stream, same schedule), the convergence/divergence flags, the independent Kronecker η*, the
analysis of every claim family on synthetic result dicts (one passing and one failing case per
claim), and an end-to-end run of the E5 quick profile through the runner.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from dynstab.errors import DivergenceWarning
from dynstab_repro import get_experiment, list_groups, run_experiment
from dynstab_repro.base import RunSpec
from dynstab_repro.wu_su_2023 import common as C
from dynstab_repro.wu_su_2023.e1_diagonal_sweep import E1Config, E1DiagonalSweep, analyze_e1
from dynstab_repro.wu_su_2023.e2_balancing import E2Config, analyze_e2
from dynstab_repro.wu_su_2023.e3_relu_dynamics import E3Config, analyze_e3
from dynstab_repro.wu_su_2023.e4_relu_sweep import E4Config, analyze_e4
from dynstab_repro.wu_su_2023.e5_theory_checks import (
    E5Config,
    E5TheoryChecks,
    analyze_e5,
    kronecker_eta_star,
)

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


def test_specs_are_one_unit_per_run_with_unique_keys():
    cfg = E1Config.profile("quick")
    specs = E1DiagonalSweep().specs(cfg)
    assert len(specs) == len(cfg.optimizers) * len(cfg.lrs) * len(cfg.seeds)
    assert len({s.key for s in specs}) == len(specs)
    e2 = get_experiment("wu-su-2023/e2")
    specs2 = e2.specs(E2Config.profile("quick"))
    assert len({s.key for s in specs2}) == len(specs2)


# --------------------------------------------------------------------------------------
# Data, closed forms and thresholds
# --------------------------------------------------------------------------------------


def test_unbalanced_init_has_exact_r0_and_rejects_r0_below_one():
    for r0 in (1.0, 1.05, 2.0, 16.0):
        a, b = C.init_unbalanced(40, r0, 0.1, seed=3)
        r = np.sum(a * a + b * b) / (2 * np.sum(np.abs(a * b)))
        assert r == pytest.approx(r0, rel=1e-12)
    with pytest.raises(ValueError, match="r0 must be >= 1"):
        C.init_unbalanced(5, 0.5, 0.1, 0)


def test_inputs_kinds_and_errors():
    p = C.diagonal_problem(d=4, n=50, n_test=3, inputs="cube", support=1, seed=0)
    assert p.X.min() >= -1
    assert p.X.max() <= 1
    p = C.diagonal_problem(d=9, n=5, n_test=3, inputs="sphere", support=1, seed=0)
    np.testing.assert_allclose(np.linalg.norm(p.X, axis=1), 3.0, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown input_dist"):
        C.diagonal_problem(d=2, n=2, n_test=1, inputs="laplace", support=1, seed=0)
    with pytest.raises(ValueError, match="unknown init"):
        C.init_relu(3, 2, "xavier", 0)


def test_data_and_inits_come_from_the_shared_layers():
    from dynstab.data import make_regression_dataset, unbalanced_diagonal_init
    from dynstab.models import DiagonalLinearNet, TwoLayerReLU

    p = C.diagonal_problem(d=6, n=4, n_test=3, inputs="gaussian", support=2, seed=5)
    ds = make_regression_dataset(
        "sparse_linear",
        4,
        3,
        6,
        input_dist="gaussian",
        sparsity=2,
        generator=C.torch_generator(5, 1),
    )
    np.testing.assert_array_equal(p.X, ds.X.numpy())
    np.testing.assert_array_equal(p.y_test, ds.y_test.numpy())
    np.testing.assert_array_equal(p.teacher, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    rp = C.relu_problem(d=5, n=4, n_test=2, k=3, seed=5)
    rds = make_regression_dataset("relu", 4, 2, 5, k=3, generator=C.torch_generator(5, 2))
    np.testing.assert_array_equal(rp.X, rds.X.numpy())
    np.testing.assert_array_equal(rp.teacher, rds.teacher.V.numpy())
    np.testing.assert_allclose(rp.y, np.maximum(rp.X @ rp.teacher.T, 0).sum(1), rtol=1e-12)
    a, b = C.init_diagonal(7, 0.5, seed=2)
    net = DiagonalLinearNet(
        7, init_scale=0.5, generator=C.torch_generator(2, 4), dtype=torch.float64
    )
    np.testing.assert_array_equal(a, net.a.detach().numpy())
    np.testing.assert_array_equal(b, net.b.detach().numpy())
    a, b = C.init_unbalanced(7, 4.0, 0.1, seed=2)
    ta, tb = unbalanced_diagonal_init(7, 4.0, std=0.1, generator=C.torch_generator(2, 5))
    np.testing.assert_array_equal(a, ta.numpy())
    np.testing.assert_array_equal(b, tb.numpy())
    W, av = C.init_relu(5, 3, "r3p", seed=2)
    rnet = TwoLayerReLU(5, 3, init="r3p", generator=C.torch_generator(2, 6), dtype=torch.float64)
    np.testing.assert_array_equal(W, rnet.w.detach().numpy())
    np.testing.assert_array_equal(av, rnet.a.detach().numpy())
    # Same seed and stream: same draw; other stream or seed: a different draw.
    x = [torch.randn(4, generator=C.torch_generator(s, t)) for s, t in ((1, 1), (1, 1), (1, 2))]
    x.append(torch.randn(4, generator=C.torch_generator(2, 1)))
    assert torch.equal(x[0], x[1])
    assert not torch.equal(x[0], x[2])
    assert not torch.equal(x[0], x[3])
    # The data of a unit do not depend on the other units (E1 and E2 share seed → data).
    cfg1, cfg2 = E1Config.profile("quick"), E2Config.profile("quick")
    np.testing.assert_array_equal(cfg1.problem(0).X, cfg2.problem(0).X)


def test_shared_config_fields_and_ambiguities():
    e1, e4 = E1Config(), E4Config()
    assert isinstance(e1, C.SweepConfig)
    assert isinstance(e1, C.DiagonalDataConfig)
    assert isinstance(e4, C.ReLUDataConfig)
    assert isinstance(E3Config(), C.TrainerConfig)
    assert not isinstance(E3Config(), C.SweepConfig)
    # E4 keeps its own warm-up lengths on top of the shared sweep fields.
    assert (e4.sgd_warmup_steps, e4.gd_warmup_steps) == (100_000, 10_000)
    assert (e1.sgd_warmup_steps, e1.gd_warmup_steps) == (50_000, 5_000)
    assert E2Config.profile("quick").d == E1Config.profile("quick").d == C.QUICK_DIAGONAL["d"]
    assert E3Config.profile("quick").k == E4Config.profile("quick").k == C.QUICK_RELU["k"]
    amb = C.ambiguities(["A12", "A7"], {"A3": "x", "E2 init": "y"})
    assert list(amb) == ["A3", "A7", "A12", "E2 init"]
    assert amb["A7"].startswith("converged")
    with pytest.raises(KeyError):
        C.ambiguities(["A99"])
    assert list(get_experiment("wu-su-2023/e4").ambiguities)[:2] == ["A2", "A4"]


def test_gd_warmup_rule_a12():
    cfg = E1Config()
    # η > 2/λ_max(G_0) needs the warm-up under "auto"; η ≤ 2/λ_max(G_0) does not.
    assert C.gd_warmup_steps(cfg, 0.1, 25.0) == cfg.gd_warmup_steps
    assert C.gd_warmup_steps(cfg, 0.08, 25.0) == 0
    always = dataclasses.replace(cfg, gd_warmup="always")
    never = dataclasses.replace(cfg, gd_warmup="never")
    assert C.gd_warmup_steps(always, 0.01, 25.0) == cfg.gd_warmup_steps
    assert C.gd_warmup_steps(never, 1.0, 25.0) == 0


def test_selection_medians_and_ratios():
    res = {
        "a": {"optimizer": "sgd", "lr": 0.1, "r0": 2.0, "converged": True, "trace": 10.0},
        "b": {"optimizer": "sgd", "lr": 0.1, "r0": 4.0, "converged": True, "trace": 16.0},
        "c": {"optimizer": "sgd", "lr": 0.2, "r0": 2.0, "converged": False, "trace": 99.0},
        "d": {"optimizer": "sgd", "lr": 0.2, "r0": 2.0, "converged": True, "diverged": True},
        "e": {"optimizer": "gd", "lr": 0.1, "r0": 2.0, "converged": True, "trace": 1.0},
    }
    assert [r["trace"] for r in C.select(res, "sgd")] == [10.0, 16.0]
    assert len(C.select(res, "sgd", converged_only=False, lr=0.2)) == 2
    assert C.medians(res, "sgd", "trace", "lr", [0.1, 0.2])[0] == 13.0
    assert math.isnan(C.medians(res, "sgd", "trace", "lr", [0.1, 0.2])[1])
    assert C.medians(res, "sgd", "trace", "r0", [4.0], lr=0.1) == [16.0]
    cells = C.summary_cells("sgd", C.select(res, "sgd", lr=0.1), ["trace"])
    assert cells == {"sgd_trace": 13.0, "sgd_converged": "2/2"}
    assert C.summary_cells("sgd", [res["c"]], ["trace"]) == {
        "sgd_trace": 99.0,
        "sgd_converged": "0/1",
    }
    # R1 ratio at the effective learning rate: Tr G·η_eff/2 (B = 1, q = 1).
    runs = [{"trace": 10.0, "lr": 0.1, "lr_at_1e6": 0.15}, {"trace": 12.0, "lr": 0.1}]
    assert C.worst_trace_ratio(runs, 100, 1) == pytest.approx(max(10 * 0.15 / 2, 12 * 0.1 / 2))
    assert math.isnan(C.worst_trace_ratio([], 100, 1))
    assert C.max_over_min([2.0, 8.0, 4.0]) == 4.0
    assert math.isnan(C.max_over_min([2.0, float("nan")]))
    assert C.max_over_min([2.0, float("nan"), 3.0], skip_missing=True) == 1.5
    assert math.isnan(C.max_over_min([]))


def test_run_one_uses_one_thread_and_restores_torch_threads():
    # threadpoolctl is optional (it comes with scikit-learn); without it only torch is capped.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = {}

    class Probe(C.WuSuExperiment):
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


def test_closed_form_grams_match_autograd_gram():
    from dynstab.curvature import gram_matrix
    from dynstab.models import DiagonalLinearNet, TwoLayerReLU

    rng = np.random.default_rng(1)
    X = rng.standard_normal((7, 5))
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    net = DiagonalLinearNet.from_tensors(torch.tensor(a), torch.tensor(b))
    K = gram_matrix(net, torch.tensor(X)).numpy()
    np.testing.assert_allclose(C.diagonal_gram(a, b, X), K, rtol=1e-10, atol=1e-12)
    W, av = rng.standard_normal((6, 5)), rng.standard_normal(6)
    rnet = TwoLayerReLU(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rnet.w.copy_(torch.tensor(W))
        rnet.a.copy_(torch.tensor(av))
    K = gram_matrix(rnet, torch.tensor(X)).numpy()
    np.testing.assert_allclose(C.relu_gram(W, av, X), K, rtol=1e-10, atol=1e-12)
    m = C.spectral_measures(K)
    ev = np.linalg.eigvalsh(K)
    assert m["trace"] == pytest.approx(ev.sum(), rel=1e-12)
    assert m["frobenius"] == pytest.approx(np.sqrt(np.sum(ev**2)), rel=1e-12)
    assert m["lambda_max"] == pytest.approx(ev[-1], rel=1e-12)


def test_measures_closed_form_trace_and_norms():
    prob = C.diagonal_problem(d=6, n=4, n_test=5, inputs="gaussian", support=2, seed=0)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    full = C.diagonal_measures(a, b, prob)
    cheap = C.diagonal_measures(a, b, prob, spectrum=False)
    s = np.mean(prob.X**2, axis=0)
    assert full["trace"] == pytest.approx(np.sum(s * (a * a + b * b)), rel=1e-12)
    assert cheap["trace"] == pytest.approx(full["trace"], rel=1e-12)
    assert full["weighted_l1"] == pytest.approx(np.sum(s * np.abs(a * b)), rel=1e-12)
    # Tr G ≥ 2‖β‖_{1,s} (AM–GM, R4).
    assert full["trace"] >= 2 * full["weighted_l1"]
    rp = C.relu_problem(d=5, n=6, n_test=4, k=2, seed=0)
    W, av = C.init_relu(5, 7, "lw", 0)
    f, c = C.relu_measures(W, av, rp), C.relu_measures(W, av, rp, spectrum=False)
    assert c["trace"] == pytest.approx(f["trace"], rel=1e-12)
    assert f["path_norm"] == pytest.approx(np.sum(np.abs(av) * np.linalg.norm(W, axis=1)))


def test_thresholds_come_from_stability():
    assert C.sgd_curvature_threshold(0.1, 300) == pytest.approx(20.0)
    # without replacement, B = 4: q = 1/B → 2B/η
    assert C.sgd_curvature_threshold(0.1, 300, 4, "without") == pytest.approx(80.0)
    assert C.gd_curvature_threshold(0.5) == pytest.approx(4.0)


def test_spearman_and_history_helpers():
    assert C.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(C.spearman([1, 2], [1, 2]))
    with pytest.raises(ValueError, match="same length"):
        C.spearman([1, 2, 3], [1, 2])
    h = C.subsample_history({"step": list(range(1000)), "loss": list(range(1000))}, 50)
    assert len(h["step"]) <= 50
    assert h["step"][0] == 0
    assert h["step"][-1] == 999
    assert C.median([1.0, float("nan"), 3.0]) == 2.0


def test_kronecker_eta_star_matches_library_and_trace_bound_equality():
    from dynstab.criteria import eta_star

    J = np.diag([1.5, 1.5, 1.5])
    assert kronecker_eta_star(J, 1, "with") == pytest.approx(2.0 / 1.5**2, rel=1e-10)
    rng = np.random.default_rng(4)
    J = rng.standard_normal((3, 4))
    K = torch.tensor(J @ J.T / 3)
    for B, s in ((1, "with"), (2, "without"), (2, "with")):
        assert kronecker_eta_star(J, B, s) == pytest.approx(eta_star(K, B, s).eta_star, rel=1e-9)


# --------------------------------------------------------------------------------------
# Fast-path trainers vs the generic trainer
# --------------------------------------------------------------------------------------


def _generic_indices(n: int, steps: int, seed: int) -> np.ndarray:
    from dynstab.training.samplers import BatchSampler, make_generator

    s = BatchSampler(n, 1, "with", generator=make_generator(None, seed))
    return np.array([int(s.next()[0]) for _ in range(steps)])


def test_fast_sgd_diagonal_equals_generic_trainer():
    from dynstab.models import DiagonalLinearNet
    from dynstab.training import train, warmup

    prob = C.diagonal_problem(d=30, n=12, n_test=2, inputs="gaussian", support=3, seed=0)
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal(30), rng.standard_normal(30)
    net = DiagonalLinearNet.from_tensors(torch.tensor(a0), torch.tensor(b0))
    steps, T = 300, 100
    train(
        net,
        torch.tensor(prob.X),
        torch.tensor(prob.y),
        lr=0.01,
        steps=steps,
        batch_size=1,
        seed=7,
        schedule=warmup(T),
        stop_loss=None,
    )
    model = C._DiagonalModel(prob.X, prob.y)
    theta = np.concatenate([a0, b0])
    lrs = 0.01 * C.warmup_multipliers(0, steps, T, 3.0)
    model.sgd1_chunk(theta, _generic_indices(12, steps, 7), lrs, None)
    np.testing.assert_allclose(theta[:30], net.a.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theta[30:], net.b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_fast_sgd_relu_equals_generic_trainer_with_and_without_clipping():
    from dynstab.models import TwoLayerReLU
    from dynstab.training import train

    prob = C.relu_problem(d=6, n=10, n_test=2, k=2, seed=1)
    W0, a0 = C.init_relu(6, 8, "lw", 1)
    for clip in (None, 0.5):
        net = TwoLayerReLU(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            net.w.copy_(torch.tensor(W0))
            net.a.copy_(torch.tensor(a0))
        train(
            net,
            torch.tensor(prob.X),
            torch.tensor(prob.y),
            lr=0.02,
            steps=200,
            batch_size=1,
            seed=5,
            clip=clip,
            stop_loss=None,
        )
        model = C._ReLUModel(prob.X, prob.y, 8)
        theta = np.concatenate([W0.ravel(), a0])
        model.sgd1_chunk(theta, _generic_indices(10, 200, 5), np.full(200, 0.02), clip)
        W, a = model.split(theta)
        np.testing.assert_allclose(W, net.w.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a, net.a.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_fast_gd_equals_generic_trainer():
    from dynstab.models import DiagonalLinearNet, TwoLayerReLU
    from dynstab.training import train

    prob = C.diagonal_problem(d=20, n=8, n_test=2, inputs="gaussian", support=3, seed=2)
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal(20), rng.standard_normal(20)
    net = DiagonalLinearNet.from_tensors(torch.tensor(a0), torch.tensor(b0))
    train(net, torch.tensor(prob.X), torch.tensor(prob.y), lr=0.01, steps=50, stop_loss=None)
    a, b, res = C.train_diagonal_fast(
        prob.X,
        prob.y,
        a0,
        b0,
        lr=0.01,
        max_steps=50,
        batch_size=None,
        check_every=10,
        stop_loss=0.0,
    )
    assert res.steps_run == 50
    assert not res.converged
    np.testing.assert_allclose(a, net.a.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, net.b.detach().numpy(), rtol=1e-10, atol=1e-12)
    rp = C.relu_problem(d=5, n=9, n_test=2, k=2, seed=0)
    W0, av0 = C.init_relu(5, 7, "lw", 0)
    rnet = TwoLayerReLU(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rnet.w.copy_(torch.tensor(W0))
        rnet.a.copy_(torch.tensor(av0))
    train(rnet, torch.tensor(rp.X), torch.tensor(rp.y), lr=0.01, steps=40, stop_loss=None)
    W, av, _ = C.train_relu_fast(
        rp.X, rp.y, W0, av0, lr=0.01, max_steps=40, batch_size=None, check_every=10, stop_loss=0.0
    )
    np.testing.assert_allclose(W, rnet.w.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(av, rnet.a.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_fast_loop_convergence_rule_needs_full_lr_steps_and_flags_divergence():
    prob = C.diagonal_problem(d=40, n=5, n_test=2, inputs="gaussian", support=1, seed=0)
    a0 = np.full(40, 0.3)
    # GD with a warm-up of 1000 steps: the loss is tiny long before, but the run must spend
    # ≥ 20 % of its steps at full η, i.e. stop no earlier than 1250.
    _, _, res = C.train_diagonal_fast(
        prob.X,
        prob.y,
        a0,
        a0,
        lr=0.02,
        max_steps=20_000,
        batch_size=None,
        warmup_steps=1000,
        check_every=10,
    )
    assert res.converged
    assert res.steps_run >= 1250
    assert res.final_loss <= 1e-10
    assert res.lr_at_convergence == pytest.approx(0.02)
    with pytest.warns(DivergenceWarning, match="diverged"):
        _, _, bad = C.train_diagonal_fast(
            prob.X, prob.y, a0, a0, lr=50.0, max_steps=500, batch_size=None, check_every=10
        )
    assert bad.diverged
    assert not bad.converged
    with pytest.raises(ValueError, match="lr must be a positive"):
        C.train_diagonal_fast(prob.X, prob.y, a0, a0, lr=0.0, max_steps=5)
    with pytest.raises(ValueError, match="record_every must be a multiple"):
        C.train_diagonal_fast(
            prob.X, prob.y, a0, a0, lr=0.1, max_steps=5, check_every=10, record_every=15
        )
    with pytest.raises(ValueError, match="batch_size must be"):
        C.train_diagonal_fast(prob.X, prob.y, a0, a0, lr=0.1, max_steps=5, batch_size=0)
    with pytest.raises(ValueError, match="optimizer must be"):
        C.run_unit(E1Config.profile("quick"), opt="adam", lr=0.1, seed=0)
    with pytest.raises(TypeError, match="DiagonalDataConfig or ReLUDataConfig"):
        C.run_unit(E5Config(), opt="sgd", lr=0.1, seed=0)


def test_run_unit_small_sgd_run_respects_trace_bound():
    cfg = dataclasses.replace(
        E1Config.profile("quick"), d=80, n=20, n_test=100, sgd_steps=20_000, sgd_warmup_steps=4000
    )
    out = C.run_unit(cfg, opt="sgd", lr=0.05, seed=0)
    assert out["converged"]
    assert not out["diverged"]
    assert out["trace"] <= 2 / C.effective_lr(out) * 1.05
    assert out["init_trace"] > out["trace"]


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
            "lr_at_1e6": lr,
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
    # Reviewer fix 7: with only one of the GD-stable-at-init η converged, max/min over the
    # finite medians is 1.0 and E1.4/E1.6 passed trivially; they must fail now.
    cfg = E1Config.profile("quick")  # λ_max(G_0) = 20 ⇒ stable η: 0.004, 0.0126, 0.04
    res = _e1_results(cfg)
    for lr in (0.004, 0.0126):
        res[f"gd_{lr}"]["converged"] = False
    meds = C.medians(res, "gd", "trace", "lr", [0.004, 0.0126, 0.04])
    assert C.max_over_min(meds, skip_missing=True) == 1.0  # the previously trivial situation
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
        base = {"lr": cfg.lr, "r0": r0, "converged": True, "diverged": False, "lr_at_1e6": cfg.lr}
        res[f"sgd_{r0}"] = base | {"optimizer": "sgd", "balancedness": 1.7, "trace": 32.0}
        res[f"gd_{r0}"] = base | {"optimizer": "gd", "balancedness": 1.5 * r0, "trace": 500.0}
    for lr, rt in sweep.items():
        res[f"sgd_sweep_{lr}"] = {
            "optimizer": "sgd",
            "lr": lr,
            "r0": cfg.lr_sweep_r0,
            "converged": True,
            "diverged": False,
            "lr_at_1e6": lr,
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
    # Reviewer fix 8: the builtin min skipped a NaN unless it came first.
    cfg = E2Config.profile("quick")
    res = _e2_results(cfg)
    res[f"gd_{r0}"]["converged"] = False
    st = _status(analyze_e2(cfg, res))
    assert st["E2.4"] is False, st


def test_strict_min_max_and_count_finite_are_order_independent():
    nan = float("nan")
    for vals in ([nan, 1.0, 2.0], [1.0, nan, 2.0], [1.0, 2.0, nan]):
        assert math.isnan(C.strict_min(vals))
        assert math.isnan(C.strict_max(vals))
        assert C.count_finite(vals) == 2
    assert C.strict_min([3.0, 1.0, 2.0]) == 1.0
    assert C.strict_max([3.0, 1.0, 2.0]) == 3.0
    assert math.isnan(C.strict_min([]))
    assert math.isnan(C.strict_max([]))
    runs = [{"trace": 10.0, "lr": 0.1}, {"trace": nan, "lr": 0.1}]
    assert math.isnan(C.worst_trace_ratio(runs, 300, 1))


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
            "lr_at_1e6": lr,
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


@pytest.mark.parametrize("target", sorted(E3_CASES))
def test_analyze_e3(target):
    cfg = E3Config.profile("quick")
    _check(analyze_e3, cfg, _e3_results(cfg), E3_CASES[target], target)


def test_e3_2_needs_a_fast_drop_after_entering_the_stable_region():
    # Reviewer fix 9: E3.2 used max/final ‖∇L‖ ≥ 1e3, implied by reaching loss ≤ 1e-10. A run that
    # converges with a steady geometric decay over the whole run must now fail E3.2 only.
    cfg = E3Config.profile("quick")
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
    # Reviewer fix 10: the final Tr G is judged at η_eff = lr_at_1e6 (A7), not the nominal η.
    cfg = E3Config.profile("quick")
    low = _e3_results(cfg)
    low["sgd_seed=0"]["lr_at_1e6"] = 0.5 * cfg.lr  # η_eff·Tr G/2 = 0.4 (nominal: 0.8)
    c = {c.id: c for c in analyze_e3(cfg, low)}["E3.3"]
    assert c.passed is False, c
    assert "0.4" in c.measured, c
    high = _e3_results(cfg)
    high["sgd_seed=0"].update(lr_at_1e6=0.5 * cfg.lr, trace=1.5 * 2 / cfg.lr)  # 0.75 (nom. 1.5)
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
            "label": lab,
            "lr": eta,
            "lr_at_1e6": eta,
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
            "label": lab,
            "lr": lab,
            "lr_at_1e6": eff,
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
    # Reviewer fix 8: a NaN median (no converged run at a label) fails E4.1 wherever it sits in
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
        assert "4/5 converged" in {c.id: c for c in analyze_e4(cfg, res)}[target].measured


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
                "gram_fast_rel_err": 1e-16,
                "balanced_trace": 4.0,
                "balanced_2_weighted_l1": 4.0,
                "beta_change": 0.0,
            },
            "relu": {
                "trace_autograd": 9.0,
                "trace_closed_form": 9.0,
                "gram_fast_rel_err": 0.0,
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
    # The whole wu-su-2023 quick group: about 25 s serial on a shared core (CI smoke test).
    from dynstab_repro import reproduce

    out = reproduce(
        "wu-su-2023", out_dir=tmp_path, profile="quick", executor="serial", progress=False
    )
    for exp in out.experiments:
        assert not exp.failures, exp.name
        assert exp.claims, exp.name
        assert all(c.passed for c in exp.claims), (exp.name, exp.claims)
