"""Tr H and ‖H‖_F² estimates vs HVP budget: dynstab vs PyHessian vs curvlinops.

Same process, model, data and loss (½·MSE), float32 HVPs. Two settings on a tanh MLP:

* ``general``: random one-hot targets (H ≠ G). Exact Tr H from BackPACK's ``DiagHessian`` on a
  float64 copy (``nn.MSELoss(reduction="mean")`` rescaled by C/2). No exact ‖H‖_F is
  available there, so only the trace is scored.
* ``interpolation``: targets set to the model's own outputs, so every residual is 0 and
  H = G = JᵀJ/n. Exact Tr H = Tr K and ‖H‖_F² = ‖K‖_F² from dynstab's Gram matrix
  K = JJᵀ/n (float64, ``dynstab.curvature.gram_matrix``); Tr H is cross-checked with BackPACK.

Estimators at each budget m (HVPs per estimate; repeated with R seeds): dynstab Hutchinson
(trace and ‖H‖_F² from shared probes, with standard errors), dynstab Hutch++, PyHessian
``trace`` (Hutchinson; fixed m by tol=0), curvlinops ``hutchinson_trace``, ``hutchpp_trace``,
``xtrace`` and ``hutchinson_squared_fro``. Reported per method and m: RMS relative error over
the R seeds (± its standard error), mean reported standard error where the tool gives one, the
fraction of seeds with |error| ≤ 2·stderr, and the median wall time per estimate (operator
construction included).

Finally the exact Gram path is timed and compared with the stochastic estimate: the probe
count m(ε) = (σ/(ε·Tr))² that Hutchinson needs for a relative standard error ε, its time, and
the break-even ε at which both take equally long.

Run: ``.venv-bench/bin/python benchmarks/compare_trace.py [--quick]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import copy
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from dynstab.curvature import HessianOperator, gram_matrix
from dynstab.linalg import hutchinson_trace_and_frobenius, hutchpp_trace
from dynstab.losses import half_mse

Estimate = tuple[float, float | None]  # (value, reported standard error or None)


# --------------------------------------------------------------------------------------------
# exact references
# --------------------------------------------------------------------------------------------
def backpack_trace(prob: common.Problem) -> tuple[float, float]:
    """Exact Tr H (float64) from BackPACK DiagHessian; returns (trace, seconds)."""
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    p64 = prob.to(torch.float64)
    t0 = time.perf_counter()
    model = extend(copy.deepcopy(p64.model))
    loss_fn = extend(nn.MSELoss(reduction="mean"))
    loss = loss_fn(model(p64.X), p64.y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backpack(DiagHessian()):
            loss.backward()
    diag_sum = sum(float(p.diag_h.sum()) for p in model.parameters())  # type: ignore[attr-defined]
    return diag_sum * common.mse_loss_scale(prob.num_outputs), time.perf_counter() - t0


def gram_reference(prob: common.Problem) -> dict[str, Any]:
    """Exact Tr K and ‖K‖_F² from dynstab's Gram matrix in float64 (valid at interpolation)."""
    p64 = prob.to(torch.float64)

    def run() -> tuple[float, float]:
        K = gram_matrix(p64.model, p64.X)
        return float(torch.trace(K)), float((K * K).sum())

    timing = common.time_call(run, repeats=2, warmup=0)
    tr, fro2 = timing.result
    return {
        "trace": tr,
        "frobenius_sq": fro2,
        "gram_size": prob.X.shape[0] * prob.num_outputs,
        "time": timing.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# estimators: each returns {"trace": (value, stderr|None)} and/or {"frobenius_sq": ...}
# --------------------------------------------------------------------------------------------


def est_dynstab_hutch(prob: common.Problem, m: int, seed: int) -> dict[str, Estimate]:
    op = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    tr, fro2 = hutchinson_trace_and_frobenius(op, m, generator=torch.Generator().manual_seed(seed))
    return {"trace": (tr.estimate, tr.stderr), "frobenius_sq": (fro2.estimate, fro2.stderr)}


def est_dynstab_hutchpp(prob: common.Problem, m: int, seed: int) -> dict[str, Estimate]:
    op = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    tr = hutchpp_trace(op, m, generator=torch.Generator().manual_seed(seed))
    return {"trace": (tr.estimate, tr.stderr)}


def est_pyhessian(prob: common.Problem, m: int, seed: int) -> dict[str, Estimate]:
    import pyhessian  # noqa: F401

    mod = sys.modules["pyhessian.hessian"]
    torch.manual_seed(seed)
    h = mod.hessian(prob.model, half_mse, data=(prob.X, prob.y), cuda=False)
    vhv = h.trace(maxIter=m, tol=0.0)  # tol=0: never stops early, exactly m HVPs
    prob.model.zero_grad(set_to_none=True)
    se = float(np.std(vhv, ddof=1) / math.sqrt(len(vhv))) if len(vhv) > 1 else None
    return {"trace": (float(np.mean(vhv)), se)}


def _curvlinops_estimator(name: str) -> Callable[[common.Problem, int, int], dict[str, Estimate]]:
    def run(prob: common.Problem, m: int, seed: int) -> dict[str, Estimate]:
        import curvlinops

        torch.manual_seed(seed)
        value = float(getattr(curvlinops, name)(common.curvlinops_hessian(prob), m))
        key = "frobenius_sq" if name == "hutchinson_squared_fro" else "trace"
        return {key: (value, None)}

    return run


ESTIMATORS: dict[str, tuple[str, Callable[[common.Problem, int, int], dict[str, Estimate]]]] = {
    "dynstab Hutchinson (Tr and ‖H‖F² from shared probes)": ("dynstab", est_dynstab_hutch),
    "dynstab Hutch++": ("dynstab", est_dynstab_hutchpp),
    "PyHessian trace (Hutchinson)": ("pyhessian", est_pyhessian),
    "curvlinops hutchinson_trace": ("curvlinops", _curvlinops_estimator("hutchinson_trace")),
    "curvlinops hutchpp_trace": ("curvlinops", _curvlinops_estimator("hutchpp_trace")),
    "curvlinops xtrace": ("curvlinops", _curvlinops_estimator("xtrace")),
    "curvlinops hutchinson_squared_fro": (
        "curvlinops",
        _curvlinops_estimator("hutchinson_squared_fro"),
    ),
}


def score(
    prob: common.Problem, exact: dict[str, float], cfg: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every estimator at every budget with R seeds; errors against ``exact``."""
    rows = []
    per_probe: dict[str, Any] = {}
    for label, (tool, fn) in ESTIMATORS.items():
        for m in cfg["budgets"]:
            times: list[float] = []
            samples: dict[str, list[Estimate]] = {}
            fn(prob, m, 10_000)  # warm-up (first-call overheads), not scored
            for r in range(cfg["reps"]):
                t0 = time.perf_counter()
                out = fn(prob, m, cfg["seed"] + 1000 * r + m)
                times.append(time.perf_counter() - t0)
                for key, est in out.items():
                    samples.setdefault(key, []).append(est)
            for key, ests in samples.items():
                if key not in exact:
                    continue
                ref = exact[key]
                errs = [(v - ref) / abs(ref) for v, _ in ests]
                sq = [e * e for e in errs]
                rms = math.sqrt(statistics.fmean(sq))
                # standard error of the RMS via the delta method on the mean of squares
                se_rms = (
                    statistics.stdev(sq) / math.sqrt(len(sq)) / (2 * rms)
                    if len(sq) > 1 and rms > 0
                    else math.nan
                )
                ses = [s for _, s in ests if s is not None and math.isfinite(s)]
                row: dict[str, Any] = {
                    "method": label,
                    "tool": tool,
                    "quantity": key,
                    "hvps": m,
                    "reps": len(ests),
                    "rms_rel_err": rms,
                    "rms_rel_err_se": se_rms,
                    "mean_rel_err": statistics.fmean(errs),
                    "median_time_s": statistics.median(times),
                    "times_s": times,
                }
                if ses:
                    row["mean_reported_rel_stderr"] = statistics.fmean(ses) / abs(ref)
                    row["coverage_2se"] = sum(
                        abs(v - ref) <= 2 * s for (v, s) in ests if s is not None
                    ) / len(ses)
                rows.append(row)
                common.log(
                    f"{label} [{key}] m={m}: rms rel err {rms:.3g} ± {se_rms:.2g}, "
                    f"{statistics.median(times):.2f}s"
                )
            if label.startswith("dynstab Hutchinson") and m == max(cfg["budgets"]):
                # per-probe spread and cost, for the Gram-vs-stochastic comparison
                per_probe = {
                    key: {
                        "per_probe_std": statistics.fmean(s for _, s in ests if s is not None)
                        * math.sqrt(m),
                        "per_probe_time_s": statistics.median(times) / m,
                        "hvps": m,
                    }
                    for key, ests in samples.items()
                }
    return rows, per_probe


def gram_vs_stochastic(
    exact: dict[str, Any], per_probe: dict[str, Any], accuracies: list[float]
) -> dict[str, Any]:
    """Time for Hutchinson to reach relative standard error ε vs the exact Gram path."""
    t_gram = exact["gram"]["time"]["median_s"]
    out: dict[str, Any] = {"gram_seconds": t_gram, "quantities": {}}
    for key, ref in (("trace", exact["trace"]), ("frobenius_sq", exact["frobenius_sq"])):
        if key not in per_probe:
            continue
        s = per_probe[key]["per_probe_std"] / abs(ref)  # relative per-probe spread
        tp = per_probe[key]["per_probe_time_s"]
        entry: dict[str, Any] = {"relative_per_probe_std": s, "per_probe_time_s": tp}
        for eps in accuracies:
            m = math.ceil((s / eps) ** 2)
            entry[f"eps={eps:g}"] = {"probes": m, "seconds": m * tp, "vs_gram": m * tp / t_gram}
        # ε at which m(ε)·tp == t_gram  ⇔  ε = s·sqrt(tp / t_gram)
        entry["break_even_rel_err"] = s * math.sqrt(tp / t_gram)
        out["quantities"][key] = entry
    return out


# --------------------------------------------------------------------------------------------
def main() -> None:
    warnings.filterwarnings("ignore", message=".*create_graph=True will create a reference cycle.*")
    args = common.base_parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        cfg: dict[str, Any] = {
            "budgets": [12, 48],
            "reps": args.repeats or 3,
            "n": 64,
            "sizes": (784, 32, 32, 10),
        }
    else:
        cfg = {"budgets": [12, 48, 192], "reps": args.repeats or 5, "n": 200}
        cfg["sizes"] = (784, 128, 128, 10)
    cfg["seed"] = args.seed
    cfg["accuracies"] = [1e-2, 1e-3]
    results = []
    for setting in ("general", "interpolation"):
        prob = common.mlp_problem(n=cfg["n"], sizes=cfg["sizes"], seed=args.seed)
        if setting == "interpolation":
            with torch.no_grad():
                prob.y = prob.model(prob.X).detach().clone()
        common.log(f"setting {setting}: {prob.name}, {prob.num_params} parameters, n={cfg['n']}")
        bp_tr, bp_s = backpack_trace(prob)
        exact: dict[str, Any] = {
            "trace": bp_tr,
            "backpack": {"trace": bp_tr, "seconds": bp_s},
        }
        if setting == "interpolation":
            g = gram_reference(prob)
            exact.update(trace=g["trace"], frobenius_sq=g["frobenius_sq"], gram=g)
            exact["backpack"]["rel_diff_to_gram_trace"] = common.rel_err(bp_tr, g["trace"])
        common.log(f"exact: {exact}")
        rows, per_probe = score(prob, exact, cfg)
        entry: dict[str, Any] = {
            "setting": setting,
            "problem": prob.describe(),
            "exact": exact,
            "rows": rows,
            "per_probe": per_probe,
        }
        if setting == "interpolation":
            entry["gram_vs_stochastic"] = gram_vs_stochastic(exact, per_probe, cfg["accuracies"])
        results.append(entry)
    out = args.out or common.RESULTS_DIR / "compare_trace.json"
    common.write_json(out, common.envelope("compare_trace", cfg, results))


if __name__ == "__main__":
    main()
