"""The experiment contract: claims, units of work and the :class:`Experiment` base class.

A reproduction is an :class:`Experiment` subclass. The runner (:mod:`dynstab_repro.runner`)
calls, in order:

1. ``specs(config) -> list[RunSpec]``: independent units of work (JSON-able ``params``,
   unique filename-safe ``key``); an empty list is a usage error (an empty grid);
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

**Claims.** A :class:`Claim` is one row of the claims table: the paper's statement and number
with its source (figure, table, theorem or equation), the acceptance rule fixed from the paper
before measuring, our measurement (a :class:`Measurement` with its spread over seeds, or a
string) and a :class:`ClaimStatus`: ``reproduced``, ``adapted`` (the rule or setting was changed:
``note`` says what and why), ``not reproduced`` (we report honestly that the paper's statement
is not seen here: ``note`` says why) or ``failed`` (the acceptance rule does not hold: a
regression). Only ``failed`` makes a run fail. Claims built the old way,
``Claim(id, statement, measured, passed, criterion)``, map to ``reproduced``/``failed``.

**Unit outcomes.** Each finished unit is put in one category by :func:`unit_outcome` (from its
metrics: an explicit ``"outcome"`` string, else the ``diverged``, ``early_stopped``,
``converged`` and ``converged_at_full_lr`` flags), so that reports count diverged and
early-stopped runs as their own category instead of leaving blanks.
"""

from __future__ import annotations

import abc
import enum
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "UNIT_OUTCOMES",
    "Claim",
    "ClaimStatus",
    "Experiment",
    "Measurement",
    "RunSpec",
    "graded_claim",
    "outcome_counts",
    "status_counts",
    "unit_outcome",
    "verdict",
]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")


class ClaimStatus(enum.StrEnum):
    """Status of a claim; only :attr:`FAILED` makes a run fail (exit code 1).

    Attributes:
        REPRODUCED: The paper's statement holds under its own acceptance rule and setting.
        ADAPTED: It holds after a stated change of setting or rule (``Claim.note`` says what
            changed and why).
        NOT_REPRODUCED: The paper's statement is not seen in our setting; reported as such,
            with the reason in ``Claim.note``.
        FAILED: The acceptance rule does not hold: a regression to investigate.

    Example:
        >>> ClaimStatus("not reproduced").label
        'NOT REPRODUCED'
    """

    REPRODUCED = "reproduced"
    ADAPTED = "adapted"
    NOT_REPRODUCED = "not reproduced"
    FAILED = "failed"

    @property
    def label(self) -> str:
        """Upper-case label for consoles and tables (``"NOT REPRODUCED"``)."""
        return self.value.upper()


def _fmt_number(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class Measurement:
    """Our number for a claim: a value and, over several seeds, its median and range.

    Attributes:
        value: The measured value (the median over seeds when several were run).
        low: Smallest value over the seeds (``None`` for a single value).
        high: Largest value over the seeds (``None`` for a single value).
        n_seeds: Number of finite values (one per seed, or per ``over`` when pooled).
        n_excluded: Values that were not finite (diverged runs), left out of the median.
        label: What is measured, e.g. ``"max Tr G·η/2"`` (optional).
        over: What one value is: ``"seeds"`` (default) or, when values are pooled over
            runs of several settings, ``"runs"``, ``"minima"``, …; the text says
            "median of N <over>".

    Example:
        >>> m = Measurement.over_seeds([0.8, 0.9, 0.85], label="ratio")
        >>> str(m)
        'ratio = 0.85 (median of 3 seeds; range 0.8 to 0.9)'
        >>> str(Measurement(2.0))
        '2'
        >>> str(Measurement.over_seeds([1.0, 3.0], label="r", over="runs"))
        'r = 2 (median of 2 runs; range 1 to 3)'
    """

    value: float
    low: float | None = None
    high: float | None = None
    n_seeds: int = 1
    n_excluded: int = 0
    label: str = ""
    over: str = "seeds"

    @classmethod
    def over_seeds(
        cls, values: Iterable[float], *, label: str = "", over: str = "seeds"
    ) -> Measurement:
        """Median and range of ``values`` (one per seed, or per ``over``); non-finite apart.

        Raises:
            ValueError: If no value is given.
        """
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("Measurement.over_seeds needs at least one value (one per seed).")
        finite = [v for v in vals if math.isfinite(v)]
        if not finite:
            return cls(math.nan, None, None, 0, len(vals), label, over)
        if len(finite) == 1 and len(vals) == 1:
            return cls(finite[0], None, None, 1, 0, label, over)
        return cls(
            statistics.median(finite),
            min(finite),
            max(finite),
            len(finite),
            len(vals) - len(finite),
            label,
            over,
        )

    def __str__(self) -> str:
        text = f"{self.label} = " if self.label else ""
        text += _fmt_number(self.value)
        if self.low is not None and self.high is not None:
            text += (
                f" (median of {self.n_seeds} {self.over}; range {_fmt_number(self.low)} to "
                f"{_fmt_number(self.high)}"
            )
            text += f"; {self.n_excluded} not finite)" if self.n_excluded else ")"
        elif self.n_excluded:
            text += f" ({self.n_excluded} not finite)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (numbers, None and the label)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`."""
        return cls(
            float(d["value"]),
            None if d.get("low") is None else float(d["low"]),
            None if d.get("high") is None else float(d["high"]),
            int(d.get("n_seeds", 1)),
            int(d.get("n_excluded", 0)),
            str(d.get("label", "")),
            str(d.get("over", "seeds")),
        )


@dataclass(frozen=True)
class Claim:
    """One checked statement of a reproduction: one row of the report's claims table.

    Build it either the old way, ``Claim(id, statement, measured, passed, criterion)`` (status
    ``reproduced`` if ``passed`` else ``failed``), or with an explicit ``status`` and the
    paper's side (``paper``, ``source``). ``passed`` is then derived: it means *nothing
    failed* (``status != "failed"``), which is what the exit code uses.

    Attributes:
        id: Short identifier, e.g. ``"E1.1"``.
        statement: The claim in words (what the paper asserts).
        measured: Our measurement, formatted for humans (the report's ``ours`` column);
            defaults to ``str(measurement)``.
        passed: ``False`` exactly when ``status`` is ``failed``.
        criterion: The acceptance rule, fixed from the paper before measuring, e.g.
            ``"Tr G ≤ 2/η·(1+0.05) for all converged runs"``.
        status: A :class:`ClaimStatus` (a plain string is converted).
        paper: The paper's statement and number as printed there (the ``paper`` column),
            e.g. ``"Tr G ≈ 2/η at every η (Fig. 2a)"``; empty for claims not yet updated.
        source: Where in the paper: ``"Fig. 2"``, ``"Table 1"``, ``"Theorem 3.3"``,
            ``"Eq. (16)"``.
        note: What was changed and why (``adapted``), or why the statement is not seen
            (``not reproduced``); required for those two statuses.
        measurement: Our number with its spread over seeds, when numeric.

    Raises:
        TypeError: If neither ``passed`` nor ``status`` is given.
        ValueError: If ``status`` is unknown, contradicts ``passed``, or is ``adapted`` /
            ``not reproduced`` without a ``note``.

    Example:
        >>> c = Claim("E0", "x converges", "|x|=1e-12", True, "|x| < 1e-8")
        >>> Claim.from_dict(c.to_dict()) == c, c.status.value, c.passed
        (True, 'reproduced', True)
        >>> a = Claim("E1", "Tr G ≤ 2/η", "0.93", criterion="ratio ≤ 1.1",
        ...           status="adapted", paper="≤ 1 at every η", source="Fig. 2",
        ...           note="tolerance 10% for finite training time")
        >>> a.status.label, a.passed
        ('ADAPTED', True)
    """

    id: str
    statement: str
    measured: str = ""
    passed: bool | None = None
    criterion: str = ""
    _: KW_ONLY
    status: ClaimStatus | str | None = None
    paper: str = ""
    source: str = ""
    note: str = ""
    measurement: Measurement | None = None

    def __post_init__(self) -> None:
        status = self.status
        if status is None:
            if self.passed is None:
                raise TypeError(
                    f"Claim {self.id!r} needs passed=True/False (old style) or status= one of "
                    f"{[s.value for s in ClaimStatus]}."
                )
            status = ClaimStatus.REPRODUCED if self.passed else ClaimStatus.FAILED
        else:
            try:
                status = ClaimStatus(status)
            except ValueError:
                raise ValueError(
                    f"Claim {self.id!r}: unknown status {status!r}; choose one of "
                    f"{[s.value for s in ClaimStatus]}."
                ) from None
            if self.passed is not None and bool(self.passed) != (status != ClaimStatus.FAILED):
                raise ValueError(
                    f"Claim {self.id!r}: passed={self.passed!r} contradicts status "
                    f"{status.value!r} (passed means 'not failed'); give only status=."
                )
        if status in (ClaimStatus.ADAPTED, ClaimStatus.NOT_REPRODUCED) and not self.note.strip():
            raise ValueError(
                f"Claim {self.id!r} is {status.value!r}: say what changed and why (or why it is "
                "not seen) in note=..."
            )
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "passed", status != ClaimStatus.FAILED)
        if not self.measured and self.measurement is not None:
            object.__setattr__(self, "measured", str(self.measurement))

    @property
    def label(self) -> str:
        """Upper-case status label, e.g. ``"REPRODUCED"`` or ``"NOT REPRODUCED"``."""
        return ClaimStatus(str(self.status)).label

    @property
    def rule(self) -> str:
        """The acceptance rule (alias of ``criterion``)."""
        return self.criterion

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``passed`` kept for readers of older files)."""
        return {
            "id": self.id,
            "statement": self.statement,
            "measured": self.measured,
            "passed": self.passed,
            "criterion": self.criterion,
            "status": ClaimStatus(str(self.status)).value,
            "paper": self.paper,
            "source": self.source,
            "note": self.note,
            "measurement": None if self.measurement is None else self.measurement.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        """Inverse of :meth:`to_dict`; also reads the old layout (no ``status``)."""
        m = d.get("measurement")
        status = d.get("status")
        return cls(
            id=str(d["id"]),
            statement=str(d["statement"]),
            measured=str(d.get("measured", "")),
            passed=None if status is not None else bool(d["passed"]),
            criterion=str(d.get("criterion", "")),
            status=status,
            paper=str(d.get("paper", "")),
            source=str(d.get("source", "")),
            note=str(d.get("note", "")),
            measurement=None if m is None else Measurement.from_dict(m),
        )


#: Unit outcome categories, in report order (see :func:`unit_outcome`).
UNIT_OUTCOMES: tuple[str, ...] = (
    "ok",
    "converged",
    "not converged",
    "converged in warm-up",
    "early-stopped",
    "diverged",
    "failed",
)


def unit_outcome(metrics: Mapping[str, Any] | None) -> str:
    """Category of a finished unit, from its metrics (``None``: the unit failed).

    Rules, first match wins: an explicit string ``metrics["outcome"]``; ``diverged`` true →
    ``"diverged"``; ``early_stopped`` true → ``"early-stopped"``; ``converged`` true and
    ``converged_at_full_lr`` false → ``"converged in warm-up"`` (it never trained at the
    target learning rate); ``converged`` true → ``"converged"``; ``converged`` false → ``"not
    converged"``; otherwise ``"ok"``.

    Example:
        >>> unit_outcome({"diverged": True}), unit_outcome({"converged": False})
        ('diverged', 'not converged')
        >>> unit_outcome({"converged": True, "converged_at_full_lr": False}), unit_outcome(None)
        ('converged in warm-up', 'failed')
    """
    if metrics is None:
        return "failed"
    explicit = metrics.get("outcome")
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()
    if metrics.get("diverged") is True:
        return "diverged"
    if metrics.get("early_stopped") is True:
        return "early-stopped"
    converged = metrics.get("converged")
    if converged is True:
        return (
            "converged in warm-up" if metrics.get("converged_at_full_lr") is False else "converged"
        )
    if converged is False:
        return "not converged"
    return "ok"


def outcome_counts(outcomes: Mapping[str, str]) -> dict[str, int]:
    """``{category: count}`` of unit outcomes, in the order of :data:`UNIT_OUTCOMES`.

    Example:
        >>> outcome_counts({"a": "diverged", "b": "converged", "c": "converged"})
        {'converged': 2, 'diverged': 1}
    """
    values = list(outcomes.values())
    order = [*UNIT_OUTCOMES, *sorted(set(values) - set(UNIT_OUTCOMES))]
    return {k: values.count(k) for k in order if values.count(k)}


def status_counts(claims: Iterable[Claim]) -> dict[str, int]:
    """Number of claims per status, every :class:`ClaimStatus` present, in order.

    Example:
        >>> status_counts([Claim("a", "s", "m", True, "c")])["reproduced"]
        1
    """
    counts = {s.value: 0 for s in ClaimStatus}
    for c in claims:
        counts[ClaimStatus(str(c.status)).value] += 1
    return counts


def graded_claim(
    claim_id: str,
    statement: str,
    *,
    paper: str,
    source: str,
    rule: str,
    measured: str,
    reproduced: bool,
    measurement: Measurement | None = None,
    adapted: bool = False,
    adapted_note: str = "",
    not_reproduced: bool = False,
    not_reproduced_note: str = "",
) -> Claim:
    """A claim whose status is graded by rules fixed before measuring.

    ``reproduced`` if the paper's rule holds; else ``adapted`` if ``adapted`` (the stated
    adapted rule, with ``adapted_note`` saying what changed and why); else ``not reproduced``
    if ``not_reproduced`` (the paper's observation is not seen in our setting, while nothing
    contradicts the theory: ``not_reproduced_note`` says why); else ``failed``.

    Example:
        >>> c = graded_claim("X", "s", paper="p", source="Fig. 1", rule="r", measured="m",
        ...                  reproduced=False, adapted=True, adapted_note="smaller data")
        >>> c.status.value, c.note
        ('adapted', 'smaller data')
    """
    if reproduced:
        status, note = ClaimStatus.REPRODUCED, ""
    elif adapted:
        status, note = ClaimStatus.ADAPTED, adapted_note
    elif not_reproduced:
        status, note = ClaimStatus.NOT_REPRODUCED, not_reproduced_note
    else:
        status, note = ClaimStatus.FAILED, ""
    return Claim(
        claim_id,
        statement,
        measured,
        criterion=rule,
        status=status,
        paper=paper,
        source=source,
        note=note,
        measurement=measurement,
    )


def verdict(claims: Sequence[Claim], units_failed: bool = False) -> str:
    """An experiment's verdict from its claims.

    ``"FAILED"`` (no claim, a failed claim, or a failed unit), else ``"PARTLY REPRODUCED"``
    (some claim not reproduced), ``"REPRODUCED WITH ADAPTATIONS"`` (some adapted) or
    ``"REPRODUCED"``.

    Example:
        >>> verdict([Claim("a", "s", "m", True, "c")]), verdict([])
        ('REPRODUCED', 'FAILED')
    """
    counts = status_counts(claims)
    if not claims or units_failed or counts["failed"]:
        return "FAILED"
    if counts["not reproduced"]:
        return "PARTLY REPRODUCED"
    if counts["adapted"]:
        return "REPRODUCED WITH ADAPTATIONS"
    return "REPRODUCED"


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
        reference: The paper and place reproduced, e.g. ``"Wu & Su (ICML 2023), Fig. 2"``;
            shown by ``dynstab list`` and in the report.
        ambiguities: Documented defaults for what the paper leaves open, e.g.
            ``{"A3": "inputs x ~ N(0, I_d)"}``; listed in the report.
        config_cls: Frozen dataclass of settings (defaults = the paper's full settings; see
            :mod:`dynstab_repro.config` for profiles).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
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
