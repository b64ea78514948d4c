"""``dynstab sharpness``: sharpness measures of a built-in toy or a user model, as a table + JSON.

Sources (exactly one):

* ``--toy NAME``: a small seeded float64 problem (``linear``, ``diagonal``, ``mlp-tanh``,
  ``two-layer-relu``), ½-MSE loss;
* ``--spec module:function``: an importable callable returning ``(model, loss_fn, (X, y))``;
  ``--checkpoint FILE`` then loads a ``state_dict`` (``torch.load(weights_only=True)``) into
  that model (also allowed with ``--toy``).

Example::

    dynstab sharpness --toy mlp-tanh --measures lambda_max,trace --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dynstab.io import atomic_write_json
from dynstab.losses import half_mse
from dynstab.measures import MEASURES, SharpnessReport, sharpness

__all__ = ["TOYS", "build_toy", "register", "run"]

_DTYPE = torch.float64


class _Diagonal(nn.Module):
    """f(x) = ⟨a ⊙ b, x⟩."""

    def __init__(self, d: int, g: torch.Generator) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(d, generator=g, dtype=_DTYPE))
        self.b = nn.Parameter(torch.randn(d, generator=g, dtype=_DTYPE))

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.a * self.b)


class _TwoLayerReLU(nn.Module):
    """f(x) = Σ_j a_j relu(w_jᵀx), no biases."""

    def __init__(self, d: int, m: int, g: torch.Generator) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(m, d, generator=g, dtype=_DTYPE) / math.sqrt(d))
        self.a = nn.Parameter(torch.randn(m, generator=g, dtype=_DTYPE) / math.sqrt(m))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.w.T) @ self.a


def _seeded_linear(fan_in: int, fan_out: int, g: torch.Generator, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out, bias=bias).to(_DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(fan_out, fan_in, generator=g, dtype=_DTYPE) / fan_in**0.5)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


def _toy_linear(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    X = torch.randn(50, 10, generator=g, dtype=_DTYPE)
    return _seeded_linear(10, 1, g, bias=False), X, torch.randn(50, 1, generator=g, dtype=_DTYPE)


def _toy_diagonal(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    X = torch.randn(30, 20, generator=g, dtype=_DTYPE)
    return _Diagonal(20, g), X, torch.randn(30, generator=g, dtype=_DTYPE)


def _toy_mlp_tanh(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = nn.Sequential(
        _seeded_linear(10, 16, g), nn.Tanh(), _seeded_linear(16, 16, g), nn.Tanh(),
        _seeded_linear(16, 1, g),
    )  # fmt: skip
    X = torch.randn(64, 10, generator=g, dtype=_DTYPE)
    return model, X, torch.randn(64, 1, generator=g, dtype=_DTYPE)


def _toy_two_layer_relu(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    X = torch.randn(40, 5, generator=g, dtype=_DTYPE)
    return _TwoLayerReLU(5, 50, g), X, torch.randn(40, generator=g, dtype=_DTYPE)


TOYS: dict[str, Callable[[torch.Generator], tuple[nn.Module, Tensor, Tensor]]] = {
    "diagonal": _toy_diagonal,
    "linear": _toy_linear,
    "mlp-tanh": _toy_mlp_tanh,
    "two-layer-relu": _toy_two_layer_relu,
}


def build_toy(
    name: str, seed: int = 0
) -> tuple[nn.Module, Callable[..., Tensor], tuple[Tensor, Tensor]]:
    """Build a seeded float64 toy problem ``(model, half_mse, (X, y))``.

    Args:
        name: One of ``TOYS``.
        seed: Seed of the private generator. Default: ``0``.

    Returns:
        ``(model, loss_fn, (X, y))``.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the toys).

    Example:
        >>> model, loss_fn, (X, y) = build_toy("linear")
        >>> X.shape, y.shape
        (torch.Size([50, 10]), torch.Size([50, 1]))
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose from {sorted(TOYS)}.")
    model, X, y = TOYS[name](torch.Generator().manual_seed(seed))
    return model, half_mse, (X, y)


def _load_spec(spec: str) -> tuple[nn.Module, Callable[..., Tensor], Any]:
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--spec must look like 'package.module:function'; got {spec!r}.")
    cwd = os.getcwd()
    if cwd not in sys.path:  # console scripts do not put the working directory on the path
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--spec: cannot import module {module_name!r}: {exc}.") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"--spec: {module_name!r} has no callable {func_name!r}.")
    result = fn()
    if not (isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], nn.Module)):
        raise ValueError(
            f"--spec: {spec}() must return (model, loss_fn, (X, y)); got {type(result).__name__}."
        )
    return result


def _load_checkpoint(model: nn.Module, path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--checkpoint: no such file {path!r}.")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(
            f"--checkpoint: {path!r} does not hold a state_dict (got {type(state).__name__})."
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"--checkpoint: {path!r} does not match the model: {exc}") from exc


def format_table(report: SharpnessReport) -> str:
    """Render a report as an aligned text table (one row per measure); see ``report.table()``."""
    return report.table()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sharpness`` subcommand to ``subparsers`` (sets ``func=run``)."""
    parser = subparsers.add_parser(
        "sharpness",
        help="sharpness measures (λmax, trace, Frobenius, ...) of a model at a point",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--toy", choices=sorted(TOYS), help="built-in toy problem")
    source.add_argument(
        "--spec", metavar="MODULE:FUNCTION", help="returns (model, loss_fn, (X, y))"
    )
    parser.add_argument("--checkpoint", metavar="FILE", help="state_dict to load into the model")
    parser.add_argument(
        "--measures",
        default="lambda_max,trace,frobenius",
        help=f"comma-separated subset of {','.join(MEASURES)} (default: %(default)s)",
    )
    parser.add_argument("--curvature", choices=["hessian", "gauss_newton"], default="hessian")
    parser.add_argument(
        "--method", choices=["auto", "exact", "lanczos", "hutchinson"], default="auto"
    )
    parser.add_argument("--k", type=int, default=1, help="eigenvalues for top_k (default: 1)")
    parser.add_argument("--tol", type=float, default=1e-6, help="Lanczos residual tolerance")
    parser.add_argument("--max-iters", type=int, default=100, help="Lanczos product budget")
    parser.add_argument("--num-probes", type=int, default=64, help="Hutchinson probes")
    parser.add_argument("--seed", type=int, default=0, help="seed for toys, starts and probes")
    parser.add_argument(
        "--allow-stochastic",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="accept train-mode BatchNorm/Dropout instead of refusing",
    )
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON (atomically)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``dynstab sharpness``; return the exit status (0 ok, 2 bad input)."""
    try:
        if args.toy is not None:
            model, loss_fn, data = build_toy(args.toy, seed=args.seed)
            source: dict[str, Any] = {"toy": args.toy, "seed": args.seed}
        else:
            model, loss_fn, data = _load_spec(args.spec)
            source = {"spec": args.spec}
        if args.checkpoint:
            _load_checkpoint(model, args.checkpoint)
            source["checkpoint"] = str(args.checkpoint)
        measures = tuple(m.strip() for m in args.measures.split(",") if m.strip())
        report = sharpness(
            model,
            loss_fn,
            data,
            measures,
            curvature=args.curvature,
            method=args.method,
            k=args.k,
            tol=args.tol,
            max_iters=args.max_iters,
            num_probes=args.num_probes,
            generator=torch.Generator().manual_seed(args.seed),
            allow_stochastic=args.allow_stochastic,
        )
    except (ValueError, TypeError) as exc:
        print(f"dynstab sharpness: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        payload = {"command": "sharpness", "source": source, "report": report.to_dict()}
        atomic_write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    return 0
