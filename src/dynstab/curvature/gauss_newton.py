"""Generalised Gauss–Newton (GGN) operator.

With per-batch outputs ``F_b = f(X_b; θ)`` flattened to ``n_b·C`` entries, Jacobian
``J_b = ∂F_b/∂θ`` and the loss Hessian w.r.t. the outputs ``M_b = ∇²_F L_b``,

    G = Σ_b (n_b/n) J_bᵀ M_b J_b.

Under ½-MSE ``M_b = I/n_b`` and ``G = JᵀJ/n`` (the Gauss–Newton matrix of the specs); under
cross-entropy ``M`` is block-diagonal with blocks ``(diag(s_i) − s_i s_iᵀ)/n_b`` (softmax
``s_i``). ``G`` is PSD whenever ``loss_fn`` is convex in the outputs. A product ``G v`` is one
forward-mode ``J v`` (:func:`torch.func.jvp`), one output-space product ``M (J v)`` and one
reverse-mode ``Jᵀ(·)`` per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, jvp

from dynstab._types import Params
from dynstab.curvature.functional import batch_loss, unflatten_like
from dynstab.curvature.hessian import CurvatureOperator, _flat_or_zero

__all__ = ["GaussNewtonOperator"]


class GaussNewtonOperator(CurvatureOperator):
    """The generalised Gauss–Newton matrix ``G = Σ_b (n_b/n) J_bᵀ ∇²_F L_b J_b``, shape ``(p, p)``.

    Constructor arguments and errors are those of :class:`~dynstab.curvature.CurvatureOperator`
    ``(model, loss_fn, data, params=None, *, allow_stochastic=False, cache_graph=None)``;
    ``loss_fn`` must be twice differentiable in the outputs (e.g. ``half_mse``,
    ``cross_entropy``). The cached state is each batch's reverse graph; without caching, the
    first batch is still evaluated at construction to validate the data.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> from dynstab.losses import half_mse
        >>> G = GaussNewtonOperator(model, half_mse, (X, torch.zeros(2, dtype=torch.float64)))
        >>> G.to_dense().tolist()  # XᵀX/n
        [[1.0, 1.0], [1.0, 2.0]]
    """

    SELF_ADJOINT = True
    PSD = True
    VALIDATE_BATCHES = 1  # finite loss and shapes of the first batch, graph not kept

    def _build(self, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """(outputs with graph to θ, detached outputs leaf, ∇_F L_b with graph to the leaf)."""
        X, y = self.data.batches[b]
        out, _ = batch_loss(self.model, self.loss_fn, self.params, X, y)
        o = out.detach().requires_grad_(True)
        (go,) = torch.autograd.grad(self.loss_fn(o, y), o, create_graph=True)
        return out, o, go

    def _parts(self, b: int) -> tuple[Tensor, Tensor, Tensor]:
        return self._batch_state(b)  # type: ignore[return-value]

    def _matmat(self, V: Tensor) -> Tensor:
        p, k = V.shape
        result = torch.zeros(p, k, dtype=self.dtype, device=self.device)
        leaves = self._leaves()
        primals = {name: t.detach() for name, t in self.params.items()}
        for b, w in enumerate(self.data.weights()):
            X, _ = self.data.batches[b]
            out, o, go = self._parts(b)
            if not go.requires_grad:
                continue  # loss affine in the outputs: M = 0

            def f(P: Params, X: Tensor = X) -> Tensor:
                return functional_call(self.model, P, (X,))

            for j in range(k):
                tangents = unflatten_like(V[:, j], self.params)
                Jv = jvp(f, (primals,), (tangents,))[1]
                (MJv,) = torch.autograd.grad(go, o, grad_outputs=Jv, retain_graph=True)
                JtMJv = torch.autograd.grad(
                    out, leaves, grad_outputs=MJv, retain_graph=True, allow_unused=True
                )
                result[:, j] += w * _flat_or_zero(JtMJv, self.params)
        return result
