"""Data for curvature computations: any re-iterable of batches, streamed, validated once.

``data`` is one batch (the whole data set) or a re-iterable of batches — a
``torch.utils.data.DataLoader``, a list, any object whose ``__iter__`` starts a fresh pass.
Batches are read one at a time on every pass and never all held in memory; a one-shot iterator
(a generator, ``iter(list)``) cannot be read twice and is refused (pass ``list(data)`` to hold
it in memory on purpose).

A batch is split into ``(inputs, targets)`` by ``unpack`` (default below) and the model is
called as ``model(x)``, ``model(*inputs)`` or ``model(**inputs)`` for a tensor, a tuple or a
dict of inputs (a custom ``forward(model, inputs)`` hook is applied by
:class:`~dynstab.curvature.CurvatureProblem`). Default unpacking:

* ``(x, y)``: one input and the targets; ``(x_1, …, x_k, y)``: ``k`` positional inputs;
* ``{"x": …, "mask": …, "y": …}``: the entry under ``"y"``, ``"target"``, ``"targets"``,
  ``"label"`` or ``"labels"`` is the targets, the other entries are keyword inputs;
* a bare tensor: inputs without targets (Jacobians and Gram matrices only).

The sample count ``n_b`` of a batch is the leading size of its targets (of its inputs when
there are none); every input tensor must share it. Batches are combined with weights
``n_b / n``. The first pass validates every batch (structure, sizes, finite values) and records
the sizes; later passes check that the loader gives the same sizes again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from dynstab._checks import check_callable, count_non_finite
from dynstab._types import Data, Inputs, UnpackFn
from dynstab.errors import DataError

__all__ = ["TARGET_KEYS", "Dataset", "input_tensors", "map_inputs", "prepare_data"]

#: Keys under which a dict batch holds its targets (default unpacking).
TARGET_KEYS = ("y", "target", "targets", "label", "labels")


def input_tensors(inputs: Inputs) -> list[Tensor]:
    """The tensors of ``inputs`` (a tensor, a tuple or a dict of tensors), in order."""
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, dict):
        return list(inputs.values())
    return list(inputs)


def map_inputs(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """Apply ``fn`` to every tensor of ``inputs``, keeping its structure."""
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, dict):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


def _describe(obj: object) -> str:
    if isinstance(obj, Tensor):
        return f"Tensor{tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of length {len(obj)}"
    if isinstance(obj, dict):
        return f"dict with keys {sorted(map(str, obj))}"
    return type(obj).__name__


def _is_single_batch(data: object) -> bool:
    """One batch given directly: a tuple/list of >= 2 tensors, or a dict of tensors."""
    if isinstance(data, (tuple, list)):
        return len(data) >= 2 and all(isinstance(t, Tensor) for t in data)
    if isinstance(data, dict):
        return bool(data) and all(isinstance(t, Tensor) for t in data.values())
    return False


def default_unpack(batch: object) -> tuple[Inputs, Tensor | None]:
    """Split a batch into ``(inputs, targets)`` (see the module docstring).

    Raises:
        TypeError: If the batch has none of the supported structures.
        DataError: If a dict batch has several target entries or no input entry.
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) >= 2 and all(isinstance(t, Tensor) for t in batch):
            inputs: Inputs = batch[0] if len(batch) == 2 else tuple(batch[:-1])
            return inputs, batch[-1]
        if len(batch) == 1 and isinstance(batch[0], Tensor):
            return batch[0], None
    if isinstance(batch, dict) and all(isinstance(t, Tensor) for t in batch.values()):
        keys = [k for k in TARGET_KEYS if k in batch]
        if len(keys) > 1:
            raise DataError(
                f"a dict batch must hold its targets under exactly one of {list(TARGET_KEYS)}; "
                f"got several ({keys}). Pass unpack=lambda b: (inputs, targets)."
            )
        rest = {str(k): v for k, v in batch.items() if k not in keys}
        if not rest:
            raise DataError(
                f"a dict batch needs input entries besides the targets; got keys {sorted(batch)}."
            )
        return rest, (batch[keys[0]] if keys else None)
    raise TypeError(
        "a batch must be an (inputs, targets) pair of tensors, (input_1, …, input_k, targets), "
        f"or a dict of tensors; got {_describe(batch)}. Pass unpack=lambda batch: (inputs, "
        "targets) for other layouts."
    )


@dataclass(eq=False)
class Dataset:
    """A validated, re-iterable view of ``data``: batches are streamed on every pass.

    Iterating yields ``(inputs, targets)`` per batch (moved to ``device`` when one is set;
    ``targets`` is ``None`` for input-only data). ``n`` and ``sizes`` are known after the first
    complete pass (reading them triggers one).

    Args:
        source: One batch, or a re-iterable of batches.
        single: Whether ``source`` is one batch (not an iterable of batches).
        unpack: ``unpack(batch) -> (inputs, targets)``; ``None`` uses the default rules.
        device: Where batches are moved; ``None`` leaves them where they are.
        require_targets: Whether every batch must have targets (loss-based quantities).
    """

    source: object
    _: KW_ONLY
    single: bool
    unpack: UnpackFn | None = None
    device: torch.device | None = None
    require_targets: bool = True
    _sizes: tuple[int, ...] | None = field(default=None, init=False, repr=False)

    def on(self, device: torch.device | None) -> Dataset:
        """The same data, moved to ``device`` batch by batch (validation results kept)."""
        if device == self.device:
            return self
        out = replace(self, device=device)
        out._sizes = self._sizes
        return out

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def sizes(self) -> tuple[int, ...]:
        """Samples per batch ``(n_1, …, n_B)`` (one validating pass if not yet known)."""
        if self._sizes is None:
            for _ in self:
                pass
        assert self._sizes is not None
        return self._sizes

    @property
    def n(self) -> int:
        """Total number of samples ``Σ n_b``."""
        return sum(self.sizes)

    @property
    def num_batches(self) -> int:
        """Number of batches per pass."""
        return len(self.sizes)

    def weights(self) -> list[float]:
        """Batch weights ``n_b / n``."""
        n = self.n
        return [s / n for s in self.sizes]

    # -- iteration -----------------------------------------------------------------------------

    def _raw(self) -> Iterator[object]:
        if self.single:
            yield self.source
        else:
            yield from cast(Iterable[object], self.source)

    def _split(self, i: int, batch: object) -> tuple[Inputs, Tensor | None]:
        if self.unpack is None:
            try:
                return default_unpack(batch)
            except DataError as exc:
                raise DataError(f"data batch {i}: {exc}") from None
            except TypeError as exc:
                raise TypeError(f"data batch {i}: {exc}") from None
        result = self.unpack(batch)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"unpack(batch) must return an (inputs, targets) pair; got {_describe(result)} "
                f"for batch {i}."
            )
        inputs, targets = result
        ok = isinstance(inputs, Tensor) or (
            isinstance(inputs, (tuple, dict))
            and len(inputs) > 0
            and all(isinstance(t, Tensor) for t in input_tensors(inputs))
        )
        if not ok or not (targets is None or isinstance(targets, Tensor)):
            raise TypeError(
                "unpack(batch) must return (inputs, targets) with inputs a tensor, a tuple or a "
                f"dict of tensors and targets a tensor or None; got ({_describe(inputs)}, "
                f"{_describe(targets)}) for batch {i}."
            )
        return inputs, targets

    def _validate(self, i: int, inputs: Inputs, targets: Tensor | None) -> int:
        """Check one batch on the first pass; return its sample count."""
        tensors = input_tensors(inputs)
        if targets is None and self.require_targets:
            raise TypeError(
                f"data batch {i} must be an (inputs, targets) pair of tensors (or a dict with a "
                f"'y'/'labels' entry): this quantity needs a loss; got inputs only "
                f"({_describe(inputs)})."
            )
        if any(t.ndim == 0 for t in tensors) or (targets is not None and targets.ndim == 0):
            shapes = [tuple(t.shape) for t in tensors]
            tshape = None if targets is None else tuple(targets.shape)
            raise DataError(
                f"data batch {i}: inputs and targets need a leading sample axis; got shapes "
                f"{shapes} and {tshape}."
            )
        n_b = int(targets.shape[0]) if targets is not None else int(tensors[0].shape[0])
        mismatched = [tuple(t.shape) for t in tensors if t.shape[0] != n_b]
        if mismatched:
            raise DataError(
                f"data batch {i}: inputs and targets must have the same number of samples; got "
                f"inputs {[tuple(t.shape) for t in tensors]} and targets "
                f"{None if targets is None else tuple(targets.shape)}."
            )
        if n_b == 0:
            raise DataError(f"data batch {i} is empty (0 samples); drop it or check the loader.")
        for what, group in (("inputs", tensors), ("targets", [] if targets is None else [targets])):
            for t in group:
                bad = count_non_finite(t)
                if bad:
                    raise DataError(
                        f"data batch {i}: {what} must be finite (the loss is not finite "
                        f"otherwise); got {bad} non-finite entries of {t.numel()}. Remove or "
                        "impute them."
                    )
        return n_b

    def __iter__(self) -> Iterator[tuple[Inputs, Tensor | None]]:
        first = self._sizes is None
        sizes: list[int] = []
        device = self.device

        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=True)

        for i, raw in enumerate(self._raw()):
            inputs, targets = self._split(i, raw)
            if first:
                n_b = self._validate(i, inputs, targets)
            else:
                lead = targets if targets is not None else input_tensors(inputs)[0]
                n_b = int(lead.shape[0])
                assert self._sizes is not None
                if i >= len(self._sizes) or n_b != self._sizes[i]:
                    expected = self._sizes[i] if i < len(self._sizes) else "no batch"
                    raise DataError(
                        f"data changed between passes: batch {i} has {n_b} samples now and had "
                        f"{expected} on the first pass. Curvature products need the same data on "
                        "every pass: use a DataLoader with drop_last=False (or a fixed sampler)."
                    )
            sizes.append(n_b)
            if device is not None:
                inputs = map_inputs(inputs, move)
                if targets is not None:
                    targets = move(targets)
            yield inputs, targets
        if first:
            if not sizes:
                raise DataError(
                    "data is empty (no batches); pass at least one (inputs, targets) pair."
                )
            self._sizes = tuple(sizes)
        elif self._sizes is not None and len(sizes) != len(self._sizes):
            raise DataError(
                f"data changed between passes: {len(sizes)} batches now, {len(self._sizes)} on "
                "the first pass. Curvature products need the same data on every pass."
            )

    # -- materialisation (explicit) --------------------------------------------------------------

    def inputs(self) -> Tensor:
        """All (single-tensor) inputs concatenated along the sample axis (held in memory).

        Raises:
            DataError: If the batches have several inputs (use the batches instead).
        """
        parts = []
        for inputs, _ in self:
            if not isinstance(inputs, Tensor):
                raise DataError(
                    "inputs() concatenates single-tensor inputs; these batches have "
                    f"{_describe(inputs)} inputs. Iterate over the batches instead."
                )
            parts.append(inputs)
        return torch.cat(parts)

    def targets(self) -> Tensor:
        """All targets concatenated along the sample axis (held in memory)."""
        parts = []
        for _, targets in self:
            if targets is None:
                raise DataError("targets(): these batches have no targets.")
            parts.append(targets)
        return torch.cat(parts)


def prepare_data(
    data: Data | Dataset | object,
    *,
    unpack: UnpackFn | None = None,
    device: torch.device | str | None = None,
    require_targets: bool = True,
) -> Dataset:
    """Wrap ``data`` as a streamed, validated :class:`Dataset` (nothing is read yet).

    Args:
        data: One batch — ``(inputs, targets)``, ``(x_1, …, x_k, targets)``, a dict of tensors
            (or a bare input tensor when ``require_targets=False``) — or a re-iterable of
            batches (``DataLoader``, list, …).
        unpack: ``unpack(batch) -> (inputs, targets)`` for other batch layouts.
        device: Move every batch there; ``None`` leaves batches where they are.
        require_targets: Whether batches must carry targets. Default: ``True``.

    Returns:
        :class:`Dataset` (batches are validated on the first pass).

    Raises:
        TypeError: If ``data`` is neither a batch nor a re-iterable of batches: a one-shot
            iterator (generator), a map-style ``torch.utils.data.Dataset`` (wrap it in a
            ``DataLoader``), or another type; or if ``unpack`` is not callable.

    Example:
        >>> X, y = torch.zeros(5, 2), torch.zeros(5)
        >>> ds = prepare_data([(X[:3], y[:3]), (X[3:], y[3:])])
        >>> ds.n, ds.weights()
        (5, [0.6, 0.4])
    """
    if unpack is not None:
        check_callable("unpack", unpack, "unpack(batch) -> (inputs, targets)")
    dev = None if device is None else torch.device(device)
    if isinstance(data, Dataset):
        return data.on(dev) if dev is not None else data
    kw = {"unpack": unpack, "device": dev, "require_targets": require_targets}
    if _is_single_batch(data) or (isinstance(data, Tensor) and not require_targets):
        if isinstance(data, Tensor) and data.ndim == 0:
            raise TypeError("inputs must have a leading sample axis; got a 0-dim tensor.")
        return Dataset(data, single=True, **kw)  # type: ignore[arg-type]
    if isinstance(data, (Tensor, str, bytes)):
        raise TypeError(
            "data must be an (inputs, targets) pair of tensors or an iterable of such pairs "
            f"(e.g. a DataLoader); got {_describe(data)}."
        )
    if isinstance(data, Iterator):
        raise TypeError(
            f"data is a one-shot iterator ({type(data).__name__}): it can be read only once, but "
            "curvature products read the data on every product. Pass a DataLoader or a list of "
            "batches (list(data) holds it in memory)."
        )
    if isinstance(data, TorchDataset) and not isinstance(data, (IterableDataset, DataLoader)):
        raise TypeError(
            f"data is a map-style torch Dataset ({type(data).__name__}), whose items are single "
            "samples; wrap it in torch.utils.data.DataLoader(data, batch_size=...)."
        )
    if isinstance(data, Mapping):
        raise TypeError(
            f"data is a dict but not a batch of tensors ({_describe(data)}); give a dict of "
            "tensors, a batch tuple or an iterable of batches."
        )
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        raise TypeError(
            "data given as a tuple of tensors needs at least (inputs, targets); got "
            f"{_describe(data)}."
        )
    if isinstance(data, Iterable):
        return Dataset(data, single=False, **kw)  # type: ignore[arg-type]
    raise TypeError(
        "data must be an (inputs, targets) pair of tensors or an iterable of such pairs "
        f"(e.g. a DataLoader); got {_describe(data)}."
    )
