"""Generic, legible panels for reproductions, and atomic PNG + PDF saving.

* :func:`sweep_panel`: quantity vs learning rate (log–log by default), one curve per series;
  repeated runs (seeds) are shown as median with min–max error bars; an optional reference
  curve such as the GD threshold ``2/η`` (dashed black).
* :func:`line_panel`: curves against a common (or per-series) x, e.g. training dynamics,
  with optional horizontal reference lines.
* :func:`scatter_panel`: scatter plot with an optional identity line (e.g. r_T vs r_0).
* :func:`save_figure`: writes ``<path>.png`` and ``<path>.pdf`` atomically.

Non-finite values (diverged runs) and, on log axes, non-positive values are not drawn.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dynstab.io import atomic_write_bytes
from dynstab.plotting.style import _as_axes, rc_context

__all__ = ["line_panel", "save_figure", "scatter_panel", "sweep_panel"]

Reference = Callable[[float], Any] | float | None


def _array(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(
        [np.nan if v is None else v for v in values] if isinstance(values, list) else values,
        dtype=float,
    )
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a sequence of numbers; got a scalar {values!r}.")
    return arr


def _finish(
    ax: Axes,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None,
    logx: bool,
    logy: bool,
    legend: bool,
) -> Axes:
    if logx:
        ax.set_xscale("log", nonpositive="mask")
    if logy:
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    return ax


def _plot_reference(ax: Axes, x: np.ndarray, reference: Reference, label: str, log: bool) -> None:
    if reference is None:
        return
    if callable(reference):
        finite = x[np.isfinite(x) & ((x > 0) if log else True)]
        if finite.size == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
        grid = np.geomspace(lo, hi, 200) if (log and lo > 0) else np.linspace(lo, hi, 200)
        ref = np.array([float(reference(float(g))) for g in grid], dtype=float)
        ax.plot(grid, ref, "k--", lw=1.2, label=label, zorder=1)
    else:
        ax.axhline(float(reference), color="k", ls="--", lw=1.2, label=label, zorder=1)


def sweep_panel(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    series: Mapping[str, Any],
    *,
    reference: Reference = None,
    reference_label: str = r"$2/\eta$",
    loglog: bool = True,
    xlabel: str = r"learning rate $\eta$",
    ylabel: str = "",
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    r"""Plot quantities against a swept parameter (usually the learning rate).

    Args:
        ax: Axes to draw on.
        x: Swept values, shape ``(k,)``.
        series: ``{label: y}`` with ``y`` of shape ``(k,)`` or ``(k, r)`` for ``r`` repeats
            (drawn as median with min–max error bars, ignoring NaN). ``None`` entries = missing.
        reference: Callable ``x -> value`` drawn as a dashed black curve over the range of
            ``x`` (e.g. ``lambda lr: 2 / lr``), or a constant drawn as a horizontal line.
        reference_label: Legend label of the reference. Default: ``"2/η"``.
        loglog: Logarithmic x and y axes. Default: ``True``.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: Panel title.
        legend: Draw a legend.

    Returns:
        ``ax``.

    Raises:
        ValueError: If a series does not have ``len(x)`` rows.

    Example:
        >>> from dynstab.plotting.style import new_figure
        >>> fig, axes = new_figure()
        >>> ax = sweep_panel(axes[0, 0], [0.1, 1.0], {"Tr G": [[10, 12], [1.5, 2]]},
        ...                  reference=lambda lr: 2 / lr, ylabel="sharpness")
        >>> [line.get_label() for line in ax.get_lines()][-1]
        '$2/\\eta$'
    """
    ax = _as_axes(ax)
    xs = _array("x", x)
    with rc_context():
        for label, y in series.items():
            ys = _array(f"series {label!r}", y)
            if ys.shape[0] != xs.shape[0]:
                raise ValueError(
                    f"series {label!r} must have len(x) = {xs.shape[0]} rows; got shape "
                    f"{ys.shape}. Pass one value (or one row of repeats) per x."
                )
            if ys.ndim == 1:
                ok = np.isfinite(ys) & np.isfinite(xs)
                ax.plot(xs[ok], ys[ok], "o-", label=str(label))
            else:
                ys2 = ys.reshape(ys.shape[0], -1)
                ok = np.isfinite(xs) & np.isfinite(ys2).any(axis=1)
                sub = ys2[ok]
                med = np.nanmedian(sub, axis=1)
                lo, hi = np.nanmin(sub, axis=1), np.nanmax(sub, axis=1)
                ax.errorbar(
                    xs[ok],
                    med,
                    yerr=[med - lo, hi - med],
                    fmt="o-",
                    capsize=2.5,
                    label=f"{label} (median, range)",
                )
        _plot_reference(ax, xs, reference, reference_label, loglog)
        return _finish(
            ax, xlabel=xlabel, ylabel=ylabel, title=title, logx=loglog, logy=loglog, legend=legend
        )


def line_panel(
    ax: Axes,
    x: Sequence[float] | np.ndarray | Mapping[str, Any],
    series: Mapping[str, Any],
    *,
    xlabel: str = "iteration",
    ylabel: str = "",
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    hlines: Mapping[str, float] | None = None,
    legend: bool = True,
) -> Axes:
    """Plot curves ``y(x)``, e.g. training dynamics, with optional horizontal reference lines.

    Args:
        ax: Axes to draw on.
        x: Common x values ``(k,)``, or ``{label: x}`` giving each series its own x.
        series: ``{label: y}``, each ``y`` as long as its x.
        xlabel: x-axis label. Default: ``"iteration"``.
        ylabel: y-axis label.
        title: Panel title.
        logx: Logarithmic x axis.
        logy: Logarithmic y axis.
        hlines: ``{label: value}`` drawn as dashed horizontal lines (e.g. ``{"2/η": 2/lr}``).
        legend: Draw a legend.

    Returns:
        ``ax``.

    Raises:
        ValueError: If a series and its x differ in length, or a per-series x is missing.

    Example:
        >>> from dynstab.plotting.style import new_figure
        >>> fig, axes = new_figure()
        >>> ax = line_panel(axes[0, 0], [0, 1, 2], {"loss": [1.0, 0.1, 0.01]}, logy=True,
        ...                 hlines={"tol": 1e-2})
        >>> ax.get_yscale()
        'log'
    """
    ax = _as_axes(ax)
    with rc_context():
        for label, y in series.items():
            if isinstance(x, Mapping):
                if label not in x:
                    raise ValueError(
                        f"x has no entry for series {label!r}; give x for every series."
                    )
                xs = _array(f"x[{label!r}]", x[label])
            else:
                xs = _array("x", x)
            ys = _array(f"series {label!r}", y)
            if ys.shape != xs.shape:
                raise ValueError(
                    f"series {label!r} has shape {ys.shape} but its x has shape {xs.shape}."
                )
            ok = np.isfinite(xs) & np.isfinite(ys)
            ax.plot(xs[ok], ys[ok], "-", label=str(label))
        styles = ["--", ":", "-."]
        for i, (label, value) in enumerate((hlines or {}).items()):
            ax.axhline(float(value), color="k", ls=styles[i % 3], lw=1.2, label=str(label))
        return _finish(
            ax, xlabel=xlabel, ylabel=ylabel, title=title, logx=logx, logy=logy, legend=legend
        )


def scatter_panel(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    label: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    identity: bool = False,
    legend: bool = True,
) -> Axes:
    """Scatter ``y`` against ``x``, optionally with the identity line ``y = x``.

    Args:
        ax: Axes to draw on.
        x: x values ``(k,)``.
        y: y values ``(k,)``.
        label: Legend label of the points.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: Panel title.
        logx: Logarithmic x axis.
        logy: Logarithmic y axis.
        identity: Draw ``y = x`` (dotted black) over the data range.
        legend: Draw a legend.

    Returns:
        ``ax``.

    Raises:
        ValueError: If ``x`` and ``y`` differ in length.

    Example:
        >>> from dynstab.plotting.style import new_figure
        >>> fig, axes = new_figure()
        >>> ax = scatter_panel(axes[0, 0], [1, 2, 3], [1, 1.5, 2], identity=True, label="runs")
        >>> len(ax.collections), len(ax.get_lines())
        (1, 1)
    """
    ax = _as_axes(ax)
    xs, ys = _array("x", x), _array("y", y)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same shape; got {xs.shape} and {ys.shape}.")
    with rc_context():
        ok = np.isfinite(xs) & np.isfinite(ys)
        ax.scatter(xs[ok], ys[ok], s=18, label=label, zorder=3)
        if identity and ok.any():
            both = np.concatenate([xs[ok], ys[ok]])
            lo, hi = float(both.min()), float(both.max())
            ax.plot([lo, hi], [lo, hi], "k:", lw=1.2, label="y = x", zorder=2)
        return _finish(
            ax, xlabel=xlabel, ylabel=ylabel, title=title, logx=logx, logy=logy, legend=legend
        )


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150, close: bool = True) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` and ``<path>.pdf`` atomically (parents created).

    Args:
        fig: The figure.
        path: Destination without suffix (a ``.png``/``.pdf`` suffix is stripped).
        dpi: PNG resolution. Default: ``150``.
        close: Close the figure in pyplot afterwards (frees memory; harmless for figures
            from :func:`dynstab.plotting.style.new_figure`). Default: ``True``.

    Returns:
        ``[png_path, pdf_path]``.

    Example:
        >>> import tempfile, pathlib
        >>> from dynstab.plotting.style import new_figure
        >>> fig, axes = new_figure()
        >>> _ = axes[0, 0].plot([0, 1], [0, 1])
        >>> [p.suffix for p in save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "demo")]
        ['.png', '.pdf']
    """
    base = Path(path)
    if base.suffix in (".png", ".pdf"):
        base = base.with_suffix("")
    out = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        with rc_context():
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        out.append(atomic_write_bytes(base.with_name(f"{base.name}.{fmt}"), buf.getvalue()))
    if close and "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out
