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

Then the goals of issue 16 on 2 cores (total = setup + solve: p ≤ 100 at n = 150,000 < 1 s,
full-rank n = 2000 < 5 s, full-rank n = 5000 < 60 s) and the growth exponent in n of each
family: the least-squares slope of log(seconds) on log(n) over its rows (setup, solve and total),
all written to ``--out`` as JSON for ``run_all.py``.

Usage:  python benchmarks/eta_star_scaling.py [--threads 2] [--batch-size 8] [--with-5000]
        [--out results/bench/eta_star_scaling.json]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import torch

from dynstab.criteria import StabilityProblem, critical_lr
from dynstab.models import TwoLayerReLU

#: (family, n, limit in seconds on 2 cores) of issue 16, on total = setup + solve.
GOALS = (("p≤100", 150_000, 1.0), ("full-rank", 2000, 5.0), ("full-rank", 5000, 60.0))


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
) -> dict[str, Any]:
    """Build, solve, cross-check against the other route (or dense), print one line, return it."""
    t0 = time.perf_counter()
    prob = make()
    _ = prob.coordinates
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = prob.eta_star(prob.sampling(B, s))
    t_solve = time.perf_counter() - t0
    n, p = J.shape
    diff: float | None = None
    if prob.route == "gram" and r.rank <= 100:
        o = StabilityProblem.from_jacobians(J, route="parameter")
        ref = o.eta_star(o.sampling(B, s)).eta_star
        diff = abs(ref - r.eta_star) / ref
    elif prob.route == "parameter" and n <= 2000:
        o = StabilityProblem.from_jacobians(J, route="gram")
        ref = o.eta_star(o.sampling(B, s)).eta_star
        diff = abs(ref - r.eta_star) / ref
    elif r.method != "dense" and r.rank * (r.rank + 1) // 2 <= 2000:
        ref = prob.eta_star(prob.sampling(B, s), method="dense").eta_star
        diff = abs(ref - r.eta_star) / ref
    old_t = old_path(K, B, s) if old and K is not None else None
    how = f"{prob.route}/{prob.spectral_method}"
    check = "—" if diff is None else f"{diff:.1e}"
    old_s = "—" if old_t is None else f"{old_t:7.2f}"
    print(
        f"{family:<9} {n:>6} {p:>5} {how:<32} {setup:7.2f} {r.method:<11} {t_solve:7.2f} "
        f"{r.num_matvecs:>3} {r.eta_star:14.10g} {check:>8} {old_s:>7}",
        flush=True,
    )
    return {
        "family": family,
        "n": n,
        "p": p,
        "rank": r.rank,
        "route": prob.route,
        "route_reason": prob.route_reason,
        "spectral_method": prob.spectral_method,
        "setup_s": setup,
        "solver": r.method,
        "solve_s": t_solve,
        "total_s": setup + t_solve,
        "products": r.num_matvecs,
        "converged": r.converged,
        "eta_star": r.eta_star,
        "check_rel_diff": diff,
        "old_path_s": old_t,
    }


def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of log(row[key]) on log(n); None with fewer than 3 usable rows.

    Rows under 5 ms are left out (timer and call overhead, not growth).
    """
    pts = [(math.log(r["n"]), math.log(r[key])) for r in rows if r[key] >= 5e-3]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth exponent in n of setup, solve and total time, per family."""
    out = []
    for family in ("p≤100", "low-rank", "full-rank"):
        fam = [r for r in rows if r["family"] == family]
        if not fam:
            continue
        out.append(
            {
                "family": family,
                "n_min": min(r["n"] for r in fam),
                "n_max": max(r["n"] for r in fam),
                "rows": len(fam),
                **{f"{k}_exponent": slope(fam, f"{k}_s") for k in ("setup", "solve", "total")},
            }
        )
    return out


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue-16 goals that this run measured (total = setup + solve)."""
    out = []
    for family, n, limit in GOALS:
        r = next((r for r in rows if r["family"] == family and r["n"] == n), None)
        if r is not None:
            out.append(
                {
                    "family": family,
                    "n": n,
                    "limit_s": limit,
                    "total_s": r["total_s"],
                    "route": f"{r['route']}/{r['solver']}",
                    "met": r["total_s"] < limit,
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sampling", default="with", choices=("with", "without"))
    ap.add_argument("--with-5000", action="store_true", help="also run n = 5000 (slow)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows and fits as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the goals are on 2 cores, whatever common chose
    try:  # scipy's OpenBLAS (pivoted Cholesky) too; threadpoolctl is optional (scikit-learn's)
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(args.threads)
    B, s = args.batch_size, args.sampling
    big = [5000] if args.with_5000 else []
    print(f"threads={torch.get_num_threads()}  B={B}  sampling={s}  (wall-clock seconds)")
    hdr = (
        f"{'family':<9} {'n':>6} {'p':>5} {'route/spectrum':<32} {'setup s':>7} {'solver':<11} "
        f"{'solve s':>7} {'mv':>3} {'eta*':>14} {'check':>8} {'old s':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    rows = []
    for n in [1000, 2000, 10000, 50000, 150000]:
        J = jacobian(n, 100, seed=n)
        K = J @ J.T / n if n <= 2000 else None
        make = lambda J=J: StabilityProblem.from_jacobians(J)  # noqa: E731
        rows.append(row("p≤100", make, J, K, B, s, old=True))
    for n in [100, 200, 500, 1000, 2000, *big]:
        J = jacobian(n, 30, seed=n)
        K = J @ J.T / n
        make = lambda K=K: StabilityProblem.from_gram(K)  # noqa: E731
        rows.append(row("low-rank", make, J, K, B, s, old=n <= 2000))
    for n in [100, 200, 500, 1000, 2000, *big]:
        J = jacobian(n, n + 20, seed=n)
        K = J @ J.T / n
        make = lambda K=K: StabilityProblem.from_gram(K)  # noqa: E731
        rows.append(row("full-rank", make, J, K, B, s, old=False))
    models = []
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
        models.append(
            {
                "n": n,
                "p": res.num_params,
                "route": res.route,
                "solver": res.method,
                "total_s": t,
                "products": res.num_matvecs,
                "eta_star": res.eta_star,
            }
        )
    fits, met = exponents(rows), goals(rows)
    print("\ngrowth exponents in n (least-squares slope of log seconds on log n):")
    for f in fits:
        vals = "  ".join(
            f"{k} {'—' if f[f'{k}_exponent'] is None else format(f[f'{k}_exponent'], '.2f')}"
            for k in ("setup", "solve", "total")
        )
        print(f"  {f['family']:<9} n = {f['n_min']}..{f['n_max']}: {vals}")
    print("goals (2 cores, total = setup + solve):")
    for g in met:
        print(
            f"  {g['family']} n = {g['n']}: {g['total_s']:.2f} s (< {g['limit_s']:g} s: "
            f"{'met' if g['met'] else 'NOT met'}; {g['route']})"
        )
    if args.out is not None:
        config = {
            "threads": torch.get_num_threads(),
            "batch_size": B,
            "sampling": s,
            "with_5000": args.with_5000,
        }
        results = {"rows": rows, "models": models, "exponents": fits, "goals": met}
        common.write_json(args.out, common.envelope("eta_star_scaling", config, results))


if __name__ == "__main__":
    main()
