"""Learning-rate schedules: multipliers of the target learning rate.

A schedule maps the 0-based update index ``t`` to a multiplier ``m_t``; update ``t`` uses
η_t = ``lr`` · m_t. The default is :func:`constant` (m_t = 1). :func:`warmup` ramps up
polynomially and then stays at 1: there is **no decay** by default, because the stability
bounds (2/η, Tr H ≤ 2/(qη), ...) refer to the learning rate in effect at convergence
(Wu & Su (2023) train at a constant learning rate after the warm-up). Any callable
``int -> float`` is accepted where a schedule is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dynstab._checks import check_choice, check_int, check_positive

__all__ = ["Constant", "Schedule", "Warmup", "constant", "warmup"]


@runtime_checkable
class Schedule(Protocol):
    """Anything callable as ``schedule(t) -> multiplier`` for a 0-based update index ``t``."""

    def __call__(self, step: int) -> float: ...  # noqa: D102


@dataclass(frozen=True)
class Constant:
    """The constant schedule, m_t = 1 for every update ``t``.

    Example:
        >>> Constant()(0), Constant()(10**6)
        (1.0, 1.0)
    """

    def __call__(self, step: int) -> float:
        """Return the multiplier 1.0."""
        return 1.0


@dataclass(frozen=True)
class Warmup:
    """Polynomial warm-up without decay: m_t = min(1, (t + 1)/T)^k.

    Update ``t`` (0-based) uses the fraction ``(t + 1)/T`` of the ramp, so the first update
    already moves (m_0 = T^{-k}) and update ``T − 1`` is the first at the full rate; from then
    on m_t = 1 forever.

    Attributes:
        steps: Length T of the ramp (>= 1).
        power: Exponent k (> 0): 1 for linear, 3 for cubic.

    Example:
        >>> s = Warmup(steps=4, power=1.0)
        >>> [s(t) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    steps: int
    power: float

    def __post_init__(self) -> None:
        check_int("warmup steps", self.steps, minimum=1)
        check_positive("warmup power", self.power)

    def __call__(self, step: int) -> float:
        """Return min(1, (step + 1)/steps)^power."""
        frac = (step + 1) / self.steps
        return 1.0 if frac >= 1.0 else math.pow(frac, self.power)


def constant() -> Constant:
    """Return the constant schedule (multiplier 1 at every update).

    Returns:
        A :class:`Constant` schedule.

    Example:
        >>> constant()(3)
        1.0
    """
    return Constant()


_KIND_POWER = {"linear": 1.0, "cubic": 3.0}


def warmup(steps: int, kind: str = "cubic", power: float | None = None) -> Warmup:
    """Return a polynomial warm-up m_t = min(1, (t + 1)/steps)^k, constant afterwards.

    Args:
        steps: Length of the ramp in updates, >= 1 (e.g. ¼–⅓ of the training budget).
        kind: ``"cubic"`` (k = 3, the default of the Wu & Su protocol), ``"linear"`` (k = 1)
            or ``"poly"`` (k = ``power``, required).
        power: Exponent for ``kind="poly"``; must be None for the other kinds.

    Returns:
        A :class:`Warmup` schedule.

    Raises:
        ValueError: If ``kind`` is unknown, ``power`` is missing for ``"poly"`` or given for
            another kind, or ``steps``/``power`` are out of range.

    Example:
        >>> warmup(2, kind="cubic")(0)
        0.125
    """
    check_choice("warm-up kind", kind, ("cubic", "linear", "poly"))
    if kind == "poly":
        if power is None:
            raise ValueError("warmup(kind='poly') needs power; got None. Pass e.g. power=2.0.")
        k = check_positive("power", power)
    else:
        if power is not None:
            raise ValueError(
                f"power is only used with kind='poly'; got kind={kind!r} and power={power!r}. "
                "Drop power or use kind='poly'."
            )
        k = _KIND_POWER[kind]
    return Warmup(steps=steps, power=k)
