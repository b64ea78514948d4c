"""E2 — diagonal linear network: SGD balances the layers, GD does not (Wu & Su, ICML 2023).

Initialization with an exact balancedness r(θ_0) = r0: a_j ~ N(0, σ²), b_j = c ε_j a_j with
ε_j = ±1 and c = r0 + √(r0² − 1), so r(θ) = Σ(a² + b²)/(2Σ|ab|) = (1 + c²)/(2c) = r0.
Gradient flow conserves a_j² − b_j², so GD keeps the imbalance; SGD's noise drives r toward 1
because Tr G = Σ s_j (a_j² + b_j²) ≥ 2‖β‖_{1,s} with equality iff balanced. The runs of one
(optimizer, seed) train together in one unit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

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
from dynstab_repro.wu_su_2023.problems import Problem, init_unbalanced
from dynstab_repro.wu_su_2023.units import Record, Row, SweepExperiment, SweepRun

__all__ = ["E2Balancing", "E2Config", "analyze_e2"]


@dataclasses.dataclass(frozen=True)
class E2Config(SweepConfig, DiagonalDataConfig):
    """Settings of E2 (defaults = the full settings).

    Data fields as in E1 (:class:`~.configs.DiagonalDataConfig`); trainer and sweep fields as in
    :class:`~.configs.SweepConfig`.

    Attributes:
        init_std: σ of a_j ~ N(0, σ²) (0.1).
        lr: The learning rate of the r0 sweep (0.05).
        r0s: Initial balancedness values (1.05, 2, 4, 8, 16; r0 = 1 is degenerate).
        lr_sweep: Extra SGD learning rates run at ``lr_sweep_r0`` ("closer to 1 as η grows").
        lr_sweep_r0: r0 of the learning-rate sweep.
    """

    init_std: float = 0.1
    lr: float = 0.05
    r0s: tuple[float, ...] = (1.05, 2.0, 4.0, 8.0, 16.0)
    lr_sweep: tuple[float, ...] = (0.0125, 0.025, 0.05, 0.1)
    lr_sweep_r0: float = 8.0

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {**QUICK_DIAGONAL, "r0s": (2.0, 4.0, 8.0, 16.0), "lr_sweep": (0.025, 0.05, 0.1)}
    }

    def runs_of(self, optimizer: str) -> list[tuple[float, float]]:
        """The (η, r0) pairs of one seed: the r0 sweep at ``lr``, SGD also the η sweep.

        Example:
            >>> E2Config(r0s=(2.0,), lr_sweep=(0.05, 0.1)).runs_of("sgd")
            [(0.05, 2.0), (0.05, 8.0), (0.1, 8.0)]
        """
        pairs = [(self.lr, r0) for r0 in self.r0s]
        if optimizer == "sgd":
            pairs += [(lr, self.lr_sweep_r0) for lr in self.lr_sweep]
        return list(dict.fromkeys(pairs))


def _key(opt: str, lr: float, r0: float, seed: int) -> str:
    return f"{opt}_lr={lr:.5g}_r0={r0:g}_seed={seed}"


def _med(results: dict[str, Record], opt: str, lr: float, r0: float, key: str) -> float:
    return A.median([r[key] for r in A.select(results, opt, lr=lr, r0=r0)])


#: Where the E2 claims sit in the paper (the balancing experiment's figure number could not be
#: checked here; its setting follows a published third-party reproduction).
_SOURCE = (
    "diagonal-net equivalence of sharpness and ‖β‖_{1,s}: Tr G ≥ 2‖β‖_{1,s}, equality iff "
    "balanced; balancing experiment r(θ_T) vs r(θ_0)"
)
#: E2.1's bound on r_T/r0 ("well below").
E2_BELOW = 0.6


def _ratios(runs: list[Record], lr: float, r0s: list[float]) -> list[float]:
    res = A.as_results(runs)
    return [_med(res, "sgd", lr, r0, "balancedness") / r0 for r0 in r0s]


def _spread(runs: list[Record], opt: str, lr: float, r0s: list[float]) -> float:
    res = A.as_results(runs)
    return A.max_over_min([_med(res, opt, lr, r0, "balancedness") for r0 in r0s])


def _lr_rho(runs: list[Record], lrs: list[float], r0: float) -> float:
    res = A.as_results(runs)
    return A.spearman(lrs, [_med(res, "sgd", x, r0, "balancedness") for x in lrs])


def analyze_e2(config: E2Config, results: dict[str, Record]) -> list[Claim]:
    """The E2 claims on per-run records (medians over seeds of runs converged at the target η).

    E2.1 is judged at every r0 ≥ 2, r0 = 2 included: reproduced when r_T/r0 ≤ 0.6 at every
    such r0; not reproduced when it holds at every r0 ≥ 4 but not at r0 = 2 (where the start
    is already close to the level SGD settles at from any start, so there is little room to
    fall); failed otherwise.
    """
    claims: list[Claim] = []
    lr = config.lr
    big = [r0 for r0 in sorted(config.r0s) if r0 >= 2.0]
    sgd = A.select(results, "sgd", converged_only=False)
    gd = A.select(results, "gd", converged_only=False)
    if "sgd" in config.optimizers and big:
        rt = [_med(results, "sgd", lr, r0, "balancedness") for r0 in big]
        ratios = [t / r0 for t, r0 in zip(rt, big)]
        ok = [q <= E2_BELOW for q in ratios]  # NaN (no converged run) is not ok
        ok_from_4 = [o for o, r0 in zip(ok, big) if r0 >= 4.0]
        m = A.over_seeds(
            sgd, lambda rs: A.strict_max(_ratios(rs, lr, big)), label="max over r0 of r_T/r0"
        )
        reason = ""
        if ok_from_4 and all(ok_from_4) and not all(ok):
            low = []
            for r0, t, q in zip(big, rt, ratios):
                if q > E2_BELOW:
                    per_seed = [
                        r["balancedness"] / r0 for r in A.select(results, "sgd", lr=lr, r0=r0)
                    ]
                    low.append(
                        f"r0 = {r0:g}: median r_T = {A.fmt(t)} = {A.fmt(q)}·r0 (seeds "
                        f"{A.fmt(min(per_seed))}–{A.fmt(max(per_seed))}·r0)"
                    )
            reason = (
                f"at {'; '.join(low)}: not 'well below' r0 (r_T/r0 ≤ {E2_BELOW:g}). From every "
                f"start SGD settles near r_T ≈ {A.fmt(A.median(rt))} (median over r0), which "
                "leaves little room below r0 = 2; the statement holds at every r0 ≥ 4"
            )
        claims.append(
            A.paper_claim(
                "E2.1",
                "SGD's r(θ_T) is well below r(θ_0) for every unbalanced start r0 ≥ 2, pushed "
                "toward 1.",
                paper="SGD-stable minima are nearly balanced: from r(θ_0) ∈ {2, 4, 8, 16}, "
                "SGD's r(θ_T) ends well below r(θ_0), near 1",
                source=_SOURCE,
                rule=f"r_T/r0 ≤ {E2_BELOW:g} (median over seeds) at every r0 ≥ 2, r0 = 2 "
                "included; not reproduced if it holds at every r0 ≥ 4 only",
                holds=bool(ok) and all(ok),
                measured=f"r0 = {big}: SGD r_T = {[A.fmt(v) for v in rt]} (r_T/r0 = "
                f"{[A.fmt(q) for q in ratios]}); {m}",
                measurement=m,
                not_reproduced=reason,
            )
        )
        spread = A.max_over_min(rt)
        measured = f"SGD max/min r_T over r0 ∈ {big} = {A.fmt(spread)}"
        rule = "SGD max/min r_T over r0 ≥ 2 ≤ 2 (medians over seeds)"
        holds = spread <= 2.0
        if "gd" in config.optimizers:
            gspread = A.max_over_min([_med(results, "gd", lr, r0, "balancedness") for r0 in big])
            measured += f" vs GD {A.fmt(gspread)}"
            rule += " and < GD's max/min / 2"
            holds = holds and spread < gspread / 2.0
        m = A.over_seeds(sgd, lambda rs: _spread(rs, "sgd", lr, big), label="SGD max/min r_T")
        claims.append(
            A.paper_claim(
                "E2.2",
                "SGD's final r is roughly independent of r0 (GD's grows with r0).",
                paper="SGD's stability forces near-balance whatever the start; GD (gradient "
                "flow conserves a_j² − b_j²) keeps the initial imbalance",
                source=_SOURCE,
                rule=rule,
                holds=holds,
                measured=f"{measured}; {m}",
                measurement=m,
            )
        )
    if "sgd" in config.optimizers and len(config.lr_sweep) >= 2:
        lrs = sorted(config.lr_sweep)
        r8 = config.lr_sweep_r0
        rt = [_med(results, "sgd", x, r8, "balancedness") for x in lrs]
        rho = A.spearman(lrs, rt) if len(lrs) >= 3 else (-1.0 if rt[-1] < rt[0] else 1.0)
        m = A.over_seeds(sgd, lambda rs: _lr_rho(rs, lrs, r8), label="Spearman(η, r_T)")
        claims.append(
            A.paper_claim(
                "E2.3",
                "SGD's r(θ_T) gets closer to 1 as η grows.",
                paper="the stability constraint Tr G ≤ 2/η tightens as η grows, so SGD's "
                "solutions are more balanced at larger η",
                source="abstract (role of the learning rate) and " + _SOURCE,
                rule="Spearman(η, median r_T) ≤ −0.8 and r_T(largest η) < r_T(smallest η)",
                holds=rho <= -0.8 and rt[-1] < rt[0],
                measured=f"r0 = {r8:g}, η = {[A.fmt(x) for x in lrs]}: r_T = "
                f"{[A.fmt(v) for v in rt]}; Spearman = {A.fmt(rho)}; {m}",
                measurement=m,
            )
        )
    if "gd" in config.optimizers:
        r0s = sorted(config.r0s)
        pairs = [(r0, _med(results, "gd", lr, r0, "balancedness")) for r0 in r0s]
        # strict_min: an r0 without a converged GD run (NaN median) fails the claim wherever
        # it sits in the list (the builtin min would skip a NaN that is not first).
        worst = A.strict_min([t / r0 for r0, t in pairs])
        n_conv = sum(len(A.select(results, "gd", lr=lr, r0=r0)) for r0 in r0s)

        def gd_worst(rs: list[Record]) -> float:
            res = A.as_results(rs)
            return A.strict_min([_med(res, "gd", lr, r0, "balancedness") / r0 for r0 in r0s])

        m = A.over_seeds(gd, gd_worst, label="min over r0 of GD r_T/r0")
        claims.append(
            A.paper_claim(
                "E2.4",
                "GD does not balance: r(θ_T) ≥ r(θ_0) (gradient flow conserves a² − b²).",
                paper="GD's stability (λ_max ≤ 2/η) does not force balance: GD keeps "
                "r(θ_T) ≈ r(θ_0)",
                source=_SOURCE,
                rule="min over r0 of r_T/r0 ≥ 0.95 (medians over seeds; every r0 needs a GD "
                "run converged at the target η)",
                holds=worst >= 0.95 and n_conv > 0,
                measured=f"GD r_T/r0 = {[A.fmt(t / r0) for r0, t in pairs]}; GD runs: "
                f"{A.outcome_text(gd)}; {m}",
                measurement=m,
            )
        )
    if "sgd" in config.optimizers:
        mins = A.minima(results, "sgd")
        worst = A.worst_trace_ratio(mins, config.n, config.batch_size)
        slack = config.trace_slack
        m = A.over_seeds(
            sgd,
            lambda rs: A.worst_trace_ratio(
                [r for r in rs if A.is_minimum(r)], config.n, config.batch_size
            ),
            label="max η_eff·Tr G/2",
        )
        claims.append(
            A.paper_claim(
                "E2.5",
                "SGD's final Tr G ≤ 2/η.",
                paper="Tr H ≤ 2/η at every SGD-stable minimum (B = 1)",
                source="abstract (headline result)",
                rule=f"every SGD run ends at a minimum and max η_eff·Tr G/2 ≤ {1 + slack:g}",
                holds=bool(mins) and len(mins) == len(sgd) and worst <= 1 + slack,
                measured=f"SGD runs: {A.outcome_text(sgd)}; max over runs {A.fmt(worst)}; {m}",
                measurement=m,
            )
        )
    return claims


@plots.styled
def plot_e2(config: E2Config, results: dict[str, Record], fig_dir: Path) -> list[Path]:
    """Write ``e2_balancing.{png,pdf}``."""
    import matplotlib.pyplot as plt  # deferred: matplotlib is only needed for figures

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0), constrained_layout=True)
    ax = axes[0]
    r0s = sorted(config.r0s)
    plots.plot_optimizer_medians(
        ax,
        results,
        config.optimizers,
        "balancedness",
        "r0",
        r0s,
        label_suffix=" r(θ_T)",
        lr=config.lr,
    )
    for opt in config.optimizers:
        plots.mark_runs(
            ax,
            A.select(results, opt, converged_only=False, lr=config.lr),
            lambda r: float(r["r0"]),
            lambda r: float(r["balancedness"]),
            legend_tag=f"{opt.upper()} ",
        )
    ax.plot(r0s, r0s, "k:", label="r_T = r_0")
    ax.axhline(1.0, color="k", ls="--", label="r = 1 (balanced)")
    plots.loglog_panel(ax, xlabel="r(θ_0)", ylabel="r(θ_T)", title=f"η = {config.lr:g}")
    ax = axes[1]
    if "sgd" in config.optimizers and config.lr_sweep:
        lrs = sorted(config.lr_sweep)
        ax.plot(
            lrs,
            A.medians(results, "sgd", "balancedness", "lr", lrs, r0=config.lr_sweep_r0),
            marker="o",
            label=f"SGD, r0 = {config.lr_sweep_r0:g}",
        )
        ax.axhline(1.0, color="k", ls="--", label="r = 1")
        plots.loglog_panel(ax, xlabel="learning rate η")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("r(θ_T)")
    ax.set_title("SGD balancing vs η")
    fig.suptitle(f"E2: balancedness, d = {config.d}, n = {config.n}")
    return save_figure(fig, fig_dir, "e2_balancing")


def table_e2(config: E2Config, runs: dict[str, Record]) -> list[tuple[str, list[Row]]]:
    """Medians over seeds of r_T, Tr G and test MSE per r0."""
    keys = ("balancedness", "trace", "test_mse")
    rows = A.median_table(runs, config.optimizers, "r0", config.r0s, keys, lr=config.lr)
    return [(f"E2 at η = {config.lr:g} (medians over seeds)", rows)]


class E2Balancing(SweepExperiment[E2Config]):
    """E2: r(θ_T) against r(θ_0) for SGD and GD."""

    name = "wu-su-2023/e2"
    title = "Diagonal linear net: SGD balances the layers, GD does not"
    description = (
        "Unbalanced initializations with r(θ_0) = r0 exactly. SGD (B = 1) ends near balance "
        "(r(θ_T) well below r0, roughly independent of r0, closer to 1 for larger η) because its "
        "trace bound penalizes Tr G ≥ 2‖β‖_{1,s}; GD conserves the imbalance."
    )
    reference = (
        "Wu & Su (ICML 2023), diagonal linear networks: SGD-stable minima are nearly balanced "
        "(Tr G ≥ 2‖β‖_{1,s}, with equality iff balanced)"
    )
    ambiguities = documented_defaults(
        ("sampling", "convergence", "budget", "loss"),
        {
            "inputs": "inputs x ~ N(0, I_d)",
            "SGD schedule": "cubic warm-up, no gradient clipping",
            "initialization": "a_j ~ N(0, 0.1²) (σ = 0.1), b = c ε a; r0 = 1.05 instead of the "
            "degenerate 1",
        },
    )
    config_cls = E2Config
    analysis = analyze_e2
    figures = plot_e2
    table = table_e2

    def seed_runs(self, config: E2Config, opt: str, seed: int) -> tuple[Problem, list[SweepRun]]:
        """The (η, r0) pairs of ``opt``, each from its unbalanced initialization."""
        pairs = config.runs_of(opt)
        models = {r0: init_unbalanced(config.d, r0, config.init_std, seed) for _, r0 in pairs}
        runs: list[SweepRun] = [
            (_key(opt, lr, r0, seed), lr, models[r0], {"r0": r0}) for lr, r0 in pairs
        ]
        return config.problem(seed), runs
