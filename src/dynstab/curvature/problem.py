"""The curvature problem: model, loss, data, parameter selection and device, set up once.

:class:`CurvatureProblem` validates everything a curvature computation needs once and is then
queried by the operators, the Jacobian/Gram routines, the dense oracles and
:func:`dynstab.sharpness`:

* the parameter selection (:mod:`dynstab.curvature.params`) and the point to evaluate at;
* the data, streamed batch by batch and moved to the device of the parameters
  (:mod:`dynstab.curvature.data`);
* how the model is called (``forward(model, inputs)`` hook, functional call at the point);
* one evaluation context (:meth:`CurvatureProblem.evaluation`) around every pass: attention
  uses twice-differentiable kernels, the global RNG is reset to the state it had when the
  problem was set up (every pass sees the same dropout masks and the same loader shuffle, so
  the curvature is a fixed matrix) and restored to the caller's state afterwards, and with
  ``allow_stochastic=True`` the model's buffers (BatchNorm running statistics) are replaced by
  private copies. The model, its mode, buffers, ``.grad`` and the caller's RNG state are left
  exactly as found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import torch
from torch import Tensor, nn

from dynstab._checks import check_callable
from dynstab._checks import check_options as check_keywords
from dynstab._types import Data, ForwardFn, Inputs, LossFn, Params, ParamSpec, UnpackFn
from dynstab.curvature.data import Dataset, prepare_data
from dynstab.curvature.functional import (
    call_model,
    check_loss,
    check_model_mode,
    describe_inputs,
    differentiable_kernels,
    num_outputs,
)
from dynstab.curvature.params import ParameterSelection, select_parameters
from dynstab.errors import DeviceError

__all__ = ["CurvatureProblem", "DataOptions", "Progress", "ProgressFn", "check_options"]


@dataclass(frozen=True)
class Progress:
    """A progress record passed to ``callback=`` functions.

    Attributes:
        phase: What is running: ``"scan"`` (validation pass over the data), ``"jacobian"``
            (per-sample Jacobian / Gram batches), ``"dense"`` (building a dense matrix),
            ``"lanczos"``, ``"hutchinson"`` or ``"density"``.
        event: ``"start"``, ``"step"`` or ``"end"`` of the phase.
        step: Units of the phase done so far (batches, or operator products).
        total: Units the phase will take when known, else ``None`` (an upper bound for
            Lanczos: its product budget).
        num_matvecs: Operator products spent so far by the whole call.
        detail: Extra numbers (e.g. ``{"value": λ, "converged": 1.0}`` at a Lanczos end).
    """

    phase: str
    event: str
    step: int
    total: int | None = None
    num_matvecs: int = 0
    detail: Mapping[str, float] = field(default_factory=dict)


#: ``callback(progress)``; its return value is ignored.
ProgressFn = Callable[[Progress], object]


class _ForwardHook(nn.Module):
    """``forward(model, inputs)`` as a module, so :func:`functional_call` can reparametrise it."""

    def __init__(self, model: nn.Module, fn: ForwardFn) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor:
        inputs: Inputs = kwargs if kwargs else (args[0] if len(args) == 1 else tuple(args))
        return self.fn(self.model, inputs)


class DataOptions(TypedDict, total=False):
    """How the data are read and the model is called: the keywords every curvature routine shares.

    :class:`CurvatureProblem`, the operators (:class:`~dynstab.curvature.HessianOperator`,
    :class:`~dynstab.curvature.GaussNewtonOperator`), the one-call curvature functions
    (:func:`~dynstab.curvature.dense_hessian`, :func:`~dynstab.curvature.dense_gauss_newton`,
    :func:`~dynstab.curvature.dense_jacobian`, :func:`~dynstab.curvature.per_sample_jacobian`,
    :func:`~dynstab.curvature.gram_matrix`, :func:`~dynstab.curvature.preconditioned_sharpness`)
    and :func:`dynstab.sharpness` take these as keywords, documented and checked here once; an
    unknown keyword is a TypeError naming the valid ones.

    Attributes:
        allow_stochastic: Accept train-mode BatchNorm / active Dropout (every pass sees the same
            dropout masks; BatchNorm running statistics are updated on private copies only).
            Default: ``False``.
        device: Device of the computation; ``None`` (default) means that of the selected
            parameters. Batches are moved there; the model itself is never moved.
        unpack: ``unpack(batch) -> (inputs, targets)`` for batch layouts other than tuples and
            dicts with a ``"y"``/``"labels"`` entry. Default: ``None``.
        forward: ``forward(model, inputs) -> outputs`` for models not called as
            ``model(inputs)``. Default: ``None``.

    Example:
        >>> from dynstab.curvature import dense_jacobian
        >>> opts: DataOptions = {"forward": lambda m, x: 2 * m(x)}
        >>> dense_jacobian(torch.nn.Linear(1, 1, bias=False), torch.ones(2, 1), **opts).tolist()
        [[2.0], [2.0]]
    """

    allow_stochastic: bool
    device: torch.device | str | None
    unpack: UnpackFn | None
    forward: ForwardFn | None


def check_options(who: str, options: Mapping[str, object], *extra: type) -> None:
    """Refuse keywords that are not fields of :class:`DataOptions` or of the ``extra`` TypedDicts.

    Raises:
        TypeError: On an unknown keyword (the message lists the valid ones).
    """
    check_keywords(who, options, DataOptions, *extra)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class CurvatureProblem:
    """Model, loss, data, parameter selection and device, validated once.

    Args:
        model: The network; never modified (mode, buffers, ``.grad`` left as found).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean, or ``None`` for
            output-only quantities (Jacobians, Gram matrices; batches then need no targets).
        data: One batch or a re-iterable of batches (see :mod:`dynstab.curvature.data`).
        params: Parameter selection (see :mod:`dynstab.curvature.params`); ``None`` means the
            parameters with ``requires_grad=True``.
        who: Name used in error messages.
        **options: How the data are read and the model called (:class:`DataOptions`:
            ``allow_stochastic``, ``device``, ``unpack``, ``forward``).

    Raises:
        TypeError: If ``model``, ``loss_fn``, ``unpack``, ``forward``, ``params`` or ``data``
            have the wrong type (a one-shot iterator is refused).
        ValueError: As :func:`~dynstab.curvature.params.select_parameters` and
            :func:`~dynstab.curvature.functional.check_model_mode`;
            :class:`~dynstab.errors.DeviceError` if ``device`` differs from the parameters'.

    Example:
        >>> from dynstab.losses import half_mse
        >>> model = torch.nn.Linear(2, 1).double()
        >>> X, y = torch.ones(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
        >>> prob = CurvatureProblem(model, half_mse, [(X[:3], y[:3]), (X[3:], y[3:])])
        >>> prob.n, prob.outputs_per_sample, prob.selection.numel
        (4, 1, 3)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | None,
        data: Data | Dataset | object,
        params: ParamSpec = None,
        *,
        who: str = "CurvatureProblem",
        **options: Unpack[DataOptions],
    ) -> None:
        check_options(who, options)
        allow_stochastic = bool(options.get("allow_stochastic", False))
        device, forward = options.get("device"), options.get("forward")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{who}: model must be a torch.nn.Module; got {type(model).__name__}.")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"{who}: loss_fn must be callable; got {type(loss_fn).__name__}.")
        if forward is not None:
            check_callable("forward", forward, "forward(model, inputs) -> outputs")
        self.selection: ParameterSelection
        self.selection, values = select_parameters(model, params, who=who)
        check_model_mode(model, allow_stochastic=allow_stochastic)
        first = next(iter(values.values()))
        if device is not None:
            try:
                wanted = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise TypeError(
                    f"{who}: device must be a torch.device or a string like 'cpu' or 'cuda:0'; "
                    f"got {device!r}."
                ) from exc
            if not _same_device(wanted, first.device):
                raise DeviceError(
                    f"{who}: device={str(wanted)!r} but the parameters are on {first.device}; "
                    "the model is never moved. Call model.to(device) first, or omit device= "
                    "(it defaults to the parameters' device)."
                )
        self.model = model
        self.loss_fn = loss_fn
        self.allow_stochastic = allow_stochastic
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        #: Selected parameter values (detached views, not copies) at which to evaluate.
        self.point: Params = values
        fixed = {n: t.detach() for n, t in model.named_parameters() if n not in values}
        if allow_stochastic:  # train-mode BatchNorm writes its running statistics: use copies
            fixed.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self._module: nn.Module = model if forward is None else _ForwardHook(model, forward)
        self._prefix = "" if forward is None else "model."
        self._fixed = {self._prefix + n: t for n, t in fixed.items()}
        self.data: Dataset = prepare_data(
            data,
            unpack=options.get("unpack"),
            device=self.device,
            require_targets=loss_fn is not None,
        )
        self._cuda = self.device.type == "cuda"
        self._rng_cpu = torch.get_rng_state()
        self._rng_dev = torch.cuda.get_rng_state(self.device) if self._cuda else None
        self._depth = 0
        self._outputs: int | None = None
        self._loss_value: float | None = None

    # -- evaluation ----------------------------------------------------------------------------

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """Context of one pass: differentiable kernels, the problem's RNG stream (re-entrant).

        On entry the global RNG (CPU, and the CUDA device in use) is set to its state at
        set-up; on exit the caller's state is restored.
        """
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            with ExitStack() as stack:
                devices = [self.device] if self._cuda else []
                stack.enter_context(torch.random.fork_rng(devices=devices))
                torch.set_rng_state(self._rng_cpu)
                if self._rng_dev is not None:
                    torch.cuda.set_rng_state(self._rng_dev, self.device)
                stack.enter_context(differentiable_kernels())
                yield
        finally:
            self._depth -= 1

    def leaves(self) -> Params:
        """Fresh leaf copies (``requires_grad=True``) of the point, for autograd."""
        return {n: t.clone().requires_grad_(True) for n, t in self.point.items()}

    def outputs(
        self, values: Mapping[str, Tensor], inputs: Inputs, *, explain: bool = True
    ) -> Tensor:
        """Model outputs on ``inputs`` with the selected parameters set to ``values``.

        Args:
            values: ``{name: tensor}`` for the selected names (any subset).
            inputs: The batch inputs.
            explain: Wrap a failing forward pass in a ``ValueError`` that names the input
                shapes (``False`` inside functorch transforms, whose callers handle errors).

        Raises:
            ValueError: If the model fails on these inputs (shape or dtype mismatch).
        """
        P = dict(self._fixed)
        for n, t in values.items():
            P[self._prefix + n] = t
        if not explain:
            return call_model(self._module, P, inputs)
        try:
            return call_model(self._module, P, inputs)
        except NotImplementedError:
            raise
        except RuntimeError as exc:
            raise ValueError(
                f"model(inputs) failed for inputs of {describe_inputs(inputs)} (parameters are "
                f"{self.dtype}): {exc}. Check the input shape and dtype."
            ) from exc

    def batch_loss(
        self, values: Mapping[str, Tensor], inputs: Inputs, targets: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(outputs, loss)`` of one batch, with shape and finiteness checks.

        Raises:
            ValueError: As :func:`~dynstab.curvature.functional.check_loss`, or if the problem
                has no loss function.
        """
        if self.loss_fn is None or targets is None:
            raise ValueError("this curvature problem has no loss function or no targets.")
        out = self.outputs(values, inputs)
        return out, check_loss(out, targets, self.loss_fn(out, targets))

    def batches(self) -> Iterator[tuple[int, Inputs, Tensor | None, float]]:
        """``(b, inputs, targets, weight n_b/n)`` for every batch; use inside :meth:`evaluation`."""
        weights = self.data.weights()
        for b, (inputs, targets) in enumerate(self.data):
            yield b, inputs, targets, weights[b]

    # -- the validation pass -------------------------------------------------------------------

    def scan(self, callback: ProgressFn | None = None) -> None:
        """One validating pass (no gradients): sizes, outputs per sample and the loss.

        Runs once; later calls return immediately. ``callback`` receives a ``"scan"`` record
        per batch.

        Raises:
            ValueError: On bad batches, outputs inconsistent across batches, or a loss that is
                not a finite scalar.
        """
        if self._outputs is not None:
            return
        total = 0.0
        C: int | None = None
        count = 0
        with torch.no_grad(), self.evaluation():
            for b, (inputs, targets) in enumerate(self.data):
                if self.loss_fn is not None:
                    out, loss = self.batch_loss(self.point, inputs, targets)
                    total += float(loss) * (out.shape[0] if out.ndim else 1)
                else:
                    out = self.outputs(self.point, inputs)
                c = num_outputs(out)
                if C is not None and c != C:
                    raise ValueError(
                        f"the model gives {c} outputs per sample on batch {b} but {C} on batch 0;"
                        " every batch must give the same output size."
                    )
                C = c
                count += int(out.shape[0]) if out.ndim else 1
                if callback is not None:
                    callback(Progress("scan", "step", b + 1))
        assert C is not None
        if count != self.data.n:
            raise ValueError(
                f"the model returned {count} rows of outputs for {self.data.n} samples; its "
                "outputs need a leading sample axis."
            )
        self._outputs = C
        self._loss_value = total / self.data.n if self.loss_fn is not None else None

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.data.n

    @property
    def outputs_per_sample(self) -> int:
        """Outputs per sample ``C`` (after the validation pass)."""
        self.scan()
        assert self._outputs is not None
        return self._outputs

    @property
    def loss_value(self) -> float:
        """``L(θ) = Σ_b (n_b/n) L_b`` at the point (``nan`` without a loss function)."""
        self.scan()
        return float("nan") if self._loss_value is None else self._loss_value
