"""The shape every companion experiment shares: timed units, graded claims, one figure, a table.

A companion is a :class:`CompanionExperiment`: it lists its units (:meth:`specs`), runs one
(:meth:`~CompanionExperiment.run_unit`; the base records its wall time in ``seconds``), grades
its claims with a module-level function ``analyze_<name>(config, results)`` named by
:attr:`~CompanionExperiment.analysis` (so that the claims can be tested on hand-made results),
draws its figure (:meth:`~CompanionExperiment.draw`; the base adds the legends and saves
``<figure>.png``/``.pdf``, the stem :attr:`~CompanionExperiment.figure` derived from the
name) and tabulates one row per unit (:attr:`~CompanionExperiment.table`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dynstab_repro.base import Claim, Experiment, RunSpec
from dynstab_repro.companions.results import Record, Results, Table
from dynstab_repro.figures import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Column", "CompanionExperiment", "unit_rows"]

#: A table column: a record key (shown under its own name), or ``(header, key)``, or
#: ``(header, function of the record)``.
Column = str | tuple[str, str | Callable[[Record], object]]


def _cell(record: Record, source: str | Callable[[Record], object]) -> object:
    return source(record) if callable(source) else record.get(source)


def unit_rows(
    results: Results,
    columns: Sequence[Column],
    where: Callable[[Record], bool] | None = None,
) -> list[Record]:
    """One table row per unit (those passing ``where``), in key order: ``{"run": key, ...}``.

    A key the unit did not record gives None.

    Example:
        >>> res = {"b": {"x": 2, "lr": 0.5}, "a": {"x": 1, "y": 0, "lr": 1.0}}
        >>> unit_rows(res, ("x", "y", ("2/eta", lambda r: 2 / r["lr"])))
        [{'run': 'a', 'x': 1, 'y': 0, '2/eta': 2.0}, {'run': 'b', 'x': 2, 'y': None, '2/eta': 4.0}]
        >>> unit_rows(res, (("value", "x"),), where=lambda r: r["x"] > 1)
        [{'run': 'b', 'value': 2}]
    """
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    return [
        {"run": k, **{head: _cell(r, src) for head, src in cols}}
        for k, r in sorted(results.items())
        if where is None or where(r)
    ]


class CompanionExperiment(Experiment):
    """An :class:`~dynstab_repro.base.Experiment` with the companions' common behaviour.

    Class attributes to set besides the :class:`~dynstab_repro.base.Experiment` ones:
        analysis: The module function ``(config, results) -> list[Claim]`` that grades the
            claims (assigned as a plain function, called through the class).
        table: ``(title, columns)`` of the per-unit table (:func:`unit_rows`, :data:`Column`);
            no table when ``columns`` is empty.

    Subclasses implement :meth:`specs`, :meth:`run_unit` and :meth:`draw` (or override
    :meth:`plot` when they write several figures).
    """

    analysis: ClassVar[Callable[[Any, Results], list[Claim]]]
    table: ClassVar[tuple[str, tuple[Column, ...]]] = ("", ())

    @property
    def figure(self) -> str:
        """Stem of the figure files of :meth:`plot`: the name with ``_`` for ``/`` and ``-``.

        Example:
            >>> from dynstab_repro.registry import get_experiment
            >>> get_experiment("eos/gd-sweep").figure
            'eos_gd_sweep'
        """
        return self.name.replace("/", "_").replace("-", "_")

    def run_unit(self, config: Any, spec: RunSpec) -> Record:
        """Run one unit; return its JSON-able metrics (``seconds`` is added by :meth:`run_one`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_unit.")

    def run_one(self, config: Any, spec: RunSpec) -> Record:
        """:meth:`run_unit`, with the unit's wall time in ``seconds``."""
        t0 = time.perf_counter()
        out = self.run_unit(config, spec)
        out["seconds"] = time.perf_counter() - t0
        return out

    def analyze(self, config: Any, results: Results) -> list[Claim]:
        """The claims, graded by :attr:`analysis`."""
        return type(self).analysis(config, results)

    def draw(self, config: Any, results: Results) -> Figure:
        """The experiment's figure (legends are added by :meth:`plot`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement draw or plot.")

    def plot(self, config: Any, results: Results, fig_dir: Path) -> list[Path]:
        """:meth:`draw`, with a legend on every panel that has labelled artists and none yet."""
        fig = self.draw(config, results)
        for ax in fig.axes:
            if ax.get_legend() is None and ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7)
        return save_figure(fig, fig_dir, self.figure)

    def tables(self, config: Any, results: Results) -> list[Table]:
        """The per-unit table of :attr:`table` (none when it names no column)."""
        title, columns = self.table
        return [(title, unit_rows(results, columns))] if columns else []
