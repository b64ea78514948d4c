"""Tests of the reproduction framework: configs, registry, runner, executors, reports, io.

The dummy experiment runs real gradient descent on f(x) = ½·h·x² at four learning rates; GD
converges iff η < 2/h, which is the claim it checks. Each ``run_one`` call drops a marker file,
so tests count (re)computations across processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from dynstab_repro import registry
from dynstab_repro.base import Claim, ClaimStatus, Experiment, Measurement, RunSpec, unit_outcome
from dynstab_repro.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    parse_overrides,
    profile_config,
    profile_names,
)
from dynstab_repro.executors import (
    LocalExecutor,
    SerialExecutor,
    UnitTask,
    execute_unit,
    make_executor,
)
from dynstab_repro.io import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    config_hash,
    environment_info,
    flatten_scalars,
    read_json,
    safe_dirname,
)
from dynstab_repro.report import ReportData, render_html, render_markdown
from dynstab_repro.runner import (
    ExperimentResult,
    ReproductionResult,
    render_run_dir,
    reproduce,
    resolve_config,
    run_experiment,
)

# --------------------------------------------------------------------------- dummy experiment


@dataclasses.dataclass(frozen=True)
class QuadConfig(ExperimentConfig):
    curvature: float = 2.0
    lrs: tuple[float, ...] = (0.1, 0.5, 0.9, 1.1)
    steps: int = 200
    x0: float = 1.0
    seed: int = 0
    marker_dir: str = ""
    expected_threshold: float | None = None
    analyze_raises: bool = False
    extra_statuses: tuple[str, ...] = ()

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"steps": 50}}


def gd_on_quadratic(h: float, lr: float, x0: float, steps: int) -> float:
    x = x0
    for _ in range(steps):
        x = x - lr * h * x  # gradient of ½ h x² is h x
    return x


class QuadExperiment(Experiment):
    name = "quad/a"
    title = "GD on a 1-D quadratic"
    description = "Gradient descent on f(x) = ½ h x² converges iff η < 2/h."
    reference = "Cauchy (1847), gradient descent on a quadratic"
    ambiguities: ClassVar[dict[str, str]] = {"A1": "x0 = 1", "A2": "200 steps"}
    config_cls = QuadConfig

    def specs(self, config: QuadConfig) -> list[RunSpec]:
        return [RunSpec(f"lr={lr:g}", {"lr": lr}) for lr in config.lrs]

    def run_one(self, config: QuadConfig, spec: RunSpec) -> dict[str, Any]:
        if config.marker_dir:
            marker = Path(config.marker_dir)
            (marker / f"{self.name.replace('/', '_')}__{spec.key}.{uuid.uuid4().hex}").touch()
            if (marker / f"fail_{spec.key}").exists():
                raise RuntimeError(f"boom at {spec.key}")
            if (marker / f"exit_{spec.key}").exists():
                os._exit(3)  # simulate a crashing worker process
            if (marker / f"sleep_{spec.key}").exists():
                time.sleep(120)  # a long unit, to test interruption
            if (marker / f"sigterm_{spec.key}").exists():
                os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from outside would
                time.sleep(5)
        lr = float(spec.params["lr"])
        x = gd_on_quadratic(config.curvature, lr, config.x0, config.steps)
        return {"lr": lr, "final_abs_x": abs(x), "converged": abs(x) < 1e-3, "nested": {"a": 1}}

    def analyze(self, config: QuadConfig, results: dict[str, dict[str, Any]]) -> list[Claim]:
        if config.analyze_raises:
            raise ZeroDivisionError("analysis bug")
        threshold = config.expected_threshold or 2.0 / config.curvature
        ok = [r["converged"] == (r["lr"] < threshold) for r in results.values()]
        conv = sorted(r["lr"] for r in results.values() if r["converged"])
        claims = [
            Claim(
                "Q1",
                "GD on ½h x² converges iff η < 2/h",
                f"converged at η ∈ {conv}; 2/h = {2 / config.curvature:g}",
                bool(ok) and all(ok) and len(results) == len(config.lrs),
                f"converged ⇔ η < {threshold:g} for every η",
            )
        ]
        for i, status in enumerate(config.extra_statuses):  # new-style claims
            claims.append(
                Claim(
                    f"X{i}",
                    "|x_T| of the smallest η is tiny",
                    criterion="|x_T| ≤ 1e-3",
                    status=status,
                    paper="|x_T| → 0",
                    source="Eq. (1)",
                    note="" if status in ("reproduced", "failed") else f"why {status}",
                    measurement=Measurement.over_seeds(
                        [r["final_abs_x"] for r in results.values()], label="|x_T|"
                    ),
                )
            )
        return claims

    def plot(self, config: QuadConfig, results: dict[str, dict[str, Any]], fig_dir: Path):
        from dynstab.plotting import new_figure, save_figure, sweep_panel

        fig, axes = new_figure()
        rows = list(results.values())
        sweep_panel(
            axes[0, 0],
            [r["lr"] for r in rows],
            {"|x_T|": [r["final_abs_x"] for r in rows]},
            reference=2.0 / config.curvature,
            reference_label="2/h",
            ylabel="|x_T|",
        )
        return save_figure(fig, fig_dir / "final_x")

    def tables(self, config: QuadConfig, results: dict[str, dict[str, Any]]):
        return [
            (
                "Final iterates",
                [{"lr": r["lr"], "|x_T|": r["final_abs_x"]} for r in results.values()],
            )
        ]


class QuadExperimentB(QuadExperiment):
    name = "quad/b"
    title = "GD on a 1-D quadratic (second copy)"


@dataclasses.dataclass(frozen=True)
class NoSeedConfig:
    steps: int = 3


class NoSeedExperiment(QuadExperiment):
    name = "quad/noseed"
    config_cls = NoSeedConfig

    def specs(self, config: Any) -> list[RunSpec]:
        return [RunSpec("only", {"lr": 0.1})]

    def run_one(self, config: Any, spec: RunSpec) -> dict[str, Any]:
        return {"lr": 0.1, "converged": True}

    def analyze(self, config: Any, results: dict[str, dict[str, Any]]) -> list[Claim]:
        return [Claim("N1", "runs", "yes", True, "-")]

    def plot(self, config: Any, results: dict[str, dict[str, Any]], fig_dir: Path):
        return []

    def tables(self, config: Any, results: dict[str, dict[str, Any]]):
        return []


@dataclasses.dataclass(frozen=True)
class SpinConfig(ExperimentConfig):
    """Many small CPU-bound units (no sleeping): a sweep that can be interrupted anywhere."""

    n_units: int = 48
    work: int = 60_000
    lrs: tuple[float, ...] = (0.3, 0.9)
    seed: int = 0

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"n_units": 32}}


class SpinExperiment(Experiment):
    """Deterministic pseudo-random GD runs, ``n_units`` of them, each ``work`` steps long."""

    name = "spin/a"
    title = "Spin: many tiny CPU-bound units"
    reference = "test dummy"
    config_cls = SpinConfig

    def specs(self, config: SpinConfig) -> list[RunSpec]:
        return [
            RunSpec(f"u={i}_lr={lr:g}", {"i": i, "lr": lr})
            for i in range(config.n_units)
            for lr in config.lrs
        ][: config.n_units]

    def run_one(self, config: SpinConfig, spec: RunSpec) -> dict[str, Any]:
        i, lr = int(spec.params["i"]), float(spec.params["lr"])
        h = 1.0 + (1103515245 * (i + 1) + config.seed) % 1000 / 500.0  # curvature in [1, 3)
        x, acc = 1.0, 0.0
        for _ in range(config.work):
            x -= lr * h * x
            acc += abs(x)
            if abs(x) > 1e12:
                break
        return {
            "h": h,
            "lr": lr,
            "sum_abs_x": acc,
            "converged": abs(x) < 1e-6,
            "diverged": abs(x) > 1e12,
        }

    def analyze(self, config: SpinConfig, results: dict[str, dict[str, Any]]) -> list[Claim]:
        ok = [r["diverged"] == (r["lr"] * r["h"] > 2.0) for r in results.values()]
        total = sum(r["sum_abs_x"] for r in results.values())
        return [
            Claim(
                "S1",
                "GD on ½h x² diverges iff η·h > 2",
                f"{sum(ok)}/{len(ok)} units agree; total Σ|x| = {total:.17g}",
                bool(ok) and all(ok) and len(results) == len(self.specs(config)),
                "every unit agrees",
                paper="stable iff η < 2/h",
                source="Cauchy (1847)",
            )
        ]

    def tables(self, config: SpinConfig, results: dict[str, dict[str, Any]]):
        return [("Units", [{"key": k, **v} for k, v in results.items()])]


class SpinExperimentB(SpinExperiment):
    name = "spin/b"


def register_spin() -> None:
    """Register the spin dummies and their group ``spin`` (also used by subprocess drivers)."""
    registry.register(SpinExperiment())
    registry.register(SpinExperimentB())
    registry.register_group("spin", ["spin/a", "spin/b"])


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch):
    """Empty registry without built-in modules; the dummies registered."""
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", ())
    monkeypatch.setattr(registry, "_EXPERIMENTS", {})
    monkeypatch.setattr(registry, "_GROUPS", {})
    monkeypatch.setattr(registry, "_LOADED", set())
    registry.register(QuadExperiment())
    registry.register(QuadExperimentB)
    registry.register(NoSeedExperiment())
    registry.register_group("quad", ["quad/a", "quad/b"])
    return registry


def calls(marker: Path, name: str = "quad/a", key: str = "") -> int:
    prefix = f"{name.replace('/', '_')}__{key}"
    return sum(1 for p in marker.iterdir() if p.name.startswith(prefix))


# --------------------------------------------------------------------------- config


def test_config_from_dict_converts_types_and_rejects_unknown_keys():
    cfg = config_from_dict(QuadConfig, {"lrs": [1, 2], "steps": 10.0, "curvature": 3})
    assert cfg.lrs == (1.0, 2.0)
    assert cfg.steps == 10
    assert cfg.curvature == 3.0
    assert isinstance(cfg.lrs[0], float)
    with pytest.raises(
        ValueError,
        match=r"unknown config key\(s\) \['stepz'\].*valid keys are"
        r" \['analyze_raises', 'curvature'",
    ):
        config_from_dict(QuadConfig, {"stepz": 3})
    with pytest.raises(TypeError, match="must be a dataclass type"):
        config_from_dict(dict, {})
    with pytest.raises(ValueError, match="steps must be an int"):
        config_from_dict(QuadConfig, {"steps": 2.5})


def test_config_round_trip_through_json():
    cfg = QuadConfig(lrs=(0.25, 3.0), expected_threshold=1.5)
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert d["lrs"] == [0.25, 3.0]
    assert config_from_dict(QuadConfig, d) == cfg
    assert QuadConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("item", "field", "expected"),
    [
        ("steps=1e3", "steps", 1000),
        ("steps=7", "steps", 7),
        ("curvature=0.5", "curvature", 0.5),
        ("lrs=0.1,0.2", "lrs", (0.1, 0.2)),
        ("lrs=[0.3, 4]", "lrs", (0.3, 4.0)),
        ("lrs=(0.5)", "lrs", (0.5,)),
        ("analyze_raises=yes", "analyze_raises", True),
        ("analyze_raises=False", "analyze_raises", False),
        ("expected_threshold=none", "expected_threshold", None),
        ("expected_threshold=2", "expected_threshold", 2.0),
        ("marker_dir=/tmp/a=b", "marker_dir", "/tmp/a=b"),
    ],
)
def test_apply_overrides_parses_by_field_type(item, field, expected):
    cfg = apply_overrides(QuadConfig(), [item])
    assert getattr(cfg, field) == expected
    assert type(getattr(cfg, field)) is type(expected)


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("steps", "must look like key=value"),
        ("=3", "must look like key=value"),
        ("steps=abc", "steps must be an int"),
        ("steps=2.5", "steps must be an int"),
        ("curvature=big", "curvature must be a number"),
        ("analyze_raises=maybe", "must be a bool"),
        ("lrs=[1,", "invalid JSON list"),
        ("lrs=a,b", r"lrs\[0\] must be a number"),
        ("nope=1", r"unknown config key\(s\) \['nope'\]"),
    ],
)
def test_apply_overrides_errors_say_what_to_do(item, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(QuadConfig(), [item])


def test_literal_and_fixed_tuple_fields():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        mode: Literal["with", "without"] = "with"
        pair: tuple[int, str] = (1, "a")

    assert apply_overrides(Cfg(), {"mode": "without"}).mode == "without"
    assert apply_overrides(Cfg(), ["pair=2,b"]).pair == (2, "b")
    with pytest.raises(ValueError, match=r"mode must be one of \['with', 'without'\]"):
        apply_overrides(Cfg(), ["mode=maybe"])
    with pytest.raises(ValueError, match="pair must have 2 entries"):
        apply_overrides(Cfg(), ["pair=1,b,c"])


def test_parse_overrides():
    assert parse_overrides(["a=1", " b = x "]) == {"a": "1", "b": "x"}
    assert parse_overrides({"a": 1}) == {"a": 1}


def test_profiles():
    assert profile_config(QuadConfig, "quick").steps == 50
    assert profile_config(QuadConfig, "full") == QuadConfig()
    assert QuadConfig.profile("quick") == QuadConfig(steps=50)
    assert profile_names(QuadConfig) == ["full", "quick"]
    with pytest.raises(ValueError, match=r"unknown profile 'huge'.*\['full', 'quick'\]"):
        profile_config(QuadConfig, "huge")

    @dataclasses.dataclass(frozen=True)
    class Own:
        steps: int = 10

        @classmethod
        def profile(cls, name: str) -> Own:
            return cls(steps={"quick": 1, "full": 10}[name])

    assert profile_config(Own, "quick") == Own(steps=1)

    @dataclasses.dataclass(frozen=True)
    class Plain:
        steps: int = 10

    assert profile_config(Plain, "quick") == Plain()


# --------------------------------------------------------------------------- io


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.json"
    atomic_write_json(path, {"a": (1, 2), "b": float("nan")})
    data = read_json(path)
    assert data["a"] == [1, 2]
    assert math.isnan(data["b"])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"garbage")
    monkeypatch.undo()
    assert read_json(path)["a"] == [1, 2]  # old content intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]  # temp file removed


def test_atomic_write_json_rejects_unserialisable(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        atomic_write_json(tmp_path / "x.json", {"a": object()})
    assert not (tmp_path / "x.json").exists()


def test_csv_flatten_hash_and_names(tmp_path):
    atomic_write_csv(tmp_path / "m.csv", [{"a": 1}, {"a": 2, "b": "x"}])
    assert (tmp_path / "m.csv").read_text() == "a,b\n1,\n2,x\n"
    assert flatten_scalars({"a": {"b": {"c": 1}}, "l": [1]}) == {"a.b.c": 1}
    assert config_hash({"x": 1}) != config_hash({"x": 2})
    assert safe_dirname("a/b/c") == "a__b__c"
    env = environment_info()
    assert {"python", "torch", "numpy", "torch_threads", "git_commit"} <= set(env)
    assert "hostname" not in json.dumps(env).lower()


# --------------------------------------------------------------------------- registry


def test_registry_lookup_groups_and_errors(isolated_registry):
    reg = isolated_registry
    assert [e.name for e in reg.list_experiments()] == ["quad/a", "quad/b", "quad/noseed"]
    assert [e.name for e in reg.resolve("quad")] == ["quad/a", "quad/b"]
    assert [e.name for e in reg.resolve("quad/b")] == ["quad/b"]
    assert len(reg.resolve("all")) == 3
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'.*\['quad/a', 'quad/b'"):
        reg.get_experiment("nope")

    class Other(QuadExperiment):
        name = "quad/a"

    with pytest.raises(ValueError, match="already registered by QuadExperiment"):
        reg.register(Other())
    reg.register(QuadExperiment())  # same class again: replaced, no error
    with pytest.raises(TypeError, match="Experiment instance or subclass"):
        reg.register(object())
    with pytest.raises(ValueError, match="group name"):
        reg.register_group("all", ["quad/a"])
    with pytest.raises(ValueError, match="at least one member"):
        reg.register_group("g", [])
    reg.unregister("quad/b")
    assert reg.list_groups()["quad"] == ("quad/a",)
    reg.unregister_group("quad")
    assert "quad" not in reg.list_groups()


def test_registry_skips_missing_builtin_module_only(isolated_registry, tmp_path, monkeypatch):
    reg = isolated_registry
    monkeypatch.setattr(reg, "EXPERIMENT_MODULES", ("dynstab_repro.not_written_yet_xyz",))
    assert len(reg.list_experiments()) == 3  # silently skipped
    (tmp_path / "broken_exp_module_xyz.py").write_text("import not_a_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(reg, "EXPERIMENT_MODULES", ("broken_exp_module_xyz",))
    with pytest.raises(ModuleNotFoundError, match="not_a_dependency_xyz"):
        reg.list_experiments()


def test_claim_and_runspec_validation():
    c = Claim("id", "s", "m", True, "c")
    assert Claim.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="filename-safe"):
        RunSpec("a/b", {})
    with pytest.raises(ValueError, match="filename-safe"):
        RunSpec("", {})
    with pytest.raises(TypeError, match="params must be a dict"):
        RunSpec("k", [1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- runner


def run_quad(tmp_path: Path, **kw: Any) -> ExperimentResult:
    marker = tmp_path / "marker"
    marker.mkdir(exist_ok=True)
    kw.setdefault("overrides", [f"marker_dir={marker}"])
    kw.setdefault("executor", "serial")
    kw.setdefault("progress", False)
    return run_experiment("quad/a", out_dir=tmp_path / "out", **kw)


def test_run_writes_every_file_and_claims_pass(isolated_registry, tmp_path):
    res = run_quad(tmp_path)
    d = tmp_path / "out" / "quad__a"
    assert res.run_dir == d
    assert res.passed
    assert res.n_computed == 4
    assert res.n_reused == 0
    for f in [
        "config.json",
        "env.json",
        "metrics.json",
        "metrics.csv",
        "claims.json",
        "result.json",
        "report.md",
        "report.html",
        "figures/final_x.png",
        "figures/final_x.pdf",
        "tables/final_iterates.csv",
    ]:
        assert (d / f).is_file(), f
    assert sorted(p.name for p in (d / "runs").iterdir()) == [
        "lr=0.1.json",
        "lr=0.5.json",
        "lr=0.9.json",
        "lr=1.1.json",
    ]
    cfg = read_json(d / "config.json")
    assert cfg["profile"] == "quick"
    assert cfg["config"]["steps"] == 50
    assert cfg["overrides"] == [f"marker_dir={tmp_path / 'marker'}"]
    # metrics match an independent evaluation of GD on the quadratic
    metrics = read_json(d / "metrics.json")
    assert metrics["lr=1.1"]["final_abs_x"] == pytest.approx(1.2**50, rel=1e-10)
    assert metrics["lr=0.1"]["final_abs_x"] == pytest.approx(0.8**50, rel=1e-10)
    header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["key", "params.lr"]
    assert "nested.a" in header
    claims = read_json(d / "claims.json")
    assert claims["passed"]
    assert claims["claims"][0]["id"] == "Q1"
    md = (d / "report.md").read_text()
    assert "| id | claim | source | paper | ours | rule | status |" in md
    assert "| Q1 | GD on ½h x² converges iff η < 2/h |" in md
    assert "| reproduced |" in md
    assert "paper: Cauchy (1847), gradient descent on a quadratic" in md
    assert "| A1 | x0 = 1 |" in md
    assert "![final_x](figures/final_x.png)" in md
    html = (d / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert '<td class="reproduced">reproduced</td>' in html
    assert res.results["lr=0.5"]["converged"] is True


def test_resume_recomputes_only_missing_units(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    run_quad(tmp_path)
    assert calls(marker) == 4
    (tmp_path / "out" / "quad__a" / "runs" / "lr=0.9.json").unlink()
    res = run_quad(tmp_path)
    assert calls(marker) == 5
    assert calls(marker, key="lr=0.9") == 2
    assert (res.n_computed, res.n_reused) == (1, 3)
    assert res.passed
    res = run_quad(tmp_path)  # everything done: nothing recomputed
    assert calls(marker) == 5
    assert res.n_computed == 0


def test_changed_config_is_refused_unless_forced(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    run_quad(tmp_path)
    changed = [f"marker_dir={marker}", "steps=60"]
    with pytest.raises(ValueError, match=r"different configuration.*new --out directory.*--force"):
        run_quad(tmp_path, overrides=changed)
    res = run_quad(tmp_path, overrides=changed, force=True)
    assert res.n_computed == 4
    assert calls(marker) == 8
    assert read_json(res.run_dir / "config.json")["config"]["steps"] == 60
    # a stored unit from another config (config.json tampered with) is recomputed, and said so
    run = read_json(res.run_dir / "runs" / "lr=0.1.json")
    run["config_hash"] = "0" * 16
    atomic_write_json(res.run_dir / "runs" / "lr=0.1.json", run)
    res = run_quad(tmp_path, overrides=changed)
    assert (res.n_computed, res.n_reused) == (1, 3)
    assert calls(marker, key="lr=0.1") == 3
    assert any("computed with another config" in n for n in res.notes)


def test_failed_unit_is_recorded_reported_and_retried_next_time(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    (marker / "fail_lr=0.5").touch()
    res = run_quad(tmp_path)
    assert not res.passed
    assert set(res.failures) == {"lr=0.5"}
    assert "RuntimeError: boom at lr=0.5" in res.failures["lr=0.5"]["error"]
    err = read_json(res.run_dir / "runs" / "lr=0.5.error.json")
    assert err["status"] == "error"
    assert "Traceback" in err["traceback"]
    assert "boom" in err["traceback"]
    md = (res.run_dir / "report.md").read_text()
    assert "## Failed units" in md
    assert "1 of 4 units failed" in md
    assert read_json(res.run_dir / "result.json")["failed_units"] == ["lr=0.5"]
    (marker / "fail_lr=0.5").unlink()
    res = run_quad(tmp_path)
    assert res.passed
    assert res.n_computed == 1
    assert calls(marker, key="lr=0.5") == 2
    assert not (res.run_dir / "runs" / "lr=0.5.error.json").exists()


def test_analyze_errors_become_a_failing_claim(isolated_registry, tmp_path):
    res = run_quad(tmp_path, overrides={"analyze_raises": True})
    assert not res.passed
    assert res.claims[0].id == "analyze"
    assert "ZeroDivisionError: analysis bug" in res.claims[0].measured
    assert "analyze raised ZeroDivisionError" in (res.run_dir / "report.md").read_text()


def test_failing_claim_makes_the_run_fail(isolated_registry, tmp_path):
    res = run_quad(tmp_path, overrides={"expected_threshold": 0.4})
    assert not res.passed
    assert not res.claims[0].passed
    assert "| failed |" in (res.run_dir / "report.md").read_text()


def test_seed_and_config_resolution_order(isolated_registry):
    exp = registry.get_experiment("quad/a")
    cfg = resolve_config(
        exp, profile="quick", base_config={"steps": 5, "x0": 2.0}, overrides=["steps=6"], seed=9
    )
    assert (cfg.steps, cfg.x0, cfg.seed) == (6, 2.0, 9)
    with pytest.raises(ValueError, match="no 'seed' or 'seeds' field"):
        resolve_config("quad/noseed", seed=1)

    @dataclasses.dataclass(frozen=True)
    class Seeds:
        seeds: tuple[int, ...] = (0, 1, 2)

    class SeedsExp(NoSeedExperiment):
        name = "quad/seeds"
        config_cls = Seeds

    assert resolve_config(SeedsExp(), seed=10).seeds == (10, 11, 12)


def test_run_experiment_usage_errors(isolated_registry, tmp_path):
    with pytest.raises(ValueError, match="is a group of 2 experiments"):
        run_experiment("quad", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        run_quad(tmp_path, executor="gpu")
    with pytest.raises(ValueError, match="unknown profile"):
        run_quad(tmp_path, profile="nope")
    with pytest.raises(ValueError, match=r"scope 'quad/b' is not among .*\['quad/a'\]"):
        run_quad(tmp_path, overrides=["quad/b:steps=3"])
    res = run_quad(tmp_path, overrides=["quad/a:steps=3"])  # scoped to the experiment run
    assert res.config.steps == 3


def test_rerender_from_saved_files_does_not_recompute(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    res = run_quad(tmp_path)
    for f in ["report.md", "report.html", "figures/final_x.png", "claims.json"]:
        (res.run_dir / f).unlink()
    again = render_run_dir(res.run_dir)
    assert isinstance(again, ExperimentResult)
    assert again.passed
    assert (res.run_dir / "report.md").is_file()
    assert (res.run_dir / "figures/final_x.png").is_file()
    assert again.claims == res.claims
    assert calls(marker) == 4
    with pytest.raises(ValueError, match="not a run directory"):
        render_run_dir(tmp_path)


def test_reproduce_group_with_scoped_overrides_and_summary(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    res = reproduce(
        "quad",
        out_dir=tmp_path / "out",
        executor="serial",
        progress=True,
        overrides=[f"marker_dir={marker}", "quad/b:steps=60"],
    )
    assert isinstance(res, ReproductionResult)
    assert res.passed
    assert [e.name for e in res.experiments] == ["quad/a", "quad/b"]
    assert [e.config.steps for e in res.experiments] == [50, 60]
    summary = read_json(tmp_path / "out" / "summary.json")
    assert summary["passed"]
    assert [r["name"] for r in summary["experiments"]] == ["quad/a", "quad/b"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "2/2 experiments without a failure" in md
    assert "[report](quad__b/report.md)" in md
    assert calls(marker, "quad/a") == 4
    assert calls(marker, "quad/b") == 4
    again = render_run_dir(tmp_path / "out")
    assert isinstance(again, ReproductionResult)
    assert again.passed
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        reproduce("quad", out_dir=tmp_path / "o2", overrides=["nope=1"], progress=False)
    with pytest.raises(ValueError, match="scope 'quad/zzz' is not among"):
        reproduce("quad", out_dir=tmp_path / "o2", overrides=["quad/zzz:steps=1"], progress=False)


# --------------------------------------------------------------------------- executors


def quad_tasks(marker: Path) -> list[UnitTask]:
    exp = QuadExperiment()
    cfg = config_to_dict(QuadConfig(steps=30, marker_dir=str(marker)))
    return [UnitTask.make(exp, cfg, s) for s in exp.specs(QuadConfig())]


def test_serial_executor_and_error_capture(tmp_path):
    tasks = quad_tasks(tmp_path)
    outs = list(SerialExecutor().run(tasks))
    assert [o.key for o in outs] == [t.key for t in tasks]
    assert all(o.status == "ok" for o in outs)
    assert outs[0].metrics["final_abs_x"] == pytest.approx(0.8**30, rel=1e-12)
    (tmp_path / "fail_lr=0.1").touch()
    bad = execute_unit(tasks[0])
    assert bad.status == "error"
    assert bad.metrics is None
    assert "boom" in bad.traceback
    lost = execute_unit(UnitTask("quad/zzz", "no_such_module_xyz:Thing", {}, "k", {}))
    assert lost.status == "error"
    assert "No module named 'no_such_module_xyz'" in lost.error
    wrong = execute_unit(UnitTask("quad/zzz", f"{__name__}:QuadExperiment", {}, "k", {}))
    assert wrong.status == "error"
    assert "does not build the experiment 'quad/zzz'" in wrong.error


def test_local_executor_two_workers_matches_serial(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    start = time.perf_counter()
    res_local = run_quad(tmp_path, executor="local", max_workers=2)
    elapsed = time.perf_counter() - start
    assert calls(marker) == 4
    assert res_local.passed
    serial = run_experiment(
        "quad/a",
        out_dir=tmp_path / "serial",
        executor="serial",
        progress=False,
        overrides=[f"marker_dir={marker}"],
    )
    assert res_local.results == serial.results
    assert elapsed < 120


def test_local_executor_reports_crashed_worker(tmp_path):
    (tmp_path / "exit_lr=0.5").touch()
    outs = list(LocalExecutor(max_workers=1).run(quad_tasks(tmp_path)[1:2]))
    assert outs[0].key == "lr=0.5"
    assert outs[0].status == "error"
    assert "BrokenProcessPool" in outs[0].error
    with pytest.raises(ValueError, match="max_workers must be a positive int"):
        LocalExecutor(max_workers=0)


def test_local_executor_stops_promptly_when_the_consumer_stops(tmp_path):
    (tmp_path / "sleep_lr=0.1").touch()
    tasks = quad_tasks(tmp_path)[:2]  # lr=0.1 sleeps for two minutes, lr=0.5 is instant
    gen = LocalExecutor(max_workers=2).run(tasks)
    first = next(gen)
    assert first.key == "lr=0.5"
    assert first.status == "ok"
    start = time.perf_counter()
    gen.close()  # what a KeyboardInterrupt in the runner does
    assert time.perf_counter() - start < 30


@pytest.mark.skipif(
    "ray" in sys.modules or __import__("importlib").util.find_spec("ray") is not None,
    reason="ray is installed",
)
def test_ray_executor_missing_gives_install_hint(isolated_registry, tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'dynstab\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ImportError, match="pip install"):
        run_quad(tmp_path, executor="ray")
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("dask")


@pytest.mark.ray
def test_ray_executor_local_instance(isolated_registry, tmp_path):
    pytest.importorskip("ray")
    res = run_quad(tmp_path, executor="ray")
    assert res.passed
    assert res.n_computed == 4


# --------------------------------------------------------------------------- report


def test_report_escapes_and_lists_everything():
    data = ReportData(
        name="x/y",
        title="T <b>",
        reference="Wu & Su (ICML 2023), Fig. 2",
        profile="full",
        overrides=["a=1"],
        config={"a": 1, "b": [0.5, 2]},
        ambiguities={"A3": "Gaussian inputs"},
        claims=[
            Claim("C1", "a|b", "1.0", True, "<= 2"),
            Claim("C2", "s", "m", False, "c"),
            Claim(
                "C3",
                "t",
                "0.9",
                criterion="≤ 1.1",
                status="adapted",
                paper="≤ 1",
                source="Fig. 3",
                note="10% slack",
            ),
            Claim("C4", "u", "0.6", status="not reproduced", paper="= 1", note="data differ"),
        ],
        tables=[("Tab", [{"u": 1}, {"u": 2, "v": 3}])],
        runtime_s=1.25,
        compute_s=2.5,
        n_units=2,
        n_computed=2,
        failures={"k": {"error": "E", "traceback": "tb"}},
        notes=["note 1"],
        outcomes={"k": "failed", "j": "diverged"},
        provenance={"command": "dynstab run x/y", "commit_label": "abc1234 dirty"},
        config_hash="0123456789abcdef",
    )
    md = render_markdown(data)
    assert "| C1 | a\\|b |  |  | 1.0 | <= 2 | reproduced |" in md
    assert "| C2 | s |  |  | m | c | failed |" in md
    assert "| C3 | t | Fig. 3 | ≤ 1 | 0.9 | ≤ 1.1 | adapted (10% slack) |" in md
    assert "| C4 | u |  | = 1 | 0.6 |  | not reproduced (data differ) |" in md
    assert (
        "**FAILED**: 4 claims (1 reproduced, 1 adapted, 1 not reproduced, 1 failed); "
        "1 of 2 units failed." in md
    )
    assert "| A3 | Gaussian inputs |" in md
    assert "| u | v |" in md
    assert "| 2 | 3 |" in md
    assert "wall time of this experiment 1.2 s" in md
    assert "| command | `dynstab run x/y` |" in md
    assert "| git commit | abc1234 dirty |" in md
    assert "config hash `0123456789abcdef`" in md
    assert "| j | diverged |" in md
    assert "1 diverged, 1 failed" in md
    assert "* note 1" in md
    html = render_html(data)
    assert "T &lt;b&gt;" in html
    assert '<td class="failed">failed</td>' in html
    assert '<td class="adapted">adapted (10% slack)</td>' in html
    assert '<td class="not-reproduced">not reproduced (data differ)</td>' in html
    assert "PASS" not in md + html
    assert not data.passed


# --------------------------------------------------------------------------- claim model


def test_old_style_claims_map_to_reproduced_or_failed():
    ok = Claim("a", "s", "m", True, "rule")
    bad = Claim("b", "s", "m", False, "rule")
    assert (ok.status, ok.passed, ok.label) == (ClaimStatus.REPRODUCED, True, "REPRODUCED")
    assert (bad.status, bad.passed, bad.label) == (ClaimStatus.FAILED, False, "FAILED")
    assert ok.paper == ""
    assert ok.source == ""
    old_dict = {"id": "c", "statement": "s", "measured": "m", "passed": False, "criterion": "r"}
    assert Claim.from_dict(old_dict).status == "failed"  # claims.json of older versions


@pytest.mark.parametrize("status", ["adapted", "not reproduced", "reproduced", "failed"])
def test_new_style_claims_round_trip_and_derive_passed(status):
    c = Claim(
        "E1",
        "Tr G ≤ 2/η",
        criterion="ratio ≤ 1.05",
        status=status,
        paper="Tr G ≤ 2/η at every η",
        source="Fig. 2(a)",
        note="" if status in ("reproduced", "failed") else "finite training time",
        measurement=Measurement.over_seeds([0.91, 0.95, 0.93], label="max ratio"),
    )
    assert c.passed is (status != "failed")
    assert c.measured == "max ratio = 0.93 (median of 3 seeds; range 0.91 to 0.95)"
    assert Claim.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.label == status.upper()


def test_claim_validation_messages():
    with pytest.raises(TypeError, match="needs passed=True/False"):
        Claim("a", "s", "m")
    with pytest.raises(ValueError, match="unknown status 'pass'"):
        Claim("a", "s", "m", status="pass")
    with pytest.raises(ValueError, match="contradicts status 'failed'"):
        Claim("a", "s", "m", True, status="failed")
    with pytest.raises(ValueError, match="say what changed and why"):
        Claim("a", "s", "m", status="adapted")
    assert Claim("a", "s", "m", False, status="failed").passed is False


def test_measurement_over_seeds_with_diverged_seeds():
    m = Measurement.over_seeds([1.0, float("nan"), 3.0, float("inf")])
    assert (m.value, m.low, m.high, m.n_seeds, m.n_excluded) == (2.0, 1.0, 3.0, 2, 2)
    assert str(m) == "2 (median of 2 seeds; range 1 to 3; 2 not finite)"
    assert math.isnan(Measurement.over_seeds([float("nan")]).value)
    with pytest.raises(ValueError, match="at least one value"):
        Measurement.over_seeds([])


def test_unit_outcomes():
    assert unit_outcome({"diverged": True, "converged": False}) == "diverged"
    assert unit_outcome({"early_stopped": True}) == "early-stopped"
    assert unit_outcome({"converged": True, "converged_at_full_lr": False}) == (
        "converged in warm-up"
    )
    assert unit_outcome({"converged": True, "converged_at_full_lr": True}) == "converged"
    assert unit_outcome({"outcome": "plateau", "diverged": True}) == "plateau"
    assert unit_outcome({"loss": 1.0}) == "ok"


def test_adapted_and_not_reproduced_are_never_shown_as_pass(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    statuses = "reproduced,adapted,not reproduced"
    res = reproduce(
        "quad",
        out_dir=tmp_path / "out",
        executor="serial",
        progress=False,
        overrides=[f"marker_dir={marker}", f"quad/a:extra_statuses={statuses}"],
        command="dynstab reproduce quad --quick",
    )
    assert res.passed  # nothing failed
    a, b = res.experiments
    assert a.verdict == "PARTLY REPRODUCED"
    assert b.verdict == "REPRODUCED"
    assert a.status_counts == {"reproduced": 2, "adapted": 1, "not reproduced": 1, "failed": 0}
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| experiment | id | claim | source | paper | ours | rule | status |" in md
    assert "| quad/a | X1 | |x_T| of the smallest η is tiny" not in md  # cells are escaped
    assert "| adapted (why adapted) |" in md
    assert "| not reproduced (why not reproduced) |" in md
    assert "| Eq. (1) | \\|x_T\\| → 0 | \\|x_T\\| = " in md
    # an old-style claim renders an empty paper cell
    assert "| quad/b | Q1 | GD on ½h x² converges iff η < 2/h |  |  | converged at" in md
    assert "PASS" not in md
    summary = read_json(tmp_path / "out" / "summary.json")
    rows = {r["name"]: r for r in summary["experiments"]}
    assert [c["status"] for c in rows["quad/a"]["claims"]] == [
        "reproduced",
        "reproduced",
        "adapted",
        "not reproduced",
    ]
    assert rows["quad/a"]["verdict"] == "PARTLY REPRODUCED"
    html = (res.experiments[0].run_dir / "report.html").read_text()
    assert '<td class="adapted">adapted (why adapted)</td>' in html
    assert '<td class="not-reproduced">not reproduced (why not reproduced)</td>' in html
    assert "PASS" not in html
    (tmp_path / "f").mkdir()
    failed = run_quad(tmp_path / "f", overrides=[f"marker_dir={marker}", "extra_statuses=failed"])
    assert not failed.passed
    assert failed.verdict == "FAILED"


def test_summary_opens_with_provenance_and_per_experiment_facts(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    marker.mkdir()
    cmd = "dynstab reproduce quad --quick --out out"
    res = reproduce(
        "quad",
        out_dir=tmp_path / "out",
        executor="serial",
        progress=False,
        overrides=[f"marker_dir={marker}"],
        command=cmd,
    )
    md = (tmp_path / "out" / "summary.md").read_text()
    head = md.split("\n\n")[1]  # the block after the title
    for field in ("command", "git commit", "versions", "threads", "device", "started"):
        assert f"| {field} |" in head, field
    assert f"`{cmd}`" in head
    assert "dynstab 0." in head
    assert "torch 2." in head
    assert "python 3." in head
    code = environment_info()
    if code["git_commit"]:
        label = code["git_commit"][:7] + (" dirty" if code["git_dirty"] else "")
        assert f"| git commit | {label} |" in head
    summary = read_json(tmp_path / "out" / "summary.json")
    prov = summary["provenance"]
    assert prov["command"] == cmd
    assert {"commit", "dirty", "versions", "threads", "device", "started_at", "wall_s"} <= set(prov)
    assert prov["device"] == "cpu"
    for exp, row in zip(res.experiments, summary["experiments"]):
        assert row["config_hash"] == exp.config_hash
        assert row["wall_s"] == exp.runtime_s
        assert row["outcome_counts"] == {"converged": 3, "not converged": 1}
        assert f"`{exp.config_hash}`" in md
        result = read_json(exp.run_dir / "result.json")
        assert result["wall_s"] == exp.runtime_s
        assert result["provenance"]["command"] == cmd
        report = (exp.run_dir / "report.md").read_text()
        assert "| wall time (this experiment) |" in report
        assert "3 converged, 1 not converged" in report
    assert "| quad/a |" in md
    assert "3 converged, 1 not converged" in md


def test_corrupted_config_json_is_quarantined(isolated_registry, tmp_path):
    res = run_quad(tmp_path)
    (res.run_dir / "config.json").write_text("{broken")
    again = run_quad(tmp_path)
    assert again.n_reused == 4
    assert len(list(res.run_dir.glob("config.json.corrupt-*"))) == 1
    assert any("config.json was corrupted" in n for n in again.notes)
    (res.run_dir / "config.json").write_text("[]")
    with pytest.raises(ValueError, match="unreadable or not a run configuration"):
        render_run_dir(res.run_dir)


def test_force_swaps_in_a_fresh_directory_at_the_end(isolated_registry, tmp_path):
    marker = tmp_path / "marker"
    res = run_quad(tmp_path)
    (res.run_dir / "runs" / "lr=0.1.json").write_text("{}")  # would be quarantined without force
    res = run_quad(tmp_path, force=True)
    assert res.n_computed == 4
    assert calls(marker) == 8
    assert not list(res.run_dir.parent.glob(".*"))  # no staging or old directory left
    assert not list((res.run_dir / "runs").glob("*.corrupt-*"))
    assert read_json(res.run_dir / "runs" / "lr=0.1.json")["status"] == "ok"


def test_local_executor_drain_returns_finished_outcomes(tmp_path):
    tasks = quad_tasks(tmp_path)
    ex = LocalExecutor(max_workers=2)
    gen = ex.run(tasks)
    first = next(gen)
    deadline = time.monotonic() + 60
    while sum(f.done() for f in ex._futures) < len(tasks) and time.monotonic() < deadline:
        time.sleep(0.01)
    gen.close()
    drained = ex.drain()
    assert {o.key for o in drained} | {first.key} == {t.key for t in tasks}
    assert all(o.status == "ok" for o in drained)
    assert ex.drain() == []  # each outcome is handed out once
