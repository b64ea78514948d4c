"""Benchmark: the training engine on an η × seed grid, against a Python loop over train().

Grid: 6 learning rates × 4 seeds of dynstab's bias-free two-layer ReLU net
(:class:`dynstab.models.TwoLayerReLU`, d = 20, m = 50, Lei Wu init) on n = 100 Gaussian inputs
labelled by a random two-layer ReLU teacher, ½-MSE, float64, 2000 steps, no early stopping
(every run does the same work). Modes: full-batch GD, and SGD with B = 10 and B = 1 sampled with
replacement (B = 1 is the Wu & Su protocol). Three ways to train the grid:

* ``loop``: a Python loop over :func:`dynstab.training.train` (autograd, one run at a time);
* ``vmap``: :func:`dynstab.training.train_batched` with ``gradient="autograd"`` (``torch.func``
  over the runs);
* ``closed``: :func:`dynstab.training.train_batched` with ``gradient="closed_form"`` (the
  model's batched closed-form gradient).

Usage:
    python benchmarks/batched_trainer.py [--steps 2000] [--threads 1]

Prints a table (mode, runs, seconds per way, speed-ups over the loop, largest parameter
difference to the loop relative to the parameter scale).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from dynstab.models import TwoLayerReLU
from dynstab.training import TrainResult, train, train_batched

D, M, N = 20, 50, 100
LRS = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
SEEDS = [0, 1, 2, 3]


def make_model(seed: int) -> TwoLayerReLU:
    return TwoLayerReLU(D, M, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    teacher = TwoLayerReLU(D, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = teacher(X)
    return X, y


def max_rel_diff(batched: list[TrainResult], seq: list[dict[str, torch.Tensor]]) -> float:
    diff = 0.0
    for a, b in zip(batched, seq, strict=True):
        if a.diverged or a.params is None:
            continue
        for k, v in b.items():
            scale = v.abs().max().clamp_min(1e-300)
            diff = max(diff, float((a.params[k] - v).abs().max() / scale))
    return diff


def run(mode: str, steps: int) -> dict[str, float]:
    X, y = make_data()
    kw: dict[str, object] = {"steps": steps, "stop_loss": None}
    if mode.startswith("sgd"):
        kw.update(batch_size=int(mode.split("B=")[1]), sampling="with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        seq = []
        for lr in LRS:
            for s in SEEDS:
                model = make_model(s)
                train(model, X, y, lr=lr, seed=s, **kw)  # type: ignore[arg-type]
                seq.append({k: p.detach().clone() for k, p in model.named_parameters()})
        t_seq = time.perf_counter() - t0
        out = {"runs": float(len(seq)), "loop": t_seq}
        for way, gradient in (("vmap", "autograd"), ("closed", "closed_form")):
            t0 = time.perf_counter()
            bat = train_batched(
                make_model,
                X,
                y,
                lrs=LRS,
                seeds=SEEDS,
                gradient=gradient,
                **kw,  # type: ignore[arg-type]
            )
            out[way] = time.perf_counter() - t0
            out[f"{way}_diff"] = max_rel_diff(bat, seq)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, steps={args.steps}")
    header = (
        "mode",
        "runs",
        "loop [s]",
        "vmap [s]",
        "closed [s]",
        "x vmap",
        "x closed",
        "rel diff",
    )
    print("{:<9} {:>4} {:>9} {:>9} {:>10} {:>7} {:>8} {:>9}".format(*header))
    for mode in ("gd", "sgd B=10", "sgd B=1"):
        r = run(mode, args.steps)
        diff = max(r["vmap_diff"], r["closed_diff"])
        print(
            f"{mode:<9} {int(r['runs']):>4} {r['loop']:>9.2f} {r['vmap']:>9.2f} "
            f"{r['closed']:>10.2f} {r['loop'] / r['vmap']:>6.1f}x {r['loop'] / r['closed']:>7.1f}x "
            f"{diff:>9.1e}"
        )


if __name__ == "__main__":
    main()
