"""Benchmark: λ_max of the loss Hessian of a 784-512-512-10 MLP on 1000 samples.

Measures, for random and gradient Lanczos starts, both stopping criteria (``eigenvalue``: error
estimate ``min(r, r²/δ)``; ``residual``: ``r``) and several tolerances, the number of
Hessian-vector products, the wall time and the relative error of λ_max against a tight reference
run (residual criterion, tol=1e-10, another random start, same operator). The column ``oracle``
is the fewest products after which the largest Ritz value of the same run (same start) already
had relative error ≤ tol: what a stopping rule that knew the answer would spend. The wall time
of a gradient start includes its one gradient evaluation.
Data: standard normal inputs (1000 × 784) and standard normal targets (1000 × 10), ½-MSE loss,
PyTorch default initialisation under ``torch.manual_seed(seed)`` (a script, not library code).
The acceptance target is a relative error ≤ 1e-6 within ≤ 30 HVPs at the default ``tol``.

Usage::

    python benchmarks/lambda_max_mlp.py [--dtype float64|float32] [--activation tanh|relu]
        [--n 1000] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dynstab.curvature import HessianOperator
from dynstab.linalg import LanczosProgress, lanczos_top_eigenpairs
from dynstab.losses import half_mse


def build(n: int, seed: int, dtype: torch.dtype, activation: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    model = nn.Sequential(
        nn.Linear(784, 512), act(), nn.Linear(512, 512), act(), nn.Linear(512, 10)
    ).to(dtype)
    X = torch.randn(n, 784, dtype=dtype)
    y = torch.randn(n, 10, dtype=dtype)
    return model, (X, y)


def gradient_start(H: HessianOperator, seed: int, mix: float = 1e-2) -> torch.Tensor:
    """Unit gradient plus a small random component (what ``sharpness`` does by default)."""
    g = H.gradient().to(torch.float64)
    g = g / torch.linalg.vector_norm(g)
    r = torch.randn(g.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g + mix * r / torch.linalg.vector_norm(r)


def ritz_history(H: HessianOperator, v0: torch.Tensor | None, seed: int, m: int) -> list[float]:
    """Largest Ritz value after each of ``m`` Lanczos steps from the benchmark's start vector.

    Recorded through the engine's public ``callback=`` (tol so small that it never stops on
    its certificate; a float32 run may stop early at its round-off floor).
    """
    history: list[float] = []

    def record(progress: LanczosProgress) -> None:
        if progress.values.numel():
            history.append(float(progress.values[0]))

    lanczos_top_eigenpairs(
        H,
        1,
        tol=1e-15,
        max_iters=m,
        v0=v0,
        generator=torch.Generator().manual_seed(seed),
        return_vectors=False,
        callback=record,
    )
    return history


def oracle_hvps(history: list[float], lam_ref: float, tol: float) -> int:
    """Fewest products after which the Ritz value stays within ``tol`` (relative) of λ_ref."""
    ok = [abs(t - lam_ref) <= tol * abs(lam_ref) for t in history]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i + 1
    return -1


def run(
    n: int = 1000,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    activation: str = "relu",
    tols: tuple[float, ...] = (1e-4, 1e-6),
    starts: tuple[str, ...] = ("random", "gradient"),
    criteria: tuple[str, ...] = ("eigenvalue", "residual"),
) -> list[dict]:
    model, data = build(n, seed, dtype, activation)
    H = HessianOperator(model, half_mse, data)
    p = H.shape[0]
    g = torch.Generator().manual_seed(seed + 1000)
    t0 = time.perf_counter()
    ref = lanczos_top_eigenpairs(
        H, 1, tol=1e-10, max_iters=200, generator=g, return_vectors=False, criterion="residual"
    )
    t_ref = time.perf_counter() - t0
    lam_ref = float(ref.values[0])
    rows = [
        {
            "start": "random",
            "criterion": "residual",
            "tol": 1e-10,
            "oracle": -1,
            "hvps": ref.num_matvecs,
            "seconds": t_ref,
            "lambda_max": lam_ref,
            "rel_error": 0.0,
            "converged": ref.converged,
        }
    ]
    for start in starts:
        v0 = gradient_start(H, seed + 1) if start == "gradient" else None
        history = ritz_history(H, v0, seed + 1, 60)
        for criterion in criteria:
            for tol in tols:
                t0 = time.perf_counter()
                v0 = gradient_start(H, seed + 1) if start == "gradient" else None
                res = lanczos_top_eigenpairs(
                    H,
                    1,
                    tol=tol,
                    max_iters=200,
                    v0=v0,
                    generator=torch.Generator().manual_seed(seed + 1),
                    return_vectors=False,
                    criterion=criterion,
                )
                dt = time.perf_counter() - t0
                lam = float(res.values[0])
                rows.append(
                    {
                        "start": start,
                        "criterion": criterion,
                        "tol": tol,
                        "oracle": oracle_hvps(history, lam_ref, tol),
                        "hvps": res.num_matvecs,
                        "seconds": dt,
                        "lambda_max": lam,
                        "rel_error": abs(lam - lam_ref) / abs(lam_ref),
                        "converged": res.converged,
                    }
                )
    print(f"MLP 784-512-512-10 ({activation}), n={n}, p={p}, dtype={dtype}, seed={seed}")
    print(
        f"{'start':>9} {'criterion':>10} {'tol':>6} {'oracle':>6} {'HVPs':>5} {'seconds':>8} "
        f"{'lambda_max':>20} {'rel.err':>9} conv"
    )
    for r in rows:
        print(
            f"{r['start']:>9} {r['criterion']:>10} {r['tol']:>6.0e} {r['oracle']:>6d} "
            f"{r['hvps']:>5d} {r['seconds']:>8.2f} {r['lambda_max']:>20.14g} "
            f"{r['rel_error']:>9.1e} {r['converged']!s:>4}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--activation", choices=["tanh", "relu"], default="relu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.n, args.seed, getattr(torch, args.dtype), args.activation)


if __name__ == "__main__":
    main()
