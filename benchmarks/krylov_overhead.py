"""Krylov and Hutchinson overhead over the HVP floor, MLP 784-w-w-10 on n=1000 (float32).

For each width, in one process (ratios, not absolute seconds, are what this measures; every
number of one width comes from the same process minutes apart):

* ``floor``: one gradient with graph (``HessianOperator`` construction: forward +
  ``create_graph`` backward) plus the HVPs the run used, timed *inside the run* by wrapping the
  operator (so machine-load drift affects numerator and denominator alike);
* ``ratio``: wall time of ``HessianOperator(...)`` + ``lanczos_top_eigenpairs(..., tol)``
  divided by that floor; the rest (``overhead``) is Krylov work: orthogonalisation, Ritz
  problems, certificate;
* ``sharpness ratio``: the user-facing ``sharpness(model, half_mse, data, "lambda_max",
  method="lanczos")`` against one gradient plus its HVP count × the per-HVP time of the run
  above;
* ``first``: the first iterate whose largest Ritz value stays within ``tol`` (relative) of the
  reference value (a separate run at 1e-8), read from the certified run's public ``callback``;
* ``optimum``: the first step at which *any* certificate with failure probability 1e-3 could
  stop (``dynstab.linalg.krylov.moment_optimal_stop``: the Christoffel-function bound on the
  tridiagonal of a plain Lanczos run from the engine's start vector); the engine stops at or
  just after it, never before, and "within 2 of ``first``" is impossible for any certificate;
* repeats: the certified runs and the power iteration of a fully measured width run
  ``--repeats`` times (interleaved); ratios and times are medians;
* at ``tol = 1e-3``: the certified Lanczos time against power iteration (PyHessian's
  algorithm) stopped by an oracle at its first iterate within 1e-3 of the reference, i.e. the
  best any stopping rule of power iteration could do (gradient + its HVPs, timed);
* Hutchinson (``--hutch-widths``): ``hutchinson_trace_and_frobenius`` with ``m`` Rademacher
  probes against a plain Python loop of ``m`` cached-graph HVPs ``v·(H v)`` on the same
  operator (same probes), best of two interleaved repeats each.

Growth exponents: least-squares slopes of log(seconds) against log(p) over the widths.

Run: ``.venv/bin/python benchmarks/krylov_overhead.py [--widths 128 256 512 1024 2048]
[--out results.json]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import argparse
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dynstab.curvature import HessianOperator
from dynstab.errors import ConvergenceWarning
from dynstab.linalg import (
    LanczosProgress,
    LinearOperator,
    hutchinson_trace_and_frobenius,
    lanczos_top_eigenpairs,
)
from dynstab.linalg.krylov import moment_optimal_stop, plain_lanczos
from dynstab.losses import half_mse
from dynstab.measures import sharpness


class _Timed(LinearOperator):
    """Forwards products to ``op`` and accumulates the seconds spent in them."""

    def __init__(self, op: HessianOperator) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op = op
        self.seconds = 0.0

    def _matmat(self, V: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = self.op @ V
        self.seconds += time.perf_counter() - t0
        return out


def lanczos_run(prob: common.Problem, tol: float, seed: int) -> dict[str, Any]:
    values: list[float] = []

    def record(r: LanczosProgress) -> None:
        values.append(float(r.values[0]) if r.values.numel() else float("nan"))

    t0 = time.perf_counter()
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    build = time.perf_counter() - t0
    op = _Timed(H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = lanczos_top_eigenpairs(
            op,
            1,
            tol=tol,
            max_iters=300,
            generator=torch.Generator().manual_seed(seed),
            return_vectors=False,
            callback=record,
        )
    total = time.perf_counter() - t0
    floor = build + op.seconds
    return {
        "value": float(res.values[0]),
        "error_bound": float(res.error_bounds[0]) if res.error_bounds is not None else math.inf,
        "converged": res.converged,
        "hvps": res.num_matvecs,
        "seconds": total,
        "build_seconds": build,
        "hvp_seconds": op.seconds,
        "floor_seconds": floor,
        "overhead_seconds": total - floor,
        "ratio": total / floor,
        "trajectory": values,
    }


def sharpness_run(prob: common.Problem, seed: int, per_hvp: float, build: float) -> dict:
    """The user-facing call, against one gradient + its HVPs at the per-HVP time measured."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        rep = sharpness(
            prob.model,
            half_mse,
            (prob.X, prob.y),
            "lambda_max",
            method="lanczos",
            generator=torch.Generator().manual_seed(seed),
        )
        total = time.perf_counter() - t0
    m = rep.measures()["lambda_max"]
    floor = build + m.num_matvecs * per_hvp
    return {"hvps": m.num_matvecs, "seconds": total, "floor_seconds": floor, "ratio": total / floor}


def first_within(traj: list[float], ref: float, tol: float) -> int:
    """First iterate (1-based) from which the value stays within ``tol`` of ``ref``."""
    ok = [abs(v - ref) <= tol * abs(ref) for v in traj]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i + 1
    return -1


def moment_optimum(prob: common.Problem, seed: int, steps: int, tols: list[float]) -> dict:
    """Earliest step any δ = 1e-3 certificate could stop, from the engine's own start vector.

    The engine starts from ``randn(p, generator=seed)`` (float64, normalised); a plain Lanczos
    run (full reorthogonalisation, the operator's float32 products) from that vector gives the
    tridiagonal on which ``moment_optimal_stop`` evaluates the Christoffel bound.
    """
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    q = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    alpha, beta, _, _, _ = plain_lanczos(H, q.unsqueeze(1), steps)
    return {
        f"{tol:g}": moment_optimal_stop(
            alpha[0], beta[0], size=H.shape[0], tol=tol, failure_probability=1e-3
        )
        for tol in tols
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median ratio, with the median ratio, seconds and overhead of all repeats."""
    out = dict(sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2])
    for key in ("ratio", "seconds", "overhead_seconds", "hvp_seconds", "build_seconds"):
        out[key] = statistics.median(r[key] for r in runs)
    out["ratios"] = [r["ratio"] for r in runs]
    return out


def power_oracle(prob: common.Problem, ref: float, tol: float, seed: int, cap: int) -> dict:
    """Power iteration (PyHessian's loop) stopped at its first iterate within ``tol``."""
    t0 = time.perf_counter()
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(H.shape[0], generator=g).to(H.dtype)
    v = v / torch.linalg.vector_norm(v)
    for it in range(1, cap + 1):
        w = H @ v
        theta = float(torch.dot(v, w))
        if abs(theta - ref) <= tol * abs(ref):
            return {"hvps": it, "seconds": time.perf_counter() - t0, "reached": True}
        v = w / torch.linalg.vector_norm(w)
    return {"hvps": cap, "seconds": time.perf_counter() - t0, "reached": False}


def hutchinson_vs_loop(prob: common.Problem, probes: int, seed: int) -> dict[str, Any]:
    """dynstab's Hutchinson (blocks, trace + Frobenius) vs a plain loop of cached-graph HVPs."""
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    p = H.shape[0]

    def loop() -> float:
        g = torch.Generator().manual_seed(seed)
        acc = 0.0
        for _ in range(probes):
            v = (2 * torch.randint(0, 2, (p,), generator=g) - 1).to(H.dtype)
            acc += float(v @ (H @ v))
        return acc / probes

    def dynstab_hutch() -> float:
        g = torch.Generator().manual_seed(seed)
        return hutchinson_trace_and_frobenius(H, probes, generator=g)[0].estimate

    times: dict[str, list[float]] = {"loop": [], "dynstab": []}
    values: dict[str, float] = {}
    for _ in range(2):
        for name, fn in (("loop", loop), ("dynstab", dynstab_hutch)):
            t0 = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {
        "probes": probes,
        "loop_seconds": times["loop"],
        "dynstab_seconds": times["dynstab"],
        "ratio": min(times["dynstab"]) / min(times["loop"]),
        "same_estimate_rel_diff": abs(values["dynstab"] - values["loop"]) / abs(values["loop"]),
    }


def measure(
    width: int,
    n: int,
    seed: int,
    power_cap: int,
    hutch: int,
    only_ratio: bool = False,
    repeats: int = 1,
) -> dict[str, Any]:
    prob = common.mlp_problem(n, (784, width, width, 10))
    if only_ratio:  # large widths: the 1e-6 ratio only
        run = lanczos_run(prob, 1e-6, seed)
        run["first_within_tol"] = first_within(run.pop("trajectory"), run["value"], 1e-6)
        run["relative_error"] = float("nan")
        return {"width": width, "p": prob.num_params, "only_ratio": True, "lanczos_1e-06": run}
    ref = lanczos_run(prob, 1e-8, seed + 100)["value"]
    out: dict[str, Any] = {"width": width, "p": prob.num_params, "reference": ref}
    runs: dict[float, list[dict[str, Any]]] = {1e-6: [], 1e-3: []}
    powers: list[dict[str, Any]] = []
    for _ in range(repeats):  # interleaved, so that load drift hits every quantity alike
        for tol in (1e-6, 1e-3):
            runs[tol].append(lanczos_run(prob, tol, seed))
        powers.append(power_oracle(prob, ref, 1e-3, seed, power_cap))
    for tol in (1e-6, 1e-3):
        run = median_run(runs[tol])
        run["first_within_tol"] = first_within(run.pop("trajectory"), ref, tol)
        run["relative_error"] = abs(run["value"] - ref) / abs(ref)
        out[f"lanczos_{tol:g}"] = run
    steps = max(r["hvps"] for r in runs[1e-6]) + 3
    for tol, opt in moment_optimum(prob, seed, steps, [1e-6, 1e-3]).items():
        out[f"lanczos_{float(tol):g}"]["moment_optimal_stop"] = opt
    base = out["lanczos_1e-06"]
    out["sharpness"] = sharpness_run(
        prob, seed, base["hvp_seconds"] / base["hvps"], base["build_seconds"]
    )
    power = dict(powers[0])
    power["seconds"] = statistics.median(pw["seconds"] for pw in powers)
    out["power_oracle_1e-3"] = power
    if hutch:
        out["hutchinson"] = hutchinson_vs_loop(prob, hutch, seed)
    return out


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(a for a, _ in pts) / len(pts)
    my = sum(b for _, b in pts) / len(pts)
    den = sum((a - mx) ** 2 for a, _ in pts)
    return sum((a - mx) * (b - my) for a, b in pts) / den if den > 0 else None


def exponents(all_rows: list[dict[str, Any]]) -> dict[str, float | None]:
    ps_all = [float(r["p"]) for r in all_rows]
    lz = [r["lanczos_1e-06"] for r in all_rows]
    rows = [r for r in all_rows if not r.get("only_ratio")]
    ps = [float(r["p"]) for r in rows]
    return {
        "lanczos_1e-6_total": slope(ps_all, [x["seconds"] for x in lz]),
        "lanczos_1e-6_hvp_floor": slope(ps_all, [x["floor_seconds"] for x in lz]),
        "lanczos_1e-6_overhead": slope(ps_all, [max(x["overhead_seconds"], 1e-9) for x in lz]),
        "lanczos_1e-6_per_hvp": slope(ps_all, [x["hvp_seconds"] / x["hvps"] for x in lz]),
        "power_oracle_1e-3_total": slope(ps, [r["power_oracle_1e-3"]["seconds"] for r in rows]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument(
        "--ratio-widths",
        type=int,
        nargs="*",
        default=[1024, 2048],
        help="widths measured by the 1e-6 Lanczos run alone (ratio and split)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repeats of the certified runs and the power iteration (medians)",
    )
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--power-cap", type=int, default=200)
    ap.add_argument("--hutch-probes", type=int, default=40)
    ap.add_argument("--hutch-widths", type=int, nargs="*", default=[128, 512])
    ap.add_argument("--quick", action="store_true", help="widths 128 256, n=300")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    if args.quick:
        args.widths, args.n, args.hutch_widths, args.ratio_widths = [128, 256], 300, [128], []
        args.repeats = 1
    rows = []
    print(
        f"{'width':>6} {'p':>9} | {'tol':>5} {'HVPs':>4} {'first':>5} {'opt':>4} {'ratio':>6} "
        f"{'HVP s':>7} {'grad s':>6} {'over s':>6} {'rel.err':>8} {'bound':>8} | "
        f"{'power HVPs':>10} {'LZ/power':>8}",
        flush=True,
    )
    for w in [*args.widths, *args.ratio_widths]:
        hutch = args.hutch_probes if w in args.hutch_widths else 0
        r = measure(w, args.n, args.seed, args.power_cap, hutch, w not in args.widths, args.repeats)
        rows.append(r)
        if r.get("only_ratio"):
            lz = r["lanczos_1e-06"]
            print(
                f"{w:>6d} {r['p']:>9d} | {1e-6:>5.0e} {lz['hvps']:>4d} "
                f"{lz['first_within_tol']:>5d} {'':>4} {lz['ratio']:>6.3f} "
                f"{lz['hvp_seconds']:>7.2f} {lz['build_seconds']:>6.2f} "
                f"{lz['overhead_seconds']:>6.2f} "
                f"{'(own value)':>8} {lz['error_bound'] / abs(lz['value']):>8.1e} |",
                flush=True,
            )
            continue
        pw = r["power_oracle_1e-3"]
        for tol in (1e-6, 1e-3):
            lz = r[f"lanczos_{tol:g}"]
            extra = (
                f"{pw['hvps']:>10d}{'' if pw['reached'] else '+'} "
                f"{lz['seconds'] / pw['seconds']:>8.2f}"
                if tol == 1e-3
                else ""
            )
            print(
                f"{w:>6d} {r['p']:>9d} | {tol:>5.0e} {lz['hvps']:>4d} {lz['first_within_tol']:>5d} "
                f"{lz['moment_optimal_stop'] or -1:>4d} "
                f"{lz['ratio']:>6.3f} {lz['hvp_seconds']:>7.2f} {lz['build_seconds']:>6.2f} "
                f"{lz['overhead_seconds']:>6.2f} {lz['relative_error']:>8.1e} "
                f"{lz['error_bound'] / abs(lz['value']):>8.1e} | {extra}",
                flush=True,
            )
        sh = r["sharpness"]
        print(f"{'':>6} sharpness(lambda_max, lanczos): {sh['hvps']} HVPs, ratio {sh['ratio']:.3f}")
        if "hutchinson" in r:
            h = r["hutchinson"]
            print(
                f"{'':>6} Hutchinson {h['probes']} probes / plain HVP loop: {h['ratio']:.3f} "
                f"(estimates differ by {h['same_estimate_rel_diff']:.1e})",
                flush=True,
            )
    exps = exponents(rows)
    print(
        "growth exponents in p:", {k: None if v is None else round(v, 3) for k, v in exps.items()}
    )
    record = {
        "machine": common.machine_info(),
        "threads": common.THREADS,
        "config": {
            "n": args.n,
            "widths": args.widths,
            "ratio_widths": args.ratio_widths,
            "seed": args.seed,
            "repeats": args.repeats,
        },
        "results": rows,
        "exponents": exps,
    }
    if args.out:
        common.write_json(Path(args.out), record)  # creates results/bench/ on a fresh clone


if __name__ == "__main__":
    main()
