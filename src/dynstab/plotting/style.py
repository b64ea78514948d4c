"""One plotting style for every dynstab figure: readable fonts, grids, consistent sizes.

Use :func:`rc_context` around figure creation (the helpers in :mod:`dynstab.plotting.figures`
apply it themselves) and :func:`new_figure` to get a figure that is not registered with
pyplot (no global state, no GUI, nothing to close).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["RC_PARAMS", "new_figure", "rc_context"]

#: Style applied by :func:`rc_context`.
RC_PARAMS: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.alpha": 0.35,
    "grid.linestyle": "-",
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


@contextmanager
def rc_context(extra: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Apply :data:`RC_PARAMS` (plus ``extra``) inside a ``with`` block.

    If pyplot has not been imported yet, the non-interactive Agg backend is selected, so
    reproductions run headless.

    Example:
        >>> import matplotlib
        >>> with rc_context({"font.size": 12}):
        ...     matplotlib.rcParams["font.size"], matplotlib.rcParams["axes.grid"]
        (12.0, True)
    """
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    params: Any = {**RC_PARAMS, **dict(extra or {})}
    with matplotlib.rc_context(params):
        yield


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A styled Agg figure with a ``(nrows, ncols)`` array of axes, independent of pyplot.

    Args:
        nrows: Rows of panels.
        ncols: Columns of panels.
        figsize: Inches; default ``(4.2 * ncols, 3.4 * nrows)``.
        sharex: Share x axes.
        sharey: Share y axes.

    Returns:
        ``(fig, axes)`` with ``axes`` an object array of shape ``(nrows, ncols)``.

    Raises:
        ValueError: If ``nrows`` or ``ncols`` is < 1.

    Example:
        >>> fig, axes = new_figure(1, 2)
        >>> axes.shape
        (1, 2)
    """
    if nrows < 1 or ncols < 1:
        raise ValueError(f"nrows and ncols must be >= 1; got {nrows}, {ncols}.")
    size = figsize or (4.2 * ncols, 3.4 * nrows)
    with rc_context():
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def _as_axes(ax: Any) -> Axes:
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes; got {type(ax).__name__}.")
    return ax
