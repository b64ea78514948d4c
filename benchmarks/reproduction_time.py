"""Benchmark: wall time of the Wu & Su reproduction, now against a reference commit.

The reproductions train dynstab's own models with dynstab's training engine (one library, one
harness). Before that change they used hand-written NumPy trainers. The requirement that came with
the change: the quick profile of ``dynstab reproduce wu-su-2023`` stays under 2× the reference
commit's wall time, and the full profile under 1.5×. This script measures both trees the same way,
interleaved, in fresh processes: ``dynstab reproduce wu-su-2023 [--quick]`` into a temporary
directory, the same number of worker processes and threads for both.

The reference tree comes from ``git worktree add --detach`` of ``--baseline`` (default
``604d36b``, the last commit before the harness split). It runs on this checkout's virtual
environment, with ``PYTHONPATH`` pointing at its ``src``. Both trees run on the project's
``.venv`` interpreter when there is one (the reproductions need matplotlib, which the benchmark
environment ``.venv-bench`` does not install), else on this interpreter (``--python``
overrides). Without git, or in a shallow clone without that commit, only the current tree is
timed and the table says so.

The two trees do not do the same work. The current profiles run 2 seeds (quick) and 3 seeds
(full) per stochastic claim, where the reference ran one. The table shows the claim counts of
each tree beside its time.

Usage:
    python benchmarks/reproduction_time.py [--profiles quick full] [--repeats 2] [--workers 2]

Prints a Markdown table: profile, tree, median wall time over the repeats (range), the exit
code, claim count, and the ratio current / reference.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "604d36b"
LIMITS = {"quick": 2.0, "full": 1.5}  # allowed ratio current / reference
DRIVER = "import sys; from dynstab.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Tree:
    """A source tree to time: its label and the ``src`` folder put first on ``PYTHONPATH``."""

    label: str
    src: Path
    times: dict[str, list[float]] = field(default_factory=dict)
    codes: dict[str, list[int]] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)


def _claims(out: Path) -> str:
    """``passed/total`` (or per-status counts) from the run's summary.json, ``?`` if absent."""
    path = next(iter(sorted(out.rglob("summary.json"))), None)
    if path is None:
        return "?"
    with contextlib.suppress(ValueError, OSError):
        data = json.loads(path.read_text())
        counts: dict[str, int] = {}
        for claim in _walk_claims(data):
            status = str(claim.get("status", "pass" if claim.get("passed") else "fail"))
            counts[status] = counts.get(status, 0) + 1
        if counts:
            return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return "?"


def _walk_claims(data: object) -> Iterator[dict[str, object]]:
    """Every dict under a ``claims`` key, at any depth of a summary.json."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "claims" and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _walk_claims(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk_claims(item)


def default_python() -> str:
    """The project's ``.venv`` interpreter when it exists, else the running one."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_once(tree: Tree, profile: str, workers: int, threads: int, python: str) -> None:
    """One ``dynstab reproduce wu-su-2023`` run of ``tree`` in a fresh output folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree.src), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["MPLBACKEND"] = "Agg"
    with tempfile.TemporaryDirectory(prefix="dynstab-repro-time-") as tmp:
        out = Path(tmp) / "out"
        cmd = [python, "-c", DRIVER, "reproduce", "wu-su-2023", "--out", str(out)]
        cmd += ["--workers", str(workers)]
        if profile == "quick":
            cmd.append("--quick")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - t0
        tree.times.setdefault(profile, []).append(elapsed)
        tree.codes.setdefault(profile, []).append(done.returncode)
        tree.claims[profile] = _claims(out)
        if done.returncode not in (0, 1):  # 1: a claim failed; anything else is a crash
            tail = (done.stderr or "")[-2000:]
            print(
                f"[bench] {tree.label} {profile}: exit {done.returncode}\n{tail}", file=sys.stderr
            )
    print(f"[bench] {tree.label} {profile}: {elapsed:.1f} s", file=sys.stderr)


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Tree | None]:
    """A detached worktree of ``rev`` (removed afterwards), or ``None`` when git cannot."""
    if shutil.which("git") is None:
        yield None
        return
    where = Path(tempfile.mkdtemp(prefix="dynstab-baseline-"))
    add = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where / "tree"), rev],
        capture_output=True,
        text=True,
        check=False,
    )
    if add.returncode != 0:
        print(f"[bench] no reference tree ({add.stderr.strip()})", file=sys.stderr)
        shutil.rmtree(where, ignore_errors=True)
        yield None
        return
    try:
        yield Tree(f"reference {rev}", where / "tree" / "src")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where / "tree")],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(where, ignore_errors=True)


def _fmt(times: list[float]) -> str:
    if not times:
        return "–"
    med = statistics.median(times)
    return f"{med:.1f} s ({min(times):.1f}–{max(times):.1f})" if len(times) > 1 else f"{med:.1f} s"


def table(current: Tree, reference: Tree | None, profiles: list[str]) -> str:
    """The Markdown table this script prints."""
    head = "| profile | tree | wall time, median (range) | exit codes | claims | ratio | limit |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for profile in profiles:
        trees = [current] + ([reference] if reference is not None else [])
        for tree in trees:
            ratio, limit = "", ""
            if tree is current and reference is not None and reference.times.get(profile):
                r = statistics.median(current.times[profile]) / statistics.median(
                    reference.times[profile]
                )
                ok = "met" if r <= LIMITS[profile] else "**missed**"
                ratio, limit = f"{r:.2f}×", f"≤ {LIMITS[profile]}× ({ok})"
            codes = ",".join(str(c) for c in tree.codes.get(profile, []))
            row = [profile, tree.label, _fmt(tree.times.get(profile, [])), codes]
            row += [tree.claims.get(profile, "?"), ratio, limit]
            lines.append("| " + " | ".join(row) + " |")
    if reference is None:
        lines.append("")
        lines.append("No reference tree (git or the reference commit unavailable): no ratio.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", choices=["quick", "full"], default=["quick"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads per process")
    parser.add_argument("--python", default=default_python(), help="interpreter for both trees")
    parser.add_argument(
        "--baseline", default=BASELINE, help="reference commit (default %(default)s)"
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.workers < 1 or args.threads < 1:
        parser.error("--repeats, --workers and --threads must be positive integers")
    current = Tree("current", ROOT / "src")
    with baseline_tree(args.baseline) as reference:
        for profile in args.profiles:
            for _ in range(args.repeats):  # interleaved: load drifts hit both trees alike
                for tree in [current] + ([reference] if reference is not None else []):
                    run_once(tree, profile, args.workers, args.threads, args.python)
        print(
            f"Wu & Su reproduction wall time: {args.workers} worker processes, "
            f"{args.threads} thread(s) each, {args.repeats} interleaved repeats per tree; "
            f"reference = {args.baseline}.\n"
        )
        print(table(current, reference, args.profiles))


if __name__ == "__main__":
    main()
