"""Loss functions with the conventions dynstab's thresholds assume.

All losses return the **mean over samples** of a per-sample loss. The stability thresholds
(2/η, Tr H ≤ 2/(qη), ...) assume :func:`half_mse`:

    ℓ_i(θ) = ½ ‖f(x_i; θ) − y_i‖²,   L(θ) = (1/n) Σ_i ℓ_i(θ).

With this ½ the per-sample Hessian at an interpolating point is exactly J_iᵀJ_i. PyTorch's
``nn.MSELoss()`` has no ½ and also divides by the number of outputs C; with it every curvature
is scaled by 2/C and every η threshold by C/2.

The loss is written by hand (not ``F.mse_loss``) because forward-over-reverse differentiation
of ``F.mse_loss`` fails in torch 2.13.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy", "half_mse", "per_sample_half_mse"]


def _as_2d(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if outputs.shape[0] != targets.shape[0]:
        raise ValueError(
            "outputs and targets must have the same number of samples; got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}."
        )
    n = outputs.shape[0]
    out = outputs.reshape(n, -1)
    tgt = targets.reshape(n, -1).to(out.dtype)
    if out.shape != tgt.shape:
        raise ValueError(
            "outputs and targets must have matching per-sample sizes; got outputs "
            f"{tuple(outputs.shape)} and targets {tuple(targets.shape)}. For scalar regression "
            "use targets of shape (n,) or (n, 1)."
        )
    return out, tgt


def per_sample_half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-sample ½‖f(x_i) − y_i‖², shape ``(n,)``.

    Args:
        outputs: Model outputs, shape ``(n, ...)``.
        targets: Targets with the same number of entries per sample.

    Returns:
        Tensor of shape ``(n,)``.
    """
    out, tgt = _as_2d(outputs, targets)
    r = out - tgt
    return 0.5 * (r * r).sum(dim=1)


def half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """½·mean squared error: L = (1/n) Σ_i ½‖f(x_i) − y_i‖² (summed over outputs).

    Args:
        outputs: Model outputs, shape ``(n,)``, ``(n, 1)`` or ``(n, C)``.
        targets: Targets, same number of entries per sample as ``outputs``.

    Returns:
        0-dim tensor.

    Example:
        >>> half_mse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))
        tensor(1.2500)
    """
    return per_sample_half_mse(outputs, targets).mean()


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean softmax cross-entropy, written without fused kernels so that HVPs work.

    Args:
        outputs: Logits, shape ``(n, C)``.
        targets: Class indices ``(n,)`` (int64) or probabilities ``(n, C)``.

    Returns:
        0-dim tensor.

    Example:
        >>> round(float(cross_entropy(torch.zeros(1, 4), torch.tensor([2]))), 6)  # log 4
        1.386294
    """
    logp = torch.log_softmax(outputs, dim=-1)
    if targets.dtype in (torch.int64, torch.int32, torch.long):
        return -logp.gather(-1, targets.long().reshape(-1, 1)).mean()
    return -(targets.to(logp.dtype) * logp).sum(-1).mean()
