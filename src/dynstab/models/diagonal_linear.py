"""Diagonal linear network f(x) = ⟨a⊙b, x⟩ (or ⟨u⊙u − v⊙v, x⟩) of Wu & Su (ICML 2023)."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab._types import Params
from dynstab.models import closed_form as cf
from dynstab.models._init import normal, resolve_dtype

__all__ = ["DiagonalLinearNet"]

_FORMS = ("ab", "uv")


class DiagonalLinearNet(nn.Module):
    """Two-layer diagonal linear network with scalar output.

    Form ``"ab"``: f(x) = ⟨a⊙b, x⟩, end-to-end predictor β = a⊙b, parameters ``a``, ``b``.
    Form ``"uv"``: f(x) = ⟨u⊙u − v⊙v, x⟩, β = u⊙u − v⊙v, parameters ``u``, ``v``.

    Initialization: every entry of both parameter vectors is drawn iid N(0, init_scale²) from
    ``generator`` (the large initialization of the ``wu-su-2023/e1`` reproduction is
    init_scale = 1).

    Args:
        d: Input dimension, >= 1.
        form: ``"ab"`` (default, as in the reproduction) or ``"uv"``.
        init_scale: Standard deviation of the initial entries, > 0.
        generator: Random source for the initialization; None uses torch's default.
        dtype: Parameter dtype; None uses torch's default dtype.

    Raises:
        ValueError: If ``d < 1``, ``form`` is unknown or ``init_scale <= 0``.

    Example:
        >>> net = DiagonalLinearNet(3, generator=torch.Generator().manual_seed(0))
        >>> [name for name, _ in net.named_parameters()]
        ['a', 'b']
        >>> x = torch.randn(5, 3)
        >>> bool(torch.allclose(net(x), x @ net.beta()))
        True
    """

    def __init__(
        self,
        d: int,
        *,
        form: str = "ab",
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d = check_int("d", d, minimum=1)
        self.form = check_choice("form", form, _FORMS)
        std = check_positive("init_scale", init_scale)
        dt = resolve_dtype(dtype)
        first = nn.Parameter(normal((d,), std, generator, dt))
        second = nn.Parameter(normal((d,), std, generator, dt))
        names = self.param_names
        self.register_parameter(names[0], first)
        self.register_parameter(names[1], second)

    @property
    def param_names(self) -> tuple[str, str]:
        """Names of the two parameter vectors: ``("a", "b")`` or ``("u", "v")``."""
        return ("a", "b") if self.form == "ab" else ("u", "v")

    @classmethod
    def from_tensors(cls, first: Tensor, second: Tensor, *, form: str = "ab") -> DiagonalLinearNet:
        """Build a net whose parameters are copies of the given vectors.

        Args:
            first: ``a`` (form ``"ab"``) or ``u`` (form ``"uv"``), shape ``(d,)``.
            second: ``b`` or ``v``, shape ``(d,)``, same dtype as ``first``.
            form: ``"ab"`` or ``"uv"``.

        Returns:
            A new :class:`DiagonalLinearNet` with the dtype of ``first``.

        Raises:
            ValueError: If the vectors are not 1-D of equal length.
        """
        if first.ndim != 1 or second.shape != first.shape:
            raise ValueError(
                "from_tensors needs two 1-D vectors of the same length; got shapes "
                f"{tuple(first.shape)} and {tuple(second.shape)}."
            )
        # A private generator keeps torch's global RNG untouched (the draw is overwritten).
        net = cls(first.shape[0], form=form, dtype=first.dtype, generator=torch.Generator())
        net = net.to(first.device)
        with torch.no_grad():
            p1, p2 = net.factors()
            p1.copy_(first.detach())
            p2.copy_(second.detach().to(first.dtype))
        return net

    def factors(self) -> tuple[Tensor, Tensor]:
        """Return the two parameter vectors ``(a, b)`` or ``(u, v)``, each of shape ``(d,)``."""
        p1, p2 = self.param_names
        return cast(Tensor, self._parameters[p1]), cast(Tensor, self._parameters[p2])

    def beta(self) -> Tensor:
        """Return the end-to-end linear predictor β, shape ``(d,)`` (a⊙b or u⊙u − v⊙v)."""
        first, second = self.factors()
        if self.form == "ab":
            return first * second
        return first * first - second * second

    def forward(self, x: Tensor) -> Tensor:
        """Return f(x) = ⟨β, x⟩ for inputs of shape ``(n, d)``; output shape ``(n,)``."""
        if x.shape[-1] != self.d:
            raise ValueError(
                f"DiagonalLinearNet expects inputs of shape (n, {self.d}); got {tuple(x.shape)}."
            )
        return x @ self.beta()

    def closed_form_grad(self, params: Params, X: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """Gradients of the ½-MSE batch loss for R stacked runs, in closed form.

        With residuals r_b = ⟨β, x_b⟩ − y_b and g_β = (1/B) Σ_b r_b x_b (the gradient with
        respect to β), form ``"ab"`` gives ∇_a = g_β ⊙ b, ∇_b = g_β ⊙ a and form ``"uv"``
        ∇_u = 2 g_β ⊙ u, ∇_v = −2 g_β ⊙ v (chain rule through β). Cost: O(R·B·d).

        Args:
            params: ``{"a": (R, d), "b": (R, d)}`` (or ``u``, ``v``): R runs' parameters.
            X: One batch per run, ``(R, B, d)`` (full-batch GD: ``X.expand(R, n, d)``).
            y: Targets ``(R, B)``, one per input.

        Returns:
            ``({"a": ∇_a, "b": ∇_b}, L)`` (or ``u``, ``v``), each gradient ``(R, d)``, and the
            batch losses L_r = (1/B) Σ_b ½ r_b², shape ``(R,)``.

        Raises:
            ValueError: If ``params`` lacks the form's two factors or ``X`` is not
                ``(R, B, d)`` for this ``d``.

        Example:
            >>> a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
            >>> net = DiagonalLinearNet.from_tensors(a, b)
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}  # R = 1 run
            >>> g, loss = net.closed_form_grad(p, torch.ones(1, 1, 2), torch.zeros(1, 1))
            >>> # β = a⊙b = (3, 0), r = ⟨β, x⟩ − y = 3, g_β = r·x = (3, 3), L = ½·3²
            >>> g["a"].tolist(), g["b"].tolist(), loss.tolist()  # g_β⊙b and g_β⊙a
            ([[9.0, 0.0]], [[3.0, 6.0]], [4.5])
        """
        first_name, second_name = self.param_names
        first, second = params[first_name], params[second_name]
        Xr, out = self._outputs(params, X)
        B = Xr.shape[1]
        r, loss = cf.half_mse_residual(out, y)
        g_beta = cf.linear_grad(r.transpose(1, 2), Xr)[:, 0, :]
        if B != 1:
            g_beta = g_beta * (1.0 / B)
        if self.form == "ab":
            grads = {first_name: g_beta * second, second_name: g_beta * first}
        else:
            grads = {first_name: 2.0 * g_beta * first, second_name: -2.0 * g_beta * second}
        return grads, loss

    def closed_form_loss(self, params: Params, X: Tensor, y: Tensor) -> Tensor:
        """The batch losses ``(R,)`` of :meth:`closed_form_grad`, from the forward pass alone.

        Example:
            >>> net = DiagonalLinearNet(3, generator=torch.Generator().manual_seed(0))
            >>> p = {k: v.detach()[None] for k, v in net.named_parameters()}
            >>> X, y = torch.randn(1, 4, 3), torch.randn(1, 4)
            >>> bool(torch.equal(net.closed_form_loss(p, X, y), net.closed_form_grad(p, X, y)[1]))
            True
        """
        return cf.half_mse_residual(self._outputs(params, X)[1], y)[1]

    def _outputs(self, params: Params, X: Tensor) -> tuple[Tensor, Tensor]:
        """The runs' inputs ``(R, B, d)`` and outputs ``(R, B, 1)``."""
        first, second = (params[k] for k in self.param_names)
        R = cf.check_params(params, self.param_names)
        Xr = cf.batched_inputs(X, R, self.d)
        beta = first * second if self.form == "ab" else first * first - second * second
        return Xr, cf.linear_apply(Xr, beta[:, None, :]).transpose(1, 2)

    def extra_repr(self) -> str:  # noqa: D102
        return f"d={self.d}, form={self.form!r}"
