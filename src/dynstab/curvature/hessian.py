"""Hessian-vector products of the training loss for any ``nn.Module``.

``H = ∇²_θ L(θ)`` with ``L = Σ_b (n_b/n) L_b`` and ``L_b = loss_fn(f(X_b; θ), y_b)`` the batch
mean (for :func:`dynstab.losses.half_mse`, ``L = (1/n) Σ_i ½‖f(x_i) − y_i‖²``), θ the selected
parameters (default: those with ``requires_grad=True``). A product ``H v`` is one
double-backward pass ``∇_θ ⟨∇_θ L, v⟩`` (Pearlmutter's trick).

When the gradient graph is cached (the default for data given as one batch), the gradient
``∇_θ L_b`` is built once with ``create_graph=True`` and every later product only back-propagates
through that graph: one backward pass per product instead of a forward plus two backward passes.
For a multi-batch ``DataLoader`` the graphs are rebuilt batch by batch on each block product
(the data are streamed) unless ``cache_graph=True`` (memory: one graph per batch).

A block ``H V`` with ``V`` of shape ``(p, s)`` is not a Python loop over columns: the ``s``
backward passes run as one vectorised pass (``torch.autograd.grad(..., is_grads_batched=True)``)
in column blocks sized by :func:`block_size_for` (see its docstring for the rule and the
measurements behind it). Where the model's backward has no batching rule the operator falls
back to a loop over columns, once, with a :class:`~dynstab.errors.DynstabWarning` that names
the failing operation.
"""

from __future__ import annotations

import os
import warnings
from abc import abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar, Unpack, cast

import torch
from torch import Tensor, nn

from dynstab._checks import check_int
from dynstab._types import Data, LossFn, Params, ParamSpec
from dynstab.curvature.data import Dataset
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import CurvatureProblem, DataOptions
from dynstab.errors import DynstabWarning
from dynstab.linalg.operator import LinearOperator

__all__ = ["CurvatureOperator", "HessianOperator", "block_size_for"]

#: CPU: columns per vectorised backward are chosen so that their working set stays below this
#: many bytes; fewer than ``CPU_MIN_BLOCK`` columns fall back to single products.
CPU_BLOCK_BYTES = 4 * 2**20
CPU_MIN_BLOCK = 8
#: CUDA: fraction of the free device memory a vectorised backward may use.
GPU_MEMORY_FRACTION = 0.125
#: Upper bound on the columns of one vectorised backward.
MAX_BLOCK = 64

_Op = TypeVar("_Op", bound="CurvatureOperator")


def _available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: the allocator's view; CPU: available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 * 2**30


def block_size_for(
    column_bytes: int, device: torch.device, cpu_block_bytes: int = CPU_BLOCK_BYTES
) -> int:
    """Columns per vectorised backward for a given per-column working set.

    ``column_bytes`` is the memory one product touches: the tensors saved by the gradient
    graph plus two parameter-sized vectors. On CUDA a block may use ``GPU_MEMORY_FRACTION`` of
    the free memory (vectorising removes per-kernel launch overhead, the main cost of single
    products on a GPU; this rule is not yet measured on a GPU). On the CPU, vectorised backward
    passes only pay off while the working set per column is small: measured in one process
    (1 thread, float32; MLPs 100-w-w-10, a 2-conv CNN, a transformer encoder layer), a block of
    40 HVPs took 0.29× the time of 40 single products at 0.13 MB per column and 0.66× at
    0.47 MB, but 1.1× at 1.6–1.7 MB and 1.9–2.2× at 6–7 MB; in an earlier run blocks of 2 were
    never faster than single products. Hence the CPU rule: ``cpu_block_bytes // column_bytes``
    columns, used only when that is at least ``CPU_MIN_BLOCK``, else single products; always at
    most ``MAX_BLOCK``. Gauss–Newton products, whose single products each run a forward-mode
    pass, gain from blocks up to larger working sets (``GaussNewtonOperator.CPU_BLOCK_BYTES``).

    Args:
        column_bytes: Bytes per column (> 0).
        device: Device of the products.
        cpu_block_bytes: CPU working-set budget of a block. Default: ``CPU_BLOCK_BYTES``.

    Returns:
        Block size in ``[1, MAX_BLOCK]``; 1 means single products.

    Example:
        >>> block_size_for(2**17, torch.device("cpu")), block_size_for(2**20, torch.device("cpu"))
        (32, 1)
    """
    column_bytes = max(int(column_bytes), 1)
    if device.type == "cuda":
        s = int(GPU_MEMORY_FRACTION * _available_bytes(device)) // column_bytes
        return max(1, min(MAX_BLOCK, s))
    s = int(cpu_block_bytes) // column_bytes
    return min(MAX_BLOCK, s) if s >= CPU_MIN_BLOCK else 1


def graph_bytes(roots: object) -> int:
    """Bytes of the distinct tensors saved by the autograd graph behind ``roots``.

    Walks the graph from every tensor in ``roots`` (nested tuples/lists) through
    ``next_functions`` and adds up the storages of the saved tensors that autograd exposes as
    ``_saved_*`` attributes of each node. (A ``saved_tensors_hooks`` pack hook would see the
    same tensors but creates reference cycles through the graph that leak the batch.)
    """
    stack: list[object] = []

    def collect(obj: object) -> None:
        if isinstance(obj, Tensor):
            if obj.grad_fn is not None:
                stack.append(obj.grad_fn)
        elif isinstance(obj, (tuple, list)):
            for item in obj:
                collect(item)

    collect(roots)
    seen_nodes: set[int] = set()
    storages: dict[int, int] = {}
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except RuntimeError:  # freed or not a tensor we can read
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, Tensor) and t.layout == torch.strided:
                    storage = t.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return sum(storages.values())


def _accumulate(out: Tensor | None, part: Tensor, weight: float) -> Tensor:
    """``out + weight·part`` (``weight·part`` when ``out`` is ``None``), in place when possible."""
    if out is None:
        return part if weight == 1.0 else part.mul_(weight)
    return out.add_(part, alpha=weight)


class CurvatureOperator(LinearOperator):
    """Shared set-up, streaming and block products of model-aware curvature operators.

    Subclasses implement :meth:`_build` (the per-batch autograd state a product needs) and
    :meth:`_apply` (the weighted product of one batch with a column block). Products stream the
    data: for each batch the state is built (or taken from the cache) and applied to the whole
    block ``V`` in vectorised column blocks of :attr:`block_size`.

    Args:
        model: The network; never modified (mode, buffers, ``.grad`` and RNG state left as
            found).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (e.g.
            :func:`dynstab.losses.half_mse` or :func:`dynstab.losses.cross_entropy`).
        data: One batch — ``(inputs, targets)``, ``(x_1, …, x_k, targets)`` or a dict — or a
            re-iterable of batches (``DataLoader``, list), weighted ``n_b/n`` and streamed.
        params: Parameter selection: ``None`` (the parameters with ``requires_grad=True``), a
            submodule, names, a predicate ``(name, param) -> bool`` or a ``dict[str, Tensor]``
            (those names at the given values). See :mod:`dynstab.curvature.params`.
        cache_graph: Keep the per-batch autograd graphs between products; ``None`` caches
            when ``data`` is a single batch. Default: ``None``.
        block_size: Columns per vectorised backward; ``None`` chooses it with
            :func:`block_size_for` from the graph's measured size. ``1`` = single products.
        **options: How the data are read and the model called
            (:class:`~dynstab.curvature.DataOptions`: ``allow_stochastic`` — every product
            sees the same dropout masks, BatchNorm running statistics are updated on private
            copies only —, ``device``, ``unpack``, ``forward``).

    Attributes:
        problem: The :class:`~dynstab.curvature.CurvatureProblem` (model, data, selection).
        selection: The :class:`~dynstab.curvature.ParameterSelection` measured.
        params: Leaf copies of the selected parameters at the point (autograd inputs).
        on_product: Optional ``on_product(columns)`` called after every block product
            (progress reporting).

    Raises:
        TypeError: If ``model``, ``loss_fn``, ``params`` or ``data`` have the wrong type.
        ValueError: If the selection is empty/unknown or has wrong shapes, the data is empty or
            mismatched, the model has stochastic layers in train mode, or the loss is not finite.
    """

    #: CPU working-set budget of a vectorised block (see :func:`block_size_for`).
    CPU_BLOCK_BYTES = CPU_BLOCK_BYTES

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Data,
        params: ParamSpec = None,
        *,
        cache_graph: bool | None = None,
        block_size: int | None = None,
        **options: Unpack[DataOptions],
    ) -> None:
        name = type(self).__name__
        if not callable(loss_fn):
            raise TypeError(f"{name}: loss_fn must be callable; got {type(loss_fn).__name__}.")
        problem = CurvatureProblem(model, loss_fn, data, params, who=name, **options)
        self._setup(problem, cache_graph, block_size)

    @classmethod
    def from_problem(
        cls: type[_Op],
        problem: CurvatureProblem,
        *,
        cache_graph: bool | None = None,
        block_size: int | None = None,
    ) -> _Op:
        """The operator of an already set-up :class:`~dynstab.curvature.CurvatureProblem`.

        Raises:
            ValueError: If the problem has no loss function.
        """
        if problem.loss_fn is None:
            raise ValueError(f"{cls.__name__} needs a loss function; the problem has none.")
        op = cls.__new__(cls)
        op._setup(problem, cache_graph, block_size)
        return op

    def _setup(
        self, problem: CurvatureProblem, cache_graph: bool | None, block_size: int | None
    ) -> None:
        if block_size is not None:
            check_int("block_size", block_size, minimum=1)
        problem.scan()  # validates the data and the loss before any product
        self.problem = problem
        self.selection: ParameterSelection = problem.selection
        self.model = problem.model
        self.loss_fn = problem.loss_fn
        self.params: Params = problem.leaves()
        super().__init__(self.selection.numel, problem.dtype, problem.device)
        single = problem.data.num_batches == 1
        self.cache_graph = single if cache_graph is None else bool(cache_graph)
        self.block_size = block_size
        self.batched = True
        self.batching_note: str | None = None
        self.on_product: Callable[[int], object] | None = None
        self._cache: list[object] | None = None
        self._weights = problem.data.weights()
        if self.cache_graph:
            with problem.evaluation():
                self._cache = [self._measured_build(b, x, y) for b, x, y, _ in problem.batches()]

    @property
    def data(self) -> Dataset:
        """The streamed data."""
        return self.problem.data

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.problem.n

    def _leaves(self) -> list[Tensor]:
        return list(self.params.values())

    # -- per-batch state -----------------------------------------------------------------------

    @abstractmethod
    def _build(self, inputs: object, targets: Tensor | None) -> object:
        """The autograd state of one batch that products reuse (built with its graph)."""

    @abstractmethod
    def _apply(self, state: object, inputs: object, V: Tensor, batched: bool) -> Tensor:
        """Unweighted product of one batch's curvature with ``V`` ``(p, s)``: ``(p, s)``."""

    def _measured_build(self, b: int, inputs: object, targets: Tensor | None) -> object:
        """:meth:`_build`, sizing :attr:`block_size` from the first graph built."""
        state = self._build(inputs, targets)
        if self.block_size is not None:
            return state
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        column = graph_bytes(state) + 2 * self.shape[0] * itemsize
        self.block_size = block_size_for(column, self.device, self.CPU_BLOCK_BYTES)
        return state

    # -- products ------------------------------------------------------------------------------

    def _forward_in_products(self) -> bool:
        """Whether a product evaluates the model (else only cached graphs are differentiated)."""
        return self._cache is None

    def _matmat(self, V: Tensor) -> Tensor:
        problem = self.problem
        out: Tensor | None = None
        # The evaluation context (attention kernel, the problem's RNG stream) matters only where
        # the model runs; products on cached graphs skip its cost.
        context = problem.evaluation() if self._forward_in_products() else nullcontext()
        with context:
            if self._cache is not None:
                for state, w in zip(self._cache, self._weights):
                    part = self._blocks(state, None, V)
                    out = _accumulate(out, part, w)
            else:
                for b, inputs, targets, w in problem.batches():
                    state = self._measured_build(b, inputs, targets)
                    out = _accumulate(out, self._blocks(state, inputs, V), w)
                    del state
        assert out is not None
        if self.on_product is not None:
            self.on_product(V.shape[1])
        return out

    def _blocks(self, state: object, inputs: object, V: Tensor) -> Tensor:
        """The product of one batch's state with ``V``, in vectorised column blocks."""
        s = V.shape[1]
        if not self.batched or (self.block_size or 1) == 1 or s == 1:
            return self._loop(state, inputs, V)
        parts = []
        start = 0
        while start < s:
            size = self.block_size or 1
            block = V[:, start : start + size]
            if not self.batched or block.shape[1] == 1:
                parts.append(self._loop(state, inputs, block))
            else:
                try:
                    parts.append(self._apply(state, inputs, block, True))
                except torch.OutOfMemoryError:
                    if size <= 2:
                        raise
                    self.block_size = size // 2  # retry this block with half the columns
                    continue
                except (RuntimeError, NotImplementedError) as exc:
                    self._disable_batching(exc)
                    parts.append(self._loop(state, inputs, block))
            start += block.shape[1]
        return torch.cat(parts, dim=1)

    def _loop(self, state: object, inputs: object, V: Tensor) -> Tensor:
        if V.shape[1] == 1:
            return self._apply(state, inputs, V, False)
        Vt = V.T.contiguous()  # contiguous columns
        cols = [self._apply(state, inputs, Vt[j].unsqueeze(1), False) for j in range(V.shape[1])]
        return torch.cat(cols, dim=1)

    def _disable_batching(self, exc: BaseException) -> None:
        self.batched = False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.batching_note = first[:300]
        warnings.warn(
            f"{type(self).__name__}: vectorised products are not supported by this model "
            f"({self.batching_note}); falling back to one product per column (same values, "
            "slower).",
            DynstabWarning,
            stacklevel=4,
        )

    # -- loss and gradient ---------------------------------------------------------------------

    def loss(self) -> float:
        """Return the loss ``L(θ) = Σ_b (n_b/n) L_b`` (no products counted)."""
        return self.problem.loss_value

    def gradient(self) -> Tensor:
        """Return the flat gradient ``∇_θ L``, shape ``(p,)`` (no products counted)."""
        g = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        leaves = self._leaves()
        with self.problem.evaluation():
            for _, inputs, targets, w in self.problem.batches():
                _, loss = self.problem.batch_loss(self.params, inputs, targets)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                g += w * self.selection.columns(grads, None, g).reshape(-1)
        return g


class HessianOperator(CurvatureOperator):
    """The loss Hessian ``H = ∇²_θ L(θ)`` as a matrix-free operator of shape ``(p, p)``.

    ``L = Σ_b (n_b/n) loss_fn(f(X_b; θ), y_b)`` over the selected parameters θ (default: those
    with ``requires_grad=True``; ``H`` is then the principal block of the full Hessian);
    under ½-MSE, ``H = G + (1/n) Σ_i r_i·∇²f_i`` with ``G = JᵀJ/n`` (equal at an interpolating
    point). Flat vectors follow :attr:`selection` (``named_parameters`` order). A block
    ``H @ V`` costs one vectorised double-backward pass per batch and column block (plus one
    forward/backward per batch when the graph is not cached).

    Constructor arguments and errors are those of :class:`CurvatureOperator`
    ``(model, loss_fn, data, params=None, *, cache_graph=None, block_size=None, **options)``
    with the :class:`~dynstab.curvature.DataOptions`; the cached state is the
    gradient ``∇_θ L_b`` with its graph.

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> from dynstab.losses import half_mse
        >>> H = HessianOperator(model, half_mse, (X, torch.zeros(2, dtype=torch.float64)))
        >>> H.to_dense().tolist()  # XᵀX/n
        [[1.0, 1.0], [1.0, 2.0]]

    References:
        Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural Computation
        6(1) (Hessian-vector products by double differentiation).
    """

    SELF_ADJOINT = True
    PSD = False

    def _build(self, inputs: object, targets: Tensor | None) -> tuple[list[Tensor], list[int]]:
        """Gradient of one batch with its graph: (grads requiring grad, matching leaf indices)."""
        _, loss = self.problem.batch_loss(self.params, inputs, targets)  # type: ignore[arg-type]
        leaves = self._leaves()
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in idx], idx

    def _apply(self, state: object, inputs: object, V: Tensor, batched: bool) -> Tensor:
        grads, idx = cast(tuple[list[Tensor], list[int]], state)
        p, s = V.shape
        if not grads:
            return V.new_zeros(p, s)  # the loss is affine in θ: zero Hessian
        blocks = self.selection.unflatten(V)  # name -> (*shape, s)
        vlist = list(blocks.values())
        if batched:
            outs = [vlist[i].movedim(-1, 0) for i in idx]
        else:
            outs = [vlist[i][..., 0] for i in idx]
        hv = torch.autograd.grad(
            grads,
            self._leaves(),
            grad_outputs=outs,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        return self.selection.columns(hv, s if batched else None, V)
