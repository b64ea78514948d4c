"""Round trip between dynstab, scipy and curvlinops on one Hessian.

What it shows:

1. dynstab's ``HessianOperator`` (trainable parameters only, a DataLoader streamed batch by
   batch) as a ``scipy.sparse.linalg.LinearOperator``: ``scipy``'s ``eigsh`` finds the same λmax
   as ``dynstab.sharpness``.
2. curvlinops' ``HessianLinearOperator`` on the same parameters and loader used by dynstab's
   Lanczos (it has ``shape``, ``dtype``, ``device`` and ``@``), and through its own
   ``to_scipy()`` by ``eigsh``.
3. The two operators agree product by product once the loss scaling is matched: dynstab's
   ½-MSE L = (1/n) Σ_i ½‖f(x_i) − y_i‖² equals ``nn.MSELoss(reduction="sum")`` / (2n).

curvlinops is optional (``pip install curvlinops-for-pytorch``); without it this script says so
and exits successfully.

Run: ``python examples/curvlinops_roundtrip.py``
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator as ScipyOperator
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dynstab
from dynstab.curvature import HessianOperator
from dynstab.linalg import lanczos_top_eigenpairs
from dynstab.losses import half_mse

try:
    from curvlinops import HessianLinearOperator
except ImportError:
    print(
        "curvlinops is not installed, so the round trip is skipped. Install it with "
        "`pip install curvlinops-for-pytorch` (it is not a dependency of dynstab) and run "
        "`python examples/curvlinops_roundtrip.py` again."
    )
    sys.exit(0)


def as_scipy(op: HessianOperator) -> ScipyOperator:
    """dynstab operator → scipy (``.to_scipy()`` where dynstab.linalg provides it)."""
    to_scipy = getattr(op, "to_scipy", None)
    if to_scipy is not None:
        return to_scipy()

    def matmat(V: np.ndarray) -> np.ndarray:  # only for dynstab versions without .to_scipy()
        return (op @ torch.as_tensor(V, dtype=op.dtype)).numpy()

    return ScipyOperator(op.shape, matvec=matmat, matmat=matmat, dtype=np.float64)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 3)).double()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[-1] ** 0.5)
    model[0].requires_grad_(False)  # a frozen first layer: neither library measures it
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = torch.randn(200, 3, generator=g, dtype=torch.float64)
    loader = DataLoader(TensorDataset(X, y), batch_size=64)
    n = len(X)

    # -- dynstab → scipy -------------------------------------------------------------------------
    H = HessianOperator(model, half_mse, loader)
    print(f"dynstab HessianOperator: {H.selection.summary()}")
    report = dynstab.sharpness(model, half_mse, loader, "lambda_max", method="lanczos",
                               tol=1e-10, generator=torch.Generator().manual_seed(1))  # fmt: skip
    lam_dynstab = report.lambda_max.value
    v0 = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2)).numpy()
    lam_scipy = float(eigsh(as_scipy(H), k=1, which="LA", tol=1e-12, v0=v0)[0][0])
    print(f"λmax  dynstab.sharpness (Lanczos):     {lam_dynstab:.12f}")
    print(f"λmax  scipy eigsh on dynstab operator: {lam_scipy:.12f}")

    # -- curvlinops → dynstab and scipy ------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    H_cl = HessianLinearOperator(model, nn.MSELoss(reduction="sum"), params, loader)
    scale = 1.0 / (2 * n)  # ½-MSE = MSELoss(reduction="sum") / (2n)
    res = lanczos_top_eigenpairs(H_cl, k=1, tol=1e-10, generator=torch.Generator().manual_seed(1))
    lam_cl_dynstab = scale * float(res.values[0])
    lam_cl_scipy = scale * float(eigsh(H_cl.to_scipy(), k=1, which="LA", tol=1e-12, v0=v0)[0][0])
    print(f"λmax  dynstab Lanczos on curvlinops:   {lam_cl_dynstab:.12f}")
    print(f"λmax  scipy eigsh on curvlinops:       {lam_cl_scipy:.12f}")

    # -- the operators agree product by product --------------------------------------------------
    V = torch.randn(H.shape[0], 8, generator=g, dtype=torch.float64)
    diff = (H @ V - scale * (H_cl @ V)).abs().max() / (H @ V).abs().max()
    print(f"max |H_dynstab V − H_curvlinops V / (2n)| / max |H_dynstab V| = {float(diff):.2e}")
    values = [lam_dynstab, lam_scipy, lam_cl_dynstab, lam_cl_scipy]
    spread = (max(values) - min(values)) / lam_dynstab
    print(f"relative spread of the four λmax values: {spread:.2e}")
    assert float(diff) < 1e-12, diff
    assert spread < 1e-9, spread


if __name__ == "__main__":
    main()
