"""Run reproductions: resolve configs, execute units (resumably), analyse, plot and report.

Layout written under ``out_dir/<name with '/' replaced by '__'>/``:

* ``config.json``: experiment name, profile, overrides, seed, resolved config and its hash;
* ``env.json``: versions, threads, devices, git commit (no hostname);
* ``runs/<key>.json``: one file per finished unit, written atomically as soon as it finishes
  (``{"key", "params", "config_hash", "status": "ok", "metrics", "runtime_s"}``);
  ``runs/<key>.error.json`` for a unit whose ``run_one`` raised (error + traceback);
* ``metrics.json`` (``{key: metrics}``) and ``metrics.csv`` (flattened scalar params and
  metrics, one row per unit);
* ``claims.json``, ``result.json`` (counts, runtimes, pass/fail), ``tables/*.csv``,
  ``figures/*.png`` + ``*.pdf``, ``report.md`` and ``report.html``.

:func:`reproduce` additionally writes ``out_dir/summary.md`` and ``summary.json``.

**Resuming.** A unit is skipped when ``runs/<key>.json`` exists with ``status == "ok"`` and the
same config hash. Failed units are recomputed by the next invocation (never retried within
one). If ``config.json`` holds a different config hash the run stops with a ValueError telling
to use a new ``out_dir`` or ``force=True`` (which discards the stored units and figures).

**Config resolution** (later wins): ``config_cls`` defaults (the spec's full settings) →
profile (``PROFILES[profile]``) → ``base_config`` (e.g. a ``--config`` JSON file) →
``overrides`` → ``seed``. Overrides may be scoped to one experiment as ``"name:key=value"``
(or mapping key ``"name:key"``). With several experiments (:func:`reproduce`), an unscoped key
applies to every experiment whose config has it, and must exist in at least one. ``seed`` sets
a ``seed`` field, or replaces a ``seeds`` tuple by ``(seed, seed+1, ...)`` of the same length.

**Pass/fail.** An experiment passes when it has at least one claim, all claims pass and no
unit failed. Exceptions in ``analyze``/``tables``/``plot`` are recorded as notes (``analyze``
errors as a failing claim ``"analyze"``), never crash the runner.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynstab_repro.base import Claim, Experiment, RunSpec
from dynstab_repro.config import (
    _field_types,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    profile_config,
)
from dynstab_repro.executors import UnitOutcome, UnitTask, make_executor
from dynstab_repro.io import (
    atomic_write_csv,
    atomic_write_json,
    config_hash,
    environment_info,
    flatten_scalars,
    read_json,
    safe_dirname,
)
from dynstab_repro.registry import get_experiment, resolve
from dynstab_repro.report import ReportData, render_summary_markdown, write_report

__all__ = [
    "ExperimentResult",
    "ReproductionResult",
    "render_run_dir",
    "reproduce",
    "resolve_config",
    "run_experiment",
]

Overrides = Iterable[str] | Mapping[str, Any]


@dataclass(frozen=True)
class ExperimentResult:
    """Outcome of one experiment's run (or re-rendering).

    Attributes:
        name: Registry name.
        run_dir: Directory holding every file of the run.
        config: The resolved config instance.
        claims: Checked claims.
        results: ``{key: metrics}`` of the units that succeeded (spec order).
        failures: ``{key: {"error", "traceback"}}`` of units that failed.
        figures: Figure files written (PNG and PDF).
        n_units: Number of units in the spec list.
        n_computed: Units computed by this invocation.
        n_reused: Units reused from earlier invocations.
        runtime_s: Wall-clock seconds of this invocation.
        notes: Problems recorded while analysing/plotting.
    """

    name: str
    run_dir: Path
    config: Any
    claims: tuple[Claim, ...]
    results: dict[str, dict[str, Any]]
    failures: dict[str, dict[str, Any]]
    figures: tuple[Path, ...]
    n_units: int
    n_computed: int
    n_reused: int
    runtime_s: float
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """At least one claim, all claims pass and no unit failed."""
        return bool(self.claims) and all(c.passed for c in self.claims) and not self.failures


@dataclass(frozen=True)
class ReproductionResult:
    """Outcome of :func:`reproduce`: one :class:`ExperimentResult` per experiment.

    Attributes:
        name: The group (or experiment) name that was reproduced.
        out_dir: Top-level output directory (holds ``summary.md``/``summary.json``).
        experiments: Per-experiment results.
    """

    name: str
    out_dir: Path
    experiments: tuple[ExperimentResult, ...]

    @property
    def passed(self) -> bool:
        """Every experiment passed."""
        return bool(self.experiments) and all(e.passed for e in self.experiments)


# --------------------------------------------------------------------------- configs


def _split_overrides(overrides: Overrides) -> list[tuple[str | None, str, Any]]:
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = [(str(k), v) for k, v in overrides.items()]
    else:
        if isinstance(overrides, str):
            overrides = [overrides]
        for item in overrides:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    f"an override must look like key=value or experiment:key=value; got {item!r}. "
                    "Example: --set lr=0.05 --set wu-su-2023/e1:seeds=0,1"
                )
            items.append((key.strip(), value.strip()))
    out: list[tuple[str | None, str, Any]] = []
    for key, value in items:
        scope, sep, bare = key.rpartition(":")
        out.append((scope if sep else None, bare, value))
    return out


def _overrides_for(
    exp: Experiment, parsed: Sequence[tuple[str | None, str, Any]], strict: bool
) -> dict[str, Any]:
    fields = _field_types(exp.config_cls)
    chosen: dict[str, Any] = {}
    for scope, key, value in parsed:
        if scope is not None and scope != exp.name:
            continue
        if key in fields or strict or scope is not None:
            chosen[key] = value  # unknown keys raise in apply_overrides
    return chosen


def _check_unscoped_used(experiments: Sequence[Experiment], parsed: Sequence[Any]) -> None:
    names = {e.name for e in experiments}
    for scope, key, _ in parsed:
        if scope is not None and scope not in names:
            raise ValueError(
                f"override scope {scope!r} is not among the experiments run: {sorted(names)}."
            )
        if scope is None and not any(key in _field_types(e.config_cls) for e in experiments):
            valid = sorted({k for e in experiments for k in _field_types(e.config_cls)})
            raise ValueError(
                f"unknown config key {key!r}: no experiment in {sorted(names)} has it; "
                f"valid keys are {valid}."
            )


def _apply_seed(config: Any, seed: int, strict: bool) -> Any:
    fields = _field_types(type(config))
    if "seed" in fields:
        return dataclasses.replace(config, seed=int(seed))
    if "seeds" in fields:
        n = max(1, len(config.seeds))
        return dataclasses.replace(config, seeds=tuple(int(seed) + i for i in range(n)))
    if strict:
        raise ValueError(
            f"{type(config).__name__} has no 'seed' or 'seeds' field, so --seed cannot be applied; "
            "drop --seed."
        )
    return config


def resolve_config(
    experiment: Experiment | str,
    *,
    profile: str = "quick",
    overrides: Overrides = (),
    base_config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    strict: bool = True,
) -> Any:
    """Resolved config: defaults → profile → ``base_config`` → ``overrides`` → ``seed``.

    Args:
        experiment: Experiment or its registry name.
        profile: Profile name (``"quick"``, ``"full"``, or one of ``config_cls.PROFILES``).
        overrides: ``["key=value", ...]`` or a mapping; keys may be scoped ``"name:key"``.
        base_config: Values from a config file (unscoped or scoped keys).
        seed: Base seed (see the module docstring).
        strict: Unknown unscoped keys raise (``True``) or are skipped (``False``).

    Returns:
        A ``config_cls`` instance.

    Raises:
        ValueError: Unknown profile/keys, bad values, or ``seed`` without a seed field.
    """
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    config: Any = profile_config(exp.config_cls, profile)
    for source in (base_config or {}, overrides):
        chosen = _overrides_for(exp, _split_overrides(source), strict)
        if chosen:
            config = apply_overrides(config, chosen)
    if seed is not None:
        config = _apply_seed(config, seed, strict)
    return config


# --------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    exp: Experiment
    config: Any
    config_dict: dict[str, Any]
    chash: str
    run_dir: Path
    specs: list[RunSpec]
    pending: list[RunSpec] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_reused: int = 0
    n_computed: int = 0


def _clear_outputs(run_dir: Path) -> None:
    for sub in ("runs", "figures", "tables"):
        d = run_dir / sub
        if d.is_dir():
            shutil.rmtree(d)


def _check_specs(exp: Experiment, specs: Sequence[RunSpec]) -> list[RunSpec]:
    specs = list(specs)
    keys = [s.key for s in specs]
    if any(not isinstance(s, RunSpec) for s in specs):
        raise TypeError(f"{exp.name}.specs must return RunSpec objects.")
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{exp.name}.specs returned duplicate keys {dup}; keys must be unique.")
    return specs


def _scan_runs(plan: _Plan, force: bool) -> None:
    runs = plan.run_dir / "runs"
    for spec in plan.specs:
        path = runs / f"{spec.key}.json"
        if not path.is_file():
            plan.pending.append(spec)
            continue
        try:
            data = read_json(path)
        except ValueError:  # unreadable: recompute
            plan.pending.append(spec)
            continue
        if data.get("config_hash") != plan.chash:
            if not force:
                raise ValueError(
                    f"{path} was computed with config hash {data.get('config_hash')}, "
                    f"not {plan.chash}; use a new --out directory or --force to recompute."
                )
            plan.pending.append(spec)
        elif data.get("status") == "ok":
            plan.results[spec.key] = data["metrics"]
            plan.n_reused += 1
        else:
            plan.pending.append(spec)


def _prepare(
    exp: Experiment,
    config: Any,
    out_dir: Path,
    *,
    profile: str,
    overrides: Any,
    seed: int | None,
    force: bool,
) -> _Plan:
    config_dict = config_to_dict(config)
    chash = config_hash({"experiment": exp.name, "config": config_dict})
    run_dir = out_dir / safe_dirname(exp.name)
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file() and not force:
        old = read_json(cfg_path)
        if old.get("config_hash") != chash:
            raise ValueError(
                f"{run_dir} holds results of a different configuration of {exp.name} "
                f"(hash {old.get('config_hash')} vs {chash}); use a new --out directory, "
                "or --force to discard the stored results."
            )
    if force:
        _clear_outputs(run_dir)
    specs = _check_specs(exp, exp.specs(config))
    plan = _Plan(exp, config, config_dict, chash, run_dir, specs)
    atomic_write_json(
        cfg_path,
        {
            "experiment": exp.name,
            "title": exp.title,
            "profile": profile,
            "overrides": overrides,
            "seed": seed,
            "config": config_dict,
            "config_hash": chash,
            "units": [s.key for s in specs],
        },
    )
    atomic_write_json(run_dir / "env.json", environment_info())
    _scan_runs(plan, force)
    return plan


def _record(plan: _Plan, spec: RunSpec, outcome: UnitOutcome) -> None:
    runs = plan.run_dir / "runs"
    base = {
        "experiment": plan.exp.name,
        "key": spec.key,
        "params": spec.params,
        "config_hash": plan.chash,
        "status": outcome.status,
        "runtime_s": outcome.runtime_s,
    }
    err_path = runs / f"{spec.key}.error.json"
    if outcome.status == "ok":
        atomic_write_json(runs / f"{spec.key}.json", {**base, "metrics": outcome.metrics})
        if err_path.exists():
            err_path.unlink()
        plan.results[spec.key] = outcome.metrics or {}
        plan.failures.pop(spec.key, None)
    else:
        info = {"error": outcome.error, "traceback": outcome.traceback}
        atomic_write_json(err_path, {**base, **info})
        plan.failures[spec.key] = info
    plan.n_computed += 1


def _execute(
    plans: Sequence[_Plan],
    *,
    executor: str,
    max_workers: int | None,
    ray_address: str | None,
    progress: bool,
    desc: str,
) -> None:
    tasks: list[UnitTask] = []
    index: dict[tuple[str, str], tuple[_Plan, RunSpec]] = {}
    for plan in plans:
        for spec in plan.pending:
            tasks.append(UnitTask.make(plan.exp, plan.config_dict, spec))
            index[(plan.exp.name, spec.key)] = (plan, spec)
    if not tasks:
        return
    from tqdm.auto import tqdm

    runner = make_executor(executor, max_workers=max_workers, ray_address=ray_address)
    bar = tqdm(total=len(tasks), desc=desc, unit="unit", disable=not progress, file=sys.stderr)
    n_failed = 0
    try:
        for outcome in runner.run(tasks):
            plan, spec = index[(outcome.experiment, outcome.key)]
            _record(plan, spec, outcome)
            n_failed += outcome.status != "ok"
            bar.set_postfix_str(
                f"{outcome.experiment} {outcome.key}"[-60:]
                + (f" failed={n_failed}" if n_failed else "")
            )
            bar.update(1)
    finally:
        bar.close()


# --------------------------------------------------------------------------- finishing


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60] or "table"


def _finalize(
    plan: _Plan,
    *,
    runtime_s: float,
    profile: str,
    overrides: Any,
    n_computed: int | None = None,
    wall_s: float | None = None,
) -> ExperimentResult:
    exp, config, run_dir = plan.exp, plan.config, plan.run_dir
    order = {s.key: i for i, s in enumerate(plan.specs)}
    results = dict(sorted(plan.results.items(), key=lambda kv: order.get(kv[0], 0)))
    params = {s.key: s.params for s in plan.specs}
    atomic_write_json(run_dir / "metrics.json", results)
    rows = [
        {"key": k, **flatten_scalars(params[k], "params."), **flatten_scalars(m)}
        for k, m in results.items()
    ]
    atomic_write_csv(run_dir / "metrics.csv", rows)
    notes: list[str] = []
    try:
        claims = [c for c in exp.analyze(config, results)]
        if any(not isinstance(c, Claim) for c in claims):
            raise TypeError("analyze must return a list of Claim objects")
    except Exception as exc:
        notes.append(f"analyze raised {type(exc).__name__}: {exc}")
        claims = [
            Claim(
                "analyze",
                "analyze() completes on the results",
                f"{type(exc).__name__}: {exc}",
                False,
                "no exception",
            )
        ]
    try:
        tables = list(exp.tables(config, results))
    except Exception as exc:
        notes.append(f"tables raised {type(exc).__name__}: {exc}")
        tables = []
    for title, trows in tables:
        atomic_write_csv(run_dir / "tables" / f"{_slug(title)}.csv", trows)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    try:
        figures = [Path(p) for p in exp.plot(config, results, fig_dir)]
    except Exception as exc:
        notes.append(f"plot raised {type(exc).__name__}: {exc}")
        figures = []
    pngs = [
        str(p.resolve().relative_to(run_dir.resolve()))
        for p in figures
        if p.suffix == ".png" and p.resolve().is_relative_to(run_dir.resolve())
    ]
    compute_s = (
        sum(
            float(read_json(p).get("runtime_s", 0.0))
            for p in sorted((run_dir / "runs").glob("*.json"))
            if not p.name.endswith(".error.json")
        )
        if (run_dir / "runs").is_dir()
        else 0.0
    )
    n_comp = plan.n_computed if n_computed is None else n_computed
    passed = bool(claims) and all(c.passed for c in claims) and not plan.failures
    atomic_write_json(
        run_dir / "claims.json",
        {
            "experiment": exp.name,
            "passed": passed,
            "claims": [c.to_dict() for c in claims],
            "failed_units": sorted(plan.failures),
        },
    )
    atomic_write_json(
        run_dir / "result.json",
        {
            "experiment": exp.name,
            "passed": passed,
            "profile": profile,
            "runtime_s": runtime_s,
            "compute_s": compute_s,
            "n_units": len(plan.specs),
            "n_computed": n_comp,
            "n_reused": plan.n_reused,
            "failed_units": sorted(plan.failures),
            "notes": notes,
        },
    )
    env = read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else {}
    data = ReportData(
        name=exp.name,
        title=exp.title,
        description=exp.description,
        spec_reference=exp.spec_reference,
        profile=profile,
        overrides=overrides
        if isinstance(overrides, list | tuple)
        else [f"{k}={v}" for k, v in dict(overrides or {}).items()],
        config=plan.config_dict,
        ambiguities=dict(exp.ambiguities),
        claims=claims,
        tables=tables,
        figures=pngs,
        runtime_s=runtime_s,
        compute_s=compute_s,
        n_units=len(plan.specs),
        n_computed=n_comp,
        n_reused=plan.n_reused,
        failures=plan.failures,
        notes=notes,
        env=env,
    )
    write_report(run_dir, data)
    return ExperimentResult(
        name=exp.name,
        run_dir=run_dir,
        config=config,
        claims=tuple(claims),
        results=results,
        failures=dict(plan.failures),
        figures=tuple(figures),
        n_units=len(plan.specs),
        n_computed=n_comp,
        n_reused=plan.n_reused,
        runtime_s=runtime_s,
        notes=tuple(notes),
    )


def _write_summary(out_dir: Path, name: str, results: Sequence[ExperimentResult]) -> None:
    rows = [
        {
            "name": r.name,
            "title": get_experiment(r.name).title,
            "dir": safe_dirname(r.name),
            "passed": r.passed,
            "claims": [c.to_dict() for c in r.claims],
            "failed_units": sorted(r.failures),
            "runtime_s": r.runtime_s,
        }
        for r in results
    ]
    atomic_write_json(
        out_dir / "summary.json",
        {
            "name": name,
            "passed": all(r["passed"] for r in rows) and bool(rows),
            "experiments": rows,
        },
    )
    from dynstab_repro.io import atomic_write_text

    atomic_write_text(
        out_dir / "summary.md", render_summary_markdown(rows, f"Reproduction summary: {name}")
    )


# --------------------------------------------------------------------------- entry points


def _run(
    experiments: Sequence[Experiment],
    *,
    out_dir: str | Path,
    profile: str,
    overrides: Overrides,
    base_config: Mapping[str, Any] | None,
    executor: str,
    max_workers: int | None,
    ray_address: str | None,
    progress: bool,
    seed: int | None,
    force: bool,
    strict: bool,
    desc: str,
) -> list[ExperimentResult]:
    start = time.perf_counter()
    out = Path(out_dir)
    if executor not in ("local", "serial", "ray"):
        raise ValueError(f"unknown executor {executor!r}; choose from ['local', 'ray', 'serial'].")
    recorded = list(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    if isinstance(overrides, str):
        recorded = [overrides]
    _check_unscoped_used(experiments, _split_overrides(overrides))
    if base_config:
        _check_unscoped_used(experiments, _split_overrides(base_config))
    if (
        seed is not None
        and not strict
        and not any({"seed", "seeds"} & set(_field_types(e.config_cls)) for e in experiments)
    ):
        raise ValueError("none of the experiments has a 'seed'/'seeds' field; drop --seed.")
    plans = []
    for exp in experiments:
        config = resolve_config(
            exp,
            profile=profile,
            overrides=overrides,
            base_config=base_config,
            seed=seed,
            strict=strict,
        )
        plans.append(
            _prepare(exp, config, out, profile=profile, overrides=recorded, seed=seed, force=force)
        )
    _execute(
        plans,
        executor=executor,
        max_workers=max_workers,
        ray_address=ray_address,
        progress=progress,
        desc=desc,
    )
    runtime = time.perf_counter() - start
    return [_finalize(p, runtime_s=runtime, profile=profile, overrides=recorded) for p in plans]


def run_experiment(
    name: str,
    *,
    out_dir: str | Path,
    profile: str = "quick",
    overrides: Overrides = (),
    executor: str = "local",
    max_workers: int | None = None,
    progress: bool = True,
    seed: int | None = None,
    base_config: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    force: bool = False,
) -> ExperimentResult:
    """Run one experiment resumably and write its files under ``out_dir/<name>/``.

    Args:
        name: Registry name of a single experiment (use :func:`reproduce` for groups).
        out_dir: Output root; the run directory is ``out_dir/<name with / → __>``.
        profile: ``"quick"`` (CI smoke settings, the default here) or ``"full"`` (the spec's).
        overrides: ``["key=value", ...]`` or a mapping, applied after the profile.
        executor: ``"local"`` (processes), ``"serial"`` or ``"ray"``.
        max_workers: Processes for ``"local"``. Default: ``os.cpu_count()``.
        progress: Show a progress bar (stderr).
        seed: Base seed (sets ``seed`` or the ``seeds`` tuple of the config).
        base_config: Values from a config file, applied before ``overrides``.
        ray_address: Ray cluster address (default ``$RAY_ADDRESS`` or a local instance).
        force: Discard stored results of this experiment (also when the config changed).

    Returns:
        The :class:`ExperimentResult`.

    Raises:
        ValueError: Unknown experiment/profile/keys/executor, bad values, or a run directory
            holding another configuration (without ``force``).
        ImportError: ``executor="ray"`` without Ray installed.
    """
    exps = resolve(name)
    if len(exps) != 1 or exps[0].name != name:
        raise ValueError(
            f"{name!r} is a group of {len(exps)} experiments; use reproduce({name!r})."
        )
    return _run(
        exps,
        out_dir=out_dir,
        profile=profile,
        overrides=overrides,
        base_config=base_config,
        executor=executor,
        max_workers=max_workers,
        ray_address=ray_address,
        progress=progress,
        seed=seed,
        force=force,
        strict=True,
        desc=name,
    )[0]


def reproduce(
    name: str,
    *,
    out_dir: str | Path,
    profile: str = "quick",
    overrides: Overrides = (),
    executor: str = "local",
    max_workers: int | None = None,
    progress: bool = True,
    seed: int | None = None,
    base_config: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    force: bool = False,
) -> ReproductionResult:
    """Run a group (``"wu-su-2023"``, ``"all"``) or one experiment with one progress bar.

    Units of all experiments share one executor (so the cores stay busy); each experiment is
    written as by :func:`run_experiment`, plus ``out_dir/summary.md`` and ``summary.json``.
    Arguments as in :func:`run_experiment`; unscoped overrides apply to each experiment whose
    config has the key.

    Returns:
        The :class:`ReproductionResult`.

    Raises:
        ValueError: As :func:`run_experiment`, or an override key no experiment has.
    """
    exps = resolve(name)
    if not exps:
        raise ValueError(f"{name!r} names no registered experiment; run `dynstab list`.")
    results = _run(
        exps,
        out_dir=out_dir,
        profile=profile,
        overrides=overrides,
        base_config=base_config,
        executor=executor,
        max_workers=max_workers,
        ray_address=ray_address,
        progress=progress,
        seed=seed,
        force=force,
        strict=len(exps) == 1,
        desc=name,
    )
    out = Path(out_dir)
    _write_summary(out, name, results)
    return ReproductionResult(name, out, tuple(results))


def _rerender_one(run_dir: Path) -> ExperimentResult:
    stored = read_json(run_dir / "config.json")
    exp = get_experiment(stored["experiment"])
    config: Any = config_from_dict(exp.config_cls, stored["config"])
    config_dict = config_to_dict(config)
    chash = config_hash({"experiment": exp.name, "config": config_dict})
    if chash != stored.get("config_hash"):
        raise ValueError(
            f"{run_dir}/config.json no longer matches {exp.name}'s config class (hash {chash} vs "
            f"{stored.get('config_hash')}); rerun the experiment into a new directory."
        )
    specs = _check_specs(exp, exp.specs(config))
    plan = _Plan(exp, config, config_dict, chash, run_dir, specs)
    _scan_runs(plan, force=False)
    for spec in plan.pending:
        err = run_dir / "runs" / f"{spec.key}.error.json"
        if err.is_file():
            data = read_json(err)
            plan.failures[spec.key] = {
                "error": data.get("error"),
                "traceback": data.get("traceback"),
            }
        else:
            plan.failures[spec.key] = {"error": "not run (interrupted?)", "traceback": ""}
    prev = read_json(run_dir / "result.json") if (run_dir / "result.json").is_file() else {}
    plan.n_reused = int(prev.get("n_reused", plan.n_reused))
    return _finalize(
        plan,
        runtime_s=float(prev.get("runtime_s", 0.0)),
        profile=str(stored.get("profile", "")),
        overrides=stored.get("overrides", []),
        n_computed=int(prev.get("n_computed", 0)),
    )


def render_run_dir(run_dir: str | Path) -> ExperimentResult | ReproductionResult:
    """Re-create metrics, claims, figures and reports from a run directory without recomputing.

    ``run_dir`` is either one experiment's directory (holding ``config.json``) or the output
    root of :func:`reproduce` (holding ``summary.json``). Units without a stored result are
    reported as failed.

    Raises:
        ValueError: If ``run_dir`` holds neither ``config.json`` nor ``summary.json``.
    """
    d = Path(run_dir)
    if (d / "config.json").is_file():
        return _rerender_one(d)
    if (d / "summary.json").is_file():
        summary = read_json(d / "summary.json")
        results = [_rerender_one(d / row["dir"]) for row in summary["experiments"]]
        _write_summary(d, summary["name"], results)
        return ReproductionResult(summary["name"], d, tuple(results))
    raise ValueError(
        f"{d} is not a run directory: it holds neither config.json (one experiment) nor "
        "summary.json (a reproduction). Pass the directory printed by `dynstab run`."
    )
