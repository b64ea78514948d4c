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
