"""Mini-batch sampling: one object shared by the trainers and the stability criteria.

A :class:`Sampling` describes how SGD draws the batch ``I_t`` of size ``B`` from ``n`` samples:

* ``"with"`` — ``B`` indices i.i.d. uniform on ``{0, …, n−1}`` (a multiset; duplicates count
  twice in the batch loss). Batches are i.i.d. across steps; mixture weight ``p = 1/B``.
* ``"without"`` — a uniform random ``B``-subset, drawn afresh (i.i.d.) at every step;
  ``p = (n − B)/(B(n − 1))``. With ``B = n`` this is full-batch GD (``p = 0``).
* ``"reshuffle"`` — *empirical mode*: a fresh random permutation each epoch, cut into
  ``⌊n/B⌋`` consecutive batches (the ``n mod B`` leftover indices of the epoch are dropped, as
  ``DataLoader(shuffle=True, drop_last=True)`` does). Batches are **not** i.i.d. across steps,
  so no mean-square threshold covers this mode (:attr:`Sampling.iid` is ``False``).

For the two i.i.d. schemes the batch-moment identity (Mulayoff & Michaeli, 2024, Lemma 1)

    E_I[H_I M H_I] = (1 − p) H M H + p (1/n) Σ_i H_i M H_i

holds with the mixture weight ``p`` above, and the constant of the trace and Frobenius bounds is
``q = p + (1 − p)/n`` (``q = 1/B`` exactly without replacement; Wu & Su, 2023, Theorem 3.3).

The criteria (``dynstab.criteria``) read ``p`` and ``q`` from a :class:`Sampling`; the trainers
(``dynstab.training``) draw their batches from :meth:`Sampling.sampler`, so a verdict and a
training run always mean the same sampling rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dynstab._checks import check_choice, check_int

__all__ = [
    "IID_SCHEMES",
    "SAMPLING_SCHEMES",
    "BatchSampler",
    "Sampling",
    "is_full_batch",
    "mixing_p",
    "q_factor",
]

#: Every scheme a trainer can use.
SAMPLING_SCHEMES: tuple[str, ...] = ("with", "without", "reshuffle")
#: The schemes with i.i.d. batches, for which the mean-square criteria are exact.
IID_SCHEMES: tuple[str, ...] = ("with", "without")


def _check_scheme(scheme: object, choices: tuple[str, ...]) -> str:
    if not isinstance(scheme, str):
        raise TypeError(
            f"sampling must be a str, one of {list(choices)}; got {type(scheme).__name__}."
        )
    return check_choice("sampling", scheme, choices)


@dataclass(frozen=True)
class Sampling:
    """How SGD draws its mini-batches: ``n`` samples, batch size ``B``, a scheme.

    Args:
        n: Number of training samples, >= 1.
        batch_size: ``B >= 1`` (``B <= n`` for ``"without"`` and ``"reshuffle"``), or ``None``
            for full-batch GD (stored as ``B = n`` without replacement).
        scheme: ``"with"``, ``"without"`` or ``"reshuffle"``. Default: ``"with"``.

    Raises:
        TypeError: If a size is not an int or ``scheme`` is not a str.
        ValueError: If a size is out of range or ``scheme`` is unknown.

    Example:
        >>> s = Sampling(n=3, batch_size=2, scheme="without")
        >>> s.p, s.q, s.is_full_batch
        (0.25, 0.5, False)
        >>> Sampling(n=10, batch_size=None).label
        'GD (B = n = 10)'
    """

    n: int
    batch_size: int | None = 1
    scheme: str = "with"

    def __post_init__(self) -> None:
        check_int("n", self.n, minimum=1)
        scheme = _check_scheme(self.scheme, SAMPLING_SCHEMES)
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", self.n)
            object.__setattr__(self, "scheme", "without")
            return
        check_int("batch_size", self.batch_size, minimum=1)
        if scheme != "with" and self.batch_size > self.n:
            raise ValueError(
                f"batch_size must be <= n for sampling={scheme!r}; got batch_size="
                f"{self.batch_size} and n={self.n}. Use batch_size <= {self.n} or "
                "sampling='with'."
            )

    @classmethod
    def gd(cls, n: int) -> Sampling:
        """Full-batch gradient descent on ``n`` samples (``B = n`` without replacement)."""
        return cls(n=n, batch_size=None)

    @property
    def B(self) -> int:
        """The batch size ``B`` (``n`` for GD)."""
        assert self.batch_size is not None  # normalised in __post_init__
        return self.batch_size

    @property
    def is_full_batch(self) -> bool:
        """Whether every batch is the whole training set (deterministic GD)."""
        return self.n == self.B and self.scheme != "with"

    @property
    def iid(self) -> bool:
        """Whether batches are i.i.d. across steps (the mean-square criteria apply)."""
        return self.scheme in IID_SCHEMES

    @property
    def p(self) -> float:
        """Mixture weight ``p`` of the batch-moment identity (module docstring).

        Raises:
            ValueError: For ``"reshuffle"``, which has no i.i.d. batch-moment identity.
        """
        self._require_iid("p")
        if self.scheme == "with":
            return 1.0 / self.B
        if self.n == 1:
            return 0.0
        return (self.n - self.B) / (self.B * (self.n - 1))

    @property
    def q(self) -> float:
        """``q = p + (1 − p)/n``, the constant of the trace and Frobenius bounds."""
        p = self.p
        return p + (1.0 - p) / self.n

    @property
    def label(self) -> str:
        """A short human-readable description, e.g. ``"SGD (B = 4, with replacement)"``."""
        if self.is_full_batch:
            return f"GD (B = n = {self.n})"
        how = {"with": "with replacement", "without": "without replacement"}.get(
            self.scheme, "epoch-wise reshuffling"
        )
        return f"SGD (B = {self.B}, {how})"

    def sampler(self, generator: torch.Generator | None = None) -> BatchSampler:
        """A stream of batch indices following this rule (see :class:`BatchSampler`)."""
        return BatchSampler(self.n, self.B, self.scheme, generator=generator)

    def _require_iid(self, what: str) -> None:
        if not self.iid:
            raise ValueError(
                f"{what} is defined for i.i.d. batches (sampling 'with' or 'without'); got "
                "sampling='reshuffle' (epoch-wise reshuffling), which no mean-square criterion "
                "covers. Use sampling='without' as its i.i.d. stand-in."
            )


def mixing_p(n: int, batch_size: int, sampling: str) -> float:
    """Return the mixture weight p of the batch-moment identity: ``Sampling(...).p``.

    p = 1/B with replacement and p = (n − B)/(B(n − 1)) without replacement (p = 0 for GD,
    i.e. B = n without replacement; n = 1 gives p = 0 since every batch is the full set).

    Args:
        n: Number of training samples, >= 1.
        batch_size: Batch size B, >= 1 (and <= n without replacement).
        sampling: ``"with"`` or ``"without"`` (replacement).

    Returns:
        p in [0, 1] as a Python float.

    Raises:
        ValueError: On a bad name, non-positive sizes or B > n without replacement.
        TypeError: If a size is not an int.

    Example:
        >>> mixing_p(3, 2, "without"), mixing_p(3, 2, "with")
        (0.25, 0.5)
    """
    return _iid(n, batch_size, sampling).p


def q_factor(n: int, batch_size: int, sampling: str) -> float:
    """Return q = p + (1 − p)/n, the constant of the trace and Frobenius bounds.

    Without replacement q = 1/B exactly; with replacement q = (n + B − 1)/(nB) ≈ 1/B.

    Args:
        n: Number of training samples, >= 1.
        batch_size: Batch size B, >= 1.
        sampling: ``"with"`` or ``"without"``.

    Returns:
        q in (0, 1] as a Python float.

    Raises:
        ValueError: As for :func:`mixing_p`.

    Example:
        >>> q_factor(3, 2, "without"), q_factor(3, 2, "with")
        (0.5, 0.6666666666666666)
    """
    return _iid(n, batch_size, sampling).q


def _iid(n: int, batch_size: int, sampling: str) -> Sampling:
    """The i.i.d. rule of :func:`mixing_p` and :func:`q_factor` (``"reshuffle"`` refused)."""
    _check_scheme(sampling, IID_SCHEMES)
    check_int("batch_size", batch_size, minimum=1)
    return Sampling(n, batch_size, sampling)


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

    Samplers draw only from their own ``torch.Generator``, so two samplers built with the same
    seed produce the same index stream.

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
