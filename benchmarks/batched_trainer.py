"""Benchmark: train_batched (vmap over an η × seed grid) against a Python loop over train().

Grid: 6 learning rates × 4 seeds of a bias-free two-layer ReLU net f(x) = Σ_j a_j σ(w_jᵀx)
(d = 20, m = 50, Lei Wu init) on n = 100 Gaussian inputs labelled by a random two-layer ReLU
teacher, ½-MSE, float64, 2000 steps, no early stopping (every run does the same work).
Modes: full-batch GD, and SGD with B = 10 and B = 1 sampled with replacement (B = 1 is the
Wu & Su protocol).

Usage:
    python benchmarks/batched_trainer.py [--steps 2000] [--threads 1]

Prints a table (mode, runs, seconds sequential, seconds batched, speed-up, largest parameter
difference between the two, relative to the parameter scale).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from dynstab.training import train, train_batched

D, M, N = 20, 50, 100
LRS = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
SEEDS = [0, 1, 2, 3]


class TwoLayer(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(M, D, generator=g, dtype=torch.float64) / D**0.5)
        self.a = nn.Parameter(torch.randn(M, generator=g, dtype=torch.float64) / M**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w.T) @ self.a


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    teacher = TwoLayer(10_000)
    with torch.no_grad():
        y = teacher(X)
    return X, y


def run(mode: str, steps: int) -> dict[str, float]:
    X, y = make_data()
    kw = {"steps": steps, "stop_loss": None}
    if mode.startswith("sgd"):
        kw.update(batch_size=int(mode.split("B=")[1]), sampling="with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        seq = []
        for lr in LRS:
            for s in SEEDS:
                model = TwoLayer(s)
                train(model, X, y, lr=lr, seed=s, **kw)
                seq.append({k: p.detach().clone() for k, p in model.named_parameters()})
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        bat = train_batched(TwoLayer, X, y, lrs=LRS, seeds=SEEDS, **kw)
        t_bat = time.perf_counter() - t0
    diff = 0.0
    for a, b in zip(bat, seq):
        if a.diverged:
            continue
        for k, v in b.items():
            assert a.params is not None
            diff = max(diff, float((a.params[k] - v).abs().max() / v.abs().max().clamp_min(1e-300)))
    return {
        "runs": len(bat),
        "seq": t_seq,
        "bat": t_bat,
        "diff": diff,
        "diverged": sum(r.diverged for r in bat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, steps={args.steps}")
    header = ("mode", "runs", "loop [s]", "batched [s]", "speed-up", "max rel diff")
    print("{:<9} {:>4} {:>9} {:>12} {:>9} {:>13}".format(*header))
    for mode in ("gd", "sgd B=10", "sgd B=1"):
        r = run(mode, args.steps)
        print(
            f"{mode:<9} {r['runs']:>4} {r['seq']:>9.2f} {r['bat']:>12.2f} "
            f"{r['seq'] / r['bat']:>8.1f}x {r['diff']:>13.1e}"
        )


if __name__ == "__main__":
    main()
