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
* ``"lanczos"`` (eigenvalues: the project's Krylov engine, :func:`dynstab.linalg.
  lanczos_top_eigenpairs`, stopped when every value's *certified* error bound is at most
  ``tol·|θ|``; the bounds hold with probability ``1 − δ`` over the random start vectors, see
  :mod:`dynstab.linalg.krylov`) together with ``"hutchinson"`` (trace and Frobenius norm from
  one shared probe set, with standard errors). Asking for ``method="lanczos"`` or
  ``"hutchinson"`` selects this matrix-free pair; each :class:`Measure` records the estimator
  actually used. ``TraceConfig(estimator="hutchpp")`` estimates the trace and the Frobenius
  norm with Hutch++ instead (its standard error is that of its Hutchinson part on the deflated
  remainder, conditional on the sketch); ``"xtrace"`` estimates the trace only (jackknife
  standard error).

Solver settings are small objects set up once: :class:`SharpnessConfig` (route limits, the
Lanczos start, SLQ settings) holding a :class:`~dynstab.linalg.LanczosConfig` and a
:class:`~dynstab.linalg.TraceConfig`. The common fields also have keyword shortcuts on
:func:`sharpness` (``tol``, ``max_iters``, ``num_probes``, ``method``, …; see
:class:`SharpnessOptions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict, Unpack, cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dynstab._checks import check_callable, check_choice, check_generator, check_int
from dynstab._types import Data, LossFn, ParamSpec
from dynstab.curvature.functional import loss_name
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.jacobian import jacobian_transpose, problem_gram
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import (
    CurvatureProblem,
    DataOptions,
    Progress,
    ProgressFn,
    check_options,
)
from dynstab.linalg.density import SpectralDensity, slq_density
from dynstab.linalg.krylov import LanczosConfig, LanczosProgress
from dynstab.linalg.lanczos import lanczos_top_eigenpairs
from dynstab.linalg.trace import TraceConfig, estimate_trace
from dynstab.losses import half_mse

__all__ = [
    "MEASURES",
    "Measure",
    "Progress",
    "SharpnessConfig",
    "SharpnessKeywords",
    "SharpnessOptions",
    "SharpnessReport",
    "sharpness",
]

MEASURES = ("lambda_max", "top_k", "trace", "frobenius", "lambda_min", "density")
_EIGEN = ("lambda_max", "top_k", "lambda_min")
_METHODS = ("auto", "exact", "lanczos", "hutchinson")


@dataclass(frozen=True)
class SharpnessConfig:
    """How :func:`sharpness` computes its measures; set up once, reused across calls.

    Attributes:
        method: ``"auto"`` (exact when a route fits, else matrix-free), ``"exact"``,
            ``"lanczos"`` or ``"hutchinson"`` (the last two select the matrix-free pair).
            Default: ``"auto"``.
        max_dense: Largest ``p`` for the dense exact route (``p`` products, then ``eigh``).
            Default: ``2000``.
        max_gram: Largest ``n·C`` for the Gram exact route (Gauss–Newton under ½-MSE).
            Default: ``4000``.
        lanczos: Settings of every Lanczos run (tolerance, product budget, stopping criterion,
            block size, basis memory, failure probability). Default: ``LanczosConfig()``
            (``tol=1e-6``, 100 products).
        lanczos_start: ``"random"`` (a Gaussian start vector from ``generator``; certified in the
            same run) or ``"gradient"`` (the loss gradient plus 1% noise: a deterministic start
            proves nothing, so the engine adds a random certification segment — usually more
            products in all). Default: ``"random"``.
        trace: Settings of the trace / Frobenius estimator (estimator, number of products,
            probe distribution, block memory). Default: ``TraceConfig()`` (Hutchinson, 64
            Rademacher probes).
        density_probes: Probes of stochastic Lanczos quadrature, >= 1. Default: ``8``.
        density_iters: Lanczos steps per SLQ probe, >= 1. Default: ``40``.
        cache_graph: Passed to the curvature operator (``None``: cache the gradient graph when
            the data fit in one batch). Default: ``None``.

    Raises:
        TypeError: If ``lanczos`` or ``trace`` has the wrong type.
        ValueError: On an unknown method or start, or non-positive sizes.

    Example:
        >>> cfg = SharpnessConfig(lanczos=LanczosConfig(tol=1e-8))
        >>> cfg.with_options(num_probes=128, method="lanczos").trace.num_matvecs
        128
    """

    method: str = "auto"
    max_dense: int = 2000
    max_gram: int = 4000
    lanczos: LanczosConfig = field(default_factory=LanczosConfig)
    lanczos_start: str = "random"
    trace: TraceConfig = field(default_factory=TraceConfig)
    density_probes: int = 8
    density_iters: int = 40
    cache_graph: bool | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, _METHODS)
        check_int("max_dense", self.max_dense, minimum=0)
        check_int("max_gram", self.max_gram, minimum=0)
        if not isinstance(self.lanczos, LanczosConfig):
            raise TypeError(f"lanczos must be a LanczosConfig; got {type(self.lanczos).__name__}.")
        check_choice("lanczos_start", self.lanczos_start, ("gradient", "random"))
        if not isinstance(self.trace, TraceConfig):
            raise TypeError(f"trace must be a TraceConfig; got {type(self.trace).__name__}.")
        check_int("density_probes", self.density_probes, minimum=1)
        check_int("density_iters", self.density_iters, minimum=1)

    def with_options(self, **options: Unpack[SharpnessOptions]) -> SharpnessConfig:
        """This configuration with the :class:`SharpnessOptions` shortcuts applied.

        Raises:
            TypeError: On an unknown option name.
        """
        unknown = sorted(set(options) - set(SharpnessOptions.__annotations__))
        if unknown:
            raise TypeError(
                f"unknown sharpness option(s) {unknown}; valid: "
                f"{sorted(SharpnessOptions.__annotations__)} (or pass config=SharpnessConfig(...))."
            )
        opts: dict[str, Any] = dict(options)
        lz = {k: opts.pop(k) for k in ("tol", "max_iters", "criterion") if k in opts}
        tr: dict[str, Any] = {}
        if "num_probes" in opts:
            tr["num_matvecs"] = opts.pop("num_probes")
        if "trace_estimator" in opts:
            tr["estimator"] = check_choice(
                "trace_estimator", opts.pop("trace_estimator"), ("hutchinson", "hutchpp", "xtrace")
            )
        if "num_matvecs" in tr:
            estimator = tr.get("estimator", self.trace.estimator)
            least = {"hutchpp": 3, "xtrace": 2}.get(estimator, 1)
            check_int("num_probes", tr["num_matvecs"], minimum=least)
        return replace(
            self,
            lanczos=replace(self.lanczos, **lz) if lz else self.lanczos,
            trace=replace(self.trace, **tr) if tr else self.trace,
            **opts,
        )


class SharpnessOptions(TypedDict, total=False):
    """Keyword shortcuts of :func:`sharpness` for the most used :class:`SharpnessConfig` fields.

    ``tol``, ``max_iters``, ``criterion`` set the :class:`~dynstab.linalg.LanczosConfig` fields;
    ``num_probes`` and ``trace_estimator`` set ``TraceConfig.num_matvecs`` / ``.estimator``;
    the others set the :class:`SharpnessConfig` field of the same name.
    """

    method: str
    tol: float
    max_iters: int
    criterion: str
    num_probes: int
    trace_estimator: str
    max_dense: int
    max_gram: int
    density_probes: int
    density_iters: int
    lanczos_start: str
    cache_graph: bool | None


class SharpnessKeywords(SharpnessOptions, DataOptions, total=False):
    """The keywords of :func:`sharpness`: config shortcuts and the curvature data options.

    The fields of :class:`SharpnessOptions` and of :class:`~dynstab.curvature.DataOptions`
    (``device``, ``unpack``, ``forward``, ``allow_stochastic``, shared with every curvature
    routine).
    """


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
        vectors: With ``return_vectors=True``, the unit eigenvectors as the columns of a
            ``(p, k)`` tensor in the parameters' dtype (one column per value; flat in the
            order of :attr:`SharpnessReport.parameters`), else ``None``. Not part of
            :meth:`to_dict`; see :meth:`SharpnessReport.eigenvectors` for parameter-shaped ones.
    """

    value: float | tuple[float, ...]
    method: str
    num_matvecs: int
    residual: float | tuple[float, ...] | None = None
    stderr: float | None = None
    converged: bool = True
    error_bound: float | tuple[float, ...] | None = None
    vectors: Tensor | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists; eigenvectors are left out)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "vectors"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


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
        p: Number of parameters measured (the size of the selection).
        outputs: Outputs per sample ``C``.
        num_matvecs: Total operator products spent (HVPs or GN products).
        dtype: Parameter dtype.
        parameters: The parameters measured (names, shapes, count, ``p`` of the model's total).
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
    parameters: ParameterSelection | None = None

    def measures(self) -> dict[str, Measure]:
        """The requested scalar/vector measures by name."""
        out = {}
        for name in (*_EIGEN[:2], "trace", "frobenius", "lambda_min"):
            m = getattr(self, name)
            if m is not None:
                out[name] = m
        return out

    def eigenvectors(self, measure: str = "top_k") -> list[dict[str, Tensor]]:
        """Eigenvectors of an eigenvalue measure, shaped like the measured parameters.

        Args:
            measure: ``"top_k"``, ``"lambda_max"`` or ``"lambda_min"``. Default: ``"top_k"``.

        Returns:
            One ``{name: tensor}`` dict per eigenvalue (in the order of the values); together
            the tensors of one dict form a unit vector.

        Raises:
            ValueError: If the measure was not requested or ``return_vectors`` was not set.
        """
        check_choice("measure", measure, _EIGEN)
        m = getattr(self, measure)
        if m is None or m.vectors is None or self.parameters is None:
            raise ValueError(
                f"the report has no eigenvectors for {measure!r}; request the measure and pass "
                "return_vectors=True to sharpness()."
            )
        block = self.parameters.unflatten(m.vectors)
        return [{k: v[..., j] for k, v in block.items()} for j in range(m.vectors.shape[1])]

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
        p = str(self.p)
        if self.parameters is not None and self.parameters.model_numel != self.p:
            p += f" of {self.parameters.model_numel} ({self.parameters.count} tensors)"
        lines = [
            f"curvature={self.curvature}  loss={self.loss} (L={self.loss_value:.6g})  "
            f"n={self.n}  p={p}  outputs={self.outputs}  method={self.method}  "
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
        """JSON-able dict of everything in the report (eigenvectors left out)."""
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
        if self.parameters is not None:
            d["parameters"] = self.parameters.to_dict()
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


# -- progress ----------------------------------------------------------------------------------


class _Reporter:
    """Sends :class:`Progress` records to ``callback`` and/or tqdm bars (one per phase)."""

    def __init__(self, callback: ProgressFn | None, bars: bool) -> None:
        self.callback = callback
        self.bars = bool(bars)
        self.op: CurvatureOperator | None = None
        self.phase = ""
        self.step = 0
        self.total: int | None = None
        self._bar: Any = None

    @property
    def active(self) -> bool:
        return self.callback is not None or self.bars

    def _matvecs(self) -> int:
        return 0 if self.op is None else self.op.num_matvecs

    def _send(self, record: Progress) -> None:
        if self.callback is not None:
            self.callback(record)

    def emit(self, record: Progress) -> None:
        """Forward a record from the curvature layer (scan, Jacobian batches)."""
        if record.phase != self.phase:
            self.start(record.phase, record.total)
        self.step = record.step
        if self._bar is not None:
            self._bar.update(record.step - self._bar.n)
        self._send(Progress(record.phase, record.event, record.step, record.total,
                            self._matvecs(), dict(record.detail)))  # fmt: skip

    def start(self, phase: str, total: int | None) -> None:
        self.close()
        self.phase, self.step, self.total = phase, 0, total
        if self.bars:
            self._bar = tqdm(total=total, desc=f"dynstab {phase}", leave=False)
        self._send(Progress(phase, "start", 0, total, self._matvecs()))

    def advance(self, units: int) -> None:
        self.step += int(units)
        if self._bar is not None:
            self._bar.update(int(units))
        self._send(Progress(self.phase, "step", self.step, self.total, self._matvecs()))

    def end(self, detail: dict[str, float] | None = None) -> None:
        self._send(Progress(self.phase, "end", self.step, self.total, self._matvecs(),
                            dict(detail or {})))  # fmt: skip
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.phase = ""

    def lanczos_iteration(self, record: LanczosProgress) -> None:
        """Forward the engine's per-step record (running Ritz values and certified bounds)."""
        detail = {"iteration": float(record.iteration), "restarts": float(record.num_restarts)}
        if record.values.numel():
            detail["value"] = float(record.values[0])
            detail["error_bound"] = float(record.error_bounds[0])
        detail["certifying"] = float(record.phase == "certify")
        self._send(Progress(self.phase, "iteration", self.step, self.total, self._matvecs(),
                            detail))  # fmt: skip

    def attach(self, op: CurvatureOperator) -> None:
        """Report every block product of ``op`` as a step of the current phase."""
        self.op = op
        if self.active:
            op.on_product = self.advance


# -- the three routes --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """What one :func:`sharpness` call asks every route for, set up once.

    Attributes:
        wanted: The validated measure names.
        k: Number of eigenvalues of ``"top_k"``.
        return_vectors: Whether eigenvectors are wanted.
        reporter: Where progress goes.
    """

    wanted: tuple[str, ...]
    k: int
    return_vectors: bool
    reporter: _Reporter


def _spectrum_measures(
    nz_desc: Tensor, zeros: int, vecs: Tensor | None, p: int, req: _Request, method: str, cost: int
) -> dict[str, Any]:
    """Measures from the spectrum of the p×p matrix: ``nz_desc`` (descending), then ``zeros`` zeros.

    ``vecs`` holds eigenvectors of the leading eigenvalues as columns, in the same order (None:
    no vectors); the zero eigenvalues are never materialised (the Gram route may have p ≫ nC).
    """
    wanted, k = req.wanted, req.k

    def cols(sl: slice) -> Tensor | None:
        return None if vecs is None else vecs[:, sl]

    head = torch.cat([nz_desc, torch.zeros(min(zeros, k), dtype=torch.float64)])
    out: dict[str, Any] = {}
    if "lambda_max" in wanted:
        out["lambda_max"] = Measure(float(head[0]), method, cost, vectors=cols(slice(0, 1)))
    if "top_k" in wanted:
        out["top_k"] = Measure(tuple(float(v) for v in head[:k]), method, cost,
                               vectors=cols(slice(0, k)))  # fmt: skip
    if "trace" in wanted:
        out["trace"] = Measure(float(nz_desc.sum()), method, cost)
    if "frobenius" in wanted:
        out["frobenius"] = Measure(float(torch.linalg.vector_norm(nz_desc)), method, cost)
    if "lambda_min" in wanted:
        low = 0.0 if zeros > 0 else float(nz_desc[-1])
        out["lambda_min"] = Measure(low, method, cost, vectors=cols(slice(p - 1, p)))
    if "density" in wanted:
        nodes = nz_desc.flip(0)
        weights = torch.full((nodes.numel(),), 1.0 / p, dtype=torch.float64)
        if zeros:
            nodes = torch.cat([torch.zeros(1, dtype=torch.float64), nodes])
            weights = torch.cat([torch.tensor([zeros / p], dtype=torch.float64), weights])
        out["density"] = SpectralDensity(nodes, weights, cost)
    return out


def _gram_measures(problem: CurvatureProblem, req: _Request) -> dict[str, Any] | None:
    """Exact measures of G = JᵀJ/n from K = JJᵀ/n (½-MSE); ``None`` if vectors are impossible.

    Eigenvectors of G are ``v = Jᵀu/√(nλ)`` for eigenpairs ``(λ, u)`` of K with ``λ > 0``; the
    eigenvectors of zero eigenvalues of G are not determined by K, so a request that needs
    them returns ``None`` (the caller then uses the dense or matrix-free route).
    """
    p, reporter = problem.selection.numel, req.reporter
    reporter.start("jacobian", None)
    K = problem_gram(problem, callback=reporter.emit if reporter.active else None)
    reporter.end()
    nC = K.shape[0]
    K64 = K.to(torch.float64)
    if req.return_vectors:
        eig, U = torch.linalg.eigh(K64)
        eig, U = eig.flip(0), U.flip(1)
    else:
        eig, U = torch.linalg.eigvalsh(K64).flip(0), None
    nz = eig[: min(p, nC)]
    zeros = max(p - nC, 0)
    # The spectrum of G (p values) is the top min(p, nC) eigenvalues of K plus `zeros` zeros.
    head = torch.cat([nz, torch.zeros(min(zeros, req.k), dtype=torch.float64)])
    vectors: Tensor | None = None
    if U is not None:
        need = max(req.k if "top_k" in req.wanted else 0, 1 if "lambda_max" in req.wanted else 0)
        floor = nC * torch.finfo(K.dtype).eps * float(eig[0].abs())
        if "lambda_min" in req.wanted or need > nz.numel() or bool((head[:need] <= floor).any()):
            return None
        if need:
            U_need = U[:, :need].to(problem.dtype)
            V = jacobian_transpose(problem, U_need).to(torch.float64)
            V = V / torch.sqrt(problem.n * head[:need]).to(V.device)
            vectors = (V / torch.linalg.vector_norm(V, dim=0)).to(problem.dtype)
    return _spectrum_measures(nz, zeros, vectors, p, req, "exact-gram", 0)


def _dense_measures(op: CurvatureOperator, req: _Request) -> dict[str, Any]:
    p = op.shape[0]
    req.reporter.start("dense", p)
    A = op.to_dense()
    req.reporter.end()
    A = (0.5 * (A + A.T)).to(torch.float64)
    if req.return_vectors:
        eig, vecs = torch.linalg.eigh(A)
        eig, vecs = eig.flip(0), vecs.flip(1).to(op.dtype)
    else:
        eig, vecs = torch.linalg.eigvalsh(A).flip(0), None
    return _spectrum_measures(eig, 0, vecs, p, req, "exact-dense", op.num_matvecs)


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
    r = torch.randn(g.numel(), generator=generator, dtype=torch.float64).to(g.device)
    return g / norm + 1e-2 * r / torch.linalg.vector_norm(r)


@dataclass(frozen=True)
class _Eigen:
    values: list[float]
    residuals: list[float]
    bounds: list[float]
    converged: bool
    vectors: Tensor | None
    cost: int


def _matrix_free_measures(
    op: CurvatureOperator, req: _Request, config: SharpnessConfig, generator: torch.Generator | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lz = config.lanczos
    wanted, k, reporter = req.wanted, req.k, req.reporter

    def lanczos(kk: int, which: str, v0: Tensor | None) -> _Eigen:
        before = op.num_matvecs
        reporter.start("lanczos", lz.max_iters)
        res = lanczos_top_eigenpairs(
            op, kk, config=lz, v0=v0, generator=generator, which=which,
            return_vectors=req.return_vectors,
            callback=reporter.lanczos_iteration if reporter.active else None,
        )  # fmt: skip
        bounds = res.error_bounds if res.error_bounds is not None else res.residuals
        reporter.end({"value": float(res.values[0]), "converged": float(res.converged)})
        return _Eigen(res.values.tolist(), res.residuals.tolist(), bounds.tolist(), res.converged,
                      res.vectors, op.num_matvecs - before)  # fmt: skip

    if "lambda_max" in wanted or "top_k" in wanted:
        kk = k if "top_k" in wanted else 1
        v0 = _gradient_start(op, generator) if config.lanczos_start == "gradient" else None
        e = lanczos(kk, "largest", v0)
        V = e.vectors
        if "lambda_max" in wanted:
            out["lambda_max"] = Measure(e.values[0], "lanczos", e.cost, e.residuals[0], None,
                                        e.converged, e.bounds[0],
                                        None if V is None else V[:, :1])  # fmt: skip
        if "top_k" in wanted:
            out["top_k"] = Measure(tuple(e.values), "lanczos", e.cost, tuple(e.residuals), None,
                                   e.converged, tuple(e.bounds), V)  # fmt: skip
    if "lambda_min" in wanted:
        e = lanczos(1, "smallest", None)
        out["lambda_min"] = Measure(e.values[0], "lanczos", e.cost, e.residuals[0], None,
                                    e.converged, e.bounds[0], e.vectors)  # fmt: skip
    if "trace" in wanted or "frobenius" in wanted:
        trc = config.trace
        reporter.start("hutchinson", trc.num_matvecs)
        tr, fro2 = estimate_trace(op, trc, generator=generator)
        reporter.end({"trace": tr.estimate})
        ok = tr.num_probes >= 2
        if "trace" in wanted:
            out["trace"] = Measure(tr.estimate, trc.estimator, tr.num_matvecs, None, tr.stderr, ok)
        if "frobenius" in wanted:
            assert fro2 is not None  # xtrace with "frobenius" is refused up front
            fro = math.sqrt(max(fro2.estimate, 0.0))
            se = fro2.stderr / (2.0 * fro) if fro > 0 else float("nan")
            out["frobenius"] = Measure(fro, trc.estimator, fro2.num_matvecs, None, se, ok)
    if "density" in wanted:
        reporter.start("density", config.density_probes * config.density_iters)
        out["density"] = slq_density(
            op,
            num_probes=config.density_probes,
            num_iters=config.density_iters,
            generator=generator,
        )
        reporter.end()
    return out


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    measures: Sequence[str] | str = ("lambda_max", "trace", "frobenius"),
    *,
    params: ParamSpec = None,
    curvature: str = "hessian",
    k: int = 1,
    config: SharpnessConfig | None = None,
    generator: torch.Generator | None = None,
    return_vectors: bool = False,
    callback: Callable[[Progress], object] | None = None,
    progress: bool = False,
    **options: Unpack[SharpnessKeywords],
) -> SharpnessReport:
    """Measure the sharpness of ``loss_fn`` at a point: λ_max, top-k, Tr, ‖·‖_F, λ_min, density.

    The curvature is ``H = ∇²L`` (``curvature="hessian"``) or the generalised Gauss–Newton
    ``G`` (``"gauss_newton"``; ``JᵀJ/n`` under ½-MSE), with ``L`` the sample mean of the loss
    (batches weighted ``n_b/n``), taken with respect to the selected parameters (default: those
    with ``requires_grad=True``; the Hessian of a selection is the principal block of the full
    Hessian). See the module docstring for how ``method`` picks exact (Gram or dense) or
    matrix-free (Lanczos + Hutchinson) estimators. The model's mode, buffers, ``.grad`` and the
    caller's RNG state are left exactly as found (random draws with ``generator=None`` excepted).

    Args:
        model: The network (evaluated in its current mode; see ``allow_stochastic``).
        loss_fn: Batch-mean loss, e.g. :func:`dynstab.losses.half_mse` or
            :func:`dynstab.losses.cross_entropy`.
        data: One batch — ``(inputs, targets)``, ``(x_1, …, x_k, targets)`` or a dict of
            tensors — or a re-iterable of batches (``DataLoader``, list), streamed; a one-shot
            iterator is refused.
        measures: Names from ``MEASURES``. Default: ``("lambda_max", "trace", "frobenius")``.
        params: Parameters to measure: ``None`` (the parameters with ``requires_grad=True``),
            a submodule (e.g. ``model.fc2`` for per-layer sharpness), a name or list of names,
            a predicate ``(name, param) -> bool``, or a ``dict[str, Tensor]`` (those names at
            the given values). Default: ``None``.
        curvature: ``"hessian"`` or ``"gauss_newton"``. Default: ``"hessian"``.
        k: Number of eigenvalues for ``"top_k"``, >= 1. Default: ``1``.
        config: How to compute (:class:`SharpnessConfig`: route limits, Lanczos and trace
            settings, SLQ); ``None`` uses ``SharpnessConfig()``.
        generator: CPU ``torch.Generator`` for Lanczos starts and probes; ``None`` uses
            torch's default generator.
        return_vectors: Add the eigenvectors to ``lambda_max``/``top_k``/``lambda_min``
            (:attr:`Measure.vectors`, :meth:`SharpnessReport.eigenvectors`). Exact routes give
            them to round-off (the Gram route as ``Jᵀu/√(nλ)``; where that needs a zero
            eigenvalue it hands over to the dense route); Lanczos vectors have the residuals
            reported in :attr:`Measure.residual` (use ``criterion="residual"`` to make them
            small). Default: ``False``.
        callback: Called with a :class:`~dynstab.curvature.Progress` record at the start, each
            step (batch or operator product) and the end of every phase. Default: ``None``.
        progress: Show a tqdm progress bar per phase (on stderr). Default: ``False``.
        **options: Shortcuts for common ``config`` fields (:class:`SharpnessOptions`):
            ``method``, ``tol``, ``max_iters``, ``criterion``, ``num_probes``,
            ``trace_estimator``, ``max_dense``, ``max_gram``, ``density_probes``,
            ``density_iters``, ``lanczos_start``, ``cache_graph``; they override ``config``.
            And how the data are read and the model called
            (:class:`~dynstab.curvature.DataOptions`): ``device`` (default: the selected
            parameters'; batches are moved there, the model never), ``unpack``, ``forward``,
            ``allow_stochastic`` (one fixed draw of the dropout masks; running statistics
            updated on private copies only).

    Returns:
        :class:`SharpnessReport`, naming the parameters measured (``report.parameters``).

    Raises:
        TypeError: On wrongly typed model, loss, params, data, generator or hooks.
        ValueError: On unknown measure/curvature/method names, a bad parameter selection,
            empty or mismatched data, non-finite data or parameters, a non-finite loss,
            stochastic layers in train mode, a device mismatch, or ``method="exact"`` on a
            problem too large for both exact routes.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> rep = sharpness(model, half_mse, (X, torch.zeros(2, 1, dtype=torch.float64)))
        >>> rep.lambda_max.value, rep.trace.value, rep.lambda_max.method  # XᵀX/n = diag(½, 2)
        (2.0, 2.5, 'exact-dense')
        >>> rep.parameters.names, rep.p
        (('weight',), 2)

    References:
        Cohen et al. (2021), ICLR (λ_max against 2/η at the edge of stability); Wu & Su (2023),
        ICML (Tr H ≤ 2/(qη) for SGD); Lanczos (1950); Hutchinson (1989), Comm. Stat. Simul.
        Comput. 18(3); Meyer, Musco, Musco & Woodruff (2021), SOSA (Hutch++).
    """
    wanted = _validate_measures(measures)
    check_choice("curvature", curvature, ("hessian", "gauss_newton"))
    if config is not None and not isinstance(config, SharpnessConfig):
        raise TypeError(f"config must be a SharpnessConfig; got {type(config).__name__}.")
    check_options("sharpness", options, SharpnessOptions)
    data_keys = DataOptions.__annotations__
    data_options = cast(DataOptions, {k: v for k, v in options.items() if k in data_keys})
    shortcuts = cast(SharpnessOptions, {k: v for k, v in options.items() if k not in data_keys})
    cfg = (config or SharpnessConfig()).with_options(**shortcuts)
    method, max_dense, max_gram = cfg.method, cfg.max_dense, cfg.max_gram
    check_int("k", k, minimum=1)
    if "frobenius" in wanted and cfg.trace.estimator == "xtrace":
        raise ValueError(
            "the 'frobenius' measure needs trace_estimator 'hutchinson' or 'hutchpp'; got "
            "'xtrace', which estimates the trace only. Drop 'frobenius' or change the estimator."
        )
    check_generator("generator", generator)
    if callback is not None:
        check_callable("callback", callback, "callback(progress)")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")

    problem = CurvatureProblem(model, loss_fn, data, params, who="sharpness", **data_options)
    reporter = _Reporter(callback, progress)
    req = _Request(wanted, k, return_vectors, reporter)
    try:
        problem.scan(reporter.emit if reporter.active else None)
        reporter.close()
        p = problem.selection.numel
        if "top_k" in wanted and k > p:
            raise ValueError(f"k must be <= the number of parameters p={p}; got k={k}.")
        nC = problem.n * problem.outputs_per_sample
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
        exact = method in ("auto", "exact")
        results: dict[str, Any] | None = None
        total = 0
        family = "exact-gram"
        if exact and gram_ok:
            results = _gram_measures(problem, req)
            if results is None and method == "exact" and not dense_ok:
                raise ValueError(
                    "return_vectors=True asks for eigenvectors of zero eigenvalues of G, which the "
                    f"Gram route cannot give, and p={p} > max_dense={max_dense} rules out the "
                    "dense route. Raise max_dense, use method='lanczos', or drop return_vectors."
                )
        if results is None:
            op_cls = HessianOperator if curvature == "hessian" else GaussNewtonOperator
            op = op_cls.from_problem(problem, cache_graph=cfg.cache_graph)
            reporter.attach(op)
            if exact and dense_ok:
                family = "exact-dense"
                results = _dense_measures(op, req)
            else:
                family = "matrix-free"
                results = _matrix_free_measures(op, req, cfg, generator)
            total = op.num_matvecs
    finally:
        reporter.close()
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
        loss_value=problem.loss_value,
        n=problem.n,
        p=p,
        outputs=problem.outputs_per_sample,
        num_matvecs=total,
        dtype=str(problem.dtype).replace("torch.", ""),
        parameters=problem.selection,
    )
