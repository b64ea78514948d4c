"""Edge of stability (Cohen et al. 2021) on MNIST-1D in a few minutes on 2 CPU cores.

Full-batch GD on a tanh MLP (40-h-h-10) with ½-MSE on one-hot targets, at a constant learning
rate η. A SharpnessMonitor measures λ_max of the training-loss Hessian every ``--eig-every``
steps (Lanczos warm-started from the previous top eigenvector). Expected picture:
progressive sharpening until λ_max reaches 2/η, then λ_max hovers around 2/η while the loss
keeps decreasing non-monotonically.

Usage:
    python examples/edge_of_stability_mnist1d.py [OUT_DIR] [--lr 0.2] [--steps 2000] ...

Prints the first step where λ_max ≥ 0.95·2/η and the median of λ_max/(2/η) over the
measurements after it; writes ``history.json`` and ``summary.json`` to OUT_DIR (default: a
fresh temporary folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dynstab.data import mnist1d_dataset
from dynstab.models import MLP
from dynstab.training import SharpnessMonitor, TestErrorMonitor, train


def load_mnist1d(n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Return (X, Y, X_test, Y_test) in float64 with one-hot targets (generated locally)."""
    ds = mnist1d_dataset(n_train, n_test, seed=seed, one_hot=True, dtype=torch.float64)
    return ds.X, ds.y, ds.X_test, ds.y_test


def make_model(width: int, seed: int) -> nn.Module:
    """tanh MLP 40-width-width-10 with PyTorch's default initialisation, seeded."""
    return MLP(
        [40, width, width, 10], activation="tanh", generator=torch.Generator().manual_seed(seed)
    )


def edge_of_stability(
    *,
    lr: float,
    steps: int,
    n_train: int,
    width: int,
    eig_every: int,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Run GD with a sharpness monitor; return (summary dict, TrainResult)."""
    X, Y, Xt, Yt = load_mnist1d(n_train, 500, seed)
    model = make_model(width, seed).double()
    monitors = [
        SharpnessMonitor(every=eig_every, max_hvps=80, tol=1e-3, seed=seed),
        TestErrorMonitor(Xt, Yt, every=eig_every),
    ]
    t0 = time.perf_counter()
    res = train(
        model, X, Y, lr=lr, steps=steps, monitors=monitors, stop_loss=None, progress=progress
    )
    seconds = time.perf_counter() - t0
    steps_s, lam = res.history.as_arrays("lambda_max")
    thr = 2.0 / lr
    ratio = lam / thr
    crossed = np.flatnonzero(ratio >= 0.95)
    first = int(steps_s[crossed[0]]) if crossed.size else None
    after = ratio[crossed[0] + 1 :] if crossed.size else np.array([])
    summary = {
        "lr": lr,
        "threshold_2_over_lr": thr,
        "steps": res.steps_run,
        "n_train": n_train,
        "width": width,
        "seconds": seconds,
        "lambda_max_initial": float(lam[0]),
        "first_crossing_step": first,
        "median_ratio_after_crossing": float(np.median(after)) if after.size else None,
        "q05_ratio_after_crossing": float(np.quantile(after, 0.05)) if after.size else None,
        "q95_ratio_after_crossing": float(np.quantile(after, 0.95)) if after.size else None,
        "num_measurements_after_crossing": int(after.size),
        "final_loss": res.final_loss,
        "loss_initial": float(res.history.as_arrays("loss")[1][0]),
        "diverged": res.diverged,
    }
    return summary, res


def main() -> None:
    parser = argparse.ArgumentParser(description="Edge of stability of GD on MNIST-1D.")
    parser.add_argument(
        "out_dir", nargs="?", default=None, help="output folder (default: temp dir)"
    )
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--eig-every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)"
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="dynstab_eos_"))
    summary, res = edge_of_stability(
        lr=args.lr,
        steps=args.steps,
        n_train=args.n_train,
        width=args.width,
        eig_every=args.eig_every,
        seed=args.seed,
        progress=args.progress,
    )
    res.history.metadata.update(summary)
    res.history.save(out / "history.json")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    thr, secs = summary["threshold_2_over_lr"], summary["seconds"]
    print(f"GD on MNIST-1D, eta={args.lr}, 2/eta={thr:.1f}, {secs:.0f}s")
    print(f"lambda_max at init: {summary['lambda_max_initial']:.2f}")
    print(f"first step with lambda_max >= 0.95*2/eta: {summary['first_crossing_step']}")
    print(f"median lambda_max/(2/eta) after crossing: {summary['median_ratio_after_crossing']}")
    print(f"loss: {summary['loss_initial']:.4f} -> {summary['final_loss']:.4f}")
    print(f"wrote {out / 'history.json'}")


if __name__ == "__main__":
    main()
