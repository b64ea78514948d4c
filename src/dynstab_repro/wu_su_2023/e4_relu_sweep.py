"""E4 — two-layer ReLU net: learning-rate sweep, SGD vs GD (Wu & Su, ICML 2023).

Learning-rate *labels* lr ∈ logspace(−3, −1, 10): SGD (B = 1) uses η = lr/√d (the x-axis "√d·η",
because the SGD bound reads ‖θ‖_P ≲ 2.5/(√d η)), GD uses η = lr. Data, model and trainer as in
E3; GD runs at constant η with a warm-up only when η > 2/λ_max(G_0). The labels of one
(optimizer, seed) train together in one unit.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from dynstab_repro.base import Claim, RunSpec
from dynstab_repro.wu_su_2023 import analysis as A
from dynstab_repro.wu_su_2023 import plots
from dynstab_repro.wu_su_2023.configs import (
    QUICK_RELU,
    Overrides,
    ReLUDataConfig,
    SweepConfig,
    documented_defaults,
)
from dynstab_repro.wu_su_2023.units import (
    Record,
    Row,
    SweepExperiment,
    run_key,
    sweep_plans,
    sweep_unit,
)

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
    spec_reference = reference
    ambiguities = documented_defaults(
        ("sampling", "initialization", "convergence", "budget", "loss", "GD schedule"),
        {
            "test error": "test MSE on n_test fresh samples",
            "SGD schedule": "cubic warm-up over the first third of the SGD budget, then constant",
        },
    )
    config_cls = E4Config

    def compute(self, config: E4Config, spec: RunSpec) -> Record:
        """Train the unit's runs (every label and seed): SGD at η = label/√d, GD at η = label."""
        opt = str(spec.params["optimizer"])
        plans = []
        for seed in config.seeds:
            model = config.initial_model(seed)
            runs = [
                (run_key(opt, "lr", lab, seed), config.lr_of(opt, lab), model, {"label": lab})
                for lab in config.lr_labels
            ]
            plans += sweep_plans(config, opt, seed, config.problem(seed), runs)
        return sweep_unit(config, opt, plans)

    def analyze_runs(self, config: E4Config, runs: dict[str, Record]) -> list[Claim]:
        """Claims E4.1–E4.5."""
        return analyze_e4(config, runs)

    def plot_runs(self, config: E4Config, runs: dict[str, Record], fig_dir: Path) -> list[Path]:
        """Four panels (SGD vs √d·η, GD vs η, test error and path norm vs label)."""
        return plot_e4(config, runs, fig_dir)

    def table_runs(self, config: E4Config, runs: dict[str, Record]) -> list[tuple[str, list[Row]]]:
        """Medians over seeds per label."""
        keys = ("lr", "trace", "lambda_max", "path_norm", "test_mse")
        rows = A.median_table(runs, config.optimizers, "label", sorted(config.lr_labels), keys)
        return [("E4 medians over seeds", rows)]


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


def analyze_e4(config: E4Config, results: dict[str, Record]) -> list[Claim]:
    """The E4 claims on per-run records (medians over seeds of converged runs)."""
    claims: list[Claim] = []
    labels = sorted(config.lr_labels)
    n, B, slack = config.n, config.batch_size, config.trace_slack
    has_sgd, has_gd = "sgd" in config.optimizers, "gd" in config.optimizers
    if has_sgd:
        sgd = _sel(results, "sgd", converged_only=False)
        conv = _sel(results, "sgd")
        worst = A.worst_trace_ratio(conv, n, B)
        tr0 = A.median([r["init_trace"] for r in sgd])
        tight = []
        for lab, tr in zip(labels, _meds(results, "sgd", "trace", labels)):
            eta = lab / math.sqrt(config.d)
            if A.sgd_curvature_threshold(eta, n, B) < tr0:
                tight.append(eta * tr / 2.0)
        # strict_min: a label without a converged run (NaN median) fails the claim wherever it
        # sits (the builtin min skips a NaN that is not first).
        claims.append(
            A.make_claim(
                "E4.1",
                "SGD's Tr G ≤ 2/η always, and close to 2/η once 2/η < Tr G(θ_0).",
                f"{len(conv)}/{len(sgd)} converged; max η_eff·Tr G/2 = {A.fmt(worst)}; η·Tr G/2 "
                f"where 2/η < Tr G_0 = {A.fmt(tr0)}: {[A.fmt(v) for v in tight]}",
                bool(conv)
                and len(conv) == len(sgd)
                and worst <= 1 + slack
                and A.strict_min(tight) >= 0.5,
                f"all SGD runs converge; max η_eff·Tr G/2 ≤ {1 + slack:g}; η·Tr G/2 ≥ 0.5 "
                "(median, no missing) at every label with 2/η < Tr G_0 (≥ 1 such label)",
            )
        )
        pn = _meds(results, "sgd", "path_norm", labels)
        rho = A.spearman(labels, pn)
        claims.append(
            A.make_claim(
                "E4.2",
                "SGD's path norm decreases with the learning rate.",
                f"‖θ‖_P = {[A.fmt(v) for v in pn]}; Spearman = {A.fmt(rho)}",
                rho <= -0.8 and pn[-1] < pn[0],
                "Spearman(lr, ‖θ‖_P) ≤ −0.8 and ‖θ‖_P(largest) < ‖θ‖_P(smallest)",
            )
        )
    if has_gd:
        gd = _sel(results, "gd", converged_only=False)
        conv = _sel(results, "gd")

        def ratio(r: Record) -> float:
            return float(r["lambda_max"] * A.effective_lr(r) / 2.0)

        worst = A.strict_max([ratio(r) for r in conv])
        sharp = [A.median([ratio(r) for r in _sel(results, "gd", lab)]) for lab in labels]
        near_top, low_small = sharp[-1], sharp[0]
        claims.append(
            A.make_claim(
                "E4.3",
                "GD's λ_max ≤ 2/η; it sits near 2/η only at large η and far below at small η.",
                f"{len(conv)}/{len(gd)} converged; max η_eff·λ_max/2 = {A.fmt(worst)}; "
                f"η_eff·λ_max/2 at the largest η = {A.fmt(near_top)}, at the smallest = "
                f"{A.fmt(low_small)}",
                bool(conv)
                and len(conv) == len(gd)
                and worst <= 1 + slack
                and near_top >= 0.5
                and low_small <= 0.2,
                f"all GD runs converge; η_eff·λ_max/2 ≤ {1 + slack:g} for every run (η_eff: η at "
                "the last crossing of L = 1e-6); median ≥ 0.5 at the largest η and ≤ 0.2 at the "
                "smallest η",
            )
        )
        lam0 = A.median([r["init_lambda_max"] for r in gd])
        stable = [lab for lab in labels if lab <= 2.0 / lam0]
        pn = _meds(results, "gd", "path_norm", stable)
        span = A.max_over_min(pn)
        pn_top = _meds(results, "gd", "path_norm", [labels[-1]])[0]
        claims.append(
            A.make_claim(
                "E4.4",
                "GD's path norm is roughly constant except at the largest η.",
                f"λ_max(G_0) = {A.fmt(lam0)}; GD-stable-at-init labels {[A.fmt(x) for x in stable]}"
                f": max/min ‖θ‖_P = {A.fmt(span)}; at the largest η ‖θ‖_P = {A.fmt(pn_top)} vs "
                f"{A.fmt(pn[0] if pn else float('nan'))}",
                len(stable) >= 2 and span <= 1.2,
                "max/min ≤ 1.2 over the η ≤ 2/λ_max(G_0) (≥ 2 of them)",
            )
        )
    if has_sgd:
        te = _meds(results, "sgd", "test_mse", labels)
        rho = A.spearman(labels, te)
        measured = f"SGD test MSE = {[A.fmt(v) for v in te]}; Spearman = {A.fmt(rho)}"
        passed = rho <= -0.8
        criterion = "Spearman(lr, SGD test MSE) ≤ −0.8"
        if has_gd:
            g_top = _meds(results, "gd", "test_mse", [labels[-1]])[0]
            measured += f"; at the largest label SGD {A.fmt(te[-1])} vs GD {A.fmt(g_top)}"
            passed = passed and te[-1] <= g_top
            criterion += " and SGD ≤ GD at the largest label"
        claims.append(
            A.make_claim(
                "E4.5",
                "SGD's test error decreases with the learning rate and is ≤ GD's at large LR.",
                measured,
                passed,
                criterion,
            )
        )
    return claims


@plots.styled
def plot_e4(config: E4Config, results: dict[str, Record], fig_dir: Path) -> list[Path]:
    """Write ``e4_sweep.{png,pdf}``."""
    import matplotlib.pyplot as plt  # deferred: matplotlib is only needed for figures

    labels = sorted(config.lr_labels)
    sq = math.sqrt(config.d)
    grid = np.logspace(math.log10(labels[0]), math.log10(labels[-1]), 50)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.0), constrained_layout=True)
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
    plots.loglog_panel(ax, xlabel="√d·η", title=f"SGD (B = {config.batch_size})")
    ax = axes[1]
    if "gd" in config.optimizers:
        ax.plot(labels, _meds(results, "gd", "lambda_max", labels), "o-", label="λ_max(G)")
        ax.plot(labels, _meds(results, "gd", "path_norm", labels), "s-", label="‖θ‖_P")
        ax.plot(grid, [A.gd_curvature_threshold(x) for x in grid], "k--", label="2/η")
        early = [r for r in _sel(results, "gd") if A.effective_lr(r) < 0.999 * r["lr"]]
        if early:
            ax.scatter(
                [r["label"] for r in early],
                [A.gd_curvature_threshold(A.effective_lr(r)) for r in early],
                marker="x",
                color="0.4",
                label="2/η_eff (converged during warm-up)",
            )
    plots.loglog_panel(ax, xlabel="η", title="GD")
    for key, ax, title in (
        ("test_mse", axes[2], "Test MSE"),
        ("path_norm", axes[3], "Path norm ‖θ‖_P"),
    ):
        plots.plot_optimizer_medians(ax, results, config.optimizers, key, "label", labels)
        plots.loglog_panel(ax, xlabel="LR label (SGD: √d·η, GD: η)", title=title)
    fig.suptitle(
        f"E4: ReLU net d = {config.d}, m = {config.m}, n = {config.n} (medians over seeds)"
    )
    return plots.save_figure_pair(fig, fig_dir, "e4_sweep")
