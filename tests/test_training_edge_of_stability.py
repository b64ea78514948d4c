"""Edge of stability through the SharpnessMonitor: λ_max(H) rises to ≈ 2/η under GD and stays.

Fast test: a tiny tanh MLP regression (n = 20) sharpens from ≈ 0.5·2/η to 2/η and converges
at the edge. Slow test: the MNIST-1D example script (Cohen et al. 2021 picture).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dynstab.errors import ConvergenceWarning
from dynstab.training import History, SharpnessMonitor, train

ROOT = Path(__file__).resolve().parents[1]


def _available(module: str, *names: str) -> bool:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    return all(hasattr(mod, n) for n in names)


needs_curvature = pytest.mark.skipif(
    not (
        _available("dynstab.curvature", "HessianOperator", "dense_hessian")
        and _available("dynstab.linalg", "lanczos_top_eigenpairs")
    ),
    reason="dynstab.curvature / dynstab.linalg not available yet",
)


def tiny_regression(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, 0])
    model = nn.Sequential(
        nn.Linear(5, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 1), nn.Flatten(0)
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.empty(p.shape, dtype=torch.float64).uniform_(-1, 1, generator=g)
                / p.shape[-1] ** 0.5
            )
    return model, X, y


@needs_curvature
@pytest.mark.parametrize("seed", [0, 2])
def test_gd_sharpens_to_two_over_lr_on_a_tiny_mlp(seed: int) -> None:
    from dynstab.curvature import dense_hessian
    from dynstab.losses import half_mse

    lr = 0.5
    model, X, y = tiny_regression(seed)
    mon = SharpnessMonitor(every=10, tol=1e-8, max_hvps=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = train(model, X, y, lr=lr, steps=600, monitors=[mon], stop_loss=None)
    assert not res.diverged
    _steps, lam = res.history.as_arrays("lambda_max")
    ratio = lam / (2 / lr)
    assert ratio[0] < 0.7  # starts well below the GD threshold: it must sharpen
    assert ratio.max() >= 0.95
    late = ratio[len(ratio) // 2 :]
    assert 0.95 <= float(np.median(late)) <= 1.05  # ... and stays at the edge
    # The monitor's warm-started Lanczos agrees with the dense Hessian at the final iterate.
    H = dense_hessian(model, half_mse, (X, y))
    assert lam[-1] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
    loss = res.history.as_arrays("loss")[1]
    assert loss[-1] < 0.1 * loss[0]


@pytest.mark.slow
@needs_curvature
def test_mnist1d_example_shows_edge_of_stability(tmp_path: Path) -> None:
    pytest.importorskip("mnist1d")
    script = ROOT / "examples" / "edge_of_stability_mnist1d.py"
    cmd = [
        sys.executable,
        str(script),
        str(tmp_path),
        "--lr",
        "0.2",
        "--steps",
        "900",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "first step with lambda_max" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    h = History.load(tmp_path / "history.json")
    _steps, lam = h.as_arrays("lambda_max")
    thr = 2 / 0.2
    assert lam[0] < 0.7 * thr
    crossed = np.flatnonzero(lam >= 0.9 * thr)
    assert crossed.size > 0
    after = lam[crossed[0] + 1 :] / thr
    assert after.size >= 10
    assert 0.9 <= float(np.median(after)) <= 1.2
    assert summary["first_crossing_step"] is not None
    assert not summary["diverged"]
