"""E4 — two-layer ReLU net: learning-rate sweep, SGD vs GD (Wu & Su, ICML 2023).

Learning-rate *labels* lr ∈ logspace(−3, −1, 10): SGD (B = 1) uses η = lr/√d (the x-axis "√d·η",
because the SGD bound reads ‖θ‖_P ≲ 2.5/(√d η)), GD uses η = lr. Data, model and trainer as in
E3; GD runs at constant η with a warm-up only when η > 2/λ_max(G_0). The labels of one
(optimizer, seed) train together in one unit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from dynstab_repro.base import Claim, Measurement
from dynstab_repro.figures import save_figure
from dynstab_repro.wu_su_2023 import analysis as A
from dynstab_repro.wu_su_2023 import plots
from dynstab_repro.wu_su_2023.configs import (
    QUICK_RELU,
    Overrides,
    ReLUDataConfig,
    SweepConfig,
    documented_defaults,
)
from dynstab_repro.wu_su_2023.problems import Problem
from dynstab_repro.wu_su_2023.units import Record, Row, SweepExperiment, SweepRun, run_key

__all__ = ["E4Config", "E4ReLUSweep", "analyze_e4"]

_FULL_LABELS = tuple(float(x) for x in np.logspace(-3, -1, 10))


@dataclasses.dataclass(frozen=True)
class E4Config(SweepConfig, ReLUDataConfig):
    """Settings of E4 (defaults = the full settings).

    Data and model fields as in E3 (:class:`~.configs.ReLUDataConfig`); trainer and sweep fields
    as in :class:`~.configs.SweepConfig`, with the SGD warm-up over ⅓ of the budget.

    Attributes:
        lr_labels: Labels lr (logspace(−3, −1, 10)); SGD η = lr/√d, GD η = lr.
        sgd_warmup_steps: SGD cubic warm-up (⅓ of the 3·10⁵-step budget).
        gd_warmup_steps: GD warm-up length when used.
    """

    lr_labels: tuple[float, ...] = _FULL_LABELS
    sgd_warmup_steps: int = 100_000
    gd_warmup_steps: int = 10_000

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {
            **QUICK_RELU,
            "lr_labels": (0.003, 0.01, 0.03, 0.1),
            "sgd_steps": 100_000,
            "sgd_warmup_steps": 30_000,
            "gd_steps": 20_000,
            "gd_warmup_steps": 5_000,
        }
    }

    def lr_of(self, optimizer: str, label: float) -> float:
        """The learning rate of a label: label/√d for SGD, label for GD."""
        return label / math.sqrt(self.d) if optimizer == "sgd" else label


def _sel(
    results: dict[str, Record],
    opt: str,
    label: float | None = None,
    *,
    converged_only: bool = True,
) -> list[Record]:
    match = {} if label is None else {"label": label}
    return A.select(results, opt, converged_only=converged_only, **match)


def _meds(results: dict[str, Record], opt: str, key: str, labels: list[float]) -> list[float]:
    return A.medians(results, opt, key, "label", labels)


#: Where the E4 claims sit in the paper (the figure number could not be checked here).
_SOURCE = "two-layer ReLU experiment: SGD (√d·η axis) vs GD across learning rates"


def _trend(
    results: dict[str, Record], opt: str, key: str, labels: list[float]
) -> tuple[list[float], list[float], float]:
    """(labels with a run converged at the target η, their medians, Spearman(label, median))."""
    meds = _meds(results, opt, key, labels)
    pairs = [(lab, v) for lab, v in zip(labels, meds) if math.isfinite(v)]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    return xs, ys, (A.spearman(xs, ys) if len(xs) >= 3 else float("nan"))


def _trend_over_seeds(runs: list[Record], key: str, labels: list[float], label: str) -> Measurement:
    """The Spearman coefficient of :func:`_trend` per seed (SGD runs), median and range."""
    return A.over_seeds(
        runs, lambda rs: _trend(A.as_results(rs), "sgd", key, labels)[2], label=label
    )


def _excluded(results: dict[str, Record], opt: str, labels: list[float]) -> str:
    """Labels without a run converged at the target η, with their runs' categories."""
    out = []
    for lab in labels:
        if not _sel(results, opt, lab):
            out.append(
                f"{A.fmt(lab)} ({A.outcome_text(_sel(results, opt, lab, converged_only=False))})"
            )
    return "; labels left out (no run at the target η): " + ", ".join(out) if out else ""


def _gd_ratio(r: Record) -> float:
    return float(r["lambda_max"] * A.effective_lr(r) / 2.0)


def analyze_e4(config: E4Config, results: dict[str, Record]) -> list[Claim]:
    """The E4 claims on per-run records.

    Medians per label are over the seeds' runs converged at the target η; runs that converged
    during the warm-up (η_eff < η) are minima of η_eff, not of the label's η: they are counted
    apart, checked against the bound at η_eff (E4.1, E4.3) and left out of the trends. A trend
    needs ≥ 3 labels with a run at the target η.
    """
    claims: list[Claim] = []
    labels = sorted(config.lr_labels)
    n, B, slack = config.n, config.batch_size, config.trace_slack
    has_sgd, has_gd = "sgd" in config.optimizers, "gd" in config.optimizers
    sgd = _sel(results, "sgd", converged_only=False)
    gd = _sel(results, "gd", converged_only=False)
    if has_sgd:
        mins = A.minima(results, "sgd")
        worst = A.worst_trace_ratio(mins, n, B)
        tr0 = A.median([r["init_trace"] for r in sgd])
        tight_labels = [
            lab
            for lab in labels
            if A.sgd_curvature_threshold(lab / math.sqrt(config.d), n, B) < tr0
        ]

        def tight(rs: list[Record]) -> float:
            res = A.as_results(rs)
            vals = _meds(res, "sgd", "trace", tight_labels)
            return A.strict_min(
                [lab / math.sqrt(config.d) * t / 2.0 for lab, t in zip(tight_labels, vals)]
            )

        near = tight(sgd)
        m = A.over_seeds(sgd, tight, label="min η·Tr G/2 where 2/η < Tr G_0")
        # strict_min: a label without a run at the target η (NaN median) fails the claim
        # wherever it sits (the builtin min skips a NaN that is not first).
        claims.append(
            A.paper_claim(
                "E4.1",
                "SGD's Tr G ≤ 2/η always, and close to 2/η once 2/η < Tr G(θ_0).",
                paper="Tr H ≤ 2/η at every SGD-stable minimum (B = 1); the bound binds once "
                "2/η is below the initial Tr G",
                source="abstract (headline result) and " + _SOURCE,
                rule=f"every SGD run ends at a minimum; max η_eff·Tr G/2 ≤ {1 + slack:g} over "
                "them (warm-up minima at their η_eff); η·Tr G/2 ≥ 0.5 (median over the runs at "
                "the target η, none missing) at every label with 2/η < Tr G_0 (≥ 1 such label)",
                holds=bool(mins)
                and len(mins) == len(sgd)
                and worst <= 1 + slack
                and bool(tight_labels)
                and near >= 0.5,
                measured=f"SGD runs: {A.outcome_text(sgd)}; max η_eff·Tr G/2 = {A.fmt(worst)}; "
                f"labels with 2/η < Tr G_0 = {A.fmt(tr0)}: {[A.fmt(x) for x in tight_labels]}, "
                f"min η·Tr G/2 there = {A.fmt(near)}; {m}",
                measurement=m,
            )
        )
        xs, pn, rho = _trend(results, "sgd", "path_norm", labels)
        m = _trend_over_seeds(sgd, "path_norm", labels, "Spearman(lr, ‖θ‖_P)")
        claims.append(
            A.paper_claim(
                "E4.2",
                "SGD's path norm decreases with the learning rate.",
                paper="SGD-stable minima have ‖θ‖_P ≲ 1/(κη), κ ≈ √(d/2π): the path norm "
                "falls as η grows",
                source="two-layer ReLU equivalence of Tr G and √d‖θ‖_P; " + _SOURCE,
                rule="over the labels with a run at the target η (≥ 3): Spearman(lr, median "
                "‖θ‖_P) ≤ −0.8 and ‖θ‖_P(largest) < ‖θ‖_P(smallest)",
                holds=rho <= -0.8 and pn[-1] < pn[0],
                measured=f"‖θ‖_P at {[A.fmt(x) for x in xs]} = {[A.fmt(v) for v in pn]}; "
                f"Spearman = {A.fmt(rho)}{_excluded(results, 'sgd', labels)}; {m}",
                measurement=m,
            )
        )
    if has_gd:
        mins = A.minima(results, "gd")
        worst = A.strict_max([_gd_ratio(r) for r in mins])
        at_target = [lab for lab in labels if _sel(results, "gd", lab)]
        top = at_target[-1] if at_target else float("nan")
        lam0 = A.median([r["init_lambda_max"] for r in gd])

        def sharp_at(rs: list[Record], lab: float) -> float:
            return A.median([_gd_ratio(r) for r in rs if A.is_ok(r) and r["label"] == lab])

        near_top = sharp_at(gd, top) if at_target else float("nan")
        low_small = sharp_at(gd, labels[0])
        warm = [r for r in gd if A.run_outcome(r) == "converged in warm-up"]
        warm_text = ", ".join(
            f"{A.fmt(r['label'])}/seed {r['seed']}: η_eff/η = {A.fmt(A.effective_lr(r) / r['lr'])}"
            f", η_eff·λ_max/2 = {A.fmt(_gd_ratio(r))}"
            for r in warm
        )
        large = bool(at_target) and top > 2.0 / lam0
        reason = ""
        if (
            bool(mins)
            and len(mins) == len(gd)
            and worst <= 1 + slack
            and low_small <= 0.2
            and not large
        ):
            reason = (
                "no GD run at η > 2/λ_max(G_0) converged at its target η: every such run fell "
                "into a minimum during the warm-up (" + warm_text + "), so GD at large η is "
                "not observed at a minimum of that η"
            )
        m = A.over_seeds(
            gd,
            lambda rs: sharp_at(rs, top) if at_target else float("nan"),
            label=f"η·λ_max/2 at label {A.fmt(top)}",
        )
        claims.append(
            A.paper_claim(
                "E4.3",
                "GD's λ_max ≤ 2/η; it sits near 2/η only at large η and far below at small η.",
                paper="GD-stable minima satisfy λ_max ≤ 2/η, a constraint that binds only at "
                "large η",
                source="abstract (GD's constraint only on λ_max) and " + _SOURCE,
                rule=f"every GD run ends at a minimum; η_eff·λ_max/2 ≤ {1 + slack:g} for each "
                "(warm-up minima at their η_eff); median η·λ_max/2 ≥ 0.5 at the largest label "
                "with runs at the target η, which must exceed 2/λ_max(G_0) (else not "
                "reproduced), and ≤ 0.2 at the smallest label",
                holds=bool(mins)
                and len(mins) == len(gd)
                and worst <= 1 + slack
                and large
                and near_top >= 0.5
                and low_small <= 0.2,
                measured=f"GD runs: {A.outcome_text(gd)}; max η_eff·λ_max/2 = {A.fmt(worst)}; "
                f"η·λ_max/2 at label {A.fmt(top)} = {A.fmt(near_top)} (2/λ_max(G_0) = "
                f"{A.fmt(2.0 / lam0)}), at the smallest = {A.fmt(low_small)}"
                + (f"; converged in warm-up: {warm_text}" if warm else "")
                + f"; {m}",
                measurement=m,
                not_reproduced=reason,
            )
        )
        stable = [lab for lab in labels if lab <= 2.0 / lam0]
        pn = _meds(results, "gd", "path_norm", stable)
        span = A.max_over_min(pn)
        pn_top = _meds(results, "gd", "path_norm", [labels[-1]])[0]
        m = A.over_seeds(
            gd,
            lambda rs: A.max_over_min(_meds(A.as_results(rs), "gd", "path_norm", stable)),
            label="GD max/min ‖θ‖_P (stable-at-init labels)",
        )
        claims.append(
            A.paper_claim(
                "E4.4",
                "GD's path norm is roughly constant except at the largest η.",
                paper="GD's stability is too weak to reduce the path norm: GD keeps the "
                "initialization's ‖θ‖_P except at the largest η",
                source="abstract (GD too weak) and " + _SOURCE,
                rule="max/min ≤ 1.2 over the η ≤ 2/λ_max(G_0) (≥ 2 of them; medians of the "
                "runs at the target η)",
                holds=len(stable) >= 2 and span <= 1.2,
                measured=f"λ_max(G_0) = {A.fmt(lam0)}; GD-stable-at-init labels "
                f"{[A.fmt(x) for x in stable]}: max/min ‖θ‖_P = {A.fmt(span)}; at the largest "
                f"η ‖θ‖_P = {A.fmt(pn_top)} vs {A.fmt(pn[0] if pn else float('nan'))}; {m}",
                measurement=m,
            )
        )
    if has_sgd:
        xs, te, rho = _trend(results, "sgd", "test_mse", labels)
        measured = (
            f"SGD test MSE at {[A.fmt(x) for x in xs]} = {[A.fmt(v) for v in te]}; Spearman = "
            f"{A.fmt(rho)}{_excluded(results, 'sgd', labels)}"
        )
        holds = rho <= -0.8
        rule = (
            "Spearman(lr, SGD median test MSE) ≤ −0.8 over the labels with a run at the target "
            "η (≥ 3)"
        )
        if has_gd:
            both = [lab for lab in labels if _sel(results, "gd", lab) and _sel(results, "sgd", lab)]
            top = both[-1] if both else labels[-1]
            g_top = _meds(results, "gd", "test_mse", [top])[0]
            s_top = _meds(results, "sgd", "test_mse", [top])[0]
            measured += f"; at label {A.fmt(top)} SGD {A.fmt(s_top)} vs GD {A.fmt(g_top)}"
            holds = holds and s_top <= g_top
            rule += (
                " and SGD ≤ GD at the largest label where both have runs at the target η (medians)"
            )
        m = _trend_over_seeds(sgd, "test_mse", labels, "Spearman(lr, SGD test MSE)")
        claims.append(
            A.paper_claim(
                "E4.5",
                "SGD's test error decreases with the learning rate and is ≤ GD's at large LR.",
                paper="SGD with a larger η generalizes better; GD's stability is too weak",
                source="abstract (role of the learning rate; GD too weak) and " + _SOURCE,
                rule=rule,
                holds=holds,
                measured=f"{measured}; {m}",
                measurement=m,
            )
        )
    return claims


def run_table(results: dict[str, Record]) -> list[Row]:
    """One row per run that did not converge at its target η (warm-up, diverged, unconverged).

    Example:
        >>> run_table({"a": {"optimizer": "gd", "label": 0.1, "lr": 0.1, "seed": 0,
        ...                  "converged": True, "effective_lr": 0.01, "lambda_max": 150.0,
        ...                  "trace": 1.0}})[0]["outcome"]
        'converged in warm-up'
    """
    rows: list[Row] = []
    for key in sorted(results):
        r = results[key]
        cat = A.run_outcome(r)
        if cat == "converged":
            continue
        eff = A.effective_lr(r)
        minimum = cat == "converged in warm-up"
        rows.append(
            {
                "optimizer": str(r.get("optimizer", "")),
                "label": float(r.get("label", math.nan)),
                "seed": float(r.get("seed", math.nan)),
                "outcome": cat,
                "eta": float(r["lr"]),
                "eta_eff/eta": eff / float(r["lr"]) if minimum else math.nan,
                "eta_eff*lambda_max/2": eff * r.get("lambda_max", math.nan) / 2.0
                if minimum
                else math.nan,
                "eta_eff*trace/2": eff * r.get("trace", math.nan) / 2.0 if minimum else math.nan,
            }
        )
    return rows


@plots.styled
def plot_e4(config: E4Config, results: dict[str, Record], fig_dir: Path) -> list[Path]:
    """Write ``e4_sweep.{png,pdf}``.

    Lines are medians over the runs converged at the target η; every run is also drawn by
    category (:func:`~.plots.mark_runs`): crosses for runs that converged during the warm-up
    (plotted at their label, their value belongs to η_eff < η), triangles at the bottom edge
    for diverged or unconverged runs.
    """
    import matplotlib.pyplot as plt  # deferred: matplotlib is only needed for figures

    labels = sorted(config.lr_labels)
    sq = math.sqrt(config.d)
    grid = np.logspace(math.log10(labels[0]), math.log10(labels[-1]), 50)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.0), constrained_layout=True)

    def lab(r: Record) -> float:
        return float(r["label"])

    def val(key: str) -> Callable[[Record], float]:
        return lambda r: float(r[key])

    ax = axes[0]
    if "sgd" in config.optimizers:
        ax.plot(labels, _meds(results, "sgd", "trace", labels), "o-", label="Tr G")
        ax.plot(labels, _meds(results, "sgd", "path_norm", labels), "s-", label="‖θ‖_P")
        ax.plot(
            grid,
            [A.sgd_curvature_threshold(x / sq, config.n, config.batch_size) for x in grid],
            "k--",
            label="2/η",
        )
        plots.mark_runs(ax, _sel(results, "sgd", converged_only=False), lab, val("trace"))
    plots.loglog_panel(ax, xlabel="√d·η", title=f"SGD (B = {config.batch_size})")
    ax = axes[1]
    if "gd" in config.optimizers:
        gd = _sel(results, "gd", converged_only=False)
        ax.plot(labels, _meds(results, "gd", "lambda_max", labels), "o-", label="λ_max(G)")
        ax.plot(labels, _meds(results, "gd", "path_norm", labels), "s-", label="‖θ‖_P")
        ax.plot(grid, [A.gd_curvature_threshold(x) for x in grid], "k--", label="2/η")
        plots.mark_runs(ax, gd, lab, val("lambda_max"), legend_tag="λ_max: ")
        early = [r for r in gd if A.run_outcome(r) == "converged in warm-up"]
        if early:
            ax.scatter(
                [r["label"] for r in early],
                [A.gd_curvature_threshold(A.effective_lr(r)) for r in early],
                marker="_",
                s=80,
                color="0.3",
                label="2/η_eff of the warm-up minima",
            )
    plots.loglog_panel(ax, xlabel="η", title="GD")
    for key, ax, title in (
        ("test_mse", axes[2], "Test MSE"),
        ("path_norm", axes[3], "Path norm ‖θ‖_P"),
    ):
        plots.plot_optimizer_medians(ax, results, config.optimizers, key, "label", labels)
        for opt in config.optimizers:
            plots.mark_runs(
                ax,
                _sel(results, opt, converged_only=False),
                lab,
                val(key),
                legend_tag=f"{opt.upper()} ",
                color="C0" if opt == "sgd" else "C1",
            )
        plots.loglog_panel(ax, xlabel="LR label (SGD: √d·η, GD: η)", title=title)
    fig.suptitle(
        f"E4: ReLU net d = {config.d}, m = {config.m}, n = {config.n} (lines: medians over the "
        "seeds' runs at the target η; ×: converged in warm-up; ▼: diverged/unconverged)"
    )
    return save_figure(fig, fig_dir, "e4_sweep")


def table_e4(config: E4Config, runs: dict[str, Record]) -> list[tuple[str, list[Row]]]:
    """Medians over seeds per label."""
    keys = ("lr", "trace", "lambda_max", "path_norm", "test_mse")
    rows = A.median_table(runs, config.optimizers, "label", sorted(config.lr_labels), keys)
    out = [("E4 medians over seeds (runs converged at the target η)", rows)]
    other = run_table(runs)
    title = "E4 runs not converged at the target η (converged in warm-up, diverged, unconverged)"
    out.append((title, other) if other else (title + ": none", []))
    return out


class E4ReLUSweep(SweepExperiment[E4Config]):
    """E4: Tr G / λ_max, path norm and test error of SGD and GD solutions across LR labels."""

    name = "wu-su-2023/e4"
    title = "Two-layer ReLU net: LR sweep, SGD (√d·η axis) vs GD"
    description = (
        "SGD solutions of a bias-free two-layer ReLU net sit at Tr G ≈ 2/η, so their path norm "
        "(≍ Tr G/√d) and test error fall with the learning rate; GD's λ_max ≤ 2/η constraint "
        "leaves the path norm and error of the initialization unchanged except at the largest η."
    )
    reference = (
        "Wu & Su (ICML 2023), two-layer ReLU experiment: SGD vs GD solutions across learning "
        "rates (√d·η axis for SGD)"
    )
    ambiguities = documented_defaults(
        ("sampling", "initialization", "convergence", "budget", "loss", "GD schedule"),
        {
            "test error": "test MSE on n_test fresh samples",
            "SGD schedule": "cubic warm-up over the first third of the SGD budget, then constant",
        },
    )
    config_cls = E4Config
    analysis = analyze_e4
    figures = plot_e4
    table = table_e4

    def seed_runs(self, config: E4Config, opt: str, seed: int) -> tuple[Problem, list[SweepRun]]:
        """Every label from the seed's initialization: SGD at η = label/√d, GD at η = label."""
        model = config.initial_model(seed)
        runs: list[SweepRun] = [
            (run_key(opt, "lr", lab, seed), config.lr_of(opt, lab), model, {"label": lab})
            for lab in config.lr_labels
        ]
        return config.problem(seed), runs
