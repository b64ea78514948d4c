"""The ``Dataset`` container and small helpers shared by every data source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from dynstab._checks import check_int, check_positive

__all__ = ["Dataset", "one_hot", "standardize", "subset"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split with optional class labels.

    Attributes:
        X: Training inputs, shape ``(n, *)``.
        y: Training targets for ½·MSE, shape ``(n,)`` (regression) or ``(n, C)`` (one-hot).
        X_test: Test inputs, shape ``(n_test, *)`` (``n_test`` may be 0).
        y_test: Test targets, same trailing shape as ``y``.
        meta: JSON-able description (source, sizes, seeds, preprocessing).
        labels: Integer class labels ``(n,)`` (int64) for classification data, else None.
        labels_test: Integer test labels ``(n_test,)``, else None.
        teacher: The target function ``X -> y`` for synthetic data (draw fresh test
            samples with it), else None. Not part of ``meta`` so that ``meta`` stays JSON-able.
    """

    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    labels: Tensor | None = None
    labels_test: Tensor | None = None
    teacher: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                "X and y must have the same number of samples; got "
                f"{tuple(self.X.shape)} and {tuple(self.y.shape)}."
            )
        if self.X_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(
                "X_test and y_test must have the same number of samples; got "
                f"{tuple(self.X_test.shape)} and {tuple(self.y_test.shape)}."
            )

    @property
    def n(self) -> int:
        """Number of training samples."""
        return int(self.X.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.X_test.shape[0])

    def to(self, dtype: torch.dtype) -> Dataset:
        """Return a copy with floating inputs and targets cast to ``dtype`` (labels untouched)."""
        return replace(
            self,
            X=self.X.to(dtype),
            y=self.y.to(dtype),
            X_test=self.X_test.to(dtype),
            y_test=self.y_test.to(dtype),
        )


def one_hot(labels: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Return 0/1 one-hot targets ``(n, num_classes)`` (the ½·MSE targets of Cohen et al. 2021).

    Raises:
        ValueError: If a label is outside ``[0, num_classes)``.

    Example:
        >>> one_hot(torch.tensor([0, 2]), 3)
        tensor([[1., 0., 0.],
                [0., 0., 1.]], dtype=torch.float64)
    """
    check_int("num_classes", num_classes, minimum=1)
    labels = torch.as_tensor(labels).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got range "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype)


def _classification_dataset(
    X: Tensor,
    labels: Tensor,
    X_test: Tensor,
    labels_test: Tensor,
    *,
    one_hot_targets: bool,
    dtype: torch.dtype,
    meta: dict[str, Any],
    standardize_inputs: bool | None = None,
    num_classes: int = 10,
) -> Dataset:
    """Build a classification :class:`Dataset` (the shared tail of the loaders).

    With ``standardize_inputs=True`` every input feature is centred and scaled by the training
    statistics (:func:`standardize`, shape-preserving); inputs are then cast to ``dtype``.
    Targets are one-hot ``(n, num_classes)`` (``one_hot_targets``) or float class indices
    ``(n,)``; the int64 labels are kept as given. ``meta`` is completed with ``n``, ``n_test``,
    ``one_hot`` and (unless ``standardize_inputs`` is None: inputs taken as given)
    ``standardized``.
    """
    if standardize_inputs:
        X, X_test_std = standardize(X, X_test)
        X_test = X_test if X_test_std is None else X_test_std
    meta = {**meta, "n": int(X.shape[0]), "n_test": int(X_test.shape[0])}
    if standardize_inputs is not None:
        meta["standardized"] = standardize_inputs
    meta["one_hot"] = one_hot_targets

    def targets(lab: Tensor) -> Tensor:
        return one_hot(lab, num_classes, dtype=dtype) if one_hot_targets else lab.to(dtype)

    return Dataset(
        X=X.to(dtype),
        y=targets(labels),
        X_test=X_test.to(dtype),
        y_test=targets(labels_test),
        meta=meta,
        labels=labels,
        labels_test=labels_test,
    )


def standardize(
    X: Tensor, X_test: Tensor | None = None, *, per_feature: bool = True, eps: float = 1e-12
) -> tuple[Tensor, Tensor | None]:
    """Centre and scale with the **training** statistics (population std, ddof = 0).

    ``per_feature=True`` uses the mean and std of every feature over the samples (the CIFAR
    preprocessing of Cohen et al. 2021); features with std ≤ ``eps`` are only centred.
    ``per_feature=False`` uses one scalar mean and std over all entries (mnist1d's convention).

    Args:
        X: Training inputs ``(n, *)``.
        X_test: Optional test inputs ``(n_test, *)`` transformed with the same statistics.
        per_feature: Per-feature or global statistics.
        eps: Threshold below which a std counts as zero, >= 0.

    Returns:
        ``(X_std, X_test_std)`` (the second is None when ``X_test`` is None).

    Example:
        >>> standardize(torch.tensor([[1.0], [3.0]]))[0]
        tensor([[-1.],
                [ 1.]])
    """
    check_positive("eps", eps, allow_zero=True)
    if X.shape[0] < 1:
        raise ValueError(f"X must contain at least one sample; got shape {tuple(X.shape)}.")
    if per_feature:
        mean, std = X.mean(dim=0), X.std(dim=0, unbiased=False)
    else:
        mean, std = X.mean(), X.std(unbiased=False)
    std = torch.where(std > eps, std, torch.ones_like(std))
    out = (X - mean) / std
    return out, (None if X_test is None else (X_test - mean) / std)


def subset(
    data: Dataset,
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Dataset:
    """Return a copy keeping ``n_train`` training and ``n_test`` test samples.

    Without a generator the first samples are kept (the "abridged" sets of Cohen et al. 2021);
    with one, a uniformly random subset (without replacement, original order preserved) is kept.

    Raises:
        ValueError: If a requested size exceeds the available one.
    """

    def pick(n_have: int, n_want: int | None, name: str) -> Tensor | None:
        if n_want is None:
            return None
        check_int(name, n_want, minimum=0, maximum=n_have)
        if generator is None:
            return torch.arange(n_want)
        return torch.sort(torch.randperm(n_have, generator=generator)[:n_want]).values

    tr = pick(data.n, n_train, "n_train")
    te = pick(data.n_test, n_test, "n_test")
    changes: dict[str, Any] = {"meta": {**data.meta}}
    if tr is not None:
        changes.update(X=data.X[tr], y=data.y[tr])
        if data.labels is not None:
            changes["labels"] = data.labels[tr]
        changes["meta"]["n"] = int(tr.numel())
    if te is not None:
        changes.update(X_test=data.X_test[te], y_test=data.y_test[te])
        if data.labels_test is not None:
            changes["labels_test"] = data.labels_test[te]
        changes["meta"]["n_test"] = int(te.numel())
    return replace(data, **changes)
