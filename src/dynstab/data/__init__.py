"""Data: synthetic inputs and teachers, offline classification sets and file loaders.

Every generator takes an explicit ``generator`` (or ``seed``); nothing is downloaded and
nothing is written to disk. Data sets are frozen :class:`Dataset` objects; float64 by default.
"""

from dynstab.data.dataset import Dataset, one_hot, standardize, subset
from dynstab.data.files import ImageOptions, load_cifar10, load_mnist, read_idx
from dynstab.data.offline import digits_dataset, mnist1d_dataset
from dynstab.data.synthetic import (
    INPUT_DISTRIBUTIONS,
    cube_inputs,
    gaussian_inputs,
    make_regression_dataset,
    one_d_dataset,
    sphere_inputs,
    unbalanced_diagonal_init,
)
from dynstab.data.teachers import ReLUTeacher, SparseLinearTeacher

__all__ = [
    "INPUT_DISTRIBUTIONS",
    "Dataset",
    "ImageOptions",
    "ReLUTeacher",
    "SparseLinearTeacher",
    "cube_inputs",
    "digits_dataset",
    "gaussian_inputs",
    "load_cifar10",
    "load_mnist",
    "make_regression_dataset",
    "mnist1d_dataset",
    "one_d_dataset",
    "one_hot",
    "read_idx",
    "sphere_inputs",
    "standardize",
    "subset",
    "unbalanced_diagonal_init",
]
