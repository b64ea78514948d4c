"""Executors: run units of work serially, in local processes, or on Ray; yield as completed.

* ``"serial"``: in the calling process, in order (debugging, tests, profiling).
* ``"local"`` (default): :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn``
  start method (safe with torch threads). ``max_workers`` defaults to ``os.cpu_count()``
  and never exceeds the number of units; each worker limits torch/OpenMP/MKL to
  ``max(1, cores // workers)`` threads so the processes do not oversubscribe the cores.
  As with any ``spawn`` pool, a script that calls the runner must guard its entry point
  with ``if __name__ == "__main__":`` (the ``dynstab`` command does).
* ``"ray"``: optional (``pip install 'dynstab[ray]'``). Connects to the cluster at
  ``ray_address`` (``--ray-address``) or ``$RAY_ADDRESS``; otherwise starts a local instance
  whose workers get the driver's ``sys.path`` (shut down again at the end). One CPU and one
  thread per task. On a cluster, dynstab (and any module defining the experiment) must be
  importable on every node.

Workers receive a picklable :class:`UnitTask` (experiment name, a ``"module:qualname"``
locator of its class, the config dict and the spec) and re-resolve the experiment by name in
the child: the locator's module is imported (built-in experiments register on import) and,
if the name is still unknown (e.g. an experiment registered only in a test), the class is
instantiated directly. Exceptions raised by ``run_one`` are caught in the worker and come back
as an outcome with ``status="error"`` and the traceback; a crashed worker process is reported
the same way. Nothing is retried.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from dynstab_repro.base import Experiment, RunSpec

__all__ = [
    "EXECUTORS",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "UnitOutcome",
    "UnitTask",
    "execute_unit",
    "make_executor",
]

EXECUTORS = ("local", "serial", "ray")


@dataclass(frozen=True)
class UnitTask:
    """A picklable unit of work: which experiment, its config (as a dict) and the spec.

    Attributes:
        experiment: Registry name of the experiment.
        locator: ``"module:qualname"`` of the experiment class (fallback resolution).
        config: The resolved config as a JSON-able dict.
        key: ``RunSpec.key``.
        params: ``RunSpec.params``.
    """

    experiment: str
    locator: str
    config: dict[str, Any]
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, experiment: Experiment, config: dict[str, Any], spec: RunSpec) -> UnitTask:
        """Task for ``spec`` of ``experiment`` with the config dict ``config``."""
        locator = f"{type(experiment).__module__}:{type(experiment).__qualname__}"
        return cls(experiment.name, locator, dict(config), spec.key, dict(spec.params))


@dataclass(frozen=True)
class UnitOutcome:
    """What came back from one unit.

    Attributes:
        experiment: Registry name of the experiment.
        key: ``RunSpec.key``.
        status: ``"ok"`` or ``"error"``.
        metrics: ``run_one``'s JSON-able metrics (``None`` on error).
        error: ``"ExceptionType: message"`` on error, else ``None``.
        traceback: Formatted traceback on error, else ``None``.
        runtime_s: Wall-clock seconds spent in the unit.
    """

    experiment: str
    key: str
    status: str
    metrics: dict[str, Any] | None
    error: str | None
    traceback: str | None
    runtime_s: float


def _resolve_in_worker(name: str, locator: str) -> Experiment:
    from dynstab_repro import registry

    exp = registry._lookup_loaded(name)
    if exp is not None:
        return exp
    module_name, _, qualname = locator.partition(":")
    module = importlib.import_module(module_name)  # built-ins register themselves on import
    exp = registry._lookup_loaded(name)
    if exp is not None:
        return exp
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    inst = obj()
    if not isinstance(inst, Experiment) or inst.name != name:
        raise ValueError(f"locator {locator!r} does not build the experiment {name!r}.")
    return inst


def execute_unit(task: UnitTask, threads: int | None = None) -> UnitOutcome:
    """Run one unit (in whatever process calls this); never raises for errors in ``run_one``.

    Args:
        task: The unit.
        threads: If given, ``torch.set_num_threads(threads)`` first.

    Returns:
        The :class:`UnitOutcome` (``status="error"`` with the traceback if anything raised).
    """
    from dynstab_repro.config import config_from_dict
    from dynstab_repro.io import to_jsonable

    start = time.perf_counter()
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        exp = _resolve_in_worker(task.experiment, task.locator)
        config: Any = config_from_dict(exp.config_cls, task.config)
        metrics = exp.run_one(config, RunSpec(task.key, dict(task.params)))
        if not isinstance(metrics, dict):
            raise TypeError(
                f"{task.experiment}.run_one must return a dict of metrics; "
                f"got {type(metrics).__name__}."
            )
        metrics = to_jsonable(metrics)
    except Exception as exc:
        return UnitOutcome(
            task.experiment,
            task.key,
            "error",
            None,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            time.perf_counter() - start,
        )
    return UnitOutcome(
        task.experiment, task.key, "ok", metrics, None, None, time.perf_counter() - start
    )


def _error_outcome(task: UnitTask, exc: BaseException, runtime: float = 0.0) -> UnitOutcome:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return UnitOutcome(
        task.experiment, task.key, "error", None, f"{type(exc).__name__}: {exc}", tb, runtime
    )


class SerialExecutor:
    """Run units one after the other in this process."""

    name = "serial"

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[UnitOutcome]:
        """Yield the outcome of each task, in order."""
        for task in tasks:
            yield execute_unit(task)


def _init_worker(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once parallel work started
        torch.set_num_interop_threads(1)


class LocalExecutor:
    """Run units in a pool of ``spawn``-ed local processes; yield outcomes as they complete.

    Args:
        max_workers: Number of processes. Default: ``os.cpu_count()``. Capped at the number
            of tasks.
        start_method: Multiprocessing start method. Default: ``"spawn"``.
    """

    name = "local"

    def __init__(self, max_workers: int | None = None, *, start_method: str = "spawn") -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive int or None; got {max_workers!r}.")
        self.max_workers = max_workers
        self.start_method = start_method

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[UnitOutcome]:
        """Yield outcomes in completion order."""
        import multiprocessing

        if not tasks:
            return
        cores = os.cpu_count() or 1
        workers = max(1, min(self.max_workers or cores, len(tasks)))
        threads = max(1, cores // workers)
        ctx = multiprocessing.get_context(self.start_method)
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
        )
        futures: dict[Future[UnitOutcome], UnitTask] = {}
        finished = False
        try:
            for task in tasks:
                futures[pool.submit(execute_unit, task)] = task
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = futures[fut]
                    exc = fut.exception()
                    yield fut.result() if exc is None else _error_outcome(task, exc)
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:  # interrupted (Ctrl-C) or the consumer stopped: do not wait for running units
                procs = dict(getattr(pool, "_processes", None) or {})
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs.values():
                    if proc.is_alive():
                        proc.terminate()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the 'ray' executor needs Ray, which is not installed; "
            "install it with: pip install 'dynstab[ray]' (or use --executor local)."
        ) from None
    return ray


class RayExecutor:
    """Run units as Ray tasks (one CPU each) on a cluster or a local Ray instance.

    Args:
        address: Cluster address; default ``$RAY_ADDRESS`` or, if unset, a new local instance.
    """

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[UnitOutcome]:
        """Yield outcomes in completion order."""
        ray = _import_ray()
        if not tasks:
            return
        started_here = False
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            # a local instance gets the driver's sys.path, so workers resolve the same modules
            runtime_env = (
                None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}
            )
            ray.init(address=address, runtime_env=runtime_env)
            started_here = True
        try:
            remote = ray.remote(num_cpus=1)(execute_unit)
            refs = {remote.remote(task, 1): task for task in tasks}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield ray.get(ref)
                    except Exception as exc:
                        yield _error_outcome(refs[ref], exc)
        finally:
            if started_here:
                ray.shutdown()


def make_executor(
    name: str, *, max_workers: int | None = None, ray_address: str | None = None
) -> SerialExecutor | LocalExecutor | RayExecutor:
    """Executor by name (``"local"``, ``"serial"`` or ``"ray"``).

    Raises:
        ValueError: For an unknown name.
        ImportError: For ``"ray"`` when Ray is not installed (says how to install it).
    """
    if name == "serial":
        return SerialExecutor()
    if name == "local":
        return LocalExecutor(max_workers)
    if name == "ray":
        _import_ray()
        return RayExecutor(ray_address)
    raise ValueError(f"unknown executor {name!r}; choose from {list(EXECUTORS)}.")
