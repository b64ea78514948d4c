"""Model-agnostic numerics on anything with ``@``: eigenvalues, traces, spectral densities.

Every function accepts a dense square ``Tensor`` or an operator (``shape``, ``dtype``,
``device``, ``@`` on ``(p,)`` and ``(p, k)``) and reports its cost in matrix-vector products.
"""

from dynstab.linalg.density import SpectralDensity, slq_density
from dynstab.linalg.lanczos import EigenResult, lanczos_top_eigenpairs
from dynstab.linalg.operator import DenseOperator, LinearOperator, as_operator, to_dense
from dynstab.linalg.power import power_iteration
from dynstab.linalg.trace import (
    TraceResult,
    hutchinson_squared_frobenius,
    hutchinson_trace,
    hutchinson_trace_and_frobenius,
    hutchpp_trace,
    hutchpp_trace_and_frobenius,
)

__all__ = [
    "DenseOperator",
    "EigenResult",
    "LinearOperator",
    "SpectralDensity",
    "TraceResult",
    "as_operator",
    "hutchinson_squared_frobenius",
    "hutchinson_trace",
    "hutchinson_trace_and_frobenius",
    "hutchpp_trace",
    "hutchpp_trace_and_frobenius",
    "lanczos_top_eigenpairs",
    "power_iteration",
    "slq_density",
    "to_dense",
]
