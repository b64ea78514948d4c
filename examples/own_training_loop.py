"""Stability monitoring inside your own PyTorch training loop (seconds on one CPU core).

Cohen et al.'s (ICLR 2021) two-conv CNN (:class:`dynstab.models.SmallCNN`, 1-D convolutions)
on mnist1d generated offline, trained by ``torch.optim.SGD(lr=η, momentum=β)`` on the ½-MSE
with one-hot targets in an ordinary loop. A :class:`dynstab.StabilityTracker` built on the live
model and optimizer is called once per step; every ``--every`` steps it measures, on a fixed
probe subset of the training set,

* λ_max(H) (certified, warm-started Lanczos) against the heavy-ball threshold 2(1 + β)/η, read
  from the optimizer (GD with momentum is linearly stable at a minimum iff λ_max < 2(1 + β)/η);
* Tr H (Hutchinson, with its standard error) against 2C/(qη), q = (n + B − 1)/(nB), the
  necessary trace condition of Wu & Su (ICML 2023, Thm 3.3) for plain SGD with B samples drawn
  with replacement.

The tracker never changes the model's parameters, mode, buffers or ``.grad``; a measurement
that does not converge within its budget is recorded with ``lambda_max_converged = 0``.

Usage:
    python examples/own_training_loop.py [OUT_DIR] [--lr 0.1] [--momentum 0.9] [--steps 1000]

Writes the tracker's measurements to ``OUT_DIR/stability.csv`` (rewritten atomically after each
measurement; default OUT_DIR: a fresh temporary folder) and prints them.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

from dynstab import StabilityTracker
from dynstab.data import mnist1d_dataset
from dynstab.linalg import LanczosConfig, TraceConfig
from dynstab.losses import half_mse
from dynstab.models import SmallCNN
from dynstab.sampling import Sampling


def main() -> None:
    """Train the CNN in a plain loop with the tracker; print and save its measurements."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=None, help="output folder (default: a temp dir)")
    ap.add_argument("--n", type=int, default=400, help="training samples")
    ap.add_argument("--probe", type=int, default=200, help="probe samples for the curvature")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=200, help="steps between measurements")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dynstab_loop_"))
    out.mkdir(parents=True, exist_ok=True)

    ds = mnist1d_dataset(args.n, 10, seed=42, one_hot=True, dtype=torch.float64)
    X, y = ds.X, ds.y
    gen = torch.Generator().manual_seed(args.seed)
    model = SmallCNN((1, X.shape[1]), 10, channels=8, activation="tanh", generator=gen).double()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    tracker = StabilityTracker(
        model,
        half_mse,
        (X[: args.probe], y[: args.probe]),
        every=args.every,
        measures=("lambda_max", "trace"),
        optimizer=opt,  # η and β are read from it at every measurement
        batch_size=args.batch_size,
        train_size=args.n,
        sampling="with",
        lanczos=LanczosConfig(tol=1e-3, max_iters=40),
        trace=TraceConfig(num_matvecs=20),
        seed=args.seed,
        csv=out / "stability.csv",
    )
    sampler = Sampling(args.n, args.batch_size, "with").sampler(gen)
    tracker.measure()  # θ_0
    for _ in range(args.steps):  # your own loop: nothing in it is dynstab's but the last line
        idx = sampler.next()
        opt.zero_grad(set_to_none=True)
        loss = half_mse(model(X[idx]), y[idx])
        if not math.isfinite(float(loss.detach())):
            print("diverged")
            break
        loss.backward()
        opt.step()
        tracker.step()

    h = tracker.history
    print(f"SmallCNN on mnist1d, torch.optim.SGD(lr={args.lr:g}, momentum={args.momentum:g}), "
          f"B = {args.batch_size}")  # fmt: skip
    print(f"{'step':>5} {'λ_max':>9} {'2(1+β)/η':>9} {'certified':>9} {'Tr H':>9} {'2C/(qη)':>9}")
    for t in h.steps:
        row = h.at(t)
        print(
            f"{t:>5d} {row['lambda_max']:>9.4g} {row['lambda_max_threshold']:>9.4g} "
            f"{'yes' if row['lambda_max_converged'] else 'no':>9} {row['trace']:>9.4g} "
            f"{row['trace_threshold']:>9.4g}"
        )
    print(f"measurements: {out / 'stability.csv'}")


if __name__ == "__main__":
    main()
