"""Loaders for CIFAR-10 and MNIST files already on disk (nothing is downloaded).

* CIFAR-10, "python version": ``data_batch_1`` … ``data_batch_5`` and ``test_batch``, each a
  pickled dict with ``data`` (uint8, (N, 3072), channel-major) and ``labels``.
* MNIST, IDX format: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``).

Preprocessing follows Cohen et al. (2021): pixels / 255, then (``standardize_inputs``) centring
and scaling of every feature by the training mean and std; targets are one-hot 0/1 vectors for
the ½·mean squared error. ``n_train`` keeps the first images (``cifar10-5k`` of Cohen et al. 2021
is ``load_cifar10(root, n_train=5000)``); statistics are computed on the kept training images.

The CIFAR pickles are read with a restricted unpickler that only accepts NumPy array
reconstruction, so a tampered file cannot execute code.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
from torch import Tensor

from dynstab._checks import check_int, check_options
from dynstab.data.dataset import Dataset, _classification_dataset

__all__ = ["ImageOptions", "load_cifar10", "load_mnist", "read_idx"]

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                # files pickled with NumPy 1.x (the official batches); avoids NumPy 2's
                # deprecation of the numpy.core alias
                module = "numpy._core." + module[len("numpy.core.") :]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: CIFAR-10 batches only contain NumPy arrays, "
            "lists and dicts. Check that the file is the official 'python version' batch."
        )


class ImageOptions(TypedDict, total=False):
    """How image files become a :class:`Dataset`: the keywords of every loader of this module.

    :func:`load_cifar10` and :func:`load_mnist` read their own file formats and then share
    these options, documented and checked here once (an unknown keyword is a TypeError).

    Attributes:
        n_train: Keep the first ``n_train`` training images, >= 1; ``None`` (default): all.
        n_test: Keep the first ``n_test`` test images, >= 0; ``None`` (default): all.
        one_hot: One-hot ``(n, 10)`` 0/1 targets (default ``True``) or float class indices
            ``(n,)``.
        standardize_inputs: Per-feature centring and scaling with the statistics of the kept
            training images (Cohen et al. 2021); always-zero pixels are only centred.
            Default: ``True``.
        flatten: Inputs ``(n, C·H·W)`` instead of NCHW ``(n, C, H, W)``. Default: ``False``.
        dtype: dtype of inputs and targets. Default: ``torch.float64``.

    Example:
        >>> opts: ImageOptions = {"n_train": 5000, "flatten": True}  # cifar10-5k, flattened
        >>> sorted(opts)
        ['flatten', 'n_train']
    """

    n_train: int | None
    n_test: int | None
    one_hot: bool
    standardize_inputs: bool
    flatten: bool
    dtype: torch.dtype


def _finish(
    x: Tensor,
    y: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    meta: dict[str, Any],
    **options: Unpack[ImageOptions],
) -> Dataset:
    """Subset, scale pixels to [0, 1], standardize, flatten; 10-class targets (shared loader tail).

    Standardization is per pixel, so flattening before or after it gives the same numbers.
    """
    n_train, n_test = options.get("n_train"), options.get("n_test")
    if n_train is not None:
        check_int("n_train", n_train, minimum=1, maximum=x.shape[0])
        x, y = x[:n_train], y[:n_train]
    if n_test is not None:
        check_int("n_test", n_test, minimum=0, maximum=x_test.shape[0])
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    x = x.to(torch.float64) / 255.0
    x_test = x_test.to(torch.float64) / 255.0
    if options.get("flatten", False):  # standardization is per pixel: same numbers either way
        x, x_test = x.reshape(x.shape[0], -1), x_test.reshape(x_test.shape[0], -1)
    return _classification_dataset(
        x,
        y,
        x_test,
        y_test,
        one_hot_targets=options.get("one_hot", True),
        dtype=options.get("dtype", torch.float64),
        meta=meta,
        standardize_inputs=options.get("standardize_inputs", True),
    )


def _find_dir(root: Path, marker: str, sub: str) -> Path:
    for cand in (root, root / sub):
        if (cand / marker).exists() or (cand / (marker + ".gz")).exists():
            return cand
    raise FileNotFoundError(
        f"could not find {marker!r} in {str(root)!r} or {str(root / sub)!r}. Point root at the "
        "folder holding the extracted files (nothing is downloaded)."
    )


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    with open(path, "rb") as fh:
        d = _ArrayUnpickler(fh, encoding="bytes").load()
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected a pickled dict).")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} lacks the 'data'/'labels' entries of a CIFAR-10 batch.")
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3072 or arr.shape[0] != len(labels):
        raise ValueError(
            f"{path}: data must have shape (N, 3072) with N labels; got {arr.shape} and "
            f"{len(labels)} labels."
        )
    x = torch.from_numpy(arr.reshape(-1, 3, 32, 32).copy())
    return x, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def load_cifar10(root: str | Path, **options: Unpack[ImageOptions]) -> Dataset:
    """Load CIFAR-10 from the python-pickle batches in ``root``.

    Args:
        root: Folder with ``data_batch_1`` … ``data_batch_5`` and ``test_batch``, or its parent
            holding ``cifar-10-batches-py/``.
        **options: ``n_train``, ``n_test``, ``one_hot``, ``standardize_inputs``, ``flatten``,
            ``dtype`` (:class:`ImageOptions`).

    Returns:
        A :class:`Dataset` of 50 000 training and 10 000 test images ``(3, 32, 32)`` (or
        ``(3072,)`` flattened) with ``labels``/``labels_test`` (int64) set.

    Raises:
        FileNotFoundError: If the batches are missing.
        ValueError: If a batch is malformed or a size is out of range.
    """
    check_options("load_cifar10", options, ImageOptions)
    folder = _find_dir(Path(root), _CIFAR_TEST, "cifar-10-batches-py")
    xs, ys = [], []
    for name in _CIFAR_TRAIN:
        if not (folder / name).exists():
            raise FileNotFoundError(f"missing CIFAR-10 training batch {str(folder / name)!r}.")
        x, y = _read_cifar_batch(folder / name)
        xs.append(x)
        ys.append(y)
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST)
    return _finish(
        torch.cat(xs),
        torch.cat(ys),
        x_test,
        y_test,
        meta={"source": "cifar10", "root": str(folder)},
        **options,
    )


_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped if the name ends in ``.gz``.

    Layout: two zero bytes, a type code (0x08 = uint8, …), the number of dimensions, the
    dimensions as big-endian int32, then the data in C order.

    Returns:
        The array, with the file's dimensions.

    Raises:
        ValueError: If the header is malformed or the data size disagrees with it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">i4"))
    dt = _IDX_DTYPES[raw[2]]
    expected = int(np.prod(dims)) * dt.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(raw) - header} data bytes."
        )
    return np.frombuffer(io.BytesIO(raw[header:]).getbuffer(), dtype=dt).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"missing MNIST file {stem!r} (or .gz) in {str(folder)!r}.")


def load_mnist(root: str | Path, **options: Unpack[ImageOptions]) -> Dataset:
    """Load MNIST from the four IDX files in ``root`` (raw or ``.gz``).

    Args:
        root: Folder with the IDX files, or its parent holding ``MNIST/raw/``.
        **options: ``n_train``, ``n_test``, ``one_hot``, ``standardize_inputs``, ``flatten``,
            ``dtype`` (:class:`ImageOptions`).

    Returns:
        A :class:`Dataset` of the files' training and test images ``(1, 28, 28)`` (or
        ``(784,)`` flattened) with ``labels``/``labels_test`` (int64) set.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: If a file is malformed or images and labels disagree.
    """
    check_options("load_mnist", options, ImageOptions)
    folder = _find_dir(Path(root), "train-images-idx3-ubyte", "MNIST/raw")
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"MNIST {prefix} files disagree: images {images.shape}, labels {labels.shape}; "
                "expected (N, H, W) and (N,)."
            )
        x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
        parts.append((x, torch.from_numpy(labels.astype(np.int64))))
    (x, y), (x_test, y_test) = parts
    return _finish(
        x,
        y,
        x_test,
        y_test,
        meta={"source": "mnist", "root": str(folder)},
        **options,
    )
