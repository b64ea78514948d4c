"""Selections, medians, ratios and claim helpers of the Wu & Su (2023) analyses.

Records are the per-run dicts of :func:`~.units.train_and_measure` (after
:func:`~.units.flatten_runs`). Medians are over the converged runs of the seeds; a missing value
is NaN and makes the claims that need it fail wherever it sits (:func:`strict_min`,
:func:`strict_max`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from dynstab.criteria import gd_threshold, q_factor
from dynstab_repro.base import Claim
from dynstab_repro.wu_su_2023.units import Record, Row

__all__ = [
    "count_finite",
    "effective_lr",
    "fmt",
    "gd_curvature_threshold",
    "is_ok",
    "make_claim",
    "max_over_min",
    "median",
    "median_table",
    "medians",
    "select",
    "sgd_curvature_threshold",
    "spearman",
    "strict_max",
    "strict_min",
    "summary_cells",
    "worst_trace_ratio",
]


def is_ok(run: Record) -> bool:
    """A run that converged and did not diverge."""
    return bool(run.get("converged")) and not run.get("diverged")


def select(
    results: Mapping[str, Record],
    optimizer: str,
    *,
    converged_only: bool = True,
    **match: float,
) -> list[Record]:
    """The runs of ``optimizer`` whose fields equal ``match`` (rel. tol 1e−9), e.g. ``lr=0.05``.

    Example:
        >>> res = {"a": {"optimizer": "sgd", "lr": 0.1, "converged": True},
        ...        "b": {"optimizer": "sgd", "lr": 0.2, "converged": False}}
        >>> len(select(res, "sgd")), len(select(res, "sgd", converged_only=False, lr=0.2))
        (1, 1)
    """
    return _select(results, optimizer, converged_only, match)


def _select(
    results: Mapping[str, Record], optimizer: str, converged_only: bool, match: Mapping[str, float]
) -> list[Record]:
    return [
        dict(r)
        for r in results.values()
        if r.get("optimizer") == optimizer
        and all(math.isclose(r[k], v, rel_tol=1e-9) for k, v in match.items())
        and (not converged_only or is_ok(r))
    ]


def median(values: Iterable[float | None]) -> float:
    """Median of the finite values (NaN if none).

    Example:
        >>> median([3.0, None, float("nan"), 1.0])
        2.0
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(np.median(arr)) if arr.size else float("nan")


def medians(
    results: Mapping[str, Record],
    optimizer: str,
    key: str,
    by: str,
    values: Iterable[float],
    **fixed: float,
) -> list[float]:
    """Median over the converged runs of ``key`` for each value of the field ``by``.

    Example:
        >>> res = {str(i): {"optimizer": "gd", "lr": 0.1, "converged": True, "t": i}
        ...        for i in range(3)}
        >>> medians(res, "gd", "t", "lr", [0.1, 0.2])
        [1.0, nan]
    """
    out = []
    for v in values:
        match: dict[str, float] = {**fixed, by: v}
        out.append(median([r[key] for r in _select(results, optimizer, True, match)]))
    return out


def sgd_curvature_threshold(
    lr: float, n: int, batch_size: int = 1, sampling: str = "with"
) -> float:
    """The trace bound at an SGD-stable minimum: Tr H ≤ 2/(η q), q = p + (1 − p)/n.

    q comes from :func:`dynstab.criteria.q_factor` (Wu & Su (2023): Tr H ≤ 2/η for B = 1).

    Example:
        >>> sgd_curvature_threshold(0.1, 300)
        20.0
    """
    return 2.0 / (lr * q_factor(n, batch_size, sampling))


def gd_curvature_threshold(lr: float) -> float:
    """λ_max at a GD-stable minimum: 2/η (:func:`dynstab.criteria.gd_threshold`).

    Example:
        >>> gd_curvature_threshold(0.5)
        4.0
    """
    return float(gd_threshold(lr))


def effective_lr(run: Record) -> float:
    """The learning rate a converged run is tested against: its ``effective_lr``.

    That is η_t at the last downward crossing of L = 1e-6
    (:attr:`dynstab.training.TrainResult.effective_lr`), or the target ``lr`` without one.
    """
    eff = run.get("effective_lr")
    return float(eff) if eff is not None else float(run["lr"])


def worst_trace_ratio(runs: Iterable[Record], n: int, batch_size: int) -> float:
    """Maximum over ``runs`` of Tr G / (2/(q η_eff)): the trace bound at the effective η.

    NaN if there are no runs or any ratio is non-finite (see :func:`strict_max`).
    """
    ratios = [r["trace"] / sgd_curvature_threshold(effective_lr(r), n, batch_size) for r in runs]
    return strict_max(ratios)


def max_over_min(values: Sequence[float], *, skip_missing: bool = False) -> float:
    """Ratio max/min of positive values (NaN if empty, non-positive or with missing values).

    A non-finite value makes the result NaN unless ``skip_missing``, which drops it.

    Example:
        >>> max_over_min([2.0, 4.0]), max_over_min([2.0, float("nan")], skip_missing=True)
        (2.0, 1.0)
    """
    v = [x for x in values if math.isfinite(x)] if skip_missing else list(values)
    if not v or not all(math.isfinite(x) for x in v) or min(v) <= 0:
        return float("nan")
    return max(v) / min(v)


def strict_min(values: Sequence[float]) -> float:
    """Minimum of ``values``, NaN if empty or if any value is non-finite (order-independent).

    Python's ``min`` ignores a NaN unless it comes first; a claim must instead fail on a
    missing (NaN) median wherever it sits.

    Example:
        >>> strict_min([2.0, 1.0]), strict_min([1.0, float("nan")]), strict_min([])
        (1.0, nan, nan)
    """
    return _strict(min, values)


def strict_max(values: Sequence[float]) -> float:
    """Maximum of ``values``, NaN if empty or if any value is non-finite (order-independent).

    Example:
        >>> strict_max([2.0, 1.0]), strict_max([1.0, float("nan")])
        (2.0, nan)
    """
    return _strict(max, values)


def _strict(reduce: Callable[[list[float]], float], values: Sequence[float]) -> float:
    v = list(values)
    if not v or not all(math.isfinite(x) for x in v):
        return float("nan")
    return float(reduce(v))


def count_finite(values: Iterable[float]) -> int:
    """How many of ``values`` are finite (e.g. medians of η values with a converged run).

    Example:
        >>> count_finite([1.0, float("nan"), float("inf"), 2.0])
        2
    """
    return sum(1 for x in values if math.isfinite(x))


def summary_cells(optimizer: str, runs: Sequence[Record], keys: Iterable[str]) -> Row:
    """Table cells ``<optimizer>_<key>`` (medians over ``runs``) and ``<optimizer>_converged``."""
    row: Row = {f"{optimizer}_{k}": median([r[k] for r in runs]) for k in keys}
    row[f"{optimizer}_converged"] = f"{sum(bool(r.get('converged')) for r in runs)}/{len(runs)}"
    return row


def median_table(
    runs: Mapping[str, Record],
    optimizers: Iterable[str],
    by: str,
    values: Iterable[float],
    keys: Iterable[str],
    *,
    lead: Callable[[float], Row] | None = None,
    **fixed: float,
) -> list[Row]:
    """One row per value of the field ``by``: its :func:`summary_cells` for each optimizer.

    A row starts with ``{by: value}`` (plus ``lead(value)``); the runs of a cell are all runs
    (converged or not) with ``by = value`` and the ``fixed`` fields.

    Example:
        >>> res = {"a": {"optimizer": "gd", "lr": 0.1, "converged": True, "t": 2.0}}
        >>> median_table(res, ["gd"], "lr", [0.1], ["t"])
        [{'lr': 0.1, 'gd_t': 2.0, 'gd_converged': '1/1'}]
    """
    keys = tuple(keys)
    rows = []
    for v in values:
        row: Row = {by: v, **(lead(v) if lead is not None else {})}
        for opt in optimizers:
            sel = _select(runs, opt, False, {**fixed, by: v})
            row.update(summary_cells(opt, sel, keys))
        rows.append(row)
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties; NaN if < 3 points or constant).

    Raises:
        ValueError: If ``x`` and ``y`` differ in length.

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 8, 9, 1]), 12)
        -0.8
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
    """Format a number compactly (``'nan'``/``'—'`` for missing).

    Example:
        >>> fmt(0.000123456), fmt(None)
        ('0.000123', '—')
    """
    if x is None:
        return "—"
    return f"{x:.{digits}g}"


def make_claim(claim_id: str, statement: str, measured: str, passed: bool, criterion: str) -> Claim:
    """Build a :class:`~dynstab_repro.base.Claim` (NaN comparisons count as failed)."""
    return Claim(claim_id, statement, measured, bool(passed), criterion)
