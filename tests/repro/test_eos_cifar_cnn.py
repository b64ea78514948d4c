"""``eos/cifar-cnn``: quick profile end to end, CIFAR-10 files via data=PATH, and its claims.

The quick profile (mnist1d, offline) runs in CI (≈ 8–10 s on one loaded core); the CIFAR path
is exercised on tiny generated CIFAR-10 batches (the real files are never downloaded). No GPU is
available here: ``device`` is tested as ``"cpu"`` only.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dynstab_repro import registry, runner
from dynstab_repro.companions import GROUPS
from dynstab_repro.companions.eos_cifar_cnn import (
    CifarCNNConfig,
    EoSCifarCNN,
    analyze_cifar_cnn,
    main,
)
from dynstab_repro.runner import run_experiment


def _status(claims):
    return {c.id: c.status.value for c in claims}


def test_registered_in_eos_group() -> None:
    assert registry.get_experiment("eos/cifar-cnn").config_cls is CifarCNNConfig
    assert "eos/cifar-cnn" in GROUPS["eos"]
    quick = CifarCNNConfig.profile("quick")
    assert quick != CifarCNNConfig()
    assert CifarCNNConfig.from_dict(quick.to_dict()) == quick


def test_quick_profile_runs_and_reports(tmp_path: Path) -> None:
    res = run_experiment(
        "eos/cifar-cnn", out_dir=tmp_path, profile="quick", executor="serial", progress=False
    )
    status = _status(res.claims)
    assert set(status) == {"T1", "T2", "T3", "T4", "T5"}
    assert "failed" not in status.values()
    (rec,) = res.results.values()
    assert rec["source"] == "mnist1d"
    star = rec["eta_star_sampled"]
    assert star["ci_low"] <= star["eta_star"] <= star["ci_high"]
    assert star["verdict"] == "stable"
    assert star["ci_low"] > 0.02  # η = 0.02
    assert status["T5"] == "reproduced"
    thr = [t for t in rec["lambda_max_threshold"] if t is not None]
    assert thr
    assert all(t == pytest.approx(2 * 1.9 / 0.02) for t in thr)
    assert rec["steps"][0] == 0
    assert rec["steps"][-1] == 300
    figs = list((tmp_path / "eos__cifar-cnn" / "figures").glob("*.png"))
    assert figs


def _write_cifar(folder: Path, per_batch: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh, protocol=2)


def test_cifar_files_via_data_path(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    config = CifarCNNConfig.profile("quick").with_overrides(
        {"data": str(folder), "n_train": 24, "n_probe": 12, "channels": 4, "batch_size": 4,
         "steps": 6, "eig_every": 3, "trace_probes": 4}
    )  # fmt: skip
    exp = EoSCifarCNN()
    (spec,) = exp.specs(config)
    rec = exp.run_one(config, spec)
    assert rec["source"] == "cifar10"
    assert rec["n_train"] == 24
    assert rec["device"] == "cpu"
    assert rec["steps"] == [0, 3, 6]
    assert all(math.isfinite(v) for v in rec["lambda_max"])
    q = (24 + 4 - 1) / (24 * 4)
    assert rec["trace_threshold"][-1] == pytest.approx(2 * 10 / (q * 0.02))


def test_module_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data``/``--device``/``--quick`` become the config overrides of one serial run."""
    seen = {}

    def fake_run(name, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw, name=name)
        return SimpleNamespace(claims=analyze_cifar_cnn(CifarCNNConfig(), {}))

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    code = main(["--data", "/x/cifar", "--device", "cuda:1", "--quick", "--out", "o"])
    assert seen["name"] == "eos/cifar-cnn"
    assert seen["profile"] == "quick"
    assert seen["overrides"] == {"data": "/x/cifar", "device": "cuda:1"}
    assert seen["executor"] == "serial"
    assert code == 1  # no results: the claims fail


def test_analysis_flags_violations() -> None:
    config = CifarCNNConfig()
    good = {
        "lr": 0.02, "diverged": False, "loss_start": 0.6, "loss_end": 0.3,
        "max_lambda_margin": 0.9, "final_trace_margin": 0.01, "all_certified": True,
        "max_hvps": 20.0, "eta_star_sampled": None,
    }  # fmt: skip
    assert set(_status(analyze_cifar_cnn(config, {"a": good})).values()) <= {
        "adapted",
        "reproduced",
    }
    bad = {**good, "max_lambda_margin": 1.5, "final_trace_margin": 2.0, "all_certified": False}
    status = _status(analyze_cifar_cnn(config, {"a": bad}))
    assert status["T1"] == status["T2"] == status["T3"] == "failed"
    diverged = {**good, "diverged": True}
    assert _status(analyze_cifar_cnn(config, {"a": diverged}))["T4"] == "failed"

    def star(lo: float, hi: float) -> dict[str, object]:
        return {"eta_star": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "verdict": "-"}

    def t5(rec: dict[str, object]) -> str:
        return _status(analyze_cifar_cnn(config, {"a": rec}))["T5"]

    assert t5({**good, "eta_star_sampled": star(0.04, 0.06)}) == "reproduced"  # η = 0.02 below
    assert t5({**good, "eta_star_sampled": star(0.01, 0.03)}) == "not reproduced"  # undecided
    unstable = {**good, "eta_star_sampled": star(0.005, 0.01)}  # η above η*: not at a minimum
    assert t5(unstable) == "not reproduced"
    assert t5({**unstable, "loss_end": 1e-6}) == "failed"  # at a minimum: contradicts theory
