"""Memory budgets: estimate before allocating, refuse with a clear message past the budget.

The default budget is ``DEFAULT_MEMORY_FRACTION`` of the memory available *now*: on the CPU the
``MemAvailable`` line of ``/proc/meminfo`` (else ``os.sysconf``), on CUDA the free device memory
(``torch.cuda.mem_get_info``). A caller's ``max_memory`` (bytes) replaces it; ``math.inf``
disables the check. Estimates below ``CHECK_FLOOR_BYTES`` are never checked (no file is read for
small problems).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

import torch

from dynstab._checks import check_positive
from dynstab.errors import MemoryBudgetError

__all__ = [
    "DEFAULT_MEMORY_FRACTION",
    "MemoryBudget",
    "available_memory",
    "format_bytes",
    "memory_budget",
]

#: Fraction of the available memory a computation may plan to use by default.
DEFAULT_MEMORY_FRACTION = 0.5
#: Allocations estimated below this size are not checked.
CHECK_FLOOR_BYTES = 64 * 2**20
_UNLIMITED = sys.maxsize


def format_bytes(num: float) -> str:
    """Human-readable size in decimal units.

    Example:
        >>> format_bytes(180e9), format_bytes(3_600_000), format_bytes(512)
        ('180 GB', '3.6 MB', '512 B')
    """
    if not math.isfinite(num):
        return "unlimited"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num >= size:
            return f"{num / size:.3g} {unit}"
    return f"{int(num)} B"


def available_memory(device: torch.device) -> int | None:
    """Bytes available now on ``device`` (None when unknown).

    CPU: ``MemAvailable`` from ``/proc/meminfo``, else available pages × page size. CUDA: the
    free memory of the device. Other devices: None.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


class MemoryBudget:
    """A memory budget in bytes, resolved lazily (nothing is read for small requests).

    Args:
        max_memory: Bytes; ``math.inf`` for no limit; None for ``DEFAULT_MEMORY_FRACTION`` of
            the memory available on ``device`` (no limit when that is unknown).
        device: Where the computation runs.

    Raises:
        TypeError: If ``max_memory`` is not a real number or None.
        ValueError: If it is not > 0.
    """

    def __init__(self, max_memory: float | None, device: torch.device) -> None:
        if isinstance(max_memory, bool) or not isinstance(max_memory, int | float | None):
            raise TypeError(
                f"max_memory must be a number of bytes or None; got a {type(max_memory).__name__}."
            )
        if max_memory is not None and not (
            isinstance(max_memory, float) and max_memory == math.inf
        ):
            check_positive("max_memory", max_memory)
        self.max_memory = max_memory
        self.device = device
        self._resolved: tuple[int, str] | None = None

    def _resolve(self) -> tuple[int, str]:
        if self._resolved is None:
            mm = self.max_memory
            if mm is not None:
                value = int(min(float(mm), _UNLIMITED))
                self._resolved = (value, f"max_memory={mm:g}")
            else:
                avail = available_memory(self.device)
                if avail is None:
                    self._resolved = (_UNLIMITED, f"available memory on {self.device} unknown")
                else:
                    pct = round(100 * DEFAULT_MEMORY_FRACTION)
                    self._resolved = (
                        int(DEFAULT_MEMORY_FRACTION * avail),
                        f"max_memory=None: {pct}% of the {format_bytes(avail)} available on "
                        f"{self.device.type}",
                    )
        return self._resolved

    @property
    def bytes(self) -> int:
        """The budget in bytes (``sys.maxsize`` when unlimited or unknown)."""
        return self._resolve()[0]

    @property
    def source(self) -> str:
        """Where the budget came from, in words."""
        return self._resolve()[1]

    def allows(self, required: float) -> bool:
        """Whether ``required`` bytes fit (always True below ``CHECK_FLOOR_BYTES``)."""
        return required < CHECK_FLOOR_BYTES or required <= self.bytes

    def check(
        self, required: float, *, what: str, who: str, alternatives: Sequence[str] = ()
    ) -> None:
        """Raise :class:`~dynstab.errors.MemoryBudgetError` when ``required`` exceeds the budget.

        Args:
            required: Estimated bytes of the planned allocation.
            what: What would be allocated, in words.
            who: The public call, for the message.
            alternatives: Cheaper ways to the result, in words.

        Raises:
            MemoryBudgetError: Naming ``what``, the estimate, the budget and ``alternatives``.
        """
        if self.allows(required):
            return
        alts = (
            *alternatives,
            "a smaller subset of the data",
            "the sampled route dynstab.stability(..., method='sampled') for large n",
            "a larger max_memory (bytes; math.inf disables the check) if the memory is there",
        )
        message = (
            f"{who}: would allocate about {format_bytes(required)} for {what}, above the memory "
            f"budget of {format_bytes(self.bytes)} ({self.source}). Nothing was allocated. "
            "Alternatives: " + "; ".join(alts) + "."
        )
        raise MemoryBudgetError(
            message,
            what=what,
            required_bytes=int(min(required, _UNLIMITED)),
            budget_bytes=self.bytes,
            alternatives=alts,
        )


def memory_budget(max_memory: float | None, device: torch.device) -> MemoryBudget:
    """The :class:`MemoryBudget` for ``max_memory`` (bytes, ``math.inf`` or None) on ``device``.

    Args:
        max_memory: Bytes; ``math.inf`` for no limit; None for ``DEFAULT_MEMORY_FRACTION`` of
            the memory available on ``device`` (no limit when that is unknown).
        device: Where the computation runs.

    Returns:
        The budget (resolved on first use).

    Raises:
        TypeError: If ``max_memory`` is not a real number or None.
        ValueError: If it is not > 0.

    Example:
        >>> memory_budget(2e9, torch.device("cpu")).bytes
        2000000000
    """
    return MemoryBudget(max_memory, device)
