"""Recording, formatting and claim helpers of the companion reproductions (no numerics).

Curves are thinned to at most :data:`MAX_POINTS` points before they are stored; non-finite
values are stored as None (JSON); claims format numbers with :func:`fmt`. Every claim states
the paper's statement and its source, the acceptance rule fixed from the paper before
measuring, our measurement with its spread over seeds (:func:`over_seeds`) and a status chosen
by :func:`graded_claim`: ``reproduced`` when the paper's rule holds, ``adapted`` when only a
stated, reasoned change of rule or setting holds, ``not reproduced`` when the paper's
observation is not seen in our setting (with the reason), ``failed`` otherwise. Units that
diverged, stopped early or did not converge are listed by :func:`outcome_text`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from scipy.stats import spearmanr

from dynstab_repro.base import Measurement, RunSpec, graded_claim, unit_outcome

__all__ = [
    "MAX_POINTS",
    "TYPICAL_RUN_NOTE",
    "Overrides",
    "Record",
    "Results",
    "Table",
    "finite",
    "fmt",
    "graded_claim",
    "grid_specs",
    "median",
    "outcome_text",
    "over_seeds",
    "spearman",
    "thin",
]

#: Largest number of points stored per recorded curve.
MAX_POINTS = 500

#: Why a mean-square margin above 1 is "adapted" rather than failed.
TYPICAL_RUN_NOTE = (
    "a typical SGD run can converge slightly beyond the mean-square threshold (a product of "
    "random matrices can shrink almost surely while its second moment grows)"
)

#: The JSON-able metrics of one unit (values of several types, read by key).
Record = dict[str, Any]
#: Unit results of an experiment, keyed by unit key.
Results = dict[str, Record]
#: A report table: title and rows.
Table = tuple[str, list[Record]]
#: Field overrides of a config profile.
Overrides = dict[str, object]

T = TypeVar("T")


def thin(values: Sequence[T], max_points: int = MAX_POINTS) -> list[T]:
    """Evenly spaced subsequence of at most ``max_points`` entries, keeping first and last.

    Example:
        >>> thin(list(range(10)), 4)
        [0, 3, 6, 9]
    """
    vals = list(values)
    if len(vals) <= max_points:
        return vals
    idx = np.unique(np.round(np.linspace(0, len(vals) - 1, max_points)).astype(int))
    return [vals[i] for i in idx]


def finite(x: object) -> float | None:
    """``float(x)`` if finite, else None (JSON-able marker of a diverged value).

    Example:
        >>> finite(1), finite(float("nan")), finite("x")
        (1.0, None, None)
    """
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def median(values: Sequence[float | None]) -> float:
    """Median of the non-None entries (NaN when there are none).

    Example:
        >>> median([3.0, None, 1.0, 2.0])
        2.0
    """
    vals = [float(v) for v in values if v is not None]
    return float(np.median(vals)) if vals else float("nan")


def fmt(x: float | None, digits: int = 3) -> str:
    """Compact human formatting for claim ``measured`` strings.

    Example:
        >>> fmt(0.123456), fmt(None), fmt(12345.0)
        ('0.123', 'n/a', '1.23e+04')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def over_seeds(values: Sequence[float | None], label: str = "") -> Measurement:
    """Median and range over seeds (None = a diverged seed, counted as not finite).

    Example:
        >>> str(over_seeds([0.9, None, 0.8], "ratio"))
        'ratio = 0.85 (median of 2 seeds; range 0.8 to 0.9; 1 not finite)'
    """
    return Measurement.over_seeds(
        [math.nan if v is None else float(v) for v in values] or [math.nan], label=label
    )


def outcome_text(results: Results, expected: int | None = None) -> str:
    """Unit outcomes for a claim's ``ours`` text: counts per category, the abnormal units named.

    Units missing from ``results`` (they raised) are counted as failed when ``expected`` is
    given.

    Example:
        >>> outcome_text({"a": {"converged": True}, "b": {"diverged": True}}, expected=3)
        'units: 1 converged, 1 diverged (b), 1 failed'
    """
    cats: dict[str, list[str]] = {}
    for key, rec in sorted(results.items()):
        cats.setdefault(unit_outcome(rec), []).append(key)
    parts = []
    for cat, keys in cats.items():
        named = "" if cat in ("ok", "converged") else f" ({', '.join(keys)})"
        parts.append(f"{len(keys)} {cat}{named}")
    if expected is not None and expected > len(results):
        parts.append(f"{expected - len(results)} failed")
    return "units: " + ", ".join(parts)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation of ``x`` and ``y`` (average ranks for ties; NaN if constant).

    Example:
        >>> round(spearman([1, 2, 3, 4], [4.0, 3.0, 3.0, 1.0]), 3)
        -0.949
    """
    if len(x) < 2:
        return math.nan
    rho = spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic
    return float(rho)


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_specs(
    axes: Mapping[str, Sequence[Any]],
    show: Mapping[str, Callable[[Any], str]] | None = None,
) -> list[RunSpec]:
    """One unit per point of the grid ``axes`` (first axis slowest), keyed ``a=x_b=y``.

    Floats are shown with ``:g``; ``show`` overrides how the values of an axis are written.

    Example:
        >>> [s.key for s in grid_specs({"B": [4, 0], "seed": [0]}, {"B": lambda b: b or "GD"})]
        ['B=4_seed=0', 'B=GD_seed=0']
    """
    fmt_of = dict(show or {})
    out = []
    for combo in itertools.product(*axes.values()):
        params = dict(zip(axes, combo, strict=True))
        key = "_".join(
            f"{k}={fmt_of[k](v) if k in fmt_of else _show(v)}" for k, v in params.items()
        )
        out.append(RunSpec(key, params))
    return out
