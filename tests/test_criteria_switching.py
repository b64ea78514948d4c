"""MMS21's switching-system lemmas (dynstab.criteria.switching) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from dynstab.criteria import SwitchingLemma, switching_lemma


def test_commuting_modes_by_hand() -> None:
    H1, H2 = torch.diag(torch.tensor([5.0, 1.0])), torch.diag(torch.tensor([4.0, 3.0]))
    z = torch.zeros(2)
    r = switching_lemma([H1, H2], [z, z], lr=0.6, radius=1e-3)  # 2/η = 3.33; q = e1
    assert isinstance(r, SwitchingLemma)
    assert r.lambdas == (5.0, 4.0)
    assert (r.lambda_lower, r.delta, r.gamma) == (4.0, 0.0, 0.0)
    assert r.lambda_max_modes == (5.0, 4.0)
    assert r.prediction == "escape"
    assert torch.equal(r.direction.abs(), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert r == switching_lemma([H1, H2], [z, z], lr=0.6, radius=1e-3)  # same inputs, same result
    assert "direction" not in repr(r)
    assert switching_lemma([H1, H2], [z, z], lr=0.4, radius=1e-3).prediction == "stay"
    assert switching_lemma([H1, H2], [z, z], lr=0.5, radius=1e-3).prediction == "undetermined"
    # γ/ε = 1e-3/1e-3 = 1 moves the escape threshold from 2/η to 2/η + 1
    g = torch.tensor([1e-3, 0.0])
    assert switching_lemma([H1], [g], lr=0.5, radius=1e-3).prediction == "undetermined"
    assert switching_lemma([H1], [g], lr=0.6, radius=1e-3).prediction == "escape"


def test_non_commuting_modes_by_hand() -> None:
    """H1 = diag(5, 1), H2 = [[4, ½], [½, 3]]: the mean's top eigenvector is the best q.

    Candidates (score λ_lower − δ): e1 (H1's): λ = (5, 4), δ = ‖H2e1 − 4e1‖ = ½, score 3.5;
    H2's top vector (angle π/8): score 4.2071 − √2 ≈ 2.79; the mean [[4.5, ¼], [¼, 2]]'s top
    vector, angle φ = atan(0.2)/2: score ≈ 3.696 — kept.
    """
    H1 = torch.tensor([[5.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    H2 = torch.tensor([[4.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    z = torch.zeros(2, dtype=torch.float64)
    phi = math.atan(0.2) / 2
    c, s = math.cos(phi), math.sin(phi)
    lam1 = 5 * c * c + s * s
    lam2 = 4 * c * c + 3 * s * s + 2 * 0.5 * c * s
    d1 = math.hypot(5 * c - lam1 * c, s - lam1 * s)
    d2 = math.hypot(4 * c + 0.5 * s - lam2 * c, 0.5 * c + 3 * s - lam2 * s)
    delta = max(d1, d2)
    assert lam2 - delta > 3.5  # the hand computation agrees that this candidate wins
    r = switching_lemma([H1, H2], [z, z], lr=0.1, radius=1.0)
    assert r.lambdas == pytest.approx((lam1, lam2), rel=1e-12)
    assert r.lambda_lower == pytest.approx(lam2, rel=1e-12)
    assert r.delta == pytest.approx(delta, rel=1e-10)
    assert r.lambda_max_modes == pytest.approx((5.0, 3.5 + math.sqrt(0.5)), rel=1e-12)
    assert float(r.direction.abs() @ torch.tensor([c, s], dtype=torch.float64)) == pytest.approx(
        1.0, abs=1e-12
    )
    # escape iff 2/η < λ_lower − δ (γ = 0); stay iff 2/η ≥ max λ_max = 5
    edge = lam2 - delta
    assert switching_lemma([H1, H2], [z, z], lr=2 / edge * 1.001, radius=1.0).prediction == "escape"
    assert (
        switching_lemma([H1, H2], [z, z], lr=2 / edge * 0.999, radius=1.0).prediction
        == "undetermined"
    )
    assert switching_lemma([H1, H2], [z, z], lr=0.4, radius=1.0).prediction == "stay"
    assert switching_lemma([H1, H2], [z, z], lr=0.4001, radius=1.0).prediction == "undetermined"
    # γ = |qᵀg|: a gradient along q raises the escape threshold by γ/ε
    g = torch.tensor([c, s], dtype=torch.float64) * 0.01
    r = switching_lemma([H1, H2], [g, -g], lr=1.0, radius=0.01)
    assert r.gamma == pytest.approx(0.01, rel=1e-10)


def test_asymmetric_input_is_symmetrised() -> None:
    H = torch.tensor(
        [[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64
    )  # symmetric part [[2, ½], [½, 2]]
    r = switching_lemma([H], [torch.zeros(2)], lr=0.1, radius=1.0)
    assert r.lambda_max_modes == pytest.approx((2.5,), rel=1e-12)
    assert r.delta == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("hessians", "gradients", "lr", "radius", "match"),
    [
        ([torch.eye(2)], [], 0.5, 1e-3, "one gradient per mode"),
        ([], [], 0.5, 1e-3, "one gradient per mode"),
        ([torch.eye(2)], [torch.zeros(2)], 0.0, 1e-3, "lr must be finite and > 0"),
        ([torch.eye(2)], [torch.zeros(2)], 0.5, -1.0, "radius"),
        ([torch.ones(2, 3)], [torch.zeros(2)], 0.5, 1e-3, "square"),
        ([torch.eye(2), torch.eye(3)], [torch.zeros(2)] * 2, 0.5, 1e-3, "shape of hessians"),
        ([torch.eye(2)], [torch.zeros(3)], 0.5, 1e-3, "P = 2 finite entries"),
        ([torch.eye(2)], [torch.tensor([0.0, math.nan])], 0.5, 1e-3, "not all finite"),
        ([torch.full((2, 2), math.inf)], [torch.zeros(2)], 0.5, 1e-3, "finite"),
    ],
)
def test_bad_input_says_what_must_hold(hessians, gradients, lr, radius, match) -> None:
    with pytest.raises(ValueError, match=match):
        switching_lemma(hessians, gradients, lr=lr, radius=radius)
