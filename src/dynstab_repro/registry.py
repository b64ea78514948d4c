"""Registry of experiments and groups of experiments.

Built-in reproductions register themselves when their module is imported; the modules are
listed in :data:`EXPERIMENT_MODULES` and imported lazily, on the first lookup. A listed module
that does not exist (yet) is skipped; any other import error propagates.

Names: experiments are ``"<group>/<id>"`` (e.g. ``"wu-su-2023/e1"``); groups are plain names
(``"wu-su-2023"``); ``"all"`` is every registered experiment.

Extensions to the contract in ``docs/design.md``: :func:`register` also works as a class
decorator (``@register`` on an :class:`Experiment` subclass registers an instance and returns
the class); :func:`unregister`/:func:`unregister_group` exist for tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TypeVar

from dynstab_repro.base import Experiment

__all__ = [
    "EXPERIMENT_MODULES",
    "get_experiment",
    "list_experiments",
    "list_groups",
    "load_builtin_experiments",
    "register",
    "register_group",
    "resolve",
    "unregister",
    "unregister_group",
]

#: Modules whose import registers the built-in experiments.
EXPERIMENT_MODULES: tuple[str, ...] = (
    "dynstab_repro.wu_su_2023",
    "dynstab_repro.companions",
)

_EXPERIMENTS: dict[str, Experiment] = {}
_GROUPS: dict[str, tuple[str, ...]] = {}
_LOADED: set[str] = set()

T = TypeVar("T", bound="Experiment | type[Experiment]")


def _import_optional(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == module or module.startswith(exc.name + ".")):
            return  # not written yet
        raise


def load_builtin_experiments() -> None:
    """Import every module in :data:`EXPERIMENT_MODULES` once (missing modules are skipped)."""
    for module in EXPERIMENT_MODULES:
        if module not in _LOADED:
            _LOADED.add(module)
            _import_optional(module)


def register(experiment: T) -> T:
    """Register an :class:`Experiment` instance (or subclass: an instance is created).

    Re-registering the same class under the same name replaces the entry (module reloads);
    a different experiment under a taken name is an error.

    Returns:
        Its argument, so it can be used as a class decorator.

    Raises:
        TypeError: If the argument is not an Experiment (instance or subclass).
        ValueError: If the name is empty, ``"all"``, a group name, or taken by another class.
    """
    inst = experiment() if isinstance(experiment, type) else experiment
    if not isinstance(inst, Experiment):
        raise TypeError(
            f"register expects an Experiment instance or subclass; got {experiment!r}. "
            "Subclass dynstab_repro.Experiment."
        )
    name = inst.name
    if not name or name == "all" or name in _GROUPS:
        raise ValueError(
            f"experiment name must be non-empty, not 'all' and not a group name; got {name!r}."
        )
    old = _EXPERIMENTS.get(name)
    if old is not None and type(old).__qualname__ != type(inst).__qualname__:
        raise ValueError(
            f"experiment name {name!r} is already registered by {type(old).__qualname__}; "
            "choose another name."
        )
    _EXPERIMENTS[name] = inst
    return experiment


def unregister(name: str) -> None:
    """Remove an experiment (and drop it from groups); unknown names are ignored."""
    _EXPERIMENTS.pop(name, None)
    for g, members in list(_GROUPS.items()):
        if name in members:
            _GROUPS[g] = tuple(m for m in members if m != name)


def register_group(name: str, members: Iterable[str | Experiment]) -> None:
    """Register a group name for several experiments (names or instances; resolved lazily).

    Raises:
        ValueError: If ``name`` is ``"all"``, empty or an experiment's name, or no members given.
    """
    names = tuple(m.name if isinstance(m, Experiment) else str(m) for m in members)
    if not name or name == "all" or name in _EXPERIMENTS:
        raise ValueError(
            f"group name must be non-empty, not 'all' nor an experiment; got {name!r}."
        )
    if not names:
        raise ValueError(f"group {name!r} needs at least one member.")
    _GROUPS[name] = names


def unregister_group(name: str) -> None:
    """Remove a group; unknown names are ignored."""
    _GROUPS.pop(name, None)


def list_experiments() -> list[Experiment]:
    """Every registered experiment, sorted by name (built-ins are loaded first)."""
    load_builtin_experiments()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def list_groups() -> dict[str, tuple[str, ...]]:
    """Registered groups ``{name: member names}`` (without the implicit ``"all"``)."""
    load_builtin_experiments()
    return dict(sorted(_GROUPS.items()))


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the registered names and groups.
    """
    load_builtin_experiments()
    try:
        return _EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; registered experiments: {sorted(_EXPERIMENTS)}; "
            f"groups: {[*sorted(_GROUPS), 'all']}. Run `dynstab list`."
        ) from None


def resolve(name: str) -> list[Experiment]:
    """Experiments named by ``name``: a group, ``"all"`` or a single experiment.

    Raises:
        ValueError: For an unknown name, or a group member that is not registered.
    """
    load_builtin_experiments()
    if name == "all":
        return list_experiments()
    if name in _GROUPS:
        return [get_experiment(m) for m in _GROUPS[name]]
    return [get_experiment(name)]


def _lookup_loaded(name: str) -> Experiment | None:
    """Registered experiment without triggering the built-in imports (used by workers)."""
    return _EXPERIMENTS.get(name)
