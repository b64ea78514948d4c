"""Every script in examples/ runs (in a subprocess, as a user would run it)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLOW = {"edge_of_stability_mnist1d.py"}  # run by tests/test_training_edge_of_stability.py (-m slow)


def _run(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/script OUT_DIR *args`` in a subprocess, as a user would, on one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize(
    "script", sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in SLOW)
)
def test_example_runs(script: str, tmp_path: Path) -> None:
    proc = _run(script, tmp_path)
    assert proc.stdout.strip(), "an example should print what it computed"


def test_own_training_loop_records_the_heavy_ball_threshold(tmp_path: Path) -> None:
    """The tracker in the user's loop reads η and β from the optimizer: 2(1 + β)/η per row."""
    lr, beta, steps, every = 0.05, 0.5, 60, 20
    _run(
        "own_training_loop.py",
        tmp_path,
        f"--lr={lr}",
        f"--momentum={beta}",
        f"--steps={steps}",
        f"--every={every}",
    )
    with open(tmp_path / "stability.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(float(r["step"])) for r in rows] == list(range(0, steps + 1, every))
    for r in rows:
        assert float(r["lambda_max_threshold"]) == pytest.approx(2 * (1 + beta) / lr, rel=1e-12)
        assert float(r["lambda_max_converged"]) == 1.0
        assert 0 < float(r["lambda_max"]) < float(r["trace"])
