"""Plotting for dynstab reproductions (the only package that imports matplotlib).

:mod:`dynstab.plotting.style` holds the shared style (:func:`rc_context`) and
:func:`new_figure`; :mod:`dynstab.plotting.figures` the generic panels and :func:`save_figure`.
"""

from dynstab.plotting.figures import line_panel, save_figure, scatter_panel, sweep_panel
from dynstab.plotting.style import RC_PARAMS, new_figure, rc_context

__all__ = [
    "RC_PARAMS",
    "line_panel",
    "new_figure",
    "rc_context",
    "save_figure",
    "scatter_panel",
    "sweep_panel",
]
