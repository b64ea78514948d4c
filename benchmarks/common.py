"""Shared helpers for the benchmark scripts (not part of the dynstab package).

Import this module BEFORE torch in every benchmark script: it fixes the thread counts (OpenMP,
MKL, OpenBLAS read their environment variables when they start) so that the tools compared
run with the same number of threads and do not oversubscribe the machine.

* ``DYNSTAB_BENCH_THREADS`` (default 1) — intra-op threads for torch and the BLAS libraries.
* ``time_call`` — warm-up calls, then ``repeats`` timed calls; medians are what is reported.
* ``machine_info`` / ``versions`` — recorded in every JSON result.
* ``mlp_problem`` / ``cnn_problem`` — the shared models and data (plain ``nn.Sequential`` so
  that PyHessian, curvlinops and BackPACK can all use the same module).
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("DYNSTAB_BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import datetime as _dt  # noqa: E402
import importlib.metadata as _md  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

torch.set_num_threads(THREADS)
with contextlib.suppress(RuntimeError):  # already set in this process
    torch.set_num_interop_threads(1)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results" / "bench"


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Wall-clock times (seconds) of repeated calls; ``median`` is the reported number."""

    times: list[float]
    warmup: int
    result: Any = field(default=None, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 4:
            return max(self.times) - min(self.times)
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": max(self.times),
            "repeats": len(self.times),
            "warmup": self.warmup,
            "times_s": self.times,
        }


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (perf_counter).

    The result of the last timed call is kept in ``Timing.result``.
    """
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return Timing(times=times, warmup=warmup, result=result)


class CallCounter:
    """Wrap a callable and count its calls (used to count other tools' HVPs)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# environment records
# --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, core count, memory, OS, thread settings and load at the time of the call."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "bench_threads_env": THREADS,
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
    }


def versions() -> dict[str, str]:
    """Versions of dynstab, torch and the comparison tools (``missing`` if not installed)."""
    out = {}
    for name in (
        "dynstab",
        "torch",
        "numpy",
        "scipy",
        "pyhessian",
        "curvlinops-for-pytorch",
        "backpack-for-pytorch",
    ):
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = "missing"
    return out


# --------------------------------------------------------------------------------------------
# command line and output
# --------------------------------------------------------------------------------------------
def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per entry")
    parser.add_argument("--out", type=Path, default=None, help="JSON result path")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    print(f"[bench] wrote {path}", file=sys.stderr)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Timing):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def envelope(name: str, config: dict[str, Any], results: Any) -> dict[str, Any]:
    """The common JSON layout of every benchmark result file."""
    return {
        "benchmark": name,
        "machine": machine_info(),
        "versions": versions(),
        "config": config,
        "results": results,
    }


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# problems: same model and data for every tool
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """A model with its full-batch data; the loss is ½·MSE (dynstab.losses.half_mse)."""

    name: str
    model: nn.Module
    X: Tensor
    y: Tensor
    num_outputs: int

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def to(self, dtype: torch.dtype) -> Problem:
        """A deep copy in ``dtype`` (the float64 copy gives the tight references)."""
        model = copy.deepcopy(self.model).to(dtype)
        return Problem(self.name, model, self.X.to(dtype), self.y.to(dtype), self.num_outputs)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_params": self.num_params,
            "num_samples": int(self.X.shape[0]),
            "input_shape": list(self.X.shape[1:]),
            "num_outputs": self.num_outputs,
            "dtype": str(self.X.dtype).replace("torch.", ""),
            "loss": "half_mse = (1/n) sum_i 0.5*||f(x_i) - y_i||^2",
        }


def _targets(n: int, num_classes: int, g: torch.Generator) -> Tensor:
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)


def mlp_problem(
    n: int = 1000, sizes: tuple[int, ...] = (784, 512, 512, 10), *, seed: int = 0
) -> Problem:
    """Tanh MLP (default 784-512-512-10) on ``n`` Gaussian inputs with random one-hot targets."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Linear's default initialisation
    layers: list[nn.Module] = []
    for i, (fi, fo) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fi, fo))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers).eval()
    X = torch.randn(n, sizes[0], generator=g)
    y = _targets(n, sizes[-1], g)
    label = "MLP " + "-".join(str(s) for s in sizes)
    return Problem(label, model, X, y, sizes[-1])


def cnn_problem(
    n: int = 256, side: int = 28, channels: int = 32, num_classes: int = 10, *, seed: int = 0
) -> Problem:
    """C21-style small CNN: [conv3×3(32) → ReLU → maxpool2]×2 → linear, on 1×side×side inputs."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * (side // 4) ** 2, num_classes),
    ).eval()
    X = torch.randn(n, 1, side, side, generator=g)
    y = _targets(n, num_classes, g)
    label = f"CNN 2×conv{channels} on 1×{side}×{side}"
    return Problem(label, model, X, y, num_classes)


def mse_loss_scale(num_outputs: int) -> float:
    """``half_mse = scale · nn.MSELoss(reduction="mean")``: MSELoss divides by n·C, no ½."""
    return num_outputs / 2.0


def curvlinops_hessian(prob: Problem) -> Any:
    """curvlinops' Hessian of ``prob`` rescaled to dynstab's ½·MSE convention.

    curvlinops needs an ``nn`` loss; ``nn.MSELoss(reduction="mean")`` times
    :func:`mse_loss_scale` equals ``half_mse``, so both tools see the same matrix.
    """
    from curvlinops import HessianLinearOperator

    params = [p for p in prob.model.parameters() if p.requires_grad]
    H = HessianLinearOperator(
        prob.model,
        nn.MSELoss(reduction="mean"),
        params,
        [(prob.X, prob.y)],
        check_deterministic=False,
    )
    return mse_loss_scale(prob.num_outputs) * H


def flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def rel_err(estimate: float, reference: float) -> float:
    return abs(estimate - reference) / abs(reference)
