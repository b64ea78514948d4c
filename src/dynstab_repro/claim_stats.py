"""The numbers of a claim: medians, rank correlations, formatting, spreads and outcome counts.

One implementation, shared by every reproduction (Wu & Su (2023) in :mod:`dynstab_repro.wu_su_2023`
and the companions in :mod:`dynstab_repro.companions`). The small-sample semantics are fixed
here, once:

* :func:`median` is over the *finite* values: None, NaN and ±inf are left out (a missing value
  is a diverged or unconverged run, counted elsewhere); NaN when nothing is left. Claims that
  must fail on a missing value test for it explicitly.
* :func:`spearman` needs at least three points (two points always give ±1, which says nothing
  about a trend) and is NaN for a constant sequence; ties get average ranks.
* :func:`fmt` writes a missing value (None or NaN) as ``n/a``.
* :func:`over_values` turns one value per seed (or per run, minimum, … — ``over`` says which) into
  a :class:`~dynstab_repro.base.Measurement` (median and range of the finite values; the
  non-finite ones counted apart).
* :func:`tally` counts outcomes per category (``"3 converged, 1 diverged (b)"``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np
from scipy.stats import rankdata

from dynstab_repro.base import Measurement

__all__ = ["fmt", "median", "over_values", "spearman", "tally"]


def median(values: Iterable[float | None]) -> float:
    """Median of the finite values (None, NaN and ±inf left out); NaN if none is left.

    Example:
        >>> median([3.0, None, float("nan"), 1.0])
        2.0
        >>> median([None])
        nan
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(np.median(arr)) if arr.size else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties; NaN if < 3 points or constant).

    Raises:
        ValueError: If ``x`` and ``y`` differ in length.

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 8, 9, 1]), 12)
        -0.8
        >>> spearman([1, 2], [2, 1]), spearman([1, 2, 3], [5, 5, 5])
        (nan, nan)
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}.")
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def fmt(x: float | None, digits: int = 3) -> str:
    """A number in ``digits`` significant digits for a claim's text; ``n/a`` if None or NaN.

    Example:
        >>> fmt(0.000123456), fmt(12345.0), fmt(None), fmt(float("nan"))
        ('0.000123', '1.23e+04', 'n/a', 'n/a')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def over_values(
    values: Sequence[float | None], label: str = "", *, over: str = "seeds"
) -> Measurement:
    """Median and range of ``values`` (None = a diverged value, counted as not finite).

    Args:
        values: One value per seed, or per run/minimum when values are pooled.
        label: What is measured.
        over: What one value is (``"seeds"``, ``"runs"``, ``"minima"``, …), shown in the text.

    Example:
        >>> str(over_values([0.9, None, 0.8], "ratio"))
        'ratio = 0.85 (median of 2 seeds; range 0.8 to 0.9; 1 not finite)'
        >>> str(over_values([1.0, 2.0, 4.0], "r", over="runs"))
        'r = 2 (median of 3 runs; range 1 to 4)'
    """
    return Measurement.over_seeds(
        [math.nan if v is None else float(v) for v in values] or [math.nan],
        label=label,
        over=over,
    )


def tally(
    outcomes: Iterable[tuple[str, str]],
    *,
    order: Sequence[str] = (),
    normal: Collection[str] = (),
) -> list[str]:
    """``"n category"`` per category of ``(key, category)`` pairs; abnormal keys named.

    Categories come in ``order`` first, then in the order first seen; the keys of a category
    not in ``normal`` are listed after its count.

    Example:
        >>> tally([("a", "converged"), ("b", "diverged")], normal=("converged",))
        ['1 converged', '1 diverged (b)']
        >>> tally([("0", "y"), ("1", "x")], order=("x", "y"), normal=("x", "y"))
        ['1 x', '1 y']
    """
    cats: dict[str, list[str]] = {}
    for key, cat in outcomes:
        cats.setdefault(cat, []).append(key)
    rank = {c: i for i, c in enumerate(order)}
    ordered = sorted(cats, key=lambda c: rank.get(c, len(rank)))
    return [
        f"{len(cats[c])} {c}" + ("" if c in normal else f" ({', '.join(cats[c])})") for c in ordered
    ]
