"""Preconditioned curvature of adaptive optimizers (Adam, AdamW, RMSprop, SGD) from their state.

An adaptive method steps θ ← θ − η P⁻¹ m with a diagonal preconditioner P and a (possibly
averaged) gradient m. Frozen at its current value, P makes the linearised dynamics those of
(momentum) gradient descent on the *preconditioned* curvature P⁻¹H, whose largest eigenvalue
— the preconditioned sharpness of Cohen et al. (2022) — plays the role of λ_max(H). It equals
λ_max of the symmetric matrix P^{-1/2} H P^{-1/2} (a similarity), which this module applies
matrix-free for the one Lanczos engine of :mod:`dynstab.linalg`.

Preconditioners read from ``torch.optim`` state (PyTorch's exact formulas, per parameter):

* ``Adam``/``AdamW``: P = √v̂ + ε, v̂ = v/(1 − β₂ᵗ) with v = ``exp_avg_sq`` (or
  ``max_exp_avg_sq`` with ``amsgrad=True``) and t = ``state["step"]``; ε is added *after*
  the square root (``denom = v.sqrt()/√(1 − β₂ᵗ) + eps`` in ``torch.optim.adam``).
* ``RMSprop``: P = √v + ε with v = ``square_avg`` (no bias correction), or
  √(v − ḡ²) + ε with ḡ = ``grad_avg`` when ``centered=True``.
* ``SGD``: P = I.

Stability thresholds (:attr:`Preconditioner.threshold`), from the linearisation at a frozen P
on one eigen-direction a of P⁻¹(H + W) (the iteration is stable iff a ≤ threshold):

* SGD / RMSprop heavy ball (b ← βb + (1 − τ)g, θ ← θ − ηb; τ = dampening, 0 for RMSprop):
  2(1 + β)/((1 − τ)η) — 2/η without momentum;
* SGD Nesterov (τ = 0, as PyTorch requires): 2(1 + β)/((1 + 2β)η);
* Adam (m ← β₁m + (1 − β₁)g, an exponential moving average): (2 + 2β₁)/((1 − β₁)η), which is
  38/η for β₁ = 0.9 (Cohen et al. 2022, abstract and §2);
* AdamW: (2 − ηλ_wd)(1 + β₁)/((1 − β₁)η) (see below).

The threshold ignores Adam's bias correction of m (the step is η/(1 − β₁ᵗ)·m̂/P), which tends
to 1 as t grows (within 1% of the threshold once t ≥ 44 for β₁ = 0.9).

Weight decay. Coupled L2 decay (``weight_decay`` of SGD, RMSprop and of Adam with
``decoupled_weight_decay=False``) adds λ_wd·θ to the gradient, i.e. the curvature becomes
H + λ_wd I: the operator here is then P^{-1/2}(H + W)P^{-1/2} with W = diag(λ_wd of each
parameter's group). AdamW's decoupled decay θ ← (1 − ηλ_wd)θ − ηP⁻¹m does not enter the
curvature (W = 0): it multiplies θ by 1 − ηλ_wd outside the moving average, which on one
eigen-direction gives the characteristic polynomial z² − (β₁ + c − η(1 − β₁)a)z + cβ₁ with
c = 1 − ηλ_wd, whose root crosses −1 at a = (1 + c)(1 + β₁)/((1 − β₁)η): the threshold above
(the other roots stay inside the unit circle for 0 ≤ c ≤ 1, a ≥ 0).

Different learning rates per parameter group are folded into the operator: with
η_ref the largest group learning rate, D = diag((η_i/η_ref)/P_i) and the operator is
D^{1/2}(H + W)D^{1/2}, so that its λ_max compares with the threshold at η_ref.

References:
    Cohen, Ghorbani, Krishnan, Agarwal, Medapati, Badura, Suo, Cardoze, Nado, Dahl & Gilmer
    (2022), "Adaptive gradient methods at the edge of stability", arXiv:2207.14484 (the
    preconditioned sharpness λ₁(P⁻¹H) and the threshold (2 + 2β₁)/((1 − β₁)η) of Adam with a
    frozen preconditioner). Kingma & Ba (2015), "Adam", ICLR. Loshchilov & Hutter (2019),
    "Decoupled weight decay regularization", ICLR (AdamW). Polyak (1964) (heavy ball).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_generator
from dynstab._types import Data, LossFn
from dynstab.curvature.gauss_newton import GaussNewtonOperator
from dynstab.curvature.hessian import CurvatureOperator, HessianOperator
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import CurvatureProblem, DataOptions, check_options
from dynstab.linalg.krylov import EigenResult, LanczosConfig
from dynstab.linalg.lanczos import lanczos_top_eigenpairs
from dynstab.linalg.operator import LinearOperator

__all__ = [
    "OPTIMIZERS",
    "PreconditionedOperator",
    "PreconditionedSharpness",
    "Preconditioner",
    "momentum_threshold",
    "optimizer_preconditioner",
    "preconditioned_sharpness",
]

#: Optimizer kinds understood (``type(optimizer).__name__`` lower-cased).
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def _scalar(value: object) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Preconditioner:
    """A frozen optimizer step θ ← θ − η_ref·D·m, read from a ``torch.optim`` optimizer.

    Attributes:
        kind: ``"adam"``, ``"adamw"`` (Adam with decoupled weight decay), ``"rmsprop"`` or
            ``"sgd"``.
        selection: The parameters the optimizer updates (model names, selection order).
        diagonal: P, shape ``(p,)``, float64 (ones for SGD).
        scale: D = (η_i/η_ref)/P, shape ``(p,)``, float64.
        coupled_decay: Coupled L2 weight decay of each coordinate, shape ``(p,)`` (W).
        lr: η_ref, the largest learning rate of the parameter groups.
        momentum: β₁ (Adam), the momentum of RMSprop/SGD, 0 without.
        dampening: SGD's dampening (0 otherwise).
        nesterov: SGD's Nesterov flag.
        decoupled_decay: AdamW's decoupled weight decay λ_wd (0 otherwise).
        step: The optimizer's step count t (Adam/RMSprop), 0 if unknown.
        eps: ε of Adam/RMSprop (0 for SGD).
        amsgrad: Adam's ``amsgrad`` flag.
        centered: RMSprop's ``centered`` flag.
    """

    kind: str
    selection: ParameterSelection
    diagonal: Tensor
    scale: Tensor
    coupled_decay: Tensor
    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    decoupled_decay: float
    step: int
    eps: float
    amsgrad: bool
    centered: bool

    @property
    def threshold(self) -> float:
        """Largest stable λ_max(P⁻¹(H + W)) at the frozen preconditioner (module docstring).

        Example:
            >>> model = torch.nn.Linear(2, 1)
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            >>> round(optimizer_preconditioner(model, opt).threshold, 10)  # 2(1 + β)/η
            38.0
        """
        eta, beta = self.lr, self.momentum
        if self.kind in ("adam", "adamw"):
            return (2.0 - eta * self.decoupled_decay) * (1.0 + beta) / ((1.0 - beta) * eta)
        return momentum_threshold(eta, beta, nesterov=self.nesterov, dampening=self.dampening)

    def operator(self, op: LinearOperator) -> PreconditionedOperator:
        """The symmetric preconditioned curvature D^{1/2}(op + W)D^{1/2} of a curvature ``op``.

        Raises:
            ValueError: If ``op`` is not of size ``(p, p)`` with p the selection's size.
        """
        p = self.scale.numel()
        if op.shape != (p, p):
            raise ValueError(
                f"the curvature operator must act on the {p} parameters the optimizer updates "
                f"({list(self.selection.names)}); got shape {op.shape}. Build it with "
                "params=list(preconditioner.selection.names)."
            )
        return PreconditionedOperator(op, self.scale, self.coupled_decay)


def momentum_threshold(
    lr: float, momentum: float = 0.0, *, nesterov: bool = False, dampening: float = 0.0
) -> float:
    """Largest stable curvature λ of (heavy-ball / Nesterov) gradient descent at step size η.

    On f(θ) = ½λθ² the step of ``torch.optim.SGD(lr=η, momentum=β, dampening=τ, nesterov=...)``
    (b ← βb + (1 − τ)g, θ ← θ − ηb, or θ ← θ − η(g + βb) with Nesterov, τ = 0) is stable iff
    λ ≤ 2(1 + β)/((1 − τ)η) (heavy ball; 2/η for β = 0) or λ ≤ 2(1 + β)/((1 + 2β)η)
    (Nesterov): the root of the characteristic polynomial that leaves the unit circle does so
    through −1.

    Args:
        lr: η > 0.
        momentum: β in [0, 1). Default 0.
        nesterov: Nesterov's variant (PyTorch's form). Default False.
        dampening: τ in [0, 1) (heavy ball only). Default 0.

    Returns:
        The threshold on λ_max (of H, or of P⁻¹H for a preconditioned heavy ball).

    Raises:
        ValueError: If η <= 0, β or τ is outside [0, 1), or Nesterov with τ != 0.

    Example:
        >>> momentum_threshold(0.1), round(momentum_threshold(0.1, 0.9), 10)
        (20.0, 38.0)

    References:
        Polyak (1964), "Some methods of speeding up the convergence of iteration methods";
        Cohen et al. (2021), "Gradient descent on neural networks typically occurs at the edge
        of stability", ICLR (the threshold 2(1 + β)/η of heavy-ball GD).
    """
    eta = float(lr)
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}.")
    for name, v in (("momentum", momentum), ("dampening", dampening)):
        if not (math.isfinite(float(v)) and 0.0 <= float(v) < 1.0):
            raise ValueError(f"{name} must be in [0, 1); got {v!r}.")
    beta = float(momentum)
    if nesterov:
        if dampening != 0.0:
            raise ValueError("Nesterov momentum needs dampening 0 (as in torch.optim.SGD).")
        return 2.0 * (1.0 + beta) / ((1.0 + 2.0 * beta) * eta)
    return 2.0 * (1.0 + beta) / ((1.0 - float(dampening)) * eta)


def _same(kind: str, key: str, values: list[float]) -> float:
    if any(abs(v - values[0]) > 1e-15 * max(abs(values[0]), 1.0) for v in values):
        raise ValueError(
            f"the parameter groups of this {kind} optimizer use different {key} values "
            f"({sorted(set(values))}); a single stability threshold needs one value. Analyse "
            "the groups separately (params=...) or use one value."
        )
    return values[0]


def optimizer_preconditioner(model: nn.Module, optimizer: torch.optim.Optimizer) -> Preconditioner:
    """Read the frozen preconditioner of ``optimizer`` (after at least one step).

    The parameters measured are those the optimizer updates (in ``model.named_parameters()``
    order); each must belong to ``model`` and, for Adam/RMSprop, have optimizer state. The
    formulas for P and the threshold are in the module docstring.

    Args:
        model: The network whose parameters the optimizer updates.
        optimizer: A ``torch.optim.Adam``, ``AdamW``, ``RMSprop`` or ``SGD`` instance.

    Returns:
        :class:`Preconditioner`.

    Raises:
        TypeError: If ``optimizer`` is not one of the supported classes (subclasses such as
            ``NAdam`` or ``RAdam`` step differently and are refused).
        ValueError: If a parameter is not the model's, has no state yet (run a step first),
            ``maximize=True``, or the groups disagree on a hyperparameter that enters the
            threshold (β₁/momentum, dampening, Nesterov, AdamW's decay).

    References:
        Cohen et al. (2022), "Adaptive gradient methods at the edge of stability" (P of Adam).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> pre = optimizer_preconditioner(model, opt)
        >>> pre.kind, pre.lr, pre.momentum, pre.diagonal.tolist()
        ('sgd', 0.1, 0.9, [1.0, 1.0, 1.0])
    """
    kind = type(optimizer).__name__.lower()
    if not isinstance(optimizer, torch.optim.Optimizer) or kind not in OPTIMIZERS:
        raise TypeError(
            f"optimizer must be a torch.optim Adam, AdamW, RMSprop or SGD; got "
            f"{type(optimizer).__name__}."
        )
    names = {id(p): n for n, p in model.named_parameters()}
    entries: dict[str, tuple[Tensor, dict[str, object]]] = {}
    for group in optimizer.param_groups:
        if group.get("maximize", False):
            raise ValueError("optimizer has maximize=True: it ascends the loss; no threshold.")
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError(
                    "the optimizer updates a tensor that is not a parameter of the model; pass "
                    "the model whose parameters the optimizer was built with."
                )
            entries[names[id(p)]] = (p, group)
    order = [n for n, _ in model.named_parameters() if n in entries]
    if not order:
        raise ValueError("the optimizer updates no parameter of the model.")
    if kind == "adam" and any(g.get("decoupled_weight_decay", False) for _, g in entries.values()):
        kind = "adamw"
    lrs = [_scalar(entries[n][1]["lr"]) for n in order]
    lr_ref = max(lrs)
    if not (math.isfinite(lr_ref) and lr_ref > 0):
        raise ValueError(f"the optimizer's learning rate must be > 0; got {lr_ref}.")
    diag, scale, decay = [], [], []
    steps: list[int] = []
    groups = [entries[n][1] for n in order]
    for n, lr in zip(order, lrs):
        p, group = entries[n]
        state = optimizer.state.get(p, {})
        wd = _scalar(group.get("weight_decay", 0.0))
        if kind in ("adam", "adamw"):
            key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
            if key not in state:
                raise ValueError(
                    f"parameter {n!r} has no Adam state ({key}); run at least one "
                    "optimizer.step() before reading the preconditioner."
                )
            t = int(_scalar(state["step"]))
            beta2 = _scalar(group["betas"][1])  # type: ignore[index]
            v = state[key].detach().to(torch.float64)
            P = (v / (1.0 - beta2**t)).sqrt() + _scalar(group["eps"])
            steps.append(t)
        elif kind == "rmsprop":
            if "square_avg" not in state:
                raise ValueError(
                    f"parameter {n!r} has no RMSprop state (square_avg); run at least one "
                    "optimizer.step() first."
                )
            v = state["square_avg"].detach().to(torch.float64)
            if group.get("centered", False):
                gbar = state["grad_avg"].detach().to(torch.float64)
                v = v - gbar * gbar
            P = v.clamp_min(0.0).sqrt() + _scalar(group["eps"])
            steps.append(int(_scalar(state.get("step", 0))))
        else:
            P = torch.ones_like(p.detach(), dtype=torch.float64)
        d = P.reshape(-1).cpu()
        diag.append(d)
        scale.append((lr / lr_ref) / d)
        coupled = 0.0 if kind == "adamw" else wd
        decay.append(torch.full_like(d, coupled))
    if kind in ("adam", "adamw"):
        momentum = _same(kind, "beta1", [_scalar(g["betas"][0]) for g in groups])  # type: ignore[index]
    else:
        momentum = _same(kind, "momentum", [_scalar(g.get("momentum", 0.0)) for g in groups])
    dampening = _same(kind, "dampening", [_scalar(g.get("dampening", 0.0)) for g in groups])
    nesterov = bool(_same(kind, "nesterov", [float(bool(g.get("nesterov"))) for g in groups]))
    decoupled = 0.0
    if kind == "adamw":
        decoupled = _same(kind, "weight_decay·lr", [_scalar(g["weight_decay"]) *
                          _scalar(g["lr"]) for g in groups]) / lr_ref  # fmt: skip
    eps = _scalar(groups[0].get("eps", 0.0)) if kind != "sgd" else 0.0
    shapes = tuple(tuple(entries[n][0].shape) for n in order)
    selection = ParameterSelection(
        names=tuple(order), shapes=shapes, model_numel=sum(q.numel() for q in model.parameters())
    )
    return Preconditioner(
        kind=kind,
        selection=selection,
        diagonal=torch.cat(diag),
        scale=torch.cat(scale),
        coupled_decay=torch.cat(decay),
        lr=lr_ref,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        decoupled_decay=decoupled,
        step=min(steps) if steps else 0,
        eps=eps,
        amsgrad=bool(groups[0].get("amsgrad", False)),
        centered=bool(groups[0].get("centered", False)),
    )


class PreconditionedOperator(LinearOperator):
    """S = D^{1/2}(A + W)D^{1/2} for a symmetric curvature operator A and diagonals D > 0, W.

    With D = P⁻¹ (one learning rate) S is similar to P⁻¹(A + W), so both have the same
    eigenvalues. A product costs one product with A.

    Args:
        op: The curvature operator A, shape ``(p, p)``.
        scale: D, shape ``(p,)``, positive.
        shift: W, shape ``(p,)`` (``None``: zero).

    Raises:
        ValueError: On mismatched shapes or a non-positive scale.

    Example:
        >>> from dynstab.linalg import DenseOperator
        >>> S = PreconditionedOperator(DenseOperator(torch.eye(2)), torch.tensor([4.0, 1.0]))
        >>> (S @ torch.ones(2)).tolist()
        [4.0, 1.0]
    """

    SELF_ADJOINT = True

    def __init__(self, op: LinearOperator, scale: Tensor, shift: Tensor | None = None) -> None:
        p = op.shape[0]
        if scale.shape != (p,) or not bool((scale > 0).all()):
            raise ValueError(f"scale must be a positive vector of shape ({p},).")
        if shift is not None and shift.shape != (p,):
            raise ValueError(f"shift must have shape ({p},); got {tuple(shift.shape)}.")
        super().__init__(p, op.dtype, op.device)
        self.op = op
        self._root = scale.sqrt().to(dtype=op.dtype, device=op.device)[:, None]
        self._shift = None
        if shift is not None and bool((shift != 0).any()):
            self._shift = (shift * scale).to(dtype=op.dtype, device=op.device)[:, None]

    def _matmat(self, V: Tensor) -> Tensor:
        out = self._root * (self.op @ (self._root * V))
        if self._shift is not None:
            out = out + self._shift * V
        return out


@dataclass(frozen=True)
class PreconditionedSharpness:
    """λ_max of the preconditioned curvature D^{1/2}(H + W)D^{1/2} (= λ₁(P⁻¹(H + W))).

    Attributes:
        value: The largest eigenvalue estimate (a Ritz value: never above λ_max up to
            round-off).
        error_bound: Certified bound on |value − λ_max| (with probability at least
            ``1 − eigen.failure_probability``; ``inf`` when nothing could be certified).
        converged: Whether the bound met the tolerance of the Lanczos config.
        num_matvecs: Curvature products spent.
        threshold: The optimizer's stability threshold (:attr:`Preconditioner.threshold`).
        preconditioner: The :class:`Preconditioner` used.
        curvature: ``"hessian"`` or ``"gauss_newton"``.
        eigen: The full :class:`~dynstab.linalg.EigenResult` (its ``vectors[:, 0]`` is the top
            eigenvector of the symmetric form, a warm start for the next call).
    """

    value: float
    error_bound: float
    converged: bool
    num_matvecs: int
    threshold: float
    preconditioner: Preconditioner
    curvature: str
    eigen: EigenResult

    @property
    def margin(self) -> float:
        """``value / threshold``: > 1 means the frozen-preconditioner step is unstable."""
        return self.value / self.threshold


def preconditioned_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    optimizer: torch.optim.Optimizer | Preconditioner,
    *,
    curvature: str = "hessian",
    config: LanczosConfig | None = None,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    **options: Unpack[DataOptions],
) -> PreconditionedSharpness:
    """Preconditioned sharpness λ_max(P⁻¹(H + W)) of an adaptive optimizer, with certificate.

    Builds the curvature operator of ``loss_fn`` on ``data`` with respect to the parameters the
    optimizer updates, wraps it as :class:`PreconditionedOperator` with the optimizer's frozen
    preconditioner (:func:`optimizer_preconditioner`; W its coupled weight decay) and runs
    :func:`dynstab.linalg.lanczos_top_eigenpairs` on it. Compare ``value`` with ``threshold``
    ((2 + 2β₁)/((1 − β₁)η) for Adam, 38/η at β₁ = 0.9).

    Args:
        model: The network (left as found: mode, buffers, ``.grad``, RNG state).
        loss_fn: Batch-mean loss (½-MSE convention).
        data: One batch or a re-iterable of batches (streamed).
        optimizer: A stepped ``torch.optim`` optimizer, or a :class:`Preconditioner`.
        curvature: ``"hessian"`` (default) or ``"gauss_newton"``.
        config: Lanczos settings (tolerance, product budget, ...); ``None``: defaults
            (relative tolerance 1e-6, 100 products).
        v0: Warm start: the previous call's top eigenvector ``(p,)`` (``eigen.vectors[:, 0]``).
        generator: CPU generator of the random start and certification vectors.
        **options: How the data are read and the model called
            (:class:`~dynstab.curvature.DataOptions`: ``device``, ``unpack``, ``forward``,
            ``allow_stochastic``).

    Returns:
        :class:`PreconditionedSharpness`. Emits
        :class:`~dynstab.errors.ConvergenceWarning` when the budget did not certify the value.

    Raises:
        TypeError: As :func:`optimizer_preconditioner` and the curvature operators, or when
            ``config`` is not a :class:`~dynstab.linalg.LanczosConfig`.
        ValueError: As :func:`optimizer_preconditioner` and the curvature operators.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> r = preconditioned_sharpness(model, half_mse, (X, torch.zeros(2, 1).double()), opt,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> round(r.value, 8), round(r.threshold, 8)  # P = I: λ_max(XᵀX/n) = 2 vs 2/η = 20
        (2.0, 20.0)

    References:
        Cohen et al. (2022), "Adaptive gradient methods at the edge of stability", arXiv:2207.14484.
    """
    check_options("preconditioned_sharpness", options)
    check_choice("curvature", curvature, ("hessian", "gauss_newton"))
    check_generator("generator", generator)
    if config is not None and not isinstance(config, LanczosConfig):
        raise TypeError(f"config must be a LanczosConfig; got {type(config).__name__}.")
    pre = (
        optimizer
        if isinstance(optimizer, Preconditioner)
        else optimizer_preconditioner(model, optimizer)
    )
    names = list(pre.selection.names)
    problem = CurvatureProblem(
        model, loss_fn, data, names, who="preconditioned_sharpness", **options
    )
    cls: type[CurvatureOperator] = (
        HessianOperator if curvature == "hessian" else GaussNewtonOperator
    )
    op = cls.from_problem(problem)
    res = lanczos_top_eigenpairs(
        pre.operator(op), 1, v0=v0, generator=generator, config=config, return_vectors=True
    )
    bound = res.error_bounds if res.error_bounds is not None else torch.full((1,), math.inf)
    return PreconditionedSharpness(
        value=float(res.values[0]),
        error_bound=float(bound[0]),
        converged=res.converged,
        num_matvecs=res.num_matvecs,
        threshold=pre.threshold,
        preconditioner=pre,
        curvature=curvature,
        eigen=res,
    )
