"""Training history: named scalar measurements indexed by step, with JSON/CSV export.

Different measurements may be recorded at different steps (the loss every step, λ_max every
20 steps, ...). :meth:`History.as_arrays` returns one series; :meth:`History.to_csv` writes a
wide table with one row per step and empty cells where a measurement was not taken.

JSON encoding: non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (so the file is strict JSON) and read back as floats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dynstab.io import atomic_write_text

__all__ = ["History", "atomic_write_text"]

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(v: float) -> float | str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _decode(v: float | str | int) -> float:
    if isinstance(v, str):
        if v not in _NONFINITE:
            raise ValueError(
                f"History JSON values must be numbers or {sorted(_NONFINITE)}; got {v!r}."
            )
        return _NONFINITE[v]
    return float(v)


class History:
    """Per-step records of named scalars.

    Args:
        metadata: Optional JSON-able dict stored alongside the records (e.g. lr, seed).

    Example:
        >>> h = History()
        >>> h.append(0, loss=1.0, lr=0.1)
        >>> h.append(10, loss=0.5)
        >>> h.as_arrays("loss")[1].tolist()
        [1.0, 0.5]
        >>> History.from_json(h.to_json()) == h
        True
    """

    def __init__(self, metadata: Mapping[str, Any] | None = None) -> None:
        self._records: dict[int, dict[str, float]] = {}
        self.metadata: dict[str, Any] = dict(metadata or {})

    def append(self, step: int, **values: float) -> None:
        """Record named scalars at ``step`` (use :meth:`update` for non-identifier names)."""
        self.update(step, values)

    def update(self, step: int, values: Mapping[str, float]) -> None:
        """Record the scalars in ``values`` at ``step``.

        Args:
            step: Non-negative step index.
            values: Mapping name -> number (Python, NumPy or 0-dim tensor). None is skipped.

        Raises:
            ValueError: If ``step`` is negative or a name is already recorded at ``step``.
            TypeError: If ``step`` is not an int or a value is not a real scalar.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an int; got {step!r} ({type(step).__name__}).")
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}.")
        row = self._records.setdefault(step, {})
        for name, value in values.items():
            if value is None:
                continue
            if name in row:
                raise ValueError(
                    f"History already holds {name!r} at step {step}; got a second value. "
                    "Give the monitors distinct names (or prefixes)."
                )
            try:
                row[name] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    "History values must be real scalars; got "
                    f"{name}={value!r} ({type(value).__name__})."
                ) from None

    @property
    def names(self) -> list[str]:
        """All recorded names, in order of first appearance."""
        seen: dict[str, None] = {}
        for row in self._records.values():
            for k in row:
                seen.setdefault(k, None)
        return list(seen)

    @property
    def steps(self) -> list[int]:
        """All steps that hold at least one record, sorted."""
        return sorted(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: object) -> bool:
        return any(name in row for row in self._records.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History(steps={len(self)}, names={self.names})"

    def at(self, step: int) -> dict[str, float]:
        """Return a copy of the record at ``step`` (empty dict if none)."""
        return dict(self._records.get(step, {}))

    def last(self, name: str) -> float:
        """Return the most recent value of ``name``.

        Raises:
            KeyError: If ``name`` was never recorded.
        """
        return float(self.as_arrays(name)[1][-1])

    def as_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(steps, values)`` of one measurement, sorted by step.

        Args:
            name: A recorded name.

        Returns:
            ``steps`` (int64, shape (m,)) and ``values`` (float64, shape (m,)).

        Raises:
            KeyError: If ``name`` was never recorded (the message lists the recorded names).
        """
        pairs = [(s, row[name]) for s, row in sorted(self._records.items()) if name in row]
        if not pairs:
            raise KeyError(f"no measurement named {name!r}; recorded names are {self.names}.")
        steps = np.array([p[0] for p in pairs], dtype=np.int64)
        values = np.array([p[1] for p in pairs], dtype=np.float64)
        return steps, values

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict ``{"metadata": ..., "records": [{"step": s, name: v, ...}]}``."""
        records = []
        for s in sorted(self._records):
            rec: dict[str, Any] = {"step": s}
            rec.update({k: _encode(v) for k, v in self._records[s].items()})
            records.append(rec)
        return {"metadata": dict(self.metadata), "records": records}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a History from :meth:`to_dict` output.

        Raises:
            ValueError: If ``data`` lacks ``"records"`` or a record lacks ``"step"``.
        """
        if "records" not in data:
            raise ValueError(f"History data needs a 'records' list; got keys {sorted(data)}.")
        h = cls(metadata=data.get("metadata") or {})
        for rec in data["records"]:
            if "step" not in rec:
                raise ValueError(f"every History record needs a 'step'; got {rec!r}.")
            h.update(int(rec["step"]), {k: _decode(v) for k, v in rec.items() if k != "step"})
        return h

    def to_json(self, indent: int | None = None) -> str:
        """Serialise to strict JSON (non-finite values as strings, see the module docstring)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> History:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def to_csv(self) -> str:
        """Return a wide CSV table: ``step``, then one column per name; blanks where absent."""
        names = self.names
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["step", *names])
        for s in sorted(self._records):
            row = self._records[s]
            writer.writerow([s, *(repr(row[k]) if k in row else "" for k in names)])
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the history atomically: CSV if ``path`` ends in ``.csv``, JSON otherwise.

        Args:
            path: Destination file; parent folders are created.

        Returns:
            The written path.
        """
        p = Path(path)
        text = self.to_csv() if p.suffix.lower() == ".csv" else self.to_json(indent=1)
        return atomic_write_text(p, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a history written by :meth:`save` in JSON form."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
