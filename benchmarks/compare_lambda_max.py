"""λmax of the loss Hessian: dynstab Lanczos vs PyHessian power iteration vs scipy eigsh.

Same process, same model, same data, same loss (½·MSE), float32 HVPs, one thread setting
(see common.py). For each problem (the 784-512-512-10 tanh MLP on 1000 samples and the small
CNN) it records HVPs, wall time (median over repeats, construction of each tool's operator
included) and the relative error against a tight float64 reference (dynstab Lanczos at
tol 1e-10 with the residual stopping rule on a float64 copy, cross-checked against scipy
eigsh on the float64 curvlinops operator where float64 HVPs are affordable).

Methods:
* dynstab ``lanczos_top_eigenpairs`` on ``dynstab.curvature.HessianOperator`` (cached
  gradient graph), residual stopping rule at several tolerances, plus a sweep over a fixed
  number of HVPs (``max_iters = m``) giving the error after exactly ``m`` HVPs.
* PyHessian 0.1 ``hessian(...).eigenvalues`` (power iteration): default settings
  (maxIter=100, tol=1e-3) and tol=1e-6 (maxIter capped). One instrumented run records every
  iterate: PyHessian's own estimate, the exact Rayleigh quotient vᵀHv/vᵀv of the same iterate,
  and the wall time since the tool was constructed; PyHessian's own stopping rule is replayed
  on the recorded estimates (the iterates do not depend on tol, so this is the run tol=1e-6
  would give).
* scipy ``eigsh`` (ARPACK, float64 Krylov basis) on curvlinops' ``HessianLinearOperator``
  with ``nn.MSELoss(reduction="mean")`` rescaled by C/2 to ½·MSE; tol=1e-6 and tol=0.

Run: ``.venv-bench/bin/python benchmarks/compare_lambda_max.py [--quick]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on

import inspect
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dynstab.curvature import HessianOperator
from dynstab.linalg import LanczosConfig, LanczosProgress, lanczos_top_eigenpairs
from dynstab.losses import half_mse

TARGET_REL = 1e-6


class _Abort(Exception):
    pass


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def reference(prob: common.Problem, cfg: dict[str, Any], eigsh_check: bool) -> dict[str, Any]:
    p64 = prob.to(torch.float64)
    t0 = time.perf_counter()
    op = HessianOperator(p64.model, half_mse, (p64.X, p64.y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lanczos_top_eigenpairs(
            op,
            k=2,  # λ2 too: the gap λ2/λ1 governs how fast every method converges
            tol=1e-10,
            max_iters=cfg["ref_max_iters"],
            generator=_gen(12345),
            **_residual_criterion(),
        )
    t_lanczos = time.perf_counter() - t0
    lam = float(res.values[0])
    out: dict[str, Any] = {
        "lambda_max": lam,
        "lambda_2": float(res.values[1]),
        "relative_gap": (lam - float(res.values[1])) / abs(lam),
        "dynstab_float64_lanczos": {
            "value": lam,
            "hvps": res.num_matvecs,
            "converged": res.converged,
            "relative_residual": float(res.residuals[0]) / abs(lam),
            "seconds": t_lanczos,
        },
    }
    if not eigsh_check:
        out["scipy_eigsh_float64"] = {"skipped": "float64 HVPs of this model are slow on CPU"}
        return out
    try:  # independent cross-check: ARPACK on curvlinops' float64 operator
        from scipy.sparse.linalg import eigsh

        lin, counter = _curvlinops_scipy(p64)
        t0 = time.perf_counter()
        vals = eigsh(lin, k=1, which="LA", tol=1e-12, return_eigenvectors=False)
        out["scipy_eigsh_float64"] = {
            "value": float(vals[0]),
            "hvps": counter.calls,
            "seconds": time.perf_counter() - t0,
            "rel_diff_to_lanczos": common.rel_err(float(vals[0]), lam),
        }
    except Exception as exc:  # report, do not hide
        out["scipy_eigsh_float64"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _residual_criterion() -> dict[str, str]:
    """The reference stops on the residual (a rigorous bound) where dynstab offers the choice."""
    params = inspect.signature(lanczos_top_eigenpairs).parameters
    return {"criterion": "residual"} if "criterion" in params else {}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# dynstab
# --------------------------------------------------------------------------------------------
def dynstab_run(
    prob: common.Problem,
    *,
    tol: float,
    max_iters: int,
    seed: int,
    float64_basis: bool = True,
    start: str = "random",
    callback: Callable[[LanczosProgress], None] | None = None,
) -> dict[str, Any]:
    """One dynstab Lanczos run on a fresh cached-graph HessianOperator (construction timed).

    ``float64_basis`` selects ``LanczosConfig.basis_dtype`` (float64 is the engine's default;
    float32 halves the basis traffic but certifies less). ``start="gradient"`` starts at the
    unit loss gradient plus a 1e-2 random component (``sharpness(lanczos_start="gradient")``;
    its gradient costs one extra gradient evaluation, included in the time, not in the HVP
    count). ``callback`` receives the engine's progress after every step.
    """
    op = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    config = LanczosConfig(basis_dtype=torch.float64 if float64_basis else torch.float32)
    v0 = None
    if start == "gradient":
        g = op.gradient().to(torch.float64)
        r = torch.randn(g.numel(), generator=_gen(seed), dtype=torch.float64)
        v0 = g / torch.linalg.vector_norm(g) + 1e-2 * r / torch.linalg.vector_norm(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lanczos_top_eigenpairs(
            op,
            k=1,
            tol=tol,
            max_iters=max_iters,
            v0=v0,
            generator=_gen(seed),
            return_vectors=False,
            config=config,
            callback=callback,
        )
    return {
        "value": float(res.values[0]),
        "hvps": res.num_matvecs,
        "converged": res.converged,
    }


def sharpness_row(prob: common.Problem, ref: float, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The user-facing call: ``sharpness(..., measures="lambda_max", method="lanczos")``."""
    try:
        from dynstab.measures import sharpness
    except ImportError:
        return None

    def run() -> tuple[float, int, bool]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = sharpness(
                prob.model,
                half_mse,
                (prob.X, prob.y),
                measures=("lambda_max",),
                method="lanczos",
                generator=_gen(cfg["seed"]),
            )
        m = rep.lambda_max
        return float(m.value), int(m.num_matvecs), bool(m.converged)

    timing = common.time_call(run, repeats=cfg["repeats"], warmup=1)
    value, hvps, ok = timing.result
    row = {
        "method": "dynstab sharpness(measures='lambda_max', method='lanczos'), defaults "
        "(gradient start, tol=1e-6)",
        "tool": "dynstab",
        "hvps": hvps,
        "converged": ok,
        "value": value,
        "rel_err": common.rel_err(value, ref),
        "time": timing.to_dict(),
    }
    common.log(f"{row['method']}: {hvps} HVPs, err {row['rel_err']:.2e}")
    return row


def dynstab_entries(prob: common.Problem, ref: float, cfg: dict[str, Any]) -> list[dict]:
    rows = []
    for tol in cfg["dynstab_tols"]:
        for f64 in (False, True) if tol == 1e-6 else (False,):
            timing = common.time_call(
                lambda tol=tol, f64=f64: dynstab_run(
                    prob, tol=tol, max_iters=200, seed=cfg["seed"], float64_basis=f64
                ),
                repeats=cfg["repeats"],
                warmup=1,
            )
            r = timing.result
            label = f"dynstab Lanczos tol={tol:g}"
            if f64:
                label += " (float64 basis, float32 HVPs)"
            rows.append(
                {
                    "method": label,
                    "tool": "dynstab",
                    "hvps": r["hvps"],
                    "converged": r["converged"],
                    "value": r["value"],
                    "rel_err": common.rel_err(r["value"], ref),
                    "time": timing.to_dict(),
                }
            )
            common.log(f"{rows[-1]['method']}: {r['hvps']} HVPs, err {rows[-1]['rel_err']:.2e}")
    return rows


def ritz_trajectory(
    prob: common.Problem,
    ref: float,
    *,
    seed: int,
    m_max: int,
    float64_basis: bool,
    start: str = "random",
) -> list[float]:
    """Relative error of dynstab's largest Ritz value after each of m = 1..m_max HVPs.

    One Lanczos run (tol so small that it never certifies) recording the engine's largest
    Ritz value after every step through the public ``callback=`` of
    ``lanczos_top_eigenpairs``: the value a run stopped after ``m`` products returns. A run
    whose bounds reach the float32 round-off floor stops before ``m_max``; the trajectory then
    ends there.
    """
    seen: list[float] = []

    def record(progress: LanczosProgress) -> None:
        if progress.values.numel():
            seen.append(float(progress.values[0]))

    dynstab_run(
        prob,
        tol=1e-14,
        max_iters=m_max,
        seed=seed,
        float64_basis=float64_basis,
        start=start,
        callback=record,
    )
    return [common.rel_err(x, ref) for x in seen]


def dynstab_sweep(prob: common.Problem, ref: float, cfg: dict[str, Any]) -> dict[str, Any]:
    """Error after exactly m HVPs for several start seeds, float32 and float64 Krylov basis."""
    seeds = [cfg["seed"] + k for k in range(cfg["sweep_seeds"])]
    out: dict[str, Any] = {"seeds": seeds, "m_max": cfg["sweep_max"]}
    for key, f64, start in (
        ("float32_basis", False, "random"),
        ("float64_basis", True, "random"),
        ("float32_basis_gradient_start", False, "gradient"),
    ):
        firsts: list[int | None] = []
        floors: list[float] = []
        trajs: list[list[float]] = []
        for seed in seeds:
            errs = ritz_trajectory(
                prob, ref, seed=seed, m_max=cfg["sweep_max"], float64_basis=f64, start=start
            )
            hit = next((m + 1 for m, e in enumerate(errs) if e <= TARGET_REL), None)
            firsts.append(hit)
            floors.append(min(errs))
            trajs.append(errs)
        out[key] = {
            "hvps_to_target_per_seed": firsts,
            "hvps_to_target_median": _median([math.inf if x is None else x for x in firsts]),
            "min_rel_err_per_seed": floors,
            "rel_err_by_hvps": trajs,
        }
        common.log(f"dynstab HVPs to 1e-6 ({key}): {firsts}; best errors {floors}")
    return out


def dynstab_oracle_row(
    prob: common.Problem, ref: float, m: int, f64: bool, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Time of a run stopped after exactly the m HVPs found by the sweep (oracle stop)."""
    timing = common.time_call(
        lambda: dynstab_run(prob, tol=1e-14, max_iters=m, seed=cfg["seed"], float64_basis=f64),
        repeats=cfg["repeats"],
        warmup=1,
    )
    r = timing.result
    basis = "float64 basis" if f64 else "float32 basis"
    return {
        "method": f"dynstab Lanczos, oracle stop at first 1e-6 ({basis})",
        "tool": "dynstab",
        "hvps": r["hvps"],
        "converged": True,
        "value": r["value"],
        "rel_err": common.rel_err(r["value"], ref),
        "time": timing.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# PyHessian
# --------------------------------------------------------------------------------------------
def _pyhessian_module() -> Any:
    import pyhessian  # noqa: F401

    return sys.modules["pyhessian.hessian"]


def pyhessian_default(prob: common.Problem, ref: float, cfg: dict[str, Any]) -> dict[str, Any]:
    mod = _pyhessian_module()
    original = mod.hessian_vector_product
    counter = common.CallCounter(original)
    mod.hessian_vector_product = counter

    def run() -> float:
        counter.calls = 0
        torch.manual_seed(cfg["seed"])  # PyHessian draws its start vector from the global RNG
        h = mod.hessian(prob.model, half_mse, data=(prob.X, prob.y), cuda=False)
        vals, _ = h.eigenvalues()  # defaults: maxIter=100, tol=1e-3
        prob.model.zero_grad(set_to_none=True)  # PyHessian leaves a graph in .grad
        return float(vals[0])

    try:
        timing = common.time_call(run, repeats=cfg["repeats"], warmup=1)
    finally:
        mod.hessian_vector_product = original
    value = timing.result
    row = {
        "method": "PyHessian power iteration, defaults (maxIter=100, tol=1e-3)",
        "tool": "pyhessian",
        "hvps": counter.calls,
        "converged": counter.calls < 100,
        "value": value,
        "rel_err": common.rel_err(value, ref),
        "time": timing.to_dict(),
    }
    common.log(f"{row['method']}: {row['hvps']} HVPs, err {row['rel_err']:.2e}")
    return row


def pyhessian_trajectory(
    prob: common.Problem, ref: float, cfg: dict[str, Any], seed: int
) -> dict[str, Any]:
    """One instrumented PyHessian run (tol=0 so it never stops by itself; capped)."""
    mod = _pyhessian_module()
    original = mod.hessian_vector_product
    cap = cfg["pyhessian_cap"]
    rec: dict[str, list[float]] = {"est": [], "rq": [], "t": []}
    state = {"t0": 0.0, "hits": 0}

    def hvp(gradsH: Any, params: Any, v: Any) -> Any:
        hv = original(gradsH, params, v)
        with torch.no_grad():
            vhv = float(sum(torch.sum(a * b) for a, b in zip(hv, v)))
            vv = float(sum(torch.sum(a * a) for a in v))
        rec["est"].append(vhv)  # what PyHessian uses: group_product(Hv, v)
        rec["rq"].append(vhv / vv)  # exact Rayleigh quotient of the same iterate
        rec["t"].append(time.perf_counter() - state["t0"])
        if common.rel_err(vhv / vv, ref) <= TARGET_REL:
            state["hits"] += 1
        else:
            state["hits"] = 0
        if state["hits"] >= 3 and _pyhessian_stop(rec["est"], 1e-6) is not None:
            raise _Abort
        return hv

    mod.hessian_vector_product = hvp
    torch.manual_seed(seed)
    state["t0"] = time.perf_counter()
    try:
        h = mod.hessian(prob.model, half_mse, data=(prob.X, prob.y), cuda=False)
        h.eigenvalues(maxIter=cap, tol=0.0)
    except _Abort:
        pass
    finally:
        mod.hessian_vector_product = original
        prob.model.zero_grad(set_to_none=True)
    n = len(rec["est"])
    err_est = [common.rel_err(x, ref) for x in rec["est"]]
    err_rq = [common.rel_err(x, ref) for x in rec["rq"]]

    def first_stay(errs: list[float], eps: float) -> int | None:
        """First iteration (1-based) from which the error stays <= eps in the recording."""
        idx = None
        for i in range(n - 1, -1, -1):
            if errs[i] <= eps:
                idx = i
            else:
                break
        return None if idx is None else idx + 1

    out: dict[str, Any] = {
        "seed": seed,
        "cap": cap,
        "recorded_hvps": n,
        "seconds_total": rec["t"][-1],
    }
    stop = _pyhessian_stop(rec["est"], 1e-6)
    if stop is not None:
        out["tol1e-6_stop"] = {
            "hvps": stop,
            "value": rec["est"][stop - 1],
            "rel_err": err_est[stop - 1],
            "seconds": rec["t"][stop - 1],
        }
    out["best_pyhessian_estimate_rel_err"] = min(err_est)
    out["final_pyhessian_estimate_rel_err"] = err_est[-1]
    out["pyhessian_bias_note"] = (
        "PyHessian's estimate is group_product(Hv, v) with v normalised as v/(‖v‖+1e-6) twice "
        "per iteration, so ‖v‖² ≈ 1 − 2e-6: a relative bias ≈ −2e-6 on every estimate."
    )
    out["mean_rel_bias_last10"] = float(
        np.mean([(e - r) / r for e, r in zip(rec["est"][-10:], rec["rq"][-10:])])
    )
    for eps in (1e-3, 1e-4, 1e-5, 1e-6):
        for key, errs in (("pyhessian_estimate", err_est), ("exact_rayleigh_quotient", err_rq)):
            k = first_stay(errs, eps)
            out[f"{key}_to_{eps:g}"] = (
                None if k is None else {"hvps": k, "seconds": rec["t"][k - 1]}
            )
    out["trajectory_every_10"] = [
        {"hvps": i + 1, "rel_err_est": err_est[i], "rel_err_rq": err_rq[i], "t": rec["t"][i]}
        for i in range(0, n, 10)
    ]
    common.log(
        f"PyHessian trajectory (seed {seed}): {n} HVPs in {rec['t'][-1]:.1f}s; "
        f"to 1e-6 (RQ): {out['exact_rayleigh_quotient_to_1e-06']}; "
        f"to 1e-5 (est): {out['pyhessian_estimate_to_1e-05']}"
    )
    return out


def _pyhessian_stop(est: list[float], tol: float) -> int | None:
    """Iteration (1-based) at which PyHessian's rule |λ_i − λ_{i−1}|/(|λ_{i−1}|+1e-6) < tol fires.

    PyHessian returns the previous estimate λ_{i−1} there; we report iteration i's HVP count
    (the product that triggered the stop) and λ_{i−1}'s value via ``est[i-2]`` ≈ ``est[i-1]``.
    """
    for i in range(1, len(est)):
        prev, cur = est[i - 1], est[i]
        if abs(prev - cur) / (abs(prev) + 1e-6) < tol:
            return i + 1
    return None


# --------------------------------------------------------------------------------------------
# scipy eigsh via curvlinops
# --------------------------------------------------------------------------------------------
def _curvlinops_scipy(prob: common.Problem) -> tuple[Any, common.CallCounter]:
    from scipy.sparse.linalg import LinearOperator as ScipyOp

    A = common.curvlinops_hessian(prob).to_scipy()

    def matvec(x: np.ndarray) -> np.ndarray:
        return A.matvec(x)

    counter = common.CallCounter(matvec)
    return ScipyOp(A.shape, matvec=counter, dtype=A.dtype), counter


def eigsh_entries(prob: common.Problem, ref: float, cfg: dict[str, Any]) -> list[dict]:
    from scipy.sparse.linalg import eigsh

    rows = []
    for tol in cfg["eigsh_tols"]:
        calls = {"n": 0}

        def run(tol: float = tol, calls: dict = calls) -> float:
            lin, counter = _curvlinops_scipy(prob)
            vals = eigsh(lin, k=1, which="LA", tol=tol, return_eigenvectors=False)
            calls["n"] = counter.calls
            return float(vals[0])

        timing = common.time_call(run, repeats=cfg["eigsh_repeats"], warmup=0)
        rows.append(
            {
                "method": f"scipy eigsh (ARPACK) on curvlinops Hessian, tol={tol:g}",
                "tool": "curvlinops+scipy",
                "hvps": calls["n"],
                "converged": True,
                "value": timing.result,
                "rel_err": common.rel_err(timing.result, ref),
                "time": timing.to_dict(),
            }
        )
        common.log(f"{rows[-1]['method']}: {calls['n']} HVPs, err {rows[-1]['rel_err']:.2e}")
    return rows


# --------------------------------------------------------------------------------------------
def run_problem(prob: common.Problem, cfg: dict[str, Any], eigsh_check: bool) -> dict[str, Any]:
    common.log(f"problem {prob.name}: {prob.num_params} parameters")
    ref = reference(prob, cfg, eigsh_check)
    lam = ref["lambda_max"]
    common.log(f"reference λmax = {lam:.12g}")
    rows = dynstab_entries(prob, lam, cfg)
    srow = sharpness_row(prob, lam, cfg)
    if srow is not None:
        rows.append(srow)
    sweep = dynstab_sweep(prob, lam, cfg)
    m = sweep["float32_basis"]["hvps_to_target_per_seed"][0]
    if m is not None:
        rows.append(dynstab_oracle_row(prob, lam, m, False, cfg))
    rows.append(pyhessian_default(prob, lam, cfg))
    trajs = [
        pyhessian_trajectory(prob, lam, cfg, cfg["seed"] + k) for k in range(cfg["pyhessian_seeds"])
    ]
    rows.extend(eigsh_entries(prob, lam, cfg))
    return {
        "profile_dynstab": profile_dynstab(prob, cfg),
        "problem": prob.describe(),
        "reference": ref,
        "rows": rows,
        "dynstab_sweep": sweep,
        "pyhessian_trajectories": trajs,
        "pyhessian_summary": _summarise(trajs),
    }


def profile_dynstab(prob: common.Problem, cfg: dict[str, Any]) -> str:
    """cProfile of one default dynstab run (tol=1e-6): where the wall time goes."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    dynstab_run(prob, tol=1e-6, max_iters=200, seed=cfg["seed"])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(12)
    text = buf.getvalue()
    return text[text.find("ncalls") :] if "ncalls" in text else text


def _summarise(trajs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over start seeds of PyHessian's HVPs and seconds to each accuracy.

    A seed that never reached the accuracy within its cap counts as +inf (the median is then
    a lower bound, flagged ``censored``).
    """
    out: dict[str, Any] = {"seeds": [t["seed"] for t in trajs]}
    keys = [
        k for k in trajs[0] if k.endswith(("_to_0.001", "_to_0.0001", "_to_1e-05", "_to_1e-06"))
    ]
    for key in [*keys, "tol1e-6_stop"]:
        hv = [t[key]["hvps"] if t.get(key) else math.inf for t in trajs]
        sec = [t[key]["seconds"] if t.get(key) else math.inf for t in trajs]
        entry: dict[str, Any] = {
            "hvps_per_seed": [None if math.isinf(x) else x for x in hv],
            "seconds_per_seed": [None if math.isinf(x) else x for x in sec],
            "hvps_median": _median(hv),
            "seconds_median": _median(sec),
            "censored": any(math.isinf(x) for x in hv),
        }
        if key == "tol1e-6_stop":
            errs = [t[key]["rel_err"] for t in trajs if t.get(key)]
            entry["rel_err_median"] = float(np.median(errs)) if errs else None
        out[key] = entry
    out["recorded_hvps"] = [t["recorded_hvps"] for t in trajs]
    out["seconds_total"] = [t["seconds_total"] for t in trajs]
    out["cap"] = trajs[0]["cap"]
    out["mean_rel_bias_last10"] = float(np.mean([t["mean_rel_bias_last10"] for t in trajs]))
    out["pyhessian_bias_note"] = trajs[0]["pyhessian_bias_note"]
    return out


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    mid = xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])
    return None if math.isinf(mid) else mid


def main() -> None:
    warnings.filterwarnings("ignore", message=".*create_graph=True will create a reference cycle.*")
    args = common.base_parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        cfg: dict[str, Any] = {
            "repeats": args.repeats or 2,
            "eigsh_repeats": 1,
            "dynstab_tols": [1e-3, 1e-6],
            "eigsh_tols": [1e-6],
            "sweep_max": 30,
            "sweep_seeds": 2,
            "pyhessian_cap": 300,
            "pyhessian_seeds": 2,
            "ref_max_iters": 120,
        }
        problems = [
            common.mlp_problem(n=200, sizes=(784, 64, 64, 10), seed=args.seed),
            common.cnn_problem(n=64, side=16, channels=8, seed=args.seed),
        ]
    else:
        cfg = {
            "repeats": args.repeats or 3,
            "eigsh_repeats": 1,
            "dynstab_tols": [1e-3, 1e-6],
            "eigsh_tols": [1e-6, 0.0],
            "sweep_max": 50,
            "sweep_seeds": 3,
            "pyhessian_cap": 600,
            "pyhessian_seeds": 3,
            "ref_max_iters": 200,
        }
        problems = [common.mlp_problem(seed=args.seed), common.cnn_problem(seed=args.seed)]
    eigsh_checks = [True, args.quick]  # float64 CNN HVPs are slow: check only when small
    cfg["seed"] = args.seed
    cfg["target_rel_err"] = TARGET_REL
    results = [run_problem(p, cfg, check) for p, check in zip(problems, eigsh_checks)]
    out = args.out or common.RESULTS_DIR / "compare_lambda_max.json"
    common.write_json(out, common.envelope("compare_lambda_max", cfg, results))


if __name__ == "__main__":
    main()
