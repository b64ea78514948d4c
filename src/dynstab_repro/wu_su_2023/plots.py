"""Figure helpers of the Wu & Su (2023) experiments (through :mod:`dynstab.plotting`).

matplotlib is imported only when a figure is drawn (it is heavy and not needed to list or run
experiments); the types come from it for type checking only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from dynstab_repro.wu_su_2023.analysis import medians
from dynstab_repro.wu_su_2023.units import Record

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["loglog_panel", "plot_optimizer_medians", "save_figure_pair", "styled"]

P = ParamSpec("P")
R = TypeVar("R")


def save_figure_pair(fig: Figure, fig_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` in ``fig_dir`` (atomic) and close it."""
    from dynstab.plotting import save_figure  # deferred: matplotlib (module docstring)

    return [Path(p) for p in save_figure(fig, Path(fig_dir) / stem)]


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
