"""What every ``dynstab`` command shares: the spec loader, checkpoints, devices, dtypes, errors.

* :func:`load_spec` loads ``--spec``: ``package.module:function`` (imported with the working
  directory on ``sys.path``, like ``python -m``) or ``path/to/file.py:function`` (the file's
  directory goes on ``sys.path`` so that it can import its neighbours). The function is called
  without arguments and must return ``(model, loss_fn, data)`` with ``data`` an ``(X, y)``
  pair or an iterable of such pairs.
* :func:`load_checkpoint` loads ``--checkpoint`` with ``torch.load(weights_only=True)`` (never
  an arbitrary pickle) and understands a plain ``state_dict``, a dict with a ``state_dict``,
  ``model_state_dict`` or ``model`` entry holding one, and the ``module.`` / ``_orig_mod.``
  key prefixes of ``DataParallel`` and ``torch.compile``.
* :func:`place` moves a model and its data to ``--device`` / ``--dtype``.
* :func:`load_model_source` does all three for the commands that take a ``--spec`` model.
* :func:`parse_size` reads a memory size (``--max-memory 8GB``).
* :class:`CommandError` (exit status 2) and :class:`EnvironmentProblem` (exit status 3) carry
  a one-line cause and fix; :func:`describe_os_error` turns an :class:`OSError` into one, and
  :func:`exit_status` maps every exception to a status (a
  :class:`~dynstab.errors.MemoryBudgetError` to 3, with the budget it needs).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dynstab.criteria.resources import format_bytes
from dynstab.errors import MemoryBudgetError

__all__ = [
    "DTYPES",
    "CommandError",
    "EnvironmentProblem",
    "SpecResult",
    "add_placement_options",
    "describe_memory_error",
    "describe_os_error",
    "exit_status",
    "load_checkpoint",
    "load_model_source",
    "load_spec",
    "parse_device",
    "parse_size",
    "place",
]

#: ``--dtype`` choices.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

SpecResult = tuple[nn.Module, Callable[..., Tensor], Any]

_PREFIXES = ("module.", "_orig_mod.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


class CommandError(ValueError):
    """Bad input to a command (exit status 2); the message says what to do."""


class EnvironmentProblem(RuntimeError):
    """The environment cannot do what was asked (exit status 3), e.g. no CUDA device."""


def describe_os_error(exc: OSError) -> str:
    """One line naming the cause of a file-system error and the fix.

    Example:
        >>> describe_os_error(OSError(errno.EROFS, "Read-only file system", "out/a.json"))
        'read-only file system: out/a.json; choose a writable output directory (--out DIR)'
    """
    where = f" {exc.filename}" if exc.filename else ""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (
            f"no space left on device while writing{where}; free space (or use another "
            "--out), then rerun the same command to resume"
        )
    if code == errno.EROFS:
        return f"read-only file system:{where}; choose a writable output directory (--out DIR)"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied:{where}; choose a directory you can write (--out DIR) or fix "
            "its permissions"
        )
    if code == errno.EBUSY:
        return f"{exc.strerror}:{where}"
    if code == errno.ENOENT:
        return f"no such file or directory:{where}; check the path"
    return f"{exc.strerror or exc}{':' + where if where else ''}; check the path and the disk"


def describe_memory_error(exc: MemoryBudgetError) -> str:
    """One line naming the allocation that exceeded the memory budget and the fix.

    The fix names the ``--max-memory`` size that would hold the allocation, the sampled route,
    a smaller problem, and the other exact routes with their cost when the library listed them
    (its other alternatives are Python-API advice and are left out here).

    Example:
        >>> exc = MemoryBudgetError("...", what="the Gram matrix K of shape (90000, 90000)",
        ...                         required_bytes=64_800_000_000, budget_bytes=8_000_000_000,
        ...                         alternatives=("route='parameter' needs 2 GB",))
        >>> print(describe_memory_error(exc))  # doctest: +NORMALIZE_WHITESPACE
        memory budget exceeded: the Gram matrix K of shape (90000, 90000) needs about 64.8 GB,
        above the budget of 8 GB; nothing was allocated. Fix: --max-memory 65GB if the machine
        has that much free, --method sampled (any n, a model spec), or a smaller problem (fewer
        samples or parameters); other exact routes: route='parameter' needs 2 GB
    """
    if not exc.what or exc.required_bytes <= 0:
        return f"memory budget exceeded: {exc}"
    need = exc.required_bytes
    unit, size = ("GB", 1e9) if need >= 1e9 else ("MB", 1e6)
    fix = (
        f"--max-memory {math.ceil(need / size)}{unit} if the machine has that much free, "
        "--method sampled (any n, a model spec), or a smaller problem (fewer samples or "
        "parameters)"
    )
    # the route alternatives of dynstab.criteria.routes: "route='gram' needs …", "… for the
    # parameter route"
    routes = [a for a in exc.alternatives if a.startswith("route=") or a.endswith(" route")]
    if routes:
        fix += "; other exact routes: " + "; ".join(routes)
    return (
        f"memory budget exceeded: {exc.what} needs about {format_bytes(need)}, above the budget "
        f"of {format_bytes(exc.budget_bytes)}; nothing was allocated. Fix: {fix}"
    )


_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")
_SIZE_UNITS: dict[str, float] = {
    "": 1.0, "b": 1.0,
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
    "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30, "tib": 2.0**40,
}  # fmt: skip


def parse_size(text: str) -> float:
    """Parse a memory size for ``--max-memory``: bytes, with an optional unit, or ``inf``.

    Decimal units ``kB``/``MB``/``GB``/``TB`` (also ``K``/``M``/``G``/``T``) are powers of 1000,
    binary ``KiB``/``MiB``/``GiB``/``TiB`` powers of 1024 (case-insensitive); ``inf`` (or
    ``unlimited``) disables the check. An ``argparse`` ``type=``: a bad value is a usage error
    (exit status 2) before any work.

    Args:
        text: E.g. ``"8GB"``, ``"512MiB"``, ``"2e9"``, ``"inf"``.

    Returns:
        The size in bytes, > 0 (``math.inf`` for no limit).

    Raises:
        argparse.ArgumentTypeError: If the text is not a positive size with a known unit.

    Example:
        >>> parse_size("8GB"), parse_size("1.5 GiB"), parse_size("2e6"), parse_size("inf")
        (8000000000.0, 1610612736.0, 2000000.0, inf)
    """
    if text.strip().lower() in ("inf", "unlimited"):
        return math.inf
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a memory size such as 8GB, 512MiB, 2e9 (bytes) or inf; got {text!r}"
        )
    size = float(match.group(1)) * _SIZE_UNITS[unit]
    if not size > 0:
        raise argparse.ArgumentTypeError(f"the memory size must be > 0; got {text!r}")
    return size


#: Exit statuses of every ``dynstab`` command.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERNAL = 0, 1, 2, 3, 4


def exit_status(command: str, exc: BaseException, *, debug: bool = False) -> int:
    """Print the one-line cause of ``exc`` for ``dynstab COMMAND`` and return the exit status.

    ``KeyboardInterrupt`` → its ``exit_code`` (130 for ``SIGINT``, 143 for ``SIGTERM``);
    :class:`EnvironmentProblem`, :class:`OSError`, :class:`ImportError` (a missing optional
    dependency) and :class:`~dynstab.errors.MemoryBudgetError` (the machine's memory budget is
    too small for the problem; :func:`describe_memory_error`) → 3; :class:`ValueError` and
    :class:`TypeError` (bad input) → 2; anything else is a bug → 4. With ``debug`` the
    traceback is printed first.
    """
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        code = int(getattr(exc, "exit_code", 130))
        print(f"dynstab {command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return code
    if isinstance(exc, MemoryBudgetError):  # before ValueError, of which it is a subclass
        code, text = EXIT_ENVIRONMENT, describe_memory_error(exc)
    elif isinstance(exc, EnvironmentProblem | ImportError):
        code, text = EXIT_ENVIRONMENT, str(exc)
    elif isinstance(exc, OSError):
        code, text = EXIT_ENVIRONMENT, describe_os_error(exc)
    elif isinstance(exc, ValueError | TypeError):
        code, text = EXIT_USAGE, str(exc)
    else:
        code = EXIT_INTERNAL
        text = (
            f"internal error {type(exc).__name__}: {exc} (a bug: rerun with dynstab --debug "
            "for the traceback and report it)"
        )
    print(f"dynstab {command}: error: {' '.join(text.split())}", file=sys.stderr)
    return code


def _import_file(path: Path) -> Any:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_dynstab_spec_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"--spec: cannot load {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise CommandError(
            f"--spec: importing {str(path)!r} raised {type(exc).__name__}: {exc} "
            "(dynstab --debug shows the traceback)."
        ) from exc
    return module


def _import_module(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:  # console scripts do not put the working directory on the path
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CommandError(
            f"--spec: cannot import module {name!r} ({exc}); give an importable "
            "'package.module:function' or a 'path/to/file.py:function'."
        ) from exc
    except Exception as exc:
        raise CommandError(
            f"--spec: importing {name!r} raised {type(exc).__name__}: {exc} "
            "(dynstab --debug shows the traceback)."
        ) from exc


def load_spec(spec: str) -> SpecResult:
    """Load ``module:function`` or ``path/to/file.py:function`` and call the function.

    Args:
        spec: ``"package.module:function"`` or ``"path/to/file.py:function"``.

    Returns:
        ``(model, loss_fn, data)`` as returned by the function.

    Raises:
        CommandError: On a malformed spec, a module or file that cannot be imported, a missing
            function, an exception inside it, or a result of the wrong shape.
    """
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name.isidentifier():
        raise CommandError(
            "--spec must look like 'package.module:function' or 'path/to/file.py:function'; "
            f"got {spec!r}."
        )
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file:
        path = Path(target)
        if not path.is_file():
            raise CommandError(f"--spec: no such file {target!r}.")
        module = _import_file(path)
    else:
        module = _import_module(target)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise CommandError(f"--spec: {target!r} has no callable {func_name!r}.")
    try:
        result = fn()
    except Exception as exc:
        raise CommandError(
            f"--spec: {spec}() raised {type(exc).__name__}: {exc} "
            "(dynstab --debug shows the traceback)."
        ) from exc
    if not (
        isinstance(result, tuple)
        and len(result) == 3
        and isinstance(result[0], nn.Module)
        and callable(result[1])
    ):
        raise CommandError(
            f"--spec: {spec}() must return (model: nn.Module, loss_fn, (X, y)); got "
            f"{type(result).__name__}."
        )
    return result


def _strip_prefix(state: Mapping[str, Any], model_keys: set[str]) -> Mapping[str, Any]:
    for prefix in _PREFIXES:
        if (
            state
            and all(k.startswith(prefix) for k in state)
            and not any(k.startswith(prefix) for k in model_keys)
        ):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a checkpoint into ``model`` (``torch.load(weights_only=True)``, on the CPU first).

    Accepted layouts: a ``state_dict``; a dict with a ``"state_dict"``, ``"model_state_dict"``
    or ``"model"`` entry that is a ``state_dict`` (training checkpoints); keys prefixed with
    ``module.`` (``DataParallel``) or ``_orig_mod.`` (``torch.compile``).

    Args:
        model: The model to load into (strictly: every key must match).
        path: The checkpoint file.

    Returns:
        The layout found, e.g. ``"state_dict"`` or ``"dict['model']"``.

    Raises:
        CommandError: If the file is missing, cannot be loaded with ``weights_only=True``
            (e.g. a pickled model object), holds no ``state_dict``, or does not match the model.
    """
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--checkpoint: no such file {str(path)!r}.")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(
            f"--checkpoint: {str(path)!r} cannot be loaded with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {first[:200]}). Save the weights with "
            "torch.save(model.state_dict(), path); arbitrary pickles are never loaded."
        ) from None
    layout = "state_dict"
    state: Any = obj
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                state, layout = obj[key], f"dict[{key!r}]"
                break
        else:
            keys = sorted(str(k) for k in obj)[:8]
            raise CommandError(
                f"--checkpoint: {str(path)!r} holds a dict with keys {keys} but no state_dict; "
                "expected a state_dict, or a dict with a 'state_dict', 'model_state_dict' or "
                "'model' entry."
            )
    if not isinstance(state, Mapping):
        raise CommandError(
            f"--checkpoint: {str(path)!r} holds a {type(state).__name__}, not a state_dict; "
            "save it with torch.save(model.state_dict(), path)."
        )
    state = _strip_prefix(state, set(model.state_dict()))
    try:
        model.load_state_dict(dict(state))
    except (RuntimeError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CommandError(
            f"--checkpoint: {str(path)!r} does not match the model ({detail})."
        ) from None
    return layout


def parse_device(text: str) -> torch.device:
    """Parse ``--device`` and check that the device exists here.

    Raises:
        CommandError: For an unknown device string.
        EnvironmentProblem: For a device type this machine or torch build does not have.
    """
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CommandError(
            f"--device: unknown device {text!r}; use cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentProblem(
                f"--device {text}: CUDA is not available here (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); use --device cpu or a CUDA build of torch."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EnvironmentProblem(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "pick an index below that."
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EnvironmentProblem(
                f"--device {text}: MPS is not available here; use --device cpu."
            )
    elif device.type != "cpu":
        raise CommandError(f"--device: unsupported device type {text!r}; use cpu, cuda or mps.")
    return device


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` and ``--dtype`` to ``parser``."""
    parser.add_argument(
        "--device", default="cpu", help="device to compute on: cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="convert the model and floating data to this dtype (default: as built)",
    )


def load_model_source(
    args: argparse.Namespace, builtin: tuple[SpecResult, dict[str, Any]] | None = None
) -> tuple[nn.Module, Callable[..., Tensor], Any, dict[str, Any]]:
    """The command's model: ``--spec`` (or ``builtin``), ``--checkpoint``, ``--device``/``--dtype``.

    Args:
        args: Parsed arguments with ``spec``, ``checkpoint``, ``device`` and ``dtype``.
        builtin: A problem built by the command itself (e.g. ``--toy``) and its provenance, used
            instead of loading ``args.spec``.

    Returns:
        ``(model, loss_fn, data, source)``: the placed model and data; ``source`` records the
        spec (or the builtin's provenance), the checkpoint and its layout, the device and the
        dtype, for JSON output.

    Raises:
        CommandError: As :func:`load_spec`, :func:`load_checkpoint` and :func:`parse_device`.
        EnvironmentProblem: For a device this machine does not have.
    """
    device = parse_device(args.device)
    if builtin is None:
        (model, loss_fn, data), source = load_spec(args.spec), {"spec": args.spec}
    else:
        (model, loss_fn, data), source = builtin
    if args.checkpoint:
        source["checkpoint"] = str(args.checkpoint)
        source["checkpoint_layout"] = load_checkpoint(model, args.checkpoint)
    model, data = place(model, data, device, DTYPES.get(args.dtype or ""))
    source.update({"device": str(device), "dtype": args.dtype})
    return model, loss_fn, data, source


class _Placed:
    """A re-iterable view of batches moved to a device/dtype as they are drawn."""

    def __init__(self, data: Iterable[Any], move: Callable[[Any], Any]) -> None:
        self._data = data
        self._move = move

    def __iter__(self) -> Iterator[Any]:
        for batch in self._data:
            yield self._move(batch)


def place(
    model: nn.Module, data: Any, device: torch.device, dtype: torch.dtype | None
) -> tuple[nn.Module, Any]:
    """Move ``model`` and ``data`` to ``device`` (and floating tensors to ``dtype``).

    ``data`` is ``(X, y)`` or an iterable of such pairs (a DataLoader is wrapped and its
    batches moved as they are drawn). Integer tensors (class labels) keep their dtype.
    """

    def tensor(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device=device)

    def batch(b: Any) -> Any:
        if isinstance(b, tuple | list):
            return type(b)(tensor(t) for t in b)
        return tensor(b)

    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        return model, batch(data)
    return model, _Placed(data, batch)
