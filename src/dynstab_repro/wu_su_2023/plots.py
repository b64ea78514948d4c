"""Figure helpers of the Wu & Su (2023) experiments (through :mod:`dynstab.plotting`).

The figures are saved by :func:`dynstab_repro.figures.save_figure`.

matplotlib is imported only when a figure is drawn (it is heavy and not needed to list or run
experiments); the types come from it for type checking only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from dynstab_repro.wu_su_2023.analysis import medians, run_outcome
from dynstab_repro.wu_su_2023.units import Record

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["loglog_panel", "mark_runs", "plot_optimizer_medians", "styled"]

#: Marker style of each run category in the figures (:func:`mark_runs`).
RUN_STYLES: dict[str, dict[str, object]] = {
    "converged": {"marker": ".", "color": "0.6", "s": 10, "zorder": 0},
    "converged in warm-up": {"marker": "x", "color": "k", "s": 30, "zorder": 3},
    "not converged": {"marker": "v", "color": "C1", "s": 30, "zorder": 3},
    "diverged": {"marker": "v", "color": "C3", "s": 30, "zorder": 3},
}

P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run a plotting function inside :func:`dynstab.plotting.rc_context`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from dynstab.plotting import rc_context  # deferred: matplotlib (module docstring)

        with rc_context():
            return fn(*args, **kwargs)

    return wrapper


def loglog_panel(
    ax: Axes,
    *,
    xlabel: str,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
) -> None:
    """Log–log axes with labels, title and a small legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)


def plot_optimizer_medians(
    ax: Axes,
    results: Mapping[str, Record],
    optimizers: Iterable[str],
    key: str,
    by: str,
    values: Sequence[float],
    *,
    label_suffix: str = "",
    **fixed: float,
) -> None:
    """One line of :func:`~.analysis.medians` per configured optimizer (SGD: ○, GD: □)."""
    chosen = set(optimizers)
    for opt, mk in (("sgd", "o"), ("gd", "s")):
        if opt in chosen:
            med = medians(results, opt, key, by, values, **fixed)
            ax.plot(values, med, marker=mk, label=opt.upper() + label_suffix)


def mark_runs(
    ax: Axes,
    runs: Iterable[Record],
    x: Callable[[Record], float],
    y: Callable[[Record], float],
    *,
    legend_tag: str = "",
    color: str | None = None,
) -> dict[str, int]:
    """Scatter every run by category (:data:`RUN_STYLES`) so that none is a blank.

    Runs converged at the target η: grey dots at ``(x, y)``; converged during the warm-up:
    black crosses at ``(x, y)`` (a minimum of η_eff < η, not of the plotted η); diverged and
    unconverged runs have no final value: triangles at the bottom edge of the panel at ``x``.
    Every category except the plain one gets a legend entry with its count; ``color``
    replaces the colour of the crosses (e.g. one colour per optimizer on a shared panel).

    Returns:
        ``{category: count}`` of the runs drawn.
    """
    groups: dict[str, list[Record]] = {}
    for r in runs:
        groups.setdefault(run_outcome(r), []).append(r)
    for cat, rs in groups.items():
        style = dict(RUN_STYLES[cat])
        if color is not None and cat == "converged in warm-up":
            style["color"] = color
        label = None if cat == "converged" else f"{legend_tag}{cat} ({len(rs)})"
        if cat in ("converged", "converged in warm-up"):
            ax.scatter([x(r) for r in rs], [y(r) for r in rs], label=label, **style)  # type: ignore[arg-type]
        else:
            ax.scatter(
                [x(r) for r in rs],
                [0.03] * len(rs),
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                label=label,
                **style,  # type: ignore[arg-type]
            )
    return {k: len(v) for k, v in groups.items()}
