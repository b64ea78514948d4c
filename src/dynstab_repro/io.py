"""File input/output for reproductions: atomic writes, JSON/CSV, hashes, run-directory upkeep.

Every file a reproduction writes goes through :func:`atomic_write_bytes`: the content is
written to a temporary file in the destination directory, flushed, ``fsync``-ed and moved
into place with :func:`os.replace`, so a reader (or a resumed run) sees either the old file
or the complete new one, never a truncated file.

Run-directory upkeep (used by :mod:`dynstab_repro.runner`): :class:`DirLock` (one writer per
output directory), :func:`quarantine` (corrupted files renamed ``<name>.corrupt-<UTC
timestamp>``), :func:`sweep_temporaries` (leftovers of a killed writer) and :func:`swap_in`
(replace a run directory by a staging directory, atomically where the platform allows).

JSON is written with Python's :mod:`json` defaults for non-finite floats (``NaN``,
``Infinity``), because diverged runs legitimately produce them; :func:`read_json` reads
them back.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dynstab.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    is_temporary_name,
    to_jsonable,
)

__all__ = [
    "CORRUPT_MARK",
    "RUN_DIR_ENTRIES",
    "DirLock",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "config_hash",
    "environment_info",
    "flatten_scalars",
    "quarantine",
    "read_json",
    "recover_interrupted_swap",
    "safe_dirname",
    "swap_in",
    "sweep_temporaries",
    "to_jsonable",
]

logger = logging.getLogger("dynstab_repro")

#: Entries a run directory may hold; anything else is foreign (left alone, with a warning).
RUN_DIR_ENTRIES = frozenset(
    {
        "config.json",
        "env.json",
        "metrics.json",
        "metrics.csv",
        "claims.json",
        "result.json",
        "report.md",
        "report.html",
        "runs",
        "figures",
        "tables",
    }
)

#: Infix of quarantined files: ``<name>.corrupt-<UTC timestamp>``.
CORRUPT_MARK = ".corrupt-"


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


class DirLock:
    """Exclusive advisory lock on a directory (``flock`` on its file descriptor; POSIX only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        try:
            import fcntl  # deferred: POSIX only (no lock on Windows)
        except ImportError:  # pragma: no cover
            return self
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(
                errno.EBUSY,
                "another dynstab process is writing to this output directory; wait for it to "
                "finish or choose another --out",
                str(self.directory),
            ) from None
        except OSError:  # a file system without locks: proceed unlocked
            os.close(fd)
            return self
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def quarantine(path: Path) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC timestamp>`` (unique); return the new path."""
    base = path.with_name(f"{path.name}{CORRUPT_MARK}{_utc_stamp()}")
    target, i = base, 1
    while target.exists():
        target = base.with_name(f"{base.name}-{i}")
        i += 1
    os.replace(path, target)
    return target


def sweep_temporaries(directory: Path) -> int:
    """Remove leftover temporary files of the atomic writer in ``directory`` and below."""
    removed = 0
    for sub in (directory, directory / "runs", directory / "figures", directory / "tables"):
        if not sub.is_dir():
            continue
        for entry in sub.iterdir():
            if entry.is_file() and is_temporary_name(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two directories (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _old_dir(run_dir: Path) -> Path:
    return run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")


def recover_interrupted_swap(run_dir: Path) -> None:
    """Finish or undo a two-rename swap that a killed process left half done."""
    for old in sorted(run_dir.parent.glob(f".{run_dir.name}.old-*")):
        if not old.is_dir():
            continue
        if run_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, run_dir)
            logger.warning("restored %s from an interrupted --force swap", run_dir)


def swap_in(staging: Path, run_dir: Path, unit_files: set[str]) -> list[str]:
    """Replace ``run_dir`` by ``staging``, carrying foreign entries of the old directory over.

    Foreign entries: unknown names at the top level, and files in ``runs/`` that are not in
    ``unit_files`` (the unit and error files of the experiment) or quarantined.
    """
    carried: list[str] = []
    moves: list[tuple[Path, Path]] = []
    if run_dir.is_dir():
        for entry in sorted(run_dir.iterdir()):
            if entry.name not in RUN_DIR_ENTRIES and CORRUPT_MARK not in entry.name:
                moves.append((entry, staging / entry.name))
        if (run_dir / "runs").is_dir():
            for entry in sorted((run_dir / "runs").iterdir()):
                if entry.name not in unit_files and CORRUPT_MARK not in entry.name:
                    moves.append((entry, staging / "runs" / entry.name))
    for src, dst in moves:
        if is_temporary_name(src.name) or dst.exists():
            continue
        os.replace(src, dst)
        carried.append(str(src.relative_to(run_dir)))
    if not run_dir.exists():
        os.replace(staging, run_dir)
        return carried
    if _exchange(staging, run_dir):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old results
        return carried
    old = _old_dir(run_dir)
    os.replace(run_dir, old)
    os.replace(staging, run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return carried
