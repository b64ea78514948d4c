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
from torch import Tensor, nn
from torch.func import functional_call, jvp

from dynstab._types import Data, LossFn, Params
from dynstab.curvature.functional import batch_loss, unflatten_like
from dynstab.curvature.hessian import CurvatureOperator, _flat_or_zero

__all__ = ["GaussNewtonOperator"]


class GaussNewtonOperator(CurvatureOperator):
    """The generalised Gauss–Newton matrix ``G = Σ_b (n_b/n) J_bᵀ ∇²_F L_b J_b``, shape ``(p, p)``.

    Args:
        model: The network; never modified (mode and ``.grad`` are left as found).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean; must be twice
            differentiable in the outputs (e.g. ``half_mse``, ``cross_entropy``).
        data: ``(inputs, targets)`` or an iterable of such pairs (weighted ``n_b/n``).
        params: Point to evaluate at; ``None`` means the model's current parameters.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout. Default: ``False``.
        cache_graph: Keep each batch's reverse graph between products; ``None`` caches when
            ``data`` is a single batch. Default: ``None``.

    Raises:
        TypeError: If ``model``, ``loss_fn``, ``params`` or ``data`` have the wrong type.
        ValueError: If the params keys/shapes are wrong, the data is empty or mismatched, the
            model has stochastic layers in train mode, or the loss is not finite.

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

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Data,
        params: Params | None = None,
        *,
        allow_stochastic: bool = False,
        cache_graph: bool | None = None,
    ) -> None:
        super().__init__(
            model, loss_fn, data, params, allow_stochastic=allow_stochastic, cache_graph=cache_graph
        )
        if self.cache_graph:
            for b in range(len(self.data.batches)):
                self._parts(b)
        else:  # validate the first batch (finite loss, shapes) without keeping the graph
            self._parts(0)

    def _parts(self, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """(outputs with graph to θ, detached outputs leaf, ∇_F L_b with graph to the leaf)."""
        cached = self._cache.get(b)
        if cached is not None:
            return cached  # type: ignore[return-value]
        X, y = self.data.batches[b]
        out, _ = batch_loss(self.model, self.loss_fn, self.params, X, y)
        o = out.detach().requires_grad_(True)
        (go,) = torch.autograd.grad(self.loss_fn(o, y), o, create_graph=True)
        parts = (out, o, go)
        if self.cache_graph:
            self._cache[b] = parts
        return parts

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
