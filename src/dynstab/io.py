"""Atomic file writes and JSON conversion, shared by every layer that writes results.

Every file dynstab writes goes through :func:`atomic_write_bytes`: the content is written to a
temporary file in the destination directory, flushed, ``fsync``-ed and moved into place with
:func:`os.replace`, so a reader (or a resumed run) sees either the old file or the complete new
one, never a truncated file. Library functions only write where a caller passes a path.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "environment_info",
    "to_jsonable",
]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``).

    Parent directories are created. Returns the destination path.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(d / "a" / "x.bin", b"abc").read_bytes()
        b'abc'
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert tuples, paths, NumPy/torch scalars and arrays to plain JSON types (recursively).

    Example:
        >>> to_jsonable({"a": (1, 2.5), "b": {"c": None}})
        {'a': [1, 2.5], 'b': {'c': None}}
    """
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    raise TypeError(
        f"value of type {type(obj).__name__} is not JSON-serialisable; got {obj!r}. "
        "Return plain numbers, strings, lists and dicts from run_one."
    )


def _strict(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, allow_nan: bool = True) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (after :func:`to_jsonable`).

    Args:
        path: Destination file.
        obj: Anything :func:`to_jsonable` accepts.
        allow_nan: If True (default), non-finite floats are written as Python's ``NaN`` /
            ``Infinity`` tokens (read back by :mod:`json`); if False the file is strict JSON and
            they become the strings ``"nan"``, ``"inf"``, ``"-inf"``.

    Returns:
        The destination path.
    """
    data = to_jsonable(obj)
    if not allow_nan:
        data = _strict(data)
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n"
    return atomic_write_text(path, text)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


def environment_info() -> dict[str, Any]:
    """Provenance of a run: versions, thread counts, devices and git commit (no hostname).

    Returns:
        A JSON-able dict with keys ``python``, ``platform``, ``dynstab``, ``torch``, ``numpy``,
        ``scipy``, ``matplotlib``, ``torch_threads``, ``torch_interop_threads``, ``cpu_count``,
        ``thread_env`` (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` if set), ``cuda_available``,
        ``devices`` and ``git_commit`` (``None`` outside a git checkout).
    """
    import numpy
    import torch

    from dynstab._version import __version__

    def _version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = ["cpu"]
    cuda = bool(torch.cuda.is_available())
    if cuda:
        devices += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "dynstab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": _version("scipy"),
        "matplotlib": _version("matplotlib"),
        "ray": _version("ray"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "thread_env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
        },
        "cuda_available": cuda,
        "devices": devices,
        "git_commit": _git_commit(),
    }
