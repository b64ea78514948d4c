"""Executors: run units serially, in local processes, or on Ray; yield outcomes as completed.

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

**Process hygiene** (local executor). The runner owns its workers:

* workers ignore ``SIGINT`` (a Ctrl-C in the terminal reaches the whole process group; the
  runner alone decides what to do with it);
* when the runner stops early (an exception, ``SIGINT`` or ``SIGTERM`` turned into
  :class:`Interrupted` by :class:`SignalGuard`, or the consumer closing the generator), pending
  units are cancelled and the running workers are terminated (``SIGTERM``, then ``SIGKILL``
  after a grace period) and reaped; outcomes that finished but were not consumed yet are
  returned by :meth:`LocalExecutor.drain`, so that they can still be saved;
* a worker never outlives the runner, even when the runner is killed with ``SIGKILL``: on
  Linux each worker asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)`` through :mod:`ctypes`), and on every platform a daemon thread
  in each worker exits the process within half a second of the parent's death (its parent
  process id changes). multiprocessing's resource tracker then sees its last client go and
  exits by itself.

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
import ctypes
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from dynstab_repro.base import Experiment, RunSpec

__all__ = [
    "EXECUTORS",
    "Interrupted",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "SignalGuard",
    "UnitOutcome",
    "UnitTask",
    "execute_unit",
    "make_executor",
]

EXECUTORS = ("local", "serial", "ray")

#: Seconds a terminated worker gets to exit before it is killed.
TERMINATE_GRACE_S = 5.0


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (``SIGINT`` or ``SIGTERM``).

    A subclass of :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it too.

    Attributes:
        signum: The signal number.
        exit_code: ``128 + signum``: 130 for ``SIGINT``, 143 for ``SIGTERM``.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name if self.signum in _SIGNAL_NUMBERS else "signal"
        super().__init__(message or f"interrupted by {name}")


_SIGNAL_NUMBERS = {int(s) for s in signal.Signals}


class SignalGuard:
    """Turn ``SIGINT``/``SIGTERM`` into :class:`Interrupted` while the guard is active.

    Handlers are installed only in the main thread (Python delivers signals there) and the
    previous handlers are restored on exit. The first signal raises; later ones are ignored
    while the run cleans up (bounded: workers get :data:`TERMINATE_GRACE_S` seconds). Inside
    :meth:`deferred` a signal is held back and raised when the block ends, so that a finished
    unit is recorded completely or not at all.

    Example:
        >>> with SignalGuard() as guard, guard.deferred():
        ...     pass
    """

    SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    _active: SignalGuard | None = None

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._defer = 0
        self._pending: int | None = None
        self._fired = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._fired:
            return
        if self._defer:
            self._pending = signum
            return
        self._fired = True
        raise Interrupted(signum)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
            SignalGuard._active = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        if SignalGuard._active is self:
            SignalGuard._active = None

    @classmethod
    def safe_point(cls) -> contextlib.AbstractContextManager[None]:
        """Hold signals back inside library code that must not be interrupted mid-way.

        A signal turned into an exception at an arbitrary bytecode inside ``threading`` or
        :mod:`concurrent.futures` can leave one of their locks held: the pool's manager thread
        then blocks forever and the interpreter hangs at exit. Blocking waits on the pool
        therefore run inside this block (with a timeout) and the signal is raised after it.
        Without an active guard it does nothing.
        """
        guard = cls._active
        return guard.deferred() if guard is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals back during the block; raise :class:`Interrupted` after it if one came."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if not self._defer and self._pending is not None and not self._fired:
            signum, self._pending = self._pending, None
            self._fired = True
            raise Interrupted(signum)


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
        started_at: Unix time at which the unit started (``None`` if it never started).
    """

    experiment: str
    key: str
    status: str
    metrics: dict[str, Any] | None
    error: str | None
    traceback: str | None
    runtime_s: float
    started_at: float | None = None


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

    started_at = time.time()
    start = time.perf_counter()
    try:
        if threads is not None:
            import torch  # deferred: only Ray tasks pass threads, and torch is heavy

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
            started_at,
        )
    return UnitOutcome(
        task.experiment,
        task.key,
        "ok",
        metrics,
        None,
        None,
        time.perf_counter() - start,
        started_at,
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

    def drain(self) -> list[UnitOutcome]:
        """Outcomes finished but not yielded: none (units run in the consumer's process)."""
        return []


# --------------------------------------------------------------------------- local workers

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.25  # longest delay between a signal and the runner acting on it


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when ``parent_pid`` (the runner) dies, however it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="dynstab-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner handles Ctrl-C, not each worker
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch  # deferred: the parent never needs torch for this

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once parallel work started
        torch.set_num_interop_threads(1)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block ``SIGINT`` in this thread while child processes are started.

    A child inherits the signal mask across ``fork`` and ``exec``: a worker still importing
    (before :func:`_init_worker` ignores ``SIGINT``) would otherwise die of a Ctrl-C sent to the
    process group with a ``KeyboardInterrupt`` traceback. A ``SIGINT`` that reaches the runner
    meanwhile stays pending and is delivered when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows
        yield
        return
    # multiprocessing's resource tracker, started on first use (the pool's queues), ends its
    # start-up with ``SIG_UNBLOCK`` of SIGINT/SIGTERM in the calling thread, which would undo
    # the block for every worker spawned after it: start it before blocking.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop_processes(procs: Sequence[Any], grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate (``SIGTERM``), wait up to ``grace_s``, then kill and reap ``procs``."""
    for proc in procs:
        with contextlib.suppress(Exception):
            if proc.is_alive():
                proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(Exception):
            if proc.is_alive():
                proc.kill()
            proc.join(1.0)


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
        self._futures: dict[Future[UnitOutcome], UnitTask] = {}
        self._delivered: set[Future[UnitOutcome]] = set()

    def threads_per_worker(self, n_tasks: int) -> tuple[int, int]:
        """``(workers, threads per worker)`` used for ``n_tasks`` tasks."""
        cores = os.cpu_count() or 1
        workers = max(1, min(self.max_workers or cores, max(n_tasks, 1)))
        return workers, max(1, cores // workers)

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[UnitOutcome]:
        """Yield outcomes in completion order; stop and reap the workers on any early exit."""
        import multiprocessing

        if not tasks:
            return
        workers, threads = self.threads_per_worker(len(tasks))
        ctx = multiprocessing.get_context(self.start_method)
        self._futures = {}
        self._delivered = set()
        finished = False
        with _sigint_blocked():  # the pool spawns its workers (and resource tracker) here
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(threads, os.getpid()),
            )
            for task in tasks:
                self._futures[pool.submit(execute_unit, task)] = task
        try:
            pending = set(self._futures)
            while pending:
                with SignalGuard.safe_point():  # SIGINT/SIGTERM raise after the wait, not inside
                    done, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._delivered.add(fut)
                    yield self._outcome(fut)
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:  # interrupted, failed, or the consumer stopped: do not wait for running units
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_processes(procs)

    def _outcome(self, fut: Future[UnitOutcome]) -> UnitOutcome:
        task = self._futures[fut]
        exc = fut.exception()
        return fut.result() if exc is None else _error_outcome(task, exc)

    def drain(self) -> list[UnitOutcome]:
        """Outcomes of units that finished successfully but were not yielded yet.

        Call after the run stopped early, to save what was already computed.
        """
        out = []
        for fut in self._futures:
            if fut in self._delivered or not fut.done() or fut.cancelled():
                continue
            if fut.exception() is None and fut.result().status == "ok":
                self._delivered.add(fut)
                out.append(fut.result())
        return out


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
        pending: list[Any] = []
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
            for ref in pending:  # stopped early: do not leave tasks running on the cluster
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()

    def drain(self) -> list[UnitOutcome]:
        """Outcomes finished but not yielded: none are kept (Ray tasks are cancelled)."""
        return []


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
