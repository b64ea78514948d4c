"""Mini-batch sampling schemes and their mixture weights p and q.

SGD draws i.i.d. batches I_t of size B from n samples, either *with* replacement (B indices
i.i.d. uniform on [n], a multiset) or *without* replacement (a uniform random B-subset). For
both schemes the batch-moment identity

    E_I[H_I M H_I] = (1 − p) H M H + p (1/n) Σ_i H_i M H_i

holds with the mixture weight

* with replacement:    p_W  = 1/B,
* without replacement: p_WO = (n − B)/(B(n − 1))   (GD = WO with B = n has p = 0),

and the helper constant q := p + (1 − p)/n (q = 1/B exactly without replacement). Epoch-wise
reshuffling is *not* i.i.d. across steps and is not covered by any threshold here.
"""

from __future__ import annotations

from dynstab._checks import check_choice, check_int

__all__ = ["SAMPLING_SCHEMES", "mixing_p", "q_factor"]

#: Valid names of the sampling argument.
SAMPLING_SCHEMES: tuple[str, ...] = ("with", "without")


def _check_sampling(n: int, batch_size: int, sampling: str) -> tuple[int, int, str]:
    check_int("n", n, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    if not isinstance(sampling, str):
        raise TypeError(
            f"sampling must be a str, one of {list(SAMPLING_SCHEMES)}; "
            f"got {type(sampling).__name__}."
        )
    check_choice("sampling", sampling, SAMPLING_SCHEMES)
    if sampling == "without" and batch_size > n:
        raise ValueError(
            f"batch_size must be <= n for sampling without replacement; got batch_size={batch_size}"
            f" and n={n}. Use batch_size <= {n} or sampling='with'."
        )
    return n, batch_size, sampling


def mixing_p(n: int, batch_size: int, sampling: str) -> float:
    """Return the mixture weight p of the batch-moment identity.

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
    n, B, sampling = _check_sampling(n, batch_size, sampling)
    if sampling == "with":
        return 1.0 / B
    if n == 1:
        return 0.0
    return (n - B) / (B * (n - 1))


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
    p = mixing_p(n, batch_size, sampling)
    return p + (1.0 - p) / n
