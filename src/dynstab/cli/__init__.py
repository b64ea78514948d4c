"""The ``dynstab`` command line: ``dynstab COMMAND [options]`` (``dynstab --help`` lists them).

Commands come from modules listed in :data:`COMMAND_MODULES`; each module defines
``register(subparsers)`` that adds its sub-parsers and sets ``func=handler`` with
``handler(args: argparse.Namespace) -> int`` (``None`` counts as 0). A listed module that does
not exist is skipped (only a ``ModuleNotFoundError`` for that very module).

Exit codes: ``0`` success (for ``run``/``reproduce``/``report``: every claim passed and no
unit failed); ``1`` some claim failed or some unit failed; ``2`` usage error (bad arguments,
unknown experiment/profile/config key, bad value, a run directory holding another
configuration, a missing optional dependency); ``130`` interrupted (rerun the same command to
resume).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dynstab._version import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules providing ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "dynstab.cli.sharpness_cmd",
    "dynstab.cli.stability_cmd",
    "dynstab.cli.experiment_cmds",
    "dynstab.cli.env_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="dynstab",
        description="Dynamical (linear) stability of GD and SGD: sharpness, thresholds, "
        "verdicts and paper reproductions.",
        epilog="Exit codes: 0 ok / all claims pass, 1 a claim or unit failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"dynstab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command module not written (yet)
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dynstab`` command line; returns the exit code (see the module docstring).

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, or an argparse usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = func(args)
    except (ValueError, ImportError) as exc:
        print(f"dynstab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "dynstab: interrupted; finished units are saved, rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    return 0 if code is None else int(code)
