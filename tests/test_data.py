import gzip
import math
import pickle
import random
import struct

import numpy as np
import pytest
import torch

from dynstab.data import (
    Dataset,
    ImageOptions,
    ReLUTeacher,
    SparseLinearTeacher,
    cube_inputs,
    digits_dataset,
    gaussian_inputs,
    load_cifar10,
    load_mnist,
    make_regression_dataset,
    mnist1d_dataset,
    one_d_dataset,
    one_hot,
    read_idx,
    sphere_inputs,
    standardize,
    subset,
    unbalanced_diagonal_init,
)
from dynstab.models import DiagonalLinearNet
from dynstab.norms import balancedness

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- inputs


def test_input_distributions_moments_and_support():
    n, d = 4000, 5
    G = gaussian_inputs(n, d, generator=gen(0))
    S = sphere_inputs(n, d, generator=gen(1))
    C = cube_inputs(n, d, generator=gen(2))
    for X in (G, S, C):
        assert X.shape == (n, d)
        assert X.dtype == f64
    torch.testing.assert_close(S.norm(dim=1), torch.full((n,), math.sqrt(d), dtype=f64))
    assert float(C.abs().max()) <= 1.0
    # second moments s_j: 1 (Gaussian), 1 (sphere, E xxᵀ = I), 1/3 (cube); checked to 5 s.e.
    for X, s, var_x2 in ((G, 1.0, 2.0), (S, 1.0, 2.0), (C, 1 / 3, 4 / 45)):
        s_hat = (X * X).mean(0)
        assert float((s_hat - s).abs().max()) <= 5 * math.sqrt(var_x2 / n)


def test_inputs_reproducible_and_dtype():
    a = sphere_inputs(3, 4, generator=gen(7))
    b = sphere_inputs(3, 4, generator=gen(7), dtype=torch.float32)
    torch.testing.assert_close(a.float(), b)
    assert not torch.equal(a, sphere_inputs(3, 4, generator=gen(8)))
    with pytest.raises(ValueError, match="d must be >= 1"):
        gaussian_inputs(3, 0)


# ---------------------------------------------------------------- teachers / regression data


def test_sparse_linear_teacher():
    t = SparseLinearTeacher.first_k(6, 3)
    torch.testing.assert_close(t.beta_star, torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=f64))
    X = torch.randn(4, 6, generator=gen(3), dtype=f64)
    torch.testing.assert_close(t(X), X[:, :3].sum(1))
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        t(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="floating 1-D"):
        SparseLinearTeacher(torch.zeros(2, 2))


def test_relu_teacher_unit_directions_and_values():
    t = ReLUTeacher(4, 7, generator=gen(4))
    torch.testing.assert_close(t.V.norm(dim=1), torch.ones(4, dtype=f64))
    X = torch.randn(5, 7, generator=gen(5), dtype=f64)
    manual = sum(torch.clamp(X @ t.V[i], min=0) for i in range(4))
    torch.testing.assert_close(t(X), manual)
    assert (t.k, t.d) == (4, 7)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ReLUTeacher(0, 3)


@pytest.mark.parametrize(
    ("kind", "default_dist"), [("sparse_linear", "gaussian"), ("relu", "sphere")]
)
def test_make_regression_dataset(kind, default_dist):
    ds = make_regression_dataset(kind, 30, 20, 8, k=3, generator=gen(6))
    assert isinstance(ds, Dataset)
    assert ds.X.shape == (30, 8)
    assert ds.y.shape == (30,)
    assert ds.X_test.shape == (20, 8)
    assert ds.meta["input_dist"] == default_dist
    torch.testing.assert_close(ds.y, ds.teacher(ds.X))
    torch.testing.assert_close(ds.y_test, ds.teacher(ds.X_test))
    again = make_regression_dataset(kind, 30, 20, 8, k=3, generator=gen(6))
    assert torch.equal(ds.X, again.X)
    assert torch.equal(ds.y_test, again.y_test)
    cube = make_regression_dataset(kind, 10, 0, 8, input_dist="cube", generator=gen(6))
    assert float(cube.X.abs().max()) <= 1
    assert cube.n_test == 0
    with pytest.raises(AttributeError):
        ds.X = ds.X_test  # frozen


def test_make_regression_dataset_explicit_beta_and_errors():
    beta = torch.tensor([0.0, 2.0, -1.0], dtype=f64)
    ds = make_regression_dataset("sparse_linear", 5, 2, 3, beta_star=beta, generator=gen(0))
    torch.testing.assert_close(ds.y, ds.X @ beta)
    assert ds.meta["teacher_l1"] == 3.0
    assert ds.meta["teacher_nnz"] == 2
    with pytest.raises(ValueError, match="unknown kind"):
        make_regression_dataset("quadratic", 5, 2, 3)
    with pytest.raises(ValueError, match="unknown input_dist"):
        make_regression_dataset("relu", 5, 2, 3, input_dist="ball")
    with pytest.raises(ValueError, match=r"beta_star must have shape \(3,\)"):
        make_regression_dataset("sparse_linear", 5, 2, 3, beta_star=torch.ones(4))
    with pytest.raises(ValueError, match="same number of samples"):
        Dataset(torch.zeros(3, 2), torch.zeros(2), torch.zeros(0, 2), torch.zeros(0))


# ---------------------------------------------------------------- unbalanced init


@pytest.mark.parametrize("r0", [1.0, 1.05, 2.0, 4.0, 16.0])
def test_unbalanced_init_has_exact_ratio(r0):
    a, b = unbalanced_diagonal_init(200, r0, std=0.1, generator=gen(9))
    net = DiagonalLinearNet.from_tensors(a, b)
    assert balancedness(net) == pytest.approx(r0, rel=1e-12)
    X = torch.randn(50, 200, generator=gen(10), dtype=f64) * torch.linspace(0.5, 2, 200)
    assert balancedness(net, X) == pytest.approx(r0, rel=1e-12)
    assert abs(float(a.std()) - 0.1) <= 5 * 0.1 / math.sqrt(400)
    signs = torch.sign(b / a)
    assert 0 < int((signs > 0).sum()) < 200  # both signs of ε occur


def test_unbalanced_init_errors():
    with pytest.raises(ValueError, match="r0 must be >= 1"):
        unbalanced_diagonal_init(3, 0.5)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        unbalanced_diagonal_init(3, 2.0, std=0.0)


# ---------------------------------------------------------------- 1-D data


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "laplace"])
def test_one_d_population_standardized(kind):
    n = 20000
    x = one_d_dataset(kind, n, generator=gen(11)).X[:, 0]
    kurt = {"uniform": 1.8, "gaussian": 3.0, "laplace": 6.0}[kind]
    assert abs(float(x.mean())) <= 5 / math.sqrt(n)
    assert abs(float(x.var()) - 1) <= 5 * math.sqrt((kurt - 1) / n)
    assert bool((torch.diff(x) >= 0).all())  # sorted


def test_one_d_standardize_and_chebyshev():
    ds = one_d_dataset("laplace", 20, standardize=True, generator=gen(12))
    assert ds.X.shape == (20, 1)
    assert ds.y.shape == (20,)
    assert abs(float(ds.X.mean())) < 1e-12
    assert float(ds.X.std(unbiased=False)) == pytest.approx(1.0, rel=1e-12)
    ch = one_d_dataset("chebyshev", 20, degree=4)
    x = ch.X[:, 0]
    torch.testing.assert_close(x, torch.linspace(-1, 1, 20, dtype=f64))
    torch.testing.assert_close(ch.y, 8 * x**4 - 8 * x**2 + 1)
    assert ch.n_test == 0
    assert ch.meta["labels"] == "chebyshev"
    with pytest.raises(ValueError, match="unknown kind"):
        one_d_dataset("cauchy", 5)
    with pytest.raises(ValueError, match="n must be >= 2"):
        one_d_dataset("uniform", 1)


# ---------------------------------------------------------------- mnist1d and digits


def test_mnist1d_small_and_global_rng_untouched():
    np_state, py_state = np.random.get_state(), random.getstate()
    ds = mnist1d_dataset(n_train=95, n_test=23, seed=3)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    assert ds.X.shape == (95, 40)
    assert ds.X_test.shape == (23, 40)
    assert ds.y.shape == (95, 10)
    assert ds.X.dtype == f64
    torch.testing.assert_close(ds.y.sum(1), torch.ones(95, dtype=f64))
    torch.testing.assert_close(ds.y.argmax(1), ds.labels)
    assert int(ds.labels.min()) >= 0
    assert int(ds.labels.max()) <= 9
    plain = mnist1d_dataset(n_train=95, n_test=23, seed=3, one_hot=False, dtype=torch.float32)
    torch.testing.assert_close(plain.y, ds.labels.float())
    torch.testing.assert_close(plain.X, ds.X.float())


def test_mnist1d_default_split_equals_package_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    ds = mnist1d_dataset()  # defaults: the standard 4000/1000 split, seed 42
    np.testing.assert_array_equal(ds.X.numpy(), ref["x"])
    np.testing.assert_array_equal(ds.X_test.numpy(), ref["x_test"])
    np.testing.assert_array_equal(ds.labels.numpy(), ref["y"])
    assert abs(float(torch.cat([ds.X, ds.X_test]).std(unbiased=False)) - 1) < 1e-9


def test_digits_layouts_and_standardization():
    ds = digits_dataset(n_train=300, n_test=100, seed=1)
    assert ds.X.shape == (300, 64)
    assert ds.y.shape == (300, 10)
    assert ds.n_test == 100
    assert float(ds.X.mean(0).abs().max()) < 1e-12
    img = digits_dataset(n_train=300, n_test=100, seed=1, layout="image")
    torch.testing.assert_close(img.X.reshape(300, 64), ds.X)
    assert img.X.shape == (300, 1, 8, 8)
    raw = digits_dataset(n_train=10, seed=None, standardize_inputs=False, one_hot=False)
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(raw.X.numpy(), load_digits().data[:10] / 16.0)
    assert raw.n_test == 1797 - 10
    assert raw.y.shape == (10,)
    with pytest.raises(ValueError, match="n_train must be <= 1796"):
        digits_dataset(n_train=1797)
    with pytest.raises(ValueError, match="unknown layout"):
        digits_dataset(layout="nchw")


# ---------------------------------------------------------------- CIFAR-10 / MNIST files


def _write_cifar(folder, rng, per_batch=3, n_test=2):
    folder.mkdir(parents=True)
    raws = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, fh, protocol=2)
        raws[name] = (data, labels)
    return raws


def test_load_cifar10_from_generated_batches(tmp_path):
    raws = _write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    ds = load_cifar10(tmp_path, standardize_inputs=False)
    assert ds.X.shape == (15, 3, 32, 32)
    assert ds.X_test.shape == (2, 3, 32, 32)
    first = raws["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(ds.X[0].numpy(), first)
    labels = [lab for i in range(1, 6) for lab in raws[f"data_batch_{i}"][1]]
    assert ds.labels.tolist() == labels
    assert ds.labels_test.tolist() == raws["test_batch"][1]
    torch.testing.assert_close(ds.y, one_hot(ds.labels, 10))
    std = load_cifar10(tmp_path / "cifar-10-batches-py", n_train=6, flatten=True)
    assert std.X.shape == (6, 3072)
    assert std.n_test == 2
    assert float(std.X.mean(0).abs().max()) < 1e-12
    nz = std.X.std(0, unbiased=False) > 0
    torch.testing.assert_close(
        std.X.std(0, unbiased=False)[nz], torch.ones(int(nz.sum()), dtype=f64)
    )


def test_load_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)
    folder = tmp_path / "c"
    _write_cifar(folder, np.random.default_rng(1))
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad"
    _write_cifar(bad, np.random.default_rng(2))
    with open(bad / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle .*print"):
        load_cifar10(bad)
    fresh = tmp_path / "fresh"
    _write_cifar(fresh, np.random.default_rng(3))
    with pytest.raises(ValueError, match="n_train must be <= 15"):
        load_cifar10(fresh, n_train=16)
    with open(fresh / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 3072\)"):
        load_cifar10(fresh)


def test_load_cifar10_numpy1_style_pickles(tmp_path):
    # the official batches were pickled by NumPy 1.x: globals name numpy.core.multiarray
    raws = _write_cifar(tmp_path / "np1", np.random.default_rng(5))
    tmp_path = tmp_path / "np1"
    for name in raws:
        blob = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(
            blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        )
    assert b"numpy.core.multiarray" in (tmp_path / "test_batch").read_bytes()
    ds = load_cifar10(tmp_path, standardize_inputs=False)
    np.testing.assert_allclose(ds.X_test[1].numpy().reshape(-1), raws["test_batch"][0][1] / 255.0)


def _write_idx(path, array, gz):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">i", s) for s in array.shape)
    payload = header + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_generated_idx(tmp_path, gz):
    rng = np.random.default_rng(4)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4).astype(np.uint8),
    }
    for name, arr in arrays.items():
        _write_idx(tmp_path / name, arr, gz)
    ds = load_mnist(tmp_path, standardize_inputs=False, one_hot=False)
    assert ds.X.shape == (6, 1, 28, 28)
    assert ds.X_test.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(ds.X[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / 255.0)
    assert ds.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    torch.testing.assert_close(ds.y, ds.labels.to(f64))
    flat = load_mnist(tmp_path, flatten=True, n_test=3)
    assert flat.X.shape == (6, 784)
    assert flat.y.shape == (6, 10)
    assert flat.n_test == 3
    assert float(flat.X.mean(0).abs().max()) < 1e-12


def test_loaders_share_image_options(tmp_path):
    """Both loaders take the same ImageOptions; a typo is refused before any file is read."""
    _write_cifar(tmp_path / "c", np.random.default_rng(6))
    opts: ImageOptions = {"n_train": 4, "n_test": 1, "one_hot": False, "dtype": torch.float32}
    ds = load_cifar10(tmp_path / "c", **opts)
    assert (ds.n, ds.n_test, ds.X.dtype, ds.y.shape) == (4, 1, torch.float32, (4,))
    assert ds.labels.dtype == torch.int64
    for loader in (load_cifar10, load_mnist):
        with pytest.raises(TypeError, match=r"unknown .* option.*'n_trian'.*'n_train'"):
            loader(tmp_path / "missing", n_trian=4)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------- helpers


def test_standardize_subset_one_hot():
    X = torch.tensor([[1.0, 5.0], [3.0, 5.0]], dtype=f64)
    Xs, Xt = standardize(X, torch.tensor([[2.0, 6.0]], dtype=f64))
    torch.testing.assert_close(Xs, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=f64))
    torch.testing.assert_close(Xt, torch.tensor([[0.0, 1.0]], dtype=f64))  # constant: only centred
    Xg, none = standardize(X, per_feature=False)
    assert none is None
    assert abs(float(Xg.mean())) < 1e-15
    ds = digits_dataset(n_train=50, n_test=20, seed=0)
    first = subset(ds, 10, 5)
    torch.testing.assert_close(first.X, ds.X[:10])
    assert first.labels.shape == (10,)
    assert first.meta["n"] == 10
    assert first.n_test == 5
    rnd = subset(ds, 10, generator=gen(0))
    assert rnd.n == 10
    assert rnd.n_test == 20
    assert not torch.equal(rnd.X, first.X)
    with pytest.raises(ValueError, match="n_train must be <= 50"):
        subset(ds, 51)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        one_hot(torch.tensor([0, 3]), 3)
