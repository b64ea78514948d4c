"""Model-agnostic numerics on anything with ``@``: eigenvalues, traces, spectral densities.

Every function accepts a dense square ``Tensor`` (or numpy array), a dynstab
:class:`LinearOperator`, any operator with ``shape``, ``dtype``, ``device`` and ``@`` on ``(p,)``
and ``(p, k)``, or a ``scipy.sparse.linalg.LinearOperator``, and reports its cost in
matrix-vector products. All eigenvalue routines run on one Krylov engine
(:mod:`dynstab.linalg.krylov`) whose error bounds are certified (with a stated probability over
the random start vectors); solver settings are small frozen objects (:class:`LanczosConfig`,
:class:`TraceConfig`) set up once and passed as ``config=``.
"""

from dynstab.linalg import trace
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
from dynstab.linalg.trace import *  # noqa: F403  (the names of trace.__all__, listed there once)

__all__ = [
    "DenseOperator",
    "EigenResult",
    "FunctionOperator",
    "LanczosConfig",
    "LanczosProgress",
    "LinearOperator",
    "SpectralDensity",
    "as_operator",
    "lanczos_top_eigenpairs",
    "power_iteration",
    "slq_density",
    "to_dense",
]
__all__ += trace.__all__
