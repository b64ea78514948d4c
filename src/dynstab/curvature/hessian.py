"""Hessian-vector products of the training loss for any ``nn.Module``.

``H = ∇²_θ L(θ)`` with ``L = Σ_b (n_b/n) L_b`` and ``L_b = loss_fn(f(X_b; θ), y_b)`` the batch
mean (for :func:`dynstab.losses.half_mse`, ``L = (1/n) Σ_i ½‖f(x_i) − y_i‖²``). A product
``H v`` is one double-backward pass ``∇_θ ⟨∇_θ L, v⟩`` (Pearlmutter's trick).

When the gradient graph is cached (the default for data given as one batch), the gradient
``∇_θ L_b`` is built once with ``create_graph=True`` and every later product only back-propagates
through that graph (``retain_graph=True``): one backward pass per product instead of a forward
plus two backward passes. For a multi-batch ``DataLoader`` the graphs are rebuilt batch by
batch on each product unless ``cache_graph=True`` (memory: one graph per batch).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from dynstab._types import Data, LossFn, Params
from dynstab.curvature.functional import (
    Dataset,
    batch_loss,
    check_model_mode,
    flatten_params,
    prepare_data,
    resolve_params,
    unflatten_like,
)
from dynstab.linalg.operator import LinearOperator

__all__ = ["CurvatureOperator", "HessianOperator"]


class CurvatureOperator(LinearOperator):
    """Shared validation and bookkeeping of model-aware curvature operators.

    Subclasses implement :meth:`_build` (the per-batch autograd state a product needs) and
    :meth:`_matmat`; :meth:`_batch_state` caches that state when ``cache_graph`` is on. The
    constructor builds it eagerly for every batch when caching, else for the first
    ``VALIDATE_BATCHES`` batches only (to surface bad data at construction).

    Args:
        model: The network; never modified (mode and ``.grad`` are left as found).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (e.g.
            :func:`dynstab.losses.half_mse` or :func:`dynstab.losses.cross_entropy`).
        data: ``(inputs, targets)`` or an iterable of such pairs (weighted ``n_b/n``).
        params: Point to evaluate at; ``None`` means the model's current parameters.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout (a cached graph then
            freezes one dropout mask). Default: ``False``.
        cache_graph: Keep the per-batch autograd graphs between products; ``None`` caches
            when ``data`` is a single batch. Default: ``None``.

    Raises:
        TypeError: If ``model``, ``loss_fn``, ``params`` or ``data`` have the wrong type.
        ValueError: If the params keys/shapes are wrong, the data is empty or mismatched, the
            model has stochastic layers in train mode, or the loss is not finite.
    """

    #: Batches whose state is built at construction when the graphs are not cached.
    VALIDATE_BATCHES = 0

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
        name = type(self).__name__
        if not callable(loss_fn):
            raise TypeError(f"{name}: loss_fn must be callable; got {type(loss_fn).__name__}.")
        self.params = resolve_params(model, params, who=name)
        check_model_mode(model, allow_stochastic=allow_stochastic)
        self.model = model
        self.loss_fn = loss_fn
        self.data: Dataset = prepare_data(data)
        first = next(iter(self.params.values()))
        super().__init__(sum(t.numel() for t in self.params.values()), first.dtype, first.device)
        self.cache_graph = len(self.data.batches) == 1 if cache_graph is None else bool(cache_graph)
        self._cache: dict[int, object] = {}
        eager = len(self.data.batches) if self.cache_graph else self.VALIDATE_BATCHES
        for b in range(eager):
            self._batch_state(b)

    @abstractmethod
    def _build(self, b: int) -> object:
        """The autograd state of batch ``b`` that products reuse (built with its graph)."""

    def _batch_state(self, b: int) -> object:
        """:meth:`_build` of batch ``b``, cached when ``cache_graph`` is on."""
        state = self._cache.get(b)
        if state is None:
            state = self._build(b)
            if self.cache_graph:
                self._cache[b] = state
        return state

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.data.n

    def _leaves(self) -> list[Tensor]:
        return list(self.params.values())

    def loss(self) -> float:
        """Return the loss ``L(θ) = Σ_b (n_b/n) L_b`` (no products counted)."""
        total = 0.0
        with torch.no_grad():
            for (X, y), w in zip(self.data.batches, self.data.weights()):
                total += w * float(batch_loss(self.model, self.loss_fn, self.params, X, y)[1])
        return total

    def gradient(self) -> Tensor:
        """Return the flat gradient ``∇_θ L``, shape ``(p,)``."""
        g = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for (X, y), w in zip(self.data.batches, self.data.weights()):
            _, loss = batch_loss(self.model, self.loss_fn, self.params, X, y)
            grads = torch.autograd.grad(loss, self._leaves(), allow_unused=True)
            g += w * _flat_or_zero(grads, self.params)
        return g


def _flat_or_zero(grads: tuple[Tensor | None, ...], params: Params) -> Tensor:
    return flatten_params(
        {k: (torch.zeros_like(t) if g is None else g) for (k, t), g in zip(params.items(), grads)}
    )


class HessianOperator(CurvatureOperator):
    """The loss Hessian ``H = ∇²_θ L(θ)`` as a matrix-free operator of shape ``(p, p)``.

    ``L = Σ_b (n_b/n) loss_fn(f(X_b; θ), y_b)``; under ½-MSE, ``H = G + (1/n) Σ_i r_i·∇²f_i``
    with ``G = JᵀJ/n`` (equal at an interpolating point). Flat vectors are ordered like
    ``model.named_parameters()``. Each column of ``H @ V`` costs one double-backward pass per
    batch (plus one forward/backward per batch and product when the graph is not cached).

    Constructor arguments and errors are those of :class:`CurvatureOperator`
    ``(model, loss_fn, data, params=None, *, allow_stochastic=False, cache_graph=None)``; the
    cached state is the gradient ``∇_θ L_b`` with its graph.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> from dynstab.losses import half_mse
        >>> H = HessianOperator(model, half_mse, (X, torch.zeros(2, dtype=torch.float64)))
        >>> H.to_dense().tolist()  # XᵀX/n
        [[1.0, 1.0], [1.0, 2.0]]
    """

    SELF_ADJOINT = True
    PSD = False

    def _build(self, b: int) -> tuple[list[Tensor], list[int]]:
        """Gradient of batch ``b`` with its graph: (grads requiring grad, matching leaves)."""
        X, y = self.data.batches[b]
        _, loss = batch_loss(self.model, self.loss_fn, self.params, X, y)
        leaves = self._leaves()
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in idx], idx

    def _graph(self, b: int) -> tuple[list[Tensor], list[int]]:
        return self._batch_state(b)  # type: ignore[return-value]

    def _matmat(self, V: Tensor) -> Tensor:
        p, k = V.shape
        out = torch.zeros(p, k, dtype=self.dtype, device=self.device)
        leaves = self._leaves()
        for b, w in enumerate(self.data.weights()):
            grads, idx = self._graph(b)
            if not grads:
                continue  # the loss is affine in θ: zero Hessian
            for j in range(k):
                vs = unflatten_like(V[:, j], self.params)
                vlist = list(vs.values())
                hv = torch.autograd.grad(
                    grads,
                    leaves,
                    grad_outputs=[vlist[i] for i in idx],
                    retain_graph=True,
                    allow_unused=True,
                )
                out[:, j] += w * _flat_or_zero(hv, self.params)
        return out
