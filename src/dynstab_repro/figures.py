"""Figure helpers of every reproduction (through :mod:`dynstab.plotting`).

One styled figure factory and one saver for the companions and the Wu & Su (2023) experiments.
matplotlib is imported when a figure is drawn (it is heavy and not needed to list or run the
experiments); its types are imported for type checking only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["new_figure", "plot_recorded", "save_figure"]


def save_figure(fig: Figure, fig_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``fig_dir/stem.png`` and ``.pdf`` (:func:`dynstab.plotting.save_figure`)."""
    from dynstab.plotting import save_figure as _save  # deferred: matplotlib (module docstring)

    return list(_save(fig, Path(fig_dir) / stem))


def new_figure(ncols: int = 1, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    """Styled ``(fig, axes)`` (:func:`dynstab.plotting.new_figure`), axes shape (nrows, ncols)."""
    from dynstab.plotting import new_figure as _new  # deferred: matplotlib (module docstring)

    return _new(nrows, ncols)


def plot_recorded(
    ax: Axes,
    steps: Sequence[float],
    values: Sequence[float | None],
    *,
    skip_zero: bool = False,
    **style: Any,  # Line2D properties, typed Any by matplotlib's own ``Axes.plot``
) -> list[tuple[float, float]]:
    """Draw a recorded curve: its points with a value (None marks a non-finite one).

    With ``skip_zero`` the points with value 0 are left out too (a log axis cannot show them).
    Nothing is drawn when no point is left.

    Args:
        ax: Axes to draw on.
        steps: x of the records, shape ``(k,)``.
        values: y of the records (None: not finite), shape ``(k,)``.
        skip_zero: Leave out the zeros as well.
        **style: Keywords of ``ax.plot`` (colour, line style, label, ...).

    Returns:
        The points drawn, ``[(step, value), ...]`` (empty when none).

    Example:
        >>> fig, axes = new_figure()
        >>> plot_recorded(axes[0, 0], [0, 1, 2, 3], [1.0, None, 0.0, 0.5], skip_zero=True)
        [(0, 1.0), (3, 0.5)]
        >>> len(axes[0, 0].get_lines()), plot_recorded(axes[0, 0], [0], [None])
        (1, [])
    """
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and (v or not skip_zero)]
    if pts:
        ax.plot(*zip(*pts), **style)
    return pts
