"""The shared pieces of the harness: claim numbers, the companion base class, multi-output nets.

* :mod:`dynstab_repro.claim_stats` — one implementation of the median, the Spearman
  correlation, the formatting and the spread over seeds used by Wu & Su and the companions,
  with its small-sample semantics checked by hand;
* :class:`~dynstab_repro.base.Measurement` says what was aggregated (seeds, runs, minima);
* :class:`~dynstab_repro.companions.experiment.CompanionExperiment` (timing, grading, legends,
  per-unit tables);
* the ten-output task and nets of ``wws22/scaling``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from matplotlib.figure import Figure

from dynstab_repro.base import Claim, Measurement, RunSpec
from dynstab_repro.claim_stats import fmt, median, over_values, spearman, tally
from dynstab_repro.companions.experiment import CompanionExperiment, unit_rows
from dynstab_repro.companions.results import Results, outcome_text
from dynstab_repro.companions.scalar_nets import (
    digits_task,
    onehot_digits_task,
    shallow_mlp,
    train_scalar_run,
)
from dynstab_repro.companions.wws22_scaling import ScalingConfig, _size_run
from dynstab_repro.figures import new_figure
from dynstab_repro.wu_su_2023 import analysis as A

# ----------------------------------------------------------------------------- claim numbers


def test_median_is_over_the_finite_values_only():
    assert median([3.0, None, float("nan"), 1.0, float("inf")]) == 2.0
    assert math.isnan(median([None, float("nan")]))
    assert math.isnan(median([]))
    # the Wu & Su helpers are the same function
    assert A.median is median


def test_spearman_small_sample_semantics():
    # exact by hand: ranks (1, 2, 3, 4) vs (4, 2, 3, 1) → 1 − 6·Σd²/(n(n²−1)) = 1 − 6·18/60
    assert spearman([1, 2, 3, 4], [10, 8, 9, 1]) == pytest.approx(-0.8, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [2, 1]))  # two points say nothing about a trend
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))  # constant
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])
    assert A.spearman is spearman


def test_fmt_writes_missing_values_as_na():
    assert fmt(None) == fmt(float("nan")) == "n/a"
    assert fmt(0.000123456) == "0.000123"
    assert fmt(2.0, 2) == "2"
    assert A.fmt is fmt


def test_over_values_counts_non_finite_values_apart_and_names_what_was_aggregated():
    m = over_values([0.9, None, 0.8, float("nan")], "r")
    assert m.value == pytest.approx(0.85, abs=1e-15)
    assert (m.low, m.high, m.n_seeds, m.n_excluded) == (0.8, 0.9, 2, 2)
    assert str(m) == "r = 0.85 (median of 2 seeds; range 0.8 to 0.9; 2 not finite)"
    pooled = over_values([1.0, 2.0, 4.0], "μ", over="minima")
    assert str(pooled) == "μ = 2 (median of 3 minima; range 1 to 4)"
    assert Measurement.from_dict(pooled.to_dict()) == pooled
    # an old record without the field reads as seeds
    old = {k: v for k, v in pooled.to_dict().items() if k != "over"}
    assert Measurement.from_dict(old).over == "seeds"
    assert math.isnan(over_values([]).value)  # nothing measured: NaN, never an error


def test_wu_su_over_seeds_groups_runs_by_seed_through_the_same_implementation():
    runs = [{"seed": 0, "x": 1.0}, {"seed": 0, "x": 3.0}, {"seed": 1, "x": 5.0}]
    m = A.over_seeds(runs, lambda rs: max(r["x"] for r in rs), label="x")
    assert str(m) == "x = 4 (median of 2 seeds; range 3 to 5)"


def test_tally_orders_and_names_categories():
    pairs = [("a", "ok"), ("b", "diverged"), ("c", "ok"), ("d", "failed")]
    assert tally(pairs, normal=("ok",)) == ["2 ok", "1 diverged (b)", "1 failed (d)"]
    assert tally(pairs, order=("failed", "ok"), normal=("ok", "failed", "diverged")) == [
        "1 failed",
        "2 ok",
        "1 diverged",
    ]
    assert outcome_text({"a": {"converged": True}, "b": {"diverged": True}}, expected=3) == (
        "units: 1 converged, 1 diverged (b), 1 failed"
    )
    assert A.outcome_text([{"diverged": True}, {"converged": True, "lr": 1.0}]) == (
        "1 converged, 1 diverged"
    )


# ----------------------------------------------------------------------------- base class


def _grade(config: Any, results: Results) -> list[Claim]:
    return [Claim("X", "s", measured=str(len(results)), passed=True)]


class _Toy(CompanionExperiment):
    name = "test/toy-companion"
    config_cls = dict
    analysis = _grade
    figure = "toy"
    table = ("Units", ("x", ("double", lambda r: 2 * r["x"]), ("why", "missing")))

    def specs(self, config: Any) -> list[RunSpec]:
        return [RunSpec("a", {"x": 1}), RunSpec("b", {"x": 2})]

    def run_unit(self, config: Any, spec: RunSpec) -> dict[str, Any]:
        return {"x": spec.params["x"], "seconds": -1.0}

    def draw(self, config: Any, results: Results) -> Figure:
        fig, axes = new_figure(3)
        axes[0, 0].plot([0, 1], [0, 1], label="labelled")
        axes[0, 1].plot([0, 1], [1, 0])  # no label: no legend
        axes[0, 2].plot([0, 1], [0, 1], label="kept")
        axes[0, 2].legend(loc="upper left", fontsize=5)  # an explicit legend is kept
        self.drawn = fig
        return fig


def test_companion_base_times_grades_tabulates_and_draws(tmp_path: Path):
    exp = _Toy()
    rec = exp.run_one({}, RunSpec("a", {"x": 3}))
    assert rec["x"] == 3
    assert 0.0 <= rec["seconds"] < 60.0  # the base measured it (the unit's -1 is replaced)
    results = {"b": {"x": 2}, "a": {"x": 1}}
    assert [c.id for c in exp.analyze({}, results)] == ["X"]
    assert exp.tables({}, results) == [
        (
            "Units",
            [
                {"run": "a", "x": 1, "double": 2, "why": None},
                {"run": "b", "x": 2, "double": 4, "why": None},
            ],
        )
    ]
    paths = exp.plot({}, results, tmp_path)
    assert {p.name for p in paths} >= {"toy.png", "toy.pdf"}
    legends = [ax.get_legend() for ax in exp.drawn.axes]
    assert legends[0] is not None
    assert legends[1] is None
    # the explicit legend (font size 5) is not replaced by the base's (font size 7)
    assert legends[2].get_texts()[0].get_fontsize() == 5


def test_unit_rows_filters_and_defaults_to_no_table():
    res = {"a": {"kind": "x", "v": 1}, "b": {"kind": "y", "v": 2}}
    assert unit_rows(res, ("v",), lambda r: r["kind"] == "y") == [{"run": "b", "v": 2}]

    class _NoTable(_Toy):
        table = ("", ())

    assert _NoTable().tables({}, res) == []


def test_a_companion_without_draw_or_run_unit_says_so():
    class _Bare(CompanionExperiment):
        def specs(self, config: Any) -> list[RunSpec]:
            return []

    with pytest.raises(NotImplementedError, match="run_unit"):
        _Bare().run_one({}, RunSpec("a", {}))
    with pytest.raises(NotImplementedError, match="draw"):
        _Bare().draw({}, {})


# ----------------------------------------------------------------------------- multi-output


def test_onehot_digits_task_matches_the_scalar_inputs():
    X, Y = onehot_digits_task(20)
    Xs, _ = digits_task(20)
    assert torch.equal(X, Xs)
    assert Y.shape == (20, 10)
    assert torch.equal(Y.sum(dim=1), torch.ones(20, dtype=torch.float64))
    assert Y[:10].argmax(dim=1).tolist() == list(range(10))


def test_shallow_mlp_scalar_draws_unchanged_and_outputs_share_the_hidden_layer_draw():
    one = shallow_mlp(5, 3, init_scale=1.0, activation="tanh", seed=4)
    g = torch.Generator().manual_seed(4)
    W = torch.randn(3, 5, generator=g, dtype=torch.float64)
    a = torch.randn(3, generator=g, dtype=torch.float64) / math.sqrt(3)
    assert torch.equal(one.state_dict()["layers.0.weight"], W)
    assert torch.equal(one.state_dict()["layers.1.weight"], a[None, :])
    ten = shallow_mlp(5, 3, init_scale=1.0, activation="tanh", seed=4, outputs=10)
    assert torch.equal(ten.state_dict()["layers.0.weight"], W)
    assert ten.state_dict()["layers.1.weight"].shape == (10, 3)
    assert ten(torch.zeros(2, 5, dtype=torch.float64)).shape == (2, 10)


def test_multi_output_run_is_reproducible_and_its_bound_carries_sqrt_c():
    cfg = dataclasses.replace(
        ScalingConfig(), steps=300, warmup_steps=10, stop_loss=1e-3, min_full_lr_fraction=0.1
    )
    rec = _size_run(cfg, 8, 6, seed=0, gd=True)
    assert rec["n"] == 8
    # ‖H‖_F = ‖K‖_F with K of size nC × nC: recomputed here from a fresh run's net
    X, Y = onehot_digits_task(8)
    manual = train_scalar_run(cfg, X, Y, width=6, lr=cfg.lr, batch_size=0, seed=0, init_seed=0)
    assert rec["frobenius"] == pytest.approx(manual["frobenius"], rel=1e-12)
    scalar = _size_run(dataclasses.replace(cfg, outputs=1), 8, 6, seed=0, gd=True)
    assert rec["bound"] == pytest.approx(math.sqrt(10) * scalar["bound"], rel=1e-12)
