"""Warning classes emitted by dynstab.

Numerical non-convergence and divergence are *reported* (flags in result objects plus one
of these warnings), never raised as exceptions.
"""

from __future__ import annotations


class DynstabWarning(UserWarning):
    """Base class of every warning dynstab emits."""


class ConvergenceWarning(DynstabWarning):
    """An iterative method stopped before reaching its tolerance."""


class DivergenceWarning(DynstabWarning):
    """A training run or a simulated dynamics diverged (non-finite or exploding loss)."""


class NotInterpolatingWarning(DynstabWarning):
    """A criterion that assumes an interpolating minimum (H = G) was applied elsewhere."""


# -- input errors (appended by the curvature layer) --------------------------------------------


class DataError(ValueError):
    """Data that cannot be used as given.

    Empty batches, mismatched sample counts, non-finite values, labels outside the classes, or a
    loader that changes between passes. (A batch of the wrong *structure* is a ``TypeError``.)
    """


class DeviceError(ValueError):
    """Model, parameters, data or an argument live on incompatible devices (or on ``meta``)."""


class ParameterSelectionError(ValueError):
    """A ``params=`` selection that names no parameter, an unknown one, or the wrong shape."""


class MemoryBudgetError(MemoryError, ValueError):
    """A computation would allocate more memory than its budget allows; nothing was allocated.

    Raised *before* the allocation, by the routines that estimate their memory first (the exact
    η* routes of :class:`dynstab.criteria.StabilityProblem`, :func:`dynstab.critical_lr`,
    :func:`dynstab.stability`). It subclasses both :class:`MemoryError` (catch it like an
    out-of-memory error) and :class:`ValueError` (the inputs and the ``max_memory`` budget do
    not fit together, like other bad input), so ``except ValueError`` in callers still catches it.

    The message names what would be allocated, the estimate, the budget and the alternatives.

    Attributes:
        what: What would have been allocated (e.g. ``"Gram matrix K of shape (n, n)"``).
        required_bytes: The estimate, in bytes.
        budget_bytes: The budget it was compared with, in bytes.
        alternatives: Cheaper ways to get the result, in words.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str = "",
        required_bytes: int = 0,
        budget_bytes: int = 0,
        alternatives: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.what = what
        self.required_bytes = required_bytes
        self.budget_bytes = budget_bytes
        self.alternatives = alternatives
