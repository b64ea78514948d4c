"""Figure helpers of every reproduction (through :mod:`dynstab.plotting`).

One styled figure factory and one saver for the companions and the Wu & Su (2023) experiments.
matplotlib is imported when a figure is drawn (it is heavy and not needed to list or run the
experiments); its types are imported for type checking only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure"]


def save_figure(fig: Figure, fig_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``fig_dir/stem.png`` and ``.pdf`` (:func:`dynstab.plotting.save_figure`)."""
    from dynstab.plotting import save_figure as _save  # deferred: matplotlib (module docstring)

    return list(_save(fig, Path(fig_dir) / stem))


def new_figure(ncols: int = 1, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    """Styled ``(fig, axes)`` (:func:`dynstab.plotting.new_figure`), axes shape (nrows, ncols)."""
    from dynstab.plotting import new_figure as _new  # deferred: matplotlib (module docstring)

    return _new(nrows, ncols)
