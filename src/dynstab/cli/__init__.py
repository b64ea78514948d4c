"""The ``dynstab`` command line: ``dynstab COMMAND [options]`` (``dynstab --help`` lists them).

Commands come from the modules listed in :data:`COMMAND_MODULES` and from plugins registered
under the entry-point group :data:`ENTRY_POINT_GROUP` (``dynstab.commands``): the reproduction
harness :mod:`dynstab_repro` adds ``list``, ``run``, ``reproduce`` and ``report`` that way, so
the library never imports the harness. Each module (or entry-point object) defines
``register(subparsers)`` that adds its sub-parsers and sets ``func=handler`` with
``handler(args: argparse.Namespace) -> int`` (``None`` counts as 0). A plugin must import
cheaply: heavy work is imported inside its handlers.

Exit codes (each failure prints one line: the cause and the fix; ``dynstab --debug COMMAND``
adds the traceback):

* ``0``: success (for ``run``/``reproduce``/``report``: no claim failed and no unit failed;
  claims ``adapted`` or ``not reproduced`` are reported as such but do not fail a run);
* ``1``: a claim failed or a unit failed;
* ``2``: usage or configuration error, found before any work (bad arguments, unknown
  experiment/profile/config key, bad value, an empty grid or output path, a run directory
  holding another configuration, a spec or checkpoint that cannot be loaded);
* ``3``: environment or file-system error (read-only or full disk, no permission, an output
  directory in use by another process, a device or optional dependency that is missing, a
  problem too large for the memory budget: :class:`~dynstab.errors.MemoryBudgetError`, raised
  before the allocation; the line names the size that ``--max-memory`` would need);
* ``4``: internal error (a bug; rerun with ``--debug`` and report it);
* ``130`` / ``143``: interrupted by ``SIGINT`` / ``SIGTERM``; finished work is kept and the
  same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from dynstab._version import __version__
from dynstab.cli.common import exit_status

__all__ = ["COMMAND_MODULES", "ENTRY_POINT_GROUP", "build_parser", "main"]

#: The library's own command modules, each providing ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "dynstab.cli.sharpness_cmd",  # sharpness, density
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
        epilog="Exit codes: 0 ok (no claim failed), 1 a claim or unit failed, 2 usage or config "
        "error, 3 environment, file-system or memory-budget error, 4 internal error, 130/143 "
        "interrupted (SIGINT/SIGTERM; rerun the same command to resume).",
    )
    parser.add_argument("--version", action="version", version=f"dynstab {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print tracebacks of errors (for bug reports)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for plugin in _plugins():
        plugin.register(subparsers)
    return parser


class _Terminated(KeyboardInterrupt):
    """``SIGTERM`` arrived: handled like Ctrl-C, with exit status 143."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn ``SIGTERM`` into :class:`_Terminated` so that cleanup code runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dynstab`` command line; returns the exit code (see the module docstring).

    The parsed namespace carries ``command_line`` (``"dynstab ..."``, shell-quoted), which
    commands record as provenance, and ``debug``.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argparse usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    args.command_line = shlex.join(["dynstab", *argv])
    try:
        with _sigterm_as_interrupt():
            code = func(args)
    except BaseException as exc:
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        return exit_status(str(args.command), exc, debug=bool(args.debug))
    return 0 if code is None else int(code)
