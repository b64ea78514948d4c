"""The two exact routes to the row-space coordinates of K = JJᵀ/n, and their cost model.

* **Gram route** — eigendecompose the nC×nC matrix K (given, or formed as JJᵀ/n): ≈ 9(nC)³
  flops (+ 2(nC)²p to form K), about 4(nC)² float64 numbers (K, eigenvectors, workspace) plus
  Ĝ and U;
* **parameter route** — eigendecompose the p×p matrix H = JᵀJ/n (needs J): 2nCp² + 9p³ + 2nCpρ
  flops, the Jacobians (nCp numbers; three copies when computed from a model: its dtype, float64
  and the vmap workspace), 4p² for H and its eigenvectors, plus Ĝ and U.

Both give the same coordinates Ĝ = JV = √n UΛ^{1/2} (:mod:`dynstab.criteria.gram`), hence the
same η* and bounds. ``route="auto"`` takes the one with fewer flops among those that fit the
memory budget. Flop counts are nominal (9N³ for a symmetric eigen-decomposition with vectors);
they rank the routes, they do not predict seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynstab._checks import check_choice
from dynstab.criteria.resources import MemoryBudget, format_bytes
from dynstab.criteria.spectral import eigen_flops

__all__ = ["ROUTES", "RouteCost", "choose_route", "route_costs"]

#: The exact routes to the row-space coordinates.
ROUTES: tuple[str, ...] = ("gram", "parameter")


@dataclass(frozen=True)
class RouteCost:
    """Estimated cost of building the row-space coordinates along one exact route.

    Attributes:
        route: ``"gram"`` or ``"parameter"``.
        flops: Floating-point operations (forming the Gram side, its eigen-decomposition, Ĝ).
        bytes: Peak memory of that setup in bytes (float64), the input included when built here.
        what: The dominant allocation, in words.
    """

    route: str
    flops: float
    bytes: int
    what: str


def route_costs(
    n: int, outputs: int, num_params: int | None, source: str, largest_tensor: int | None = None
) -> dict[str, RouteCost]:
    """Estimated cost of each route available for a source of the problem.

    Args:
        n: Number of samples.
        outputs: Outputs per sample C.
        num_params: Number of parameters p (None when only K is known).
        source: ``"gram"`` (K given: the Gram route only), ``"jacobian"`` (J given) or
            ``"model"`` (J or K still to be computed from a model).
        largest_tensor: Entries of the largest parameter tensor (model source: the Gram route
            then builds K tensor by tensor when the whole J would be large).

    Returns:
        ``{route: RouteCost}``.

    Example:
        >>> c = route_costs(150_000, 1, 3, "jacobian")
        >>> c["parameter"].bytes < 10**8 < 10**11 < c["gram"].bytes
        True
    """
    N = n * outputs
    costs: dict[str, RouteCost] = {}
    r = N if num_params is None else min(N, num_params)
    # K (formed here unless given), eigenvectors, eigh workspace, then Ĝ and U.
    gram_bytes = 8 * ((3 if source == "gram" else 4) * N * N + 2 * N * r)
    gram_flops = eigen_flops(N)
    if source != "gram":
        assert num_params is not None
        gram_flops += 2.0 * N * N * num_params
    if source == "model":
        assert num_params is not None
        width = num_params if n * num_params * 16 <= 2**25 else (largest_tensor or num_params)
        gram_bytes += 8 * 2 * N * width  # per-tensor Jacobian blocks inside gram_matrix
    costs["gram"] = RouteCost(
        "gram",
        gram_flops,
        gram_bytes,
        f"the Gram matrix K of shape ({N}, {N}) and its eigenvectors",
    )
    if source != "gram":
        assert num_params is not None
        p = num_params
        copies = 3 if source == "model" else 1  # model dtype, float64 copy, vmap workspace
        costs["parameter"] = RouteCost(
            "parameter",
            2.0 * N * p * p + eigen_flops(p) + 2.0 * N * p * r,
            8 * (copies * N * p + 4 * p * p + 2 * N * r),
            f"the per-sample Jacobians J of shape ({N}, {p}) and H = JᵀJ/n of shape ({p}, {p})",
        )
    return costs


def choose_route(
    costs: dict[str, RouteCost], route: str, budget: MemoryBudget, who: str
) -> tuple[str, str]:
    """Pick a route and say why.

    Args:
        costs: From :func:`route_costs`.
        route: ``"auto"`` (fewest flops among the routes within the budget), ``"gram"`` or
            ``"parameter"``.
        budget: The memory budget.
        who: The public call, for messages.

    Returns:
        ``(route, reason)``.

    Raises:
        ValueError: If ``route`` is unknown or not available for this source.
        MemoryBudgetError: If the requested route, or every route, exceeds the budget.
    """
    check_choice("route", route, ("auto", *ROUTES))
    if route != "auto" and route not in costs:
        raise ValueError(
            f"route={route!r} needs the per-sample Jacobians (the parameter route works on "
            "H = JᵀJ/n); only the Gram matrix K was given. Use route='gram' or 'auto', or build "
            "the problem with StabilityProblem.from_jacobians / from_model."
        )

    def describe(c: RouteCost) -> str:
        return f"≈ {c.flops:.2g} flops and {format_bytes(c.bytes)} for the {c.route} route"

    if route != "auto":
        chosen = costs[route]
        others = [c for c in costs.values() if c.route != route]
        budget.check(
            chosen.bytes,
            what=chosen.what,
            who=who,
            alternatives=[f"route={c.route!r} needs {format_bytes(c.bytes)}" for c in others],
        )
        return route, f"route={route!r} requested; {describe(chosen)}"
    if len(costs) == 1:
        only = next(iter(costs.values()))
        budget.check(only.bytes, what=only.what, who=who)
        return only.route, f"only K was given; {describe(only)}"
    fits = [c for c in costs.values() if budget.allows(c.bytes)]
    if not fits:
        cheapest = min(costs.values(), key=lambda c: c.bytes)
        budget.check(
            cheapest.bytes,
            what=cheapest.what,
            who=who,
            alternatives=[describe(c) for c in costs.values() if c is not cheapest],
        )
    best = min(fits, key=lambda c: c.flops)
    rest = "; ".join(describe(c) for c in costs.values() if c is not best)
    over = [c.route for c in costs.values() if c not in fits]
    tail = f"; {', '.join(over)} route over the memory budget" if over else ""
    return best.route, f"fewest flops: {describe(best)} vs {rest}{tail}"
