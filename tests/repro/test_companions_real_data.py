"""Real-data profiles of the companions (MNIST / CIFAR-10 files) on tiny generated files.

The files are written in the real formats (IDX, gzipped, for MNIST; the python-pickle batches
for CIFAR-10) with a handful of images, so the loaders, the two-class scalar task and the
``--profile mnist|cifar10 --set data=PATH --set device=cpu`` paths run in CI. No GPU is
available here: ``device="cuda"`` is only checked to be refused without CUDA.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dynstab_repro import run_experiment
from dynstab_repro.companions.mm23 import MM23Config
from dynstab_repro.companions.mms21_kink import KinkConfig, mnist_kink_minimum, mode_hessians
from dynstab_repro.companions.scalar_nets import scalar_task
from dynstab_repro.companions.wme18 import SharpnessConfig
from dynstab_repro.companions.wws22 import WWS22Config
from dynstab_repro.config import check_config

MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    return header + array.tobytes()


def write_mnist(folder: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    """Gzipped IDX files with ``len(labels)`` training images; returns the training images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    arrays = (
        train,
        np.array(labels, dtype=np.uint8),
        rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 3).astype(np.uint8),
    )
    for name, arr in zip(MNIST_NAMES, arrays, strict=True):
        with gzip.open(folder / f"{name}.gz", "wb") as fh:
            fh.write(_idx(arr))
    return train


def write_cifar(folder: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    """The six CIFAR-10 pickles; the training labels are spread over the five batches."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    chunks = np.array_split(np.arange(len(labels)), 5)
    for i, idx in enumerate(chunks, start=1):
        batch = {b"batch_label": b"x", b"data": data[idx], b"labels": [labels[j] for j in idx]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"batch_label": b"t", b"data": data[:2], b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    return data


def test_scalar_task_from_mnist_files(tmp_path):
    labels = [3, 1, 8, 8, 3, 0, 8, 3, 3, 8]
    train = write_mnist(tmp_path / "mnist", labels)
    X, y = scalar_task("mnist", 5, path=str(tmp_path / "mnist"))  # classes (3, 8) by default
    keep = [i for i, lab in enumerate(labels) if lab in (3, 8)][:5]
    ref = torch.tensor(train[keep].reshape(5, -1), dtype=torch.float64)
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(X, ref)
    assert y.tolist() == [1.0 if labels[i] == 3 else -1.0 for i in keep]
    assert X.dtype == y.dtype == torch.float64
    X2, _ = scalar_task("mnist", 3, classes=(8, 0), path=str(tmp_path / "mnist"))
    assert X2.shape == (3, 784)
    with pytest.raises(ValueError, match="has only 8 training images of classes"):
        scalar_task("mnist", 9, path=str(tmp_path / "mnist"))
    with pytest.raises(ValueError, match="two classes"):
        scalar_task("mnist", 2, classes=(1, 2, 3), path=str(tmp_path / "mnist"))


def test_scalar_task_from_cifar_files(tmp_path):
    labels = [0, 1, 2, 1, 0, 5, 1, 0, 9, 1]
    data = write_cifar(tmp_path / "cifar-10-batches-py", labels)
    X, y = scalar_task("cifar10", 6, path=str(tmp_path))  # classes (0, 1), parent folder
    keep = [i for i, lab in enumerate(labels) if lab in (0, 1)][:6]
    ref = torch.tensor(data[keep], dtype=torch.float64)
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(X, ref, rtol=1e-6, atol=1e-7)  # loaded as float32
    assert y.tolist() == [1.0 if labels[i] == 0 else -1.0 for i in keep]


def test_scalar_task_and_configs_refuse_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="dataset must be one of"):
        scalar_task("fashion", 4)
    with pytest.raises(ValueError, match="--set data=PATH"):
        scalar_task("mnist", 4)
    with pytest.raises(ValueError, match="--set data=PATH"):
        check_config(MM23Config.profile("mnist"))
    with pytest.raises(ValueError, match="does not exist"):
        check_config(dataclasses.replace(WWS22Config.profile("cifar10"), data=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="dataset must be one of"):
        check_config(dataclasses.replace(SharpnessConfig(), dataset="svhn"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_config(dataclasses.replace(MM23Config(), device="cuda"))
    check_config(MM23Config.profile("quick"))  # digits need no files


def test_mm23_mnist_profile_runs_on_generated_files(tmp_path):
    labels = [3, 8] * 6
    write_mnist(tmp_path / "MNIST" / "raw", labels)
    res = run_experiment(
        "mm23/sweep",
        out_dir=tmp_path / "out",
        profile="mnist",
        overrides={
            "data": str(tmp_path),
            "device": "cpu",
            "n": 8,
            "width": 8,
            "lrs": "0.5",
            "batch_sizes": "2,0",
            "seeds": "0",
            "steps": 300,
            "warmup_steps": 20,
            "stop_loss": 1e-3,
        },
        executor="serial",
        progress=False,
    )
    assert not res.failures
    assert len(res.outcomes) == 2
    cfg = (res.run_dir / "config.json").read_text()
    assert '"dataset": "mnist"' in cfg
    assert all(c.paper and c.source for c in res.claims)


def test_wws22_cifar10_profile_runs_on_generated_files(tmp_path):
    labels = [0, 1] * 6
    write_cifar(tmp_path / "cifar", labels)
    res = run_experiment(
        "wws22/alignment",
        out_dir=tmp_path / "out",
        profile="cifar10",
        overrides={
            "data": str(tmp_path / "cifar"),
            "device": "cpu",
            "n": 8,
            "lrs": "0.2",
            "batch_sizes": "2",
            "widths": "4,8",
            "seeds": "0",
            "steps": 200,
            "warmup_steps": 10,
            "stop_loss": 1e-3,
            "record_every": 50,
            "switch_width": 4,
            "switch_batch": 2,
            "lyapunov_steps": 50,
        },
        executor="serial",
        progress=False,
    )
    assert not res.failures
    assert len(res.outcomes) == 3  # two widths and the GD→SGD switch
    assert {c.id for c in res.claims} == {"A1", "A2", "A3", "A4"}


def test_mms21_kink_mnist_minimum_has_its_knot_on_one_image_only(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", [3, 8] * 10)
    profile = {**KinkConfig.PROFILES["mnist"], "n": 16}
    cfg = dataclasses.replace(KinkConfig(), **profile, data=str(tmp_path))
    cfg.validate()
    net, X, y = mnist_kink_minimum(cfg, 2.0)
    assert X.shape == (16, 49)
    assert torch.allclose(X.norm(dim=1), torch.ones(16, dtype=torch.float64))
    with torch.no_grad():
        pre = net.get_submodule("layers.0")(X)
        assert torch.equal(net(X).reshape(-1), y)  # exact interpolation: labels = f(X)
    assert float(pre[0, 0]) == 0.0  # the kink unit's knot passes through the first image
    assert float(pre[1:].abs().min()) > 1e-6  # no other (unit, image) pair sits on a knot
    # the balance changes the curvature, not the function
    _, _, y4 = mnist_kink_minimum(cfg, 4.0)
    assert torch.allclose(y4, y, rtol=0, atol=1e-12)
    Hs, gs = mode_hessians(net, X, y, cfg.offset)
    assert len(Hs) == 2
    assert Hs[0].shape == (4 * 50 + 5, 4 * 50 + 5)  # 4 units × (49 + 1) + 4 + 1
    assert max(float(g.abs().max()) for g in gs) < 1e-12  # interpolating: ∇ψ_m(θ*) = 0
    # the two modes differ only in the first image's contribution to the kink unit
    assert float((Hs[0] - Hs[1]).abs().max()) > 0


def test_mms21_kink_mnist_profile_runs_on_generated_files_and_is_adapted(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", [3, 8] * 10)
    res = run_experiment(
        "mms21/kink",
        out_dir=tmp_path / "out",
        profile="mnist",
        overrides={"data": str(tmp_path), "n": 16, "balances": "0.25,4", "seeds": "0",
                   "steps": 60},
        executor="serial",
        progress=False,
    )  # fmt: skip
    assert not res.failures
    assert set(res.outcomes) == {"c=0.25_seed=0", "c=4_seed=0"}
    claims = {c.id: c for c in res.claims}
    assert set(claims) == {"K1", "K2"}
    # a claim that holds on MNIST is "adapted", with the reason; never "reproduced"
    for c in claims.values():
        assert c.status.value in ("adapted", "failed")
        if c.status.value == "adapted":
            assert "no MNIST experiment" in c.note
    assert '"dataset": "mnist"' in (res.run_dir / "config.json").read_text()


def test_mms21_kink_mnist_profile_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="data"):
        dataclasses.replace(KinkConfig(), dataset="mnist").validate()
    with pytest.raises(ValueError, match="does not exist"):
        dataclasses.replace(KinkConfig(), dataset="mnist", data=str(tmp_path / "no")).validate()
    with pytest.raises(ValueError, match="grid"):
        dataclasses.replace(KinkConfig(), dataset="digits").validate()
