"""Sharpness vs its stability threshold along a run (from a tracker's or trainer's History).

:func:`plot_stability` draws a measured curvature quantity (λ_max(H), the preconditioned
λ_max(P⁻¹H), Tr H or ‖H‖_F) against the training step, with its uncertainty (the certified
Lanczos error bound, or ± 2 standard errors of a stochastic estimate) as a band, and the
threshold of the optimizer at each step (2/η, 2(1 + β)/η, 38/η for Adam, 2C/(qη), ...) as a
dashed black curve — the picture of the edge of stability (Cohen et al. 2021; 2022).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from matplotlib.axes import Axes

from dynstab.plotting.figures import _finish
from dynstab.plotting.style import _as_axes, new_figure, rc_context

__all__ = ["STABILITY_MEASURES", "plot_stability"]


class _HistoryLike(Protocol):
    @property
    def names(self) -> list[str]: ...

    def as_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...


#: measure → (value column, uncertainty column, half-width factor, threshold column, label).
STABILITY_MEASURES: dict[str, tuple[str, str, float, str, str]] = {
    "lambda_max": ("lambda_max", "lambda_max_error_bound", 1.0, "lambda_max_threshold", "λ_max(H)"),
    "preconditioned": (
        "preconditioned_lambda_max",
        "preconditioned_error_bound",
        1.0,
        "preconditioned_threshold",
        "λ_max(P⁻¹H)",
    ),
    "trace": ("trace", "trace_stderr", 2.0, "trace_threshold", "Tr H"),
    "frobenius": ("frobenius", "frobenius_stderr", 2.0, "frobenius_threshold", "‖H‖_F"),
}


def plot_stability(
    history: _HistoryLike,
    ax: Axes | None = None,
    *,
    measure: str = "lambda_max",
    prefix: str = "",
    logy: bool = False,
    title: str | None = None,
) -> Axes:
    """Plot a curvature measure and its stability threshold against the training step.

    Args:
        history: A :class:`~dynstab.training.History` holding the tracker's columns
            (``StabilityTracker.history``, or a trainer's history with the tracker as monitor).
        ax: Axes to draw on; None makes a new figure.
        measure: ``"lambda_max"`` (default), ``"preconditioned"``, ``"trace"`` or
            ``"frobenius"`` (:data:`STABILITY_MEASURES`).
        prefix: Column prefix used by the tracker (monitor ``prefix``). Default ``""``.
        logy: Logarithmic y axis.
        title: Panel title.

    Returns:
        The axes.

    Raises:
        ValueError: If ``measure`` is unknown or its value column is not in the history.

    Example:
        >>> from dynstab.training import History
        >>> h = History()
        >>> for t, lam in enumerate([5.0, 12.0, 19.0, 20.5, 19.8]):
        ...     h.update(t, {"lambda_max": lam, "lambda_max_threshold": 20.0})
        >>> ax = plot_stability(h)
        >>> [line.get_label() for line in ax.get_lines()]
        ['λ_max(H)', 'threshold']
    """
    if measure not in STABILITY_MEASURES:
        raise ValueError(f"measure must be one of {sorted(STABILITY_MEASURES)}; got {measure!r}.")
    value, err, width, thr, label = STABILITY_MEASURES[measure]
    value, err, thr = prefix + value, prefix + err, prefix + thr
    names = set(history.names)
    if value not in names:
        raise ValueError(
            f"the history has no column {value!r} (columns: {sorted(names)}); measure "
            f"{measure!r} with the tracker (measures=...) or pass the right prefix."
        )
    if ax is None:
        ax = new_figure()[1][0, 0]
    ax = _as_axes(ax)
    with rc_context():
        steps, vals = history.as_arrays(value)
        steps, vals = np.asarray(steps, dtype=float), np.asarray(vals, dtype=float)
        ok = np.isfinite(vals)
        (line,) = ax.plot(steps[ok], vals[ok], "-", label=label)
        if err in names:
            s_e, e = history.as_arrays(err)
            half = width * np.asarray(e, dtype=float)
            if np.array_equal(np.asarray(s_e, dtype=float), steps):
                band = ok & np.isfinite(half)
                ax.fill_between(
                    steps[band],
                    (vals - half)[band],
                    (vals + half)[band],
                    color=line.get_color(),
                    alpha=0.25,
                    lw=0,
                )
        if thr in names:
            s_t, t = history.as_arrays(thr)
            s_t, t = np.asarray(s_t, dtype=float), np.asarray(t, dtype=float)
            good = np.isfinite(t)
            ax.plot(s_t[good], t[good], "--", color="k", lw=1.2, label="threshold")
        return _finish(
            ax, xlabel="step", ylabel=label, title=title, logx=False, logy=logy, legend=True
        )
