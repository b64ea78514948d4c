"""Wu, Wang & Su (NeurIPS 2022): the alignment property at minima of linear nets and RF models.

WWS22 prove the alignment of SGD noise for linear networks and random-feature models and use it
to bound ‖H‖_F at SGD-stable minima. With the ½-MSE, residuals r and K = JJᵀ/n, the alignment
factor is μ(θ) = Tr(Σ(θ)G(θ))/(2L(θ)‖G(θ)‖_F²) = [n rᵀDiag(K²)r − rᵀK²r]/(‖r‖²‖K‖_F²)
(:func:`dynstab.criteria.alignment_factor`).

**Linear networks, Gaussian inputs.** Every linear network f(x; θ) = β(θ)ᵀx (a linear model,
a diagonal linear net β = u⊙v (:class:`dynstab.models.DiagonalLinearNet`), a deep linear net)
has ∇_θ f(x) = A(θ)x with A = ∂β/∂θᵀ. For x ~ N(0, I_d) and a realizable teacher y = β*ᵀx,
the residual is r = wᵀx with w = β(θ) − β*, and Isserlis' theorem gives
Σ = A[(wᵀw)I + wwᵀ]Aᵀ ≽ 2L·G with G = AAᵀ, hence the population alignment

    μ_pop(θ) = 1 + ‖AᵀA w‖²/(‖w‖²‖AᵀA‖_F²) ∈ [1, 2],

i.e. the lower bound μ ≥ 1 (the alignment property with constant 1). We train each network by
GD with :func:`dynstab.training.train` to (near) a minimum and measure μ on the training set
(n i.i.d. samples) at the last iterate (L ≈ ``stop_loss``, the approach direction), with a
delta-method standard error over the samples, and μ_pop from A read off the model's
Jacobian at the basis vectors (:func:`dynstab.curvature.per_sample_jacobian`).

**Random-feature models.** f(x) = Σ_j a_j relu(w_jᵀx + b_j) + c with the first layer frozen
(:class:`dynstab.models.MLP`, ``requires_grad=False``), a realizable random-feature teacher; μ
at GD minima over widths m (the alignment does not degrade with the model size).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import nn

from dynstab.criteria import alignment_factor, alignment_infimum
from dynstab.curvature import per_sample_jacobian
from dynstab.data import gaussian_inputs
from dynstab.losses import half_mse
from dynstab.models import MLP, DiagonalLinearNet
from dynstab.norms import gram_spectrum
from dynstab.training import train
from dynstab_repro.base import Claim, RunSpec, graded_claim
from dynstab_repro.claim_stats import fmt, over_values
from dynstab_repro.companions.experiment import CompanionExperiment
from dynstab_repro.companions.minima import gram_float64
from dynstab_repro.companions.results import Overrides, Record, Results, finite
from dynstab_repro.config import ExperimentConfig
from dynstab_repro.figures import new_figure
from dynstab_repro.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LINEAR_ARCHS",
    "LinearAlignmentConfig",
    "WWS22LinearAlignment",
    "alignment_standard_error",
    "analyze_linear_alignment",
    "population_alignment_linear",
]

#: Linear-network architectures of the experiment.
LINEAR_ARCHS: tuple[str, ...] = ("linear", "diagonal", "deep-linear")


def population_alignment_linear(A: torch.Tensor, w: torch.Tensor) -> float:
    """Return μ_pop = 1 + ‖AᵀAw‖²/(‖w‖²‖AᵀA‖_F²), the alignment of a linear net at N(0, I) data.

    For f(x; θ) = β(θ)ᵀx with ∇_θ f(x) = A x (A of shape ``(P, d)``), inputs x ~ N(0, I_d) and
    residual r = wᵀx (w = β(θ) − β*), Isserlis' theorem gives Σ = A[(wᵀw)I + wwᵀ]Aᵀ and
    G = AAᵀ, so μ = Tr(ΣG)/(2L‖G‖_F²) equals the value returned; it lies in [1, 2].

    Args:
        A: Parameter Jacobian of β, shape ``(P, d)``.
        w: Coefficient error β(θ) − β*, shape ``(d,)``, nonzero.

    Returns:
        μ_pop as a float.

    Raises:
        ValueError: If ``w`` is zero or A is zero.

    Example:
        >>> round(population_alignment_linear(torch.eye(2), torch.tensor([1.0, 0.0])), 12)
        1.5
    """
    A64, w64 = A.to(torch.float64), w.to(torch.float64)
    M = A64.T @ A64
    nw, nM = float(w64 @ w64), float((M * M).sum())
    if nw == 0.0 or nM == 0.0:
        raise ValueError("population_alignment_linear needs w ≠ 0 and A ≠ 0.")
    Mw = M @ w64
    return 1.0 + float(Mw @ Mw) / (nw * nM)


def alignment_standard_error(J: torch.Tensor, r: torch.Tensor) -> float:
    """Delta-method standard error over the samples of the alignment factor μ.

    With G = JᵀJ/n, t_i = r_i² J_iᵀGJ_i and s_i = r_i² ‖G‖_F², μ ≈ mean(t)/mean(s) (the
    −rᵀK²r term is a product of two sample means and of lower order); the ratio of means has
    standard error std(t − μ̂ s)/(√n · mean(s)).

    Args:
        J: Per-sample Jacobians, shape ``(n, P)``.
        r: Residuals, shape ``(n,)``.

    Returns:
        The standard error (float).

    Example:
        >>> J = torch.eye(2, dtype=torch.float64); r = torch.tensor([1.0, 1.0], dtype=torch.float64)
        >>> alignment_standard_error(J, r)  # identical samples' terms: no spread
        0.0
    """
    J64, r64 = J.to(torch.float64), r.to(torch.float64).reshape(-1)
    n = J64.shape[0]
    G = J64.T @ J64 / n
    fro2 = float((G * G).sum())
    t = r64**2 * ((J64 @ G) * J64).sum(dim=1)
    s = r64**2 * fro2
    mu = float(t.mean() / s.mean())
    return float((t - mu * s).std(unbiased=True) / (math.sqrt(n) * s.mean())) if n > 1 else math.inf


@dataclasses.dataclass(frozen=True)
class LinearAlignmentConfig(ExperimentConfig):
    """Settings of ``wws22/linear-alignment``.

    Attributes:
        d: Input dimension (x ~ N(0, I_d)).
        n: Training samples of the linear networks.
        hidden: Hidden width of the deep linear net (two hidden layers).
        widths: Random-feature widths m.
        rf_samples_per_width: Training samples of the RF models = this × max(widths).
        lr_fraction: GD step η = lr_fraction/λ_max(K) at initialization.
        steps: Maximum GD steps.
        stop_loss: GD stops at this loss (μ is measured there, L > 0).
        rf_stop_loss: The same for the RF models. They are linear in the trained readout, so
            μ(θ) depends only on the residual direction and the population bound holds at every
            θ, not only near the minimum; a looser stop saves the slow final phase of GD on the
            ill-conditioned feature Gram matrix.
        seeds: Seeds (data, teacher, initialization).
        n_se: Number of standard errors allowed below the population bound.
        width_ratio_min: Smallest allowed μ(m)/μ(min width) for the RF width check.
    """

    d: int = 10
    n: int = 2000
    hidden: int = 10
    widths: tuple[int, ...] = (16, 64, 128)
    rf_samples_per_width: int = 16
    lr_fraction: float = 1.0
    steps: int = 20000
    stop_loss: float = 1e-10
    rf_stop_loss: float = 1e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    n_se: float = 3.0
    width_ratio_min: float = 0.5

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {
            "d": 4,
            "n": 300,
            "hidden": 4,
            "widths": (8, 16),
            "rf_samples_per_width": 8,
            "steps": 3000,
            "seeds": (0, 1),
        }
    }


def _linear_net(arch: str, config: LinearAlignmentConfig, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(10_000 + seed)
    d = config.d
    if arch == "linear":
        lin = nn.Linear(d, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64) / math.sqrt(d))
        return lin
    if arch == "diagonal":
        return DiagonalLinearNet(d, init_scale=1.0, generator=g, dtype=torch.float64)
    if arch == "deep-linear":
        h = config.hidden
        dims = [d, h, h, 1]
        layers = [
            nn.Linear(a, b, bias=False, dtype=torch.float64) for a, b in itertools.pairwise(dims)
        ]
        with torch.no_grad():
            for layer, a in zip(layers, dims):
                layer.weight.copy_(
                    torch.randn(layer.weight.shape, generator=g, dtype=torch.float64) / math.sqrt(a)
                )
        return nn.Sequential(*layers)
    raise ValueError(f"arch must be one of {LINEAR_ARCHS} or 'rf'; got {arch!r}.")


def _rf_net(d: int, m: int, seed: int) -> MLP:
    g = torch.Generator().manual_seed(20_000 + seed)
    net = MLP([d, m, 1], activation="relu", generator=g, dtype=torch.float64)
    first = cast(nn.Linear, net.layers[0])
    first.weight.requires_grad_(False)
    first.bias.requires_grad_(False)
    return net


def _outputs(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(X).reshape(-1)


def _fit(
    config: LinearAlignmentConfig,
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    stop_loss: float,
) -> Record:
    """GD to (near) a minimum; μ, its standard error, μ_inf at the last iterate."""
    K0 = gram_float64(model, X)
    lr = config.lr_fraction / gram_spectrum(K0).lambda_max
    res = train(
        model,
        X,
        y,
        lr=lr,
        steps=config.steps,
        stop_loss=stop_loss,
        loss_fn=lambda out, tgt: half_mse(out.reshape(-1), tgt.reshape(-1)),
        gradient="auto",
    )
    r = _outputs(model, X) - y
    K = gram_float64(model, X)
    J = per_sample_jacobian(model, X).reshape(X.shape[0], -1).to(torch.float64)
    out: Record = {
        "lr": lr,
        "steps_run": int(res.steps_run),
        "final_loss": finite(res.final_loss),
        "converged": bool(res.converged),
        "diverged": bool(res.diverged),
    }
    if not bool(torch.isfinite(r).all()) or float(r @ r) == 0.0:
        out.update(mu=None, mu_se=None, mu_inf=None, frobenius=None)
        return out
    out.update(
        mu=alignment_factor(K, r),
        mu_se=alignment_standard_error(J, r),
        mu_inf=alignment_infimum(K),
        frobenius=gram_spectrum(K).frobenius,
    )
    return out


def _run_linear(config: LinearAlignmentConfig, arch: str, seed: int) -> Record:
    g = torch.Generator().manual_seed(seed)
    X = gaussian_inputs(config.n, config.d, generator=g)
    beta = torch.randn(config.d, generator=g, dtype=torch.float64) / math.sqrt(config.d)
    y = X @ beta
    model = _linear_net(arch, config, seed)
    out = _fit(config, model, X, y, config.stop_loss)
    eye = torch.eye(config.d, dtype=torch.float64)
    A = per_sample_jacobian(model, eye).reshape(config.d, -1).to(torch.float64).T  # (P, d)
    w = _outputs(model, eye) - beta
    out["mu_pop"] = population_alignment_linear(A, w) if float(w @ w) > 0 else None
    out.update(arch=arch, seed=seed, n=config.n)
    return out


def _run_rf(config: LinearAlignmentConfig, width: int, seed: int) -> Record:
    g = torch.Generator().manual_seed(seed)
    n = config.rf_samples_per_width * max(config.widths)
    X = gaussian_inputs(n, config.d, generator=g) / math.sqrt(config.d)
    model = _rf_net(config.d, width, seed)
    teacher = _rf_net(config.d, width, seed)
    with torch.no_grad():  # same frozen features, an independent random readout
        cast(nn.Linear, teacher.layers[1]).weight.copy_(
            torch.randn(1, width, generator=g, dtype=torch.float64) / math.sqrt(width)
        )
    y = _outputs(teacher, X)
    out = _fit(config, model, X, y, config.rf_stop_loss)
    out.update(arch="rf", width=width, seed=seed, n=n)
    return out


def analyze_linear_alignment(config: LinearAlignmentConfig, results: Results) -> list[Claim]:
    """Claims of ``wws22/linear-alignment``.

    * LA1: at every linear-network minimum, μ ≥ 1 − ``n_se`` standard errors (bound μ ≥ 1).
    * LA2 (adapted): RF minima keep μ bounded below uniformly in the width: the median μ at
      every width ≥ ``width_ratio_min`` × the median at the smallest width, and > 0 by more
      than ``n_se`` standard errors.
    """
    claims: list[Claim] = []
    lin = [r for r in results.values() if r.get("arch") in LINEAR_ARCHS]
    expected = len(LINEAR_ARCHS) * len(config.seeds)
    ok_runs = [
        r
        for r in lin
        if r.get("converged") and r.get("mu") is not None and r.get("mu_se") is not None
    ]
    margins = [(r["mu"] - 1.0) / r["mu_se"] if r["mu_se"] > 0 else math.inf for r in ok_runs]
    holds = len(ok_runs) == expected and all(m >= -config.n_se for m in margins)
    mus = [r["mu"] for r in ok_runs]
    pops = [r["mu_pop"] for r in ok_runs if r.get("mu_pop")]
    med_mu = over_values(mus, over="minima").value
    failed_runs = expected - len(ok_runs)
    claims.append(
        graded_claim(
            "LA1",
            "At minima of linear networks the alignment factor is at least the proven bound",
            rule=f"all {expected} linear-net runs converge, and at each minimum μ ≥ 1 − "
            f"{config.n_se:g}·SE (delta-method SE over the samples)",
            reproduced=holds,
            paper="Σ(θ) ≽ 2L(θ)·G(θ) for linear networks at Gaussian inputs, i.e. μ ≥ 1",
            source="WWS22, alignment property for linear networks (Sec. 3)",
            measurement=over_values(mus, "μ over linear-net minima", over="minima"),
            measured=(
                f"μ median {fmt(med_mu)}, min {fmt(min(mus, default=None))} over {len(ok_runs)} "
                f"minima ({failed_runs} runs not converged or without a value); smallest "
                f"(μ − 1)/SE = {fmt(min(margins, default=None))}; population μ ∈ "
                f"[{fmt(min(pops, default=None))}, {fmt(max(pops, default=None))}]"
            ),
        )
    )
    rf = [
        r
        for r in results.values()
        if r.get("arch") == "rf" and r.get("converged") and r.get("mu") is not None
    ]
    by_w = {m: [r for r in rf if r.get("width") == m] for m in config.widths}
    med = {m: over_values([r["mu"] for r in rs]) for m, rs in by_w.items()}
    w0 = min(config.widths)
    ratios = {m: med[m].value / med[w0].value for m in config.widths if med[w0].value > 0}
    positive = all(r["mu"] > config.n_se * (r["mu_se"] or math.inf) for r in rf)
    holds_rf = (
        len(rf) == len(config.widths) * len(config.seeds)
        and len(ratios) == len(config.widths)
        and all(v >= config.width_ratio_min for v in ratios.values())
        and positive
    )
    claims.append(
        Claim(
            "LA2",
            "At minima of random-feature models the alignment stays bounded below as the width "
            "grows",
            criterion=f"median μ(m) ≥ {config.width_ratio_min:g}·median μ(m = {w0}) at every "
            f"width, and μ > {config.n_se:g}·SE in every run",
            status="adapted" if holds_rf else "failed",
            paper="μ ≥ c > 0 for random-feature models, c independent of the width",
            source="WWS22, alignment property for random-feature models (Sec. 3)",
            note="the constant c of WWS22's random-feature theorem could not be checked "
            "offline; the rule tests its width independence instead",
            measured="; ".join(f"m = {m}: {med[m]}" for m in config.widths),
        )
    )
    return claims


@register
class WWS22LinearAlignment(CompanionExperiment):
    """μ at minima of linear nets (vs the proven bound 1) and of random-feature models."""

    name = "wws22/linear-alignment"
    title = "WWS22: alignment factor at minima of linear networks and random-feature models"
    description = (
        "GD to (near) minima of a linear model, a diagonal linear net and a deep linear net on "
        "Gaussian inputs with a realizable linear teacher, and of ReLU random-feature models "
        "(first layer frozen) over widths; μ on the training set at the last iterate with a "
        "delta-method standard error, the population μ of the linear nets, μ_inf = worst case "
        "over residual directions."
    )
    reference = (
        "Wu, Wang & Su (NeurIPS 2022), the alignment property of SGD noise, proven for linear "
        "networks and random-feature models"
    )
    ambiguities: ClassVar[dict[str, str]] = {
        "constant": "the full text of WWS22 was not available offline; the linear-network bound "
        "μ ≥ 1 (Σ ≽ 2L·G at Gaussian inputs) is derived here by Isserlis' theorem, the constant "
        "of WWS22's random-feature theorem is not checked (the RF claim tests width "
        "independence instead, marked adapted)",
        "data": "x ~ N(0, I_d), realizable teachers (linear for the linear nets, a random "
        "readout of the same frozen features for RF), inputs scaled by 1/√d for RF",
        "where": "μ is measured at the last GD iterate (L ≈ stop_loss > 0): the direction from "
        "which GD approaches the minimum; μ_inf (worst direction) is reported alongside",
    }
    config_cls = LinearAlignmentConfig
    analysis = analyze_linear_alignment
    table = (
        "Alignment at minima",
        ("arch", "width", "seed", "n", "final_loss", "mu", "mu_se", "mu_pop", "mu_inf"),
    )

    def specs(self, config: LinearAlignmentConfig) -> list[RunSpec]:
        """One unit per (linear architecture, seed) and per (RF width, seed)."""
        out = [
            RunSpec(f"arch={a}_seed={s}", {"arch": a, "seed": s})
            for a in LINEAR_ARCHS
            for s in config.seeds
        ]
        out += [
            RunSpec(f"arch=rf_width={m}_seed={s}", {"arch": "rf", "width": m, "seed": s})
            for m in config.widths
            for s in config.seeds
        ]
        return out

    def run_unit(self, config: LinearAlignmentConfig, spec: RunSpec) -> Record:
        """Train one network to a minimum and measure the alignment there."""
        if spec.params["arch"] == "rf":
            return _run_rf(config, int(spec.params["width"]), int(spec.params["seed"]))
        return _run_linear(config, str(spec.params["arch"]), int(spec.params["seed"]))

    def draw(self, config: LinearAlignmentConfig, results: Results) -> Figure:
        """μ (±3 SE) per linear net vs the bound 1; μ vs width for RF models."""
        fig, axes = new_figure(2)
        ax0, ax1 = axes[0, 0], axes[0, 1]
        for j, arch in enumerate(LINEAR_ARCHS):
            runs = [r for r in results.values() if r.get("arch") == arch and r.get("mu")]
            for r in runs:
                ax0.errorbar(
                    j + 0.05 * r["seed"],
                    r["mu"],
                    yerr=config.n_se * (r["mu_se"] or 0.0),
                    fmt="o",
                    color=f"C{j}",
                    ms=4,
                )
                if r.get("mu_pop"):
                    ax0.plot(j + 0.05 * r["seed"] + 0.2, r["mu_pop"], "x", color=f"C{j}")
        ax0.axhline(1.0, color="k", ls="--", lw=0.8, label="bound μ ≥ 1")
        ax0.set_xticks(range(len(LINEAR_ARCHS)), list(LINEAR_ARCHS))
        ax0.set_ylabel("μ at the minimum (o: data, x: population)")
        for s in config.seeds:
            pts = sorted(
                (r["width"], r["mu"])
                for r in results.values()
                if r.get("arch") == "rf" and r.get("seed") == s and r.get("mu")
            )
            if pts:
                ax1.plot(*zip(*pts), "o-", lw=1, label=f"seed {s}")
        ax1.set_xscale("log")
        ax1.set_xlabel("random-feature width m")
        ax1.set_ylabel("μ at the minimum")
        ax1.set_ylim(bottom=0.0)
        return fig
