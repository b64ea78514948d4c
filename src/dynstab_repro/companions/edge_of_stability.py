"""Cohen et al. (ICLR 2021): gradient descent at the edge of stability, on offline mnist1d.

Adapted to offline data: mnist1d generated locally instead of C21's CIFAR-10 5k subset.

``eos/gd-sweep`` (C21, Fig. 1: progressive sharpening and the edge of stability): full-batch GD on
the ½-MSE with one-hot targets (L = (1/n) Σ_i ½‖f(x_i) − e_{y_i}‖², C21's ``mse``) for a tanh MLP
and C21's two-conv small CNN (1-D convolutions), over a sweep of η. The sharpness λ_max(H) of the
full training loss is measured every ``eig_every`` steps by warm-started Lanczos on float64
Hessian-vector products (:class:`dynstab.training.SharpnessMonitor`). Progressive sharpening carries
λ_max up to 2/η; after the first crossing it hovers there while the loss keeps decreasing
non-monotonically.

``eos/sgd-batch`` (C21, Appendix G, the SGD variant): SGD with i.i.d. batches without replacement at
one η over a sweep of B on a small training set; λ_max(H) at the end grows with B (GD ≈ 2/η, small B
clearly below), and the exact generalized sharpness λ_max(C†D) from the Gram matrix of the whole
training set (:func:`dynstab.criteria.eta_star`, nC×nC with C = 10) obeys η·λ_max(C†D)/2 ≤ 1.1 near
interpolation.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from dynstab.criteria import eta_star, gd_threshold
from dynstab.data import mnist1d_dataset
from dynstab.losses import half_mse
from dynstab.measures import sharpness
from dynstab.models import MLP, SmallCNN
from dynstab.norms import gram_spectrum
from dynstab.training import SharpnessMonitor, train
from dynstab_repro.base import Claim, RunSpec, graded_claim
from dynstab_repro.claim_stats import fmt, median, over_values
from dynstab_repro.companions.experiment import CompanionExperiment
from dynstab_repro.companions.minima import gram_float64
from dynstab_repro.companions.results import (
    MAX_POINTS,
    Overrides,
    Record,
    Results,
    curve,
    finite,
    grid_specs,
    mean_square_claim,
    outcome_text,
    sharpness_record,
    thin,
)
from dynstab_repro.config import ExperimentConfig
from dynstab_repro.figures import new_figure, plot_recorded
from dynstab_repro.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EoSConfig",
    "EoSGDSweep",
    "EoSSGDBatch",
    "SGDBatchConfig",
    "analyze_eos",
    "analyze_sgd_batch",
    "eos_run_metrics",
]


def _model(arch: str, width: int, channels: int, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    if arch == "mlp":
        return MLP([40, width, width, 10], activation="tanh", generator=gen).to(torch.float64)
    if arch == "cnn":
        return SmallCNN((1, 40), 10, channels=channels, activation="tanh", generator=gen).to(
            torch.float64
        )
    raise ValueError(f"arch must be 'mlp' or 'cnn'; got {arch!r}.")


def _b_name(B: int) -> str:
    return str(B) if B else "GD"


def _data(n_train: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = mnist1d_dataset(n_train, 10, seed=seed, one_hot=True)
    return ds.X.to(torch.float64), ds.y.to(torch.float64)


def eos_run_metrics(
    steps: list[int],
    lam: list[float | None],
    loss_steps: list[int],
    loss: list[float | None],
    lr: float,
    cross_frac: float = 0.95,
    band: tuple[float, float] = (0.9, 1.25),
    paper_band: tuple[float, float] = (0.95, 1.2),
) -> Record:
    """Edge-of-stability summary of one GD run (pure function of the recorded curves).

    ``ratio`` = λ_max/(2/η). The first crossing is the first measurement with ratio ≥
    ``cross_frac``. After it: the median ratio, the fractions of measurements with ratio in
    ``band`` and in ``paper_band``, and the loss at the crossing vs at the end.

    Example:
        >>> m = eos_run_metrics([0, 10, 20, 30], [1.0, 19.5, 20.5, 20.0], [0, 10, 20, 30],
        ...                     [1.0, 0.5, 0.4, 0.3], lr=0.1)
        >>> m["crossing_step"], m["post_median_ratio"], m["loss_end_over_crossing"]
        (10, 1.0, 0.6)
    """
    edge = 2.0 / lr
    pts = [(s, v / edge) for s, v in zip(steps, lam) if v is not None]
    cross = next((s for s, r in pts if r >= cross_frac), None)
    out: Record = {"crossing_step": cross}
    if cross is None:
        out.update(
            post_median_ratio=None,
            post_fraction_in_band=None,
            post_fraction_in_paper_band=None,
            loss_end_over_crossing=None,
        )
        return out
    post = [r for s, r in pts if s >= cross]
    out["post_median_ratio"] = float(np.median(post))
    out["post_fraction_in_band"] = float(np.mean([band[0] <= r <= band[1] for r in post]))
    out["post_fraction_in_paper_band"] = float(
        np.mean([paper_band[0] <= r <= paper_band[1] for r in post])
    )
    out["post_max_ratio"] = float(max(post))
    lpts = [(s, v) for s, v in zip(loss_steps, loss) if v is not None]
    at_cross = min(lpts, key=lambda sv: abs(sv[0] - cross))[1] if lpts else None
    end = lpts[-1][1] if lpts else None
    out["loss_at_crossing"] = at_cross
    out["loss_end"] = end
    out["loss_end_over_crossing"] = (end / at_cross) if (at_cross and end is not None) else None
    return out


# ---------------------------------------------------------------------------------------------
# GD at the edge of stability


@dataclasses.dataclass(frozen=True)
class EoSConfig(ExperimentConfig):
    """Settings of ``eos/gd-sweep``.

    Attributes:
        n_train: mnist1d training samples (the whole set is the GD batch and the sharpness set).
        data_seed: mnist1d generation seed.
        archs: Architectures (``"mlp"``: tanh MLP [40, w, w, 10]; ``"cnn"``: C21's small CNN
            with 1-D convolutions and tanh).
        width: MLP hidden width.
        channels: CNN channels.
        lrs_mlp: Learning rates of the MLP sweep.
        lrs_cnn: Learning rates of the CNN sweep.
        steps: GD steps per run.
        eig_every: Steps between sharpness measurements.
        max_hvps: Lanczos budget per measurement (warm-started).
        cross_frac: First crossing = first λ_max ≥ cross_frac·2/η.
        paper_median_band: Cohen et al.'s "hovers right at, or just above, 2/η" as a band for
            the post-crossing median of λ_max/(2/η) (claim C2, reproduced).
        median_band: Adapted (wider) band of claim C2 (see the ``bands`` ambiguity).
        paper_band: Band of the fraction test read from Cohen et al. (claim C3, reproduced).
        band: Adapted (wider) band of the fraction test.
        band_fraction: Fraction of post-crossing measurements required inside the band.
        seeds: Initialization seeds (one run per architecture, η and seed).
    """

    n_train: int = 1000
    data_seed: int = 42
    archs: tuple[str, ...] = ("mlp", "cnn")
    width: int = 100
    channels: int = 8
    lrs_mlp: tuple[float, ...] = (0.1, 0.15, 0.2)
    lrs_cnn: tuple[float, ...] = (0.07, 0.1)
    steps: int = 3000
    eig_every: int = 20
    max_hvps: int = 100
    cross_frac: float = 0.95
    paper_median_band: tuple[float, float] = (1.0, 1.1)
    median_band: tuple[float, float] = (0.95, 1.15)
    paper_band: tuple[float, float] = (0.95, 1.2)
    band: tuple[float, float] = (0.9, 1.25)
    band_fraction: float = 0.95
    seeds: tuple[int, ...] = (0, 1, 2)

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {
            "n_train": 300,
            "width": 64,
            "channels": 8,
            "lrs_mlp": (0.1, 0.2),
            "lrs_cnn": (0.1,),
            "steps": 2000,
            "eig_every": 25,
            "seeds": (0, 1),
        }
    }


def _train_gd_eos(config: EoSConfig, arch: str, lr: float, seed: int) -> Record:
    X, y = _data(config.n_train, config.data_seed)
    model = _model(arch, config.width, config.channels, seed)
    mon = SharpnessMonitor(every=config.eig_every, max_hvps=config.max_hvps, tol=1e-3, seed=seed)
    res = train(
        model,
        X,
        y,
        lr=lr,
        steps=config.steps,
        dtype=torch.float64,
        stop_loss=None,
        monitors=[mon],
    )
    metrics = eos_run_metrics(
        *curve(res, "lambda_max"),
        *curve(res, "loss"),
        lr,
        cross_frac=config.cross_frac,
        band=config.band,
        paper_band=config.paper_band,
    )
    return {"arch": arch, "lr": lr, "seed": seed, **sharpness_record(res), **metrics}


EOS_SOURCE = "Cohen et al. (ICLR 2021), Sec. 3, Fig. 1"


def analyze_eos(config: EoSConfig, results: Results) -> list[Claim]:
    """Claims of ``eos/gd-sweep`` (every run counts; medians and ranges over seeds).

    * C1: every run crosses cross_frac·2/η (progressive sharpening reaches the edge).
    * C2: post-crossing median of λ_max/(2/η) in ``paper_median_band`` in every run
      (reproduced), or in the wider ``median_band`` (adapted).
    * C3: ≥ ``band_fraction`` of post-crossing measurements inside ``paper_band``
      (reproduced) or ``band`` (adapted), in every run.
    * C4: the loss at the end is below the loss at the crossing in every run.
    * C5: within each architecture and seed the crossing happens later for smaller η.

    A diverged run or a missing unit makes C1 fail (it never hovers at the edge).
    """
    runs = dict(results)
    expected = len(EoSGDSweep().specs(config))
    outcomes = outcome_text(runs, expected)
    crossed = [k for k, r in runs.items() if r.get("crossing_step") is not None]
    all_ok = len(runs) == expected and not any(r.get("diverged") for r in runs.values())
    claims = [
        graded_claim(
            "C1",
            "Progressive sharpening: λ_max reaches 2/η in every run",
            paper="λ_max rises until it reaches 2/η",
            source=EOS_SOURCE,
            rule=f"first λ_max ≥ {config.cross_frac:g}·2/η exists in all {expected} runs and no "
            "run diverged",
            measured=", ".join(f"{k}: step {runs[k]['crossing_step']}" for k in sorted(crossed))
            + (
                f"; no crossing: {sorted(set(runs) - set(crossed))}"
                if len(crossed) < len(runs)
                else ""
            )
            + f"; {outcomes}",
            reproduced=all_ok and len(crossed) == expected,
        )
    ]
    meds = {k: float(runs[k]["post_median_ratio"]) for k in crossed}
    plo, phi = config.paper_median_band
    lo, hi = config.median_band
    full = bool(meds) and len(meds) == expected
    claims.append(
        graded_claim(
            "C2",
            "After the crossing λ_max hovers at 2/η (median of λ_max/(2/η) per run)",
            paper="λ_max hovers right at, or just above, 2/η",
            source=EOS_SOURCE,
            rule=f"median ∈ [{plo:g}, {phi:g}] in every run (adapted: [{lo:g}, {hi:g}])",
            measured=", ".join(f"{k}: {fmt(v)}" for k, v in sorted(meds.items())) or "no crossing",
            measurement=over_values(
                list(meds.values()), "median λ_max/(2/η) over runs", over="runs"
            )
            if meds
            else None,
            reproduced=full and all(plo <= v <= phi for v in meds.values()),
            adapted=full and all(lo <= v <= hi for v in meds.values()),
            adapted_note=f"band widened from [{plo:g}, {phi:g}] to [{lo:g}, {hi:g}]: on mnist1d "
            "the sharpness hovers slightly below 2/η between catapults and overshoots further "
            "right after the first crossing than on CIFAR-10",
        )
    )
    fr = {k: runs[k]["post_fraction_in_band"] for k in crossed}
    fr_paper = {k: runs[k].get("post_fraction_in_paper_band") for k in crossed}
    blo, bhi = config.band
    pblo, pbhi = config.paper_band
    need = config.band_fraction
    claims.append(
        graded_claim(
            "C3",
            "After the crossing nearly all measurements stay near 2/η",
            paper="λ_max stays at 2/η (no drift away) while the loss decreases",
            source=EOS_SOURCE,
            rule=f"≥ {100 * need:.0f}% of post-crossing λ_max in [{pblo:g}, {pbhi:g}]·2/η in "
            f"every run (adapted: [{blo:g}, {bhi:g}]·2/η)",
            measured=", ".join(
                f"{k}: {fmt(100 * (fr_paper[k] or 0.0))}% ({fmt(100 * fr[k])}% in the wide band)"
                for k in sorted(fr)
            )
            or "no crossing",
            reproduced=full
            and len(fr_paper) == expected
            and all(v is not None and v >= need for v in fr_paper.values()),
            adapted=full and len(fr) == expected and all(v >= need for v in fr.values()),
            adapted_note=f"band widened from [{pblo:g}, {pbhi:g}] to [{blo:g}, {bhi:g}]·2/η "
            "(catapults on mnist1d overshoot further than on CIFAR-10)",
        )
    )
    lr_ = {k: runs[k]["loss_end_over_crossing"] for k in crossed}
    claims.append(
        graded_claim(
            "C4",
            "The loss keeps decreasing over long times at the edge of stability",
            paper="the train loss continues to decrease, non-monotonically",
            source=EOS_SOURCE,
            rule="loss(end) < loss(crossing) in every run",
            measured=", ".join(f"{k}: end/crossing = {fmt(v)}" for k, v in sorted(lr_.items()))
            or "n/a",
            measurement=over_values(list(lr_.values()), "loss(end)/loss(crossing)", over="runs")
            if lr_
            else None,
            reproduced=bool(lr_)
            and len(lr_) == expected
            and all(v is not None and v < 1.0 for v in lr_.values()),
        )
    )
    ok5 = True
    parts = []
    nchecked = 0
    for arch in config.archs:
        for seed in config.seeds:
            rs = sorted(
                (
                    r
                    for r in runs.values()
                    if r.get("arch") == arch
                    and r.get("seed", 0) == seed
                    and r.get("crossing_step") is not None
                ),
                key=lambda r: r["lr"],
            )
            if len(rs) >= 2:
                nchecked += 1
                steps = [r["crossing_step"] for r in rs]
                ok5 &= all(a > b for a, b in itertools.pairwise(steps))
                parts.append(
                    f"{arch} seed {seed}: "
                    + ", ".join(f"η={r['lr']:g}→{r['crossing_step']}" for r in rs)
                )
    claims.append(
        graded_claim(
            "C5",
            "The first crossing happens later for smaller η",
            paper="smaller η reaches 2/η later",
            source=EOS_SOURCE,
            rule="crossing step strictly decreasing in η within every architecture and seed "
            "with ≥ 2 η",
            measured="; ".join(parts) or "fewer than two crossing runs per architecture",
            reproduced=nchecked > 0 and ok5,
        )
    )
    return claims


# ---------------------------------------------------------------------------------------------
# SGD: sharpness against the batch size


@dataclasses.dataclass(frozen=True)
class SGDBatchConfig(ExperimentConfig):
    """Settings of ``eos/sgd-batch``.

    Attributes:
        n_train: mnist1d training samples.
        data_seed: mnist1d generation seed.
        width: Tanh MLP hidden width ([40, w, w, 10]).
        lr: Learning rate η (shared).
        batch_sizes: SGD batch sizes (i.i.d. without replacement); 0 = GD.
        steps: Updates per run.
        subset: Samples of the Gram sub-problem; 0 = the whole training set (exact η* for the
            run's own sampling scheme), m > 0 = the first m samples with p = 1/B (a proxy).
        loss_tol: Final ½-MSE below which an SGD run counts as trained for claim B2 (mnist1d
            SGD does not interpolate within the budget; the initial loss is ≈ 0.5).
        ratio_tol: Margin on η·λ_max(C†D)/2.
        small_max_ratio: The smallest B must have λ_max ≤ this × 2/η.
        gd_min_ratio: GD must have λ_max ≥ this × 2/η.
        check_loss: Claim B3: runs with final ½-MSE below this compare the Lanczos-HVP
            λ_max(H) with λ_max(K) of the whole-set Gram matrix (1e-3).
        check_rtol: Claim B3: allowed relative difference (1%).
        seeds: Initialization and sampling seeds (one run per B and seed).
    """

    n_train: int = 96
    data_seed: int = 42
    width: int = 100
    lr: float = 0.1
    batch_sizes: tuple[int, ...] = (4, 16, 64, 0)
    steps: int = 10000
    subset: int = 0
    loss_tol: float = 0.01
    ratio_tol: float = 1.1
    small_max_ratio: float = 0.8
    gd_min_ratio: float = 0.9
    check_loss: float = 1e-3
    check_rtol: float = 0.01
    seeds: tuple[int, ...] = (0, 1, 2)

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {
            "n_train": 64,
            "width": 64,
            "batch_sizes": (4, 0),
            "steps": 4000,
            "seeds": (0, 1),
        }
    }


SGD_SOURCE = "Cohen et al. (ICLR 2021), Appendix G (SGD)"


def analyze_sgd_batch(config: SGDBatchConfig, results: Results) -> list[Claim]:
    """Claims of ``eos/sgd-batch`` (medians and ranges over seeds).

    * B1: the median λ_max(H) over seeds is non-decreasing in B (5% slack), the smallest B is
      ≤ ``small_max_ratio``·2/η and GD ≥ ``gd_min_ratio``·2/η.
    * B2: every run with final loss ≤ ``loss_tol`` (SGD only when a proper subset is used) has
      η·λ_max(C†D)/2 ≤ 1 (reproduced) or ≤ ``ratio_tol`` (adapted) (≥ 1 such run).
    * B3 (cross-check of the sharpness code): every run with final loss <
      ``check_loss`` whose Gram matrix covers the whole training set has
      |λ_max^Lanczos(H) − λ_max(K)|/λ_max(K) < ``check_rtol`` (≥ 1 such run). H includes the
      residual term Σ_i r_i ∇²f_i/n, K = JJᵀ/n does not, so the two differ away from
      interpolation.
    """
    edge = 2.0 / config.lr
    outcomes = outcome_text(results, len(EoSSGDBatch().specs(config)))
    order = sorted(config.batch_sizes, key=lambda b: b if b else 10**9)
    per_b = {B: [r.get("lambda_max") for r in results.values() if r.get("B") == B] for B in order}
    vals = [(B, [v / edge if v is not None else None for v in per_b[B]]) for B in order]
    ok = len(vals) >= 2 and all(v and all(x is not None for x in v) for _, v in vals)
    if ok:
        lam = [median(v) for _, v in vals]
        mono = all(b >= 0.95 * a for a, b in itertools.pairwise(lam))
        small_ok = lam[0] <= config.small_max_ratio
        gd_ok = order[-1] != 0 or lam[-1] >= config.gd_min_ratio
        ok = mono and small_ok and gd_ok
    claims = [
        graded_claim(
            "B1",
            "Sharpness at the end grows with B: small batches stay clearly below 2/η, GD "
            "reaches it",
            paper="with SGD the sharpness stays below 2/η, the more so the smaller B",
            source=SGD_SOURCE,
            rule=f"median over seeds non-decreasing in B (5% slack); smallest B ≤ "
            f"{config.small_max_ratio:g}·2/η; GD ≥ {config.gd_min_ratio:g}·2/η",
            measured="λ_max·η/2: "
            + "; ".join(f"B={B or 'GD'}: {over_values(v)}" for B, v in vals)
            + f"; {outcomes}",
            reproduced=ok,
        )
    ]
    near = [
        r
        for r in results.values()
        if (r.get("B") or config.subset <= 0)
        and r.get("final_loss") is not None
        and r["final_loss"] <= config.loss_tol
        and r.get("subset_ratio") is not None
    ]
    claims.append(
        mean_square_claim(
            "B2",
            "The exact generalized sharpness (Gram reduction) stays ≤ 2/η near interpolation",
            paper="SGD is mean-square stable at its minima: η·λ_max(C†D)/2 ≤ 1",
            source="exact threshold of Mulayoff & Michaeli (COLT 2024), Sec. 3; " + SGD_SOURCE,
            ratios=[float(r["subset_ratio"]) for r in near],
            tol=config.ratio_tol,
            where=f"for every run with loss ≤ {config.loss_tol:g}",
            scope=f"runs with loss ≤ {config.loss_tol:g}",
            details="; all: "
            + ", ".join(
                f"B={r['B'] or 'GD'} seed {r.get('seed', 0)} loss={fmt(r['final_loss'])} "
                f"ratio={fmt(r.get('subset_ratio'))}"
                for r in sorted(results.values(), key=lambda r: (r["B"] or 10**9, r.get("seed")))
            ),
            note=f"the runs are only near interpolation (½-MSE ≤ {config.loss_tol:g}; the Gram "
            "criterion ignores the residual term) and a typical run may converge slightly "
            "beyond the mean-square threshold",
        )
    )
    checks = []
    for r in sorted(results.values(), key=lambda r: (r.get("B") or 10**9, r.get("seed", 0))):
        lam_h, lam_k, loss = r.get("lambda_max"), r.get("subset_lambda_max"), r.get("final_loss")
        if (
            lam_h is None
            or lam_k is None
            or loss is None
            or loss >= config.check_loss
            or r.get("subset") != config.n_train
        ):
            continue
        checks.append((r["B"], r.get("seed", 0), float(loss), abs(lam_h - lam_k) / abs(lam_k)))
    worst_rel = max((d for *_, d in checks), default=None)
    claims.append(
        graded_claim(
            "B3",
            "Lanczos-HVP λ_max(H) agrees with λ_max(K) of the Jacobian Gram matrix at "
            "near-interpolating points",
            paper="H = G = JᵀJ/n at an interpolating minimum of the square loss",
            source="Cohen et al. (ICLR 2021), Appendix (Gauss–Newton); Mulayoff & Michaeli "
            "(2024), Sec. 3",
            rule=f"|λ_Lanczos − λ_max(K)|/λ_max(K) < {config.check_rtol:g} for every run with "
            f"loss < {config.check_loss:g} (≥ 1)",
            measured=", ".join(
                f"B={B or 'GD'} seed {sd} (loss {fmt(lo)}): rel. diff {d:.2e}"
                for B, sd, lo, d in checks
            )
            or f"no run with loss < {config.check_loss:g} and a whole-set Gram matrix",
            reproduced=bool(checks) and worst_rel is not None and worst_rel < config.check_rtol,
        )
    )
    return claims


@register
class EoSGDSweep(CompanionExperiment):
    """C21 on mnist1d: λ_max rises to 2/η and hovers there, for an MLP and a small CNN."""

    name = "eos/gd-sweep"
    title = "Edge of stability (C21) on mnist1d: GD sharpness rises to 2/η and hovers"
    description = (
        "Full-batch GD on the ½-MSE with one-hot targets (mnist1d, generated offline), tanh MLP "
        "and C21's small CNN (1-D), η sweep; λ_max(H) by warm-started float64 Lanczos every "
        "eig_every steps."
    )
    reference = "Cohen et al. (ICLR 2021), Fig. 1: progressive sharpening and the edge of stability"
    ambiguities: ClassVar[dict[str, str]] = {
        "data": "CIFAR-10 5k replaced by mnist1d (n_train samples, offline); a crossing-step "
        "window in absolute steps is CIFAR-specific and replaced by the ordering claim C5",
        "bands": "Cohen et al.'s 'hovers right at, or just above, 2/η' is read as a "
        "post-crossing median of λ_max/(2/η) in [1.0, 1.1] and 95% of measurements in "
        "[0.95, 1.2] (reproduced); runs inside the wider [0.95, 1.15] / [0.9, 1.25] only are "
        "reported as adapted: on mnist1d the sharpness hovers slightly below 2/η between "
        "catapults and overshoots further right after the first crossing",
        "loss": "loss at the end < loss at the crossing",
        "seeds": "one run per (architecture, η, initialization seed); claims hold in every run "
        "and report medians and ranges over seeds",
        "architectures": "tanh MLP of width 100 (C21: 200) and the 2-conv CNN with 8 "
        "channels and tanh (C21: 32, relu) to fit the CPU budget; with 16 channels the CNN's "
        "initial sharpness (17.6) already exceeds 2/η for η ≥ 0.15, so GD starts beyond the "
        "edge (catapult) instead of sharpening progressively; with 8 channels the CNN hovers "
        "above the edge at large η (median 1.12·2/η at η = 0.15, 1.18 at η = 0.2, with 91% / "
        "76% of measurements in [0.9, 1.25]·2/η), so its sweep uses η ∈ {0.07, 0.1}",
    }
    config_cls = EoSConfig
    analysis = analyze_eos
    table = (
        "Edge-of-stability summary",
        ("crossing_step", "post_median_ratio", "post_fraction_in_band",
         "post_fraction_in_paper_band", "post_max_ratio", "loss_at_crossing", "loss_end"),
    )  # fmt: skip

    def specs(self, config: EoSConfig) -> list[RunSpec]:
        """One unit per (architecture, η, seed)."""
        out = []
        for arch in config.archs:
            lrs = config.lrs_mlp if arch == "mlp" else config.lrs_cnn
            out += grid_specs({"arch": [arch], "lr": lrs, "seed": config.seeds})
        return out

    def run_unit(self, config: EoSConfig, spec: RunSpec) -> Record:
        """Train one GD run with sharpness monitoring."""
        return _train_gd_eos(
            config, str(spec.params["arch"]), float(spec.params["lr"]), int(spec.params["seed"])
        )

    def draw(self, config: EoSConfig, results: Results) -> Figure:
        """C21 Fig 1: loss and sharpness vs step per architecture, dashed 2/η per η."""
        archs = [a for a in config.archs if any(r.get("arch") == a for r in results.values())]
        fig, axes = new_figure(max(1, len(archs)), 2)
        for j, arch in enumerate(archs):
            ax_l, ax_s = axes[0, j], axes[1, j]
            runs = sorted(
                (r for r in results.values() if r.get("arch") == arch),
                key=lambda r: (r["lr"], r.get("seed", 0)),
            )
            lrs = sorted({r["lr"] for r in runs})
            seeds = sorted({r.get("seed", 0) for r in runs})
            for r in runs:
                col = f"C{lrs.index(r['lr'])}"
                ls = ("-", ":", "-.", "--")[seeds.index(r.get("seed", 0)) % 4]
                lab = f"η = {r['lr']:g}, seed {r.get('seed', 0)}"
                if r.get("diverged"):
                    lab += " (diverged)"
                plot_recorded(ax_l, r["loss_steps"], r["loss"], color=col, ls=ls, lw=1, label=lab)
                plot_recorded(
                    ax_s, r["lambda_steps"], r["lambda_max"], color=col, ls=ls, lw=1, label=lab
                )
                if r.get("diverged"):
                    for ax in (ax_l, ax_s):
                        ax.axvline(r["steps_run"], color=col, ls=ls, lw=1.5, alpha=0.6)
                # 2/η: gd_threshold is the map x ↦ 2/x
                ax_s.axhline(gd_threshold(r["lr"]), color=col, ls="--", lw=0.8)
            ax_l.set_yscale("log")
            ax_l.set_title(f"{arch}: train loss")
            ax_l.set_xlabel("GD step")
            ax_s.set_title(f"{arch}: sharpness λ_max (dashed: 2/η)")
            ax_s.set_xlabel("GD step")
        return fig


@register
class EoSSGDBatch(CompanionExperiment):
    """SGD sharpness grows with B; exact generalized sharpness ≤ 1.1·2/η (Gram reduction)."""

    name = "eos/sgd-batch"
    title = "Edge of stability, SGD variant (C21 App. G): sharpness vs batch size"
    description = (
        "SGD (i.i.d. batches without replacement) at one η on mnist1d for several B and GD. "
        "λ_max(H) of the full training loss at the end (float64 Lanczos), and the exact MM23 "
        "generalized sharpness from the Gram matrix of the training set (10 outputs, nC×nC)."
    )
    reference = (
        "Cohen et al. (ICLR 2021), Appendix G (SGD); exact threshold of Mulayoff & Michaeli "
        "(COLT 2024)"
    )
    ambiguities: ClassVar[dict[str, str]] = {
        "data": "96 mnist1d training samples (CIFAR-10 5k with a 500-sample Gram subset at "
        "full scale) so that the Gram reduction runs on the whole training set (nC = 960) and "
        "is exact for the runs' own sampling scheme; B ∈ {4, 16, 64, GD} (full scale: 32, 128, "
        "512, 5000)",
        "subset": "with subset > 0 the η* of the m-sample sub-problem with p = 1/B is used as a "
        "proxy; it is biased upwards (λ_max(K_S) ≥ λ_max(K) on average, Jensen) — measured "
        "×1.36 for GD with m = 50 of 1000 — so GD then is excluded from claim B2",
        "near interpolation": "final ½-MSE ≤ loss_tol = 0.01 (the Gram criterion ignores the "
        "Hessian's residual term)",
    }
    config_cls = SGDBatchConfig
    analysis = analyze_sgd_batch

    def specs(self, config: SGDBatchConfig) -> list[RunSpec]:
        """One unit per (B, seed)."""
        return grid_specs({"B": config.batch_sizes, "seed": config.seeds}, {"B": _b_name})

    def run_unit(self, config: SGDBatchConfig, spec: RunSpec) -> Record:
        """Train one run, then measure λ_max(H) and the subset generalized sharpness."""
        B = int(spec.params["B"])
        seed = int(spec.params["seed"])
        X, y = _data(config.n_train, config.data_seed)
        model = _model("mlp", config.width, 8, seed)
        res = train(
            model,
            X,
            y,
            lr=config.lr,
            steps=config.steps,
            batch_size=None if B == 0 else B,
            sampling="without",
            seed=seed,
            dtype=torch.float64,
            stop_loss=None,
        )
        rep = sharpness(
            model,
            half_mse,
            (X, y),
            "lambda_max",
            curvature="hessian",
            method="lanczos",
            tol=1e-6,
            generator=torch.Generator().manual_seed(seed),
        )
        out: Record = {
            "B": B,
            "seed": seed,
            "lr": config.lr,
            "diverged": bool(res.diverged),
            "final_loss": finite(res.final_loss),
            "lambda_max": finite(rep.lambda_max.value) if rep.lambda_max else None,
            "lambda_converged": bool(rep.lambda_max.converged) if rep.lambda_max else False,
        }
        s_loss, v_loss = res.history.as_arrays("loss")
        idx = thin(list(range(len(s_loss))), MAX_POINTS)
        out["loss_steps"] = [int(s_loss[i]) for i in idx]
        out["loss"] = [finite(v_loss[i]) for i in idx]
        n = X.shape[0]
        m = n if config.subset <= 0 else min(config.subset, n)
        K = gram_float64(model, X[:m])
        out["subset"] = m
        if B == 0:
            gen = gram_spectrum(K).lambda_max  # GD: λ_max(C†D) = λ_max(K)
            out.update(subset_generalized_sharpness=gen, subset_method="gd")
        else:
            # exact for the run's own scheme on the whole set; p = 1/B proxy on a subset
            es = eta_star(K, B, "without" if m == n else "with", outputs=10)
            out.update(
                subset_generalized_sharpness=finite(es.generalized_sharpness),
                subset_method=es.method,
                subset_converged=bool(es.converged),
            )
        out["subset_lambda_max"] = gram_spectrum(K).lambda_max
        g = out["subset_generalized_sharpness"]
        out["subset_ratio"] = None if g is None else config.lr * g / 2.0
        return out

    def draw(self, config: SGDBatchConfig, results: Results) -> Figure:
        """λ_max(H) and subset λ_max(C†D) vs B with 2/η; loss curves."""
        fig, axes = new_figure(2)
        ax, ax2 = axes[0, 0], axes[0, 1]
        n = config.n_train
        rows = sorted(
            (((r["B"] or n), r.get("seed", 0)), r)
            for r in results.values()
            if r.get("lambda_max") is not None
        )
        for key, lab, mk in (
            ("lambda_max", "λ_max(H)", "o-"),
            ("subset_generalized_sharpness", "λ_max(C†D) (Gram reduction)", "s--"),
        ):
            by_b: dict[int, list[float]] = {}
            for (b, _), r in rows:
                if r.get(key) is not None:
                    by_b.setdefault(b, []).append(float(r[key]))
            if by_b:
                bs = sorted(by_b)
                med = [median(by_b[b]) for b in bs]
                err = [
                    [m - min(by_b[b]) for m, b in zip(med, bs)],
                    [max(by_b[b]) - m for m, b in zip(med, bs)],
                ]
                ax.errorbar(bs, med, yerr=err, fmt=mk, capsize=2, label=f"{lab}, median of seeds")
        for (b, _), r in rows:
            if r.get("diverged"):
                ax.scatter([b], [gd_threshold(config.lr)], marker="x", s=60, color="r")
        ax.axhline(gd_threshold(config.lr), color="k", ls="--", lw=0.8, label="2/η")
        ax.set_xscale("log")
        ax.set_xlabel("batch size B (n = GD)")
        ax.set_ylabel("curvature at the end")
        for c, (_b, r) in enumerate(rows):
            lab = f"B = {r['B'] or 'GD'}, seed {r.get('seed', 0)}"
            plot_recorded(
                ax2,
                r["loss_steps"],
                r["loss"],
                skip_zero=True,
                color=f"C{c}",
                lw=1,
                label=lab + (" (diverged)" if r.get("diverged") else ""),
            )
        ax2.set_yscale("log")
        ax2.set_xlabel("step")
        ax2.set_ylabel("train loss")
        return fig
