"""Exact η* along each route of ``StabilityProblem`` as n grows (scalar outputs, float64).

For every row: the route the cost model chose (``gram``: eigenvectors of the n×n matrix
K = JJᵀ/n, by ``eigh`` or, for large low-rank K, pivoted Cholesky; ``parameter``: the p×p matrix
H = JᵀJ/n), the set-up time (coordinates), the η* solver it chose (dense or matrix-free Lanczos)
and its time, and a cross-check: the relative difference to η* computed along the *other* route
(or densely), in the same process. ``old s`` is the cost of the former single path (a full
``eigh`` of the n×n Gram matrix plus its η* solve), measured on the same data where feasible.

Families:

* ``p≤100``: J ∈ ℝ^{n×100} (rank 100), the parameter route at any n;
* ``low-rank``: K = JJᵀ/n given with J ∈ ℝ^{n×30} (rank 30), the Gram route;
* ``full-rank``: K given with J ∈ ℝ^{n×(n+20)} (rank n), the Gram route, matrix-free;
* ``model``: ``critical_lr`` on ``TwoLayerReLU(20, 128)`` (p = 2688, overparameterised for
  n ≤ 2000), Jacobians included.

Usage:  python benchmarks/eta_star_scaling.py [--threads 2] [--batch-size 8] [--with-5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from dynstab.criteria import StabilityProblem, critical_lr
from dynstab.models import TwoLayerReLU


def jacobian(n: int, P: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(n, P, generator=g, dtype=torch.float64)
    return J * torch.linspace(0.1, 1.0, P, dtype=torch.float64)


def old_path(K: torch.Tensor, B: int, s: str) -> float:
    """The former single path: a full ``eigh`` of K, then the η* solve on its coordinates."""
    t0 = time.perf_counter()
    torch.linalg.eigh(K)
    prob = StabilityProblem.from_gram(K)
    rho = prob.rank
    method = "dense" if rho * (rho + 1) // 2 <= 2000 else "matrix_free"  # the former rule
    prob.eta_star(prob.sampling(B, s), method=method)
    return time.perf_counter() - t0


def row(
    family: str,
    make: Callable[[], StabilityProblem],
    J: torch.Tensor,
    K: torch.Tensor | None,
    B: int,
    s: str,
    old: bool,
) -> None:
    """Build, solve, cross-check against the other route (or dense), and print one line."""
    t0 = time.perf_counter()
    prob = make()
    _ = prob.coordinates
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = prob.eta_star(prob.sampling(B, s))
    t_solve = time.perf_counter() - t0
    n, p = J.shape
    check = "—"
    if prob.route == "gram" and r.rank <= 100:
        o = StabilityProblem.from_jacobians(J, route="parameter")
        ref = o.eta_star(o.sampling(B, s)).eta_star
        check = f"{abs(ref - r.eta_star) / ref:.1e}"
    elif prob.route == "parameter" and n <= 2000:
        o = StabilityProblem.from_jacobians(J, route="gram")
        ref = o.eta_star(o.sampling(B, s)).eta_star
        check = f"{abs(ref - r.eta_star) / ref:.1e}"
    elif r.method != "dense" and r.rank * (r.rank + 1) // 2 <= 2000:
        ref = prob.eta_star(prob.sampling(B, s), method="dense").eta_star
        check = f"{abs(ref - r.eta_star) / ref:.1e}"
    old_s = f"{old_path(K, B, s):7.2f}" if old and K is not None else "—"
    how = f"{prob.route}/{prob.spectral_method}"
    print(
        f"{family:<9} {n:>6} {p:>5} {how:<32} {setup:7.2f} {r.method:<11} {t_solve:7.2f} "
        f"{r.num_matvecs:>3} {r.eta_star:14.10g} {check:>8} {old_s:>7}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sampling", default="with", choices=("with", "without"))
    ap.add_argument("--with-5000", action="store_true", help="also run n = 5000 (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, s = args.batch_size, args.sampling
    big = [5000] if args.with_5000 else []
    print(f"threads={torch.get_num_threads()}  B={B}  sampling={s}  (wall-clock seconds)")
    hdr = (
        f"{'family':<9} {'n':>6} {'p':>5} {'route/spectrum':<32} {'setup s':>7} {'solver':<11} "
        f"{'solve s':>7} {'mv':>3} {'eta*':>14} {'check':>8} {'old s':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n in [1000, 2000, 10000, 50000, 150000]:
        J = jacobian(n, 100, seed=n)
        K = J @ J.T / n if n <= 2000 else None
        row("p≤100", lambda J=J: StabilityProblem.from_jacobians(J), J, K, B, s, old=True)
    for n in [100, 200, 500, 1000, 2000, *big]:
        J = jacobian(n, 30, seed=n)
        K = J @ J.T / n
        row("low-rank", lambda K=K: StabilityProblem.from_gram(K), J, K, B, s, old=n <= 2000)
    for n in [100, 200, 500, 1000, 2000, *big]:
        J = jacobian(n, n + 20, seed=n)
        K = J @ J.T / n
        row("full-rank", lambda K=K: StabilityProblem.from_gram(K), J, K, B, s, old=False)
    for n in [500, 1000, 2000]:
        g = torch.Generator().manual_seed(n)
        model = TwoLayerReLU(20, 128, generator=g, dtype=torch.float64)
        X = torch.randn(n, 20, generator=g, dtype=torch.float64)
        t0 = time.perf_counter()
        res = critical_lr(model, X, batch_size=B, sampling=s)
        t = time.perf_counter() - t0
        route = f"{res.route} (critical_lr, all in)"
        print(
            f"{'model':<9} {n:>6} {res.num_params:>5} {route:<32} {'':>7} {res.method:<11} "
            f"{t:7.2f} {res.num_matvecs:>3} {res.eta_star:14.10g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
