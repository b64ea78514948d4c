"""Result records of the stability criteria (frozen dataclasses, float64 numbers).

One module for every result type, so that the problem object (:mod:`~dynstab.criteria.problem`)
and the one-call functions of the other modules share them without import cycles.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["BoundRow", "EtaStarResult", "LyapunovResult", "RankOneBoundResult", "StabilityReport"]


@dataclass(frozen=True)
class EtaStarResult:
    """Exact mean-square threshold of linearized SGD at an interpolating minimum.

    Attributes:
        eta_star: η* = 2/λ_max(C†D) (``inf`` when K = 0).
        generalized_sharpness: λ_max(C†D) = 2/η*.
        method: Eigen-solver of the ρ(ρ+1)/2-dimensional symmetric problem: ``"dense"`` or
            ``"matrix_free"`` (Lanczos).
        converged: False when Lanczos stopped at ``max_iters`` above its tolerance.
        num_matvecs: Applications of the ρ×ρ operator (0 for dense).
        rank: ρ, the rank of K (= rank of H) kept by the ``rank_tol`` cut.
        p: Mixture weight of the sampling scheme.
        residual: Relative Ritz residual ‖AX − θX‖/θ (0 for dense).
        route: How the row-space coordinates were obtained: ``"gram"`` (eigenvectors of the
            nC×nC Gram matrix K = JJᵀ/n) or ``"parameter"`` (eigenvectors of the p×p matrix
            H = JᵀJ/n and Ĝ = JV). Both give the same η*.
        route_reason: Why that route was taken (cost model or what was given).
        num_params: Number of parameters measured (``None`` when only K was given).
        param_names: Names of the parameters measured, as the curvature resolver lists them
            (``None`` when only K or bare Jacobians were given).
        momentum: Heavy-ball momentum β (0: plain SGD). With β > 0, ``generalized_sharpness``
            is 2/η*, ``num_matvecs`` counts evaluations of the reduced criterion and
            ``residual`` is ρ(K_η*) − 1 at the root (:mod:`dynstab.criteria.momentum`).
        nesterov: Whether PyTorch's Nesterov form was analysed.
        eta_gd: The GD threshold of the same optimizer: 2/λ_max, 2(1 + β)/λ_max with heavy-ball
            momentum, (2 + 2β)/((1 + 2β)λ_max) with Nesterov (None when not computed).
    """

    eta_star: float
    generalized_sharpness: float
    method: str
    converged: bool
    num_matvecs: int
    rank: int
    p: float
    residual: float
    route: str = "gram"
    route_reason: str = ""
    num_params: int | None = None
    param_names: tuple[str, ...] | None = None
    momentum: float = 0.0
    nesterov: bool = False
    eta_gd: float | None = None


@dataclass(frozen=True)
class RankOneBoundResult:
    """MM23's rank-one bound (24), maximised by Riemannian ascent on the unit sphere.

    Attributes:
        eta_bound: 2/F_best ≥ η* (an upper bound on η*).
        value: F_best = max over restarts of F(v) ≤ λ_max(C†D) = 2/η*.
        num_iters: Ascent iterations used (max over restarts).
        converged: Whether every restart met the relative-improvement tolerance.
    """

    eta_bound: float
    value: float
    num_iters: int
    converged: bool


@dataclass(frozen=True)
class LyapunovResult:
    """Top Lyapunov exponent of linearized SGD, estimated by simulation with renormalisation.

    Attributes:
        exponent: λ₁ per step (of log‖δ_t‖), mean over runs.
        growth_factor: exp(λ₁), the typical per-step growth of ‖δ_t‖ (≤ √ρ(Q) by Jensen).
        stderr: Standard error of ``exponent`` across independent runs.
        num_steps: Steps per run (after burn-in).
        num_runs: Independent runs.
    """

    exponent: float
    growth_factor: float
    stderr: float
    num_steps: int
    num_runs: int


@dataclass(frozen=True)
class BoundRow:
    """One criterion of the verdict table.

    Attributes:
        name: Short key (``"gd"``, ``"sgd_exact"``, ``"trace"``, ...).
        condition: The condition in words/symbols, e.g. ``"Tr H ≤ 2C/(qη)"``.
        kind: ``"exact"``, ``"necessary"`` or ``"sufficient"``.
        value: The curvature quantity it constrains (λ_max, Tr, ‖·‖_F, F, ...).
        eta_threshold: The largest η the condition allows.
        margin: lr/eta_threshold (≤ 1: condition holds).
    """

    name: str
    condition: str
    kind: str
    value: float
    eta_threshold: float
    margin: float

    @property
    def holds(self) -> bool:
        """Whether the condition holds at the report's lr (margin ≤ 1)."""
        return self.margin <= 1.0


@dataclass(frozen=True)
class StabilityReport:
    """Verdict on the linear stability of GD and SGD at a (presumed interpolating) minimum.

    Attributes:
        lr: Learning rate η.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        n: Number of samples.
        outputs: Number of outputs C.
        p: Mixture weight of the sampling scheme.
        q: p + (1 − p)/n.
        lambda_max: λ_max(H) = λ_max(K).
        trace: Tr H = Tr K.
        frobenius: ‖H‖_F = ‖K‖_F.
        eta_gd: 2/λ_max, the GD threshold.
        eta_star: Exact mean-square SGD threshold 2/λ_max(C†D).
        generalized_sharpness: λ_max(C†D).
        eta_star_method: ``"dense"`` or ``"matrix_free"``.
        eta_star_converged: Whether the η* solver converged.
        stable_gd: λ_max ≤ 2/η.
        stable_sgd: η ≤ η* (mean-square stability of linearized SGD).
        growth_per_step: ρ(Q) at lr, the per-step growth of E‖δ‖² (None if not computed).
        rows: Every criterion, see :class:`BoundRow`.
        alignment: μ(θ) from the residuals (None when they are absent or zero).
        alignment_inf: μ_inf, the worst-case alignment over range K.
        interpolating: Whether max|residual| ≤ the tolerance (None: residuals not given).
        max_abs_residual: max_i |f(x_i) − y_i| (None: not given).
        train_loss: The training loss reported by the caller's loss_fn (None: not given).
        residual_term: ‖H − G‖₂ of the ½-square loss, the size of the residual term
            (1/n) Σ_i r_i·∇²f_i that η* ignores (None: not computed, e.g. at interpolation).
        notes: Caveats in words (interpolation, loss scaling, convergence).
        eta_star_route: ``"gram"`` or ``"parameter"``, see :class:`EtaStarResult`.
        route_reason: Why that route was taken.
        num_params: Number of parameters measured (None when only K was given).
        param_names: Names of the parameters measured (None when only K was given).
        momentum: Heavy-ball momentum β of the optimizer analysed (0: plain SGD); with β > 0
            ``eta_gd`` is the GD-with-momentum threshold and ``eta_star`` the exact threshold of
            SGD with momentum (:mod:`dynstab.criteria.momentum`).
        nesterov: Whether PyTorch's Nesterov form was analysed.
    """

    lr: float
    batch_size: int
    sampling: str
    n: int
    outputs: int
    p: float
    q: float
    lambda_max: float
    trace: float
    frobenius: float
    eta_gd: float
    eta_star: float
    generalized_sharpness: float
    eta_star_method: str
    eta_star_converged: bool
    stable_gd: bool
    stable_sgd: bool
    growth_per_step: float | None
    rows: tuple[BoundRow, ...]
    alignment: float | None
    alignment_inf: float
    interpolating: bool | None
    max_abs_residual: float | None
    train_loss: float | None
    residual_term: float | None
    notes: tuple[str, ...]
    eta_star_route: str = "gram"
    route_reason: str = ""
    num_params: int | None = None
    param_names: tuple[str, ...] | None = None
    momentum: float = 0.0
    nesterov: bool = False

    @property
    def margins(self) -> dict[str, float]:
        """lr/threshold for every row, keyed by row name."""
        return {r.name: r.margin for r in self.rows}

    @property
    def bounds(self) -> dict[str, float]:
        """η-threshold of every row, keyed by row name."""
        return {r.name: r.eta_threshold for r in self.rows}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``inf`` stays a float; rows become dicts with ``holds``)."""
        d = dataclasses.asdict(self)
        d["rows"] = [{**dataclasses.asdict(r), "holds": r.holds} for r in self.rows]
        d["notes"] = list(self.notes)
        d["param_names"] = None if self.param_names is None else list(self.param_names)
        return d

    def table(self) -> str:
        """Render the verdict as an aligned plain-text table."""
        head = (
            f"dynstab stability verdict (½-MSE; n={self.n}, C={self.outputs}, lr={self.lr:.6g}, "
            f"B={self.batch_size}, sampling={self.sampling}, p={self.p:.6g}, q={self.q:.6g}"
            f"{_momentum_label(self.momentum, self.nesterov)})"
        )
        lines = [head]
        if self.param_names is not None:
            lines.append(f"parameters measured: {self.num_params} ({_names(self.param_names)})")
        hdr = ("criterion", "kind", "value", "η threshold", "margin lr/η", "holds")
        body = [
            (
                r.condition,
                r.kind,
                f"{r.value:.6g}",
                f"{r.eta_threshold:.10g}",
                f"{r.margin:.6g}",
                "yes" if r.holds else "NO",
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [hdr, *body]) for i in range(len(hdr))]

        def fmt(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        lines += [fmt(hdr), fmt(tuple("-" * w for w in widths)), *map(fmt, body)]
        lines.append("")
        gd = "2/λ_max" if not self.momentum else "η_GD"
        cond = "λ_max ≤ 2/η" if not self.momentum else "η ≤ η_GD, with momentum"
        lines.append(f"{f'GD stable ({cond}):':<37}{'yes' if self.stable_gd else 'NO'}")
        lines.append(f"SGD mean-square stable (η ≤ η*):     {'yes' if self.stable_sgd else 'NO'}")
        lines.append(
            f"exact η* = {self.eta_star:.10g}  (method {self.eta_star_method}, "
            f"converged {self.eta_star_converged}); {gd} = {self.eta_gd:.10g}"
        )
        if self.route_reason:
            lines.append(f"η* route: {self.eta_star_route} ({self.route_reason})")
        if self.growth_per_step is not None:
            lines.append(f"E‖δ‖² growth per step ρ(Q) at lr:   {self.growth_per_step:.10g}")
        al = "n/a" if self.alignment is None else f"{self.alignment:.6g}"
        lines.append(f"alignment μ(θ) = {al};  μ_inf = {self.alignment_inf:.6g}")
        if self.interpolating is not None:
            loss = "n/a" if self.train_loss is None else f"{self.train_loss:.3e}"
            lines.append(
                f"interpolating: {'yes' if self.interpolating else 'NO'} "
                f"(max |residual| = {self.max_abs_residual:.3e}, train loss = {loss})"
            )
        if self.residual_term is not None:
            rel = self.residual_term / self.lambda_max if self.lambda_max > 0 else math.inf
            lines.append(
                f"residual term ‖H − G‖₂ = {self.residual_term:.6g} ({rel:.3g} × λ_max(G))"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _names(names: tuple[str, ...], most: int = 6) -> str:
    """The first ``most`` names, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f", … (+{len(names) - most} more)" if len(names) > most else "")


def _momentum_label(momentum: float, nesterov: bool) -> str:
    """``", momentum=β"`` (``", Nesterov momentum=β"``), or ``""`` for plain SGD."""
    if not momentum:
        return ""
    return f", {'Nesterov ' if nesterov else ''}momentum={momentum:g}"
