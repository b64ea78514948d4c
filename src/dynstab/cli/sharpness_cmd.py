"""``dynstab sharpness`` and ``dynstab density``: sharpness measures of a model, as tables + JSON.

Sources (exactly one):

* ``--toy NAME``: a small seeded float64 problem built from the library's models, ½-MSE loss on
  Gaussian inputs and targets: ``linear`` (``MLP([10, 1], bias=False)``, n = 50), ``diagonal``
  (``DiagonalLinearNet(20)``, n = 30), ``mlp-tanh`` (``MLP([10, 16, 16, 1], "tanh")``, n = 64),
  ``two-layer-relu`` (``TwoLayerReLU(5, 50)``, n = 40);
* ``--spec module:function`` or ``--spec path/to/file.py:function``: a callable returning
  ``(model, loss_fn, (X, y))`` (see :func:`dynstab.cli.common.load_spec`).

``--checkpoint FILE`` loads weights into the model (a ``state_dict`` or a training checkpoint
holding one; :func:`dynstab.cli.common.load_checkpoint`), ``--device`` / ``--dtype`` move the
model and data, ``--max-dense`` caps the size of the dense exact method. ``dynstab density``
prints the spectral density (the ``density`` measure) as a histogram table; ``dynstab
sharpness --measures ...,density`` prints the same table after the measures.

Example::

    dynstab sharpness --toy mlp-tanh --measures lambda_max,trace --json out.json
    dynstab density --toy mlp-tanh --bins 8
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dynstab.cli.common import CommandError, add_placement_options, exit_status, load_model_source
from dynstab.io import atomic_write_json
from dynstab.linalg import SpectralDensity
from dynstab.losses import half_mse
from dynstab.measures import MEASURES, SharpnessReport, sharpness
from dynstab.models import MLP, DiagonalLinearNet, TwoLayerReLU

__all__ = ["TOYS", "build_toy", "format_density", "parse_params", "register", "run", "run_density"]

_DTYPE = torch.float64


def _toy_linear(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = MLP([10, 1], bias=False, generator=g, dtype=_DTYPE)  # f(x) = ⟨w, x⟩: H = XᵀX/n
    X = torch.randn(50, 10, generator=g, dtype=_DTYPE)
    return model, X, torch.randn(50, generator=g, dtype=_DTYPE)


def _toy_diagonal(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = DiagonalLinearNet(20, generator=g, dtype=_DTYPE)
    X = torch.randn(30, 20, generator=g, dtype=_DTYPE)
    return model, X, torch.randn(30, generator=g, dtype=_DTYPE)


def _toy_mlp_tanh(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = MLP([10, 16, 16, 1], activation="tanh", generator=g, dtype=_DTYPE)
    X = torch.randn(64, 10, generator=g, dtype=_DTYPE)
    return model, X, torch.randn(64, generator=g, dtype=_DTYPE)


def _toy_two_layer_relu(g: torch.Generator) -> tuple[nn.Module, Tensor, Tensor]:
    model = TwoLayerReLU(5, 50, generator=g, dtype=_DTYPE)
    X = torch.randn(40, 5, generator=g, dtype=_DTYPE)
    return model, X, torch.randn(40, generator=g, dtype=_DTYPE)


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
        (torch.Size([50, 10]), torch.Size([50]))
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose from {sorted(TOYS)}.")
    model, X, y = TOYS[name](torch.Generator().manual_seed(seed))
    return model, half_mse, (X, y)


def format_table(report: SharpnessReport) -> str:
    """Render a report as an aligned text table (one row per measure); see ``report.table()``."""
    return report.table()


def format_density(density: SpectralDensity, bins: int = 10) -> str:
    """The spectral density as a histogram table: mass of the nodes in ``bins`` equal bins.

    The first line states the support, the product count and the first two moments
    (``Σ w θ`` estimates Tr/p, ``Σ w θ²`` estimates ‖·‖²_F/p).

    Example:
        >>> d = SpectralDensity(torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64),
        ...                     torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), 0)
        >>> print(format_density(d, bins=3))
        spectral density: 3 nodes on [0, 3], 0 products; Σwθ = 1 (≈ Tr/p), Σwθ² = 2.5 (≈ ‖·‖²_F/p)
        interval  mass
        --------  ----
        [0, 1)    0.5
        [1, 2)    0.25
        [2, 3]    0.25
    """
    nodes = density.nodes.detach().to("cpu", torch.float64)
    weights = density.weights.detach().to("cpu", torch.float64)
    if nodes.numel() == 0:
        return "spectral density: no nodes (nothing to show)"
    lo, hi = float(nodes.min()), float(nodes.max())
    head = (
        f"spectral density: {nodes.numel()} nodes on [{lo:.6g}, {hi:.6g}], "
        f"{density.num_matvecs} products; Σwθ = {density.moment(1):.6g} (≈ Tr/p), "
        f"Σwθ² = {density.moment(2):.6g} (≈ ‖·‖²_F/p)"
    )
    bins = max(1, int(bins))
    if hi <= lo:
        edges = [lo, hi]
        masses = [float(weights.sum())]
    else:
        width = (hi - lo) / bins
        edges = [lo + i * width for i in range(bins)] + [hi]
        index = ((nodes - lo) / width).floor().clamp(0, bins - 1).to(torch.long)
        masses = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, weights).tolist()
    rows = []
    for i, mass in enumerate(masses):
        close = "]" if i == len(masses) - 1 else ")"
        rows.append((f"[{edges[i]:.6g}, {edges[i + 1]:.6g}{close}", f"{mass:.6g}"))
    w0 = max(len("interval"), *(len(r[0]) for r in rows))
    w1 = max(len("mass"), *(len(r[1]) for r in rows))
    lines = [head, f"{'interval':<{w0}}  mass", f"{'-' * w0}  {'-' * w1}"]
    lines += [f"{a:<{w0}}  {b}" for a, b in rows]
    return "\n".join(lines)


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--toy", choices=sorted(TOYS), help="built-in toy problem")
    source.add_argument(
        "--spec",
        metavar="MODULE:FUNCTION",
        help="module:function or path/to/file.py:function returning (model, loss_fn, (X, y))",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="weights to load: a state_dict, or a dict with a 'state_dict'/'model' entry",
    )
    add_placement_options(parser)
    parser.add_argument("--curvature", choices=["hessian", "gauss_newton"], default="hessian")
    parser.add_argument(
        "--method", choices=["auto", "exact", "lanczos", "hutchinson"], default="auto"
    )
    parser.add_argument(
        "--max-dense",
        type=int,
        default=2000,
        help="largest parameter count for the dense exact method (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for toys, starts and probes")
    parser.add_argument(
        "--allow-stochastic",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="accept train-mode BatchNorm/Dropout instead of refusing",
    )
    parser.add_argument(
        "--params",
        metavar="SELECTION",
        help="parameters to measure: comma-separated names or module prefixes (e.g. '2' or "
        "'fc2.weight,fc2.bias'), or 're:PATTERN' (a regular expression on the names); "
        "default: the parameters with requires_grad=True",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show progress bars on stderr",
    )
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON (atomically)")
    parser.add_argument("--density-probes", type=int, default=8, help="SLQ probes (density)")
    parser.add_argument("--density-iters", type=int, default=40, help="SLQ steps per probe")
    parser.add_argument("--bins", type=int, default=10, help="histogram bins of the density")


def _add_parser(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """A sub-parser of this module (its docstring as description) with the common options."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(parser)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sharpness`` and ``density`` subcommands to ``subparsers``."""
    parser = _add_parser(
        subparsers,
        "sharpness",
        "sharpness measures (λmax, trace, Frobenius, ...) of a model at a point",
    )
    parser.add_argument(
        "--measures",
        default="lambda_max,trace,frobenius",
        help=f"comma-separated subset of {','.join(MEASURES)} (default: %(default)s)",
    )
    parser.add_argument("--k", type=int, default=1, help="eigenvalues for top_k (default: 1)")
    parser.add_argument("--tol", type=float, default=1e-6, help="Lanczos relative tolerance")
    parser.add_argument("--max-iters", type=int, default=100, help="Lanczos product budget")
    parser.add_argument("--num-probes", type=int, default=64, help="Hutchinson probes")
    parser.set_defaults(func=run)
    dens = _add_parser(
        subparsers,
        "density",
        "spectral density of the curvature (SLQ, or exact when small) as a histogram",
    )
    dens.set_defaults(func=run_density, measures="density")


def _problem(
    args: argparse.Namespace,
) -> tuple[nn.Module, Callable[..., Tensor], Any, dict[str, Any]]:
    if args.toy is None:
        return load_model_source(args)
    toy = build_toy(args.toy, seed=args.seed)
    return load_model_source(args, (toy, {"toy": args.toy, "seed": args.seed}))


def parse_params(text: str | None) -> Callable[[str, Tensor], bool] | None:
    """The ``--params`` selection as a predicate on ``(name, parameter)`` (None: the default).

    Example:
        >>> pred = parse_params("2,fc.bias")
        >>> [n for n in ("2.weight", "2.bias", "12.weight", "fc.bias") if pred(n, None)]
        ['2.weight', '2.bias', 'fc.bias']
        >>> parse_params("re:bias$")("0.bias", None)
        True
    """
    if text is None:
        return None
    if text.startswith("re:"):
        try:
            pattern = re.compile(text[3:])
        except re.error as exc:
            raise CommandError(
                f"--params: invalid regular expression {text[3:]!r}: {exc}."
            ) from None
        return lambda name, _p: pattern.search(name) is not None
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise CommandError("--params must name at least one parameter or module prefix.")
    return lambda name, _p: any(name == it or name.startswith(it + ".") for it in items)


def _measure(
    args: argparse.Namespace, measures: tuple[str, ...]
) -> tuple[SharpnessReport, dict[str, Any]]:
    if not measures:
        raise CommandError(f"--measures must name at least one of {list(MEASURES)}.")
    if args.bins < 1:
        raise CommandError(f"--bins must be >= 1; got {args.bins}.")
    model, loss_fn, data, source = _problem(args)
    report = sharpness(
        model,
        loss_fn,
        data,
        measures,
        curvature=args.curvature,
        method=args.method,
        k=getattr(args, "k", 1),
        tol=getattr(args, "tol", 1e-6),
        max_iters=getattr(args, "max_iters", 100),
        num_probes=getattr(args, "num_probes", 64),
        density_probes=args.density_probes,
        density_iters=args.density_iters,
        generator=torch.Generator().manual_seed(args.seed),
        max_dense=args.max_dense,
        allow_stochastic=args.allow_stochastic,
        params=parse_params(args.params),
        progress=args.progress,
    )
    if args.params is not None:
        source["params"] = args.params
    return report, source


def _print_and_save(
    args: argparse.Namespace, report: SharpnessReport, source: dict[str, Any], command: str
) -> None:
    if report.measures():
        print(format_table(report))
    else:
        print(format_table(report).splitlines()[0])
    if "density" in args.measures.split(","):
        if report.density is None:
            print(
                "spectral density: not computed (the chosen method returned none); "
                "use --method auto or lanczos"
            )
        else:
            print(format_density(report.density, args.bins))
    if args.json:
        payload = {"command": command, "source": source, "report": report.to_dict()}
        atomic_write_json(Path(args.json), payload)
        print(f"wrote {args.json}")


def run(args: argparse.Namespace) -> int:
    """Execute ``dynstab sharpness``; return the exit status (0 ok, 2 bad input, 3 environment)."""
    try:
        measures = tuple(m.strip() for m in args.measures.split(",") if m.strip())
        report, source = _measure(args, measures)
        _print_and_save(args, report, source, "sharpness")
    except Exception as exc:
        return exit_status("sharpness", exc, debug=getattr(args, "debug", False))
    return 0


def run_density(args: argparse.Namespace) -> int:
    """Execute ``dynstab density``: the spectral density as a histogram table (+ JSON)."""
    try:
        report, source = _measure(args, ("density",))
        _print_and_save(args, report, source, "density")
    except Exception as exc:
        return exit_status("density", exc, debug=getattr(args, "debug", False))
    return 0
