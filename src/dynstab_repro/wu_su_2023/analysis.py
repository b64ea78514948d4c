"""Selections, medians, ratios and claim helpers of the Wu & Su (2023) analyses.

Records are the per-run dicts of :func:`~.units.train_and_measure` (after
:func:`~.units.flatten_runs`). Every run falls in one category (:func:`run_outcome`):
``converged`` (at the target η), ``converged in warm-up`` (its loss reached the minimum while
the warm-up still held η_t < η, so η_eff < η: a minimum of η_eff, not of the target η),
``not converged`` or ``diverged``. Medians "at η" are over the runs converged at the target η of
the seeds; a missing value is NaN and makes the claims that need it fail wherever it sits
(:func:`strict_min`, :func:`strict_max`). Bounds at the effective η are checked on every
minimum (both converged categories).

The numbers of a claim (:func:`median` of the finite values, :func:`spearman` on ≥ 3 points,
:func:`fmt`, the spread over seeds) come from :mod:`dynstab_repro.claim_stats`, shared with the
companions. Claims are built by :func:`paper_claim`: the paper's statement and its place in
the paper, the acceptance rule, our measurement with its spread over seeds (:func:`over_seeds`)
and a status decided by the rule (reproduced / adapted / not reproduced / failed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from dynstab.criteria import gd_threshold, q_factor
from dynstab_repro.base import Claim, Measurement, graded_claim
from dynstab_repro.claim_stats import fmt, median, over_values, spearman, tally
from dynstab_repro.wu_su_2023.units import Record, Row

__all__ = [
    "PAPER",
    "RUN_OUTCOMES",
    "WARMUP_RTOL",
    "as_results",
    "count_finite",
    "effective_lr",
    "fmt",
    "gd_curvature_threshold",
    "is_minimum",
    "is_ok",
    "max_over_min",
    "median",
    "median_table",
    "medians",
    "minima",
    "outcome_text",
    "over_seeds",
    "paper_claim",
    "run_outcome",
    "select",
    "sgd_curvature_threshold",
    "spearman",
    "strict_max",
    "strict_min",
    "summary_cells",
    "worst_trace_ratio",
]


#: The paper every claim of this package refers to.
PAPER = "Wu & Su (ICML 2023)"

#: η_eff/η below 1 − WARMUP_RTOL: the run reached its minimum during the warm-up.
WARMUP_RTOL = 1e-9

#: Categories of one run, in report order (:func:`run_outcome`).
RUN_OUTCOMES: tuple[str, ...] = ("converged", "converged in warm-up", "not converged", "diverged")


def run_outcome(run: Record) -> str:
    """The category of one run: converged (at the target η), converged in warm-up, ...

    ``diverged`` if the run diverged; ``not converged`` if it did not reach the loss tolerance;
    ``converged in warm-up`` if its effective learning rate (η_t at the last downward crossing
    of L = 1e-6) is below the target η, i.e. it fell into its minimum while the warm-up still
    held η_t < η (it then kept training at η, frozen at that minimum); else ``converged``.

    Example:
        >>> run_outcome({"converged": True, "lr": 0.1, "effective_lr": 0.04})
        'converged in warm-up'
        >>> run_outcome({"converged": True, "lr": 0.1}), run_outcome({"diverged": True})
        ('converged', 'diverged')
    """
    if run.get("diverged"):
        return "diverged"
    if not run.get("converged"):
        return "not converged"
    if effective_lr(run) < float(run["lr"]) * (1.0 - WARMUP_RTOL):
        return "converged in warm-up"
    return "converged"


def is_ok(run: Record) -> bool:
    """A run that converged at its target η (not during the warm-up) and did not diverge."""
    return run_outcome(run) == "converged"


def is_minimum(run: Record) -> bool:
    """A run that ended at a minimum: converged at the target η or during the warm-up."""
    return run_outcome(run) in ("converged", "converged in warm-up")


def outcome_text(runs: Iterable[Record]) -> str:
    """Counts of the run categories, e.g. ``"5 converged, 1 converged in warm-up"``.

    Example:
        >>> outcome_text([{"converged": True, "lr": 1.0}, {"diverged": True}])
        '1 converged, 1 diverged'
        >>> outcome_text([])
        'no run'
    """
    parts = tally(
        ((str(i), run_outcome(r)) for i, r in enumerate(runs)),
        order=RUN_OUTCOMES,
        normal=RUN_OUTCOMES,
    )
    return ", ".join(parts) if parts else "no run"


def as_results(runs: Iterable[Record]) -> dict[str, Record]:
    """A list of run records as a ``{key: record}`` mapping (for :func:`medians` on a subset).

    Example:
        >>> as_results([{"lr": 1.0}, {"lr": 2.0}])
        {'0': {'lr': 1.0}, '1': {'lr': 2.0}}
    """
    return {str(i): r for i, r in enumerate(runs)}


def over_seeds(
    runs: Iterable[Record], statistic: Callable[[list[Record]], float], *, label: str = ""
) -> Measurement:
    """``statistic`` of each seed's runs, as a median and range over the seeds.

    Runs are grouped by their ``seed`` field; a seed whose statistic is not finite (e.g. no
    converged run) is counted in ``n_excluded`` (:func:`dynstab_repro.claim_stats.over_values`).

    Example:
        >>> runs = [{"seed": s, "x": float(s)} for s in (0, 1, 2)]
        >>> str(over_seeds(runs, lambda rs: max(r["x"] for r in rs), label="x"))
        'x = 1 (median of 3 seeds; range 0 to 2)'
    """
    by_seed: dict[int, list[Record]] = {}
    for r in runs:
        by_seed.setdefault(int(r.get("seed", 0)), []).append(r)
    if not by_seed:
        return Measurement(math.nan, n_seeds=0, label=label)
    return over_values([statistic(by_seed[s]) for s in sorted(by_seed)], label)


def paper_claim(
    claim_id: str,
    statement: str,
    *,
    paper: str,
    source: str,
    rule: str,
    holds: bool,
    measured: str,
    measurement: Measurement | None = None,
    adapted: str = "",
    not_reproduced: str = "",
) -> Claim:
    """A claim whose status follows from its rule, fixed before measuring.

    Status: the rule ``holds`` → ``reproduced`` (``adapted`` when the claim carries an
    adaptation note: what was changed from the paper and why); it does not hold →
    ``not reproduced`` when the caller gives the reason (a documented, expected departure
    such as r0 = 2 in E2.1), else ``failed``. A NaN comparison counts as not holding.

    Args:
        claim_id: e.g. ``"E1.1"``.
        statement: The claim in words.
        paper: The paper's statement and number.
        source: Where in the paper (result or experiment).
        rule: The acceptance rule.
        holds: Whether the rule holds on our measurement.
        measured: Our measurement in words (with the spread over seeds).
        measurement: The headline number with its spread over seeds.
        adapted: What changed from the paper and why (makes a holding claim ``adapted``).
        not_reproduced: Why the statement is not seen (makes a failing claim
            ``not reproduced``); empty → ``failed``.

    Example:
        >>> c = paper_claim("X", "s", paper="p", source="abstract", rule="r", holds=False,
        ...                 measured="m", not_reproduced="reason")
        >>> c.status.value, c.passed
        ('not reproduced', True)
    """
    return graded_claim(
        claim_id,
        statement,
        paper=paper,
        source=source,
        rule=rule,
        measured=measured,
        measurement=measurement,
        reproduced=holds and not adapted,
        adapted=holds and bool(adapted),
        adapted_note=adapted,
        not_reproduced=bool(not_reproduced),
        not_reproduced_note=not_reproduced,
    )


def select(
    results: Mapping[str, Record],
    optimizer: str,
    *,
    converged_only: bool = True,
    **match: float,
) -> list[Record]:
    """The runs of ``optimizer`` whose fields equal ``match`` (rel. tol 1e−9), e.g. ``lr=0.05``.

    With ``converged_only`` (default) only the runs converged at the target η (:func:`is_ok`).

    Example:
        >>> res = {"a": {"optimizer": "sgd", "lr": 0.1, "converged": True},
        ...        "b": {"optimizer": "sgd", "lr": 0.2, "converged": False}}
        >>> len(select(res, "sgd")), len(select(res, "sgd", converged_only=False, lr=0.2))
        (1, 1)
    """
    return _select(results, optimizer, converged_only, match)


def minima(results: Mapping[str, Record], optimizer: str, **match: float) -> list[Record]:
    """The runs of ``optimizer`` matching ``match`` that ended at a minimum (:func:`is_minimum`).

    Example:
        >>> res = {"a": {"optimizer": "sgd", "lr": 0.1, "converged": True, "effective_lr": 0.01}}
        >>> len(minima(res, "sgd")), len(select(res, "sgd"))
        (1, 0)
    """
    return [r for r in _select(results, optimizer, False, match) if is_minimum(r)]


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
    """Table cells of one optimizer: medians and the run categories.

    ``<optimizer>_<key>``: median over the runs converged at the target η;
    ``<optimizer>_runs``: every run counted by category (:func:`outcome_text`).
    """
    at_target = [r for r in runs if is_ok(r)]
    row: Row = {f"{optimizer}_{k}": median([r[k] for r in at_target]) for k in keys}
    row[f"{optimizer}_runs"] = outcome_text(runs)
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
    (any category) with ``by = value`` and the ``fixed`` fields; the medians are over those
    converged at the target η.

    Example:
        >>> res = {"a": {"optimizer": "gd", "lr": 0.1, "converged": True, "t": 2.0}}
        >>> median_table(res, ["gd"], "lr", [0.1], ["t"])
        [{'lr': 0.1, 'gd_t': 2.0, 'gd_runs': '1 converged'}]
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
