"""E1 — diagonal linear network: learning-rate sweep, SGD vs GD (Wu & Su 2023 spec §4 E1).

f(x) = ⟨a⊙b, x⟩, a_j, b_j ~ N(0, 1) (large initialization), sparse teacher β* = (1,1,1,0,…),
½-MSE loss. For every (optimizer, η, seed) one run trains to L ≤ 1e−10 (SGD: B = 1 with
replacement and a cubic warm-up; GD: constant η, with a warm-up only when η > 2/λ_max(G_0),
spec A12). At the end Tr G, ‖G‖_F, λ_max(G) (exact, from K = JJᵀ/n), ‖β‖_1, ‖β‖_{1,s}, r(θ) and
the test MSE on fresh samples are recorded.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from dynstab.experiments.base import Claim, Experiment, RunSpec
from dynstab.experiments.config import ExperimentConfig
from dynstab.experiments.wu_su_2023 import common as C

__all__ = ["E1Config", "E1DiagonalSweep"]

_FULL_LRS = tuple(float(x) for x in np.logspace(-2.4, -0.9, 6))


@dataclasses.dataclass(frozen=True)
class E1Config(ExperimentConfig):
    """Settings of E1 (defaults = the spec's full settings; ``PROFILES['quick']`` for CI).

    Attributes:
        d, n, n_test: Dimension, training and test sample sizes (spec: 1000, 300, 3000).
        inputs: Input law, ``"gaussian"`` (A3 default) or ``"cube"``/``"sphere"``.
        support: Number of ones in β* (spec: 3).
        init_scale: Std of the N(0, s²) initialization of a and b (spec: 1).
        lrs: Target learning rates η (spec: logspace(−2.4, −0.9, 6)).
        seeds: Seeds (data, initialization and sampler; spec A8: 3 seeds).
        optimizers: Subset of ``("sgd", "gd")``.
        batch_size: SGD batch size B (spec: 1, sampling with replacement).
        sgd_steps, sgd_warmup_steps: SGD step budget and cubic warm-up length (A6, A8).
        gd_steps: GD step budget (A8). gd_warmup: ``"auto"`` = warm up only if η > 2/λ_max(G_0).
        gd_warmup_steps: Warm-up length for GD when used.
        warmup_power: Exponent of the warm-up (3 = cubic).
        stop_loss, min_full_lr_fraction: Convergence rule (A7).
        clip: Optional gradient-norm clipping (A6 alternative; None = off).
        trace_slack: Relative slack in "Tr G ≤ (1 + slack)·2/η" (spec: 5 %).
        progress: tqdm bars inside each run.
    """

    d: int = 1000
    n: int = 300
    n_test: int = 3000
    inputs: Literal["gaussian", "sphere", "cube"] = "gaussian"
    support: int = 3
    init_scale: float = 1.0
    lrs: tuple[float, ...] = _FULL_LRS
    seeds: tuple[int, ...] = (0, 1, 2)
    optimizers: tuple[str, ...] = ("sgd", "gd")
    batch_size: int = 1
    sgd_steps: int = 300_000
    sgd_warmup_steps: int = 50_000
    gd_steps: int = 30_000
    gd_warmup: Literal["auto", "always", "never"] = "auto"
    gd_warmup_steps: int = 5_000
    warmup_power: float = 3.0
    stop_loss: float = 1e-10
    min_full_lr_fraction: float = 0.2
    clip: float | None = None
    trace_slack: float = 0.05
    progress: bool = False

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {
            "d": 500,
            "n": 150,
            "n_test": 1000,
            "lrs": (0.004, 0.0126, 0.04, 0.126),
            "seeds": (0,),
            "sgd_steps": 100_000,
            "sgd_warmup_steps": 20_000,
            "gd_steps": 20_000,
            "gd_warmup_steps": 2_000,
        }
    }


def _key(opt: str, lr: float, seed: int) -> str:
    return f"{opt}_lr={lr:.5g}_seed={seed}"


class E1DiagonalSweep(Experiment):
    """E1: sharpness, norms and test error of SGD vs GD solutions across η."""

    name: ClassVar[str] = "wu-su-2023/e1"
    title: ClassVar[str] = "Diagonal linear net: LR sweep, SGD (Tr G ≤ 2/η) vs GD (λ_max ≤ 2/η)"
    description: ClassVar[str] = (
        "Diagonal linear network f(x) = ⟨a⊙b, x⟩ with a large N(0,1) initialization fit to a "
        "3-sparse linear teacher. SGD (B = 1) solutions have Tr G just below 2/η, so their "
        "weighted ℓ1 norm and test error fall with η; GD solutions keep the initialization's "
        "sharpness and error (spec §4 E1, R1, R3, R4, R9)."
    )
    spec_reference: ClassVar[str] = "wu_su_2023.md §4 E1"
    ambiguities: ClassVar[dict[str, str]] = {
        "A2": "SGD batches sampled with replacement, B = 1",
        "A3": "inputs x ~ N(0, I_d) (option: inputs=cube for Unif[-1,1]^d)",
        "A5": "test error = test MSE E(f - f*)^2 on n_test fresh samples (relative MSE also kept)",
        "A6": "cubic warm-up η_t = η·min(1,(t+1)/T_w)^3, then constant; no clipping",
        "A7": "converged: L ≤ 1e-10 with ≥ 20% of steps at full η; bounds tested at lr_at_1e6",
        "A8": "SGD ≤ 3e5 steps, GD ≤ 3e4 steps, 3 seeds, medians over seeds",
        "A9": "loss ½(f - y)^2 per sample",
        "A11": "a⊙b parameterization",
        "A12": "GD at constant η; warm-up only when η > 2/λ_max(G_0)",
    }
    config_cls: ClassVar[type] = E1Config

    def specs(self, config: E1Config) -> list[RunSpec]:
        """One unit per (optimizer, η, seed)."""
        return [
            RunSpec(_key(opt, lr, seed), {"optimizer": opt, "lr": lr, "seed": seed})
            for opt in config.optimizers
            for lr in config.lrs
            for seed in config.seeds
        ]

    def run_one(self, config: E1Config, spec: RunSpec) -> dict[str, Any]:
        """Train one run with the fast closed-form trainer and measure the solution."""
        opt, lr, seed = spec.params["optimizer"], float(spec.params["lr"]), int(spec.params["seed"])
        with C.single_thread_blas():
            return run_diagonal(config, opt=opt, lr=lr, seed=seed)

    def analyze(self, config: E1Config, results: dict[str, dict[str, Any]]) -> list[Claim]:
        """Claims E1.1–E1.6 of the spec's "what must be seen" list."""
        return analyze_e1(config, results)

    def plot(
        self, config: E1Config, results: dict[str, dict[str, Any]], fig_dir: Path
    ) -> list[Path]:
        """Three panels: SGD measures vs η, GD measures vs η, test MSE vs η."""
        return plot_e1(config, results, fig_dir)

    def tables(
        self, config: E1Config, results: dict[str, dict[str, Any]]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """The spec's [SIM]-style calibration table (medians over seeds)."""
        rows = []
        for lr in sorted(config.lrs):
            row: dict[str, Any] = {"lr": lr, "2/lr": 2.0 / lr}
            for opt in config.optimizers:
                runs = _runs(results, opt, lr)
                for k in ("trace", "frobenius", "lambda_max", "l1", "balancedness", "test_mse"):
                    row[f"{opt}_{k}"] = C.median([r[k] for r in runs])
                row[f"{opt}_converged"] = f"{sum(r['converged'] for r in runs)}/{len(runs)}"
            rows.append(row)
        return [("E1 medians over seeds (cf. spec [SIM] table)", rows)]


# --------------------------------------------------------------------------------------


def init_diagonal(d: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """a_j, b_j ~ iid N(0, scale²) from the run's seed (the same for every η and optimizer)."""
    rng = np.random.default_rng([seed, 4])
    return scale * rng.standard_normal(d), scale * rng.standard_normal(d)


def run_diagonal(
    config: Any,
    *,
    opt: str,
    lr: float,
    seed: int,
    a0: np.ndarray | None = None,
    b0: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the diagonal net once (shared by E1 and E2) and return JSON-able metrics.

    Args:
        config: An E1/E2 config (fields d, n, n_test, inputs, support, steps, warm-up, ...).
        opt: ``"sgd"`` or ``"gd"``.
        lr: Target learning rate η.
        seed: Seed of data, initialization and sampler.
        a0: Optional initial a (default: N(0, init_scale²)).
        b0: Optional initial b (used only together with ``a0``).
        extra: Extra entries merged into the result.

    Returns:
        Metrics: ``optimizer, lr, seed, converged, diverged, steps_run, final_loss,
        lr_at_convergence, lr_at_1e6, step_at_1e6, seconds, used_warmup``, the final measures
        of :func:`common.diagonal_measures` and the same measures at initialization prefixed
        ``init_``.

    Raises:
        ValueError: For an unknown optimizer.
    """
    if opt not in ("sgd", "gd"):
        raise ValueError(f"optimizer must be 'sgd' or 'gd'; got {opt!r}.")
    problem = C.diagonal_problem(
        d=config.d,
        n=config.n,
        n_test=config.n_test,
        inputs=config.inputs,
        support=config.support,
        seed=seed,
    )
    if a0 is None or b0 is None:
        a0, b0 = init_diagonal(config.d, config.init_scale, seed)
    init = C.diagonal_measures(a0, b0, problem)
    if opt == "sgd":
        steps, warm, batch, check = (
            config.sgd_steps,
            config.sgd_warmup_steps,
            config.batch_size,
            100,
        )
    else:
        steps, batch, check = config.gd_steps, None, 10
        gd_warmup = config.gd_warmup
        needs = lr > 2.0 / init["lambda_max"]
        use = gd_warmup == "always" or (gd_warmup == "auto" and needs)
        warm = config.gd_warmup_steps if use else 0
    a, b, res = C.train_diagonal_fast(
        problem.X,
        problem.y,
        a0,
        b0,
        lr=lr,
        max_steps=steps,
        batch_size=batch,
        warmup_steps=warm,
        warmup_power=config.warmup_power,
        seed=seed,
        stop_loss=config.stop_loss,
        min_full_lr_fraction=config.min_full_lr_fraction,
        check_every=check,
        clip=config.clip,
        progress=config.progress,
    )
    out: dict[str, Any] = {"optimizer": opt, "lr": lr, "seed": seed, "used_warmup": warm > 0}
    out.update(res.to_dict())
    if res.diverged or not math.isfinite(res.final_loss):
        final = {k: float("nan") for k in init}
    else:
        final = C.diagonal_measures(a, b, problem)
    out.update(final)
    out.update({f"init_{k}": v for k, v in init.items()})
    if extra:
        out.update(extra)
    return out


def _runs(results: dict[str, dict[str, Any]], opt: str, lr: float | None = None) -> list[dict]:
    return [
        r
        for r in results.values()
        if r.get("optimizer") == opt and (lr is None or math.isclose(r["lr"], lr, rel_tol=1e-9))
    ]


def _ok(r: dict[str, Any]) -> bool:
    return bool(r.get("converged")) and not r.get("diverged")


def _medians(
    results: dict[str, dict[str, Any]], opt: str, key: str, lrs: list[float]
) -> list[float]:
    return [C.median([r[key] for r in _runs(results, opt, lr) if _ok(r)]) for lr in lrs]


def _fold(x: list[float]) -> float:
    """Ratio first/last of a sequence (NaN-safe)."""
    if not x or not (math.isfinite(x[0]) and math.isfinite(x[-1])) or x[-1] <= 0:
        return float("nan")
    return x[0] / x[-1]


def _max_over_min(x: list[float]) -> float:
    v = [t for t in x if math.isfinite(t)]
    if not v or min(v) <= 0:
        return float("nan")
    return max(v) / min(v)


def analyze_e1(config: E1Config, results: dict[str, dict[str, Any]]) -> list[Claim]:
    """Turn the spec's E1 items 1–6 into claims (medians over seeds, converged runs only).

    Items needing both optimizers are skipped when one is not configured.
    """
    claims: list[Claim] = []
    lrs = sorted(config.lrs)
    n, B = config.n, config.batch_size
    slack = config.trace_slack
    has_sgd = "sgd" in config.optimizers
    has_gd = "gd" in config.optimizers
    if has_sgd:
        sgd = _runs(results, "sgd")
        conv = [r for r in sgd if _ok(r)]
        # E1.1 trace bound on every converged SGD run.
        ratios = [r["trace"] / C.sgd_curvature_threshold(C.effective_lr(r), n, B) for r in conv]
        worst = max(ratios) if ratios else float("nan")
        claims.append(
            C.make_claim(
                "E1.1",
                "Every converged SGD run satisfies the trace bound Tr G ≤ 2/η (R1, B = 1).",
                f"{len(conv)}/{len(sgd)} SGD runs converged; max Tr G/(2/η_eff) = {C.fmt(worst)}",
                bool(conv) and worst <= 1 + slack and len(conv) == len(sgd),
                f"all SGD runs converge and max η_eff·Tr G/2 ≤ {1 + slack:g}",
            )
        )
        # E1.2 Tr G tracks 2/η at the largest LRs and falls with η.
        tr = _medians(results, "sgd", "trace", lrs)
        top = lrs[-min(3, len(lrs)) :]
        near = [lr * t / 2.0 for lr, t in zip(lrs, tr) if lr in top]
        rho = C.spearman(lrs, tr)
        claims.append(
            C.make_claim(
                "E1.2",
                "SGD's Tr G falls with η and stays near 2/η at the largest learning rates.",
                f"η·Tr G/2 at the {len(top)} largest η = {[C.fmt(v) for v in near]}; "
                f"Spearman(η, Tr G) = {C.fmt(rho)}",
                bool(near) and min(near) >= 0.5 and rho <= -0.8,
                "η·Tr G/2 ≥ 0.5 (median over seeds) at the 3 largest η and Spearman ≤ −0.8",
            )
        )
        # E1.3 ‖G‖_F and λ_max shrink much less than Tr G.
        fr = _medians(results, "sgd", "frobenius", lrs)
        lm = _medians(results, "sgd", "lambda_max", lrs)
        f_tr, f_fr, f_lm = _fold(tr), _fold(fr), _fold(lm)
        claims.append(
            C.make_claim(
                "E1.3",
                "At the SGD solutions ‖G‖_F and λ_max also shrink with η, but much less than Tr G.",
                f"decrease factor (smallest/largest η): Tr {C.fmt(f_tr)}, ‖G‖_F {C.fmt(f_fr)}, "
                f"λ_max {C.fmt(f_lm)}",
                f_fr >= 1.0 and f_lm >= 1.0 and f_tr >= 2 * f_fr and f_tr >= 2 * f_lm,
                "factors of ‖G‖_F and λ_max ≥ 1 and ≤ ½·(factor of Tr G)",
            )
        )
        # E1.5 SGD test MSE falls monotonically with η, spanning ≥ 10×.
        te = _medians(results, "sgd", "test_mse", lrs)
        rho_te, span = C.spearman(lrs, te), _max_over_min(te)
        claims.append(
            C.make_claim(
                "E1.5",
                "SGD's test MSE falls monotonically with η and spans at least 10× across the grid.",
                f"test MSE = {[C.fmt(v) for v in te]}; Spearman = {C.fmt(rho_te)}; "
                f"max/min = {C.fmt(span)}",
                rho_te <= -0.8 and span >= 10.0,
                "Spearman(η, test MSE) ≤ −0.8 and max/min ≥ 10",
            )
        )
    if has_gd:
        gd = _runs(results, "gd")
        lam0 = C.median([r["init_lambda_max"] for r in gd])
        stable = [lr for lr in lrs if lr <= 2.0 / lam0] if math.isfinite(lam0) else []
        spans = {
            k: _max_over_min(_medians(results, "gd", k, stable))
            for k in ("trace", "frobenius", "lambda_max")
        }
        conv_gd = [r for r in gd if _ok(r)]
        claims.append(
            C.make_claim(
                "E1.4",
                "GD's Tr G, ‖G‖_F and λ_max stay essentially flat over the η at which the "
                "initialization is already GD-stable.",
                f"λ_max(G_0) = {C.fmt(lam0)}; GD-stable-at-init η: {[C.fmt(x) for x in stable]}; "
                "max/min: "
                + ", ".join(f"{k} {C.fmt(v)}" for k, v in spans.items())
                + f"; GD converged {len(conv_gd)}/{len(gd)}",
                len(stable) >= 2 and all(v <= 1.25 for v in spans.values()),
                "≥ 2 such η and max/min ≤ 1.25 for each measure (medians over seeds)",
            )
        )
        gte = _medians(results, "gd", "test_mse", stable)
        span_gd = _max_over_min(gte)
        passed = len(stable) >= 2 and span_gd <= 1.2
        measured = f"GD test MSE (stable-at-init η) max/min = {C.fmt(span_gd)}"
        criterion = "max/min ≤ 1.2 over GD-stable-at-init η"
        if has_sgd:
            g_top = _medians(results, "gd", "test_mse", [lrs[-1]])[0]
            s_top = _medians(results, "sgd", "test_mse", [lrs[-1]])[0]
            ratio = g_top / s_top if s_top > 0 else float("inf")
            passed = passed and ratio >= 10.0
            measured += f"; at η = {C.fmt(lrs[-1])}: GD {C.fmt(g_top)} vs SGD {C.fmt(s_top)}"
            criterion += " and GD/SGD test MSE ≥ 10 at the largest η"
        claims.append(
            C.make_claim(
                "E1.6",
                "GD's test MSE is roughly constant in η and far above SGD's at the largest η.",
                measured,
                passed,
                criterion,
            )
        )
    claims.sort(key=lambda c: c.id)
    return claims


@C.styled
def plot_e1(config: E1Config, results: dict[str, dict[str, Any]], fig_dir: Path) -> list[Path]:
    """Write ``e1_sweep.{png,pdf}``: SGD measures, GD measures and test MSE against η."""
    import matplotlib.pyplot as plt

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
            med = _medians(results, opt, key, lrs)
            ax.plot(lrs, med, marker=markers[key], label=lab)
            for r in _runs(results, opt):
                if _ok(r):
                    ax.scatter(r["lr"], r[key], s=8, color="0.6", zorder=0)
        if opt == "sgd":
            ref = [C.sgd_curvature_threshold(x, config.n, config.batch_size) for x in grid]
            ax.plot(grid, ref, "k--", label="2/η (R1 trace bound)")
            ax.set_title(f"SGD (B = {config.batch_size})")
        else:
            ax.plot(grid, [C.gd_curvature_threshold(x) for x in grid], "k--", label="2/η (GD)")
            ax.set_title("GD")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate η")
        ax.set_ylabel("sharpness at the solution")
        ax.legend(fontsize=8)
    ax = axes[2]
    for opt, mk in (("sgd", "o"), ("gd", "s")):
        if opt in config.optimizers:
            ax.plot(lrs, _medians(results, opt, "test_mse", lrs), marker=mk, label=opt.upper())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("test MSE")
    ax.set_title("Test error")
    ax.legend(fontsize=8)
    fig.suptitle(f"E1: diagonal linear net, d = {config.d}, n = {config.n} (medians over seeds)")
    return C.save_figure_pair(fig, fig_dir, "e1_sweep")
