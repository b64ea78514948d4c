"""Run every benchmark and rewrite docs/benchmarks.md from their results.

Each benchmark runs as its own subprocess (fresh interpreter, same thread settings, a time
limit), writes JSON to ``results/bench/`` (dynstab's comparison scripts) or prints a table
(the scripts that measure dynstab alone), and this script collects everything into
``results/bench/run_all.json`` and renders ``docs/benchmarks.md``: machine, versions, date,
medians over repeats, ratios, and whether the targets of the benchmark issue are met.

Usage::

    make bench                                   # set up .venv-bench, then the full run
    .venv-bench/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]
    .venv-bench/bin/python benchmarks/run_all.py --render-only   # re-render the last run

A script that is absent is reported as missing; one that fails or times out is reported with
the tail of its output. Nothing here is a test: timings are never asserted.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = common.ROOT / "docs" / "benchmarks.md"
QUICK_DIR = common.RESULTS_DIR / "quick"  # a smoke run never overwrites the full results
QUICK_DOC = QUICK_DIR / "benchmarks_quick.md"


def _summary_path(quick: bool) -> Path:
    return (QUICK_DIR if quick else common.RESULTS_DIR) / "run_all.json"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: how to call it in full and quick mode."""

    name: str
    script: str
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    json_out: bool  # writes JSON via --out (ours) or prints a table (theirs)
    timeout_s: int
    owner: str


def benches(threads: int) -> list[Bench]:
    t = ("--threads", str(threads))
    # the longest scripts first, so that --jobs > 1 finishes sooner
    return [
        Bench("krylov_overhead", "krylov_overhead.py", (), ("--quick",), True, 2100, "S"),
        Bench("engine_regression", "engine_regression.py", (), ("--quick",), True, 900, "C"),
        # the η* goals of issue 16 are stated on 2 cores
        Bench(
            "eta_star_scaling",
            "eta_star_scaling.py",
            ("--threads", "2", "--with-5000"),
            ("--threads", "2"),
            True,
            1200,
            "B",
        ),
        Bench("compare_lambda_max", "compare_lambda_max.py", (), ("--quick",), True, 900, "H"),
        Bench("compare_trace", "compare_trace.py", (), ("--quick",), True, 600, "H"),
        Bench("hvp_cost", "hvp_cost.py", (), ("--quick",), True, 300, "H"),
        Bench("lambda_max_mlp", "lambda_max_mlp.py", t, (*t, "--n", "200"), False, 600, "A"),
        Bench("batched_trainer", "batched_trainer.py", t, (*t, "--steps", "200"), False, 600, "D"),
        # the harness's requirement (issue 11): quick ≤ 2×, full ≤ 1.5× the reference commit
        Bench(
            "reproduction_time",
            "reproduction_time.py",
            ("--profiles", "quick", "full", "--repeats", "1"),
            ("--profiles", "quick", "--repeats", "1"),
            False,
            1800,
            "I",
        ),
        # issue 15: stated on 2 cores
        Bench(
            "sampled_stability",
            "sampled_stability.py",
            ("--threads", "2"),
            ("--threads", "2", "--quick"),
            True,
            1800,
            "F",
        ),
    ]


def run_one(b: Bench, quick: bool, threads: int) -> dict[str, Any]:
    path = HERE / b.script
    entry: dict[str, Any] = {"name": b.name, "script": f"benchmarks/{b.script}", "owner": b.owner}
    if not path.exists():
        common.log(f"{b.name}: MISSING ({entry['script']})")
        return {**entry, "status": "missing"}
    args = list(b.quick_args if quick else b.full_args)
    out_json = (QUICK_DIR if quick else common.RESULTS_DIR) / f"{b.name}.json"
    if b.json_out:
        args += ["--out", str(out_json)]
        out_json.unlink(missing_ok=True)
    cmd = [sys.executable, str(path), *args]
    env = dict(os.environ)
    env["DYNSTAB_BENCH_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # a timed-out script still reports the rows it printed
    common.log(f"{b.name}: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=common.ROOT, env=env, capture_output=True, text=True, timeout=b.timeout_s
        )
        rc: int | None = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        rc, status = None, "timeout"
        stdout = _text(exc.stdout)
        stderr = _text(exc.stderr)
    wall = time.perf_counter() - t0
    common.log(f"{b.name}: {status} in {wall:.0f}s")
    entry.update(
        status=status,
        returncode=rc,
        command=" ".join(["python", entry["script"], *args]).replace(str(common.ROOT) + "/", ""),
        wall_s=wall,
        stdout=stdout[-12000:],
        stderr_tail=stderr[-3000:],
    )
    if b.json_out and out_json.exists():
        entry["result"] = json.loads(out_json.read_text())
    return entry


def _text(x: bytes | str | None) -> str:
    if x is None:
        return ""
    return x.decode(errors="replace") if isinstance(x, bytes) else x


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def _f(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "—"
    return format(x, fmt)


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _get(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    for e in summary["benches"]:
        if e["name"] == name:
            return e
    return None


def _status_note(e: dict[str, Any] | None) -> str | None:
    if e is None:
        return "_not run (excluded with --only)._"
    if e["status"] == "missing":
        return f"_Missing: `{e['script']}` was not in the tree when this run was made._"
    if e["status"] != "ok":
        tail = (e.get("stderr_tail") or "").strip().splitlines()[-15:]
        return (
            f"_`{e['script']}` {e['status']} (return code {e.get('returncode')}, "
            f"{e.get('wall_s', 0):.0f} s). Last lines of its error output:_\n\n```\n"
            + "\n".join(tail)
            + "\n```"
        )
    return None


def _result(e: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON result of a benchmark that ran to completion, else ``None``."""
    if e is None or _status_note(e) or "result" not in e:
        return None
    return e["result"]


def _missing(e: dict[str, Any] | None) -> str:
    """Why a section has no result (status note, or no result file)."""
    return (_status_note(e) or "_no result file._") + "\n"


def render_lambda(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    parts = ["## 1. λmax: dynstab Lanczos vs PyHessian vs scipy eigsh\n"]
    res = _result(e)
    if res is None:
        return "\n".join([*parts, _missing(e)])
    cfg = res["config"]
    parts.append(
        "Same process, model, data and loss (½·MSE written by hand for PyHessian; "
        "`nn.MSELoss(reduction='mean')`×C/2 for curvlinops), float32 HVPs. Wall time includes "
        "building each tool's operator/graph; medians over the repeats shown. Relative error is "
        "against a float64 reference (dynstab Lanczos, tol 1e-10, residual stopping rule, on a "
        "float64 copy; "
        "cross-checked against scipy eigsh on curvlinops' float64 operator). "
        "`× dynstab` = this row's median time / the time of dynstab Lanczos at its default "
        "tol=1e-6.\n"
    )
    for prob in res["results"]:
        d = prob["problem"]
        ref = prob["reference"]
        parts.append(
            f"### {d['name']} — p = {d['num_params']:,}, n = {d['num_samples']}, "
            f"C = {d['num_outputs']}\n"
        )
        ck = ref.get("scipy_eigsh_float64", {})
        parts.append(
            f"Reference λmax = {ref['lambda_max']:.12g}, "
            f"λ2 = {_f(ref.get('lambda_2'), '.8g')} (relative gap (λ1−λ2)/λ1 = "
            f"{_f(ref.get('relative_gap'), '.2e')}) "
            f"({ref['dynstab_float64_lanczos']['hvps']} float64 HVPs); scipy eigsh float64: "
            + (
                f"{ck['value']:.12g} (relative difference {ck['rel_diff_to_lanczos']:.1e})."
                if "value" in ck
                else f"skipped ({ck['skipped']})."
                if "skipped" in ck
                else f"failed ({ck.get('error')})."
            )
            + "\n"
        )
        rows = prob["rows"]
        base = next(
            (r for r in rows if r["method"] == "dynstab Lanczos tol=1e-06"),
            None,
        )
        base_t = base["time"]["median_s"] if base else None
        table = []
        eigsh_rows = []
        for r in rows:
            t = r["time"]["median_s"]
            row = [
                r["method"],
                str(r["hvps"]),
                f"{t:.2f}",
                str(r["time"]["repeats"]),
                f"{r['rel_err']:.1e}",
                _f(t / base_t, ".2f") if base_t else "—",
            ]
            (eigsh_rows if r["tool"] == "curvlinops+scipy" else table).append(row)
        ps = prob["pyhessian_summary"]
        nseeds = len(ps["seeds"])
        for eps, key, label in (
            (1e-5, "pyhessian_estimate", "PyHessian's own estimate"),
            (1e-6, "pyhessian_estimate", "PyHessian's own estimate"),
            (1e-6, "exact_rayleigh_quotient", "exact Rayleigh quotient of PyHessian's iterate"),
        ):
            table.append(
                _ph_row(
                    f"PyHessian power iteration, oracle stop at first rel. error ≤ {eps:g} "
                    f"({label})",
                    ps[f"{key}_to_{eps:g}"],
                    f"≤ {eps:g}",
                    nseeds,
                    base_t,
                )
            )
        stop = ps["tol1e-6_stop"]
        table.append(
            _ph_row(
                "PyHessian power iteration, tol=1e-6 (its stopping rule)",
                stop,
                _f(stop.get("rel_err_median"), ".1e"),
                nseeds,
                base_t,
            )
        )
        parts.append(
            _table(
                ["method", "HVPs", "wall [s] (median)", "repeats", "rel. error", "× dynstab"],
                table + eigsh_rows,
            )
        )
        sw = prob["dynstab_sweep"]
        seeds = sw["seeds"]
        f32, f64 = sw["float32_basis"], sw["float64_basis"]
        fgs = sw.get("float32_basis_gradient_start")
        marks = [1, 5, 10, 15, 20, 25, 30, 40, 50]
        errs0 = f32["rel_err_by_hvps"][0]
        parts.append(
            "\nError of dynstab Lanczos after exactly m HVPs (recorded from dynstab's own Ritz "
            f"values at every step, via `callback=`; float32 Krylov basis, start seed {seeds[0]}): "
            + ", ".join(f"m={m}: {errs0[m - 1]:.1e}" for m in marks if m <= len(errs0))
            + ".\n"
        )
        parts.append(
            _table(
                [
                    "Krylov basis",
                    "first m with error ≤ 1e-6, per start seed",
                    "median",
                    f"best error within {sw['m_max']} HVPs, per seed",
                ],
                [
                    [
                        label,
                        ", ".join(
                            "—" if x is None else str(x) for x in v["hvps_to_target_per_seed"]
                        ),
                        _f(v["hvps_to_target_median"], "g"),
                        ", ".join(f"{x:.1e}" for x in v["min_rel_err_per_seed"]),
                    ]
                    for label, v in (
                        ("float32 basis (`LanczosConfig(basis_dtype=float32)`), random start", f32),
                        ("float64 basis (the default), random start", f64),
                        ("float32, gradient start (sharpness() default)", fgs),
                    )
                    if v
                ],
            )
        )
        parts.append(
            f"PyHessian rows: {nseeds} instrumented runs (start seeds {ps['seeds']}; tol=0, capped "
            f"at {ps['cap']} HVPs, each stopped once the exact Rayleigh quotient stayed within "
            "1e-6 and PyHessian's own rule had fired); HVPs and seconds are medians over the "
            "seeds (per seed in brackets; `>` marks a median censored by the cap). The tol=1e-6 "
            "row replays PyHessian's stopping rule on the recorded estimates (the iterates do "
            "not depend on tol). Mean relative bias of PyHessian's estimate vs the exact Rayleigh "
            f"quotient of the same iterate (last 10 iterates): {ps['mean_rel_bias_last10']:.1e}. "
            f"{ps['pyhessian_bias_note']}\n"
        )
        if prob.get("profile_dynstab"):
            parts.append(
                "<details><summary>Profile: one default dynstab run (tol=1e-6), cProfile, top "
                "functions by own time</summary>\n\n```\n"
                + prob["profile_dynstab"].strip()
                + "\n```\n</details>\n"
            )
        # targets
        med = f32["hvps_to_target_median"]
        gmed = fgs["hvps_to_target_median"] if fgs else None
        targets.append(
            {
                "target": f"λmax to 1e-6 in ≤ 25 HVPs — {d['name']}",
                "measured": f"median over start seeds {seeds}: random start "
                f"{_f(med, 'g') if med is not None else 'not reached'} HVPs "
                f"(per seed {_seeds(f32['hvps_to_target_per_seed'])}); gradient start, as "
                f"sharpness() does by default: {_f(gmed, 'g') if gmed is not None else '—'} "
                f"(per seed {_seeds(fgs['hvps_to_target_per_seed']) if fgs else '—'}); "
                "float64 basis, "
                f"random start: {_f(f64['hvps_to_target_median'], 'g')}",
                "met": _met_two(
                    med is not None and med <= 25,
                    gmed is not None and gmed <= 25,
                    "random start",
                    "default gradient start",
                ),
            }
        )
        ph6 = ps["exact_rayleigh_quotient_to_1e-06"]
        ph5 = ps["pyhessian_estimate_to_1e-05"]
        if base_t and base:
            t6 = ph6["seconds_median"]
            if t6 is not None and not ph6["censored"]:
                ratio6 = t6 / base_t
                txt6 = f"{ratio6:.1f}× (power iteration to 1e-6: median {t6:.1f} s)"
            elif t6 is not None:
                ratio6 = t6 / base_t
                txt6 = f"≥ {ratio6:.1f}× (some seeds hit the cap)"
            else:  # no seed reached 1e-6 before the cap: the ratio is a lower bound
                ratio6 = max(ps["seconds_total"]) / base_t
                txt6 = f"> {ratio6:.1f}× (1e-6 not reached within the cap)"
            t5 = ph5["seconds_median"]
            txt5 = f"; PyHessian's own estimate to 1e-5: {t5 / base_t:.1f}×" if t5 else ""
            targets.append(
                {
                    "target": f"≥ 3× less wall time than PyHessian at equal accuracy — {d['name']}",
                    "measured": f"dynstab tol=1e-6: {base_t:.2f} s, error {base['rel_err']:.1e}; "
                    f"PyHessian/dynstab = {txt6}{txt5}",
                    "met": base["rel_err"] <= 1e-6 and ratio6 >= 3,
                }
            )
    parts.append(f"\nConfiguration: `{json.dumps(cfg)}`.\n")
    return "\n".join(parts)


def _seeds(xs: list[int | None]) -> str:
    """Per-seed HVP counts; — marks a seed that never reached the target."""
    return "[" + ", ".join("—" if x is None else str(x) for x in xs) + "]"


def _met_two(a: bool, b: bool, label_a: str, label_b: str) -> bool | str:
    """One verdict when both variants agree, otherwise say which one meets the target."""
    if a == b:
        return a
    return (
        f"**yes** with the {label_a if a else label_b}, **no** with the {label_b if a else label_a}"
    )


def _ph_row(
    method: str, entry: dict[str, Any], err: str, nseeds: int, base_t: float | None
) -> list[str]:
    hv, sec = entry["hvps_median"], entry["seconds_median"]
    per = "/".join("—" if x is None else str(x) for x in entry["hvps_per_seed"])
    mark = ">" if entry["censored"] else ""
    if hv is None:
        return [method, f"not reached ({per})", "—", f"{nseeds} seeds", err, "—"]
    return [
        method,
        f"{mark}{hv:g} ({per})",
        f"{mark}{sec:.2f}",
        f"{nseeds} seeds",
        err,
        f"{mark}{sec / base_t:.2f}" if base_t else "—",
    ]


def render_trace(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    parts = ["## 2. Trace and ‖H‖F: error vs HVP budget\n"]
    res = _result(e)
    if res is None:
        return "\n".join([*parts, _missing(e)])
    cfg = res["config"]
    parts.append(
        "Each cell: RMS relative error over "
        f"{cfg['reps']} seeds ± its standard error (delta method), then the median wall time "
        "per estimate (operator construction included). `reported se` = mean standard error "
        "the tool itself reports (relative), `cover` = fraction of seeds with "
        "|error| ≤ 2·reported se. dynstab's Hutchinson and PyHessian draw the same Rademacher "
        "probes from the same seed, so their estimates coincide up to float32 rounding (a "
        "cross-check of the HVPs); curvlinops draws its own.\n"
    )
    for s in res["results"]:
        d = s["problem"]
        ex = s["exact"]
        parts.append(
            f"### Setting `{s['setting']}` — {d['name']}, p = {d['num_params']:,}, "
            f"n = {d['num_samples']}\n"
        )
        if s["setting"] == "general":
            parts.append(
                f"Random one-hot targets. Exact Tr H = {ex['trace']:.10g} from BackPACK "
                f"DiagHessian (float64, {ex['backpack']['seconds']:.2f} s). No exact ‖H‖F² "
                "is available at this point, so only the trace is scored.\n"
            )
        else:
            g = ex["gram"]
            parts.append(
                "Targets = the model's own outputs (interpolation: H = G = JᵀJ/n). Exact "
                f"Tr H = {ex['trace']:.10g} and ‖H‖F² = {ex['frobenius_sq']:.10g} from dynstab's "
                f"Gram matrix ({g['gram_size']}×{g['gram_size']}, float64, "
                f"{g['time']['median_s']:.1f} s median of {g['time']['repeats']}); BackPACK's "
                f"trace agrees to {ex['backpack']['rel_diff_to_gram_trace']:.1e}.\n"
            )
        budgets = cfg["budgets"]
        keyed: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in s["rows"]:
            keyed.setdefault((r["method"], r["quantity"]), {})[r["hvps"]] = r
        header = ["method", "quantity", *[f"m = {m}" for m in budgets], "reported se / cover"]
        table = []
        for (method, q), by_m in keyed.items():
            cells = []
            for m in budgets:
                r = by_m.get(m)
                cells.append(
                    "—"
                    if r is None
                    else f"{r['rms_rel_err']:.2e} ± {r['rms_rel_err_se']:.1e}, "
                    f"{r['median_time_s']:.2f} s"
                )
            last = by_m.get(budgets[-1], {})
            se = last.get("mean_reported_rel_stderr")
            cover = last.get("coverage_2se")
            qname = "Tr H" if q == "trace" else "‖H‖F²"
            table.append(
                [
                    method,
                    qname,
                    *cells,
                    "—" if se is None else f"{se:.1e} / {cover:.0%} (m = {budgets[-1]})",
                ]
            )
        parts.append(_table(header, table))
        gv = s.get("gram_vs_stochastic")
        if gv:
            parts.append(
                "\n**Exact Gram path vs stochastic estimate (time to equal accuracy).** The Gram "
                f"path gives both numbers to float64 rounding in {gv['gram_seconds']:.1f} s. "
                "Hutchinson (dynstab, shared probes) needs m(ε) = (σ/ε)² probes for a relative "
                "standard error ε, with σ the relative per-probe spread measured above:\n"
            )
            rows = []
            for q, v in gv["quantities"].items():
                accs = [k for k in v if k.startswith("eps=")]
                rows.append(
                    [
                        "Tr H" if q == "trace" else "‖H‖F²",
                        f"{v['relative_per_probe_std']:.3f}",
                        f"{v['per_probe_time_s'] * 1e3:.1f} ms",
                        *[
                            f"{v[a]['probes']} probes, {v[a]['seconds']:.2f} s "
                            f"({v[a]['vs_gram']:.2g}× Gram)"
                            for a in accs
                        ],
                        f"{v['break_even_rel_err']:.1e}",
                    ]
                )
            accs = [k for k in next(iter(gv["quantities"].values())) if k.startswith("eps=")]
            parts.append(
                _table(
                    [
                        "quantity",
                        "σ (relative)",
                        "time / probe",
                        *[a.replace("eps=", "ε = ") for a in accs],
                        "break-even ε",
                    ],
                    rows,
                )
            )
            parts.append(
                "\nBelow the break-even relative error the exact Gram path is faster; above it "
                "the stochastic estimate is. The Gram path costs O((nC)²·p) (the product JJᵀ), "
                "so it pays off for small n·C or when many digits are needed.\n"
            )
    parts.append(f"\nConfiguration: `{json.dumps(cfg)}`.\n")
    return "\n".join(parts)


def render_hvp(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    parts = ["## 3. HVP cost in gradient-equivalents\n"]
    res = _result(e)
    if res is None:
        return "\n".join([*parts, _missing(e)])
    parts.append(
        "Median over repeats after 2 warm-up calls; one gradient = forward + backward of the "
        "full-batch ½·MSE loss. Per-column rows divide the time of one 16-column block product "
        "by 16.\n"
    )
    for prob in res["results"]:
        d = prob["problem"]
        parts.append(f"### {d['name']} — p = {d['num_params']:,}, n = {d['num_samples']}\n")
        rows = []
        cached = None
        for r in prob["rows"]:
            if "median_s" not in r:
                rows.append([r["what"], "—", f"error: {r.get('error')}"])
                continue
            rows.append([r["what"], _ms(r["median_s"]), f"{r['gradient_equivalents']:.2f}"])
            if r["what"] == "dynstab HVP, cached graph":
                cached = r["gradient_equivalents"]
        parts.append(_table(["what", "median [ms]", "gradient-equivalents"], rows))
        parts.append("")
        if cached is not None:
            targets.append(
                {
                    "target": f"HVP ≤ 2 gradient-equivalents with a cached graph — {d['name']}",
                    "measured": f"{cached:.2f}",
                    "met": cached <= 2.0,
                }
            )
        prof = prob.get("profile")
        if prof:
            parts.append(
                "<details><summary>Profile: where the time of one cached-graph dynstab HVP "
                "goes (torch.profiler, top operators by self CPU time)</summary>\n\n```\n"
                + prof.strip()
                + "\n```\n</details>\n"
            )
    return "\n".join(parts)


def render_krylov(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    """Issue 16: Lanczos and Hutchinson time against their HVP floor, growth in p."""
    parts = ["## 7. Krylov and Hutchinson overhead over the HVP floor (issue 16)\n"]
    res = _result(e)
    if res is None:
        return "\n".join([*parts, _missing(e)])
    n = res["config"]["n"]
    parts.append(
        f"`benchmarks/krylov_overhead.py`: MLP 784-w-w-10 (tanh), n = {n}, float32, "
        f"{res['threads']} thread(s), random start seed {res['config']['seed']}. "
        "**Every ratio is measured in one process** (numerator and denominator minutes apart; "
        "absolute seconds depend on the machine's load and are shown only for the split). "
        "`floor` = one gradient with graph (building the "
        "cached-graph `HessianOperator`) + the HVPs of the run, timed inside the run; `ratio` = "
        "wall time of construction + `lanczos_top_eigenpairs` / floor; `overhead` = the rest "
        "(orthogonalisation, Ritz problems, certificate). `first` = first iterate from which "
        "the Ritz value stays within tol of a 1e-8 reference (from the public `callback`); "
        "`optimum` = the first step at which *any* certificate with failure probability 1e-3 "
        "could stop (`dynstab.linalg.krylov.moment_optimal_stop`, the Christoffel-function "
        "bound on the tridiagonal of the same start vector): certifying earlier would claim "
        "more than the products support, so the gap `first` → `optimum` is the price of the "
        "certificate, not of the implementation; `HVPs` = where the engine certified. "
        f"Ratios and times are medians of {res['config'].get('repeats', 1)} interleaved "
        "repeat(s) of the certified runs and of the power iteration. "
        "`bound` = certified error bound / value. `sharpness()` = "
        "`sharpness(model, half_mse, data, 'lambda_max', method='lanczos')` over one gradient + "
        "its HVPs at the per-HVP time of the 1e-6 run. `power` = PyHessian's power iteration "
        "stopped by an oracle at its first iterate within 1e-3 (the best any stopping rule "
        "could do).\n"
    )

    def stops(run: dict[str, Any]) -> str:
        opt = run.get("moment_optimal_stop")
        return f"{run['first_within_tol']} / {'—' if opt is None else opt} / {run['hvps']}"

    rows = []
    for r in res["results"]:
        a = r["lanczos_1e-06"]
        if r.get("only_ratio"):
            rows.append(
                [
                    str(r["width"]),
                    f"{r['p']:,}",
                    f"{a['first_within_tol']}* / — / {a['hvps']}",
                    f"{a['hvp_seconds']:.2f} / {a['build_seconds']:.2f} / "
                    f"{a['overhead_seconds']:.2f}",
                    f"**{a['ratio']:.2f}**",
                    f"— / {a['error_bound'] / abs(a['value']):.1e}",
                    *(["not run"] * 5),
                ]
            )
            continue
        b = r["lanczos_0.001"]
        pw, sh = r["power_oracle_1e-3"], r["sharpness"]
        rows.append(
            [
                str(r["width"]),
                f"{r['p']:,}",
                stops(a),
                f"{a['hvp_seconds']:.2f} / {a['build_seconds']:.2f} / {a['overhead_seconds']:.2f}",
                f"**{a['ratio']:.2f}**",
                f"{a['relative_error']:.1e} / {a['error_bound'] / abs(a['value']):.1e}",
                f"{sh['hvps']}: {sh['ratio']:.2f}",
                stops(b),
                f"{b['ratio']:.2f}",
                f"{pw['hvps']}{'' if pw['reached'] else '+'}",
                f"{b['seconds'] / pw['seconds']:.2f}",
            ]
        )
    parts.append(
        _table(
            [
                "width",
                "p",
                "1e-6: first / optimum / HVPs",
                "1e-6 split: HVP / gradient / overhead [s]",
                "1e-6 ratio",
                "1e-6 rel. error / bound",
                "sharpness(): HVPs: ratio",
                "1e-3: first / optimum / HVPs",
                "1e-3 ratio",
                "power HVPs (oracle 1e-3)",
                "Lanczos 1e-3 time / power",
            ],
            rows,
        )
    )
    if any(r.get("only_ratio") for r in res["results"]):
        parts.append(
            "\n`*` widths measured by the 1e-6 run alone (one run): `first` counts against the "
            "run's own certified value (within its bound of the truth).\n"
        )
    hut = [r for r in res["results"] if "hutchinson" in r]
    if hut:
        parts.append(
            "\nHutchinson (`hutchinson_trace_and_frobenius`, trace and ‖H‖F² from the same "
            "Rademacher probes, probe blocks under the 256 MiB default budget) against a plain "
            "Python loop of cached-graph HVPs `v·(H v)` with the same probes, best of two "
            "interleaved repeats each:\n"
        )
        parts.append(
            _table(
                ["width", "p", "probes", "dynstab / loop", "estimates differ by"],
                [
                    [
                        str(r["width"]),
                        f"{r['p']:,}",
                        str(r["hutchinson"]["probes"]),
                        f"**{r['hutchinson']['ratio']:.2f}**",
                        f"{r['hutchinson']['same_estimate_rel_diff']:.1e}",
                    ]
                    for r in hut
                ],
            )
        )
        worst = max(r["hutchinson"]["ratio"] for r in hut)
        targets.append(
            {
                "target": "Hutchinson ≤ 1.10× a plain cached-graph HVP loop at equal probes "
                "(issue 16)",
                "measured": f"worst {worst:.2f}× (§7)",
                "met": worst <= 1.10,
            }
        )
    ex = res["exponents"]
    parts.append(
        "\nGrowth exponents in p (least-squares slope of log seconds against log p over the "
        "widths): "
        + ", ".join(
            f"{label} {_f(ex.get(key), '.2f')}"
            for key, label in (
                ("lanczos_1e-6_total", "Lanczos 1e-6 total"),
                ("lanczos_1e-6_hvp_floor", "its HVP floor"),
                ("lanczos_1e-6_overhead", "its overhead"),
                ("lanczos_1e-6_per_hvp", "one HVP"),
                ("power_oracle_1e-3_total", "oracle power iteration to 1e-3"),
            )
        )
        + ".\n"
    )
    worst = max(r["lanczos_1e-06"]["ratio"] for r in res["results"])
    targets.append(
        {
            "target": "Lanczos λmax at 1e-6 ≤ 1.25× (HVPs + one gradient) at every width "
            "(issue 16)",
            "measured": f"{min(r['lanczos_1e-06']['ratio'] for r in res['results']):.2f}–"
            f"{worst:.2f}× (§7)",
            "met": worst <= 1.25,
        }
    )
    slow = [
        r["width"]
        for r in res["results"]
        if not r.get("only_ratio")
        and r["lanczos_0.001"]["seconds"] > r["power_oracle_1e-3"]["seconds"]
    ]
    targets.append(
        {
            "target": "Lanczos at tol=1e-3 no slower than oracle-stopped power iteration "
            "(issue 16)",
            "measured": "faster at every width (§7)"
            if not slow
            else f"slower at width(s) {', '.join(map(str, slow))} (§7)",
            "met": not slow,
        }
    )
    return "\n".join(parts)


def render_engine_regression(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    """Issue 12: the certified engine against the engine before issue 12, paired runs."""
    parts = ["## 8. Certified Lanczos engine vs the engine before issue 12\n"]
    res = _result(e)
    if res is None:
        return "\n".join([*parts, _missing(e)])
    cfg = res["config"]
    if cfg.get("skipped"):
        return "\n".join([*parts, f"_Skipped: {cfg['skipped']}._\n"])
    parts.append(
        "`benchmarks/engine_regression.py`: `lanczos_top_eigenpairs(HessianOperator(model, "
        f"half_mse, (X, y)), k=1, tol={cfg['tol']:g}, max_iters={cfg['max_iters']})` with "
        f"the same random start (seed {cfg['start_seed']}), model, data and "
        f"{cfg['threads']} thread(s), run by this tree's engine (`new`) and by commit "
        f"`{cfg['old_commit']}` (`old`: main just before the certified Krylov engine was "
        "merged, checked out in a temporary git worktree). Each run is a fresh worker "
        "process; runs alternate in pairs (new-old, old-new, …) and `new/old` is the median "
        f"over {cfg['pairs']} pairs of the paired wall-time ratio [min, max]. Wall time = "
        "operator construction + the solve. `time/floor` = that time over one gradient "
        "with graph + the run's HVPs at the median HVP time of the same process (insensitive "
        "to load). Errors against a float64 reference (tol 1e-10, residual rule). The old "
        "engine's `converged=True` rested on an uncertified estimate (`min(r, r²/gap)` with "
        "an estimated gap); the new one's bound holds with probability ≥ 1 − 10⁻³ over the "
        "start vector. The CNN is the non-clustered benchmark (its relative gap "
        "(λ1−λ2)/λ1 is the larger one, column 2); the MLP has a clustered top-5. "
        "`first within tol` = first Lanczos step whose Ritz value is within tol of the "
        "reference; `certifiable` = first step at which *any* certificate valid with "
        "probability 1 − 10⁻³ over the random start could stop "
        "(`dynstab.linalg.krylov.moment_optimal_stop`: the Christoffel-function bound on "
        "the same Lanczos data; round-off ignored), a lower bound on a certified engine's "
        "HVPs.\n"
    )
    rows = []
    for r in res["results"]:
        new, old = r["new"], r["old"]
        rows.append(
            [
                r["reference"]["name"],
                f"{r['reference']['relative_gap']:.1e}",
                f"{new['hvps']:.0f} / {old['hvps']:.0f}",
                f"{_f(r.get('first_within_tol'), 'd')} / {_f(r.get('moment_optimal_stop'), 'd')}",
                f"{new['seconds_median']:.2f} / {old['seconds_median']:.2f}",
                f"**{r['slowdown_median']:.2f}** [{r['slowdown_min']:.2f}, "
                f"{r['slowdown_max']:.2f}]",
                f"{new['time_over_floor_median']:.2f} / {old['time_over_floor_median']:.2f}",
                f"{new['rel_error']:.1e} / {old['rel_error']:.1e}",
                _f(new["error_bound_rel"], ".1e"),
            ]
        )
    parts.append(
        _table(
            [
                "problem",
                "rel. gap",
                "HVPs new / old",
                "first within tol / certifiable",
                "wall new / old [s]",
                "new/old (paired)",
                "time/floor new / old",
                "rel. error new / old",
                "new bound",
            ],
            rows,
        )
    )
    parts.append(
        "\nSlowdown = (HVP ratio: the certificate's price, see `dynstab.linalg.krylov`, "
        '"Cost of the certificate") × (time per HVP ratio: the implementation\'s): '
        + "; ".join(
            f"{r['reference']['name']}: {r['hvp_ratio']:.2f} × "
            f"{r['slowdown_median'] / r['hvp_ratio']:.2f}"
            for r in res["results"]
        )
        + ".\n"
    )
    cnn = [r for r in res["results"] if r["problem"] == "cnn"]
    if cnn:
        r = cnn[0]
        targets.append(
            {
                "target": "≤ 20% slowdown against the pre-issue-12 engine on the non-clustered "
                "benchmark (CNN), λmax at 1e-6 (issue 12)",
                "measured": f"{r['slowdown_median']:.2f}× wall time, "
                f"{r['new']['hvps']:.0f} vs {r['old']['hvps']:.0f} HVPs; any certificate "
                f"needs ≥ {_f(r.get('moment_optimal_stop'), 'd')} HVPs here (§8)",
                "met": r["slowdown_median"] <= cfg["slowdown_limit"],
            }
        )
    return "\n".join(parts)


def render_external(e: dict[str, Any] | None, title: str, what: str) -> str:
    parts = [f"## {title}\n", what + "\n"]
    note = _status_note(e)
    if e is not None and e["status"] == "timeout" and e.get("stdout", "").strip():
        return "\n".join(
            [
                *parts,
                note or "",
                "\nRows printed before the time limit, verbatim:\n\n```\n"
                + e["stdout"].rstrip()
                + "\n```\n",
            ]
        )
    if note or e is None:
        return "\n".join([*parts, note or "", ""])
    parts.append(
        f"Command: `{e['command']}` ({e['wall_s']:.0f} s). Output, verbatim:\n\n```\n"
        + e["stdout"].rstrip()
        + "\n```\n"
    )
    return "\n".join(parts)


def render_sampled(e: dict[str, Any] | None) -> str:
    """Section of ``benchmarks/sampled_stability.py`` (issue 15): sampled vs exact η* vs n, p."""
    title = "## 10. Sampled SGD stability vs the exact route (wall time, peak memory vs n and p)\n"
    r = _result(e)
    if r is None:
        return title + "\n" + _missing(e)
    assert e is not None
    cfg = r["config"]
    rows = []
    for x in r["results"]:
        p = x.get("p", "—")
        if "error" in x:
            rows.append([str(x["n"]), str(p), x["run"], "failed: " + x["error"][-80:]] + [""] * 6)
            continue
        if x.get("run") == "fits" or "refused" in x:
            note = x.get("fits") or x.get("refused") or ""
            rows.append([str(x["n"]), str(p), "exact", "not run: " + note] + [""] * 6)
            continue
        ci = x.get("ci")
        eta = _f(x.get("eta_star"), ".5g") + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
        if "covers_exact" in x:
            eta += " (covers exact)" if x["covers_exact"] else " (**misses exact**)"
        if "growth" in x:  # ρ̂ at one lr (the p = 1M growth run)
            lo, hi = x["growth_ci"]
            eta = f"ρ̂({x['lr']:.4g}) = {x['growth']:.4f} [{lo:.4f}, {hi:.4f}]"
        budget = {
            "sampled": f"default ({x.get('particles')} particles"
            + (", bounds)" if x.get("bounds") else ", no bounds)"),
            "probe": f"probe ({x.get('particles')} particles)",
            "step": f"default population, 1 + 2 steps ({x.get('particles')} particles)",
            "growth": f"growth at 0.8·η̂_pilot ({x.get('particles')} particles)",
            "exact": str(x.get("route", "exact")),
        }.get(x["run"], x["run"])
        mem = x.get("memory")
        if mem:  # the route's memory plan beside what it added to the RSS
            chunk = "no chunks" if mem["chunk"] is None else f"chunks of {mem['chunk']}"
            added = (x["peak_rss"] - x["rss_base"]) / 2**30 if "rss_base" in x else math.nan
            budget += (
                f"; plan {mem['planned'] / 2**30:.2f} of {mem['budget'] / 2**30:.2f} GiB, "
                f"{chunk}, RSS +{added:.2f} GiB"
            )
        rows.append(
            [
                str(x["n"]),
                str(p),
                x["run"],
                budget,
                _f(x.get("wall_s"), ".1f"),
                _f(x.get("setup_s"), ".1f"),
                _f(x.get("products"), "d") if x.get("products") is not None else "—",
                _f(x.get("ms_per_product"), ".3g"),
                _f(x["peak_rss"] / 2**20, ".0f") if x.get("peak_rss") else "—",
                eta,
            ]
        )
    header = ["n", "p", "run", "budget / route", "wall s", "set-up s", "products", "ms/product",
              "peak RSS MiB", "η* [95% CI]"]  # fmt: skip
    text = f"""{title}
`benchmarks/sampled_stability.py` ({e["wall_s"]:.0f} s; {cfg["threads"]} torch thread(s);
batch size B = {cfg["batch_size"]} with replacement): a d-width-1 tanh MLP (d = 20) at an
interpolating point of n Gaussian samples, float64. Every row is a fresh subprocess; **peak
memory is its `ru_maxrss`** (interpreter, torch, data and model included; tracemalloc does not
see torch's CPU tensors). Runs: `sampled` = `SampledStability(...).eta_star()` with the default
adaptive budget (first stage 4 replicas × 32 particles, a second stage only when the 95%
interval is wider than ±10% of η*) and, with bounds, `report(lr)`; `probe` = 8 replicas × 32
particles (clamped to the memory budget) for 4 pilot steps and one η (1 + 2 steps):
the time per batch product and the memory at that (n, p) where the full budget would take too
long here; at p = 1M, `step` = the default population (4 × 32 particles, default memory
budget) for 1 pilot step and one η (2 steps): time per product and memory of the default
route's widest step, with the route's memory plan (budget, planned peak, chunks of the batch
products) beside what it added to the RSS; `growth` = ρ̂ at lr = 0.8 × the pilot's η*
estimate with 4 replicas × 8 particles (12 pilot, 4 + 8 steps): a short-horizon estimate,
the full η* search at p = 1M is `--full`; `exact` = `critical_lr(..., method="exact")` where
n·p ≤ {cfg["exact_max_np"]:.0e},
otherwise the exact route's memory plan from the library (not run). ms/product excludes set-up
and bounds: the default budget at a point takes about its products (≈ 1.2–1.5·10⁵ without
momentum, `SampledConfig().products()`) times that.

"""
    return text + _table(header, rows)


def render_decomposition(summary: dict[str, Any]) -> str:
    """Split the dynstab/PyHessian time ratio into HVP-count ratio × per-HVP-cost ratio."""
    lam = _get(summary, "compare_lambda_max")
    if not lam or "result" not in lam:
        return ""
    hvp = _get(summary, "hvp_cost")
    hvp_rows: dict[str, dict[str, float]] = {}
    if hvp and "result" in hvp:
        for prob in hvp["result"]["results"]:
            hvp_rows[prob["problem"]["name"]] = {
                r["what"]: r["median_s"] for r in prob["rows"] if "median_s" in r
            }
    rows = []
    for prob in lam["result"]["results"]:
        name = prob["problem"]["name"]
        base = next((r for r in prob["rows"] if r["method"] == "dynstab Lanczos tol=1e-06"), None)
        ph = prob["pyhessian_summary"]["exact_rayleigh_quotient_to_1e-06"]
        if base is None or ph["hvps_median"] is None:
            continue
        nd, td = base["hvps"], base["time"]["median_s"]
        npy, tp = ph["hvps_median"], ph["seconds_median"]
        pure = hvp_rows.get(name, {}).get("dynstab HVP, cached graph")
        overhead = "—" if pure is None else f"{max(0.0, 1 - nd * pure / td):.0%}"
        f32 = prob["dynstab_sweep"]["float32_basis"]["min_rel_err_per_seed"]
        rows.append(
            [
                name,
                _f(prob["reference"].get("relative_gap"), ".2e"),
                f"{nd} / {npy:g}",
                f"{npy / nd:.1f}×",
                f"{td / nd * 1e3:.3g} / {tp / npy * 1e3:.3g}",
                f"{(tp / npy) / (td / nd):.2f}×",
                f"{tp / td:.1f}×",
                overhead,
                ", ".join(f"{x:.1e}" for x in f32),
            ]
        )
    if not rows:
        return ""
    bullets = []
    for prob in lam["result"]["results"]:
        name = prob["problem"]["name"]
        sw = prob["dynstab_sweep"]
        f32, f64 = sw["float32_basis"], sw["float64_basis"]
        m32, m64 = f32["hvps_to_target_median"], f64["hvps_to_target_median"]
        gap = prob["reference"].get("relative_gap")
        if m32 is None or m32 > 25:
            cause = (
                "Krylov convergence itself: a float64 basis needs as many HVPs "
                f"({_f(m64, 'g')}), so it is the spectrum (relative gap {_f(gap, '.1e')}), "
                "not arithmetic"
                if m64 is not None and m32 is not None and m64 >= m32
                else "float32 arithmetic in the Lanczos recurrence: a float64 basis over the "
                f"same HVPs needs {_f(m64, 'g')}"
            )
            bullets.append(
                f"* {name}: the ≤ 25-HVP target is missed with a random start; cause: {cause}."
            )
        floor = [
            (seed, a, b)
            for seed, a, b in zip(
                sw["seeds"], f32["min_rel_err_per_seed"], f64["min_rel_err_per_seed"]
            )
            if a > 1e-6 >= b
        ]
        for seed, a, b in floor:
            bullets.append(
                f"* {name}, start seed {seed}: a float32 basis never gets below {a:.1e} within "
                f"{sw['m_max']} HVPs while a float64 basis over the same float32 HVPs reaches "
                f"{b:.1e}: the floor is the float32 basis (α = q·Aq and the "
                "reorthogonalisation in float32), not the HVPs."
            )
    return (
        "### Where the λmax time goes\n\n"
        "PyHessian's time to 1e-6 divided by dynstab's (default tol=1e-6) = (HVP-count ratio) × "
        "(per-HVP cost ratio). Per-HVP costs are wall time / HVPs of the runs above, so they "
        "include each tool's own overhead; `dynstab overhead` = the share of dynstab's run not "
        "spent in HVPs (operator construction, reorthogonalisation, tridiagonal eigensolves), "
        "using the cached-HVP time of §3.\n\n"
        + _table(
            [
                "problem",
                "(λ1−λ2)/λ1",
                "HVPs dynstab / PyHessian",
                "HVP ratio",
                "ms per HVP dynstab / PyHessian",
                "cost ratio",
                "time ratio",
                "dynstab overhead",
                "float32 basis: best error per start seed",
            ],
            rows,
        )
        + ("\n" + "\n".join(bullets) + "\n" if bullets else "")
        + "\n"
    )


def render_eta_star(e: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    """Issue 16: exact η* by route as n grows, its goals on 2 cores, growth exponents in n."""
    parts = ["## 5. Exact η* in n: routes, goals and growth exponents (issue 16)\n"]
    res = _result(e)
    if res is None:
        if e is not None and e.get("status") == "timeout":
            return render_external(e, parts[0][3:].strip(), "`benchmarks/eta_star_scaling.py`.")
        return "\n".join([*parts, _missing(e)])
    cfg, out = res["config"], res["results"]
    parts.append(
        f"`benchmarks/eta_star_scaling.py`: the exact mean-square threshold η* (Mulayoff & "
        f"Michaeli 2024) from `StabilityProblem`, float64, {cfg['threads']} thread(s), "
        f"B = {cfg['batch_size']} sampled {cfg['sampling']} replacement, synthetic Jacobians "
        "J ∈ ℝ^{n×p} with column scales 0.1…1. `setup` = the row-space coordinates along the "
        "route the cost model chose (`parameter`: eigh of H = JᵀJ/n; `gram`: eigh or pivoted "
        "Cholesky of K = JJᵀ/n); `solve` = the η* eigen-solve (dense svec matrix or certified "
        "Lanczos, `products` operator products); `check` = relative difference to η* along the "
        "other route or by the dense solver, same process; `old path` = a full eigh of K plus "
        "its η* solve (the former single path).\n"
    )
    goal_rows = []
    for g in out["goals"]:
        goal = f"η* {g['family']} at n = {g['n']:,} < {g['limit_s']:g} s ({cfg['threads']} threads)"
        measured = f"{g['total_s']:.2f} s ({g['route']})"
        goal_rows.append([goal, measured, "**yes**" if g["met"] else "**no**"])
        targets.append({"target": goal, "measured": measured + " (§5)", "met": g["met"]})
    parts.append(_table(["goal (issue 16)", "setup + solve", "met"], goal_rows))
    fit_rows = [
        [
            f["family"],
            f"{f['n_min']:,}…{f['n_max']:,} ({f['rows']} rows)",
            _f(f["setup_exponent"], ".2f"),
            _f(f["solve_exponent"], ".2f"),
            _f(f["total_exponent"], ".2f"),
        ]
        for f in out["exponents"]
    ]
    parts.append(
        "\nGrowth exponents in n: least-squares slope of log(seconds) on log(n) over each "
        "family's rows (rows under 5 ms left out). Reference: eigh of an n×n matrix grows as "
        "n³; one matrix-free product as nρ² (ρ = the rank: fixed for `p≤100` and `low-rank`, "
        "ρ = n for `full-rank`).\n\n" + _table(["family", "n", "setup", "solve", "total"], fit_rows)
    )
    rows = [
        [
            r["family"],
            f"{r['n']:,}",
            str(r["p"]),
            str(r["rank"]),
            f"{r['route']}/{r['spectral_method']}",
            _f(r["setup_s"], ".2f"),
            r["solver"],
            _f(r["solve_s"], ".2f"),
            str(r["products"]) + ("" if r["converged"] else " (not certified)"),
            format(r["eta_star"], ".10g"),
            _f(r["check_rel_diff"], ".1e"),
            _f(r["old_path_s"], ".2f"),
        ]
        for r in out["rows"]
    ]
    head = ["family", "n", "p", "ρ", "route/spectrum", "setup s", "solver", "solve s"]
    head += ["products", "η*", "check", "old path s"]
    parts.append("\n" + _table(head, rows))
    models = [
        [
            f"{m['n']:,}",
            str(m["p"]),
            f"{m['route']}/{m['solver']}",
            _f(m["total_s"], ".2f"),
            str(m["products"]),
            format(m["eta_star"], ".10g"),
        ]
        for m in out["models"]
    ]
    parts.append(
        "\n`critical_lr` on `TwoLayerReLU(20, 128)` (p = 2688), Jacobians/Gram matrix "
        "included:\n\n" + _table(["n", "p", "route/solver", "total s", "products", "η*"], models)
    )
    return "\n".join(parts) + "\n"


def external_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Coverage rows for the benchmarks that have no numeric target in the issue."""
    out = []
    eta = _get(summary, "eta_star_scaling")
    if eta is not None:
        ran_5000 = eta.get("status") == "ok" and re.search(r"\b5000\b", eta.get("stdout", ""))
        out.append(
            {
                "target": "exact η* scaling in n (routes, exponents) measured up to n = 5000",
                "measured": f"{eta.get('status')}"
                + (f", {eta['wall_s']:.0f} s" if eta.get("wall_s") else "")
                + ("" if ran_5000 else " (no n = 5000 row)"),
                "met": bool(ran_5000),
            }
        )
    bat = _get(summary, "batched_trainer")
    if bat is not None:
        speed = re.findall(r"(\d+(?:\.\d+)?)x", bat.get("stdout", ""))
        out.append(
            {
                "target": "batched-runs trainer vs a Python loop on an η × seed grid, measured",
                "measured": (f"speed-ups {', '.join(x + '×' for x in speed)} (§6)")
                if speed
                else f"{bat.get('status')} (§6)",
                "met": bat.get("status") == "ok",
            }
        )
    return out


def render(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    v = summary["versions"]
    targets: list[dict[str, Any]] = []
    lam = render_lambda(_get(summary, "compare_lambda_max"), targets)
    tr = render_trace(_get(summary, "compare_trace"), targets)
    hvp = render_hvp(_get(summary, "hvp_cost"), targets)
    kry = render_krylov(_get(summary, "krylov_overhead"), targets)
    reg = render_engine_regression(_get(summary, "engine_regression"), targets)
    ext = [
        render_external(
            _get(summary, "lambda_max_mlp"),
            "4. dynstab λmax on the 784-512-512-10 MLP (starts and tolerances)",
            "dynstab alone: random vs gradient Lanczos starts, several tolerances "
            "(`benchmarks/lambda_max_mlp.py`).",
        ),
        render_eta_star(_get(summary, "eta_star_scaling"), targets),
        render_external(
            _get(summary, "batched_trainer"),
            "6. Batched-runs trainer vs a Python loop (η × seed grid)",
            "`benchmarks/batched_trainer.py`: `train_batched` (torch.func.vmap over runs) "
            "against a Python loop over `train`, same grid, same results.",
        ),
    ]
    repro = render_external(
        _get(summary, "reproduction_time"),
        "9. Wu & Su reproduction wall time vs the reference commit",
        "`benchmarks/reproduction_time.py`: `dynstab reproduce wu-su-2023` (quick and full "
        "profiles) on this tree and on the last commit before the reproductions moved onto "
        "the library's training engine, interleaved, same workers and threads. The current "
        "profiles run 2 (quick) / 3 (full) seeds per stochastic claim where the reference "
        "ran one: the claim counts are shown beside the times.",
    )
    status_rows = [
        [
            f"`{e['script']}`",
            e["status"]
            + (
                f" (added later: {e['added_utc']}, load {e['added_load']})"
                if e.get("added_utc")
                else ""
            ),
            _f(e.get("wall_s"), ".0f") + " s" if e.get("wall_s") is not None else "—",
        ]
        for e in summary["benches"]
    ]
    targets += external_targets(summary)
    target_rows = [
        [
            t["target"],
            t["measured"],
            t["met"] if isinstance(t["met"], str) else ("**yes**" if t["met"] else "**no**"),
        ]
        for t in targets
    ]
    header = f"""# Benchmarks

_Generated by `benchmarks/run_all.py` ({"quick" if summary["quick"] else "full"} run) on
{m["date_utc"]}; do not edit by hand: re-run `make bench` (about 15 min on 2 cores). A smoke
run, `make bench-quick`, writes its page to `results/bench/quick/` instead.
Details of each script: [`benchmarks/README.md`](../benchmarks/README.md)._

All numbers come from **one run** of `run_all.py` (scripts marked "added later" in the table below
were run afterwards with `--add`, at their own date and load) on a **shared 2-core VM** (other
jobs may run beside it; load average at start {m["loadavg_1_5_15"]}, at end {summary["load_end"]};
{summary.get("jobs", 1)} benchmark script(s) at a time). **The ratios (dynstab / PyHessian,
Lanczos / its HVP floor, Hutchinson / a plain HVP loop) are measured in one process** and are
what these pages are for; absolute seconds grow with the load average shown. Wall
times are **medians over repeats** (the repeat count is given with each number; single-run
numbers say so), measured with `time.perf_counter` after warm-up, every tool in the same
process on the same model and data, with {m["torch_threads"]} torch thread(s) and
OMP/MKL/OpenBLAS threads set to match (`DYNSTAB_BENCH_THREADS`). The comparison tools are
installed only in `.venv-bench` (`benchmarks/setup_env.sh`), never as dynstab dependencies.

| machine | |
|---|---|
| CPU | {m["cpu"]} ({m["logical_cpus"]} logical CPUs) |
| memory | {m["memory_gib"]} GiB |
| OS / Python | {m["os"]} / {m["python"]} |
| dynstab commit | {m["git_commit"]} |
| total wall time of this run | {summary["total_wall_s"] / 60:.1f} min |

| package | version |
|---|---|
""" + "\n".join(f"| {k} | {val} |" for k, val in v.items())
    targets_md = (
        "## Targets met?\n\n"
        + _table(["target (issues 7, 12 and 16)", "measured", "met"], target_rows)
        + "\n"
        + render_decomposition(summary)
        + "\n"
        + summary.get("notes_md", "")
    )
    return (
        "\n\n".join(
            [
                header,
                "## Scripts in this run\n\n" + _table(["script", "status", "wall"], status_rows),
                targets_md,
                lam,
                tr,
                hvp,
                *ext,
                kry,
                reg,
                repro,
                render_sampled(_get(summary, "sampled_stability")),
            ]
        ).rstrip()
        + "\n"
    )


NOTES_MD = """\
Notes on reading the targets:

* "Equal accuracy" for PyHessian uses the best case for it: the first iterate whose error is
  within the target (an oracle stop it cannot know in practice), with the error measured on
  the exact Rayleigh quotient of its iterate, because PyHessian's own estimate carries a
  ≈2·10⁻⁶ relative bias (it normalises by ‖v‖ + 10⁻⁶, twice per iteration) and so never
  reaches 10⁻⁶ by itself. dynstab is timed with its default stopping rule at tol = 1e-6
  (no oracle), which may use more HVPs than the oracle count found by the sweep.
* dynstab's Lanczos keeps a float64 Krylov basis by default over float32 HVPs; the rows
  "float32 basis" show `LanczosConfig(basis_dtype=torch.float32)`, which halves the basis
  traffic but certifies only to about 1e-5 relative on these models.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these benchmarks")
    parser.add_argument(
        "--threads",
        type=int,
        default=common.THREADS,
        help="torch/BLAS threads for every benchmark (default: $DYNSTAB_BENCH_THREADS or 1)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="benchmark scripts run side by side (default 1: one after the other)",
    )
    parser.add_argument(
        "--add",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these benchmarks and put their entries into the last run's summary "
        "(the scripts table marks them 'added later' with their own date and load)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-render the last full run (with --quick: the last quick run)",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="markdown file to write (default: docs/benchmarks.md for a full run, "
        "results/bench/quick/benchmarks_quick.md for --quick, so a smoke run never replaces the "
        "recorded table)",
    )
    args = parser.parse_args()
    if args.render_only:
        summary = json.loads(_summary_path(args.quick).read_text())
    elif args.add:
        summary = json.loads(_summary_path(args.quick).read_text())
        known = {b.name: b for b in benches(args.threads)}
        unknown = sorted(set(args.add) - set(known))
        if unknown:
            parser.error(f"--add: unknown benchmark(s) {unknown}; known: {sorted(known)}")
        when = common.machine_info()
        for name in args.add:
            entry = run_one(known[name], args.quick, args.threads)
            entry["added_utc"] = when["date_utc"]
            entry["added_load"] = [round(x, 2) for x in os.getloadavg()]
            rest = [e for e in summary["benches"] if e["name"] != name]
            summary["benches"] = [*rest, entry]
        common.write_json(_summary_path(args.quick), summary)
    else:
        threads = args.threads
        t0 = time.perf_counter()
        machine = common.machine_info()
        machine["torch_threads"] = threads  # what every benchmark subprocess uses
        chosen = [b for b in benches(threads) if args.only is None or b.name in args.only]
        # --jobs > 1 runs scripts side by side (each is its own process; the ratios each
        # script reports are measured inside one process, absolute times get slower)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            entries = list(pool.map(lambda b: run_one(b, args.quick, threads), chosen))
        summary = {
            "quick": args.quick,
            "machine": machine,
            "versions": common.versions(),
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "jobs": args.jobs,
            "total_wall_s": time.perf_counter() - t0,
            "benches": entries,
        }
        common.write_json(_summary_path(args.quick), summary)
    summary["notes_md"] = NOTES_MD
    doc = args.doc or (QUICK_DOC if summary["quick"] else DOC)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(summary))
    common.log(f"wrote {doc}")


if __name__ == "__main__":
    main()
