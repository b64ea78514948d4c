"""Small classification data sets generated or bundled locally: mnist1d and sklearn digits.

Nothing is downloaded and nothing is written to disk. Targets are one-hot 0/1 vectors for the
½·mean squared error (the convention of Cohen et al. 2021) or integer labels.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from dynstab._checks import check_choice, check_int
from dynstab.data.dataset import Dataset, _classification_dataset

__all__ = ["digits_dataset", "mnist1d_dataset"]


def mnist1d_dataset(
    n_train: int = 4000,
    n_test: int = 1000,
    *,
    seed: int = 42,
    one_hot: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Generate the MNIST-1D data set (Greydanus 2020) locally with ``mnist1d.data.make_dataset``.

    Calls ``make_dataset`` with the package's default arguments except ``num_samples`` (the
    smallest multiple of 10 ≥ n_train + n_test), ``train_split`` and ``seed``; the package's
    download/cache path (``get_dataset``) is never used. ``make_dataset`` seeds Python's and
    NumPy's global RNGs; their states are saved and restored around the call. Inputs have
    shape ``(n, 40)`` and are already standardized by mnist1d (one scalar mean and std over the
    whole set). With the defaults (n_train = 4000, n_test = 1000, seed = 42) this is the
    standard MNIST-1D split.

    Args:
        n_train: Training size, >= 1.
        n_test: Test size, >= 0.
        seed: Seed passed to mnist1d.
        one_hot: One-hot ``(n, 10)`` targets for ½·MSE (True) or float class indices ``(n,)``.
        dtype: dtype of inputs and targets.

    Returns:
        A :class:`Dataset` with ``labels``/``labels_test`` (int64) set.

    Raises:
        ImportError: If the ``mnist1d`` package is missing (``pip install dynstab[data]``).
    """
    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test, minimum=0)
    check_int("seed", seed, minimum=0)
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mnist1d_dataset needs the mnist1d package; install it with `pip install mnist1d` "
            "(or the dynstab[data] extra)."
        ) from err
    total = n_train + n_test
    num_samples = -(-total // 10) * 10
    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0  # split ourselves: everything comes back in 'x'
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw: dict[str, Any] = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = torch.from_numpy(np.asarray(raw["x"], dtype=np.float64))
    y = torch.from_numpy(np.asarray(raw["y"], dtype=np.int64))
    X, labels = x[:n_train], y[:n_train]
    X_test, labels_test = x[n_train:total], y[n_train:total]
    meta = {"source": "mnist1d", "seed": seed, "num_samples_generated": num_samples}
    return _classification_dataset(
        X, labels, X_test, labels_test, one_hot_targets=one_hot, dtype=dtype, meta=meta
    )


def digits_dataset(
    n_train: int = 1500,
    n_test: int | None = None,
    *,
    layout: str = "flat",
    seed: int | None = 0,
    one_hot: bool = True,
    standardize_inputs: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Load scikit-learn's bundled 8×8 digits (1797 images, 10 classes; no download).

    Pixels (0–16) are divided by 16, then (``standardize_inputs``) centred and scaled per
    feature with the training statistics (constant pixels are only centred).

    Args:
        n_train: Training size, 1 ≤ n_train < 1797.
        n_test: Test size; None takes all remaining images.
        layout: ``"flat"`` → inputs ``(n, 64)``; ``"image"`` → ``(n, 1, 8, 8)``.
        seed: Seed of the random permutation before splitting; None keeps the file order.
        one_hot: One-hot ``(n, 10)`` targets (True) or float class indices ``(n,)``.
        standardize_inputs: Per-feature standardization with training statistics.
        dtype: dtype of inputs and targets.

    Returns:
        A :class:`Dataset` with ``labels``/``labels_test`` (int64) set.

    Raises:
        ValueError: If the sizes do not fit in 1797 images or ``layout`` is unknown.
    """
    check_choice("layout", layout, ("flat", "image"))
    from sklearn.datasets import load_digits  # deferred: optional dependency (extra [data])

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64)) / 16.0
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    total = x.shape[0]
    check_int("n_train", n_train, minimum=1, maximum=total - 1)
    if n_test is None:
        n_test = total - n_train
    check_int("n_test", n_test, minimum=0, maximum=total - n_train)
    if seed is not None:
        perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        x, y = x[perm], y[perm]
    X, X_test = x[:n_train], x[n_train : n_train + n_test]
    labels, labels_test = y[:n_train], y[n_train : n_train + n_test]
    if layout == "image":  # standardization is per pixel: the same numbers in either layout
        X, X_test = X.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    meta = {"source": "sklearn.datasets.load_digits", "seed": seed, "layout": layout}
    return _classification_dataset(
        X,
        labels,
        X_test,
        labels_test,
        one_hot_targets=one_hot,
        dtype=dtype,
        meta=meta,
        standardize_inputs=standardize_inputs,
    )
