"""Run reproductions: resolve configs, execute units (resumably), analyse, plot and report.

Layout written under ``out_dir/<name with '/' replaced by '__'>/``:

* ``config.json``: experiment name, profile, overrides, seed, resolved config, its hash and the
  code version;
* ``env.json``: versions, threads, devices, git commit and dirty flag (no hostname);
* ``runs/<key>.json``: one file per finished unit, written atomically as soon as it finishes
  (``{"format": "dynstab-unit/2", "experiment", "key", "params", "config_hash", "code",
  "status": "ok", "metrics", "runtime_s", "started_at"}``); ``runs/<key>.error.json`` for a unit
  whose ``run_one`` raised (error + traceback);
* ``metrics.json`` (``{key: metrics}``) and ``metrics.csv`` (flattened scalar params and
  metrics, one row per unit);
* ``claims.json``, ``result.json`` (claim statuses, unit outcomes, wall time, provenance),
  ``tables/*.csv``, ``figures/*.png`` + ``*.pdf``, ``report.md`` and ``report.html``.

:func:`reproduce` additionally writes ``out_dir/summary.md`` and ``summary.json``, which open
with the provenance of the invocation (command line, git commit and dirty flag, versions,
threads, device, start time) and give each experiment's wall time and config hash.

**Resuming.** A unit is reused only when ``runs/<key>.json`` is a valid unit record with
``status == "ok"``, the same config hash *and* the same code version
(:func:`dynstab.io.code_version`: package version, git commit, dirty flag and a digest of the
uncommitted changes); otherwise it is recomputed and a warning says why. Failed units are
recomputed by the next invocation (never retried within one). If ``config.json`` holds a
different config hash, the run stops before any work with a ValueError telling to use a new
``out_dir`` or ``force=True``.

**Integrity.** A run file that cannot be parsed, or parses but is not a unit record of this
experiment, is renamed ``<name>.corrupt-<UTC timestamp>`` (quarantined) and recomputed. Files
in ``runs/`` that belong to no unit of the experiment, and unknown entries in the run
directory, are left alone with a warning. Leftover temporary files of the atomic writer (from
a killed process) are removed when a run starts. Only one process may write to an ``out_dir``
at a time (an advisory lock on the directory; a second process gets an :class:`OSError`).

**Forcing.** ``force=True`` computes everything again into a staging directory
``out_dir/.<name>.staging`` and swaps it in for the old run directory at the very end (after
every experiment of the invocation finished), atomically where the platform allows it
(``renameat2(RENAME_EXCHANGE)`` on Linux). Until then the old results stay intact; an
interrupted forced run keeps its staging directory and the same command (with ``force``)
continues it. Unknown entries of the old run directory are carried over.

**Interruption.** ``SIGINT`` and ``SIGTERM`` stop the workers (see
:mod:`dynstab_repro.executors`), save every unit that had finished, and raise
:class:`~dynstab_repro.executors.Interrupted` whose message says what was kept and how to
resume; the ``dynstab`` command exits with 130 or 143.

**Config resolution** (later wins): ``config_cls`` defaults (the paper's full settings) →
profile (``PROFILES[profile]``) → ``base_config`` (e.g. a ``--config`` JSON file) →
``overrides`` → ``seed``, then :func:`dynstab_repro.config.check_config`. Overrides may be
scoped to one experiment as ``"name:key=value"`` (or mapping key ``"name:key"``). With several
experiments (:func:`reproduce`), an unscoped key applies to every experiment whose config has
it, and must exist in at least one. ``seed`` sets a ``seed`` field, or replaces a ``seeds``
tuple by ``(seed, seed+1, ...)`` of the same length. An experiment whose ``specs`` returns no
unit (an empty grid) is a usage error.

**Verdict.** An experiment *passes* (exit code 0) when it has at least one claim, no claim has
status ``failed`` and no unit failed; ``adapted`` and ``not reproduced`` claims do not fail a
run but are shown as such everywhere. Exceptions in ``analyze``/``tables``/``plot`` are
recorded as notes (``analyze`` errors as a failed claim ``"analyze"``), never crash the runner.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from dynstab.io import code_version, is_temporary_name
from dynstab_repro.base import (
    Claim,
    Experiment,
    RunSpec,
    outcome_counts,
    status_counts,
    unit_outcome,
    verdict,
)
from dynstab_repro.config import (
    _field_types,
    apply_overrides,
    check_config,
    config_from_dict,
    config_to_dict,
    override_items,
    profile_config,
)
from dynstab_repro.executors import (
    Interrupted,
    LocalExecutor,
    SignalGuard,
    UnitOutcome,
    UnitTask,
    make_executor,
)
from dynstab_repro.io import (
    CORRUPT_MARK,
    RUN_DIR_ENTRIES,
    DirLock,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    environment_info,
    flatten_scalars,
    quarantine,
    read_json,
    recover_interrupted_swap,
    safe_dirname,
    swap_in,
    sweep_temporaries,
    to_jsonable,
)
from dynstab_repro.registry import get_experiment, resolve
from dynstab_repro.report import ReportData, render_summary_markdown, write_report

__all__ = [
    "UNIT_FORMAT",
    "ExperimentResult",
    "ReproductionResult",
    "RunOptions",
    "RunSettings",
    "describe_code",
    "render_run_dir",
    "reproduce",
    "resolve_config",
    "run_experiment",
]

logger = logging.getLogger("dynstab_repro")

Overrides = Iterable[str] | Mapping[str, Any]

#: ``format`` field of the unit records in ``runs/<key>.json``.
UNIT_FORMAT = "dynstab-unit/2"


@dataclass(frozen=True)
class RunSettings:
    """How :func:`run_experiment` and :func:`reproduce` run: profile, overrides, executor, seed.

    Give them as keywords of those functions (:class:`RunOptions`) or as one object
    (``settings=RunSettings(...)``; keywords override its fields). Values are checked when the
    run starts, before any file is written.

    Attributes:
        profile: ``"quick"`` (CI smoke settings, the default here) or ``"full"`` (the paper's).
        overrides: ``["key=value", ...]`` or a mapping, applied after the profile.
        executor: ``"local"`` (processes), ``"serial"`` or ``"ray"``.
        max_workers: Processes for ``"local"``. Default: ``os.cpu_count()``.
        progress: Show a progress bar (stderr).
        seed: Base seed (sets ``seed`` or the ``seeds`` tuple of the config).
        base_config: Values from a config file, applied before ``overrides``.
        ray_address: Ray cluster address (default ``$RAY_ADDRESS`` or a local instance).
        force: Recompute everything into a staging directory swapped in at the end (also
            when the config changed).
        command: The command line to record as provenance. Default: this process's argv.

    Example:
        >>> RunSettings(executor="serial").with_options(seed=3).seed
        3
    """

    profile: str = "quick"
    overrides: Overrides = ()
    executor: str = "local"
    max_workers: int | None = None
    progress: bool = True
    seed: int | None = None
    base_config: Mapping[str, Any] | None = None
    ray_address: str | None = None
    force: bool = False
    command: str | None = None

    def with_options(self, **options: Unpack[RunOptions]) -> RunSettings:
        """A copy with the given fields replaced.

        Raises:
            TypeError: On a name that is not a field (the message lists the fields).
        """
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {unknown}; the run options are the fields of "
                f"RunSettings: {[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **options)


class RunOptions(TypedDict, total=False):
    """The keyword options of :func:`run_experiment` and :func:`reproduce` (see RunSettings)."""

    profile: str
    overrides: Overrides
    executor: str
    max_workers: int | None
    progress: bool
    seed: int | None
    base_config: Mapping[str, Any] | None
    ray_address: str | None
    force: bool
    command: str | None


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
        runtime_s: Wall-clock seconds of this experiment in this invocation: from the start
            of its first unit computed now to the end of its last one, plus its analysis,
            figures and report.
        notes: Problems recorded while running, analysing or plotting.
        outcomes: ``{key: category}`` of every unit (:func:`dynstab_repro.base.unit_outcome`).
        config_hash: Hash of the experiment name and resolved config.
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
    outcomes: dict[str, str] = field(default_factory=dict)
    config_hash: str = ""

    @property
    def passed(self) -> bool:
        """At least one claim, no claim ``failed`` and no unit failed."""
        return bool(self.claims) and all(c.passed for c in self.claims) and not self.failures

    @property
    def status_counts(self) -> dict[str, int]:
        """Number of claims per status (every status present, in order)."""
        return status_counts(self.claims)

    @property
    def verdict(self) -> str:
        """The verdict (see :func:`dynstab_repro.base.verdict`), e.g. ``"REPRODUCED"``."""
        return verdict(self.claims, bool(self.failures))


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
        """Every experiment passed (nothing failed)."""
        return bool(self.experiments) and all(e.passed for e in self.experiments)


# --------------------------------------------------------------------------- configs


def _split_overrides(overrides: Overrides) -> list[tuple[str | None, str, Any]]:
    items = override_items(
        overrides,
        form="key=value or experiment:key=value",
        example="--set lr=0.05 --set wu-su-2023/e1:seeds=0,1",
    )
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
        A ``config_cls`` instance (checked by :func:`dynstab_repro.config.check_config`).

    Raises:
        ValueError: Unknown profile/keys, bad values, an emptied grid, a failed ``validate()``,
            or ``seed`` without a seed field.
    """
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    config: Any = profile_config(exp.config_cls, profile)
    for source in (base_config or {}, overrides):
        chosen = _overrides_for(exp, _split_overrides(source), strict)
        if chosen:
            config = apply_overrides(config, chosen)
    if seed is not None:
        config = _apply_seed(config, seed, strict)
    check_config(config)
    return config


# --------------------------------------------------------------------------- code versions


def describe_code(code: Mapping[str, Any] | None) -> str:
    """One-line description of a code version (:func:`dynstab.io.code_version`).

    Example:
        >>> describe_code({"dynstab": "0.1.0", "commit": "0123456789abcdef", "dirty": True,
        ...                "diff": "ffeeddccbbaa9988"})
        'dynstab 0.1.0, commit 0123456 (dirty, edits ffeeddcc)'
        >>> describe_code(None)
        'an unrecorded code version'
    """
    if not code:
        return "an unrecorded code version"
    text = f"dynstab {code.get('dynstab')}"
    commit = code.get("commit")
    if commit:
        text += f", commit {str(commit)[:7]}"
        if code.get("dirty"):
            diff = code.get("diff")
            text += f" (dirty, edits {str(diff)[:8]})" if diff else " (dirty)"
    return text


def _commit_label(code: Mapping[str, Any]) -> str:
    commit = code.get("commit")
    if not commit:
        return "not a git checkout"
    return str(commit)[:7] + (" dirty" if code.get("dirty") else "")


# --------------------------------------------------------------------------- filesystem


def _check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    if not isinstance(out_dir, str | os.PathLike) or not os.fspath(out_dir).strip():
        raise ValueError(
            f"the output directory must be a non-empty path; got {out_dir!r}. "
            "Pass --out DIR (e.g. --out runs)."
        )
    return Path(out_dir)


# --------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    exp: Experiment
    config: Any
    config_dict: dict[str, Any]
    chash: str
    run_dir: Path
    work_dir: Path
    staging: bool
    specs: list[RunSpec]
    profile: str
    overrides: Any
    seed: int | None
    pending: list[RunSpec] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtimes: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_reused: int = 0
    n_computed: int = 0
    first_start: float | None = None
    last_end: float | None = None

    def note(self, message: str) -> None:
        """Record ``message`` for the report and say it on the log (warning level)."""
        self.notes.append(message)
        logger.warning("%s: %s", self.exp.name, message)


def _unit_files(plan: _Plan) -> set[str]:
    """Names of the files in ``runs/`` that belong to the plan's units."""
    return {f"{s.key}.json" for s in plan.specs} | {f"{s.key}.error.json" for s in plan.specs}


def _check_specs(exp: Experiment, specs: Sequence[RunSpec]) -> list[RunSpec]:
    specs = list(specs)
    if any(not isinstance(s, RunSpec) for s in specs):
        raise TypeError(f"{exp.name}.specs must return RunSpec objects.")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{exp.name}.specs returned duplicate keys {dup}; keys must be unique.")
    if not specs:
        raise ValueError(
            f"{exp.name} has no unit to run with this configuration (an empty grid?); check the "
            "--set/--config values of its list fields."
        )
    return specs


def _read_config_json(path: Path) -> dict[str, Any] | None:
    """Stored ``config.json`` if it is a readable config record, else ``None``."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config_hash"), str):
        return None
    return data


def _plan(
    exp: Experiment,
    config: Any,
    out: Path,
    *,
    profile: str,
    overrides: Any,
    seed: int | None,
    force: bool,
) -> _Plan:
    """Check everything that can be checked without writing (usage errors come first)."""
    config_dict = config_to_dict(config)
    chash = config_hash({"experiment": exp.name, "config": config_dict})
    run_dir = out / safe_dirname(exp.name)
    specs = _check_specs(exp, exp.specs(config))
    if not force and (run_dir / "config.json").is_file():
        old = _read_config_json(run_dir / "config.json")
        if old is not None and old["config_hash"] != chash:
            raise ValueError(
                f"{run_dir} holds results of a different configuration of {exp.name} "
                f"(hash {old['config_hash']} vs {chash}); use a new --out directory, "
                "or --force to recompute into it (the old results stay until the new ones "
                "are complete)."
            )
    staging = run_dir.with_name(f".{run_dir.name}.staging")
    return _Plan(
        exp,
        config,
        config_dict,
        chash,
        run_dir,
        staging if force else run_dir,
        force,
        specs,
        profile,
        overrides,
        seed,
    )


def _unit_problem(data: Any, plan: _Plan, spec: RunSpec, code: Mapping[str, Any]) -> str | None:
    """Why the stored record ``data`` of ``spec`` cannot be reused (``None``: it can).

    Returns ``"corrupt: ..."`` for a record that is not a unit record of this experiment,
    ``"config"`` or ``"code"`` for a valid record from another config or code version.
    """
    if not isinstance(data, dict):
        return f"corrupt: a JSON {type(data).__name__}, not a unit record"
    if data.get("key") != spec.key:
        return f"corrupt: its key is {data.get('key')!r}, not {spec.key!r}"
    if data.get("experiment", plan.exp.name) != plan.exp.name:
        return f"corrupt: it belongs to experiment {data.get('experiment')!r}"
    if data.get("status") != "ok" or not isinstance(data.get("metrics"), dict):
        return "corrupt: no status 'ok' with a metrics object"
    if not isinstance(data.get("config_hash"), str):
        return "corrupt: no config hash"
    if data["config_hash"] != plan.chash or data.get("params") != to_jsonable(spec.params):
        return "config"
    if data.get("format") != UNIT_FORMAT or data.get("code") != code:
        return "code"
    return None


def _open(plan: _Plan, code: Mapping[str, Any], env: Mapping[str, Any]) -> None:
    """Create the working directory, write config/env, and scan the stored units."""
    recover_interrupted_swap(plan.run_dir)
    if plan.staging:
        stored = _read_config_json(plan.work_dir / "config.json")
        if plan.work_dir.is_dir():
            if stored is not None and stored["config_hash"] == plan.chash:
                plan.note(
                    f"continuing the interrupted --force run in {plan.work_dir} (the results "
                    f"in {plan.run_dir} stay until it completes)"
                )
            else:
                shutil.rmtree(plan.work_dir)
    elif plan.run_dir.with_name(f".{plan.run_dir.name}.staging").is_dir():
        plan.note(
            f"{plan.run_dir.name}: a --force run was interrupted; its staging directory "
            f".{plan.run_dir.name}.staging is ignored (rerun with --force to finish it, or "
            "delete it)"
        )
    work = plan.work_dir
    (work / "runs").mkdir(parents=True, exist_ok=True)
    removed = sweep_temporaries(work)
    if removed:
        logger.info("%s: removed %d leftover temporary file(s)", plan.exp.name, removed)
    cfg_path = work / "config.json"
    if cfg_path.is_file() and _read_config_json(cfg_path) is None:
        moved = quarantine(cfg_path)
        plan.note(f"config.json was corrupted; quarantined as {moved.name}")
    foreign = sorted(
        e.name
        for e in work.iterdir()
        if e.name not in RUN_DIR_ENTRIES and CORRUPT_MARK not in e.name
    )
    if foreign:
        plan.note(f"ignoring foreign entries in {work}: {', '.join(foreign[:5])}")
    atomic_write_json(
        cfg_path,
        {
            "experiment": plan.exp.name,
            "title": plan.exp.title,
            "reference": plan.exp.reference,
            "profile": plan.profile,
            "overrides": plan.overrides,
            "seed": plan.seed,
            "config": plan.config_dict,
            "config_hash": plan.chash,
            "code": dict(code),
            "units": [s.key for s in plan.specs],
        },
    )
    atomic_write_json(work / "env.json", dict(env))
    _scan_runs(plan, code)


def _scan_runs(plan: _Plan, code: Mapping[str, Any] | None) -> None:
    """Sort the specs into reusable results and pending units (``code=None``: any version)."""
    runs = plan.work_dir / "runs"
    wanted = _unit_files(plan)
    if runs.is_dir():
        foreign = sorted(
            e.name
            for e in runs.iterdir()
            if e.name not in wanted and CORRUPT_MARK not in e.name and not is_temporary_name(e.name)
        )
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            plan.note(
                f"ignoring {len(foreign)} foreign file(s) in runs/ that belong to no unit: "
                f"{', '.join(foreign[:5])}{more}"
            )
    stale: collections.Counter[str] = collections.Counter()
    stale_code: set[str] = set()
    for spec in plan.specs:
        path = runs / f"{spec.key}.json"
        if not path.is_file():
            plan.pending.append(spec)
            continue
        try:
            data: Any = read_json(path)
            problem = _unit_problem(data, plan, spec, code or {})
        except (ValueError, UnicodeDecodeError) as exc:
            problem = f"corrupt: not valid JSON ({type(exc).__name__})"
        if problem == "code" and code is None:
            problem = None
        if problem is None:
            plan.results[spec.key] = data["metrics"]
            plan.runtimes[spec.key] = float(data.get("runtime_s") or 0.0)
            plan.n_reused += 1
            continue
        plan.pending.append(spec)
        if problem.startswith("corrupt"):
            moved = quarantine(path)
            plan.note(f"runs/{path.name} is {problem}; quarantined as {moved.name}, recomputing")
        else:
            stale[problem] += 1
            if problem == "code":
                stale_code.add(describe_code(data.get("code")))
    if stale["config"]:
        plan.note(
            f"recomputing {stale['config']} stored unit(s) computed with another config "
            f"(this config's hash is {plan.chash})"
        )
    if stale["code"]:
        plan.note(
            f"recomputing {stale['code']} stored unit(s) computed by other code "
            f"({'; '.join(sorted(stale_code))}; now {describe_code(code)})"
        )


def _record(plan: _Plan, spec: RunSpec, outcome: UnitOutcome, code: Mapping[str, Any]) -> None:
    runs = plan.work_dir / "runs"
    base = {
        "format": UNIT_FORMAT,
        "experiment": plan.exp.name,
        "key": spec.key,
        "params": spec.params,
        "config_hash": plan.chash,
        "code": dict(code),
        "status": outcome.status,
        "runtime_s": outcome.runtime_s,
        "started_at": outcome.started_at,
    }
    err_path = runs / f"{spec.key}.error.json"
    if outcome.status == "ok":
        atomic_write_json(runs / f"{spec.key}.json", {**base, "metrics": outcome.metrics})
        with contextlib.suppress(FileNotFoundError):
            err_path.unlink()
        # the metrics as a resumed run reads them back (sorted keys, lists), so that a fresh
        # and a resumed run analyse byte-identical inputs
        text = json.dumps(outcome.metrics or {}, sort_keys=True, allow_nan=True)
        plan.results[spec.key] = json.loads(text)
        plan.runtimes[spec.key] = outcome.runtime_s
        plan.failures.pop(spec.key, None)
    else:
        info = {"error": outcome.error, "traceback": outcome.traceback}
        atomic_write_json(err_path, {**base, **info})
        plan.failures[spec.key] = info
    plan.n_computed += 1
    if outcome.started_at is not None:
        end = outcome.started_at + outcome.runtime_s
        plan.first_start = min(plan.first_start or outcome.started_at, outcome.started_at)
        plan.last_end = max(plan.last_end or end, end)


def _execute(
    plans: Sequence[_Plan],
    settings: RunSettings,
    *,
    guard: SignalGuard,
    code: Mapping[str, Any],
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
    from tqdm.auto import tqdm  # deferred: only needed when there is something to compute

    runner = make_executor(
        settings.executor, max_workers=settings.max_workers, ray_address=settings.ray_address
    )
    bar = tqdm(
        total=len(tasks), desc=desc, unit="unit", disable=not settings.progress, file=sys.stderr
    )
    n_failed = 0

    def record(outcome: UnitOutcome) -> None:
        plan, spec = index[(outcome.experiment, outcome.key)]
        with guard.deferred():  # a signal now waits until the unit is on disk
            _record(plan, spec, outcome, code)

    stream = runner.run(tasks)
    try:
        for outcome in stream:
            record(outcome)
            n_failed += outcome.status != "ok"
            bar.set_postfix_str(
                f"{outcome.experiment} {outcome.key}"[-60:]
                + (f" failed={n_failed}" if n_failed else "")
            )
            bar.update(1)
    except BaseException:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stops and reaps the workers
        with guard.deferred():
            for outcome in runner.drain():  # finished before the stop: keep them
                with contextlib.suppress(Exception):
                    record(outcome)
        raise
    finally:
        bar.close()


# --------------------------------------------------------------------------- finishing


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60] or "table"


def _outcomes(plan: _Plan) -> dict[str, str]:
    out = {}
    for spec in plan.specs:
        if spec.key in plan.results:
            out[spec.key] = unit_outcome(plan.results[spec.key])
        elif spec.key in plan.failures:
            out[spec.key] = "failed"
        else:
            out[spec.key] = "not run"
    return out


def _device(config_dict: Mapping[str, Any]) -> str:
    device = config_dict.get("device")
    return str(device) if device else "cpu"


def _finalize(
    plan: _Plan,
    *,
    provenance: Mapping[str, Any],
    env: Mapping[str, Any],
) -> ExperimentResult:
    start = time.time()
    exp, config, work = plan.exp, plan.config, plan.work_dir
    order = {s.key: i for i, s in enumerate(plan.specs)}
    results = dict(sorted(plan.results.items(), key=lambda kv: order.get(kv[0], 0)))
    params = {s.key: s.params for s in plan.specs}
    atomic_write_json(work / "metrics.json", results)
    rows = [
        {"key": k, **flatten_scalars(params[k], "params."), **flatten_scalars(m)}
        for k, m in results.items()
    ]
    atomic_write_csv(work / "metrics.csv", rows)
    notes = list(plan.notes)
    try:
        claims = list(exp.analyze(config, results))
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
        atomic_write_csv(work / "tables" / f"{_slug(title)}.csv", trows)
    fig_dir = work / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    try:
        figures = [Path(p) for p in exp.plot(config, results, fig_dir)]
    except Exception as exc:
        notes.append(f"plot raised {type(exc).__name__}: {exc}")
        figures = []
    work_abs = work.resolve()
    rel_figs = [
        str(p.resolve().relative_to(work_abs))
        for p in figures
        if p.resolve().is_relative_to(work_abs)
    ]
    pngs = [f for f in rel_figs if f.endswith(".png")]
    outcomes = _outcomes(plan)
    compute_s = sum(plan.runtimes.get(s.key, 0.0) for s in plan.specs)
    units_s = (
        plan.last_end - plan.first_start
        if plan.first_start is not None and plan.last_end is not None
        else 0.0
    )
    passed = bool(claims) and all(c.passed for c in claims) and not plan.failures
    exp_verdict = verdict(claims, bool(plan.failures))
    counts = status_counts(claims)
    atomic_write_json(
        work / "claims.json",
        {
            "experiment": exp.name,
            "passed": passed,
            "verdict": exp_verdict,
            "status_counts": counts,
            "claims": [c.to_dict() for c in claims],
            "failed_units": sorted(plan.failures),
        },
    )
    finalize_s = time.time() - start
    wall_s = units_s + finalize_s
    prov = {**provenance, "device": _device(plan.config_dict)}
    result_json = {
        "experiment": exp.name,
        "reference": exp.reference,
        "passed": passed,
        "verdict": exp_verdict,
        "status_counts": counts,
        "profile": plan.profile,
        "config_hash": plan.chash,
        "wall_s": wall_s,
        "units_wall_s": units_s,
        "finalize_s": finalize_s,
        "runtime_s": wall_s,
        "compute_s": compute_s,
        "n_units": len(plan.specs),
        "n_computed": plan.n_computed,
        "n_reused": plan.n_reused,
        "unit_outcomes": outcomes,
        "outcome_counts": outcome_counts(outcomes),
        "failed_units": sorted(plan.failures),
        "notes": notes,
        "provenance": prov,
    }
    atomic_write_json(work / "result.json", result_json)
    data = ReportData(
        name=exp.name,
        title=exp.title,
        description=exp.description,
        reference=exp.reference,
        profile=plan.profile,
        overrides=plan.overrides
        if isinstance(plan.overrides, list | tuple)
        else [f"{k}={v}" for k, v in dict(plan.overrides or {}).items()],
        config=plan.config_dict,
        ambiguities=dict(exp.ambiguities),
        claims=claims,
        tables=tables,
        figures=pngs,
        runtime_s=wall_s,
        compute_s=compute_s,
        n_units=len(plan.specs),
        n_computed=plan.n_computed,
        n_reused=plan.n_reused,
        failures=plan.failures,
        notes=notes,
        env=dict(env),
        outcomes=outcomes,
        provenance=prov,
        config_hash=plan.chash,
    )
    write_report(work, data)
    return ExperimentResult(
        name=exp.name,
        run_dir=plan.run_dir,
        config=config,
        claims=tuple(claims),
        results=results,
        failures=dict(plan.failures),
        figures=tuple(plan.run_dir / f for f in rel_figs),
        n_units=len(plan.specs),
        n_computed=plan.n_computed,
        n_reused=plan.n_reused,
        runtime_s=wall_s,
        notes=tuple(notes),
        outcomes=outcomes,
        config_hash=plan.chash,
    )


def _summary_row(result: ExperimentResult) -> dict[str, Any]:
    exp = get_experiment(result.name)
    return {
        "name": result.name,
        "title": exp.title,
        "reference": exp.reference,
        "dir": safe_dirname(result.name),
        "passed": result.passed,
        "verdict": result.verdict,
        "status_counts": result.status_counts,
        "claims": [c.to_dict() for c in result.claims],
        "failed_units": sorted(result.failures),
        "outcome_counts": outcome_counts(result.outcomes),
        "wall_s": result.runtime_s,
        "config_hash": result.config_hash,
        "device": _device(config_to_dict(result.config)),
    }


def _write_summary(
    out_dir: Path,
    name: str,
    results: Sequence[ExperimentResult],
    provenance: Mapping[str, Any],
    wall_s: float,
) -> None:
    rows = [_summary_row(r) for r in results]
    devices = sorted({r["device"] for r in rows}) or ["cpu"]
    summary = {
        "name": name,
        "passed": bool(rows) and all(r["passed"] for r in rows),
        "provenance": {**provenance, "device": ", ".join(devices), "wall_s": wall_s},
        "experiments": rows,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.md", render_summary_markdown(summary))


# --------------------------------------------------------------------------- entry points


def _default_command() -> str:
    return shlex.join([os.path.basename(sys.executable or "python"), *sys.argv])


def _provenance(
    settings: RunSettings,
    *,
    code: Mapping[str, Any],
    env: Mapping[str, Any],
    started: float,
    n_tasks: int,
) -> dict[str, Any]:
    executor = settings.executor
    threads: dict[str, Any] = {"main": env.get("torch_threads"), "executor": executor}
    if executor == "local":
        workers, per = LocalExecutor(settings.max_workers).threads_per_worker(n_tasks)
        threads.update({"workers": workers, "per_worker": per})
    elif executor == "ray":
        threads.update({"per_worker": 1})
    commit = code.get("commit")
    command = settings.command
    return {
        "command": command if command is not None else _default_command(),
        "started_at": datetime.datetime.fromtimestamp(started)
        .astimezone()
        .isoformat(timespec="seconds"),
        "commit": commit,
        "commit_short": str(commit)[:7] if commit else None,
        "dirty": code.get("dirty"),
        "commit_label": _commit_label(code),
        "code": dict(code),
        "versions": {
            "dynstab": env.get("dynstab"),
            "torch": env.get("torch"),
            "python": env.get("python"),
            "numpy": env.get("numpy"),
        },
        "threads": threads,
        "platform": env.get("platform"),
        "available_devices": env.get("devices"),
    }


def _kept_message(plans: Sequence[_Plan], signum: int) -> str:
    name = signal.Signals(signum).name if signum in {int(s) for s in signal.Signals} else "signal"
    if not plans:
        return f"interrupted by {name} before any unit ran; rerun the same command to start again."
    kept = sum(len(p.results) for p in plans)
    total = sum(len(p.specs) for p in plans)
    parts = ", ".join(f"{p.exp.name} {len(p.results)}/{len(p.specs)}" for p in plans)
    text = (
        f"interrupted by {name}; workers stopped. Kept {kept} of {total} units ({parts}). "
        "Rerun the same command to resume: finished units are reused."
    )
    staged = [p for p in plans if p.staging]
    if staged:
        text += (
            " The --force run continues in "
            + ", ".join(str(p.work_dir) for p in staged)
            + "; the previous results stay untouched until it completes."
        )
    return text


def _run(
    experiments: Sequence[Experiment],
    *,
    out_dir: str | os.PathLike[str],
    settings: RunSettings,
    strict: bool,
    desc: str,
) -> tuple[list[ExperimentResult], dict[str, Any], float]:
    profile, overrides, executor = settings.profile, settings.overrides, settings.executor
    max_workers, seed, force = settings.max_workers, settings.seed, settings.force
    base_config = settings.base_config
    started = time.time()
    # ---- usage checks, before any file is written
    out = _check_out_dir(out_dir)
    if executor not in ("local", "serial", "ray"):
        raise ValueError(f"unknown executor {executor!r}; choose from ['local', 'ray', 'serial'].")
    if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
        raise ValueError(f"max_workers must be a positive int or None; got {max_workers!r}.")
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
    if executor == "ray":
        make_executor("ray")  # ImportError (usage) when Ray is missing
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
            _plan(exp, config, out, profile=profile, overrides=recorded, seed=seed, force=force)
        )
    # ---- environment: the output directory, its lock, the stored state
    code = code_version()
    env = environment_info()
    opened: list[_Plan] = []
    with SignalGuard() as guard:
        try:
            out.mkdir(parents=True, exist_ok=True)
            with DirLock(out):
                for plan in plans:
                    _open(plan, code, env)
                    opened.append(plan)
                n_tasks = sum(len(p.pending) for p in plans)
                provenance = _provenance(
                    settings, code=code, env=env, started=started, n_tasks=n_tasks
                )
                _execute(plans, settings, guard=guard, code=code, desc=desc)
                results = [_finalize(p, provenance=provenance, env=env) for p in plans]
                with guard.deferred():  # all experiments finished: swap the forced ones in
                    for plan in plans:
                        if plan.staging:
                            carried = swap_in(plan.work_dir, plan.run_dir, _unit_files(plan))
                            if carried:
                                logger.warning(
                                    "%s: kept foreign entries of the old run directory: %s",
                                    plan.exp.name,
                                    ", ".join(carried),
                                )
        except KeyboardInterrupt as exc:
            signum = int(getattr(exc, "signum", signal.SIGINT))
            raise Interrupted(signum, _kept_message(opened, signum)) from None
    return results, provenance, time.time() - started


def run_experiment(
    name: str,
    *,
    out_dir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    **options: Unpack[RunOptions],
) -> ExperimentResult:
    """Run one experiment resumably and write its files under ``out_dir/<name>/``.

    Args:
        name: Registry name of a single experiment (use :func:`reproduce` for groups).
        out_dir: Output root (non-empty); the run directory is ``out_dir/<name with / → __>``.
        settings: The run settings (:class:`RunSettings`); default ``RunSettings()`` (the
            quick profile, local processes).
        **options: Fields of :class:`RunSettings` as keywords (:class:`RunOptions`), overriding
            ``settings``: ``profile``, ``overrides``, ``executor``, ``max_workers``,
            ``progress``, ``seed``, ``base_config``, ``ray_address``, ``force``, ``command``.

    Returns:
        The :class:`ExperimentResult`.

    Raises:
        ValueError: Unknown experiment/profile/keys/executor, bad values, an empty grid or
            output path, or a run directory holding another configuration (without
            ``force``); raised before any work.
        ImportError: ``executor="ray"`` without Ray installed.
        OSError: The output directory cannot be written (read-only, full, no permission) or
            is in use by another process.
        Interrupted: ``SIGINT``/``SIGTERM`` arrived; finished units are saved.
    """
    exps = resolve(name)
    if len(exps) != 1 or exps[0].name != name:
        raise ValueError(
            f"{name!r} is a group of {len(exps)} experiments; use reproduce({name!r})."
        )
    s = (settings or RunSettings()).with_options(**options)
    results, _, _ = _run(exps, out_dir=out_dir, settings=s, strict=True, desc=name)
    return results[0]


def reproduce(
    name: str,
    *,
    out_dir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    **options: Unpack[RunOptions],
) -> ReproductionResult:
    """Run a group (``"wu-su-2023"``, ``"all"``) or one experiment with one progress bar.

    Units of all experiments share one executor (so the cores stay busy); each experiment is
    written as by :func:`run_experiment`, plus ``out_dir/summary.md`` and ``summary.json``
    (provenance, per-experiment verdicts, wall times and config hashes, every claim with its
    ``paper``, ``ours`` and ``status``). Unscoped overrides apply to each experiment whose
    config has the key.

    Args:
        name: A group, ``"all"`` or one experiment (see ``dynstab list``).
        out_dir: Output root, as in :func:`run_experiment`.
        settings: The run settings (:class:`RunSettings`), as in :func:`run_experiment`.
        **options: Fields of :class:`RunSettings` as keywords, as in :func:`run_experiment`.

    Returns:
        The :class:`ReproductionResult`.

    Raises:
        ValueError: As :func:`run_experiment`, or an override key no experiment has.
        OSError: As :func:`run_experiment`.
        Interrupted: As :func:`run_experiment`.
    """
    exps = resolve(name)
    if not exps:
        raise ValueError(f"{name!r} names no registered experiment; run `dynstab list`.")
    s = (settings or RunSettings()).with_options(**options)
    results, provenance, wall_s = _run(
        exps, out_dir=out_dir, settings=s, strict=len(exps) == 1, desc=name
    )
    out = Path(out_dir)
    _write_summary(out, name, results, provenance, wall_s)
    return ReproductionResult(name, out, tuple(results))


def _rerender_one(run_dir: Path) -> ExperimentResult:
    stored = _read_config_json(run_dir / "config.json")
    if stored is None:
        raise ValueError(
            f"{run_dir}/config.json is unreadable or not a run configuration; rerun the "
            "experiment (dynstab run NAME --out DIR) to rebuild the directory."
        )
    exp = get_experiment(stored["experiment"])
    config: Any = config_from_dict(exp.config_cls, stored["config"])
    config_dict = config_to_dict(config)
    chash = config_hash({"experiment": exp.name, "config": config_dict})
    if chash != stored["config_hash"]:
        raise ValueError(
            f"{run_dir}/config.json no longer matches {exp.name}'s config class (hash "
            f"{chash} vs {stored['config_hash']}); rerun the experiment into a new directory."
        )
    plan = _Plan(
        exp,
        config,
        config_dict,
        chash,
        run_dir,
        run_dir,
        False,
        _check_specs(exp, exp.specs(config)),
        str(stored.get("profile", "")),
        stored.get("overrides", []),
        stored.get("seed"),
    )
    with DirLock(run_dir.parent):
        _scan_runs(plan, None)
        for spec in plan.pending:
            err = run_dir / "runs" / f"{spec.key}.error.json"
            try:
                data = read_json(err) if err.is_file() else None
            except (ValueError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict):
                plan.failures[spec.key] = {
                    "error": data.get("error"),
                    "traceback": data.get("traceback"),
                }
            else:
                plan.failures[spec.key] = {"error": "not run (interrupted?)", "traceback": ""}
        prev: Any = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError, OSError):
            prev = read_json(run_dir / "result.json")
        prev = prev if isinstance(prev, dict) else {}
        plan.n_reused = int(prev.get("n_reused", plan.n_reused))
        plan.n_computed = int(prev.get("n_computed", 0))
        env: Any = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError, OSError):
            env = read_json(run_dir / "env.json")
        provenance = prev.get("provenance") if isinstance(prev.get("provenance"), dict) else {}
        wall = float(prev.get("units_wall_s", 0.0) or 0.0)
        plan.first_start, plan.last_end = (0.0, wall) if wall else (None, None)
        return _finalize(plan, provenance=provenance, env=env if isinstance(env, dict) else {})


def render_run_dir(run_dir: str | os.PathLike[str]) -> ExperimentResult | ReproductionResult:
    """Re-create metrics, claims, figures and reports from a run directory without recomputing.

    ``run_dir`` is either one experiment's directory (holding ``config.json``) or the output
    root of :func:`reproduce` (holding ``summary.json``). Units without a stored result are
    reported as failed; stored units are used whatever code version computed them.

    Raises:
        ValueError: If ``run_dir`` holds neither ``config.json`` nor ``summary.json``, or they
            are unreadable.
    """
    d = Path(run_dir)
    if (d / "config.json").is_file():
        return _rerender_one(d)
    if (d / "summary.json").is_file():
        try:
            summary = read_json(d / "summary.json")
            names = [str(row["dir"]) for row in summary["experiments"]]
            name = str(summary["name"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(
                f"{d}/summary.json is unreadable; re-render each experiment directory "
                f"(dynstab report {d}/<experiment>) or rerun the reproduction."
            ) from None
        results = [_rerender_one(d / n) for n in names]
        provenance = (
            summary.get("provenance") if isinstance(summary.get("provenance"), dict) else {}
        )
        wall = float(provenance.get("wall_s", 0.0) or 0.0)
        _write_summary(d, name, results, provenance, wall)
        return ReproductionResult(name, d, tuple(results))
    raise ValueError(
        f"{d} is not a run directory: it holds neither config.json (one experiment) nor "
        "summary.json (a reproduction). Pass the directory printed by `dynstab run`."
    )
