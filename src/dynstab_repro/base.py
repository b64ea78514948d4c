"""The experiment contract: claims, units of work and the :class:`Experiment` base class.

A reproduction is an :class:`Experiment` subclass. The runner (:mod:`dynstab_repro.runner`)
calls, in order:

1. ``specs(config) -> list[RunSpec]``: independent units of work (JSON-able ``params``,
   unique filename-safe ``key``);
2. ``run_one(config, spec) -> dict`` for every unit not finished yet, possibly in another
   process (spawn-safe: the worker re-resolves the experiment by name and rebuilds the config
   from its dict), returning JSON-able metrics;
3. ``analyze(config, results) -> list[Claim]`` with ``results = {key: metrics}``;
4. ``plot(config, results, fig_dir) -> list[Path]`` (PNG + PDF, via :mod:`dynstab.plotting`);
5. ``tables(config, results) -> list[(title, rows)]`` (optional; rendered in the report and
   written as CSV).

``analyze``, ``plot`` and ``tables`` only see units that succeeded; a unit that raised is
recorded as failed and its key is missing from ``results`` (they must cope, e.g. by reporting
the affected claim as failed).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Claim", "Experiment", "RunSpec"]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")


@dataclass(frozen=True)
class Claim:
    """One checked statement of a reproduction: one row of the report's claims table.

    Attributes:
        id: Short identifier, e.g. ``"E1.1"``.
        statement: The claim in words (what the paper/spec asserts).
        measured: The measured numbers, formatted for humans.
        passed: Whether ``measured`` satisfies ``criterion``.
        criterion: The acceptance criterion, e.g. ``"Tr G ≤ 2/η·(1+0.05) for all converged runs"``.

    Example:
        >>> c = Claim("E0", "x converges", "|x|=1e-12", True, "|x| < 1e-8")
        >>> Claim.from_dict(c.to_dict()) == c, c.status
        (True, 'PASS')
    """

    id: str
    statement: str
    measured: str
    passed: bool
    criterion: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(self.passed))

    @property
    def status(self) -> str:
        """``"PASS"`` or ``"FAIL"``."""
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "id": self.id,
            "statement": self.statement,
            "measured": self.measured,
            "passed": self.passed,
            "criterion": self.criterion,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(d["id"]),
            statement=str(d["statement"]),
            measured=str(d["measured"]),
            passed=bool(d["passed"]),
            criterion=str(d["criterion"]),
        )


@dataclass(frozen=True)
class RunSpec:
    """One independent unit of work (e.g. one training run at one learning rate and seed).

    Attributes:
        key: Unique, filename-safe identifier (letters, digits and ``._=+,-``), e.g.
            ``"lr=0.05_seed=1_sgd"``; the result is stored in ``runs/<key>.json``.
        params: JSON-able parameters of the unit.

    Example:
        >>> RunSpec("lr=0.1_seed=0", {"lr": 0.1, "seed": 0}).key
        'lr=0.1_seed=0'
    """

    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key) or len(self.key) > 200:
            raise ValueError(
                "RunSpec.key must be a non-empty filename-safe string (letters, digits, '._=+,-', "
                f"starting with a letter or digit, at most 200 characters); got {self.key!r}. "
                "Build keys like f'lr={lr:g}_seed={seed}'."
            )
        if not isinstance(self.params, Mapping):
            raise TypeError(f"RunSpec.params must be a dict; got {type(self.params).__name__}.")


class Experiment(abc.ABC):
    """Base class of every reproduction (one figure/table/claim group of a paper).

    Class attributes to set in subclasses:
        name: Registry name, e.g. ``"wu-su-2023/e1"`` (lower case, ``/`` separates the group).
        title: One-line title for reports.
        description: A paragraph for the report.
        spec_reference: Where the recipe is specified, e.g. ``"wu_su_2023.md §4 E1"``.
        ambiguities: Documented defaults for the spec's ambiguities, e.g.
            ``{"A3": "inputs x ~ N(0, I_d)"}``; listed in the report.
        config_cls: Frozen dataclass of settings (defaults = the spec's full settings; see
            :mod:`dynstab_repro.config` for profiles).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    spec_reference: ClassVar[str] = ""
    ambiguities: ClassVar[dict[str, str]] = {}
    config_cls: ClassVar[type]

    @abc.abstractmethod
    def specs(self, config: Any) -> list[RunSpec]:
        """Independent units of work for ``config``."""

    @abc.abstractmethod
    def run_one(self, config: Any, spec: RunSpec) -> dict[str, Any]:
        """Run one unit; pure and process-safe; return JSON-able metrics."""

    @abc.abstractmethod
    def analyze(self, config: Any, results: dict[str, dict[str, Any]]) -> list[Claim]:
        """Check the claims on the finished units' metrics (``{key: metrics}``)."""

    def plot(self, config: Any, results: dict[str, dict[str, Any]], fig_dir: Path) -> list[Path]:
        """Write figures (PNG + PDF) into ``fig_dir``; return their paths. Default: none."""
        return []

    def tables(
        self, config: Any, results: dict[str, dict[str, Any]]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Extra tables ``(title, rows)`` for the report (also written as CSV). Default: none."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
