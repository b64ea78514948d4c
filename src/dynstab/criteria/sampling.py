"""Mini-batch sampling schemes and their mixture weights p and q (see :mod:`dynstab.sampling`).

The criteria use the same :class:`~dynstab.sampling.Sampling` object as the trainers; this
module re-exports the names the criteria have always offered.
"""

from __future__ import annotations

from dynstab.sampling import IID_SCHEMES, Sampling, mixing_p, q_factor

__all__ = ["SAMPLING_SCHEMES", "Sampling", "mixing_p", "q_factor"]

#: Valid names of the criteria's ``sampling`` argument (the i.i.d. schemes).
SAMPLING_SCHEMES: tuple[str, ...] = IID_SCHEMES
