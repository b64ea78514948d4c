"""Curvature products on many randomly drawn mini-batches at once.

The operators of :mod:`dynstab.curvature.hessian` multiply by the curvature of *fixed* data.
Simulating linearised SGD needs a different product: every perturbation vector ``v_k`` is
multiplied by the curvature of its *own* mini-batch ``I_k``,

    Y_k = A_{I_k} V_k,   A_I = ∇²_θ L_I(θ)  (Hessian)   or   J_Iᵀ ∇²_F L_I J_I  (Gauss–Newton),

with ``L_I = loss_fn(f(X_I; θ), y_I)`` the mean over the batch (a sample drawn twice counts
twice) and ``V_k`` a block of ``s`` columns that share the batch. :class:`BatchCurvature` does
this for ``k`` batches in one vectorised pass: the batches are gathered into a ``(k, B, …)``
tensor and the per-batch product is mapped over them with :func:`torch.func.vmap`, so ``k``
products on batches of ``B`` samples cost about one product on ``k·B`` samples instead of ``k``
separate autograd passes. Hessian products are reverse-over-reverse (the gradient of
``⟨∇L_I, v⟩``), Gauss–Newton products a forward-mode ``J v``, the output-space Hessian and a
``vjp``. Where the model cannot be vectorised (an operation without a batching rule, random
layers, data-dependent control flow) the products fall back, once and with a
:class:`~dynstab.errors.DynstabWarning`, to the curvature operators of this package applied
batch by batch (``engine="loop"``): the same numbers, one autograd pass per batch.

:class:`IndexedData` gives the random access to samples that drawing batches needs: one batch
of tensors indexed along its first axis, a map-style ``torch.utils.data.Dataset``, or a
``DataLoader`` over one (its dataset and ``collate_fn`` are used; its own sampler is not).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap
from torch.utils.data import DataLoader, IterableDataset, default_collate
from torch.utils.data import Dataset as TorchDataset

from dynstab._checks import check_callable, check_choice, check_int
from dynstab._types import ForwardFn, Inputs, Params, UnpackFn
from dynstab.curvature.data import _describe, default_unpack, map_inputs
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import CurvatureProblem, _ForwardHook
from dynstab.errors import DataError, DynstabWarning

__all__ = ["CURVATURES", "BatchCurvature", "IndexedData"]

#: Curvature matrices :class:`BatchCurvature` multiplies by.
CURVATURES = ("hessian", "gauss_newton")
#: Samples per batch of the streamed full-data view (:meth:`IndexedData.stream`).
STREAM_CHUNK = 1024


def _tensor_leaves(batch: object) -> list[Tensor]:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, dict):
        return list(batch.values())
    return list(cast(tuple[Tensor, ...], batch))


def _index(batch: object, idx: Tensor) -> object:
    """``batch`` with every tensor indexed by ``idx`` along its first axis (structure kept)."""
    if isinstance(batch, Tensor):
        return batch[idx.to(batch.device)]
    if isinstance(batch, dict):
        return {k: v[idx.to(v.device)] for k, v in batch.items()}
    items = [t[idx.to(t.device)] for t in cast(tuple[Tensor, ...], batch)]
    return tuple(items) if isinstance(batch, tuple) else items


class IndexedData:
    """Random access to the samples of a data set (for batches drawn by index).

    Args:
        data: One batch of tensors sharing their first (sample) axis — ``(X, y)``,
            ``(x_1, …, x_k, y)`` or a dict of tensors —, a map-style
            ``torch.utils.data.Dataset`` (items are single samples, combined with
            ``collate_fn``), or a ``DataLoader`` over a map-style dataset (its ``dataset`` and
            ``collate_fn`` are used; its batch size, sampler and shuffling are not).
        unpack: ``unpack(batch) -> (inputs, targets)`` for other batch layouts (default: the
            rules of :mod:`dynstab.curvature.data`).
        device: Device the gathered batches are moved to; ``None`` leaves them where the data
            are. Index tensors are moved to the data's device (no copy of the data to the CPU).
        collate_fn: How dataset items are combined into a batch (datasets only). Default:
            the loader's, else :func:`torch.utils.data.default_collate`.

    Raises:
        TypeError: If ``data`` gives no random access (an iterable-style dataset, a loader
            over one, a generator, a list of batches) or ``unpack`` is not callable.
        DataError: If the tensors of a batch disagree on the number of samples or it is empty.

    Example:
        >>> X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5.0)
        >>> d = IndexedData((X, y))
        >>> inputs, targets = d.gather(torch.tensor([4, 0, 4]))
        >>> d.n, targets.tolist()
        (5, [4.0, 0.0, 4.0])
    """

    def __init__(
        self,
        data: object,
        *,
        unpack: UnpackFn | None = None,
        device: torch.device | str | None = None,
        collate_fn: Callable[[list[object]], object] | None = None,
    ) -> None:
        if unpack is not None:
            check_callable("unpack", unpack, "unpack(batch) -> (inputs, targets)")
        self.unpack = unpack
        self.device = None if device is None else torch.device(device)
        self.source = data
        self._tensors: object | None = None
        self._dataset: TorchDataset[object] | None = None
        self._loader: DataLoader[object] | None = None
        self._collate: Callable[[list[object]], object] = collate_fn or default_collate
        if isinstance(data, DataLoader):
            if isinstance(data.dataset, IterableDataset):
                raise TypeError(
                    "data is a DataLoader over an iterable-style dataset, which gives no random "
                    "access to samples; drawing SGD batches by index needs a map-style dataset "
                    "(with __getitem__ and __len__) or tensors (X, y)."
                )
            self._dataset = data.dataset
            self._loader = data
            if collate_fn is None and data.collate_fn is not None:
                self._collate = data.collate_fn
            n = len(data.dataset)  # type: ignore[arg-type]
        elif isinstance(data, TorchDataset) and not isinstance(data, IterableDataset):
            if not hasattr(data, "__len__"):
                raise TypeError(
                    f"data is a map-style dataset without __len__ ({type(data).__name__}); the "
                    "number of samples n is needed to draw batches. Define __len__."
                )
            self._dataset = data
            n = len(data)
        elif (
            isinstance(data, (tuple, list))
            and len(data) >= 1
            and all(isinstance(t, Tensor) for t in data)
        ) or (
            isinstance(data, dict) and data and all(isinstance(t, Tensor) for t in data.values())
        ):
            leaves = _tensor_leaves(data)
            if any(t.ndim == 0 for t in leaves):
                raise DataError(
                    "every tensor of data needs a leading sample axis; got shapes "
                    f"{[tuple(t.shape) for t in leaves]}."
                )
            sizes = {int(t.shape[0]) for t in leaves}
            if len(sizes) != 1:
                raise DataError(
                    "the tensors of data must share their first (sample) axis; got shapes "
                    f"{[tuple(t.shape) for t in leaves]}."
                )
            self._tensors = data
            n = sizes.pop()
        else:
            raise TypeError(
                "drawing SGD batches needs random access to the samples: pass tensors (X, y) "
                "(or (x_1, …, x_k, y), or a dict of tensors), a map-style torch Dataset, or a "
                f"DataLoader over one; got {_describe(data)}. A list of batches or a generator "
                "cannot be indexed by sample."
            )
        if n < 1:
            raise DataError("data is empty (0 samples); pass at least one sample.")
        self.n: int = int(n)

    def gather(self, idx: Tensor) -> tuple[Inputs, Tensor | None]:
        """The samples ``idx`` (int64, any shape flattened in order) as ``(inputs, targets)``.

        Repeated indices give repeated samples (sampling with replacement).

        Raises:
            DataError: If an index is out of range.
        """
        flat = idx.reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.n):
            raise DataError(
                f"sample indices must lie in [0, {self.n}); got range [{int(flat.min())}, "
                f"{int(flat.max())}]."
            )
        if self._tensors is not None:
            batch = _index(self._tensors, flat)
        else:
            assert self._dataset is not None
            batch = self._collate([self._dataset[int(i)] for i in flat.tolist()])
        inputs, targets = self._split(batch)
        if self.device is not None:
            dev = self.device

            def move(t: Tensor) -> Tensor:
                return t.to(dev, non_blocking=True)

            inputs = map_inputs(inputs, move)
            targets = None if targets is None else move(targets)
        return inputs, targets

    def _split(self, batch: object) -> tuple[Inputs, Tensor | None]:
        if self.unpack is not None:
            return self.unpack(batch)
        return default_unpack(batch)

    def stream(self, chunk: int = STREAM_CHUNK) -> object:
        """The whole data set as ``data=`` for :class:`~dynstab.curvature.CurvatureProblem`.

        One batch (the tensors themselves) when ``n <= chunk``; else a re-iterable of batches
        of ``chunk`` samples in index order (a loader the caller gave is returned as is).
        """
        check_int("chunk", chunk, minimum=1)
        if self._loader is not None:
            return self._loader
        if self._tensors is not None and self.n <= chunk:
            return self._tensors
        return _Chunks(self, chunk)


class _Chunks:
    """Re-iterable view of :class:`IndexedData` in consecutive batches of ``chunk`` samples."""

    def __init__(self, data: IndexedData, chunk: int) -> None:
        self.data = data
        self.chunk = chunk

    def __iter__(self) -> Iterator[tuple[Inputs, Tensor | None]]:
        for start in range(0, self.data.n, self.chunk):
            stop = min(self.data.n, start + self.chunk)
            yield self.data.gather(torch.arange(start, stop))

    def __len__(self) -> int:
        return -(-self.data.n // self.chunk)


def _leading(inputs: Inputs, k: int, B: int) -> Inputs:
    """Reshape every input tensor's sample axis ``k·B`` into ``(k, B)``."""
    return map_inputs(inputs, lambda t: t.reshape(k, B, *t.shape[1:]))


class BatchCurvature:
    """Products with the curvature of a different mini-batch for every row block.

    ``apply(indices, V)`` returns ``Y`` with ``Y[i] = A_{I_i} V[i]`` for ``V`` of shape
    ``(k, s, p)`` (``k`` batches, ``s`` vectors per batch, ``p`` parameters; vectors follow the
    problem's :class:`~dynstab.curvature.ParameterSelection`) and ``indices`` of shape
    ``(k, B)``, where ``A_I`` is the Hessian or the Gauss–Newton matrix of the batch loss
    ``L_I = loss_fn(f(X_I; θ), y_I)`` (the batch mean) at the problem's point. Cost: one
    vectorised pass over the ``k·B`` gathered samples with ``s`` tangents each (``"vmap"``
    engine), or ``k`` curvature operators of :mod:`dynstab.curvature` built on the batches
    (``"loop"`` engine). :meth:`apply_full` multiplies by the full-data curvature (all batches
    equal: full-batch GD).

    Args:
        problem: The set-up model, loss, full data, parameter selection and device.
        data: Random access to the same samples (:class:`IndexedData`).
        curvature: ``"hessian"`` (default) or ``"gauss_newton"``.
        engine: ``"auto"`` (vectorised, falling back to the loop once if the model cannot be
            vectorised), ``"vmap"`` or ``"loop"``.
        chunk_size: Batches per vectorised call (bounds the memory of one call); ``None``
            processes all ``k`` at once.

    Attributes:
        num_products: Matrix-vector products done (columns multiplied).
        num_batches: Batch curvatures used (one per row block and call).
        engine: The engine in use (``"vmap"`` or ``"loop"`` after a fallback).

    Raises:
        ValueError: On an unknown curvature or engine, a problem without a loss, or data whose
            size differs from the problem's.

    Example:
        >>> from dynstab.losses import half_mse
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> bc = BatchCurvature(CurvatureProblem(model, half_mse, (X, y)), IndexedData((X, y)))
        >>> V = torch.ones(2, 1, 2, dtype=torch.float64)  # batch {0} and batch {1, 1}
        >>> bc.apply(torch.tensor([[0, 0], [1, 1]]), V)[:, 0].tolist()  # H_I = x xᵀ
        [[1.0, 0.0], [0.0, 4.0]]
    """

    def __init__(
        self,
        problem: CurvatureProblem,
        data: IndexedData,
        *,
        curvature: str = "hessian",
        engine: str = "auto",
        chunk_size: int | None = None,
    ) -> None:
        check_choice("curvature", curvature, CURVATURES)
        check_choice("engine", engine, ("auto", "vmap", "loop"))
        if chunk_size is not None:
            check_int("chunk_size", chunk_size, minimum=1)
        if problem.loss_fn is None:
            raise ValueError("BatchCurvature needs a loss function; the problem has none.")
        if data.n != problem.n:
            raise ValueError(
                f"the indexed data have {data.n} samples but the problem's data have "
                f"{problem.n}; pass the same data set to both."
            )
        self.problem = problem
        self.data = data
        self.curvature = curvature
        self.engine = "vmap" if engine == "auto" else engine
        self._fallback = engine == "auto"
        self.chunk_size = chunk_size
        self.selection: ParameterSelection = problem.selection
        self.num_products = 0
        self.num_batches = 0
        self.note: str | None = None
        self._full: CurvatureOperator | None = None

    @property
    def p(self) -> int:
        """Number of parameters (length of the vectors)."""
        return self.selection.numel

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the products (the parameters')."""
        return self.problem.dtype

    @property
    def device(self) -> torch.device:
        """Device of the products."""
        return self.problem.device

    # -- full data -----------------------------------------------------------------------------

    def full_operator(self) -> CurvatureOperator:
        """The full-data curvature operator (built once; products counted separately)."""
        if self._full is None:
            cls = HessianOperator if self.curvature == "hessian" else GaussNewtonOperator
            self._full = cls.from_problem(self.problem)
        return self._full

    def apply_full(self, V: Tensor) -> Tensor:
        """``A V`` with the full-data curvature for ``V`` of shape ``(k, s, p)``."""
        k, s, p = self._check(V)
        op = self.full_operator()
        out = (op @ V.reshape(k * s, p).T).T.reshape(k, s, p)
        self.num_products += k * s
        self.num_batches += 1
        return out

    # -- per-batch products --------------------------------------------------------------------

    def _check(self, V: Tensor) -> tuple[int, int, int]:
        p = self.p
        if not isinstance(V, Tensor) or V.ndim != 3 or V.shape[2] != p:
            shape = tuple(V.shape) if isinstance(V, Tensor) else type(V).__name__
            raise ValueError(f"V must have shape (k, s, {p}); got {shape}.")
        return int(V.shape[0]), int(V.shape[1]), p

    def apply(self, indices: Tensor, V: Tensor) -> Tensor:
        """``Y[i] = A_{I_i} V[i]`` for ``indices`` ``(k, B)`` and ``V`` ``(k, s, p)``.

        Raises:
            ValueError: On mismatched shapes or out-of-range indices.
        """
        k, s, _ = self._check(V)
        if not isinstance(indices, Tensor) or indices.ndim != 2 or indices.shape[0] != k:
            shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices)
            raise ValueError(f"indices must have shape ({k}, B); got {shape}.")
        V = V.to(dtype=self.dtype, device=self.device)
        out: Tensor | None = None
        if self.engine == "vmap":
            try:
                out = self._apply_vmap(indices, V)
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                if not self._fallback:
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                self.note = first[:300]
                self.engine = "loop"
                warnings.warn(
                    f"BatchCurvature: the model cannot be vectorised over batches ({self.note}); "
                    "using one curvature operator per batch instead (same values, slower).",
                    DynstabWarning,
                    stacklevel=2,
                )
        if out is None:
            out = self._apply_loop(indices, V)
        self.num_products += k * s
        self.num_batches += k
        return out

    def _apply_vmap(self, indices: Tensor, V: Tensor) -> Tensor:
        k, B = indices.shape
        inputs, targets = self.data.gather(indices)
        assert targets is not None
        inputs = _leading(inputs, k, B)
        targets = targets.reshape(k, B, *targets.shape[1:])
        fn = self._hvp_block if self.curvature == "hessian" else self._gnvp_block
        with self.problem.evaluation():
            return vmap(fn, chunk_size=self.chunk_size)(inputs, targets, V)

    def _loss(self, values: Params, inputs: Inputs, targets: Tensor) -> Tensor:
        assert self.problem.loss_fn is not None
        out = self.problem.outputs(values, inputs, explain=False)
        return self.problem.loss_fn(out, targets).reshape(())

    def _hvp_block(self, inputs: Inputs, targets: Tensor, V: Tensor) -> Tensor:
        """Hessian of one batch times the ``s`` rows of ``V`` (reverse over reverse)."""
        sel = self.selection
        point = self.problem.point

        def one(v: Tensor) -> Tensor:
            tangent = sel.unflatten(v)

            def directional(values: Params) -> Tensor:
                g = grad(self._loss)(values, inputs, targets)
                out = torch.zeros((), dtype=v.dtype, device=v.device)
                for name in sel.names:
                    out = out + (g[name] * tangent[name]).sum()
                return out

            return sel.flatten(grad(directional)(point))

        return vmap(one)(V)

    def _gnvp_block(self, inputs: Inputs, targets: Tensor, V: Tensor) -> Tensor:
        """Gauss–Newton matrix of one batch times the ``s`` rows of ``V``."""
        sel = self.selection
        point = self.problem.point
        loss_fn = self.problem.loss_fn
        assert loss_fn is not None

        def f(values: Params) -> Tensor:
            return self.problem.outputs(values, inputs, explain=False)

        out, pullback = cast(tuple[Tensor, Callable[[Tensor], tuple[Params]]], vjp(f, point))

        def one(v: Tensor) -> Tensor:
            Jv = cast(tuple[Tensor, Tensor], jvp(f, (point,), (sel.unflatten(v),)))[1]

            def directional(o: Tensor) -> Tensor:
                g = grad(lambda oo: loss_fn(oo, targets).reshape(()))(o)
                return (g * Jv).sum()

            MJv = grad(directional)(out)
            (g,) = pullback(MJv)
            return sel.flatten(cast(Mapping[str, Tensor], g))

        return vmap(one)(V)

    def _apply_loop(self, indices: Tensor, V: Tensor) -> Tensor:
        problem = self.problem
        cls = HessianOperator if self.curvature == "hessian" else GaussNewtonOperator
        point = dict(problem.point)
        rows = []
        for i in range(indices.shape[0]):
            inputs, targets = self.data.gather(indices[i])
            sub = CurvatureProblem(
                problem.model,
                problem.loss_fn,
                [(inputs, targets)],
                point,
                allow_stochastic=problem.allow_stochastic,
                device=problem.device,
                unpack=_identity,
                forward=_forward_hook(problem),
                who="BatchCurvature",
            )
            op = cls.from_problem(sub, cache_graph=True)
            rows.append((op @ V[i].T).T)
        return torch.stack(rows)


def _identity(batch: object) -> tuple[Inputs, Tensor | None]:
    return cast(tuple[Inputs, Tensor | None], batch)


def _forward_hook(problem: CurvatureProblem) -> ForwardFn | None:
    """The ``forward(model, inputs)`` hook the problem was set up with, if any."""
    module = problem._module
    return module.fn if isinstance(module, _ForwardHook) else None
