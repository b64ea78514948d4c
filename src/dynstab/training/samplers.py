"""Mini-batch index samplers for SGD.

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
one run by run).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int

__all__ = ["SAMPLING_SCHEMES", "BatchSampler", "is_full_batch", "make_generator"]

SAMPLING_SCHEMES = ("with", "without", "reshuffle")


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


def is_full_batch(n: int, batch_size: int | None, sampling: str) -> bool:
    """Return True when (batch_size, sampling) is deterministic full-batch GD.

    ``batch_size=None`` always means GD; ``batch_size == n`` is GD for ``"without"`` and
    ``"reshuffle"`` (every batch is the whole set) but **not** for ``"with"`` (a multiset of
    n draws, p = 1/n).

    Args:
        n: Number of training samples.
        batch_size: Batch size B, or None.
        sampling: One of ``"with"``, ``"without"``, ``"reshuffle"``.

    Returns:
        Whether the scheme is full-batch GD.

    Example:
        >>> is_full_batch(8, 8, "without"), is_full_batch(8, 8, "with")
        (True, False)
    """
    return batch_size is None or (batch_size == n and sampling != "with")


class BatchSampler:
    """Stream of mini-batch index tensors of shape ``(B,)`` (int64).

    Args:
        n: Number of training samples, >= 1.
        batch_size: B >= 1; B <= n for ``"without"`` and ``"reshuffle"``.
        sampling: ``"with"``, ``"without"`` or ``"reshuffle"`` (see the module docstring).
        generator: Random source; None draws from torch's default generator.

    Raises:
        ValueError: If ``sampling`` is unknown or ``batch_size`` is out of range.

    Example:
        >>> s = BatchSampler(5, 5, "reshuffle", generator=torch.Generator().manual_seed(0))
        >>> sorted(s.next().tolist())
        [0, 1, 2, 3, 4]
    """

    def __init__(
        self, n: int, batch_size: int, sampling: str, *, generator: torch.Generator | None = None
    ) -> None:
        check_int("n", n, minimum=1)
        check_choice("sampling", sampling, SAMPLING_SCHEMES)
        check_int("batch_size", batch_size, minimum=1, maximum=None if sampling == "with" else n)
        self.n = n
        self.batch_size = batch_size
        self.sampling = sampling
        self.generator = generator
        self._perm: Tensor | None = None
        self._pos = 0

    def next(self) -> Tensor:
        """Return the indices of the next batch, shape ``(B,)``, dtype int64."""
        n, B, g = self.n, self.batch_size, self.generator
        if self.sampling == "with":
            return torch.randint(n, (B,), generator=g)
        if self.sampling == "without":
            return torch.randperm(n, generator=g)[:B]
        if self._perm is None or self._pos + B > n:
            self._perm = torch.randperm(n, generator=g)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + B]
        self._pos += B
        return idx
