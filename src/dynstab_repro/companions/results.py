"""Recording, formatting and claim helpers of the companion reproductions (no numerics).

Curves are thinned to at most :data:`MAX_POINTS` points before they are stored; non-finite
values are stored as None (JSON); claims format numbers with :func:`fmt`. Every claim states
the paper's statement and its source, the acceptance rule fixed from the paper before
measuring, our measurement with its spread over seeds (:func:`over_values`) and a status chosen
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

from dynstab.training import TrainResult
from dynstab_repro.base import Claim, RunSpec, graded_claim, unit_outcome
from dynstab_repro.claim_stats import fmt, over_values, tally

__all__ = [
    "MAX_POINTS",
    "TYPICAL_RUN_NOTE",
    "Overrides",
    "Record",
    "Results",
    "Table",
    "curve",
    "finite",
    "grid_specs",
    "mean_square_claim",
    "outcome_text",
    "sharpness_record",
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


def curve(
    res: TrainResult, name: str, max_points: int | None = None
) -> tuple[list[int], list[float | None]]:
    """Steps and values of the history entry ``name`` of a run (non-finite values → None).

    Thinned to ``max_points`` points (:func:`thin`) when given.
    """
    steps, values = res.history.as_arrays(name)
    idx = list(range(len(steps)))
    if max_points is not None:
        idx = thin(idx, max_points)
    return [int(steps[i]) for i in idx], [finite(values[i]) for i in idx]


def sharpness_record(res: TrainResult) -> Record:
    """A sharpness-monitored run: outcome flags and its λ_max and loss curves (thinned).

    Keys ``diverged``, ``steps_run``, ``final_loss``, ``lambda_steps``, ``lambda_max``,
    ``loss_steps``, ``loss`` (curves from :class:`dynstab.training.SharpnessMonitor` and the
    recorded full loss, at most :data:`MAX_POINTS` points each).
    """
    lam_steps, lam = curve(res, "lambda_max", MAX_POINTS)
    loss_steps, loss = curve(res, "loss", MAX_POINTS)
    return {
        "diverged": bool(res.diverged),
        "steps_run": int(res.steps_run),
        "final_loss": finite(res.final_loss),
        "lambda_steps": lam_steps,
        "lambda_max": lam,
        "loss_steps": loss_steps,
        "loss": loss,
    }


def mean_square_claim(
    claim_id: str,
    statement: str,
    *,
    paper: str,
    source: str,
    ratios: Sequence[float],
    tol: float,
    where: str,
    scope: str,
    details: str = "",
    note: str = TYPICAL_RUN_NOTE,
    over: str = "runs",
    label: str = "η·λ_max(C†D)/2",
) -> Claim:
    """The claim "SGD's minima satisfy the exact mean-square criterion η·λ_max(C†D)/2 ≤ 1".

    Status (rule fixed before measuring): ``reproduced`` when every ratio is ≤ 1, ``adapted``
    when every ratio is ≤ ``tol`` (with ``note`` as the reason), ``failed`` otherwise or when no
    ratio was measured. ``where`` names the minima checked in the rule ("at every converged
    SGD minimum"), ``scope`` in the measurement ("converged SGD minima"); ``details`` is
    appended to the measurement text; the spread is over ``over``.

    Example:
        >>> c = mean_square_claim("S", "s", paper="p", source="src", ratios=[0.8, 1.05], tol=1.1,
        ...                       where="at every minimum", scope="minima")
        >>> c.status.value, c.measured
        ('adapted', 'max η·λ_max(C†D)/2 = 1.05 over 2 minima')
    """
    worst = max(ratios, default=None)
    return graded_claim(
        claim_id,
        statement,
        paper=paper,
        source=source,
        rule=f"η·λ_max(C†D)/2 ≤ 1 {where} (≥ 1): reproduced; ≤ {tol:g}: adapted",
        measured=f"max η·λ_max(C†D)/2 = {fmt(worst)} over {len(ratios)} {scope}{details}",
        measurement=over_values(ratios, label, over=over) if ratios else None,
        reproduced=worst is not None and worst <= 1.0,
        adapted=worst is not None and worst <= tol,
        adapted_note=f"tolerance {tol:g} instead of 1: {note}",
    )


def outcome_text(results: Results, expected: int | None = None) -> str:
    """Unit outcomes for a claim's ``ours`` text: counts per category, the abnormal units named.

    Units missing from ``results`` (they raised) are counted as failed when ``expected`` is
    given (:func:`dynstab_repro.claim_stats.tally`).

    Example:
        >>> outcome_text({"a": {"converged": True}, "b": {"diverged": True}}, expected=3)
        'units: 1 converged, 1 diverged (b), 1 failed'
    """
    outcomes = ((key, unit_outcome(rec)) for key, rec in sorted(results.items()))
    parts = tally(outcomes, normal=("ok", "converged"))
    if expected is not None and expected > len(results):
        parts.append(f"{expected - len(results)} failed")
    return "units: " + ", ".join(parts)


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
