"""Mulayoff, Michaeli & Soudry (NeurIPS 2021): stability of non-differentiable (kink) minima.

A univariate ReLU net f(x) = Σ_i w2_i σ(w1_i x + b1_i) + b2 (:class:`dynstab.models.UnivariateReLU`)
whose knot sits exactly on a training input is not twice differentiable there: near θ* the
½-MSE loss is a *switching system* of smooth mode losses ψ_m, one per activation pattern of the
(neuron, sample) pairs on the knot (here one pair: two modes, the sample counted as active or
inactive). MMS21 (Sec. 3) model GD near such a minimum as θ_{t+1} − θ* = (I − ηH_m)(θ_t − θ*)
with the mode m of the current iterate and prove:

* **instability**: if the mode Hessians share an approximate eigenvector q
  (‖H_m q − λ_m q‖ ≤ δ for all m) and λ_lower = min_m λ_m > 2/η + δ + γ/ε, with
  γ = max_m |qᵀ∇ψ_m(θ*)|, the minimum is not strongly stable (GD started ε-close leaves);
* **stability** (for GD): if max_m λ_max(H_m) ≤ 2/η, every mode map is non-expansive and the
  minimum is strongly stable.

Construction: data on a uniform grid containing 0; a 3-neuron net with one knot at the data
point x = 0 (w1 = c, b1 = 0, w2 = a/c) and two knots between data points; labels y = f(x), so
θ* is an exact interpolating global minimum. The balance c moves λ across 2/η without changing
f. At θ* the mode Hessians are H_m = J_mᵀJ_m/n (exact: the residuals vanish), with J_m the
one-sided Jacobian of mode m, read off :func:`dynstab.curvature.per_sample_jacobian` an
``offset`` inside each mode's region (error O(offset)); both lemmas are evaluated by
:func:`dynstab.criteria.switching_lemma` (q among the top eigenvectors of the H_m and of their
mean, the one with the largest λ_lower − δ). Then GD
(:func:`dynstab.training.train`) runs from θ* + ε·ξ (ξ uniform on the sphere, one per seed)
and the distance ‖θ_t − θ*‖ is recorded every step (:class:`dynstab.training.NormMonitor`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, ClassVar

import torch

from dynstab.criteria import switching_lemma
from dynstab.curvature import per_sample_jacobian
from dynstab.models import MLP, UnivariateReLU
from dynstab.training import NormMonitor, train
from dynstab_repro.base import Claim, RunSpec, graded_claim
from dynstab_repro.claim_stats import over_values
from dynstab_repro.companions.experiment import CompanionExperiment
from dynstab_repro.companions.results import (
    MAX_POINTS,
    Overrides,
    Record,
    Results,
    finite,
    thin,
)
from dynstab_repro.companions.scalar_nets import ScalarTaskConfig, scalar_task
from dynstab_repro.config import ExperimentConfig
from dynstab_repro.figures import new_figure
from dynstab_repro.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MNIST_NOTE",
    "KinkConfig",
    "MMS21Kink",
    "analyze_kink",
    "kink_minimum",
    "mnist_kink_minimum",
    "mode_hessians",
]


@dataclasses.dataclass(frozen=True)
class KinkConfig(ExperimentConfig):
    """Settings of ``mms21/kink``.

    Attributes:
        n: Training inputs: a uniform grid on [−1, 1] (odd, so that 0 is a data point) or,
            with ``dataset="mnist"``, the first ``n`` MNIST images of the digits 3 and 8.
        jump: Slope jump a of the knot on the data point (x = 0, or the first image).
        balances: Balances c of the kink neuron (w1 = c·u, w2 = a/c): one minimum each.
        dataset: ``"grid"`` (MMS21's univariate setting, default) or ``"mnist"`` (an adapted
            real-data setting: :func:`mnist_kink_minimum`).
        data: Folder of the MNIST IDX files (``dataset="mnist"`` only).
        hidden: Hidden ReLU units of the MNIST net (the kink neuron and ``hidden − 1`` units
            whose knots avoid the data).
        pool: Side of the average pooling of the 28×28 MNIST images (4: 7×7 = 49 inputs).
        lr: GD learning rate η.
        radius: ε, the distance of the GD start from θ*.
        steps: GD steps from the perturbed start.
        offset: Distance into each mode's region at which its one-sided Jacobian is read.
        escape_factor: "Escaped" when max_t ‖θ_t − θ*‖ ≥ escape_factor·ε.
        stay_factor: "Stayed" when max_t ‖θ_t − θ*‖ ≤ stay_factor·ε.
        seeds: Seeds of the perturbation direction.
    """

    n: int = 7
    jump: float = 1.0
    balances: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    lr: float = 0.5
    radius: float = 1e-4
    steps: int = 3000
    offset: float = 1e-10
    escape_factor: float = 100.0
    stay_factor: float = 2.0
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset: str = "grid"
    data: str = ""
    hidden: int = 4
    pool: int = 4

    PROFILES: ClassVar[dict[str, Overrides]] = {
        "quick": {"balances": (0.25, 1.0, 2.0, 4.0), "steps": 600, "seeds": (0, 1)},
        # MNIST subset (adapted: MMS21's experiments are univariate); run with --set data=PATH
        "mnist": {
            "dataset": "mnist",
            "n": 64,
            "jump": 1.0,
            "balances": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
            "lr": 0.5,
            "steps": 300,
        },
    }

    def validate(self) -> None:
        """Check the data source before any work.

        Raises:
            ValueError: For an unknown ``dataset``, or ``dataset="mnist"`` without an existing
                ``data`` folder.
        """
        if self.dataset not in ("grid", "mnist"):
            raise ValueError(f"dataset must be 'grid' or 'mnist'; got {self.dataset!r}.")
        if self.dataset == "mnist":
            ScalarTaskConfig(dataset="mnist", data=self.data).validate()


def kink_minimum(
    config: KinkConfig, balance: float
) -> tuple[UnivariateReLU, torch.Tensor, torch.Tensor]:
    """The constructed interpolating minimum with a knot on the data point x = 0.

    Neurons: (w1, b1, w2) = (c, 0, a/c) (knot at 0, on a data point), (1, 0.5, 1) (knot at
    −0.5) and (−1, 0.5, −1) (knot at 0.5), b2 = 0, on a grid of ``n`` points on [−1, 1] that
    must avoid ±0.5.

    Returns:
        ``(net, X, y)`` with X of shape ``(n, 1)`` and y = f(X) (exact interpolation).

    Raises:
        ValueError: If ``n`` is even (0 would not be a data point) or ±0.5 is a data point.
    """
    if config.n % 2 == 0:
        raise ValueError(f"n must be odd so that x = 0 is a data point; got {config.n}.")
    x = torch.linspace(-1.0, 1.0, config.n, dtype=torch.float64)
    if bool(((x.abs() - 0.5).abs() < 1e-9).any()):
        raise ValueError(
            f"n = {config.n} puts a data point at ±0.5, where the other two knots are; "
            "choose n with (n − 1)/4 not an integer, e.g. 7 or 11."
        )
    x[config.n // 2] = 0.0
    c, a = float(balance), float(config.jump)
    net = UnivariateReLU(3, dtype=torch.float64)
    with torch.no_grad():
        net.w1.copy_(torch.tensor([c, 1.0, -1.0], dtype=torch.float64))
        net.b1.copy_(torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
        net.w2.copy_(torch.tensor([a / c, 1.0, -1.0], dtype=torch.float64))
        net.b2.zero_()
        y = net(x)
    return net, x.reshape(-1, 1), y


def mnist_kink_minimum(
    config: KinkConfig, balance: float
) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """An interpolating minimum of a one-hidden-layer ReLU net on MNIST with a knot on an image.

    Inputs: the first ``n`` training images of the digits 3 and 8 (:func:`~.scalar_nets.
    scalar_task`), average-pooled ``pool``×``pool`` and scaled to unit norm (d = 49 for
    pool = 4, so that the P×P mode Hessians stay small). Net ``MLP([d, hidden, 1], "relu")``:
    the kink neuron w1 = c·u, b1 = −w1ᵀx₀, w2 = a/c with u the unit vector from the first
    image x₀ towards the mean image (its knot hyperplane passes through x₀; the images on the
    side of the mean are active), and ``hidden − 1`` units with Gaussian weights
    (``torch.Generator().manual_seed(0)``), each with its bias in the middle of the widest gap
    between consecutive sorted pre-activations of the middle half of the data (its knot
    between data points, as far from them as possible), output weights ±1,
    output bias 0. Labels y = f(X): θ* interpolates exactly and only x₀ sits on a knot. The
    balance c changes the curvature, not f (c > 0).

    Returns:
        ``(net, X, y)`` with X of shape ``(n, d)`` and y of shape ``(n,)``.
    """
    X, _ = scalar_task("mnist", config.n, classes=(3, 8), path=config.data)
    side = 28 // config.pool
    X = torch.nn.functional.avg_pool2d(X.reshape(-1, 1, 28, 28), config.pool).reshape(
        -1, side * side
    )
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d, h = X.shape[1], config.hidden
    g = torch.Generator().manual_seed(0)
    W = torch.randn(h, d, generator=g, dtype=torch.float64)
    b = torch.zeros(h, dtype=torch.float64)
    quarter = max(X.shape[0] // 4, 1)
    for j in range(1, h):
        pre = torch.sort(X @ W[j]).values[quarter - 1 : X.shape[0] - quarter + 1]
        k = int(torch.argmax(pre[1:] - pre[:-1]))  # the widest gap in the middle half
        b[j] = -0.5 * float(pre[k] + pre[k + 1])
    u = X.mean(dim=0) - X[0]
    W[0] = balance * u / torch.linalg.vector_norm(u)
    w2 = torch.tensor([config.jump / balance] + [(-1.0) ** j for j in range(1, h)])
    net = MLP([d, h, 1], activation="relu", dtype=torch.float64)
    net.load_state_dict(
        {
            "layers.0.weight": W,
            "layers.0.bias": b,
            "layers.1.weight": w2.to(torch.float64)[None, :],
            "layers.1.bias": torch.zeros(1, dtype=torch.float64),
        }
    )
    hidden = _hidden_layer(net)
    with torch.no_grad():  # put x₀ on the knot with the net's own arithmetic
        hidden.bias[0] -= hidden(X[:1])[0, 0]
        y = net(X).reshape(-1)
    return net, X, y


def _hidden_layer(net: torch.nn.Module) -> torch.nn.Linear:
    layer = net.get_submodule("layers.0")
    assert isinstance(layer, torch.nn.Linear)
    return layer


def _kink_bias(net: torch.nn.Module) -> torch.Tensor:
    """The bias vector of the hidden layer; entry 0 is the kink neuron's."""
    return net.b1 if isinstance(net, UnivariateReLU) else _hidden_layer(net).bias


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def mode_hessians(
    net: UnivariateReLU | MLP, X: torch.Tensor, y: torch.Tensor, offset: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mode Hessians J_mᵀJ_m/n and gradients J_mᵀr/n of the two modes of the kink neuron.

    The kink neuron is hidden unit 0 (its knot on one data point); each mode's one-sided
    Jacobian is read with that unit's bias moved by ±``offset``.
    """
    n = X.shape[0]
    Hs, gs = [], []
    for sign in (1.0, -1.0):  # the sample on the knot active (+) or inactive (−) for unit 0
        probe = copy.deepcopy(net)
        with torch.no_grad():
            _kink_bias(probe)[0] += sign * offset
            r = net(X).reshape(-1) - y.reshape(-1)
        J = per_sample_jacobian(probe, X).reshape(n, -1).to(torch.float64)
        Hs.append(J.T @ J / n)
        gs.append(J.T @ r / n)
    return Hs, gs


def _run(config: KinkConfig, balance: float, seed: int) -> Record:
    net: UnivariateReLU | MLP
    if config.dataset == "mnist":
        net, X, y = mnist_kink_minimum(config, balance)
    else:
        net, X, y = kink_minimum(config, balance)
    Hs, gs = mode_hessians(net, X, y, config.offset)
    lem = switching_lemma(Hs, gs, config.lr, config.radius)
    theta_star = _flat(net)
    g = torch.Generator().manual_seed(seed)
    xi = torch.randn(theta_star.shape, generator=g, dtype=torch.float64)
    start = theta_star + config.radius * xi / torch.linalg.vector_norm(xi)
    with torch.no_grad():
        i = 0
        for p in net.parameters():
            p.copy_(start[i : i + p.numel()].reshape(p.shape))
            i += p.numel()
    mon = NormMonitor(
        "distance", fn=lambda m: float(torch.linalg.vector_norm(_flat(m) - theta_star)), every=1
    )
    res = train(
        net,
        X,
        y,
        lr=config.lr,
        steps=config.steps,
        stop_loss=None,
        monitors=[mon],
        divergence_threshold=1e6,
        gradient="auto",
    )
    s, v = res.history.as_arrays("distance")
    dist = [finite(d) for d in v]
    finite_d = [d for d in dist if d is not None]
    dmax = max(finite_d) if finite_d else None
    escaped = bool(res.diverged) or (
        dmax is not None and dmax >= config.escape_factor * config.radius
    )
    stayed = (not res.diverged) and dmax is not None and dmax <= config.stay_factor * config.radius
    idx = thin(list(range(len(s))), MAX_POINTS)
    return {
        "balance": balance,
        "seed": seed,
        "lambdas": list(lem.lambdas),
        "lambda_lower": lem.lambda_lower,
        "delta": lem.delta,
        "gamma": lem.gamma,
        "lambda_max_modes": list(lem.lambda_max_modes),
        "edge": 2.0 / config.lr,
        "prediction": lem.prediction,
        "max_distance_over_radius": (dmax / config.radius) if dmax is not None else None,
        "final_distance_over_radius": (finite_d[-1] / config.radius) if finite_d else None,
        "escaped": escaped,
        "stayed": stayed,
        "diverged": bool(res.diverged),
        "final_loss": finite(res.final_loss),
        "steps": [int(s[i]) for i in idx],
        "distance": [dist[i] for i in idx],
        "outcome": "diverged"
        if res.diverged
        else ("escaped" if escaped else ("stayed" if stayed else "ok")),
    }


#: Why the MNIST profile is an adaptation.
MNIST_NOTE = (
    "adapted to real data: MMS21 analyse single-hidden-layer ReLU nets on scalar inputs and, by "
    "their abstract (the full text was not available offline), report no MNIST experiment (the "
    "MNIST experiment of this line of work is Nacson et al., ICLR 2023, on the multivariate "
    "bound); the switching-system lemmas hold for any ReLU net, so they are tested at a "
    "constructed minimum of a one-hidden-layer ReLU net on an MNIST subset (images pooled to "
    "7×7, labels = the net's own outputs so that the knot sits exactly on one image)"
)


def analyze_kink(config: KinkConfig, results: Results) -> list[Claim]:
    """Claims of ``mms21/kink``.

    * K1: every run at a minimum predicted not strongly stable escapes (≥ 1 such minimum).
    * K2: every run at a minimum predicted strongly stable stays within ``stay_factor``·ε
      (≥ 1 such minimum).

    Both are ``adapted`` (not ``reproduced``) when they hold on MNIST (:data:`MNIST_NOTE`).
    """
    expected = len(config.balances) * len(config.seeds)
    adapted = config.dataset == "mnist"
    runs = list(results.values())
    claims: list[Claim] = []
    for cid, pred, key, paper, statement in (
        (
            "K1",
            "escape",
            "escaped",
            "not strongly stable when λ_lower > 2/η + δ + γ/ε",
            "A kink minimum whose modes share a direction of curvature above 2/η is left by GD",
        ),
        (
            "K2",
            "stay",
            "stayed",
            "strongly stable for GD when max_m λ_max(H_m) ≤ 2/η",
            "A kink minimum whose every mode is flat enough keeps GD within O(ε)",
        ),
    ):
        sel = [r for r in runs if r["prediction"] == pred]
        agree = [r for r in sel if r[key]]
        ratio = [r["max_distance_over_radius"] for r in sel]
        spread = over_values(ratio, over="runs")
        holds = len(runs) == expected and bool(sel) and len(agree) == len(sel)
        claims.append(
            graded_claim(
                cid,
                statement,
                rule=(
                    f"every run predicted '{pred}' (≥ 1) has max_t ‖θ_t − θ*‖ "
                    + (
                        f"≥ {config.escape_factor:g}ε (or diverges)"
                        if pred == "escape"
                        else f"≤ {config.stay_factor:g}ε"
                    )
                ),
                reproduced=holds and not adapted,
                adapted=holds,
                adapted_note=MNIST_NOTE,
                paper=paper,
                source="MMS21, Sec. 3 (switching-system lemmas for non-differentiable minima)",
                measurement=over_values(ratio, "max ‖θ_t − θ*‖/ε", over="runs"),
                measured=(
                    f"{len(agree)}/{len(sel)} runs agree at balances "
                    f"{sorted({r['balance'] for r in sel})}; max ‖θ_t − θ*‖/ε: "
                    f"{spread}"
                    f"; {sum(r['diverged'] for r in sel)} diverged"
                ),
            )
        )
    return claims


@register
class MMS21Kink(CompanionExperiment):
    """Kink minima: the switching-system lemma's prediction vs GD from ε-perturbations."""

    name = "mms21/kink"
    title = "MMS21: non-differentiable minima (knot on a data point) as switching systems"
    description = (
        "Interpolating minima of a 3-neuron univariate ReLU net with a knot on the data point "
        "x = 0, over the balance of the kink neuron; mode Hessians at θ*, the switching "
        "lemma's prediction (escape / stay / undetermined) and GD started ε away from θ*."
    )
    reference = (
        "Mulayoff, Michaeli & Soudry (NeurIPS 2021), Sec. 3: stability of non-differentiable "
        "minima (switching-system lemmas)"
    )
    ambiguities: ClassVar[dict[str, str]] = {
        "lemma": "MMS21's instability lemma (not strongly stable when λ_lower > 2/η + δ + γ/ε) "
        "and its GD stability counterpart (max_m λ_max(H_m) ≤ 2/η); the lemma numbering differs "
        "between versions of the paper",
        "q": "the approximate common eigenvector q is the best (largest λ_lower − δ) of the top "
        "eigenvectors of each mode Hessian and of their mean",
        "rules": "escape = max_t ‖θ_t − θ*‖ ≥ 100ε (or divergence), stay = max_t ‖θ_t − θ*‖ ≤ "
        "2ε: strong stability bounds the whole trajectory; ε = 1e-4 keeps second-order terms "
        "≈ 1e-4 relative",
        "construction": "minima constructed by hand (labels = the net's own outputs), not found "
        "by training",
    }
    config_cls = KinkConfig
    analysis = analyze_kink
    table = (
        "Kink minima",
        ("balance", "seed", "lambda_lower", "delta", "gamma", "lambda_max_modes", "edge",
         "prediction", "max_distance_over_radius", "outcome"),
    )  # fmt: skip

    def specs(self, config: KinkConfig) -> list[RunSpec]:
        """One unit per (balance, seed)."""
        return [
            RunSpec(f"c={c:g}_seed={s}", {"balance": c, "seed": s})
            for c in config.balances
            for s in config.seeds
        ]

    def run_unit(self, config: KinkConfig, spec: RunSpec) -> Record:
        """Build the minimum, evaluate the lemma, run GD from a perturbation."""
        return _run(config, float(spec.params["balance"]), int(spec.params["seed"]))

    def draw(self, config: KinkConfig, results: Results) -> Figure:
        """λ per mode vs balance with 2/η; ‖θ_t − θ*‖/ε vs step, coloured by prediction."""
        fig, axes = new_figure(2)
        ax0, ax1 = axes[0, 0], axes[0, 1]
        per_c = {r["balance"]: r for r in results.values()}
        cs = sorted(per_c)
        for m, name in enumerate(("active", "inactive")):
            ax0.plot(
                cs, [per_c[c]["lambda_max_modes"][m] for c in cs], "o-", label=f"λ_max, {name}"
            )
        ax0.plot(
            cs,
            [per_c[c]["lambda_lower"] - per_c[c]["delta"] for c in cs],
            "k^--",
            label="λ_lower − δ",
        )
        ax0.axhline(2.0 / config.lr, color="r", ls=":", label="2/η")
        ax0.set_yscale("log")
        ax0.set_xlabel("balance c of the kink neuron")
        ax0.set_ylabel("curvature")
        colours = {"escape": "C3", "stay": "C2", "undetermined": "C7"}
        for r in results.values():
            pts = [(s, d / config.radius) for s, d in zip(r["steps"], r["distance"]) if d]
            if pts:
                ax1.plot(*zip(*pts), color=colours[r["prediction"]], lw=0.8)
        for p, col in colours.items():
            ax1.plot([], [], color=col, label=f"predicted: {p}")
        ax1.axhline(config.escape_factor, color="k", ls="--", lw=0.6)
        ax1.axhline(config.stay_factor, color="k", ls=":", lw=0.6)
        ax1.set_yscale("log")
        ax1.set_xlabel("GD step")
        ax1.set_ylabel("‖θ_t − θ*‖/ε")
        return fig
