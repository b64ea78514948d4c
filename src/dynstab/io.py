"""Atomic file writes, JSON conversion and provenance, shared by every layer that writes results.

Every file dynstab writes goes through :func:`atomic_write_bytes`: the content is written to a
temporary file in the destination directory, flushed, ``fsync``-ed and moved into place with
:func:`os.replace`, so a reader (or a resumed run) sees either the old file or the complete new
one, never a truncated file. Files are created with mode ``0o666`` minus the process umask, as
:func:`open` would (a :func:`tempfile.mkstemp` file would be ``0o600`` whatever the umask).
The temporary file is removed on every exit path that runs Python code (exceptions,
``KeyboardInterrupt``); after a ``SIGKILL`` it stays behind as ``.<name>.<random>.tmp``, which
:func:`is_temporary_name` recognises so that callers can sweep it. Library functions only write
where a caller passes a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynstab._version import __version__

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "code_version",
    "environment_info",
    "is_temporary_name",
    "to_jsonable",
]

_TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of :func:`atomic_write_bytes`.

    Example:
        >>> is_temporary_name(".x.json.0123456789abcdef.tmp"), is_temporary_name("x.json")
        (True, False)
    """
    return bool(_TMP_RE.match(name))


def _create_temporary(dest: Path) -> tuple[int, str]:
    """Create a new temporary file beside ``dest`` (mode 0o666 & ~umask); return (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = str(dest.parent / f".{dest.name}.{secrets.token_hex(8)}{_TMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort; not every platform supports it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``fsync`` + ``os.replace``).

    Parent directories are created. The file gets mode ``0o666`` minus the umask. An
    :class:`OSError` raised while writing (a full disk, a read-only file system, a permission
    problem) carries the destination path as its ``filename``; the temporary file is removed
    and an existing destination is left untouched.

    Args:
        path: Destination file.
        data: The complete new content.

    Returns:
        The destination path.

    Raises:
        OSError: When the directory cannot be created or the file cannot be written.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(d / "a" / "x.bin", b"abc").read_bytes()
        b'abc'
    """
    dest = Path(path)
    tmp: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(dest)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        tmp = None
    except OSError as exc:
        if exc.filename is None:  # e.g. ENOSPC from write(): say which file it was
            raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from exc
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_directory(dest.parent)
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


def _git(*args: str) -> subprocess.CompletedProcess[bytes] | None:
    """Run ``git args`` in the directory of this package; ``None`` if git is unusable."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc if proc.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The version of the code that is running: package version and git state of its checkout.

    ``dirty`` follows ``git describe --dirty``: tracked files differ from the commit (untracked
    files do not count). ``diff`` is a digest of ``git diff HEAD`` (the uncommitted changes of
    tracked files), so two dirty trees with different edits get different versions. Outside a
    git checkout (an installed wheel) ``commit``, ``dirty`` and ``diff`` are ``None`` and the
    package version alone identifies the code.

    Returns:
        ``{"dynstab": version, "commit": 40-hex or None, "dirty": bool or None,
        "diff": 16-hex digest (dirty trees only) or None}``.

    Example:
        >>> sorted(code_version())
        ['commit', 'diff', 'dirty', 'dynstab']
    """
    out: dict[str, Any] = {"dynstab": __version__, "commit": None, "dirty": None, "diff": None}
    head = _git("rev-parse", "HEAD")
    commit = head.stdout.decode("ascii", "replace").strip() if head is not None else ""
    if not commit:
        return out
    out["commit"] = commit
    diff = _git("diff", "HEAD", "--no-ext-diff", "--no-color", "--binary")
    if diff is not None:
        out["dirty"] = bool(diff.stdout)
        if diff.stdout:
            out["diff"] = hashlib.sha256(diff.stdout).hexdigest()[:16]
    return out


def environment_info() -> dict[str, Any]:
    """Provenance of a run: versions, thread counts, devices and git commit (no hostname).

    Returns:
        A JSON-able dict with keys ``python``, ``platform``, ``dynstab``, ``torch``, ``numpy``,
        ``scipy``, ``matplotlib``, ``torch_threads``, ``torch_interop_threads``, ``cpu_count``,
        ``thread_env`` (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` if set), ``cuda_available``,
        ``devices``, ``git_commit`` (``None`` outside a git checkout) and ``git_dirty``
        (tracked files changed; see :func:`code_version`).
    """
    # deferred: numpy/torch are heavy and only needed for this report
    import numpy
    import torch

    def _version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    code = code_version()
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
        "git_commit": code["commit"],
        "git_dirty": code["dirty"],
    }
