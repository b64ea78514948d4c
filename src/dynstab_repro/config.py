"""Frozen-dataclass experiment configurations: dict round trips, profiles and overrides.

Convention for an experiment's ``config_cls``:

* a ``@dataclass(frozen=True)`` whose **defaults are the full reproduction settings**;
* optionally a class attribute ``PROFILES: ClassVar[dict[str, dict]]`` mapping profile names
  (``"quick"``, ``"full"``, ...) to overrides of those defaults. ``"full"`` and ``"quick"``
  are always accepted: a missing entry means "the defaults";
* optionally subclass :class:`ExperimentConfig`, which adds ``from_dict``, ``to_dict``,
  ``profile(name)`` and ``with_overrides(...)`` built on the functions below. A class that
  defines its own ``profile`` classmethod (without ``PROFILES``) is also supported.

Values given as strings (``--set key=value`` on the command line) are parsed by the field's
type: ``int``, ``float``, ``bool`` (``true/false/1/0/yes/no``), ``str``, ``X | None``
(``none``/``null``), ``Literal[...]`` and ``tuple[...]`` (JSON list ``[1,2]`` or comma list
``1,2``). Python values (from JSON files or ``PROFILES``) are checked against the same types;
lists become tuples and ints are accepted for floats.

Two checks guard against configs that would run but mean nothing:

* an override may not empty a tuple field that is not empty (``--set lrs=`` would run an
  empty grid); a config class can allow it for named fields with
  ``ALLOW_EMPTY: ClassVar[frozenset[str]]``;
* a config class may define ``validate(self) -> None`` raising :class:`ValueError` on values
  that make no sense (negative step counts, ...); :func:`check_config` calls it, and the runner
  calls :func:`check_config` before any work, so the command exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

__all__ = [
    "ExperimentConfig",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "config_to_dict",
    "override_items",
    "parse_overrides",
    "profile_config",
    "profile_names",
]

C = TypeVar("C")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _check_dataclass(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(
            f"an experiment config must be a dataclass type; got {cls!r}. "
            "Declare it with @dataclasses.dataclass(frozen=True)."
        )


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _unknown_key_error(cls: type, unknown: Iterable[str], valid: Iterable[str]) -> ValueError:
    return ValueError(
        f"unknown config key(s) {sorted(unknown)} for {cls.__name__}; "
        f"valid keys are {sorted(valid)}. Fix the spelling in --set/--config."
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a string or a Python value) to type ``tp``; raise ValueError if not."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if origin in (typing.Union, types.UnionType):
        if (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))) and (
            type(None) in args
        ):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{key}: cannot interpret {value!r} as {tp}; " + " / ".join(errors))
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"{key} must be one of {list(args)}; got {value!r}.")
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{key}: invalid JSON list {value!r} ({exc}).") from None
            elif text in ("", "()"):
                items = []
            else:
                items = [s.strip() for s in text.strip("()").split(",") if s.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ValueError(f"{key} must be a list (e.g. 1,2,3 or [1,2,3]); got {value!r}.")
        if args and len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(items)
        elif args:
            if len(args) != len(items):
                raise ValueError(f"{key} must have {len(args)} entries; got {len(items)}.")
            elem_types = list(args)
        else:
            elem_types = [Any] * len(items)
        out = [_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(items, elem_types))]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{key} must be a bool (true/false); got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be an int; got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
            try:
                f = float(value)
            except ValueError:
                raise ValueError(f"{key} must be an int; got {value!r}.") from None
            value = f
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError(f"{key} must be an int; got {value!r}.")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number; got {value!r}.")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number; got {value!r}.") from None
        raise ValueError(f"{key} must be a number; got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key} must be a string; got {value!r}.")
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{key}: invalid JSON object {value!r} ({exc}).") from None
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a JSON object; got {value!r}.")
        return dict(value)
    return value


def config_from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
    """Build a config of type ``cls`` from a dict, rejecting unknown keys.

    Missing keys take the dataclass defaults; values are checked and converted by field type.

    Args:
        cls: A (frozen) dataclass type.
        d: Mapping of field names to values (strings are parsed, see the module docstring).

    Returns:
        A ``cls`` instance.

    Raises:
        TypeError: If ``cls`` is not a dataclass type.
        ValueError: On unknown keys (the message lists the sorted valid keys) or bad values.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     lr: float = 0.1
        ...     seeds: tuple[int, ...] = (0,)
        >>> config_from_dict(Cfg, {"lr": 1, "seeds": [1, 2]})
        Cfg(lr=1.0, seeds=(1, 2))
    """
    _check_dataclass(cls)
    if not isinstance(d, Mapping):
        raise TypeError(f"config values must be a mapping; got {type(d).__name__}.")
    ftypes = _field_types(cls)
    unknown = set(d) - set(ftypes)
    if unknown:
        raise _unknown_key_error(cls, unknown, ftypes)
    kwargs = {k: _coerce(k, v, ftypes[k]) for k, v in d.items()}
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a dataclass config (tuples become lists).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     seeds: tuple[int, ...] = (0, 1)
        >>> config_to_dict(Cfg())
        {'seeds': [0, 1]}
    """
    _check_dataclass(type(config))
    from dynstab_repro.io import to_jsonable

    return {f.name: to_jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def override_items(
    overrides: Iterable[str] | Mapping[str, Any],
    *,
    form: str = "key=value",
    example: str = "--set lr=0.05 --set seeds=0,1,2",
) -> list[tuple[str, Any]]:
    """``(key, raw value)`` pairs, in order, of ``["key=value", ...]`` or of a mapping.

    The one parser of ``--set`` items; ``form`` and ``example`` only shape the error message
    (the runner's items may carry an ``experiment:`` scope in the key).

    Raises:
        ValueError: If an item has no ``=`` or an empty key.

    Example:
        >>> override_items(["lr=0.1", " seeds = 1,2"])
        [('lr', '0.1'), ('seeds', '1,2')]
    """
    if isinstance(overrides, Mapping):
        return [(str(k), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        overrides = [overrides]
    out: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"an override must look like {form}; got {item!r}. Example: {example}")
        out.append((key.strip(), value.strip()))
    return out


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` (or a mapping, returned as a dict) into a dict of raw values.

    Raises:
        ValueError: If an item has no ``=`` or an empty key.

    Example:
        >>> parse_overrides(["lr=0.1", "seeds=1,2"])
        {'lr': '0.1', 'seeds': '1,2'}
    """
    return dict(override_items(overrides))


def apply_overrides(config: C, overrides: Iterable[str] | Mapping[str, Any]) -> C:
    """Return a copy of ``config`` with ``key=value`` overrides applied (parsed by field type).

    Args:
        config: A dataclass config instance.
        overrides: ``["key=value", ...]`` strings or a mapping of keys to values.

    Returns:
        A new config of the same type.

    Raises:
        ValueError: On unknown keys (lists the valid ones) or values of the wrong type.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     lr: float = 0.1
        ...     gd: bool = False
        >>> apply_overrides(Cfg(), ["lr=1e-2", "gd=true"])
        Cfg(lr=0.01, gd=True)
    """
    cls = type(config)
    _check_dataclass(cls)
    raw = parse_overrides(overrides)
    ftypes = _field_types(cls)
    unknown = set(raw) - set(ftypes)
    if unknown:
        raise _unknown_key_error(cls, unknown, ftypes)
    changes = {k: _coerce(k, v, ftypes[k]) for k, v in raw.items()}
    allowed = frozenset(getattr(cls, "ALLOW_EMPTY", frozenset()))
    for key, value in changes.items():
        old = getattr(config, key)
        if (
            isinstance(value, tuple | list)
            and not value
            and isinstance(old, tuple | list)
            and old
            and key not in allowed
        ):
            example = ",".join(str(v) for v in old[:3])
            raise ValueError(
                f"{key} would be empty (got {raw[key]!r}): a grid needs at least one value; "
                f"give e.g. {key}={example} (the value before this override)."
            )
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def check_config(config: Any) -> None:
    """Call the config's own ``validate()`` if it defines one (see the module docstring).

    Raises:
        ValueError: What ``validate`` raises; a :class:`TypeError` from it is re-raised as a
            ValueError so that the command line reports it as a usage error.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     steps: int = 10
        ...     def validate(self) -> None:
        ...         if self.steps < 1:
        ...             raise ValueError(f"steps must be >= 1; got {self.steps}")
        >>> check_config(Cfg(steps=0))
        Traceback (most recent call last):
        ...
        ValueError: steps must be >= 1; got 0
    """
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except TypeError as exc:
            raise ValueError(str(exc)) from exc


def profile_names(cls: type) -> list[str]:
    """Profile names a config class accepts (always includes ``"full"`` and ``"quick"``)."""
    profiles = getattr(cls, "PROFILES", None) or {}
    return sorted({"full", "quick", *profiles})


def profile_config(cls: type[C], name: str) -> C:
    """Config of ``cls`` for profile ``name``: defaults (= the full settings) + ``PROFILES[name]``.

    A class without ``PROFILES`` but with its own ``profile`` classmethod is delegated to.

    Raises:
        ValueError: For an unknown profile (the message lists the available ones).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     steps: int = 1000
        ...     PROFILES: ClassVar[dict] = {"quick": {"steps": 10}}
        >>> profile_config(Cfg, "quick"), profile_config(Cfg, "full")
        (Cfg(steps=10), Cfg(steps=1000))
    """
    _check_dataclass(cls)
    profiles = getattr(cls, "PROFILES", None)
    own = getattr(cls, "profile", None)
    if not profiles and own is not None and getattr(own, "__func__", None) is not _PROFILE_FUNC:
        return own(name)
    profiles = profiles or {}
    if name not in profiles and name not in ("full", "quick"):
        raise ValueError(
            f"unknown profile {name!r} for {cls.__name__}; choose from {profile_names(cls)} "
            "(--quick is --profile quick)."
        )
    return config_from_dict(cls, dict(profiles.get(name, {})))


class ExperimentConfig:
    """Optional mixin for frozen dataclass configs: dict round trip, profiles and overrides.

    Subclasses are ``@dataclass(frozen=True)`` and may set ``PROFILES``.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg(ExperimentConfig):
        ...     steps: int = 1000
        ...     PROFILES: ClassVar[dict] = {"quick": {"steps": 10}}
        >>> Cfg.profile("quick").with_overrides(["steps=20"]).to_dict()
        {'steps': 20}
    """

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Build from a dict; unknown keys raise ValueError listing the valid ones."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields."""
        return config_to_dict(self)

    @classmethod
    def profile(cls, name: str) -> Any:
        """Config for profile ``name`` (``"full"`` = defaults, ``"quick"`` = CI smoke settings)."""
        return profile_config(cls, name)

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> Any:
        """Copy with ``key=value`` overrides applied."""
        return apply_overrides(self, overrides)


_PROFILE_FUNC = ExperimentConfig.profile.__func__  # type: ignore[attr-defined]
