"""Stability verdicts: is a minimum linearly stable for GD and for SGD (mean square) at (η, B)?

:func:`check_stability` is the pure core on a Gram matrix K = JJᵀ/n (and optional residuals);
:func:`stability` builds K and the residuals from a model and data with
:func:`dynstab.curvature.gram_matrix`, then calls it. All thresholds assume an interpolating
minimum of the ½-square loss (``dynstab.losses.half_mse``, H = G = JᵀJ/n); away from
interpolation H ≠ G and a :class:`~dynstab.errors.NotInterpolatingWarning` is emitted.

Every η-threshold row reports a *margin* lr/threshold (= η·quantity/2 for the 2/η forms):
≤ 1 passes. GD is stable iff margin_gd ≤ 1; SGD is mean-square stable iff lr ≤ η* (margin
η·λ_max(C†D)/2 ≤ 1). The other rows are necessary conditions (a margin > 1 proves
instability) and WME18's sufficient condition (a margin ≤ 1 proves stability).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dynstab._checks import check_finite, check_positive
from dynstab._types import Data, LossFn
from dynstab.criteria.alignment import alignment_bound, alignment_factor, alignment_infimum
from dynstab.criteria.bounds import (
    frobenius_bound,
    mm23_bound_15,
    mm23_bound_16,
    rank_one_bound,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria.gram import _as_gram, eta_star, gd_threshold, gram_coordinates
from dynstab.criteria.linearized import second_moment_growth
from dynstab.criteria.sampling import mixing_p, q_factor
from dynstab.errors import NotInterpolatingWarning
from dynstab.losses import half_mse

__all__ = ["BoundRow", "StabilityReport", "check_stability", "stability"]

#: Default tolerance on max_i |f(x_i) − y_i| for calling a point interpolating.
INTERPOLATION_TOL = 1e-5


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
        return d

    def table(self) -> str:
        """Render the verdict as an aligned plain-text table."""
        head = (
            f"dynstab stability verdict (½-MSE; n={self.n}, C={self.outputs}, lr={self.lr:.6g}, "
            f"B={self.batch_size}, sampling={self.sampling}, p={self.p:.6g}, q={self.q:.6g})"
        )
        lines = [head]
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
        lines.append(f"GD stable (λ_max ≤ 2/η):             {'yes' if self.stable_gd else 'NO'}")
        lines.append(f"SGD mean-square stable (η ≤ η*):     {'yes' if self.stable_sgd else 'NO'}")
        lines.append(
            f"exact η* = {self.eta_star:.10g}  (method {self.eta_star_method}, "
            f"converged {self.eta_star_converged}); 2/λ_max = {self.eta_gd:.10g}"
        )
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


def _margin(lr: float, eta: float) -> float:
    return 0.0 if math.isinf(eta) else lr / eta


def check_stability(
    K: Tensor,
    residuals: Tensor | None = None,
    *,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    outputs: int = 1,
    method: str = "auto",
    rank_one: bool = True,
    growth: bool = True,
    interpolation_tol: float = INTERPOLATION_TOL,
    train_loss: float | None = None,
    generator: torch.Generator | None = None,
) -> StabilityReport:
    """Verdict on GD and SGD stability at lr from the Gram matrix K = JJᵀ/n (pure numerics).

    Computes λ_max, Tr, ‖·‖_F of H (= those of K), the exact η* (:func:`eta_star`), every
    necessary bound of :mod:`dynstab.criteria.bounds` and the alignment bound, WME18's
    sufficient learning rate, ρ(Q) at lr, and the alignment factors. Assumes the ½-square loss
    at an interpolating minimum (H = G); when the residuals say otherwise it warns
    :class:`~dynstab.errors.NotInterpolatingWarning` and says so in ``notes``.

    Args:
        K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``, sample-major.
        residuals: f(x_i) − y_i, shape ``(nC,)`` or ``(n, C)``; None skips the
            interpolation check and μ(θ).
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        outputs: Number of outputs C.
        method: η* solver, as for :func:`eta_star`.
        rank_one: Whether to run the rank-one ascent (MM23 (24)).
        growth: Whether to compute ρ(Q) at lr (one more eigenproblem of η*'s size).
        interpolation_tol: Largest max|residual| still called interpolating.
        train_loss: The caller's training loss, reported as is.
        generator: Random source of the rank-one restarts.

    Returns:
        :class:`StabilityReport`.

    Raises:
        ValueError: On bad K (empty, non-finite, not symmetric PSD), residuals of the wrong
            size or non-finite, lr, batch size or sampling.

    Example:
        >>> rep = check_stability(torch.eye(4), lr=0.4, batch_size=1)
        >>> rep.stable_gd, rep.stable_sgd, rep.eta_star  # η* = 2/Tr for orthogonal samples
        (True, True, 0.5)
    """
    lr = check_positive("lr", lr)
    interpolation_tol = check_positive("interpolation_tol", interpolation_tol, allow_zero=True)
    K = _as_gram(K, outputs)
    coords = gram_coordinates(K, outputs)
    n = coords.n
    p = mixing_p(n, batch_size, sampling)
    q = q_factor(n, batch_size, sampling)
    notes: list[str] = ["thresholds assume the ½-square loss at an interpolating minimum (H = G)"]

    interpolating: bool | None = None
    max_res: float | None = None
    mu: float | None = None
    if residuals is not None:
        r = residuals.detach().reshape(-1).to(torch.float64)
        if r.numel() != K.shape[0]:
            raise ValueError(
                f"residuals must have n*C = {K.shape[0]} entries (sample-major); got shape "
                f"{tuple(residuals.shape)}."
            )
        check_finite(
            "residuals",
            r,
            "The model outputs or targets hold inf/nan; check the data and the parameters.",
        )
        max_res = float(r.abs().max())
        interpolating = max_res <= interpolation_tol
        if not interpolating:
            msg = (
                f"not an interpolating point: max |f(x_i) − y_i| = {max_res:.3e} > "
                f"{interpolation_tol:g}; H ≠ G (residual term (1/n) Σ r_i ∇²f_i ≠ 0), so η* and "
                "the bounds describe the Gauss–Newton linearization only."
            )
            notes.append(msg)
            warnings.warn(msg, NotInterpolatingWarning, stacklevel=2)
        if float(r @ r) > 0 and float((K * K).sum()) > 0:
            mu = alignment_factor(K, r, outputs)

    lam = coords.lambda_max
    tr = float(K.trace())
    fro = float(torch.linalg.norm(K))
    es = eta_star(K, batch_size, sampling, outputs=outputs, method=method, coords=coords)
    if not es.converged:
        notes.append("the η* solver did not converge; see ConvergenceWarning")
    eta_gd = gd_threshold(lam)
    C = outputs

    def row(name: str, cond: str, kind: str, value: float, eta: float) -> BoundRow:
        return BoundRow(name, cond, kind, value, eta, _margin(lr, eta))

    rows = [
        row("gd", "GD: λ_max(H) ≤ 2/η", "exact", lam, eta_gd),
        row("sgd_exact", "SGD: λ_max(C†D) ≤ 2/η", "exact", es.generalized_sharpness, es.eta_star),
    ]
    b15 = mm23_bound_15(K, batch_size, sampling, outputs=outputs, coords=coords)
    rows.append(row("mm23_15", "MM23 (15)", "necessary", 2.0 / b15, b15))
    b16 = mm23_bound_16(K, batch_size, sampling, outputs=outputs)
    rows.append(row("mm23_16", "MM23 (16)", "necessary", 2.0 / b16, b16))
    rows.append(
        row(
            "trace",
            "Tr H ≤ 2C/(qη)",
            "necessary",
            tr,
            trace_bound(K, batch_size, sampling, outputs=outputs),
        )
    )
    rows.append(
        row(
            "frobenius",
            "‖H‖_F ≤ 2√C/(η√q)",
            "necessary",
            fro,
            frobenius_bound(K, batch_size, sampling, outputs=outputs),
        )
    )
    mu_inf = alignment_infimum(K, outputs, coords=coords)
    rows.append(
        row(
            "alignment",
            "‖H‖_F ≤ 1/(η√(p·μ_inf))",
            "necessary",
            fro,
            alignment_bound(K, batch_size, sampling, outputs=outputs, coords=coords),
        )
    )
    if rank_one:
        r1 = rank_one_bound(
            K, batch_size, sampling, outputs=outputs, generator=generator, coords=coords
        )
        rows.append(
            row("rank_one", "MM23 (24): max F(v) ≤ 2/η", "necessary", r1.value, r1.eta_bound)
        )
    wme = wme18_sufficient_lr(K, batch_size, sampling, outputs=outputs, coords=coords)
    rows.append(row("wme18", "WME18: λ_max((I−ηH)²+η²pΣ) ≤ 1", "sufficient", 2.0 / wme, wme))
    rho_q = (
        second_moment_growth(K, lr, batch_size, sampling, outputs=outputs, coords=coords)
        if growth
        else None
    )
    if C > 1:
        notes.append("trace and Frobenius bounds carry the factor C (√C) for rank-C H_i")
    return StabilityReport(
        lr=lr,
        batch_size=batch_size,
        sampling=sampling,
        n=n,
        outputs=outputs,
        p=p,
        q=q,
        lambda_max=lam,
        trace=tr,
        frobenius=fro,
        eta_gd=eta_gd,
        eta_star=es.eta_star,
        generalized_sharpness=es.generalized_sharpness,
        eta_star_method=es.method,
        eta_star_converged=es.converged,
        stable_gd=lr <= eta_gd,
        stable_sgd=lr <= es.eta_star,
        growth_per_step=rho_q,
        rows=tuple(rows),
        alignment=mu,
        alignment_inf=mu_inf,
        interpolating=interpolating,
        max_abs_residual=max_res,
        train_loss=train_loss,
        residual_term=None,
        notes=tuple(notes),
    )


def stability(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    lr: float,
    batch_size: int,
    sampling: str = "with",
    params: dict[str, Tensor] | None = None,
    method: str = "auto",
    rank_one: bool = True,
    growth: bool = True,
    interpolation_tol: float = INTERPOLATION_TOL,
    residual_term: bool = True,
    generator: torch.Generator | None = None,
) -> StabilityReport:
    """Verdict on GD and SGD (mean-square) linear stability of ``model`` at lr and batch size.

    Builds K = JJᵀ/n with :func:`dynstab.curvature.gram_matrix` (in float64 afterwards; use a
    float64 model for trustworthy verdicts) and the residuals f(x_i) − y_i, then calls
    :func:`check_stability`. Train-mode BatchNorm and active Dropout are refused before any
    forward pass (call ``model.eval()`` first); outputs are computed by
    :func:`torch.func.functional_call`, so the model's buffers, mode and ``.grad`` are left
    unchanged. The thresholds assume ``loss_fn`` is the ½-square loss
    (:func:`dynstab.losses.half_mse`); a different scaling is noted in the report.

    Args:
        model: The network, at (or near) an interpolating minimum.
        loss_fn: ``loss_fn(outputs, targets)``, mean over samples; reported as train loss.
        data: ``(X, y)`` or an iterable of such batches (concatenated in order).
        lr: Learning rate η > 0.
        batch_size: Batch size B.
        sampling: ``"with"`` or ``"without"`` replacement.
        params: Parameters to evaluate at (``None``: the model's own).
        method: η* solver, as for :func:`~dynstab.criteria.eta_star`.
        rank_one: Whether to run the rank-one ascent.
        growth: Whether to compute ρ(Q) at lr.
        interpolation_tol: Largest max|residual| still called interpolating.
        residual_term: When the point is not interpolating, estimate ‖H − G‖₂ (½-square
            loss) by Lanczos on Hessian minus Gauss–Newton products (≤ 80 of each).
        generator: Random source of the rank-one restarts and the Lanczos start.

    Returns:
        :class:`StabilityReport`.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``data`` is not a pair or an
            iterable of pairs.
        ValueError: If the model has train-mode BatchNorm or active Dropout, ``data`` is
            empty or its inputs and targets disagree, ``params`` does not match the model,
            outputs and targets differ in size, or as for :func:`check_stability`.
    """
    from dynstab.curvature import gram_matrix
    from dynstab.curvature.functional import (
        check_model_mode,
        forward,
        prepare_data,
        resolve_params,
    )

    # Validate everything before the first forward pass: a train-mode BatchNorm would update
    # its running statistics during ``model(X)``; functional_call at detached copies of the
    # parameters never touches the model, its mode or its ``.grad``.
    P = {k: v.detach() for k, v in resolve_params(model, params).items()}
    check_model_mode(model)
    ds = prepare_data(data)
    X, y = ds.inputs(), ds.targets()
    n = ds.n
    with torch.no_grad():
        out = forward(model, P, X)
        if out.ndim == 0 or out.shape[0] != n or out[0].numel() != y[0].numel():
            raise ValueError(
                "model outputs and targets must have the same number of entries per sample; "
                f"got outputs {tuple(out.shape)} for targets {tuple(y.shape)}. Reshape the "
                "targets to the model's output shape."
            )
        loss = float(loss_fn(out, y))
        ref = float(half_mse(out, y))
    resid = (out.reshape(n, -1) - y.reshape(n, -1).to(out.dtype)).reshape(-1)
    outputs = resid.numel() // n
    K = gram_matrix(model, X, params).detach().to(torch.float64)
    report = check_stability(
        K,
        resid,
        lr=lr,
        batch_size=batch_size,
        sampling=sampling,
        outputs=outputs,
        method=method,
        rank_one=rank_one,
        growth=growth,
        interpolation_tol=interpolation_tol,
        train_loss=loss,
        generator=generator,
    )
    if residual_term and report.interpolating is False:
        report = dataclasses.replace(
            report, residual_term=_residual_term(model, (X, y), params, generator)
        )
    if abs(loss - ref) > 1e-12 + 1e-6 * abs(ref):
        note = (
            f"loss_fn gives {loss:.6g} but half_mse gives {ref:.6g}: the thresholds refer to the "
            "½-square loss; rescale lr accordingly"
        )
        report = dataclasses.replace(report, notes=(*report.notes, note))
    return report


def _residual_term(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    params: dict[str, Tensor] | None,
    generator: torch.Generator | None,
) -> float:
    """‖H − G‖₂ of the ½-square loss by Lanczos at both ends of the spectrum of H − G."""
    from dynstab.curvature import GaussNewtonOperator, HessianOperator
    from dynstab.linalg import LinearOperator, lanczos_top_eigenpairs

    H = HessianOperator(model, half_mse, data, params)
    G = GaussNewtonOperator(model, half_mse, data, params)

    class _Difference(LinearOperator):
        def _matmat(self, V: Tensor) -> Tensor:
            return H @ V - G @ V

    op = _Difference(H.shape[0], H.dtype, H.device)
    size = H.shape[0]
    v0 = torch.randn(size, generator=generator, dtype=torch.float64).to(H.dtype)
    res = lanczos_top_eigenpairs(
        op, 1, which="both", tol=1e-6, max_iters=min(size, 80), v0=v0, return_vectors=False
    )
    return float(res.values.abs().max())
