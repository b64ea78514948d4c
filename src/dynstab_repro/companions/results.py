"""Recording and formatting helpers of the companion reproductions (no numerics).

Curves are thinned to at most :data:`MAX_POINTS` points before they are stored; non-finite
values are stored as None (JSON); claims format numbers with :func:`fmt`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "MAX_POINTS",
    "Overrides",
    "Record",
    "Results",
    "Table",
    "finite",
    "fmt",
    "median",
    "thin",
]

#: Largest number of points stored per recorded curve.
MAX_POINTS = 500

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
