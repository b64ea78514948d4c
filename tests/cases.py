"""Registry of tiny float64 test problems shared by the whole test suite.

Each :class:`Case` has a name, a loss name, and a seeded factory returning a fresh
:class:`Problem` ``(model, loss_fn, X, y)`` in float64. Parameters are initialised from a
private ``torch.Generator`` (no global seeding). ``*_interp`` variants replace the targets by the
model's own outputs, so the point interpolates and H = G exactly.

Stable API (other test modules import it): ``CASES``, ``CASE_IDS``, ``get_case(name)``,
``Case.build()``, ``Problem``. The paper models are the library's own
(:class:`~dynstab.models.DiagonalLinearNet`, :class:`~dynstab.models.TwoLayerReLU`), built with a
private generator and then re-initialised from the case's generator by ``_init_``.

Cases that stress the model-facing layer: ``frozen_first_layer`` (the 37-parameter net with
its first layer frozen: p = 7 trainable parameters are measured), ``transformer_encoder``
(``nn.TransformerEncoderLayer``: needs the math attention kernel for double backward) and
``bn_cnn_eval`` (Conv2d + BatchNorm2d in eval mode with non-trivial running statistics).
``Problem.params`` / ``Problem.num_params`` refer to the trainable (measured) parameters, and
:func:`reference_loss` is an autograd-only reference of the loss as a function of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from dynstab.losses import cross_entropy, half_mse
from dynstab.models import DiagonalLinearNet, TwoLayerReLU

DTYPE = torch.float64


@dataclass
class Problem:
    """A built test problem: ``loss_fn(model(X), y)`` is the training loss."""

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    X: Tensor
    y: Tensor
    case: Case

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        return self.X, self.y

    @property
    def params(self) -> dict[str, Tensor]:
        """The trainable parameters (``requires_grad=True``): what dynstab measures by default."""
        return {k: v for k, v in self.model.named_parameters() if v.requires_grad}

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())


@dataclass(frozen=True)
class Case:
    """A named, seeded problem factory.

    Attributes:
        name: Registry key.
        factory: ``factory(generator) -> (model, X, y)``.
        loss: ``"half_mse"`` or ``"cross_entropy"``.
        outputs: Outputs per sample C.
        interpolating: Targets equal the model's outputs (zero residual).
        tags: Free-form labels (``"linear"`` means H = XᵀX/n in closed form).
        seed: Seed of the private generator.
    """

    name: str
    factory: Callable[[torch.Generator], tuple[nn.Module, Tensor, Tensor]]
    loss: str = "half_mse"
    outputs: int = 1
    interpolating: bool = False
    tags: tuple[str, ...] = field(default=())
    seed: int = 0

    @property
    def id(self) -> str:
        return f"model={self.name}-loss={self.loss}"

    def build(self) -> Problem:
        g = torch.Generator().manual_seed(self.seed)
        model, X, y = self.factory(g)
        if self.interpolating:
            with torch.no_grad():
                y = model(X).detach().clone()
        loss_fn = half_mse if self.loss == "half_mse" else cross_entropy
        return Problem(model, loss_fn, X, y, self)


def _init_(model: nn.Module, g: torch.Generator, scale: float = 1.0) -> nn.Module:
    model = model.to(DTYPE)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p.shape[-1] if p.ndim > 1 else max(p.numel(), 1)
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=DTYPE) / fan_in**0.5)
    return model


def _mlp(sizes: list[int], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _x(g: torch.Generator, n: int, d: int) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=DTYPE)


def _mlp_tanh(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(_mlp([3, 8, 8, 1], nn.Tanh), g, scale=1.5)  # p = 113
    X = _x(g, 10, 3)
    return model, X, torch.randn(10, 1, generator=g, dtype=DTYPE)


def _mlp_relu(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(_mlp([4, 10, 10, 1], nn.ReLU), g, scale=1.5)  # p = 171
    X = _x(g, 12, 4)
    return model, X, torch.randn(12, 1, generator=g, dtype=DTYPE)


def _linear(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(nn.Linear(5, 1, bias=False), g)  # p = 5, H = XᵀX/n
    X = _x(g, 12, 5)
    return model, X, torch.randn(12, 1, generator=g, dtype=DTYPE)


def _diagonal(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    net = DiagonalLinearNet(6, generator=torch.Generator(), dtype=DTYPE)  # draw overwritten
    model = _init_(net, g, scale=2.0)  # p = 12
    X = _x(g, 5, 6)
    return model, X, torch.randn(5, generator=g, dtype=DTYPE)


def _two_layer_relu(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    net = TwoLayerReLU(4, 8, generator=torch.Generator(), dtype=DTYPE)  # draw overwritten
    model = _init_(net, g, scale=1.5)  # p = 40
    X = _x(g, 7, 4)
    return model, X, torch.randn(7, generator=g, dtype=DTYPE)


def _mlp_vector(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(_mlp([3, 8, 3], nn.Tanh), g, scale=1.5)  # p = 59, C = 3
    X = _x(g, 8, 3)
    return model, X, torch.randn(8, 3, generator=g, dtype=DTYPE)


def _frozen_first_layer(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(_mlp([4, 6, 1], nn.Tanh), g, scale=1.5)  # 37 parameters, 7 trainable
    model[0].requires_grad_(False)
    X = _x(g, 20, 4)
    return model, X, torch.randn(20, 1, generator=g, dtype=DTYPE)


class TinyEncoder(nn.Module):
    """One ``nn.TransformerEncoderLayer`` (d=4, 2 heads), mean-pooled, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0,
                                              batch_first=True)  # fmt: skip
        self.head = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.enc(x).mean(1))


def _transformer(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(TinyEncoder(), g, scale=1.0).eval()  # p = 151
    X = torch.randn(6, 3, 4, generator=g, dtype=DTYPE)  # 6 sequences of length 3
    return model, X, torch.randn(6, 1, generator=g, dtype=DTYPE)


def _bn_cnn(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(27, 2))  # fmt: skip
    model = _init_(model, g, scale=1.5)  # p = 30 + 6 + 56 = 92
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(0.3 * torch.randn(3, generator=g, dtype=DTYPE))
        bn.running_var.copy_(0.5 + torch.rand(3, generator=g, dtype=DTYPE))
    model.eval()
    X = torch.randn(7, 1, 5, 5, generator=g, dtype=DTYPE)
    return model, X, torch.randn(7, 2, generator=g, dtype=DTYPE)


def _mlp_ce(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = _init_(_mlp([3, 6, 4], nn.Tanh), g, scale=1.5)  # p = 52, 4 classes
    X = _x(g, 9, 3)
    return model, X, torch.randint(0, 4, (9,), generator=g)


CASES: list[Case] = [
    Case("mlp_tanh", _mlp_tanh, seed=1),
    Case("mlp_relu", _mlp_relu, seed=2),
    Case("linear", _linear, tags=("linear",), seed=3),
    Case("diagonal_linear", _diagonal, seed=4),
    Case("two_layer_relu", _two_layer_relu, seed=5),
    Case("mlp_vector_output", _mlp_vector, outputs=3, seed=6),
    Case("mlp_cross_entropy", _mlp_ce, loss="cross_entropy", outputs=4, seed=7),
    Case("mlp_tanh_interp", _mlp_tanh, interpolating=True, seed=1),
    Case("two_layer_relu_interp", _two_layer_relu, interpolating=True, seed=5),
    Case("mlp_vector_output_interp", _mlp_vector, outputs=3, interpolating=True, seed=6),
    Case("frozen_first_layer", _frozen_first_layer, tags=("frozen",), seed=8),
    Case("transformer_encoder", _transformer, tags=("attention",), seed=9),
    Case("bn_cnn_eval", _bn_cnn, outputs=2, tags=("batchnorm",), seed=10),
    Case(
        "transformer_encoder_interp", _transformer, interpolating=True, tags=("attention",), seed=9
    ),
]
CASE_IDS = [c.id for c in CASES]
HALF_MSE_CASES = [c for c in CASES if c.loss == "half_mse"]
INTERPOLATING_CASES = [c for c in CASES if c.interpolating]


def reference_loss(problem: Problem) -> Callable[[Tensor], Tensor]:
    """The loss as a function of the flat trainable parameters, by plain autograd.

    Independent of dynstab.curvature: ``functional_call`` at the trainable parameters (the
    frozen ones keep the model's values) under the math attention kernel.
    """
    P = {k: v.detach() for k, v in problem.params.items()}
    shapes = [(k, v.shape, v.numel()) for k, v in P.items()]

    def loss(vec: Tensor) -> Tensor:
        tensors, start = {}, 0
        for k, shape, size in shapes:
            tensors[k] = vec[start : start + size].reshape(shape)
            start += size
        with sdpa_kernel(SDPBackend.MATH):
            out = functional_call(problem.model, tensors, (problem.X,))
        return problem.loss_fn(out, problem.y)

    return loss


def flat_trainable(problem: Problem) -> Tensor:
    """The trainable parameters as one flat vector (named_parameters order)."""
    return torch.cat([v.detach().reshape(-1) for v in problem.params.values()])


def get_case(name: str) -> Case:
    """Look a case up by name (ValueError listing the names otherwise)."""
    for c in CASES:
        if c.name == name:
            return c
    raise ValueError(f"unknown case {name!r}; choose from {sorted(c.name for c in CASES)}.")


def cli_spec() -> tuple[nn.Module, Callable[[Tensor, Tensor], Tensor], tuple[Tensor, Tensor]]:
    """``--spec cases:cli_spec`` target for the CLI tests: the ``mlp_tanh`` problem."""
    pr = get_case("mlp_tanh").build()
    return pr.model, pr.loss_fn, pr.data
