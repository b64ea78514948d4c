"""Tests of dynstab.training.samplers: the three batch schemes and their randomness."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dynstab.training.samplers import BatchSampler, is_full_batch, make_generator


def sampler(n: int, B: int, sampling: str, seed: int = 0) -> BatchSampler:
    return BatchSampler(n, B, sampling, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampling", ["with", "without", "reshuffle"])
def test_same_seed_same_stream_and_shapes(sampling: str) -> None:
    a, b = sampler(10, 3, sampling, seed=4), sampler(10, 3, sampling, seed=4)
    for _ in range(12):
        ia, ib = a.next(), b.next()
        assert ia.shape == (3,)
        assert ia.dtype == torch.int64
        assert torch.equal(ia, ib)
        assert int(ia.min()) >= 0
        assert int(ia.max()) < 10


def test_without_replacement_batches_have_distinct_indices() -> None:
    s = sampler(6, 4, "without")
    for _ in range(50):
        assert len(set(s.next().tolist())) == 4


def test_with_replacement_allows_duplicates_and_batches_larger_than_n() -> None:
    s = sampler(3, 5, "with")
    batches = [s.next().tolist() for _ in range(20)]
    assert all(len(b) == 5 for b in batches)  # B > n is allowed with replacement
    assert all(len(set(b)) < 5 for b in batches)  # pigeonhole: duplicates in every batch


def test_reshuffle_is_an_epochwise_permutation_dropping_the_remainder() -> None:
    n, B = 7, 3  # two batches per epoch, one index dropped per epoch
    s = sampler(n, B, "reshuffle", seed=2)
    for _ in range(5):
        epoch = s.next().tolist() + s.next().tolist()
        assert len(set(epoch)) == 2 * B  # no index repeats within an epoch


@pytest.mark.parametrize("sampling", ["with", "without", "reshuffle"])
def test_every_index_is_equally_likely(sampling: str) -> None:
    # Each index appears in a batch with probability B/n (all schemes: marginal uniformity).
    # Counts over T batches: mean T·B/n; |count − mean| <= 5 sd with sd <= sqrt(T·B).
    n, B, T = 5, 2, 4000
    s = sampler(n, B, sampling, seed=7)
    counts = torch.bincount(torch.cat([s.next() for _ in range(T)]), minlength=n).double()
    mean = T * B / n
    sd = (T * B * (1 / n) * (1 - 1 / n)) ** 0.5
    assert float((counts - mean).abs().max()) <= 5 * sd


def test_without_replacement_subset_pairs_are_uniform() -> None:
    # A uniform B-subset of n = 4 with B = 2: each of the 6 pairs has probability 1/6.
    s = sampler(4, 2, "without", seed=3)
    T = 3000
    pairs: dict[tuple[int, int], int] = {}
    for _ in range(T):
        i, j = sorted(s.next().tolist())
        pairs[(i, j)] = pairs.get((i, j), 0) + 1
    assert len(pairs) == 6
    sd = (T * (1 / 6) * (5 / 6)) ** 0.5
    assert max(abs(c - T / 6) for c in pairs.values()) <= 5 * sd


def test_is_full_batch_and_make_generator() -> None:
    assert is_full_batch(5, None, "with")
    assert is_full_batch(5, 5, "without")
    assert is_full_batch(5, 5, "reshuffle")
    assert not is_full_batch(5, 5, "with")
    assert not is_full_batch(5, 4, "without")
    g = torch.Generator()
    assert make_generator(g, None) is g
    assert make_generator(None, None) is None
    assert make_generator(None, 9).initial_seed() == 9


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: BatchSampler(5, 2, "cyclic"), "unknown sampling"),
        (lambda: BatchSampler(5, 6, "without"), "batch_size must be <= 5"),
        (lambda: BatchSampler(5, 0, "with"), "batch_size must be >= 1"),
        (lambda: make_generator(torch.Generator(), 1), "either generator or seed"),
        (lambda: make_generator(None, -1), "seed must be >= 0"),
    ],
)
def test_bad_inputs_raise(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
