"""Sampled SGD stability vs the exact Gram route: wall time and peak memory against n and p.

Every grid point is a d-width-1 tanh MLP (d = 20, p = 22·width + 1) at an interpolating point
(targets = its own outputs, so H = G) on n Gaussian inputs, float64, batch size B = 8 with
replacement. Each (point, run) runs in a fresh subprocess so that its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, Linux kB) is its own: tracemalloc does not see
torch's CPU tensors, and torch has no CPU allocator statistics, so the RSS peak (which
includes the interpreter, torch itself, the data and the model) is what is reported. Runs:

* ``sampled``: ``SampledStability(...).eta_star()`` with the **default budget**
  (:class:`dynstab.SampledConfig`) and, where n·p ≤ ``--bounds-max-np``, ``report(lr)`` with the
  scalable bounds (certified Lanczos λ_max, Hutchinson Tr H and ‖H‖_F on the full data);
  η̂*, its 95% interval, products, wall time.
* ``probe``: the same route with **8 replicas × 32 particles** (clamped to the memory budget
  as the default is) for a few steps only (4 pilot steps, one η with 1 burn-in step and 2
  steps; no bounds): the time per batch curvature-vector product at that (n, p) and the peak
  memory of a population as wide as the default's product batches; it runs at every point,
  including those where the default budget would take longer than this script's time
  allowance. The sampled route's cost depends on p and B, not on n (only the bounds and one
  validating pass read the full data).
* ``step``: the **default population** (4 replicas × 32 particles, the default memory
  budget) for 1 pilot step and one η (2 steps): the time per product and the peak memory
  of the default route's widest step at p = 1M, with the route's memory plan
  (:class:`dynstab.criteria.sampled.SampledMemory`: budget, planned peak, measured product
  working memory, chunking, particles kept) beside the measured RSS.
* ``growth``: ρ̂ at **lr = 0.8·η̂_pilot** (0.8 × the pilot's fixed-point estimate of η*,
  where the verdict should be "stable") with a small budget (4 replicas × 8 particles, 12
  pilot steps, 4 burn-in and 8 steps, ≈ 1000 products): the growth factor and its 95%
  interval at p = 1M in a time the default run affords — a short-horizon estimate, not the
  default budget's (the full η* search there is ``--full``).
* ``exact``: ``dynstab.critical_lr(..., method="exact")`` where n·p ≤ ``--exact-max-np``;
  beyond that its memory need is reported from the library's ``MemoryBudgetError`` when it
  does not fit, or the point is marked "not run (time)".

The default grid probes n ∈ {1k, 50k} × p = 10k, (5k, 100k) and (50k, 100k), measures a step
of the default population and a growth factor at n = 1000, p = 1M (the route's cost does not
depend on n beyond its set-up pass), and runs the default budget beside the exact route at
n = 1000, p ≈ 1000 (about 3 minutes on an idle 2-core machine is the target). ``--full`` runs
the default budget at every point of n ∈ {1k, 5k, 20k, 50k} × p ∈ {10k, 100k, 1M} (hours on
a CPU). ``--quick``/``--smallest`` runs n = 200, p = 177 only. ``ms/prod`` is the
simulation's time per batch product (set-up and bounds excluded): the default budget's time at
a point is about its products (≈ 1.2–1.5·10⁵ without momentum,
:meth:`dynstab.SampledConfig.products`) times that. ``rss_base`` is the RSS high-water mark
before the route was built (interpreter, torch, model, data), so ``peak_rss − rss_base`` is
what the route itself added, to compare with its planned peak.

Usage:  python benchmarks/sampled_stability.py [--quick | --full] [--threads 2]
        [--exact-max-np 2e7] [--bounds-max-np 5e7] [--out results/bench/sampled_stability.json]
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from typing import Any

import torch

import dynstab
from dynstab.criteria.resources import memory_budget
from dynstab.criteria.routes import route_costs
from dynstab.errors import MemoryBudgetError
from dynstab.losses import half_mse

D = 20  # input dimension
B = 8  # batch size
#: The ``probe`` runs: 8 replicas × 32 particles (clamped to the memory budget) for a few steps
#: only (4 pilot steps, one η with 1 burn-in step and 2 steps).
PROBE = {
    "replicas": 8,
    "pilot_steps": 4,
    "burn_in": 1,
    "steps": 2,
    "grid": (1.0,),
    "max_rounds": 0,
}
#: The ``step`` runs: the default population for 1 pilot step and one η (0 + 2 steps).
STEP = {"pilot_steps": 1, "burn_in": 0, "steps": 2, "grid": (1.0,), "max_rounds": 0}
#: The ``growth`` runs: ρ̂ at lr = GROWTH_LR × the pilot's η* estimate, small budget.
GROWTH = {"replicas": 4, "particles": 8, "pilot_steps": 12, "burn_in": 4, "steps": 8}
GROWTH_LR = 0.8


def width_for(p: int) -> int:
    """Hidden width of the d-width-1 MLP with about p parameters (p = (d + 2)·width + 1)."""
    return max(1, round((p - 1) / (D + 2)))


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
    with torch.no_grad():  # in chunks: n × width activations at once can exceed the memory
        y = torch.cat([model(X[i : i + 1024]) for i in range(0, n, 1024)])
    return model, (X, y)


def one(
    n: int, width: int, run: str, seed: int, bounds: bool, budget: int | None = None
) -> dict[str, Any]:
    """Run one (point, run) in this process and return its numbers.

    ``budget``: the sampled route's memory budget in bytes (None: the library's default).
    """
    model, data = problem(n, width, seed)
    p = sum(t.numel() for t in model.parameters())
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"n": n, "width": width, "p": p, "run": run}
    t0 = time.perf_counter()
    if run == "fits":  # the exact route's plan (memory, flops) without running it
        costs = route_costs(n, 1, p, "model", max(t.numel() for t in model.parameters()))
        budget = memory_budget(None, torch.device("cpu"))
        best = min(costs.values(), key=lambda c: c.bytes)
        fits = budget.allows(best.bytes)
        out.update(
            fits=f"{'fits' if fits else 'over'} the memory budget: the {best.route} route needs "
            f"{best.bytes / 2**30:.3g} GiB of {budget.bytes / 2**30:.3g} GiB and "
            f"≈ {best.flops:.2g} flops" + ("; not run (time allowance)" if fits else ""),
        )
        out["wall_s"] = time.perf_counter() - t0
    elif run == "exact":
        try:
            res = dynstab.critical_lr(model, data, batch_size=B, method="exact")
        except MemoryBudgetError as exc:
            need, have = exc.required_bytes / 2**30, exc.budget_bytes / 2**30
            out.update(refused=f"needs {need:.3g} GiB ({exc.what}), budget {have:.3g} GiB")
        else:
            out.update(eta_star=res.eta_star, route=str(getattr(res, "route", "sampled")))
        out["wall_s"] = time.perf_counter() - t0
    else:
        settings = {"probe": PROBE, "step": STEP, "growth": GROWTH}.get(run, {})
        config = dynstab.SampledConfig(**settings, memory_budget=budget)  # type: ignore[arg-type]
        out["rss_base"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = dynstab.SampledStability(
                model, half_mse, data, batch_size=B, config=config, generator=gen
            )
        out["warnings"] = [str(w.message)[:200] for w in caught]
        out["setup_s"] = time.perf_counter() - t0
        if run in ("probe", "step"):
            s.growth(1.0)
            out.update(products=s.num_products, particles=s.particles)
        elif run == "growth":
            pilot = float(s._pilot_run()[2].mean())  # the pilot's fixed-point η* estimate
            g = s.growth(GROWTH_LR * pilot)
            out.update(
                products=s.num_products, particles=s.particles, pilot_eta=pilot, lr=g.lr,
                growth=g.growth, growth_ci=list(g.ci),
            )  # fmt: skip
        else:
            est = s.eta_star()
            out.update(eta_star=est.eta_star, ci=list(est.ci), particles=s.particles)
            out["eta_star_wall_s"] = time.perf_counter() - t0
            out["eta_star_products"] = s.num_products
            if bounds:
                rep = s.report(0.5 * est.eta_star)
                rows = {r.name: r for r in rep.rows}
                out.update(
                    verdict_at_half=rep.verdict,
                    lambda_max=rows["gd"].value,
                    trace=rows["trace"].value,
                    trace_stderr=rows["trace"].stderr,
                )
            out["products"] = s.num_products
        out["bounds"] = bounds and run == "sampled"
        out["wall_s"] = time.perf_counter() - t0
        # seconds per batch product of the simulation (set-up and the bounds excluded)
        sim = out.get("eta_star_wall_s", out["wall_s"]) - out["setup_s"]
        out["ms_per_product"] = 1e3 * sim / max(out.get("eta_star_products", s.num_products), 1)
        mem = s.memory
        out["memory"] = {
            "budget": mem.budget, "planned": mem.planned_bytes, "state": mem.state_bytes,
            "product": list(mem.product_bytes), "chunk": mem.chunk,
            "largest_call": mem.largest_call, "particles": mem.particles,
            "requested": mem.particles_requested,
        }  # fmt: skip
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_child(
    n: int,
    width: int,
    run: str,
    seed: int,
    bounds: bool,
    threads: int,
    timeout: float,
    budget: int | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        str(width),
        run,
        str(seed),
        str(int(bounds)),
        str(budget or 0),
    ]
    env = {**os.environ, "DYNSTAB_BENCH_THREADS": str(threads)}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"n": n, "width": width, "run": run, "error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"n": n, "width": width, "run": run, "error": proc.stderr.strip()[-500:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def grid(full: bool, quick: bool) -> list[tuple[int, int, tuple[str, ...]]]:
    """(n, p, runs) of every grid point."""
    if quick:
        return [(200, 177, ("sampled", "probe", "exact"))]
    if full:
        ns, ps = (1000, 5000, 20000, 50000), (10_000, 100_000, 1_000_000)
        return [(n, p, ("sampled", "probe", "exact")) for n in ns for p in ps]
    return [
        (1000, 1_000, ("sampled", "probe", "exact")),
        (1000, 10_000, ("probe", "exact")),
        (50000, 10_000, ("probe", "exact")),
        (5000, 100_000, ("probe", "exact")),
        (50000, 100_000, ("probe", "exact")),
        (1000, 1_000_000, ("step", "growth", "exact")),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:8]
        budget = int(a[5]) or None
        print(json.dumps(one(int(a[0]), int(a[1]), a[2], int(a[3]), a[4] == "1", budget)))
        return
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--smallest", action="store_true", help="same as --quick")
    parser.add_argument("--full", action="store_true", help="default budget everywhere (hours)")
    parser.add_argument("--threads", type=int, default=2, help="torch/BLAS threads (default 2)")
    parser.add_argument("--exact-max-np", type=float, default=2e7, help="run exact if n·p ≤ this")
    parser.add_argument("--bounds-max-np", type=float, default=5e7, help="bounds if n·p ≤ this")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument(
        "--memory-budget-gib",
        type=float,
        default=None,
        help="SampledConfig.memory_budget of the sampled runs in GiB (default: the library's)",
    )
    parser.add_argument(
        "--points",
        nargs="*",
        default=None,
        help="only these points, as n:p:run+run (e.g. 50000:1000000:probe+exact)",
    )
    args = parser.parse_args()
    points = grid(args.full, args.quick or args.smallest)
    if args.points:
        points = [
            (int(n_), int(p_), tuple(r_.split("+")))
            for n_, p_, r_ in (spec.split(":") for spec in args.points)
        ]
    results = []
    budget = None if args.memory_budget_gib is None else int(args.memory_budget_gib * 2**30)
    print(
        f"{'n':>6} {'p':>8} {'run':>8} {'wall s':>8} {'peak MB':>8} {'products':>9} "
        f"{'ms/prod':>8}  η*  [95% CI]"
    )
    for n, p_target, runs in points:
        width = 8 if p_target == 177 else width_for(p_target)
        exact = None
        for run in runs:
            if run == "exact" and n * p_target > args.exact_max_np:
                # ask the library whether it would fit, without running it
                r = run_child(n, width, "fits", args.seed, False, args.threads, args.timeout)
            else:
                bounds = n * p_target <= args.bounds_max_np
                r = run_child(n, width, run, args.seed, bounds, args.threads, args.timeout, budget)
            results.append(r)
            if "error" in r:
                print(f"{n:>6} {p_target:>8} {run:>8} failed: {r['error']}")
                continue
            if "refused" in r or r.get("run") == "fits":
                what = r.get("refused") or r.get("fits") or ""
                print(f"{n:>6} {r.get('p', p_target):>8} {run:>8} not run: {what}")
                continue
            if run == "exact":
                exact = r["eta_star"]
            ci = f" [{r['ci'][0]:.5g}, {r['ci'][1]:.5g}]" if "ci" in r else ""
            prods = r.get("products")
            per = f"{r['ms_per_product']:8.3f}" if "ms_per_product" in r else f"{'—':>8}"
            eta = f"{r['eta_star']:.5g}" if "eta_star" in r else "—"
            if "growth" in r:
                lo, hi = r["growth_ci"]
                eta = f"ρ̂({r['lr']:.4g}) = {r['growth']:.4f} [{lo:.4f}, {hi:.4f}]"
            if "memory" in r:
                mem = r["memory"]
                ci += (
                    f"  (m = {mem['particles']}, chunk {mem['chunk']}, planned "
                    f"{mem['planned'] / 2**30:.2f} of {mem['budget'] / 2**30:.2f} GiB, route "
                    f"added {(r['peak_rss'] - r['rss_base']) / 2**30:.2f} GiB RSS)"
                )
            print(
                f"{r['n']:>6} {r['p']:>8} {run:>8} {r['wall_s']:>8.2f} "
                f"{r['peak_rss'] / 1e6:>8.0f} {prods or '—':>9} {per}  {eta}{ci}",
                flush=True,
            )
        sampled = next(
            (x for x in results if x.get("n") == n and x.get("run") == "sampled" and "ci" in x
             and x.get("width") == width),
            None,
        )  # fmt: skip
        if exact is not None and sampled is not None:
            sampled["covers_exact"] = sampled["ci"][0] <= exact <= sampled["ci"][1]
            print(f"{'':>6} exact η* inside the sampled 95% interval: {sampled['covers_exact']}")
    config = {
        "grid": [(n, p) for n, p, _ in points],
        "batch_size": B,
        "threads": args.threads,
        "probe_budget": PROBE,
        "step_budget": STEP,
        "growth_budget": GROWTH,
        "growth_lr": f"{GROWTH_LR} × the pilot's η* estimate",
        "default_budget": dynstab.SampledConfig().__dict__ | {"bounds": "lanczos + hutchinson"},
        "exact_max_np": args.exact_max_np,
        "memory_budget": budget,
        "bounds_max_np": args.bounds_max_np,
        "load_start": os.getloadavg(),
    }
    out = args.out or common.RESULTS_DIR / "sampled_stability.json"
    common.write_json(out, common.envelope("sampled_stability", config, results))


if __name__ == "__main__":
    main()
