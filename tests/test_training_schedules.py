"""Tests of dynstab.training.schedules."""

from __future__ import annotations

import pytest

from dynstab.training import Constant, Schedule, Warmup, constant, warmup


def test_constant_is_one() -> None:
    s = constant()
    assert isinstance(s, Constant)
    assert isinstance(s, Schedule)
    assert [s(t) for t in (0, 1, 10**9)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kind", "power", "k"), [("linear", None, 1.0), ("cubic", None, 3.0), ("poly", 2.5, 2.5)]
)
def test_warmup_is_min_one_power(kind: str, power: float | None, k: float) -> None:
    T = 7
    s = warmup(T, kind=kind, power=power)
    assert isinstance(s, Warmup)
    assert s.power == k
    for t in range(3 * T):
        assert s(t) == pytest.approx(min(1.0, (t + 1) / T) ** k, rel=1e-15)
    assert s(T - 2) < 1.0
    assert s(T - 1) == 1.0
    assert s(10**6) == 1.0


def test_warmup_errors() -> None:
    with pytest.raises(ValueError, match="needs power"):
        warmup(5, kind="poly")
    with pytest.raises(ValueError, match="power is only used"):
        warmup(5, kind="cubic", power=2.0)
    with pytest.raises(ValueError, match="unknown warm-up kind"):
        warmup(5, kind="cosine")
    with pytest.raises(ValueError, match="warmup steps must be >= 1"):
        warmup(0)
    with pytest.raises(ValueError, match="power must be finite and > 0"):
        warmup(3, kind="poly", power=-1.0)
