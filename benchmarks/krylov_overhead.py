"""Overhead of dynstab's Krylov engine over its HVP floor, MLP 784-w-w-10 on n=1000 (float32).

For each width, in one process (ratios, not absolute seconds, are what this measures):

* ``floor``: one gradient with graph (``HessianOperator`` construction: forward +
  ``create_graph`` backward) plus the HVPs the run used, timed *inside the run* by wrapping the
  operator (so machine-load drift affects numerator and denominator alike);
* ``ratio``: wall time of ``HessianOperator(...)`` + ``lanczos_top_eigenpairs(..., tol)``
  divided by that floor; the rest is Krylov overhead (orthogonalisation, Ritz problems,
  certificate);
* ``first``: the first iterate whose largest Ritz value is within ``tol`` (relative) of the
  reference value (a separate long run), from the certified run's progress callback;
* at ``tol = 1e-3``: the certified Lanczos time against power iteration (PyHessian's
  algorithm) stopped by an oracle at its first iterate within 1e-3 of the reference, i.e. the
  best any stopping rule of power iteration could do (gradient + its HVPs, timed).

Run: ``.venv/bin/python benchmarks/krylov_overhead.py [--widths 128 256 512 1024 2048]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import argparse
import json
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from dynstab.curvature import HessianOperator
from dynstab.errors import ConvergenceWarning
from dynstab.linalg import LanczosConfig, LanczosProgress, LinearOperator, lanczos_top_eigenpairs
from dynstab.losses import half_mse


class _Timed(LinearOperator):
    """Forwards products to ``op`` and accumulates the seconds spent in them."""

    def __init__(self, op: HessianOperator) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op = op
        self.seconds = 0.0

    def _matmat(self, V: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = self.op @ V
        self.seconds += time.perf_counter() - t0
        return out


def lanczos_run(
    prob: common.Problem, tol: float, seed: int, basis_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    values: list[float] = []

    def record(r: LanczosProgress) -> None:
        values.append(float(r.values[0]) if r.values.numel() else float("nan"))

    t0 = time.perf_counter()
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    build = time.perf_counter() - t0
    op = _Timed(H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = lanczos_top_eigenpairs(
            op,
            1,
            tol=tol,
            max_iters=300,
            generator=torch.Generator().manual_seed(seed),
            return_vectors=False,
            callback=record,
            config=LanczosConfig(basis_dtype=basis_dtype),
        )
    total = time.perf_counter() - t0
    floor = build + op.seconds
    return {
        "value": float(res.values[0]),
        "error_bound": float(res.error_bounds[0]),
        "converged": res.converged,
        "hvps": res.num_matvecs,
        "seconds": total,
        "build_seconds": build,
        "hvp_seconds": op.seconds,
        "floor_seconds": floor,
        "ratio": total / floor,
        "trajectory": values,
    }


def first_within(traj: list[float], ref: float, tol: float) -> int:
    """First iterate (1-based) from which the value stays within ``tol`` of ``ref``."""
    ok = [abs(v - ref) <= tol * abs(ref) for v in traj]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i + 1
    return -1


def power_oracle(prob: common.Problem, ref: float, tol: float, seed: int, cap: int) -> dict:
    """Power iteration (PyHessian's loop) stopped at its first iterate within ``tol``."""
    t0 = time.perf_counter()
    H = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(H.shape[0], generator=g).to(H.dtype)
    v = v / torch.linalg.vector_norm(v)
    for it in range(1, cap + 1):
        w = H @ v
        theta = float(torch.dot(v, w))
        if abs(theta - ref) <= tol * abs(ref):
            return {"hvps": it, "seconds": time.perf_counter() - t0, "reached": True}
        v = w / torch.linalg.vector_norm(w)
    return {"hvps": cap, "seconds": time.perf_counter() - t0, "reached": False}


def measure(width: int, seed: int, power_cap: int) -> dict[str, Any]:
    prob = common.mlp_problem(1000, (784, width, width, 10))
    # reference: a long run to the float32 round-off floor (products recomputed afresh)
    ref = lanczos_run(prob, 1e-9, seed + 100)["value"]
    out: dict[str, Any] = {"width": width, "p": prob.num_params, "reference": ref}
    for tol in (1e-6, 1e-3):
        run = lanczos_run(prob, tol, seed)
        run["first_within_tol"] = first_within(run.pop("trajectory"), ref, tol)
        run["relative_error"] = abs(run["value"] - ref) / abs(ref)
        out[f"lanczos_{tol:g}"] = run
    f32 = lanczos_run(prob, 1e-6, seed, basis_dtype=torch.float32)
    f32["first_within_tol"] = first_within(f32.pop("trajectory"), ref, 1e-6)
    f32["relative_error"] = abs(f32["value"] - ref) / abs(ref)
    out["lanczos_1e-06_float32_basis"] = f32
    out["power_oracle_1e-3"] = power_oracle(prob, ref, 1e-3, seed, power_cap)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--power-cap", type=int, default=400)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    rows = []
    print(
        f"{'width':>6} {'p':>9} | {'tol':>5} {'HVPs':>4} {'first':>5} {'ratio':>6} "
        f"{'rel.err':>8} {'bound':>8} | {'power HVPs':>10} {'LZ/power time':>13}",
        flush=True,
    )
    for w in args.widths:
        r = measure(w, args.seed, args.power_cap)
        rows.append(r)
        pw = r["power_oracle_1e-3"]
        for tol in (1e-6, 1e-3):
            lz = r[f"lanczos_{tol:g}"]
            extra = (
                f"{pw['hvps']:>10d}{'' if pw['reached'] else '+'} "
                f"{lz['seconds'] / pw['seconds']:>13.2f}"
                if tol == 1e-3
                else ""
            )
            print(
                f"{w:>6d} {r['p']:>9d} | {tol:>5.0e} {lz['hvps']:>4d} {lz['first_within_tol']:>5d} "
                f"{lz['ratio']:>6.3f} {lz['relative_error']:>8.1e} "
                f"{lz['error_bound'] / abs(lz['value']):>8.1e} | {extra}",
                flush=True,
            )
        lz = r["lanczos_1e-06_float32_basis"]
        print(
            f"{'':>6} {'f32 basis':>9} | {1e-6:>5.0e} {lz['hvps']:>4d} "
            f"{lz['first_within_tol']:>5d} "
            f"{lz['ratio']:>6.3f} {lz['relative_error']:>8.1e} "
            f"{lz['error_bound'] / abs(lz['value']):>8.1e} | converged={lz['converged']}",
            flush=True,
        )
    record = {"machine": common.machine_info(), "threads": common.THREADS, "results": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(record, fh, indent=1)


if __name__ == "__main__":
    main()
