"""The one sampling rule shared by trainers and criteria (dynstab.sampling)."""

from __future__ import annotations

import pytest
import torch

from dynstab.sampling import Sampling, is_full_batch, mixing_p, q_factor


@pytest.mark.parametrize(
    ("n", "B", "scheme", "p", "q"),
    [
        (10, 1, "with", 1.0, 1.0),
        (10, 4, "with", 0.25, 0.25 + 0.75 / 10),
        (10, 4, "without", 6 / 36, 0.25),  # (n − B)/(B(n − 1)); q = 1/B exactly
        (10, 10, "without", 0.0, 0.1),  # GD
        (1, 1, "without", 0.0, 1.0),
    ],
)
def test_p_and_q_match_the_hand_computed_values(n, B, scheme, p, q):
    s = Sampling(n, B, scheme)
    assert s.p == pytest.approx(p, rel=1e-15)
    assert s.q == pytest.approx(q, rel=1e-15)
    assert mixing_p(n, B, scheme) == s.p
    assert q_factor(n, B, scheme) == s.q


def test_gd_is_b_equals_n_without_replacement():
    s = Sampling.gd(7)
    assert (s.B, s.scheme, s.is_full_batch, s.p) == (7, "without", True, 0.0)
    assert Sampling(7, None) == s
    assert not Sampling(7, 7, "with").is_full_batch  # a multiset of n draws is still SGD
    assert is_full_batch(7, None, "with")
    assert is_full_batch(7, 7, "reshuffle")


def test_reshuffle_has_no_mixture_weight():
    s = Sampling(8, 2, "reshuffle")
    assert not s.iid
    with pytest.raises(ValueError, match="reshuffl"):
        _ = s.p
    with pytest.raises(ValueError, match="sampling"):
        mixing_p(8, 2, "reshuffle")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 0}, ValueError, "n"),
        ({"n": 4, "batch_size": 5, "scheme": "without"}, ValueError, "batch_size must be <= n"),
        ({"n": 4, "batch_size": 0}, ValueError, "batch_size"),
        ({"n": 4, "scheme": "sometimes"}, ValueError, "sampling"),
        ({"n": 4, "scheme": 3}, TypeError, "sampling must be a str"),
        ({"n": 4.0}, TypeError, "n"),
    ],
)
def test_bad_sampling_is_refused_with_a_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Sampling(**kwargs)


def test_sampler_follows_the_rule_and_is_seeded():
    s = Sampling(6, 3, "without")
    a = s.sampler(torch.Generator().manual_seed(1))
    b = s.sampler(torch.Generator().manual_seed(1))
    for _ in range(5):
        ia, ib = a.next(), b.next()
        assert torch.equal(ia, ib)
        assert ia.numel() == 3
        assert ia.unique().numel() == 3
    epoch = Sampling(6, 3, "reshuffle").sampler(torch.Generator().manual_seed(0))
    seen = torch.cat([epoch.next(), epoch.next()])
    assert sorted(seen.tolist()) == list(range(6))
    assert Sampling(6, 3, "with").label == "SGD (B = 3, with replacement)"
