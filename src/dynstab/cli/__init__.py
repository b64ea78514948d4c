"""The ``dynstab`` command line: ``dynstab COMMAND [options]`` (``dynstab --help`` lists them).

Commands come from the modules listed in :data:`COMMAND_MODULES` and from plugins registered
under the entry-point group :data:`ENTRY_POINT_GROUP` (``dynstab.commands``): the reproduction
harness :mod:`dynstab_repro` adds ``list``, ``run``, ``reproduce`` and ``report`` that way, so
the library never imports the harness. Each module (or entry-point object) defines
``register(subparsers)`` that adds its sub-parsers and sets ``func=handler`` with
``handler(args: argparse.Namespace) -> int`` (``None`` counts as 0). A plugin must import
cheaply: heavy work is imported inside its handlers.

Exit codes: ``0`` success (for ``run``/``reproduce``/``report``: every claim passed and no
unit failed); ``1`` some claim failed or some unit failed; ``2`` usage error (bad arguments,
unknown experiment/profile/config key, bad value, a run directory holding another
configuration, a missing optional dependency); ``130`` interrupted (rerun the same command to
resume).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import Any

from dynstab._version import __version__

__all__ = ["COMMAND_MODULES", "ENTRY_POINT_GROUP", "build_parser", "main"]

#: The library's own command modules, each providing ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "dynstab.cli.sharpness_cmd",
    "dynstab.cli.stability_cmd",
    "dynstab.cli.env_cmd",
)

#: Entry-point group through which other packages add commands (``register(subparsers)``).
ENTRY_POINT_GROUP = "dynstab.commands"


def _plugins() -> list[Any]:
    """The objects registered under :data:`ENTRY_POINT_GROUP`, sorted by entry-point name."""
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    return [ep.load() for ep in eps]


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
        importlib.import_module(name).register(subparsers)
    for plugin in _plugins():
        plugin.register(subparsers)
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
