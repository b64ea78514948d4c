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
