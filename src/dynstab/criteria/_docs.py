"""The Args entries that the one-call criteria share, each written once (:mod:`dynstab._docs`).

``gram_bound_args`` documents the positional parameters ``(K, batch_size, sampling)`` and the
keyword ``outputs`` that every one-call Gram bound takes; ``gram_lr_args`` the
``(K, lr, batch_size, sampling)`` of the linearized-dynamics functions; ``jacobian_args`` and
``jacobian_lr_args`` the same for the parameter-space references; ``growth_solver_args`` the
solver settings of ρ(Q). A docstring line ``%(name)s`` is replaced by the fragment.
"""

from __future__ import annotations

from dynstab._docs import DocFragments

__all__ = ["criteria_docs"]

_K = "K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``."
_LR = "lr: Learning rate η > 0."
_BATCH = 'batch_size: Batch size B.\nsampling: ``"with"`` or ``"without"`` replacement.'
_OUTPUTS = "outputs: Number of outputs C."
_JACOBIANS = "jacobians: Per-sample Jacobians, shape ``(n, P)`` or ``(n, C, P)``."
_BATCH_SHORT = 'batch_size: Batch size B.\nsampling: ``"with"`` or ``"without"``.'

criteria_docs = DocFragments(
    K=_K,
    outputs=_OUTPUTS,
    coords="coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.",
    gram_bound_args="\n".join((_K, _BATCH, _OUTPUTS)),
    gram_lr_args="\n".join((_K, _LR, _BATCH)),
    jacobian_args="\n".join((_JACOBIANS, _BATCH_SHORT)),
    jacobian_lr_args="\n".join((_JACOBIANS, _LR, _BATCH_SHORT)),
    growth_solver_args="""
        method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
        tol: Relative Ritz-residual tolerance (matrix-free).
        max_iters: Maximum Lanczos products (matrix-free).
        """,
)
