"""File input/output for reproductions: atomic writes, JSON/CSV, hashes and provenance.

Every file a reproduction writes goes through :func:`atomic_write_bytes`: the content is
written to a temporary file in the destination directory, flushed, ``fsync``-ed and moved
into place with :func:`os.replace`, so a reader (or a resumed run) sees either the old file
or the complete new one, never a truncated file.

JSON is written with Python's :mod:`json` defaults for non-finite floats (``NaN``,
``Infinity``), because diverged runs legitimately produce them; :func:`read_json` reads
them back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dynstab.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    to_jsonable,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "config_hash",
    "environment_info",
    "flatten_scalars",
    "read_json",
    "safe_dirname",
    "to_jsonable",
]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def flatten_scalars(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to ``{"a.b": scalar}``, keeping only scalars (numbers, str, bool, None).

    Lists and other non-scalar values are dropped (they stay in the per-run JSON files).

    Example:
        >>> flatten_scalars({"a": 1, "b": {"c": 2.0, "d": [1, 2]}, "e": "x"})
        {'a': 1, 'b.c': 2.0, 'e': 'x'}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_scalars(v, prefix=f"{name}."))
        elif v is None or isinstance(v, bool | int | float | str):
            out[name] = v
    return out


def atomic_write_csv(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV atomically; the header is the union of keys in first-seen order."""
    rows = list(rows)
    header: list[str] = []
    for row in rows:
        for k in row:
            if k not in header:
                header.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in header})
    return atomic_write_text(path, buf.getvalue())


def config_hash(obj: Any) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``obj``.

    Example:
        >>> config_hash({"b": 1, "a": (2,)}) == config_hash({"a": [2], "b": 1})
        True
    """
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def safe_dirname(name: str) -> str:
    """Directory name of an experiment: ``/`` replaced by ``__``.

    Example:
        >>> safe_dirname("wu-su-2023/e1")
        'wu-su-2023__e1'
    """
    return name.replace("/", "__")
