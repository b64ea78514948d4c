r"""``dynstab stability``: print the GD/SGD stability verdict table of a Gram matrix or a model.

Usage::

    dynstab stability --gram K.npy [--residuals r.npy] --lr 0.1 --batch-size 8 \
        [--sampling with|without] [--outputs C] [--json verdict.json]
    dynstab stability --spec mypkg.mymod:make --checkpoint model.pt --lr 0.1 --batch-size 8
    dynstab stability --spec path/to/make.py:make --device cuda --dtype float64 ...
    dynstab stability --spec mypkg.mymod:make --route parameter --max-memory 8GB ...

``--spec`` names a callable returning ``(model, loss_fn, (X, y))`` (``module:function`` or
``file.py:function``); ``--checkpoint`` loads weights into that model (a ``state_dict`` or a
training checkpoint holding one). A Gram matrix file has no weights, so ``--checkpoint`` and
``--dtype`` are refused with ``--gram`` (K is always used in float64). ``--max-dense N`` lets
the exact η* use its dense solver only when that problem is guaranteed to have at most ``N``
rows (``nC(nC+1)/2 ≤ N``, an upper bound of the ρ(ρ+1)/2 rows it needs), else the matrix-free
solver. ``--rank-one`` (default) adds the rank-one bound, found by the ascent of Mulayoff &
Michaeli (2024, eq. 24) from ``--seed``. The thresholds assume the ½-square loss at an
interpolating minimum.

``--route`` picks how the row-space coordinates of K are built (:class:`StabilityProblem`):
``gram`` eigendecomposes the nC×nC matrix K, ``parameter`` the p×p matrix JᵀJ/n from the
per-sample Jacobians (``--spec`` models only), ``auto`` (default) the one with fewer flops
within the memory budget. ``--max-memory SIZE`` (``8GB``, ``512MiB``, ``2e9`` bytes, ``inf``)
replaces the default budget, half of the memory available now; a problem that does not fit
exits with status 3, naming the allocation and a fix, before anything large is allocated.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynstab._checks import check_lr
from dynstab.cli.common import (
    CommandError,
    add_placement_options,
    exit_status,
    load_model_source,
    parse_device,
    parse_size,
)
from dynstab.criteria import (
    SAMPLING_SCHEMES,
    SampledStabilityReport,
    StabilityProblem,
    StabilityReport,
    stability,
)
from dynstab.criteria.routes import ROUTES
from dynstab.io import atomic_write_json

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``stability`` subcommand to an argparse ``subparsers`` object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "stability",
        help="GD/SGD linear-stability verdict (exact η*, bounds) of a Gram matrix or a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gram", type=Path, help="Gram matrix K = JJᵀ/n (.npy or .pt), (nC, nC)")
    src.add_argument(
        "--spec", help="module:function or file.py:function returning (model, loss_fn, (X, y))"
    )
    p.add_argument("--residuals", type=Path, help="residuals f(x_i) − y_i (.npy/.pt), with --gram")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="weights for the --spec model: a state_dict or a dict with a 'state_dict'/'model' key",
    )
    add_placement_options(p)
    p.add_argument("--lr", type=float, required=True, help="learning rate η > 0")
    p.add_argument("--batch-size", type=int, required=True, help="batch size B")
    p.add_argument("--sampling", choices=SAMPLING_SCHEMES, default="with", help="replacement")
    p.add_argument("--outputs", type=int, default=None, help="outputs C (with --gram; default 1)")
    p.add_argument(
        "--method",
        choices=("auto", "exact", "sampled", "dense", "matrix_free"),
        default="auto",
        help="exact (dense or matrix_free η* solver), sampled (simulated linearised SGD with "
        "confidence intervals, any n; --spec models), or auto: exact when it fits --max-memory",
    )
    p.add_argument(
        "--momentum", type=float, default=0.0, help="heavy-ball momentum β of SGD (default 0)"
    )
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (with --momentum)")
    p.add_argument(
        "--max-dense",
        type=int,
        default=None,
        help="dense η* only if nC(nC+1)/2 ≤ N, else matrix-free (default: the library's auto rule)",
    )
    p.add_argument(
        "--rank-one", action=argparse.BooleanOptionalAction, default=True, help="rank-one bound"
    )
    p.add_argument(
        "--route",
        choices=("auto", *ROUTES),
        default="auto",
        help="exact route to K's row space: gram (eigendecompose K), parameter (JᵀJ/n; --spec "
        "only) or auto, the fewer flops within the memory budget (default: %(default)s)",
    )
    p.add_argument(
        "--max-memory",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="memory budget, e.g. 8GB, 512MiB, 2e9 (bytes) or inf (default: half of the "
        "memory available now); past it the command exits with status 3 before allocating",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the rank-one restarts")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(func=run)


def _load_tensor(path: Path, what: str) -> Tensor:
    if not path.exists():
        raise CommandError(f"{what} file {str(path)!r} does not exist.")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CommandError(
                f"{what} file {str(path)!r} is not a plain .npy array ({exc})."
            ) from None
        return torch.from_numpy(array).to(torch.float64)
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise CommandError(
                f"{what} file {str(path)!r} cannot be loaded with torch.load(weights_only=True) "
                f"({type(exc).__name__}); save one tensor with torch.save(tensor, path)."
            ) from None
        if not isinstance(obj, Tensor):
            raise CommandError(
                f"{what} file {str(path)!r} must hold one Tensor; got {type(obj).__name__}."
            )
        return obj.to(torch.float64)
    raise CommandError(f"{what} file must end in .npy or .pt; got {str(path)!r}.")


def _method(args: argparse.Namespace, n_rows: int) -> str:
    """The η* solver: ``--method``, or dense/matrix-free from ``--max-dense``."""
    if args.max_dense is None:
        return str(args.method)
    if args.max_dense < 1:
        raise CommandError(f"--max-dense must be >= 1; got {args.max_dense}.")
    if args.method not in ("auto", "exact"):
        raise CommandError(
            f"--max-dense chooses between the dense and matrix-free solvers; drop it or "
            f"--method {args.method}."
        )
    return "dense" if n_rows * (n_rows + 1) // 2 <= args.max_dense else "matrix_free"


def _rows(data: Any) -> int:
    """Number of rows nC of K for data ``(X, y)`` or an iterable of batches (from y)."""
    batches = [data] if isinstance(data, tuple | list) and isinstance(data[0], Tensor) else data
    return sum(int(y.numel()) for _, y in batches)


def _check_usage(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before anything is loaded or computed."""
    check_lr(args.lr)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1; got {args.batch_size}.")
    if not 0.0 <= args.momentum < 1.0:
        raise CommandError(f"--momentum must be in [0, 1); got {args.momentum}.")
    if args.nesterov and args.momentum == 0.0:
        raise CommandError("--nesterov needs a momentum: add --momentum BETA (0 < BETA < 1).")
    if args.gram is not None:
        for flag, value in (("--checkpoint", args.checkpoint), ("--dtype", args.dtype)):
            if value is not None:
                raise CommandError(
                    f"{flag} applies to --spec models; a Gram matrix file has no weights and K "
                    f"is always used in float64. Drop {flag}, or pass --spec."
                )
        if args.route == "parameter":
            raise CommandError(
                "--route parameter works on JᵀJ/n and needs the per-sample Jacobians, which a "
                "Gram matrix file does not have; use --route gram (or auto), or pass --spec."
            )
        if args.method == "sampled":
            raise CommandError(
                "--method sampled simulates SGD with per-batch curvature products of a model; "
                "a Gram matrix file has none. Use --method exact (or auto), or pass --spec."
            )
    elif args.residuals is not None or args.outputs is not None:
        raise CommandError(
            "--residuals and --outputs apply to --gram; the --spec model gives them."
        )


def _report(args: argparse.Namespace) -> StabilityReport | SampledStabilityReport:
    _check_usage(args)
    gen = torch.Generator().manual_seed(args.seed)
    if args.gram is not None:
        device = parse_device(args.device)
        K = _load_tensor(args.gram, "--gram").to(device)
        res = None if args.residuals is None else _load_tensor(args.residuals, "--residuals")
        outputs = 1 if args.outputs is None else args.outputs
        method = _method(args, int(K.shape[0]) if K.ndim == 2 else 0)
        method = "auto" if method == "exact" else method  # K: every route is exact
        prob = StabilityProblem.from_gram(
            K,
            outputs,
            residuals=None if res is None else res.to(device),
            max_memory=args.max_memory,
        )
        sampling = prob.sampling(args.batch_size, args.sampling)
        return prob.check(
            args.lr,
            sampling,
            method=method,
            rank_one=args.rank_one,
            generator=gen,
            momentum=args.momentum,
            nesterov=args.nesterov,
        )
    model, loss_fn, data, _source = load_model_source(args)
    return stability(
        model,
        loss_fn,
        data,
        lr=args.lr,
        batch_size=args.batch_size,
        sampling=args.sampling,
        method=_method(args, _rows(data)),
        route=args.route,
        max_memory=args.max_memory,
        rank_one=args.rank_one,
        generator=gen,
        momentum=args.momentum,
        nesterov=args.nesterov,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``dynstab stability``: print the verdict table; 0, 2 (bad input) or 3 (environment).

    Args:
        args: Parsed arguments of the ``stability`` subcommand.

    Returns:
        Process exit code.
    """
    try:
        report = _report(args)
        print(report.table())
        if args.json is not None:
            atomic_write_json(args.json, report.to_dict(), allow_nan=False)
    except Exception as exc:
        return exit_status("stability", exc, debug=getattr(args, "debug", False))
    return 0
