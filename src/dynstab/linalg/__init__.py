"""Model-agnostic numerics on anything with ``@``: eigenvalues, traces, spectral densities.

Every function accepts a dense square ``Tensor`` (or numpy array), a dynstab
:class:`LinearOperator`, any operator with ``shape``, ``dtype``, ``device`` and ``@`` on ``(p,)``
and ``(p, k)``, or a ``scipy.sparse.linalg.LinearOperator``, and reports its cost in
matrix-vector products. All eigenvalue routines run on one Krylov engine
(:mod:`dynstab.linalg.krylov`) whose error bounds are certified (with a stated probability over
the random start vectors); solver settings are small frozen objects (:class:`LanczosConfig`,
:class:`TraceConfig`) set up once and passed as ``config=``.
"""

from dynstab.linalg.density import SpectralDensity, slq_density
from dynstab.linalg.krylov import EigenResult, LanczosConfig, LanczosProgress
from dynstab.linalg.lanczos import lanczos_top_eigenpairs
from dynstab.linalg.operator import (
    DenseOperator,
    FunctionOperator,
    LinearOperator,
    as_operator,
    to_dense,
)
from dynstab.linalg.power import power_iteration
from dynstab.linalg.trace import (
    TraceConfig,
    TraceResult,
    estimate_trace,
    hutchinson_squared_frobenius,
    hutchinson_trace,
    hutchinson_trace_and_frobenius,
    hutchpp_trace,
    hutchpp_trace_and_frobenius,
    xtrace,
)

__all__ = [
    "DenseOperator",
    "EigenResult",
    "FunctionOperator",
    "LanczosConfig",
    "LanczosProgress",
    "LinearOperator",
    "SpectralDensity",
    "TraceConfig",
    "TraceResult",
    "as_operator",
    "estimate_trace",
    "hutchinson_squared_frobenius",
    "hutchinson_trace",
    "hutchinson_trace_and_frobenius",
    "hutchpp_trace",
    "hutchpp_trace_and_frobenius",
    "lanczos_top_eigenpairs",
    "power_iteration",
    "slq_density",
    "to_dense",
    "xtrace",
]
