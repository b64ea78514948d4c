"""``dynstab list | run | reproduce | report`` (alias ``plot``): reproductions from the shell.

* ``dynstab list``: registered experiments (with the paper reference) and groups.
* ``dynstab run NAME [options]``: one experiment.
* ``dynstab reproduce GROUP [options]``: a group (e.g. ``wu-su-2023``), ``all``, or one
  experiment, with one progress bar and a ``summary.md``.
* ``dynstab report RUN_DIR``: re-render metrics, claims, figures and reports from saved files.

Options of ``run``/``reproduce``: ``--quick`` (= ``--profile quick``; CI smoke settings) or
``--profile P`` (default ``full``: full settings), ``--config FILE.json`` (values, or
a saved ``config.json``), ``--set key=value`` (repeatable; ``NAME:key=value`` scopes it to
one experiment), ``--seed N``, ``--out DIR`` (default ``dynstab-runs``), ``--executor
local|serial|ray``, ``--ray-address ADDR``, ``--workers N``, ``--force`` (recompute into a
staging directory swapped in at the end), ``--no-progress``. Rerunning the same command
resumes an interrupted run.

Each claim is printed with its status (``REPRODUCED``, ``ADAPTED``, ``NOT REPRODUCED``,
``FAILED``); exit status 0 means nothing failed (see :mod:`dynstab.cli` for all codes).
Warnings of the runner (units recomputed, files quarantined or ignored) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["register"]

DEFAULT_OUT = "dynstab-runs"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _out_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory; got an empty path")
    return Path(text)


class _StderrHandler(logging.Handler):
    """Log records as ``dynstab: message`` lines on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"dynstab: {record.getMessage()}", file=sys.stderr)


def _setup_logging() -> None:
    logger = logging.getLogger("dynstab_repro")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _add_run_options(p: argparse.ArgumentParser) -> None:
    prof = p.add_mutually_exclusive_group()
    prof.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="CI smoke-test profile (= --profile quick)",
    )
    prof.add_argument(
        "--profile",
        dest="profile",
        help="settings profile: full (the full reproduction settings, default) or quick",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable); NAME:KEY=VALUE for one experiment",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE.json", help="config values (or a saved config.json)"
    )
    p.add_argument("--seed", type=int, help="base seed (sets seed, or seeds=(N, N+1, ...))")
    p.add_argument(
        "--out",
        type=_out_dir,
        default=Path(DEFAULT_OUT),
        help=f"output directory (default: {DEFAULT_OUT})",
    )
    p.add_argument(
        "--executor",
        choices=("local", "serial", "ray"),
        default="local",
        help="local processes (default), serial in-process, or Ray",
    )
    p.add_argument("--ray-address", help="Ray cluster address (default $RAY_ADDRESS or local)")
    p.add_argument("--workers", type=_positive_int, help="local processes (default: CPU count)")
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute everything; the old results stay until the new ones are complete",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _load_config_file(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"config file {path} does not exist; pass an existing JSON file."
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON ({exc}); fix it.") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a JSON object; got {type(data).__name__}.")
    if "experiment" in data and isinstance(data.get("config"), dict):  # a saved config.json
        return {f"{data['experiment']}:{k}": v for k, v in data["config"].items()}
    return data


def _print_claims(result: Any) -> None:
    print(f"{result.verdict}  {result.name}  ({result.run_dir / 'report.md'})")
    width = max((len(c.label) for c in result.claims), default=0)
    for c in result.claims:
        line = f"  {c.label:<{width}}  {c.id}: {c.statement} | ours: {c.measured}"
        if c.paper:
            line += f" | paper: {c.paper}"
        if c.note:
            line += f" | {c.status}: {c.note}"
        print(line)
    for key, info in result.failures.items():
        print(f"  FAILED UNIT  {key}: {info.get('error')}")
    special = {k: v for k, v in result.outcomes.items() if v not in ("ok", "converged", "failed")}
    if special:
        counts: dict[str, int] = {}
        for v in special.values():
            counts[v] = counts.get(v, 0) + 1
        print("  units: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    for note in result.notes:
        print(f"  NOTE  {note}")


def _interrupted(exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """An interrupt that arrived outside the runner's own handling, with the resume hint."""
    from dynstab_repro.executors import Interrupted

    if isinstance(exc, Interrupted):
        return exc
    signum = int(getattr(exc, "signum", signal.SIGINT))
    return Interrupted(
        signum, "interrupted; finished units are saved, rerun the same command to resume."
    )


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "out_dir": args.out,
        "profile": args.profile or "full",
        "overrides": list(args.overrides),
        "base_config": _load_config_file(args.config),
        "executor": args.executor,
        "max_workers": args.workers,
        "progress": not args.no_progress,
        "seed": args.seed,
        "ray_address": args.ray_address,
        "force": args.force,
        "command": getattr(args, "command_line", None),
    }


_Result = TypeVar("_Result")


def _interruptible(run: Callable[..., _Result], name: str, args: argparse.Namespace) -> _Result:
    """``run(name, **options of args)`` with logging set up; Ctrl-C becomes :class:`Interrupted`."""
    _setup_logging()
    try:
        return run(name, **_run_kwargs(args))
    except KeyboardInterrupt as exc:
        raise _interrupted(exc) from None


def _cmd_list(args: argparse.Namespace) -> int:
    from dynstab_repro.registry import list_experiments, list_groups

    exps = list_experiments()
    if not exps:
        print("No experiments are registered.")
    width = max((len(e.name) for e in exps), default=0)
    for e in exps:
        ref = f"  [{e.reference}]" if e.reference else ""
        print(f"{e.name:<{width}}  {e.title}{ref}")
    groups = list_groups()
    if groups:
        print("\nGroups (dynstab reproduce GROUP):")
        for g, members in groups.items():
            print(f"  {g}: {', '.join(members)}")
    print("  all: every experiment")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dynstab_repro.runner import run_experiment

    result = _interruptible(run_experiment, args.name, args)
    _print_claims(result)
    return 0 if result.passed else 1


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dynstab_repro.runner import reproduce

    result = _interruptible(reproduce, args.group, args)
    for exp in result.experiments:
        _print_claims(exp)
    verdicts: dict[str, int] = {}
    for exp in result.experiments:
        verdicts[exp.verdict] = verdicts.get(exp.verdict, 0) + 1
    n_ok = sum(e.passed for e in result.experiments)
    print(
        f"{n_ok}/{len(result.experiments)} experiments without a failure ("
        + ", ".join(f"{n} {v.lower()}" for v, n in verdicts.items())
        + f"); summary: {result.out_dir / 'summary.md'}"
    )
    return 0 if result.passed else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from dynstab_repro.runner import ExperimentResult, render_run_dir

    _setup_logging()
    result = render_run_dir(args.run_dir)
    exps = [result] if isinstance(result, ExperimentResult) else list(result.experiments)
    for exp in exps:
        _print_claims(exp)
    return 0 if result.passed else 1


def register(subparsers: Any) -> None:
    """Add ``list``, ``run``, ``reproduce`` and ``report``/``plot`` to ``subparsers``."""
    p = subparsers.add_parser("list", help="list experiments and groups")
    p.set_defaults(func=_cmd_list)

    # (command, its argument, the argument's help, the command's help, when it exits 0)
    run_commands = (
        ("run", "name", "experiment name (see `dynstab list`)", "run one experiment (resumable)",
         "Run one experiment; exit 0 if no claim failed", _cmd_run),
        ("reproduce", "group", "group (e.g. wu-su-2023), 'all', or one experiment",
         "run a group of experiments (or 'all') with one progress bar",
         "Run a group; exit 0 if no claim of any experiment failed", _cmd_reproduce),
    )  # fmt: skip
    for command, arg, arg_help, help_, exit_0, func in run_commands:
        p = subparsers.add_parser(
            command,
            help=help_,
            description=f"{exit_0}, 1 otherwise (see `dynstab --help` for the other exit codes).",
        )
        p.add_argument(arg, help=arg_help)
        _add_run_options(p)
        p.set_defaults(func=func)

    p = subparsers.add_parser(
        "report",
        aliases=["plot"],
        help="re-render reports and figures from a run directory (no recomputation)",
    )
    p.add_argument("run_dir", type=Path, help="directory written by `run` or `reproduce`")
    p.set_defaults(func=_cmd_report)


if __name__ == "__main__":  # pragma: no cover
    from dynstab.cli import main

    sys.exit(main())
