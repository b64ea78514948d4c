"""Cost of one Hessian-vector product in gradient-equivalents.

For the 784-512-512-10 tanh MLP on 1000 samples (and the small CNN), float32, it times (median
over repeats, after warm-up) one full-batch gradient (forward + backward) and one HVP done
several ways, and reports each HVP time divided by the gradient time:

* dynstab ``HessianOperator @ v`` with the cached gradient graph (the default for one batch):
  one backward pass through the stored graph per product; the one-off graph construction
  (forward + ``create_graph`` backward) is reported separately;
* dynstab ``HessianOperator(cache_graph=False) @ v``: a fresh forward, ``create_graph``
  backward and double backward per product;
* the same double-backward written out by hand with ``torch.autograd.grad`` (fresh);
* ``torch.func.jvp(torch.func.grad(L))`` forward-over-reverse (fresh);
* PyHessian's ``hessian_vector_product`` on its cached graph;
* curvlinops ``HessianLinearOperator @ v`` (forward-over-reverse with vmap), single vector and
  per column of a 16-column block; and dynstab's per-column cost on the same block.

Target: ≤ 2 gradient-equivalents per HVP with a cached graph.

Run: ``.venv-bench/bin/python benchmarks/hvp_cost.py [--quick]``.
"""

from __future__ import annotations

# isort: off
import common  # first: fixes the thread counts before torch is imported

# isort: on
import sys
import warnings
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from dynstab.curvature import HessianOperator
from dynstab.losses import half_mse

BLOCK = 16


def measure(prob: common.Problem, repeats: int) -> dict[str, Any]:
    model, X, y = prob.model, prob.X, prob.y
    params = [p for p in model.parameters()]
    names = [k for k, _ in model.named_parameters()]
    p_total = prob.num_params
    g = torch.Generator().manual_seed(0)
    v = torch.randn(p_total, generator=g)
    V = torch.randn(p_total, BLOCK, generator=g)
    v_list = list(torch.split(v, [q.numel() for q in params]))
    v_list = [t.view_as(q) for t, q in zip(v_list, params)]
    rows: dict[str, Any] = {}

    def t(fn: Any, n: int = repeats) -> common.Timing:
        return common.time_call(fn, repeats=n, warmup=2)

    def forward() -> Any:
        with torch.no_grad():
            return half_mse(model(X), y)

    def gradient() -> Any:
        return torch.autograd.grad(half_mse(model(X), y), params)

    rows["forward (no grad)"] = t(forward)
    rows["gradient (forward + backward)"] = t(gradient)

    # dynstab, cached graph
    rows["dynstab HessianOperator construction (forward + create_graph backward)"] = t(
        lambda: HessianOperator(model, half_mse, (X, y))
    )
    H = HessianOperator(model, half_mse, (X, y))
    rows["dynstab HVP, cached graph"] = t(lambda: H @ v)
    blk = t(lambda: H @ V, max(2, repeats // 3))
    rows[f"dynstab HVP, cached graph, per column of a {BLOCK}-column block"] = _per(blk, BLOCK)

    # dynstab, fresh graph per product
    Hf = HessianOperator(model, half_mse, (X, y), cache_graph=False)
    rows["dynstab HVP, cache_graph=False (fresh double backward)"] = t(lambda: Hf @ v)

    def manual_fresh() -> Any:
        loss = half_mse(model(X), y)
        gr = torch.autograd.grad(loss, params, create_graph=True)
        return torch.autograd.grad(gr, params, grad_outputs=v_list)

    rows["hand-written double backward (fresh)"] = t(manual_fresh)

    pdict = {k: q.detach() for k, q in zip(names, params)}
    vdict = dict(zip(names, v_list))

    def loss_of(pd: dict[str, torch.Tensor]) -> torch.Tensor:
        return half_mse(functional_call(model, pd, (X,)), y)

    def fwd_over_rev() -> Any:
        return torch.func.jvp(torch.func.grad(loss_of), (pdict,), (vdict,))[1]

    rows["torch.func jvp(grad) forward-over-reverse (fresh)"] = t(fwd_over_rev)

    # PyHessian, cached graph
    try:
        import pyhessian  # noqa: F401

        mod = sys.modules["pyhessian.hessian"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = mod.hessian(model, half_mse, data=(X, y), cuda=False)
            rows["PyHessian HVP, cached graph"] = t(
                lambda: mod.hessian_vector_product(h.gradsH, h.params, v_list)
            )
        model.zero_grad(set_to_none=True)
    except ImportError as exc:
        rows["PyHessian HVP, cached graph"] = {"error": str(exc)}

    # curvlinops
    try:
        from curvlinops import HessianLinearOperator

        C = HessianLinearOperator(
            model, nn.MSELoss(reduction="mean"), params, [(X, y)], check_deterministic=False
        )
        Cs = common.mse_loss_scale(prob.num_outputs) * C
        rows["curvlinops HVP (forward-over-reverse, vmap)"] = t(lambda: Cs @ v)
        cblk = t(lambda: Cs @ V, max(2, repeats // 3))
        rows[f"curvlinops HVP, per column of a {BLOCK}-column block"] = _per(cblk, BLOCK)
    except ImportError as exc:
        rows["curvlinops HVP (forward-over-reverse, vmap)"] = {"error": str(exc)}

    grad_s = rows["gradient (forward + backward)"].median
    table = []
    for name, timing in rows.items():
        if isinstance(timing, dict):
            table.append({"what": name, **timing})
            continue
        table.append(
            {
                "what": name,
                "median_s": timing.median,
                "gradient_equivalents": timing.median / grad_s,
                "repeats": len(timing.times),
                "times_s": timing.times,
            }
        )
        common.log(f"{name}: {timing.median * 1e3:.1f} ms = {timing.median / grad_s:.2f} grads")
    return {
        "problem": prob.describe(),
        "gradient_s": grad_s,
        "rows": table,
        "profile": profile_hvp(model, X, y, v),
    }


def profile_hvp(model: nn.Module, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> str:
    """torch.profiler table of 3 cached-graph dynstab HVPs (top operators by self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    H = HessianOperator(model, half_mse, (X, y))
    H @ v  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            H @ v
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def _per(timing: common.Timing, k: int) -> common.Timing:
    return common.Timing(times=[x / k for x in timing.times], warmup=timing.warmup)


def main() -> None:
    warnings.filterwarnings("ignore", message=".*create_graph=True will create a reference cycle.*")
    args = common.base_parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        repeats = args.repeats or 3
        problems = [
            common.mlp_problem(n=200, sizes=(784, 64, 64, 10), seed=args.seed),
            common.cnn_problem(n=64, side=16, channels=8, seed=args.seed),
        ]
    else:
        repeats = args.repeats or 10
        problems = [common.mlp_problem(seed=args.seed), common.cnn_problem(seed=args.seed)]
    results = [measure(p, repeats) for p in problems]
    cfg = {"repeats": repeats, "block": BLOCK, "seed": args.seed}
    out = args.out or common.RESULTS_DIR / "hvp_cost.json"
    common.write_json(out, common.envelope("hvp_cost", cfg, results))


if __name__ == "__main__":
    main()
