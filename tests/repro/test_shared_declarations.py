"""The harness's shared declarations: WuSuExperiment's attributes, ScalarTrainSettings, stems.

Each experiment names its claims/figures/tables functions instead of forwarding to them, and
the scalar-task companions inherit one set of training fields: these tests pin the dispatch
(which records each function sees) and that the inherited fields keep their keys and defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dynstab_repro import registry
from dynstab_repro.base import Claim, RunSpec
from dynstab_repro.companions.experiment import CompanionExperiment
from dynstab_repro.companions.mm23 import MM23Config
from dynstab_repro.companions.scalar_nets import ScalarSweepConfig, ScalarTrainSettings
from dynstab_repro.companions.wme18 import SharpnessConfig
from dynstab_repro.companions.wws22 import WWS22Config
from dynstab_repro.companions.wws22_scaling import ScalingConfig
from dynstab_repro.config import apply_overrides
from dynstab_repro.figures import new_figure
from dynstab_repro.wu_su_2023 import (
    E1DiagonalSweep,
    E2Balancing,
    E3ReLUDynamics,
    E4ReLUSweep,
    E5TheoryChecks,
)
from dynstab_repro.wu_su_2023.e1_diagonal_sweep import analyze_e1, plot_e1, table_e1
from dynstab_repro.wu_su_2023.e5_theory_checks import analyze_e5, table_e5
from dynstab_repro.wu_su_2023.units import Record, Row, WuSuExperiment

UNITS: dict[str, Record] = {
    "sgd": {"runs": {"sgd_a": {"lr": 1.0}, "sgd_b": {"lr": 2.0}}},
    "gd": {"runs": {"gd_a": {"lr": 3.0}}},
}


def _claims(config: Any, records: dict[str, Record]) -> list[Claim]:
    return [Claim(key, "seen", str(rec["lr"]), True, "any") for key, rec in sorted(records.items())]


def _figures(config: Any, records: dict[str, Record], fig_dir: Path) -> list[Path]:
    return [fig_dir / f"{key}.png" for key in sorted(records)]


def _table(config: Any, records: dict[str, Record]) -> list[tuple[str, list[Row]]]:
    return [("keys", [{"run": key} for key in sorted(records)])]


class _Stub(WuSuExperiment):
    """An experiment without units: only its class attributes are under test."""

    def specs(self, config: Any) -> list[RunSpec]:
        return []

    def compute(self, config: Any, spec: RunSpec) -> Record:
        return {}


class _PerRun(_Stub):
    name = "test/per-run"
    analysis = _claims
    figures = _figures
    table = _table
    per_run = True


class _PerUnit(_PerRun):
    name = "test/per-unit"
    per_run = False


class _Bare(_Stub):
    name = "test/bare"
    analysis = _claims
    per_run = True


def test_per_run_experiments_read_the_flattened_runs(tmp_path: Path) -> None:
    exp = _PerRun()
    assert [c.id for c in exp.analyze(None, UNITS)] == ["gd_a", "sgd_a", "sgd_b"]
    assert [c.measured for c in exp.analyze(None, UNITS)] == ["3.0", "1.0", "2.0"]
    assert exp.plot(None, UNITS, tmp_path) == [
        tmp_path / f"{k}.png" for k in ("gd_a", "sgd_a", "sgd_b")
    ]
    assert exp.tables(None, UNITS) == [
        ("keys", [{"run": "gd_a"}, {"run": "sgd_a"}, {"run": "sgd_b"}])
    ]


def test_per_unit_experiments_read_the_unit_results(tmp_path: Path) -> None:
    units = {"u1": {"lr": 0.5}, "u2": {"lr": 0.25}}
    exp = _PerUnit()
    assert [(c.id, c.measured) for c in exp.analyze(None, units)] == [("u1", "0.5"), ("u2", "0.25")]
    assert exp.tables(None, units) == [("keys", [{"run": "u1"}, {"run": "u2"}])]


def test_missing_figures_and_table_give_none(tmp_path: Path) -> None:
    exp = _Bare()
    assert exp.plot(None, UNITS, tmp_path) == []
    assert exp.tables(None, UNITS) == []
    assert len(exp.analyze(None, UNITS)) == 3


def test_wu_su_experiments_name_their_module_functions() -> None:
    assert E1DiagonalSweep.analysis is analyze_e1
    assert E1DiagonalSweep.figures is plot_e1
    assert E1DiagonalSweep.table is table_e1
    assert E5TheoryChecks.analysis is analyze_e5
    assert E5TheoryChecks.table is table_e5
    # units of E1-E4 train several runs; E5's units are the records themselves
    assert [e.per_run for e in (E1DiagonalSweep, E2Balancing, E3ReLUDynamics, E4ReLUSweep)] == [
        True
    ] * 4
    assert E5TheoryChecks.per_run is False
    assert E3ReLUDynamics.table is None


TRAIN_FIELDS = [f.name for f in dataclasses.fields(ScalarTrainSettings)]


@pytest.mark.parametrize(
    "cls", [ScalarSweepConfig, MM23Config, SharpnessConfig, WWS22Config, ScalingConfig]
)
def test_scalar_configs_inherit_the_training_settings(cls: type) -> None:
    assert issubclass(cls, ScalarTrainSettings)
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(TRAIN_FIELDS) <= names
    # each field keeps its own key for --set, parsed by the field's type
    cfg = apply_overrides(cls(), ["steps=123", "stop_loss=1e-6", "activation=relu"])
    assert (cfg.steps, cfg.stop_loss, cfg.activation) == (123, 1e-6, "relu")


def test_full_settings_defaults_of_the_training_fields() -> None:
    """The full-profile values each experiment documents (unchanged by the shared class)."""
    base = ScalarTrainSettings()
    assert (base.activation, base.init_scale, base.steps, base.warmup_steps) == (
        "tanh",
        1.0,
        20000,
        2000,
    )
    assert (base.stop_loss, base.min_full_lr_fraction) == (1e-10, 0.2)
    mm23 = MM23Config()
    assert (mm23.n, mm23.width, mm23.steps, mm23.warmup_steps) == (40, 64, 150000, 3000)
    assert (mm23.activation, mm23.init_scale, mm23.stop_loss) == ("tanh", 1.0, 1e-10)
    wme = SharpnessConfig()
    assert (wme.n, wme.width, wme.activation, wme.steps, wme.warmup_steps) == (
        192,
        64,
        "relu",
        100000,
        2000,
    )
    assert wme.stop_loss == 5e-5
    assert (WWS22Config().steps, ScalingConfig().steps) == (40000, 40000)
    assert WWS22Config().min_full_lr_fraction == ScalingConfig().min_full_lr_fraction == 0.2


#: The figure stems the companions wrote when each declared its own (file names unchanged).
FIGURE_STEMS = {
    "eos/gd-sweep": "eos_gd_sweep",
    "eos/sgd-batch": "eos_sgd_batch",
    "eos/lr-drop": "eos_lr_drop",
    "eos/cifar-cnn": "eos_cifar_cnn",
    "wme18/toy": "wme18_toy",
    "wme18/sharpness": "wme18_sharpness",
    "mms21/switch": "mms21_switch",
    "mms21/weight": "mms21_weight",
    "mms21/sweep": "mms21_sweep",
    "mms21/kink": "mms21_kink",
    "wws22/alignment": "wws22_alignment",
    "wws22/scaling": "wws22_scaling",
    "wws22/linear-alignment": "wws22_linear_alignment",
}


def test_companion_figure_stems_derive_from_the_name():
    companions = {
        e.name: e for e in registry.list_experiments() if isinstance(e, CompanionExperiment)
    }
    assert set(FIGURE_STEMS) <= set(companions)
    for name, stem in FIGURE_STEMS.items():
        assert companions[name].figure == stem
    # no companion declares its own stem any more: the rule is written once
    assert all("figure" not in vars(type(e)) for e in companions.values())


def test_companion_plot_saves_under_the_derived_stem(tmp_path: Path):
    exp = registry.get_experiment("eos/lr-drop")
    assert isinstance(exp, CompanionExperiment)

    class Drawn(type(exp)):
        def draw(self, config: Any, results: Any) -> Any:
            fig, axes = new_figure(1)
            axes[0, 0].plot([0, 1], [0, 1], label="line")
            return fig

    paths = Drawn().plot(exp.config_cls(), {}, tmp_path)
    assert sorted(p.name for p in paths) == ["eos_lr_drop.pdf", "eos_lr_drop.png"]
    assert all(p.is_file() for p in paths)
