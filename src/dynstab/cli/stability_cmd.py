r"""``dynstab stability``: print the GD/SGD stability verdict table of a Gram matrix or a model.

Usage::

    dynstab stability --gram K.npy [--residuals r.npy] --lr 0.1 --batch-size 8 \
        [--sampling with|without] [--outputs C] [--json verdict.json]
    dynstab stability --spec mypkg.mymod:make --checkpoint model.pt --lr 0.1 --batch-size 8

``--spec module:function`` names a callable returning ``(model, loss_fn, (X, y))``; the
optional ``--checkpoint`` is a ``state_dict`` loaded into the model (``weights_only``). The
thresholds assume the ½-square loss at an interpolating minimum.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynstab.criteria.sampling import SAMPLING_SCHEMES
from dynstab.criteria.verdict import StabilityReport, check_stability, stability
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
    src.add_argument("--spec", help="module:function returning (model, loss_fn, (X, y))")
    p.add_argument("--residuals", type=Path, help="residuals f(x_i) − y_i (.npy/.pt), with --gram")
    p.add_argument("--checkpoint", type=Path, help="state_dict to load into the model, with --spec")
    p.add_argument("--lr", type=float, required=True, help="learning rate η > 0")
    p.add_argument("--batch-size", type=int, required=True, help="batch size B")
    p.add_argument("--sampling", choices=SAMPLING_SCHEMES, default="with", help="replacement")
    p.add_argument("--outputs", type=int, default=None, help="outputs C (with --gram; default 1)")
    p.add_argument("--method", choices=("auto", "dense", "matrix_free"), default="auto")
    p.add_argument(
        "--rank-one", action=argparse.BooleanOptionalAction, default=True, help="MM23 (24) ascent"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the rank-one restarts")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(func=run)


def _load_tensor(path: Path, what: str) -> Tensor:
    if not path.exists():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).to(torch.float64)
    if path.suffix in (".pt", ".pth"):
        obj = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(obj, Tensor):
            raise ValueError(
                f"{what} file {str(path)!r} must hold one Tensor; got {type(obj).__name__}."
            )
        return obj.to(torch.float64)
    raise ValueError(f"{what} file must end in .npy or .pt; got {str(path)!r}.")


def _load_spec(spec: str) -> Any:
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--spec must look like 'package.module:function'; got {spec!r}.")
    func = getattr(importlib.import_module(module_name), func_name, None)
    if not callable(func):
        raise ValueError(f"--spec: {module_name!r} has no callable {func_name!r}.")
    return func()


def _report(args: argparse.Namespace) -> StabilityReport:
    gen = torch.Generator().manual_seed(args.seed)
    common = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "sampling": args.sampling,
        "method": args.method,
        "rank_one": args.rank_one,
        "generator": gen,
    }
    if args.gram is not None:
        K = _load_tensor(args.gram, "--gram")
        res = None if args.residuals is None else _load_tensor(args.residuals, "--residuals")
        outputs = 1 if args.outputs is None else args.outputs
        return check_stability(K, res, outputs=outputs, **common)
    model, loss_fn, data = _load_spec(args.spec)
    if args.checkpoint is not None:
        if not args.checkpoint.exists():
            raise FileNotFoundError(f"--checkpoint file {str(args.checkpoint)!r} does not exist.")
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True, map_location="cpu"))
    return stability(model, loss_fn, data, **common)


def run(args: argparse.Namespace) -> int:
    """Run ``dynstab stability``: print the verdict table; return 0, or 2 on bad input.

    Args:
        args: Parsed arguments of the ``stability`` subcommand.

    Returns:
        Process exit code.
    """
    try:
        report = _report(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"dynstab stability: error: {err}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json is not None:
        atomic_write_json(args.json, report.to_dict(), allow_nan=False)
    return 0
