"""Test helpers: a comparator that explains its failures."""

from __future__ import annotations

import torch
from torch import Tensor


def assert_close(
    actual: Tensor | float,
    expected: Tensor | float,
    rtol: float,
    atol: float = 0.0,
    *,
    num_worst: int = 5,
    msg: str = "",
) -> None:
    """Assert |actual − expected| <= atol + rtol·|expected| elementwise; print the worst entries."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    if a.shape != e.shape:
        raise AssertionError(
            f"{msg} shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}"
        )
    if not bool(torch.isfinite(a).all()):
        raise AssertionError(f"{msg} actual has non-finite entries")
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    bad = err > bound
    if bool(bad.any()):
        excess = (err - bound).reshape(-1)
        order = torch.argsort(excess, descending=True)[:num_worst]
        lines = [
            f"{msg} {int(bad.sum())}/{bad.numel()} entries exceed "
            f"atol={atol:g} + rtol={rtol:g}·|expected|:"
        ]
        flat_a, flat_e, flat_err = a.reshape(-1), e.reshape(-1), err.reshape(-1)
        for i in order.tolist():
            idx = (
                tuple(int(j) for j in torch.unravel_index(torch.tensor(i), a.shape))
                if a.ndim
                else ()
            )
            lines.append(
                f"  at {idx}: actual={flat_a[i].item():.12g} expected={flat_e[i].item():.12g} "
                f"abs err={flat_err[i].item():.3g} "
                f"rel err={(flat_err[i] / flat_e[i].abs().clamp_min(1e-300)).item():.3g}"
            )
        raise AssertionError("\n".join(lines))


def scale_atol(reference: Tensor, factor: float = 1e-10) -> float:
    """Absolute tolerance ``factor·max|reference|`` (house rule for float64 matrices)."""
    return factor * float(torch.as_tensor(reference).abs().max())
