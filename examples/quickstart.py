"""Quick start: sharpness, the GD/SGD verdict and the exact SGD threshold of a two-layer ReLU net.

Run: ``python examples/quickstart.py``. Mirrors the README's quick start.
"""

import torch

import dynstab
from dynstab.data import ReLUTeacher, sphere_inputs
from dynstab.losses import half_mse
from dynstab.models import TwoLayerReLU

g = torch.Generator().manual_seed(0)
X = sphere_inputs(100, 20, generator=g).double()
model = TwoLayerReLU(20, 50, generator=g).double()
y = model(X).detach()  # an interpolating point: H = G exactly

report = dynstab.sharpness(model, half_mse, (X, y))  # λmax, Tr H, ‖H‖_F with method and errors
print(report)
lr = 0.01
print(f"λmax = {report.lambda_max.value:.4g}, Tr H = {report.trace.value:.4g}, 2/η = {2 / lr:g}")

verdict = dynstab.stability(model, half_mse, (X, y), lr=lr, batch_size=1)
print(verdict)

eta = dynstab.critical_lr(model, (X, y), batch_size=1).eta_star
gd = 2 / report.lambda_max.value
print(f"exact SGD (B=1) threshold η* = {eta:.6g}; GD threshold 2/λmax = {gd:.6g}")

# Teacher data for training (see dynstab.training.train for GD/SGD with monitors).
y_teacher = ReLUTeacher(3, 20, generator=g)(X)
print("teacher targets:", tuple(y_teacher.shape))
