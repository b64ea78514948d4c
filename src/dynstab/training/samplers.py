"""Mini-batch index samplers for SGD (the rule itself lives in :mod:`dynstab.sampling`).

Three schemes, with batch size B on a training set of size n:

* ``"with"`` — B indices i.i.d. uniform on {0, …, n−1} (a multiset; duplicates are counted
  twice in the batch loss). Batches are i.i.d. across steps; mixture weight p = 1/B.
* ``"without"`` — a uniform random B-subset, drawn afresh (i.i.d.) at every step;
  p = (n − B)/(B(n − 1)). With B = n this is full-batch GD.
* ``"reshuffle"`` — *empirical mode*: a fresh random permutation each epoch, cut into
  ⌊n/B⌋ consecutive batches of size B (the ``n mod B`` leftover indices of the epoch are
  dropped, as ``DataLoader(shuffle=True, drop_last=True)`` does). Batches are **not** i.i.d.
  across steps, so none of dynstab's stability theory covers this mode exactly.

Samplers draw only from their own ``torch.Generator``, so two samplers built with the same
seed produce the same index stream (this is how the batched trainer matches the sequential
one run by run). :func:`draw_batches` draws the next ``count`` batches of a sampler at once,
the same indices as ``count`` calls of :meth:`~dynstab.sampling.BatchSampler.next`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynstab._checks import check_int
from dynstab.sampling import SAMPLING_SCHEMES, BatchSampler, Sampling, is_full_batch

__all__ = [
    "SAMPLING_SCHEMES",
    "BatchSampler",
    "Sampling",
    "draw_batches",
    "is_full_batch",
    "make_generator",
]


def draw_batches(sampler: BatchSampler, count: int) -> Tensor:
    """Return the next ``count`` batches of ``sampler`` as rows of a ``(count, B)`` tensor.

    The indices are exactly those of ``count`` successive calls of ``sampler.next()`` (for
    i.i.d. draws with replacement, torch's CPU generator produces the same stream whether the
    ``count·B`` integers are drawn at once or B at a time; the tests check it), drawn with one
    call instead of ``count``.

    Args:
        sampler: The sampler to advance.
        count: Number of batches, >= 1.

    Returns:
        int64 Tensor ``(count, B)``.

    Example:
        >>> s1 = BatchSampler(10, 2, "with", generator=torch.Generator().manual_seed(0))
        >>> s2 = BatchSampler(10, 2, "with", generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(draw_batches(s1, 3), torch.stack([s2.next() for _ in range(3)])))
        True
    """
    check_int("count", count, minimum=1)
    if sampler.sampling == "with":
        return torch.randint(sampler.n, (count, sampler.batch_size), generator=sampler.generator)
    return torch.stack([sampler.next() for _ in range(count)])


def make_generator(
    generator: torch.Generator | None, seed: int | None, *, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    """Return the random source described by a ``generator``/``seed`` pair.

    Args:
        generator: An explicit generator (used as is), or None.
        seed: An int seed for a fresh ``torch.Generator``, or None.
        device: Device of a fresh generator.

    Returns:
        ``generator``, a fresh seeded generator, or None (torch's default generator).

    Raises:
        ValueError: If both ``generator`` and ``seed`` are given.
        TypeError: If ``seed`` is not an int.

    Example:
        >>> make_generator(None, 3).initial_seed()
        3
    """
    if generator is not None and seed is not None:
        raise ValueError(
            "pass either generator or seed, not both; got both. Use seed=... for a fresh "
            "seeded generator or generator=... to share one."
        )
    if seed is not None:
        check_int("seed", seed, minimum=0)
        return torch.Generator(device=device).manual_seed(seed)
    return generator
