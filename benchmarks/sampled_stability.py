"""Sampled SGD stability vs the exact Gram route: wall time and peak memory against n and p.

For every (n, width) of the grid, a tanh MLP d-width-1 at an interpolating point (targets =
its own outputs, so H = G) on Gaussian inputs: the sampled route
(``dynstab.stability(..., method="sampled")``: η̂* with its 95% interval, ρ̂ at lr, λ_max by
certified Lanczos, Tr H and ‖H‖_F by Hutchinson) and, where it fits ``--exact-max-n``, the
exact route (``method="exact"``) in the same set-up. Each (setting, route) runs in its own
subprocess so that its peak resident memory (``ru_maxrss``) is its own. Reported: wall time,
curvature-vector products, peak RSS, η̂* and its interval, the exact η* and whether the interval
covers it.

The default grid (n ∈ {1000, 5000}, p ≈ 1k and 10k) runs in a few minutes on 2 cores; the
issue's full grid (n up to 50 000, p up to 1M) is ``--full``. ``--smallest`` runs one setting
(n = 200, p ≈ 200) as a smoke test.

Usage:  python benchmarks/sampled_stability.py [--smallest | --full] [--batch-size 8]
        [--exact-max-n 5000] [--out results/bench/sampled_stability.json]
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch

import dynstab
from dynstab.losses import half_mse

D = 20  # input dimension


def problem(
    n: int, width: int, seed: int
) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A d-width-1 tanh MLP at an interpolating point of n Gaussian inputs (float64)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(D, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)
    ).double()
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(X)
    return model, (X, y)


def one(n: int, width: int, route: str, batch_size: int, seed: int) -> dict[str, Any]:
    """Run one (setting, route) in this process and return its numbers."""
    model, data = problem(n, width, seed)
    p = sum(t.numel() for t in model.parameters())
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if route == "exact":
        res = dynstab.critical_lr(model, data, batch_size=batch_size, method="exact")
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {"eta_star": res.eta_star, "products": None}
    else:
        s = dynstab.SampledStability(model, half_mse, data, batch_size=batch_size, generator=gen)
        est = s.eta_star()
        rep = s.report(0.5 * est.eta_star)
        wall = time.perf_counter() - t0
        rows = {r.name: r for r in rep.rows}
        out = {
            "eta_star": est.eta_star,
            "ci": list(est.ci),
            "products": rep.num_products,
            "verdict_at_half": rep.verdict,
            "trace": rows["trace"].value,
            "trace_stderr": rows["trace"].stderr,
            "lambda_max": rows["gd"].value,
            "particles": rep.particles,
        }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    return {"n": n, "width": width, "p": p, "route": route, "wall_s": wall, "peak_rss": peak, **out}


def run_child(n: int, width: int, route: str, batch_size: int, seed: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        str(width),
        route,
        str(batch_size),
        str(seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"n": n, "width": width, "route": route, "error": proc.stderr.strip()[-500:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, width, route, B, seed = sys.argv[2:7]
        print(json.dumps(one(int(n), int(width), route, int(B), int(seed))))
        return
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--smallest", action="store_true", help="one setting: n=200, p≈200")
    parser.add_argument("--full", action="store_true", help="the issue's grid (hours)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--exact-max-n", type=int, default=5000)
    args = parser.parse_args()
    if args.smallest or args.quick:
        grid = [(200, 8)]
    elif args.full:
        grid = [(n, w) for n in (1000, 5000, 20000, 50000) for w in (500, 5000, 50000)]
    else:
        grid = [(n, w) for n in (1000, 5000) for w in (50, 500)]
    results = []
    header = (
        f"{'n':>6} {'p':>8} {'route':>8} {'wall s':>8} {'peak MB':>8} {'products':>9}  η*  [95% CI]"
    )
    print(header)
    for n, width in grid:
        routes = ["sampled"] + (["exact"] if n <= args.exact_max_n else [])
        exact = None
        for route in routes:
            r = run_child(n, width, route, args.batch_size, args.seed)
            results.append(r)
            if "error" in r:
                print(f"{n:>6} {width:>8} {route:>8} failed: {r['error']}")
                continue
            if route == "exact":
                exact = r["eta_star"]
            ci = f" [{r['ci'][0]:.5g}, {r['ci'][1]:.5g}]" if "ci" in r else ""
            prods = "—" if r["products"] is None else str(r["products"])
            print(
                f"{r['n']:>6} {r['p']:>8} {route:>8} {r['wall_s']:>8.2f} "
                f"{r['peak_rss'] / 1e6:>8.0f} {prods:>9}  {r['eta_star']:.5g}{ci}"
            )
        sampled = next(x for x in results if x.get("n") == n and x.get("width") == width)
        if exact is not None and "ci" in sampled:
            covered = sampled["ci"][0] <= exact <= sampled["ci"][1]
            sampled["covers_exact"] = covered
            print(f"{'':>6} exact η* inside the sampled 95% interval: {covered}")
    config = {"grid": grid, "batch_size": args.batch_size, "threads": common.THREADS}
    out = args.out or common.RESULTS_DIR / "sampled_stability.json"
    common.write_json(out, common.envelope("sampled_stability", config, results))


if __name__ == "__main__":
    main()
