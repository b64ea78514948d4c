"""E1 — diagonal linear network: learning-rate sweep, SGD vs GD (Wu & Su, ICML 2023).

f(x) = ⟨a⊙b, x⟩, a_j, b_j ~ N(0, 1) (large initialization), sparse teacher β* = (1,1,1,0,…),
½-MSE loss. For every (optimizer, η, seed) one run trains to L ≤ 1e−10 (SGD: B = 1 with
replacement and a cubic warm-up; GD: constant η, with a warm-up only when η > 2/λ_max(G_0)).
The learning rates of one (optimizer, seed) train together in one unit
(:func:`~.units.train_and_measure`). At the end Tr G, ‖G‖_F, λ_max(G) (exact, from K = JJᵀ/n),
‖β‖_1, ‖β‖_{1,s}, r(θ) and the test MSE on fresh samples are recorded.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from dynstab_repro.base import Claim
from dynstab_repro.figures import save_figure
from dynstab_repro.wu_su_2023 import analysis as A
from dynstab_repro.wu_su_2023 import plots
from dynstab_repro.wu_su_2023.configs import (
    QUICK_DIAGONAL,
    DiagonalDataConfig,
    Overrides,
    SweepConfig,
    documented_defaults,
)
from dynstab_repro.wu_su_2023.problems import Problem, init_diagonal
from dynstab_repro.wu_su_2023.units import Record, Row, SweepExperiment, SweepRun, run_key

__all__ = ["E1Config", "E1DiagonalSweep", "analyze_e1"]

_FULL_LRS = tuple(float(x) for x in np.logspace(-2.4, -0.9, 6))


@dataclasses.dataclass(frozen=True)
class E1Config(SweepConfig, DiagonalDataConfig):
    """Settings of E1 (defaults = the full settings; ``PROFILES['quick']`` for CI).

    Data fields (d, n, n_test, inputs, support) as in :class:`~.configs.DiagonalDataConfig`;
    trainer and sweep fields (seeds, optimizers, batch_size, sgd_steps, sgd_warmup_steps,
    gd_steps, gd_warmup, gd_warmup_steps, warmup_power, stop_loss, min_full_lr_fraction, clip,
    trace_slack, progress) as in :class:`~.configs.SweepConfig` (B = 1, SGD ≤ 3·10⁵ steps with a
    5·10⁴-step cubic warm-up, GD ≤ 3·10⁴ steps).

    Attributes:
        init_scale: Std of the N(0, s²) initialization of a and b (1).
        lrs: Target learning rates η (logspace(−2.4, −0.9, 6)).
    """

    init_scale: float = 1.0
    lrs: tuple[float, ...] = _FULL_LRS

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {**QUICK_DIAGONAL, "lrs": (0.004, 0.0126, 0.04, 0.126)}
    }


# --------------------------------------------------------------------------------------


def _medians(results: dict[str, Record], opt: str, key: str, lrs: list[float]) -> list[float]:
    return A.medians(results, opt, key, "lr", lrs)


def _fold(x: list[float]) -> float:
    """Ratio first/last of a sequence (NaN-safe)."""
    if not x or not (math.isfinite(x[0]) and math.isfinite(x[-1])) or x[-1] <= 0:
        return float("nan")
    return x[0] / x[-1]


#: Where the E1 claims sit in the paper (the figure numbers could not be checked here).
_SOURCE = "diagonal-linear-network experiment (SGD vs GD across η)"
_SOURCE_BOUND = "abstract (headline result) and " + _SOURCE


def _worst_ratio(runs: list[Record], n: int, batch_size: int) -> float:
    return A.worst_trace_ratio([r for r in runs if A.is_minimum(r)], n, batch_size)


def _top_min_ratio(runs: list[Record], lrs: list[float]) -> float:
    """Min over the 3 largest η of η·(median Tr G)/2 (runs converged at the target η)."""
    tr = _medians(A.as_results(runs), "sgd", "trace", lrs)
    top = lrs[-min(3, len(lrs)) :]
    return A.strict_min([lr * t / 2.0 for lr, t in zip(lrs, tr) if lr in top])


def _folds(runs: list[Record], lrs: list[float]) -> dict[str, float]:
    res = A.as_results(runs)
    return {k: _fold(_medians(res, "sgd", k, lrs)) for k in ("trace", "frobenius", "lambda_max")}


def _fold_ratio(runs: list[Record], lrs: list[float]) -> float:
    f = _folds(runs, lrs)
    worst = A.strict_max([f["frobenius"], f["lambda_max"]])
    return f["trace"] / worst if math.isfinite(worst) and worst > 0 else float("nan")


def _gd_spans(runs: list[Record], stable: list[float]) -> dict[str, float]:
    res = A.as_results(runs)
    return {
        k: A.max_over_min(_medians(res, "gd", k, stable), skip_missing=True)
        for k in ("trace", "frobenius", "lambda_max")
    }


def _gd_over_sgd(runs: list[Record], lr: float) -> float:
    res = A.as_results(runs)
    g = _medians(res, "gd", "test_mse", [lr])[0]
    s = _medians(res, "sgd", "test_mse", [lr])[0]
    if not (math.isfinite(g) and math.isfinite(s)):
        return float("nan")
    return g / s if s > 0 else float("inf")


def analyze_e1(config: E1Config, results: dict[str, Record]) -> list[Claim]:
    """The six E1 claims on per-run records.

    Medians over seeds of the runs converged at the target η; the bound E1.1 is checked on
    every minimum at its effective η. Each claim reports its statistic per seed (median and
    range). Items needing both optimizers are skipped when one is not configured.
    """
    claims: list[Claim] = []
    lrs = sorted(config.lrs)
    n, B = config.n, config.batch_size
    slack = config.trace_slack
    has_sgd = "sgd" in config.optimizers
    has_gd = "gd" in config.optimizers
    if has_sgd:
        sgd = A.select(results, "sgd", converged_only=False)
        mins = A.minima(results, "sgd")
        worst = _worst_ratio(sgd, n, B)
        m = A.over_seeds(sgd, lambda rs: _worst_ratio(rs, n, B), label="max η_eff·Tr G/2")
        claims.append(
            A.paper_claim(
                "E1.1",
                "Every SGD solution satisfies the trace bound Tr G ≤ 2/η (B = 1).",
                paper="Tr H ≤ 2/η at every SGD-stable minimum (B = 1); H = G at interpolation",
                source=_SOURCE_BOUND,
                rule=f"every SGD run ends at a minimum (none diverged or unconverged) and "
                f"max over runs of η_eff·Tr G/2 ≤ {1 + slack:g} ({slack:.0%} for a finite-time "
                "end point)",
                holds=bool(mins) and len(mins) == len(sgd) and worst <= 1 + slack,
                measured=f"SGD runs: {A.outcome_text(sgd)}; max over runs {A.fmt(worst)}; {m}",
                measurement=m,
            )
        )
        # E1.2 Tr G tracks 2/η at the largest LRs and falls with η.
        tr = _medians(results, "sgd", "trace", lrs)
        near = _top_min_ratio(sgd, lrs)
        rho = A.spearman(lrs, tr)
        m = A.over_seeds(sgd, lambda rs: _top_min_ratio(rs, lrs), label="min η·Tr G/2, 3 top η")
        claims.append(
            A.paper_claim(
                "E1.2",
                "SGD's Tr G falls with η and stays near 2/η at the largest learning rates.",
                paper="SGD solutions sit just below the bound: Tr G ≈ 2/η, falling as η grows",
                source=_SOURCE,
                rule="η·Tr G/2 ≥ 0.5 (within a factor 2 of the bound; medians over seeds) at "
                "each of the 3 largest η, and Spearman(η, median Tr G) ≤ −0.8",
                holds=near >= 0.5 and rho <= -0.8,
                measured=f"min over the 3 largest η of η·Tr G/2 = {A.fmt(near)}; "
                f"Spearman(η, Tr G) = {A.fmt(rho)}; {m}",
                measurement=m,
            )
        )
        # E1.3 ‖G‖_F and λ_max shrink much less than Tr G.
        f = _folds(sgd, lrs)
        m = A.over_seeds(
            sgd, lambda rs: _fold_ratio(rs, lrs), label="Tr-fold / max(‖G‖_F-, λ_max-fold)"
        )
        claims.append(
            A.paper_claim(
                "E1.3",
                "At the SGD solutions ‖G‖_F and λ_max also shrink with η, but much less than Tr G.",
                paper="the trace, not ‖G‖_F or λ_max, is what SGD's stability constrains: "
                "‖G‖_F and λ_max of SGD solutions decrease only mildly with η",
                source=_SOURCE,
                rule="decrease factors (smallest/largest η, medians) of ‖G‖_F and λ_max ≥ 1 and "
                "≤ ½·(factor of Tr G)",
                holds=f["frobenius"] >= 1.0
                and f["lambda_max"] >= 1.0
                and f["trace"] >= 2 * f["frobenius"]
                and f["trace"] >= 2 * f["lambda_max"],
                measured=f"decrease factors: Tr {A.fmt(f['trace'])}, ‖G‖_F "
                f"{A.fmt(f['frobenius'])}, λ_max {A.fmt(f['lambda_max'])}; {m}",
                measurement=m,
            )
        )
        # E1.5 SGD test MSE falls monotonically with η, spanning ≥ 10×.
        te = _medians(results, "sgd", "test_mse", lrs)
        rho_te, span = A.spearman(lrs, te), A.max_over_min(te, skip_missing=True)
        m = A.over_seeds(
            sgd,
            lambda rs: A.spearman(lrs, _medians(A.as_results(rs), "sgd", "test_mse", lrs)),
            label="Spearman(η, test MSE)",
        )
        claims.append(
            A.paper_claim(
                "E1.5",
                "SGD's test MSE falls monotonically with η and spans at least 10× across the grid.",
                paper="a larger η gives a stronger regularization: ‖β‖_1 ≲ 1/η, so SGD's test "
                "error falls as η grows",
                source="abstract (role of the learning rate) and " + _SOURCE,
                rule="Spearman(η, median test MSE) ≤ −0.8 and max/min ≥ 10 over the grid",
                holds=rho_te <= -0.8 and span >= 10.0,
                measured=f"test MSE = {[A.fmt(v) for v in te]}; Spearman = {A.fmt(rho_te)}; "
                f"max/min = {A.fmt(span)}; {m}",
                measurement=m,
            )
        )
    if has_gd:
        gd = A.select(results, "gd", converged_only=False)
        lam0 = A.median([r["init_lambda_max"] for r in gd])
        stable = [lr for lr in lrs if lr <= 2.0 / lam0] if math.isfinite(lam0) else []
        # A stable-at-init η where no GD run converged has a NaN median: max/min skips it, so
        # the flatness is judged only over the η with a finite median, and ≥ 2 of those are
        # required (one finite median would give max/min = 1 trivially).
        meds = {k: _medians(results, "gd", k, stable) for k in ("trace", "frobenius", "lambda_max")}
        spans = _gd_spans(gd, stable)
        n_fin = min((A.count_finite(v) for v in meds.values()), default=0)
        m = A.over_seeds(
            gd,
            lambda rs: A.strict_max(list(_gd_spans(rs, stable).values())),
            label="max over measures of max/min",
        )
        claims.append(
            A.paper_claim(
                "E1.4",
                "GD's Tr G, ‖G‖_F and λ_max stay essentially flat over the η at which the "
                "initialization is already GD-stable.",
                paper="GD's stability only constrains λ_max ≤ 2/η, too weak to move a minimum "
                "that is already GD-stable: GD keeps the initialization's sharpness",
                source="abstract (GD's constraint only on λ_max) and " + _SOURCE,
                rule="≥ 2 GD-stable-at-init η with a finite median (≥ 1 run converged at the "
                "target η) and max/min ≤ 1.25 over them for each measure (medians over seeds)",
                holds=n_fin >= 2 and all(v <= 1.25 for v in spans.values()),
                measured=f"λ_max(G_0) = {A.fmt(lam0)}; GD-stable-at-init η: "
                f"{[A.fmt(x) for x in stable]} ({n_fin} with a converged GD run); max/min: "
                + ", ".join(f"{k} {A.fmt(v)}" for k, v in spans.items())
                + f"; GD runs: {A.outcome_text(gd)}; {m}",
                measurement=m,
            )
        )
        gte = _medians(results, "gd", "test_mse", stable)
        span_gd = A.max_over_min(gte, skip_missing=True)
        n_fin_te = A.count_finite(gte)
        holds = n_fin_te >= 2 and span_gd <= 1.2
        measured = (
            f"GD test MSE (stable-at-init η, {n_fin_te}/{len(stable)} with a converged run) "
            f"max/min = {A.fmt(span_gd)}"
        )
        rule = "≥ 2 GD-stable-at-init η with a finite median test MSE and max/min ≤ 1.2 over them"
        m = A.over_seeds(
            gd,
            lambda rs: A.max_over_min(
                _medians(A.as_results(rs), "gd", "test_mse", stable), skip_missing=True
            ),
            label="GD test-MSE max/min",
        )
        if has_sgd:
            ratio = _gd_over_sgd(gd + A.select(results, "sgd", converged_only=False), lrs[-1])
            holds = holds and ratio >= 10.0
            measured += f"; GD/SGD test MSE at η = {A.fmt(lrs[-1])}: {A.fmt(ratio)}"
            rule += " and GD/SGD test MSE ≥ 10 at the largest η"
            m = A.over_seeds(
                gd + A.select(results, "sgd", converged_only=False),
                lambda rs: _gd_over_sgd(rs, lrs[-1]),
                label=f"GD/SGD test MSE at η = {A.fmt(lrs[-1])}",
            )
        claims.append(
            A.paper_claim(
                "E1.6",
                "GD's test MSE is roughly constant in η and far above SGD's at the largest η.",
                paper="GD's stability is provably too weak to ensure generalization; SGD "
                "generalizes better",
                source="abstract (GD too weak; SGD generalizes better) and " + _SOURCE,
                rule=rule,
                holds=holds,
                measured=f"{measured}; {m}",
                measurement=m,
            )
        )
    claims.sort(key=lambda c: c.id)
    return claims


@plots.styled
def plot_e1(config: E1Config, results: dict[str, Record], fig_dir: Path) -> list[Path]:
    """Write ``e1_sweep.{png,pdf}``: SGD measures, GD measures and test MSE against η."""
    import matplotlib.pyplot as plt  # deferred: matplotlib is only needed for figures

    lrs = sorted(config.lrs)
    grid = np.logspace(math.log10(lrs[0]), math.log10(lrs[-1]), 50)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0), constrained_layout=True)
    labels = {"trace": "Tr G", "frobenius": "‖G‖_F", "lambda_max": "λ_max(G)"}
    markers = {"trace": "o", "frobenius": "s", "lambda_max": "^"}
    for ax, opt in zip(axes[:2], ("sgd", "gd")):
        if opt not in config.optimizers:
            ax.set_visible(False)
            continue
        for key, lab in labels.items():
            ax.plot(lrs, _medians(results, opt, key, lrs), marker=markers[key], label=lab)
            plots.mark_runs(
                ax,
                A.select(results, opt, converged_only=False),
                lambda r: float(r["lr"]),
                lambda r, key=key: float(r[key]),  # type: ignore[misc]
                legend_tag=f"{lab}: ",
            )
        if opt == "sgd":
            ref = [A.sgd_curvature_threshold(x, config.n, config.batch_size) for x in grid]
            ax.plot(grid, ref, "k--", label="2/η (SGD trace bound)")
            title = f"SGD (B = {config.batch_size})"
        else:
            ax.plot(grid, [A.gd_curvature_threshold(x) for x in grid], "k--", label="2/η (GD)")
            title = "GD"
        plots.loglog_panel(
            ax, xlabel="learning rate η", ylabel="sharpness at the solution", title=title
        )
    plots.plot_optimizer_medians(axes[2], results, config.optimizers, "test_mse", "lr", lrs)
    plots.loglog_panel(axes[2], xlabel="learning rate η", ylabel="test MSE", title="Test error")
    fig.suptitle(f"E1: diagonal linear net, d = {config.d}, n = {config.n} (medians over seeds)")
    return save_figure(fig, fig_dir, "e1_sweep")


def table_e1(config: E1Config, runs: dict[str, Record]) -> list[tuple[str, list[Row]]]:
    """The calibration table (medians over seeds)."""
    keys = ("trace", "frobenius", "lambda_max", "l1", "balancedness", "test_mse")
    rows = A.median_table(
        runs,
        config.optimizers,
        "lr",
        sorted(config.lrs),
        keys,
        lead=lambda lr: {"2/lr": 2 / lr},
    )
    return [("E1 medians over seeds", rows)]


class E1DiagonalSweep(SweepExperiment[E1Config]):
    """E1: sharpness, norms and test error of SGD vs GD solutions across η."""

    name = "wu-su-2023/e1"
    title = "Diagonal linear net: LR sweep, SGD (Tr G ≤ 2/η) vs GD (λ_max ≤ 2/η)"
    description = (
        "Diagonal linear network f(x) = ⟨a⊙b, x⟩ with a large N(0,1) initialization fit to a "
        "3-sparse linear teacher. SGD (B = 1) solutions have Tr G just below 2/η, so their "
        "weighted ℓ1 norm and test error fall with η; GD solutions keep the initialization's "
        "sharpness and error."
    )
    reference = (
        "Wu & Su (ICML 2023), diagonal-linear-network experiment: sharpness and test error of "
        "SGD vs GD solutions across learning rates"
    )
    ambiguities = documented_defaults(
        ("sampling", "convergence", "budget", "loss", "GD schedule"),
        {
            "inputs": "inputs x ~ N(0, I_d) (option: inputs=cube for Unif[-1,1]^d)",
            "test error": "test MSE E(f - f*)^2 on n_test fresh samples (relative MSE kept)",
            "SGD schedule": "cubic warm-up η_t = η·min(1,(t+1)/T_w)^3, then constant; no clipping",
            "parameterization": "a⊙b",
        },
    )
    config_cls = E1Config
    analysis = analyze_e1
    figures = plot_e1
    table = table_e1

    def seed_runs(self, config: E1Config, opt: str, seed: int) -> tuple[Problem, list[SweepRun]]:
        """Every η from the seed's one initialization."""
        model = init_diagonal(config.d, config.init_scale, seed)
        no_extra: dict[str, float] = {}
        runs: list[SweepRun] = [
            (run_key(opt, "lr", lr, seed), lr, model, no_extra) for lr in config.lrs
        ]
        return config.problem(seed), runs
