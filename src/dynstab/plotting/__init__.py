"""Plotting for dynstab reproductions (the only package that imports matplotlib).

:mod:`dynstab.plotting.style` holds the shared style (:func:`rc_context`) and
:func:`new_figure`; :mod:`dynstab.plotting.figures` the generic panels and :func:`save_figure`;
:func:`plot_stability` draws sharpness vs its stability threshold along a run.
"""

from dynstab.plotting.figures import line_panel, save_figure, scatter_panel, sweep_panel
from dynstab.plotting.stability import plot_stability
from dynstab.plotting.style import RC_PARAMS, new_figure, rc_context

__all__ = [
    "RC_PARAMS",
    "line_panel",
    "new_figure",
    "plot_stability",
    "rc_context",
    "save_figure",
    "scatter_panel",
    "sweep_panel",
]
