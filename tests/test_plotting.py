"""Tests of dynstab.plotting: panels draw what they are given, files are written atomically."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from dynstab.plotting import (
    RC_PARAMS,
    line_panel,
    new_figure,
    rc_context,
    save_figure,
    scatter_panel,
    sweep_panel,
)


def one_axes():
    fig, axes = new_figure()
    return fig, axes[0, 0]


def test_rc_context_applies_and_restores():
    before = dict(matplotlib.rcParams)
    with rc_context({"lines.linewidth": 3.0}):
        assert matplotlib.rcParams["font.size"] == RC_PARAMS["font.size"]
        assert matplotlib.rcParams["lines.linewidth"] == 3.0
        assert matplotlib.rcParams["axes.grid"] is True
    assert matplotlib.rcParams["lines.linewidth"] == before["lines.linewidth"]
    assert matplotlib.rcParams["axes.grid"] == before["axes.grid"]


def test_new_figure_shape_and_errors():
    fig, axes = new_figure(2, 3)
    assert axes.shape == (2, 3)
    assert fig.get_size_inches() == pytest.approx((12.6, 6.8))
    with pytest.raises(ValueError, match="nrows and ncols must be >= 1"):
        new_figure(0, 1)


def test_sweep_panel_series_reference_and_log_axes():
    _, ax = one_axes()
    lrs = np.array([0.01, 0.1, 1.0])
    sweep_panel(
        ax,
        lrs,
        {"GD": [150.0, 19.0, np.nan], "SGD": [None, 5.0, 1.5]},
        reference=lambda lr: 2.0 / lr,
        ylabel="Tr G",
        title="sharpness",
    )
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["GD"].get_xdata(), [0.01, 0.1])  # NaN (diverged) dropped
    np.testing.assert_allclose(lines["SGD"].get_ydata(), [5.0, 1.5])
    ref = lines[r"$2/\eta$"]
    x, y = np.asarray(ref.get_xdata()), np.asarray(ref.get_ydata())
    np.testing.assert_allclose(y, 2.0 / x, rtol=1e-12)
    assert (x.min(), x.max()) == pytest.approx((0.01, 1.0))
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == r"learning rate $\eta$"
    assert ax.get_ylabel() == "Tr G"
    assert ax.get_title() == "sharpness"
    assert ax.get_legend() is not None


def test_sweep_panel_repeats_show_median_and_range():
    _, ax = one_axes()
    y = np.array([[1.0, 3.0, 2.0], [4.0, np.nan, 6.0]])
    sweep_panel(ax, [0.1, 0.2], {"Tr G": y}, loglog=False, reference=1.5, reference_label="c")
    (container,) = ax.containers
    line = container.lines[0]
    np.testing.assert_allclose(line.get_ydata(), [2.0, 5.0])  # nan-median per learning rate
    segments = container.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segments], [[1.0, 3.0], [4.0, 6.0]])
    assert ax.get_xscale() == "linear"
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "c" in labels  # horizontal reference line


def test_sweep_panel_rejects_mismatched_series():
    _, ax = one_axes()
    with pytest.raises(ValueError, match="must have len\\(x\\) = 3 rows"):
        sweep_panel(ax, [1, 2, 3], {"a": [1, 2]})
    with pytest.raises(ValueError, match="sequence of numbers"):
        sweep_panel(ax, 1.0, {"a": [1]})
    with pytest.raises(TypeError, match="matplotlib Axes"):
        sweep_panel("ax", [1], {"a": [1]})


def test_line_panel_per_series_x_and_hlines():
    _, ax = one_axes()
    line_panel(
        ax,
        {"loss": [0, 1, 2], "Tr G": [0, 2]},
        {"loss": [1.0, 0.1, 0.01], "Tr G": [3.0, 4.0]},
        logy=True,
        hlines={"2/η": 20.0},
        ylabel="value",
    )
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["Tr G"].get_xdata(), [0, 2])
    np.testing.assert_allclose(lines["2/η"].get_ydata(), [20.0, 20.0])
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration"
    with pytest.raises(ValueError, match="x has no entry for series 'b'"):
        line_panel(ax, {"a": [0]}, {"b": [1]})
    with pytest.raises(ValueError, match="has shape \\(1,\\) but its x has shape \\(2,\\)"):
        line_panel(ax, [0, 1], {"a": [1]})


def test_scatter_panel_identity_line():
    _, ax = one_axes()
    scatter_panel(ax, [1.0, 2.0, np.inf], [0.5, 3.0, 1.0], identity=True, label="r_T vs r_0")
    (coll,) = ax.collections
    np.testing.assert_allclose(coll.get_offsets(), [[1.0, 0.5], [2.0, 3.0]])
    (ident,) = ax.get_lines()
    np.testing.assert_allclose(ident.get_xdata(), [0.5, 3.0])
    np.testing.assert_allclose(ident.get_ydata(), [0.5, 3.0])
    with pytest.raises(ValueError, match="same shape"):
        scatter_panel(ax, [1, 2], [1])


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    fig, ax = one_axes()
    sweep_panel(ax, [0.1, 1.0], {"a": [1.0, 2.0]})
    paths = save_figure(fig, tmp_path / "figs" / "panel.png")  # suffix is stripped
    assert [p.name for p in paths] == ["panel.png", "panel.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["panel.pdf", "panel.png"]
    first = paths[1].read_bytes()
    save_figure(fig, tmp_path / "figs" / "panel")
    assert paths[1].read_bytes() == first  # deterministic PDF (no creation date)


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    line_panel(ax, [0, 1], {"a": [0, 1]})
    n = len(plt.get_fignums())
    save_figure(fig, tmp_path / "p")
    assert len(plt.get_fignums()) == n - 1
