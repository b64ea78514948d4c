"""Sharpness measures at a point: one entry point, :func:`sharpness`.

Measures of the curvature matrix ``A`` (``H = ∇²L`` or the Gauss–Newton ``G``) of the loss
``L = Σ_b (n_b/n) loss_fn(f(X_b; θ), y_b)`` — under the ½-MSE convention of
:mod:`dynstab.losses`, ``L = (1/n) Σ_i ½‖f(x_i) − y_i‖²`` and ``G = JᵀJ/n``:

* ``"lambda_max"``: largest eigenvalue ``λ_max(A)`` (GD is linearly stable iff ``λ_max ≤ 2/η``);
* ``"top_k"``: the ``k`` largest eigenvalues (descending);
* ``"trace"``: ``Tr A``; ``"frobenius"``: ``‖A‖_F``; ``"lambda_min"``: smallest eigenvalue;
* ``"density"``: spectral density (stochastic Lanczos quadrature, or exact when dense).

Methods (``method="auto"`` picks the first that applies):

* ``"exact"`` via the Gram matrix ``K = JJᵀ/n`` (``curvature="gauss_newton"``, ``half_mse``,
  ``n·C ≤ max_gram``): ``G`` has the non-zero spectrum of ``K`` plus ``max(p − nC, 0)`` zeros,
  so ``λ_min(G) = 0`` when ``p > nC``. Costs no operator products (one Jacobian).
* ``"exact"`` dense: ``p ≤ max_dense``, ``A`` built from ``p`` products, then ``eigvalsh``.
* ``"lanczos"`` (eigenvalues; full reorthogonalisation, stopped when the eigenvalue error
  estimate ``min(r, r²/δ)`` — or, with ``criterion="residual"``, the residual ``r`` — is at most
  ``tol·|θ|``) together with ``"hutchinson"`` (trace and Frobenius from one shared Rademacher
  probe set, with standard errors). Asking for ``method="lanczos"`` or ``"hutchinson"`` selects
  this matrix-free pair; each :class:`Measure` records the estimator actually used.
  ``trace_estimator="hutchpp"`` estimates the trace and the Frobenius norm with Hutch++
  instead (``num_probes`` shared products in all: ``s = ⌊m/3⌋`` sketch probes, ``s`` products
  with the sketch basis ``Q``, ``m − 2s`` Hutchinson probes on the deflated remainder; see
  :func:`dynstab.linalg.hutchpp_trace_and_frobenius`). Hutch++ has no simple standard error;
  the one reported is that of its Hutchinson part on the deflated remainder (the sketch terms
  ``tr(QᵀAQ)``, ``‖AQ‖_F²`` treated as fixed: the standard error conditional on the sketch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import Data, LossFn, Params
from dynstab.curvature.functional import (
    Dataset,
    batch_loss,
    check_model_mode,
    loss_name,
    num_outputs,
    prepare_data,
    resolve_params,
)
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.jacobian import gram_matrix
from dynstab.linalg.density import SpectralDensity, slq_density
from dynstab.linalg.lanczos import lanczos_top_eigenpairs
from dynstab.linalg.trace import hutchinson_trace_and_frobenius, hutchpp_trace_and_frobenius
from dynstab.losses import half_mse

__all__ = ["MEASURES", "Measure", "SharpnessReport", "sharpness"]

MEASURES = ("lambda_max", "top_k", "trace", "frobenius", "lambda_min", "density")
_EIGEN = ("lambda_max", "top_k", "lambda_min")


@dataclass(frozen=True)
class Measure:
    """One sharpness measure and how it was obtained.

    Attributes:
        value: The value (``top_k``: a tuple, descending).
        method: ``"exact-gram"``, ``"exact-dense"``, ``"lanczos"``, ``"hutchinson"`` or
            ``"hutchpp"``.
        num_matvecs: Operator products spent on it (Hutchinson's trace and Frobenius share
            one probe set and both report its size).
        residual: Lanczos residual norm(s) ``‖A y − θ y‖`` (absolute), else ``None``.
        stderr: Standard error of a stochastic estimate (Frobenius: delta method
            ``se(‖A‖_F²)/(2‖A‖_F)``; Hutch++: that of its Hutchinson part), else ``None``.
        converged: Whether the estimator met its tolerance (exact methods: ``True``).
        error_bound: Lanczos eigenvalue error estimate(s) ``min(r, r²/δ)`` (absolute; see
            :func:`dynstab.linalg.lanczos_top_eigenpairs`), else ``None``.
    """

    value: float | tuple[float, ...]
    method: str
    num_matvecs: int
    residual: float | tuple[float, ...] | None = None
    stderr: float | None = None
    converged: bool = True
    error_bound: float | tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        for key in ("value", "residual", "error_bound"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d


@dataclass(frozen=True)
class SharpnessReport:
    """Frozen result of :func:`sharpness`; unrequested measures are ``None``.

    Attributes:
        lambda_max: Largest eigenvalue.
        top_k: ``k`` largest eigenvalues (descending).
        trace: Trace.
        frobenius: Frobenius norm.
        lambda_min: Smallest eigenvalue.
        density: Spectral density (nodes and weights), if requested.
        curvature: ``"hessian"`` or ``"gauss_newton"``.
        method: Method family used: ``"exact-gram"``, ``"exact-dense"`` or ``"matrix-free"``.
        loss: Name of the loss function.
        loss_value: ``L(θ)`` at the point.
        n: Number of samples.
        p: Number of parameters.
        outputs: Outputs per sample ``C``.
        num_matvecs: Total operator products spent (HVPs or GN products).
        dtype: Parameter dtype.
    """

    lambda_max: Measure | None
    top_k: Measure | None
    trace: Measure | None
    frobenius: Measure | None
    lambda_min: Measure | None
    density: SpectralDensity | None
    curvature: str
    method: str
    loss: str
    loss_value: float
    n: int
    p: int
    outputs: int
    num_matvecs: int
    dtype: str

    def measures(self) -> dict[str, Measure]:
        """The requested scalar/vector measures by name."""
        out = {}
        for name in (*_EIGEN[:2], "trace", "frobenius", "lambda_min"):
            m = getattr(self, name)
            if m is not None:
                out[name] = m
        return out

    def table(self) -> str:
        """Aligned text table: a summary line, then one row per measure.

        Columns: measure, value, method, matvecs, residual (the largest for ``top_k``),
        stderr, converged; ``-`` marks an empty cell. This is what ``dynstab sharpness``
        prints and what ``str(report)`` returns.
        """
        header = ("measure", "value", "method", "matvecs", "residual", "stderr", "converged")
        rows = [header]
        for name, m in self.measures().items():
            residual = max(m.residual) if isinstance(m.residual, tuple) else m.residual
            rows.append(
                (name, _cell(m.value), m.method, str(m.num_matvecs), _cell(residual),
                 _cell(m.stderr), str(m.converged))
            )  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            f"curvature={self.curvature}  loss={self.loss} (L={self.loss_value:.6g})  "
            f"n={self.n}  p={self.p}  outputs={self.outputs}  method={self.method}  "
            f"matvecs={self.num_matvecs}"
        ]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of everything in the report."""
        d: dict[str, Any] = {
            "curvature": self.curvature,
            "method": self.method,
            "loss": self.loss,
            "loss_value": self.loss_value,
            "n": self.n,
            "p": self.p,
            "outputs": self.outputs,
            "num_matvecs": self.num_matvecs,
            "dtype": self.dtype,
            "measures": {k: m.to_dict() for k, m in self.measures().items()},
        }
        if self.density is not None:
            d["density"] = {
                "nodes": self.density.nodes.tolist(),
                "weights": self.density.weights.tolist(),
                "num_matvecs": self.density.num_matvecs,
            }
        return d


def _cell(x: object) -> str:
    """Table cell: ``-`` for ``None``, ``[a, b]`` (6 digits) for tuples, 10 digits for floats."""
    if x is None:
        return "-"
    if isinstance(x, tuple):
        return "[" + ", ".join(f"{v:.6g}" for v in x) + "]"
    if isinstance(x, float) and not isinstance(x, bool):
        return f"{x:.10g}"
    return str(x)


def _validate_measures(measures: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(measures, str):
        measures = (measures,)
    out = tuple(dict.fromkeys(measures))
    if not out:
        raise ValueError(f"measures must name at least one of {list(MEASURES)}; got none.")
    for m in out:
        check_choice("measure", m, MEASURES)
    return out


def _spectrum_measures(
    eig_desc: Tensor, p: int, wanted: tuple[str, ...], k: int, method: str, cost: int
) -> dict[str, Any]:
    """Measures from the full (descending) spectrum of the p×p matrix."""
    out: dict[str, Any] = {}
    if "lambda_max" in wanted:
        out["lambda_max"] = Measure(float(eig_desc[0]), method, cost)
    if "top_k" in wanted:
        out["top_k"] = Measure(tuple(float(v) for v in eig_desc[:k]), method, cost)
    if "trace" in wanted:
        out["trace"] = Measure(float(eig_desc.sum()), method, cost)
    if "frobenius" in wanted:
        out["frobenius"] = Measure(float(torch.linalg.vector_norm(eig_desc)), method, cost)
    if "lambda_min" in wanted:
        out["lambda_min"] = Measure(float(eig_desc[-1]), method, cost)
    if "density" in wanted:
        out["density"] = SpectralDensity(
            eig_desc.flip(0).clone(), torch.full((p,), 1.0 / p, dtype=torch.float64), cost
        )
    return out


def _gram_measures(
    model: nn.Module,
    ds: Dataset,
    P: Params,
    wanted: tuple[str, ...],
    k: int,
    allow_stochastic: bool,
) -> dict[str, Any]:
    p = sum(t.numel() for t in P.values())
    K = gram_matrix(model, ds.inputs(), P, allow_stochastic=allow_stochastic)
    nC = K.shape[0]
    eig = torch.linalg.eigvalsh(K.to(torch.float64)).flip(0)  # descending, nC values
    nz = eig[: min(p, nC)]
    zeros = max(p - nC, 0)
    # The spectrum of G (p values) is the top min(p, nC) eigenvalues of K plus `zeros` zeros.
    out: dict[str, Any] = {}
    head = torch.cat([nz, torch.zeros(min(zeros, k), dtype=torch.float64)])
    if "lambda_max" in wanted:
        out["lambda_max"] = Measure(float(head[0]), "exact-gram", 0)
    if "top_k" in wanted:
        out["top_k"] = Measure(tuple(float(v) for v in head[:k]), "exact-gram", 0)
    if "trace" in wanted:
        out["trace"] = Measure(float(nz.sum()), "exact-gram", 0)
    if "frobenius" in wanted:
        out["frobenius"] = Measure(float(torch.linalg.vector_norm(nz)), "exact-gram", 0)
    if "lambda_min" in wanted:
        out["lambda_min"] = Measure(0.0 if zeros > 0 else float(nz[-1]), "exact-gram", 0)
    if "density" in wanted:
        nodes = nz.flip(0)
        weights = torch.full((nodes.numel(),), 1.0 / p, dtype=torch.float64)
        if zeros:
            nodes = torch.cat([torch.zeros(1, dtype=torch.float64), nodes])
            weights = torch.cat([torch.tensor([zeros / p], dtype=torch.float64), weights])
        out["density"] = SpectralDensity(nodes, weights, 0)
    return out


def _gradient_start(op: CurvatureOperator, generator: torch.Generator | None) -> Tensor | None:
    """Unit loss gradient plus a 1e-2 random component; ``None`` if the gradient vanishes.

    The gradient concentrates in the top eigenspace of the Hessian, so Lanczos started there
    resolves λ_max in fewer products; the random part keeps the start from being exactly
    orthogonal to any eigenvector.
    """
    g = op.gradient().to(torch.float64)
    norm = torch.linalg.vector_norm(g)
    if not (torch.isfinite(norm) and norm > 1e-12 * max(1.0, float(g.abs().max()))):
        return None
    r = torch.randn(g.numel(), generator=generator, dtype=torch.float64)
    return g / norm + 1e-2 * r / torch.linalg.vector_norm(r)


def _matrix_free_measures(
    op: CurvatureOperator,
    wanted: tuple[str, ...],
    *,
    k: int,
    tol: float,
    max_iters: int,
    num_probes: int,
    density_probes: int,
    density_iters: int,
    generator: torch.Generator | None,
    lanczos_start: str,
    criterion: str = "eigenvalue",
    trace_estimator: str = "hutchinson",
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def lanczos(
        kk: int, which: str, v0: Tensor | None
    ) -> tuple[list[float], list[float], list[float], bool]:
        res = lanczos_top_eigenpairs(
            op, kk, tol=tol, max_iters=max_iters, v0=v0, generator=generator, which=which,
            return_vectors=False, criterion=criterion,
        )  # fmt: skip
        bounds = res.error_bounds if res.error_bounds is not None else res.residuals
        return res.values.tolist(), res.residuals.tolist(), bounds.tolist(), res.converged

    if "lambda_max" in wanted or "top_k" in wanted:
        kk = k if "top_k" in wanted else 1
        v0 = _gradient_start(op, generator) if lanczos_start == "gradient" else None
        before = op.num_matvecs
        vals, resid, err, ok = lanczos(kk, "largest", v0)
        cost = op.num_matvecs - before
        if "lambda_max" in wanted:
            out["lambda_max"] = Measure(vals[0], "lanczos", cost, resid[0], None, ok, err[0])
        if "top_k" in wanted:
            out["top_k"] = Measure(tuple(vals), "lanczos", cost, tuple(resid), None, ok, tuple(err))
    if "lambda_min" in wanted:
        before = op.num_matvecs
        vals, resid, err, ok = lanczos(1, "smallest", None)
        out["lambda_min"] = Measure(
            vals[0], "lanczos", op.num_matvecs - before, resid[0], None, ok, err[0]
        )
    if "trace" in wanted or "frobenius" in wanted:
        estimator = (
            hutchpp_trace_and_frobenius
            if trace_estimator == "hutchpp"
            else (hutchinson_trace_and_frobenius)
        )
        tr, fro2 = estimator(op, num_probes, generator=generator)
        ok = tr.num_probes >= 2
        if "trace" in wanted:
            out["trace"] = Measure(
                tr.estimate, trace_estimator, tr.num_matvecs, None, tr.stderr, ok
            )
        if "frobenius" in wanted:
            fro = math.sqrt(max(fro2.estimate, 0.0))
            se = fro2.stderr / (2.0 * fro) if fro > 0 else float("nan")
            out["frobenius"] = Measure(fro, trace_estimator, fro2.num_matvecs, None, se, ok)
    if "density" in wanted:
        out["density"] = slq_density(
            op, num_probes=density_probes, num_iters=density_iters, generator=generator
        )
    return out


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    measures: Sequence[str] | str = ("lambda_max", "trace", "frobenius"),
    *,
    params: Params | None = None,
    curvature: str = "hessian",
    method: str = "auto",
    k: int = 1,
    tol: float = 1e-6,
    max_iters: int = 100,
    num_probes: int = 64,
    density_probes: int = 8,
    density_iters: int = 40,
    generator: torch.Generator | None = None,
    max_dense: int = 2000,
    max_gram: int = 4000,
    allow_stochastic: bool = False,
    cache_graph: bool | None = None,
    lanczos_start: str = "gradient",
    criterion: str = "eigenvalue",
    trace_estimator: str = "hutchinson",
) -> SharpnessReport:
    """Measure the sharpness of ``loss_fn`` at a point: λ_max, top-k, Tr, ‖·‖_F, λ_min, density.

    The curvature is ``H = ∇²L`` (``curvature="hessian"``) or the generalised Gauss–Newton
    ``G`` (``"gauss_newton"``; ``JᵀJ/n`` under ½-MSE), with ``L`` the sample mean of the loss
    (DataLoader batches weighted ``n_b/n``). See the module docstring for how ``method`` picks
    exact (Gram or dense) or matrix-free (Lanczos + Hutchinson) estimators. The model's mode
    and ``.grad`` are left exactly as found.

    Args:
        model: The network (evaluated in its current mode; see ``allow_stochastic``).
        loss_fn: Batch-mean loss, e.g. :func:`dynstab.losses.half_mse` or
            :func:`dynstab.losses.cross_entropy`.
        data: ``(inputs, targets)`` or an iterable of such pairs (e.g. a ``DataLoader``).
        measures: Names from ``MEASURES``. Default: ``("lambda_max", "trace", "frobenius")``.
        params: Point to evaluate at; ``None`` means the model's current parameters.
        curvature: ``"hessian"`` or ``"gauss_newton"``. Default: ``"hessian"``.
        method: ``"auto"``, ``"exact"``, ``"lanczos"`` or ``"hutchinson"``. Default: ``"auto"``.
        k: Number of eigenvalues for ``"top_k"``, >= 1. Default: ``1``.
        tol: Lanczos relative tolerance: the wanted relative eigenvalue accuracy
            (``criterion="eigenvalue"``) or relative residual (``"residual"``). Default: ``1e-6``.
        max_iters: Lanczos product budget per run. Default: ``100``.
        num_probes: Hutchinson probes (shared by trace and Frobenius), >= 1; with
            ``trace_estimator="hutchpp"`` the total (shared) product budget, >= 3.
            Default: ``64``.
        density_probes: SLQ probes. Default: ``8``.
        density_iters: SLQ Lanczos steps per probe. Default: ``40``.
        generator: Random source for Lanczos starts and probes; ``None`` uses torch's default.
        max_dense: Largest ``p`` for the dense exact method. Default: ``2000``.
        max_gram: Largest ``n·C`` for the Gram exact method. Default: ``4000``.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout. Default: ``False``.
        cache_graph: Passed to the curvature operator. Default: ``None``.
        lanczos_start: ``"gradient"`` starts the λ_max/top-k Lanczos run at the loss gradient
            (plus 1% random; one extra gradient evaluation, not counted as a product; falls
            back to random where the gradient vanishes) or ``"random"``. Default:
            ``"gradient"``.
        criterion: Lanczos stopping rule, ``"eigenvalue"`` (error estimate ``min(r, r²/δ)``)
            or ``"residual"`` (``r``); see :func:`dynstab.linalg.lanczos_top_eigenpairs`.
            Default: ``"eigenvalue"``.
        trace_estimator: Matrix-free estimator of the trace and Frobenius norm,
            ``"hutchinson"`` or ``"hutchpp"`` (see the module docstring for its standard error).
            Default: ``"hutchinson"``.

    Returns:
        :class:`SharpnessReport`.

    Raises:
        TypeError: On wrongly typed model, loss, params or data.
        ValueError: On unknown measure/curvature/method names, wrong params keys, empty or
            mismatched data, a non-finite loss, stochastic layers in train mode, or
            ``method="exact"`` on a problem too large for both exact routes.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> rep = sharpness(model, half_mse, (X, torch.zeros(2, 1, dtype=torch.float64)))
        >>> rep.lambda_max.value, rep.trace.value, rep.lambda_max.method  # XᵀX/n = diag(½, 2)
        (2.0, 2.5, 'exact-dense')
    """
    wanted = _validate_measures(measures)
    check_choice("curvature", curvature, ("hessian", "gauss_newton"))
    check_choice("method", method, ("auto", "exact", "lanczos", "hutchinson"))
    check_choice("lanczos_start", lanczos_start, ("gradient", "random"))
    check_choice("criterion", criterion, ("eigenvalue", "residual"))
    check_choice("trace_estimator", trace_estimator, ("hutchinson", "hutchpp"))
    check_int("k", k, minimum=1)
    tol = check_positive("tol", tol)
    check_int("max_iters", max_iters, minimum=1)
    check_int("num_probes", num_probes, minimum=3 if trace_estimator == "hutchpp" else 1)
    check_int("max_dense", max_dense, minimum=0)
    check_int("max_gram", max_gram, minimum=0)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")

    P = resolve_params(model, params, who="sharpness")
    check_model_mode(model, allow_stochastic=allow_stochastic)
    ds = prepare_data(data)
    p = sum(t.numel() for t in P.values())
    if "top_k" in wanted and k > p:
        raise ValueError(f"k must be <= the number of parameters p={p}; got k={k}.")
    loss_value = 0.0
    C = 1
    with torch.no_grad():
        for i, ((X, y), w) in enumerate(zip(ds.batches, ds.weights())):
            out, loss = batch_loss(model, loss_fn, P, X, y)
            loss_value += w * float(loss)
            if i == 0:
                C = num_outputs(out)
    nC = ds.n * C
    gram_ok = curvature == "gauss_newton" and loss_fn is half_mse and nC <= max_gram
    dense_ok = p <= max_dense
    if method == "exact" and not (gram_ok or dense_ok):
        raise ValueError(
            f"method='exact' needs p <= max_dense ({p} > {max_dense})"
            + (
                " or, for curvature='gauss_newton' with half_mse, "
                f"n*C <= max_gram ({nC} > {max_gram})"
                if curvature == "gauss_newton"
                else ""
            )
            + ". Use method='auto' or 'lanczos', or raise max_dense/max_gram."
        )
    exact = method in ("auto", "exact") and (gram_ok or dense_ok)

    op: CurvatureOperator | None = None
    if exact and gram_ok:
        family = "exact-gram"
        results = _gram_measures(model, ds, P, wanted, k, allow_stochastic)
        total = 0
    else:
        op_cls = HessianOperator if curvature == "hessian" else GaussNewtonOperator
        op = op_cls(
            model, loss_fn, ds, P, allow_stochastic=allow_stochastic, cache_graph=cache_graph
        )
        if exact:
            family = "exact-dense"
            A = op.to_dense()
            A = 0.5 * (A + A.T)
            eig = torch.linalg.eigvalsh(A.to(torch.float64)).flip(0)
            results = _spectrum_measures(eig, p, wanted, k, "exact-dense", op.num_matvecs)
        else:
            family = "matrix-free"
            results = _matrix_free_measures(
                op,
                wanted,
                k=k,
                tol=tol,
                max_iters=max_iters,
                num_probes=num_probes,
                density_probes=density_probes,
                density_iters=density_iters,
                generator=generator,
                lanczos_start=lanczos_start,
                criterion=criterion,
                trace_estimator=trace_estimator,
            )
        total = op.num_matvecs
    dtype = next(iter(P.values())).dtype
    return SharpnessReport(
        lambda_max=results.get("lambda_max"),
        top_k=results.get("top_k"),
        trace=results.get("trace"),
        frobenius=results.get("frobenius"),
        lambda_min=results.get("lambda_min"),
        density=results.get("density"),
        curvature=curvature,
        method=family,
        loss=loss_name(loss_fn),
        loss_value=loss_value,
        n=ds.n,
        p=p,
        outputs=C,
        num_matvecs=total,
        dtype=str(dtype).replace("torch.", ""),
    )
