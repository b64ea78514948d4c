"""Certified Lanczos engine vs the engine before issue 12: HVPs, wall time and accuracy.

Issue 12 asks for certified λmax with "no more than 20% slowdown on the non-clustered
benchmark". The slowdown is measured against the engine as it was before the certified Krylov
engine was merged (``OLD_COMMIT``, the first parent of the ``krylov`` merge), on the same model,
data, tolerance, start vector and thread count:

* ``cnn`` — the non-clustered benchmark: the C21-style CNN of ``compare_lambda_max.py``
  (relative gap (λ1−λ2)/λ1 ≈ 5e-2, measured and printed here);
* ``mlp`` — the clustered one: the 784-512-512-10 tanh MLP (clustered top-5, relative gap
  ≈ 1e-2), shown for context.

Both engines run ``lanczos_top_eigenpairs(HessianOperator(model, half_mse, (X, y)), k=1,
tol=1e-6, max_iters=100, generator=torch.Generator().manual_seed(seed))``; both draw the start
vector as ``torch.randn(p, generator=, dtype=float64)`` normalised, so the start is the same.
Each run is one fresh worker process (``--worker``) whose ``PYTHONPATH`` selects the engine: the
old one from a detached ``git worktree`` of ``OLD_COMMIT`` in a temporary directory (removed
afterwards), the new one from this tree. Runs are interleaved in pairs, the order alternating
(new-old, old-new, …) so that drifting machine load affects both alike; the reported slowdown is
the median over pairs of (new time / old time), together with each side's median. Every worker
also measures its HVP floor in the same process (one gradient with graph + the run's HVP count
× the median time of one cached-graph HVP), so ``time / floor`` is a load-insensitive check.
Accuracy is against a float64 reference (this tree's engine at tol 1e-10, residual rule).

Without ``git`` or without ``OLD_COMMIT`` in the repository (e.g. an sdist), the script writes a
result saying so and exits 0 (``--old-src DIR`` points at an existing checkout's ``src``).

Run: ``.venv/bin/python benchmarks/engine_regression.py [--quick] [--pairs 5] [--out r.json]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# In a worker process PYTHONPATH puts the engine under test first, so these imports resolve to
# the old or the new dynstab (checked against ``dynstab.__file__`` by the driver).
import dynstab
from dynstab.curvature import HessianOperator
from dynstab.linalg import lanczos_top_eigenpairs
from dynstab.losses import half_mse

HERE = Path(__file__).resolve().parent
#: The last commit of main before ``82c4d94 Merge branch 'krylov'`` (the certified engine).
OLD_COMMIT = "fd2a67c"
NEW_SRC = common.ROOT / "src"
SLOWDOWN_LIMIT = 1.20  # issue 12: no more than 20% slowdown on the non-clustered benchmark


def _problem(name: str, quick: bool, seed: int) -> common.Problem:
    if name == "cnn":
        if quick:
            return common.cnn_problem(n=64, side=16, channels=8, seed=seed)
        return common.cnn_problem(seed=seed)
    if name == "mlp":
        if quick:
            return common.mlp_problem(n=200, sizes=(784, 64, 64, 10), seed=seed)
        return common.mlp_problem(seed=seed)
    raise ValueError(f"problem must be 'cnn' or 'mlp'; got {name!r}.")


# --------------------------------------------------------------------------------------------
# worker: one engine, one run, in its own process
# --------------------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """One timed Lanczos run with whatever ``dynstab`` the ``PYTHONPATH`` selects (JSON out)."""

    prob = _problem(args.worker, args.quick, args.model_seed)
    data = (prob.X, prob.y)
    # warm-up (allocator, autograd kernels): one construction and two products
    op = HessianOperator(prob.model, half_mse, data)
    v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(1), dtype=prob.X.dtype)
    for _ in range(2):
        op @ v
    del op

    t0 = time.perf_counter()
    op = HessianOperator(prob.model, half_mse, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lanczos_top_eigenpairs(
            op,
            k=1,
            tol=args.tol,
            max_iters=args.max_iters,
            generator=torch.Generator().manual_seed(args.seed),
            return_vectors=False,
        )
    seconds = time.perf_counter() - t0
    del op

    # the HVP floor of this run, in this process: one gradient with graph + hvps × one HVP
    t0 = time.perf_counter()
    op = HessianOperator(prob.model, half_mse, data)
    t_grad = time.perf_counter() - t0
    hvp_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        op @ v
        hvp_times.append(time.perf_counter() - t0)
    t_hvp = statistics.median(hvp_times)
    bound = getattr(res, "error_bounds", None)
    out = {
        "dynstab_file": dynstab.__file__,
        "value": float(res.values[0]),
        "hvps": int(res.num_matvecs),
        "converged": bool(res.converged),
        "error_bound": None if bound is None else float(bound[0]),
        "seconds": seconds,
        "floor_seconds": t_grad + res.num_matvecs * t_hvp,
        "hvp_seconds": t_hvp,
        "gradient_seconds": t_grad,
    }
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def old_source(commit: str, given: Path | None) -> Iterator[tuple[Path | None, str]]:
    """The ``src`` directory of ``commit`` (a temporary detached worktree) or why there is none."""
    if given is not None:
        yield (given, "given") if (given / "dynstab").is_dir() else (None, f"no dynstab in {given}")
        return
    git = shutil.which("git")
    if git is None:
        yield None, "git is not installed"
        return
    probe = subprocess.run(
        [git, "-C", str(common.ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        yield None, f"commit {commit} is not in this repository (not a git clone of dynstab?)"
        return
    tmp = Path(tempfile.mkdtemp(prefix="dynstab_pre12_"))
    wt = tmp / "tree"
    add = subprocess.run(
        [git, "-C", str(common.ROOT), "worktree", "add", "--detach", str(wt), commit],
        capture_output=True,
        text=True,
    )
    try:
        if add.returncode != 0:
            yield None, f"git worktree add failed: {add.stderr.strip()[-300:]}"
        else:
            yield wt / "src", probe.stdout.strip()
    finally:
        if add.returncode == 0:
            subprocess.run(
                [git, "-C", str(common.ROOT), "worktree", "remove", "--force", str(wt)],
                capture_output=True,
            )
        shutil.rmtree(tmp, ignore_errors=True)


def run_worker(src: Path, problem: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(HERE)])
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        problem,
        "--seed",
        str(args.seed),
        "--model-seed",
        str(args.model_seed),
        "--tol",
        str(args.tol),
        "--max-iters",
        str(args.max_iters),
    ]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {problem} ({src}) failed with code {proc.returncode}:\n{proc.stderr[-2000:]}"
        )
    out = json.loads(lines[-1][len("RESULT ") :])
    if not Path(out["dynstab_file"]).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"worker imported {out['dynstab_file']}, not the engine in {src}")
    return out


def reference(problem: str, args: argparse.Namespace) -> dict[str, Any]:
    """λ1 and λ2 of the float64 copy, this tree's engine at tol 1e-10 (residual rule)."""

    p64 = _problem(problem, args.quick, args.model_seed).to(torch.float64)
    op = HessianOperator(p64.model, half_mse, (p64.X, p64.y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lanczos_top_eigenpairs(
            op,
            k=2,
            tol=1e-10,
            max_iters=300,
            generator=torch.Generator().manual_seed(12345),
            return_vectors=False,
            criterion="residual",
        )
    lam1, lam2 = float(res.values[0]), float(res.values[1])
    return {
        "lambda_max": lam1,
        "lambda_2": lam2,
        "relative_gap": (lam1 - lam2) / abs(lam1),
        "converged": bool(res.converged),
        "num_params": p64.num_params,
        "name": p64.name,
    }


def information_limit(
    problem: str, args: argparse.Namespace, lam1: float, steps: int
) -> dict[str, int | None]:
    """First Lanczos step within tol of λ1, and the first at which any δ-certificate could stop.

    Plain Lanczos (full reorthogonalisation) from the benchmark's own start vector on the
    float32 operator; the certificate limit is ``moment_optimal_stop`` at δ = 1e-3.
    """
    # deferred: worker processes run the old engine, which has no ``krylov`` module
    from dynstab.linalg.krylov import moment_optimal_stop, plain_lanczos

    prob = _problem(problem, args.quick, args.model_seed)
    op = HessianOperator(prob.model, half_mse, (prob.X, prob.y))
    # the engines' start: a float64 standard normal draw from the seeded generator
    gen = torch.Generator().manual_seed(args.seed)
    q = torch.randn(op.shape[0], generator=gen, dtype=torch.float64)
    alpha, beta, _, _, _ = plain_lanczos(op, q.unsqueeze(1), steps)
    thetas = [
        float(torch.linalg.eigvalsh(tridiagonal(alpha[0, :m], beta[0, : m - 1]))[-1])
        for m in range(1, alpha.shape[1] + 1)
    ]
    within = [m for m, th in enumerate(thetas, 1) if abs(th - lam1) <= args.tol * abs(lam1)]
    optimum = moment_optimal_stop(
        alpha[0], beta[0], size=op.shape[0], tol=args.tol, failure_probability=1e-3
    )
    return {"first_within_tol": within[0] if within else None, "moment_optimal_stop": optimum}


def tridiagonal(alpha: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """The symmetric tridiagonal matrix with diagonal ``alpha`` and off-diagonal ``off``."""
    return torch.diag(alpha) + torch.diag(off, 1) + torch.diag(off, -1)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def compare(problem: str, old_src: Path, args: argparse.Namespace) -> dict[str, Any]:
    ref = reference(problem, args)
    common.log(f"{problem}: reference λ1 = {ref['lambda_max']:.10g}, gap {ref['relative_gap']:.2e}")
    pairs: list[dict[str, Any]] = []
    for i in range(args.pairs):
        order = ("new", "old") if i % 2 == 0 else ("old", "new")
        pair: dict[str, Any] = {"order": list(order)}
        for side in order:
            r = run_worker(NEW_SRC if side == "new" else old_src, problem, args)
            r["rel_error"] = abs(r["value"] - ref["lambda_max"]) / abs(ref["lambda_max"])
            pair[side] = r
        pair["time_ratio"] = pair["new"]["seconds"] / pair["old"]["seconds"]
        pair["floor_ratio"] = (pair["new"]["seconds"] / pair["new"]["floor_seconds"]) / (
            pair["old"]["seconds"] / pair["old"]["floor_seconds"]
        )
        pairs.append(pair)
        common.log(
            f"{problem} pair {i + 1}/{args.pairs}: new {pair['new']['seconds']:.2f}s "
            f"{pair['new']['hvps']} HVPs, old {pair['old']['seconds']:.2f}s "
            f"{pair['old']['hvps']} HVPs, ratio {pair['time_ratio']:.3f}"
        )

    def side(name: str) -> dict[str, Any]:
        runs = [p[name] for p in pairs]
        return {
            "hvps": _median([r["hvps"] for r in runs]),
            "seconds_median": _median([r["seconds"] for r in runs]),
            "time_over_floor_median": _median([r["seconds"] / r["floor_seconds"] for r in runs]),
            "rel_error": _median([r["rel_error"] for r in runs]),
            "error_bound_rel": (
                None
                if runs[0]["error_bound"] is None
                else runs[0]["error_bound"] / abs(runs[0]["value"])
            ),
            "converged": all(r["converged"] for r in runs),
        }

    ratios = [p["time_ratio"] for p in pairs]
    limit = information_limit(problem, args, ref["lambda_max"], int(side("new")["hvps"]) + 3)
    return {
        **limit,
        "problem": problem,
        "reference": ref,
        "pairs": pairs,
        "new": side("new"),
        "old": side("old"),
        "slowdown_median": _median(ratios),
        "slowdown_min": min(ratios),
        "slowdown_max": max(ratios),
        "hvp_ratio": side("new")["hvps"] / side("old")["hvps"],
        "floor_normalised_ratio_median": _median([p["floor_ratio"] for p in pairs]),
    }


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=None, help="interleaved pairs per problem")
    parser.add_argument("--problems", nargs="*", default=["cnn", "mlp"], choices=["cnn", "mlp"])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iters", type=int, default=100)
    parser.add_argument("--model-seed", type=int, default=0)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--old-src", type=Path, default=None, help="src/ of an old checkout")
    parser.add_argument("--worker", choices=["cnn", "mlp"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    if args.pairs is None:
        args.pairs = 2 if args.quick else 5
    config = {
        "old_commit": args.old_commit,
        "tol": args.tol,
        "max_iters": args.max_iters,
        "start_seed": args.seed,
        "model_seed": args.model_seed,
        "pairs": args.pairs,
        "quick": args.quick,
        "threads": common.THREADS,
        "slowdown_limit": SLOWDOWN_LIMIT,
    }
    results: list[dict[str, Any]] = []
    with old_source(args.old_commit, args.old_src) as (src, how):
        if src is None:
            common.log(f"skipped: {how}")
            config["skipped"] = how
        else:
            config["old_resolved"] = how
            for problem in args.problems:
                results.append(compare(problem, src, args))
    for r in results:
        print(
            f"{r['reference']['name']}: gap {r['reference']['relative_gap']:.2e} | "
            f"new {r['new']['hvps']:.0f} HVPs {r['new']['seconds_median']:.2f}s "
            f"err {r['new']['rel_error']:.1e} | old {r['old']['hvps']:.0f} HVPs "
            f"{r['old']['seconds_median']:.2f}s err {r['old']['rel_error']:.1e} | "
            f"new/old time {r['slowdown_median']:.3f} "
            f"[{r['slowdown_min']:.3f}, {r['slowdown_max']:.3f}]"
        )
    if args.out is not None:
        common.write_json(args.out, common.envelope("engine_regression", config, results))


if __name__ == "__main__":
    main()
