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

    L = −(1/n) Σ_i log softmax(f(x_i))_{y_i} for class indices, or
    −(1/n) Σ_i Σ_c t_ic log softmax(f(x_i))_c for class probabilities ``t``.

    Args:
        outputs: Logits, shape ``(n, C)``.
        targets: Class indices ``(n,)`` (or ``(n, 1)``) of any integer dtype (``uint8``,
            ``int8``, ``int16``, ``int32``, ``int64``), each in ``[0, C − 1]``; or class
            probabilities ``(n, C)`` of a floating dtype.

    Returns:
        0-dim tensor.

    Raises:
        TypeError: If ``targets`` is boolean or complex.
        ValueError: If a class index is outside ``[0, C − 1]``, index
            targets are not one per sample, or probability targets do not have the outputs'
            shape.

    Example:
        >>> round(float(cross_entropy(torch.zeros(1, 4), torch.tensor([2]))), 6)  # log 4
        1.386294
        >>> round(float(cross_entropy(torch.zeros(1, 4), torch.tensor([2], dtype=torch.uint8))), 6)
        1.386294
    """
    logp = torch.log_softmax(outputs, dim=-1)
    if targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(
            f"cross_entropy targets must be integer class indices or floating class "
            f"probabilities; got dtype {targets.dtype}. Convert with targets.long()."
        )
    if not targets.is_floating_point():  # class indices, any integer dtype
        n, C = logp.shape[0], logp.shape[-1]
        if targets.numel() != n or (targets.ndim > 1 and targets.shape[1:] != (1,)):
            raise ValueError(
                f"cross_entropy class-index targets must have shape ({n},) (one label per "
                f"sample); got {tuple(targets.shape)}. For probabilities use a floating dtype."
            )
        idx = targets.reshape(-1).long()
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= C:
            raise ValueError(
                f"cross_entropy labels must lie in [0, {C - 1}] for outputs with C={C} classes; "
                f"got labels in [{lo}, {hi}]. Check the label encoding or the model's output size."
            )
        return -logp.gather(-1, idx.reshape(-1, 1)).mean()
    if targets.shape != logp.shape:
        raise ValueError(
            f"cross_entropy floating targets are class probabilities of the outputs' shape "
            f"{tuple(logp.shape)}; got {tuple(targets.shape)}. For class indices use an integer "
            "dtype (targets.long())."
        )
    return -(targets.to(logp.dtype) * logp).sum(-1).mean()
