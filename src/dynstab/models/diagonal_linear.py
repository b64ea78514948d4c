"""Diagonal linear network f(x) = ⟨a⊙b, x⟩ (or ⟨u⊙u − v⊙v, x⟩), Wu & Su (2023) §2, R4."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from dynstab._checks import check_choice, check_int, check_positive
from dynstab.models._init import normal, resolve_dtype

__all__ = ["DiagonalLinearNet"]

_FORMS = ("ab", "uv")


class DiagonalLinearNet(nn.Module):
    """Two-layer diagonal linear network with scalar output.

    Form ``"ab"``: f(x) = ⟨a⊙b, x⟩, end-to-end predictor β = a⊙b, parameters ``a``, ``b``.
    Form ``"uv"``: f(x) = ⟨u⊙u − v⊙v, x⟩, β = u⊙u − v⊙v, parameters ``u``, ``v``.

    Initialization: every entry of both parameter vectors is drawn iid N(0, init_scale²) from
    ``generator`` (the E1 setting of Wu & Su (2023) is init_scale = 1).

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

    def extra_repr(self) -> str:  # noqa: D102
        return f"d={self.d}, form={self.form!r}"
