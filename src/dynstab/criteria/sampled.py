"""Sampled (matrix-free) mean-square stability of SGD at any n: growth factor and η*.

Linearised SGD at a point θ is the random linear map δ_{t+1} = (I − ηH_{I_t})δ_t, H_I the
curvature (Hessian, or Gauss–Newton) of the mini-batch loss on the batch I_t drawn by the
sampling rule (:class:`dynstab.sampling.Sampling`, i.i.d. across steps). Its second moment
M_t = E[δ_tδ_tᵀ] evolves by the positive, Frobenius-self-adjoint map

    Q_η(M) = E_I[(I − ηH_I) M (I − ηH_I)] = M − η(HM + MH) + η² E_I[H_I M H_I],

and E‖δ_t‖² grows like ρ(Q_η)^t: SGD is mean-square stable iff ρ(Q_η) ≤ 1, i.e. iff η ≤ η*.
At an interpolating minimum of the ½-square loss η* = 2/λ_max(C†D) (Mulayoff & Michaeli,
2024, Thm. 3; :func:`dynstab.criteria.eta_star` computes it exactly from the n×n Gram
matrix). This module estimates ρ(Q_η) and η* with per-batch curvature products only (memory
O(p·m) for m perturbation vectors, the data streamed batch by batch), so it runs at any n.

**Estimator: population dynamics (cloning).** The mean square is dominated by rare batches, so
simulating independent perturbations and renormalising each one estimates the *typical*
(Lyapunov) rate, which is smaller (Jensen: exp(2λ₁) ≤ ρ(Q)); see Ma & Ying (2021) on the two
notions. Following Giardinà, Kurchan & Peliti (2006), m unit particles v_j evolve as
v_j ← (I − ηH_{I_j})v_j with their own batches I_j, carry weights w_j = ‖(I − ηH_{I_j})v_j‖²
and are resampled in proportion to their weights (systematic resampling whenever the effective
sample size falls below m/2). The weighted particle cloud is a Monte-Carlo representation of
M_t: its unnormalised second moment evolves exactly by Q_η in expectation, and the product of
the mean weights is an unbiased estimate of E‖δ_t‖² (Del Moral, 2004). After a burn-in, the
growth per step over a window of T steps,

    θ = (1/T) Σ_t log(Σ_j ω_j w_j)   (ω_j the normalised weights),

estimates log ρ(Q_η). R independent replicas (own particles, batches and resampling numbers)
give R independent θ_r; the reported log-growth is their mean with a Student-t interval on
R − 1 degrees of freedom.

**Bias.** (i) Finite population: log of an unbiased estimate is biased low (Jensen), by
≈ −σ²_∞/(2m) per step where σ²_∞/(mT) ≈ Var(θ_r); ``bias_correction=True`` (default) adds
the plug-in correction (T/2)·s²_θ and propagates its uncertainty by a jackknife over
replicas. (ii) Burn-in: the cloud must relax to the top eigenvector of Q_η; the particles
start from curvature-weighted directions δ₀ ∝ H_I g (g Gaussian), which lie in the row space
of the Jacobian at an interpolating point, and a pilot run moves the cloud to the top
eigenvector at the threshold before any estimate is taken. Below η*, modes of very small
curvature (eigenvalue of Q close to 1) are reached only after ~1/(ηλ) steps: there ``growth``
is the decay rate of curvature-carrying perturbations over the simulated horizon and lies
below ρ(Q_η) (both < 1, so the verdict is unaffected). Above η* the unstable mode dominates
every start and ``growth`` estimates ρ(Q_η).

**η* with common random numbers.** A pilot population adapts η towards the fixed point of the
one-step growth: for the cloud's second moment S the mean weight is the quadratic
1 − 2η tr(HS)/tr S + η² tr E[H_ISH_I]/tr S, whose root η = 2 tr(HS)/tr E[H_ISH_I] equals η*
when S is the top eigenvector of Q_{η*}. From the pilot's final cloud, log ρ̂(η) is evaluated
on a grid of η values *with the same batches, initial particles and resampling numbers for
every η* (one batched product per batch and step serves all η of a grid), which makes ρ̂(η)
a smooth function of η. η̂* is the root of the mean curve; the confidence interval inverts the
pointwise test of ρ(η) = 1: [η_L, η_U] with η_L the crossing of the upper confidence curve and
η_U that of the lower one. The grid is refined around the three crossings until each is
bracketed to a fraction of the interval's half-width.

**Adaptive budget.** A first stage of R₀ replicas decides, from its own interval alone, how
many replicas R a ±``target_width`` interval needs (Stein's two-stage procedure; Stein, 1945,
"A two-sample test for a linear hypothesis whose power is independent of the variance", Ann.
Math. Statist. 16); a second stage adds R − R₀ independent replicas at the same η, and the
interval uses the mean of all R with the first stage's spread and R₀ − 1 degrees of freedom.

**Momentum.** With heavy-ball momentum β (PyTorch ``SGD(momentum=β)``, dampening 0) the
particles carry z = (δ_t, δ_{t−1}) and z ← [[(1+β)I − ηH_I, −βI], [I, 0]] z; with PyTorch's
Nesterov form they carry (δ_t, η·b_{t−1}) (b the momentum buffer) and
z ← [[I − η(1+β)H_I, −β²I], [ηH_I, βI]] z (see :mod:`dynstab.criteria.momentum`). Weights are
‖z_{t+1}‖²/‖z_t‖².

Cost: per step one vectorised product per batch with the particles of all η values of a grid
(:class:`dynstab.curvature.BatchCurvature`): R·m batches of B samples, R·m·L vectors.

References:
    Mulayoff & Michaeli (2024), "Exact mean square linear stability analysis for SGD", COLT
    (η*, Thm. 3; the batch-moment identity, Lemma 1). Wu, Ma & E (2018), "How SGD selects the
    global minima in over-parameterized learning", NeurIPS (linear stability of SGD).
    Ma & Ying (2021), "On linear stability of SGD and input-smoothness of neural networks",
    NeurIPS (moment vs almost-sure stability). Giardinà, Kurchan & Peliti (2006), "Direct
    evaluation of large-deviation functions", Phys. Rev. Lett. 96, 120603 (cloning).
    Del Moral (2004), *Feynman–Kac Formulae*, Springer (unbiased normalising constants).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from scipy import special
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dynstab._checks import check_choice, check_generator, check_int, check_lr, check_positive
from dynstab._types import ForwardFn, LossFn, ParamSpec, UnpackFn
from dynstab.criteria.momentum import momentum_form, momentum_gd_threshold, momentum_solve_flops
from dynstab.criteria.resources import memory_budget
from dynstab.criteria.results import BoundRow
from dynstab.curvature.batch_products import BatchCurvature, IndexedData
from dynstab.curvature.params import ParameterSelection
from dynstab.curvature.problem import CurvatureProblem
from dynstab.errors import ConvergenceWarning, DynstabWarning
from dynstab.measures import SharpnessConfig, SharpnessReport, sharpness
from dynstab.sampling import BatchSampler, Sampling

__all__ = [
    "VERDICTS",
    "GrowthEstimate",
    "RouteTime",
    "SampledBound",
    "SampledConfig",
    "SampledEtaStar",
    "SampledMemory",
    "SampledStability",
    "SampledStabilityReport",
    "route_time",
]

#: Verdicts of the sampled route.
VERDICTS = ("stable", "unstable", "undecided at this budget")
#: Particles per replica when ``SampledConfig.particles`` is None.
DEFAULT_PARTICLES = 32
#: Seconds an exact momentum solve may be expected to take before ``method="auto"`` prefers
#: the sampled route (:func:`route_time`).
EXACT_TIME_BUDGET = 60.0
#: Effective flop rate (flop/s) the time estimates of :func:`route_time` assume: one core of a
#: current CPU on these workloads (einsum contractions, LAPACK ``geev``, ARPACK, vmapped
#: Hessian-vector products; 3–6·10⁹ measured on the development machine).
REFERENCE_FLOP_RATE = 4e9
#: Fixed cost of one vectorised curvature-vector product beyond its flops (seconds; vmap,
#: gather and particle bookkeeping; ≈ 5 µs measured at p ≈ 200).
PRODUCT_OVERHEAD_S = 5e-6
#: Flops of one curvature-vector product per sample and parameter (a Hessian-vector product
#: costs ≈ 4 forward passes of 2 flops per sample and parameter).
PRODUCT_FLOPS = 8.0
#: η values a default η* search evaluates (its 7-point grid and refinements; 9–13 measured).
TYPICAL_EVALUATIONS = 12
#: p-vectors alive per particle and η while the particles are stepped, weighted and resampled
#: (state, product, stepped state, a temporary, the resampled copy; with momentum both halves
#: of the state and their temporaries), without and with momentum; an upper bound checked
#: with :class:`_TensorPeak` in the tests.
STEP_ARRAYS = (5, 9)
#: p-vectors per particle and η alive beside a (chunked) product: the state (δ, and u with
#: momentum) and the product's output, without and with momentum.
PRODUCT_ARRAYS = (2, 3)
#: Scalars (float64) per particle and η beside its vectors: log-weights, weights, resampling
#: indices, norms and their temporaries (a generous count; with the batch indices, the part of
#: the memory plan that does not scale with p).
PARTICLE_SCALARS = 32


class _TensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages that operators allocate while the mode is active.

    Every operator's outputs are recorded by storage (views and in-place results count once,
    storages that existed before are ignored); a storage is released when its last reference
    dies (a weak reference expires). Works on every device, CPU included (torch keeps no CPU
    allocator statistics), and sees the physical tensors of ``vmap`` and of the backward
    passes. Overhead: a scan of the live storages per operator (use it on small probes).
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._old: dict[int, StorageWeakRef] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                key = t.untyped_storage()._cdata
                if key not in self._live and key not in self._old:
                    self._old[key] = StorageWeakRef(t.untyped_storage())
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self._live.items() if ref.expired()]:
            self.current -= self._live.pop(key)[1]
        for key in [k for k, ref in self._old.items() if ref.expired()]:
            del self._old[key]
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = st._cdata
                if key not in self._live and key not in self._old:
                    size = int(st.nbytes())
                    self._live[key] = (StorageWeakRef(st), size)
                    self.current += size
        self.peak = max(self.peak, self.current)
        return out


@dataclass(frozen=True)
class SampledMemory:
    """How the sampled route fits its memory budget.

    The particles' state takes ``state_bytes`` per particle and η while they are stepped
    (``STEP_ARRAYS`` vectors of p entries; ``PRODUCT_ARRAYS`` of them while the product
    runs); one vectorised curvature product on k batches with s vectors each needs
    working memory ``call + k·(batch + s·vector)`` bytes beyond its inputs (activations,
    per-batch gradients and double-backward buffers, its output), **measured** at set-up on
    the model by one small probe (7 products on 1–2 batches, every allocated tensor storage
    counted). A step whose product would exceed the budget runs it in chunks of ``chunk``
    batches (the same numbers: every batch's product is independent of the others); the
    particles are reduced below the requested number only when the state alone does not fit.

    Attributes:
        budget: Bytes the route may use.
        state_bytes: Bytes per particle and η of the particle state.
        product_bytes: Measured working bytes of one product: ``(call, batch, vector)``.
        particles_requested: m asked for (``SampledConfig.particles`` or 32).
        particles: m in use.
        chunk: Fewest batches per product call used so far (``None``: never chunked).
        largest_call: Most batches a step multiplied (the largest evaluation group).
        etas_per_group: Most η evaluated together in one simulation.
        planned_bytes: Planned peak of the largest step (state + chunked product work).
        replicas_capped: Second-stage replicas refused because their cached pilot clouds
            would not fit (0: none).

    Example:
        >>> from dynstab.losses import half_mse
        >>> X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> model = torch.nn.Linear(3, 1).double()
        >>> s = SampledStability(model, half_mse, (X, model(X).detach()), batch_size=2,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> mem = s.memory  # tiny p: the default 32 particles fit, no product is chunked
        >>> mem.particles == mem.particles_requested == 32, mem.chunked
        (True, False)
        >>> mem.product_bytes[2] >= 8 * 4  # a vector's share holds at least its output (p = 4)
        True
    """

    budget: int
    state_bytes: int
    product_bytes: tuple[int, int, int]
    particles_requested: int
    particles: int
    chunk: int | None
    largest_call: int
    etas_per_group: int
    planned_bytes: int
    replicas_capped: int = 0

    @property
    def chunked(self) -> bool:
        """Whether some product ran in chunks to stay within the budget."""
        return self.chunk is not None

    def describe(self) -> str:
        """One line for the report."""
        _, batch, vector = self.product_bytes
        text = (
            f"memory: planned peak {_gib(self.planned_bytes)} of {_gib(self.budget)}; "
            f"particle state {_gib(self.state_bytes)} per particle and η, product working "
            f"memory {_gib(batch)} per batch + {_gib(vector)} per vector (measured)"
        )
        if self.chunk is not None:
            text += f"; products in chunks of {self.chunk} of {self.largest_call} batches"
        if self.particles < self.particles_requested:
            text += f"; particles reduced to {self.particles} of {self.particles_requested}"
        if self.replicas_capped:
            text += f"; {self.replicas_capped} second-stage replicas refused (memory)"
        return text


def _gib(num: float) -> str:
    return f"{num / 2**30:.3g} GiB" if num >= 2**30 else f"{num / 2**20:.3g} MiB"


@dataclass(frozen=True)
class SampledConfig:
    """Monte-Carlo budget and search settings of the sampled route.

    Attributes:
        replicas: Independent populations R₀ of the first stage (their spread gives the
            interval), >= 2. Default 4.
        particles: Particles m per replica, >= 4, or ``None`` (default) for
            ``DEFAULT_PARTICLES`` = 32, clamped to the memory budget. The interval narrows
            like 1/√(R·m).
        pilot_steps: Steps of the pilot run that moves the cloud to the unstable mode near η*.
        burn_in: Steps discarded at the start of every evaluation (from the pilot's cloud).
            With momentum β, ``pilot_steps`` and ``burn_in`` are multiplied by 1/√(1 − β)
            (the state relaxes more slowly).
        steps: Steps T averaged per evaluation, >= 2 (split in halves for the drift check).
        confidence: Level of the two-sided intervals, in (0, 1). Default 0.95.
        grid: Multiples of the pilot's estimate at which the first round evaluates ρ̂(η).
        max_rounds: Refinement rounds after the first grid, >= 0.
        refine: A crossing is refined until its bracket is narrower than this fraction of
            the interval's half-width (and 0.1% of η).
        bias_correction: ``"richardson"`` (default): every replica also runs a population of
            m/2 particles (common random numbers) and reports 2θ(m) − θ(m/2), removing the
            O(1/m) population bias (cost ×1.5, variance ×2–6); ``"none"``: θ(m).
        ess_threshold: Resample when the effective sample size drops below this fraction of
            m, in (0, 1].
        pilot_growth: Log-growth per step at which the pilot holds its η (slightly unstable,
            so the unstable mode dominates the cloud; × (1 − β) with momentum β), > 0.
        memory_budget: Bytes the particles and the curvature products' working memory may
            take (``None``: the default budget of
            :func:`dynstab.criteria.resources.memory_budget`, half the memory available on the
            device). The products run in chunks of batches when a whole step's would not fit
            (same numbers); it bounds m only when the particle state alone does not fit, and
            the number of η evaluated at once (:class:`SampledMemory`).
        bounds: How the scalable bounds are measured (:func:`dynstab.sharpness` settings).
            Default: matrix-free — certified Lanczos for λ_max (``tol=1e-6``, random start,
            ≤ 100 products) and Hutchinson for Tr and ‖·‖_F (64 shared Rademacher probes,
            standard errors); ``SharpnessConfig(method="auto")`` takes the exact routes where
            they are cheap.
        target_width: Relative half-width w of the η* interval the search aims at: when the
            first stage's interval is wider than ±w·η̂*, a second stage adds replicas
            (Stein's two-stage rule, :meth:`SampledStability.eta_star`), up to
            ``max_replicas``. ``None``: one stage of ``replicas``. Default 0.10 (±10%).
        max_replicas: Largest R of the second stage, >= ``replicas``. Default 32.

    Example:
        >>> cfg = SampledConfig(target_width=0.05, confidence=0.99)  # narrower and more certain
        >>> cfg.replicas, cfg.max_replicas, cfg.particles is None, cfg.bounds.method
        (4, 32, True, 'lanczos')
    """

    replicas: int = 4
    particles: int | None = None
    pilot_steps: int = 150
    burn_in: int = 40
    steps: int = 20
    confidence: float = 0.95
    grid: tuple[float, ...] = (0.9, 0.95, 0.98, 1.0, 1.02, 1.05, 1.1)
    max_rounds: int = 2
    refine: float = 0.5
    bias_correction: str = "richardson"
    ess_threshold: float = 0.5
    pilot_growth: float = 0.05
    memory_budget: int | None = None
    bounds: SharpnessConfig = field(default_factory=lambda: SharpnessConfig(method="lanczos"))
    target_width: float | None = 0.10
    max_replicas: int = 32

    def __post_init__(self) -> None:
        check_int("replicas", self.replicas, minimum=2)
        check_int("max_replicas", self.max_replicas, minimum=self.replicas)
        if self.target_width is not None:
            check_positive("target_width", self.target_width)
        if self.particles is not None:
            check_int("particles", self.particles, minimum=4)
        check_int("pilot_steps", self.pilot_steps, minimum=1)
        check_int("burn_in", self.burn_in, minimum=0)
        check_int("steps", self.steps, minimum=2)
        check_int("max_rounds", self.max_rounds, minimum=0)
        for name, value in (("confidence", self.confidence), ("ess_threshold", self.ess_threshold)):
            v = check_positive(name, value)
            if v > 1 or (name == "confidence" and v >= 1):
                raise ValueError(f"{name} must lie in (0, 1); got {value}.")
        check_choice("bias_correction", self.bias_correction, ("richardson", "none"))
        check_positive("refine", self.refine)
        check_positive("pilot_growth", self.pilot_growth)
        if self.memory_budget is not None:
            check_int("memory_budget", self.memory_budget, minimum=1)
        if not self.grid or any(not (math.isfinite(g) and g > 0) for g in self.grid):
            raise ValueError(f"grid must be positive finite multiples of η; got {self.grid}.")
        if not isinstance(self.bounds, SharpnessConfig):
            raise TypeError(
                "bounds must be a dynstab.measures.SharpnessConfig; got "
                f"{type(self.bounds).__name__}."
            )

    def products(self, momentum: float = 0.0, evaluations: int = TYPICAL_EVALUATIONS) -> int:
        """Expected batch curvature products of an η* search's first stage with this budget.

        The pilot takes R₀·m products per step for ``pilot_steps``; every evaluated η takes
        R·m (× 1.5 with Richardson) per step for ``burn_in + steps`` (pilot and burn-in
        stretched by 1/√(1 − β) with momentum β); m is ``particles`` or 32.

        Args:
            momentum: β in [0, 1).
            evaluations: η values evaluated (default ``TYPICAL_EVALUATIONS``).

        Returns:
            The number of products.

        Example:
            >>> SampledConfig().products(evaluations=1)  # 4·32·150 + 4·48·60
            30720
        """
        stretch = 1.0 / math.sqrt(1.0 - momentum)
        m = self.particles or DEFAULT_PARTICLES
        extra = 1.5 if self.bias_correction == "richardson" else 1.0
        pilot = self.replicas * m * math.ceil(self.pilot_steps * stretch)
        per_eta = self.replicas * m * extra * (math.ceil(self.burn_in * stretch) + self.steps)
        return int(pilot + evaluations * per_eta)


@dataclass(frozen=True)
class RouteTime:
    """Estimated seconds of the exact and the sampled route (the time part of ``auto``).

    Attributes:
        exact_seconds: Estimated time of the exact momentum solve.
        sampled_seconds: Estimated time of the sampled route with its budget.
        budget: The time budget of the exact route (seconds; ``inf``: never re-routed).
        exact_flops: The exact solve's flop estimate behind ``exact_seconds``.
        sampled_products: Batch curvature products behind ``sampled_seconds``.
    """

    exact_seconds: float
    sampled_seconds: float
    budget: float
    exact_flops: float
    sampled_products: int

    @property
    def sampled(self) -> bool:
        """Take the sampled route: the exact one exceeds the budget and is the slower one."""
        return self.exact_seconds > self.budget and self.sampled_seconds < self.exact_seconds

    @property
    def reason(self) -> str:
        """The decision in words (for ``route_reason``)."""
        est = (
            f"the exact momentum solve would take ≈ {self.exact_seconds:.3g} s "
            f"(≈ {self.exact_flops:.2g} flops at {REFERENCE_FLOP_RATE:.2g} flop/s), the sampled "
            f"route ≈ {self.sampled_seconds:.3g} s ({self.sampled_products} products)"
        )
        if self.sampled:
            return f"method='auto': {est}: over the time budget of {self.budget:g} s"
        return f"method='auto': {est}; time budget {self.budget:g} s"


def check_max_time(max_time: float | None) -> float:
    """Validate a time budget: a positive number of seconds or ``math.inf``; None: the default.

    Raises:
        TypeError: If it is not a real number.
        ValueError: If it is not positive (NaN included).
    """
    if max_time is None:
        return EXACT_TIME_BUDGET
    if isinstance(max_time, bool) or not isinstance(max_time, int | float):
        raise TypeError(
            f"max_time must be seconds (a positive number or math.inf); got "
            f"{type(max_time).__name__}."
        )
    if not max_time > 0:
        raise ValueError(
            f"max_time must be a positive number of seconds (math.inf: never re-route by "
            f"time); got {max_time!r}."
        )
    return float(max_time)


def route_time(
    *,
    rank: int,
    n: int,
    outputs: int,
    num_params: int,
    batch_size: int,
    momentum: float,
    config: SampledConfig | None = None,
    max_time: float | None = None,
    growth: bool = False,
) -> RouteTime:
    """Estimated time of the exact momentum criteria vs the sampled route, and the choice.

    Exact: :func:`~dynstab.criteria.momentum.momentum_solve_flops` (the threshold and, with
    ``growth``, the growth factor at lr) at ``REFERENCE_FLOP_RATE``. Sampled: the products of
    :meth:`SampledConfig.products`, each ``PRODUCT_FLOPS``·B·p flops plus
    ``PRODUCT_OVERHEAD_S``, and with ``growth`` (a verdict) the scalable bounds' ≈ 164
    full-data products (8·n·p flops each). ``method="auto"`` takes the sampled route when the
    exact estimate exceeds ``max_time`` (default ``EXACT_TIME_BUDGET`` = 60 s) and the sampled
    one is smaller. These are order-of-magnitude estimates (a factor of a few either way on
    a loaded machine); they decide a route, they are not a promise.

    Args:
        rank: ρ = rank K of the exact problem.
        n: Number of samples.
        outputs: Outputs per sample C.
        num_params: Parameters p measured.
        batch_size: Batch size B.
        momentum: β in [0, 1).
        config: The sampled budget (None: the defaults).
        max_time: Time budget of the exact route in seconds (None: ``EXACT_TIME_BUDGET``;
            ``math.inf``: never re-route by time).
        growth: Whether the growth factor at lr and the bounds are part of the call.

    Returns:
        :class:`RouteTime` (``.sampled`` is the decision, ``.reason`` says why).

    Raises:
        ValueError: If ``max_time`` is not positive.

    Example:
        >>> small = route_time(rank=10, n=200, outputs=1, num_params=200, batch_size=4,
        ...                    momentum=0.9)
        >>> big = route_time(rank=400, n=2000, outputs=1, num_params=5000, batch_size=4,
        ...                  momentum=0.9)
        >>> small.sampled, big.sampled
        (False, True)
    """
    budget = check_max_time(max_time)
    flops = momentum_solve_flops(rank, n, outputs, growth=growth)
    cfg = SampledConfig() if config is None else config
    products = cfg.products(momentum)
    per_product = PRODUCT_FLOPS * batch_size * num_params / REFERENCE_FLOP_RATE
    sampled = products * (per_product + PRODUCT_OVERHEAD_S)
    if growth:
        sampled += 164 * PRODUCT_FLOPS * n * num_params / REFERENCE_FLOP_RATE
    return RouteTime(flops / REFERENCE_FLOP_RATE, sampled, budget, flops, products)


@dataclass(frozen=True)
class GrowthEstimate:
    """Estimated mean-square growth factor per step at one learning rate.

    Attributes:
        lr: The learning rate η.
        growth: ρ̂ = exp(θ̂), the per-step growth factor of E‖δ‖² (of E‖z‖² with momentum).
        ci: Confidence interval of ρ at the configured level.
        log_growth: θ̂ (bias-corrected when configured).
        stderr: Standard error of θ̂.
        replicas: Per-replica log-growth θ_r (uncorrected).
        drift: Mean over replicas of (second-half − first-half) log-growth: a relaxation
            diagnostic (should be within a few ``drift_stderr`` of 0).
        drift_stderr: Its standard error.
    """

    lr: float
    growth: float
    ci: tuple[float, float]
    log_growth: float
    stderr: float
    replicas: tuple[float, ...]
    drift: float
    drift_stderr: float


@dataclass(frozen=True)
class SampledEtaStar:
    """Sampled estimate of the mean-square threshold η* with its confidence interval.

    Attributes:
        eta_star: Root of the mean log-growth curve (``inf`` when no instability was found,
            ``0`` when every η tried grows).
        ci: ``(η_L, η_U)``: η below η_L are significantly stable, above η_U significantly
            unstable (test inversion at the configured level).
        pilot_eta: The pilot's fixed-point estimate of η* (mean over replicas); the grid centre.
        evaluated: ``(η, log-growth, stderr)`` of every η evaluated, ascending.
        bracketed: Whether the root and both interval ends were bracketed by evaluated points.
        replicas: Replicas R behind the estimate (first stage plus any second stage).
        num_products: Curvature-vector products spent up to this estimate.
        wall_time: Seconds spent by the :class:`SampledStability` up to this estimate.
        momentum: Momentum β analysed (0: plain SGD).
        nesterov: Whether PyTorch's Nesterov form was analysed.
        route_reason: Why the sampled route ran (set by :func:`dynstab.critical_lr`).
    """

    eta_star: float
    ci: tuple[float, float]
    pilot_eta: float
    evaluated: tuple[tuple[float, float, float], ...]
    bracketed: bool
    replicas: int = 0
    num_products: int = 0
    wall_time: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    route_reason: str = ""


@dataclass(frozen=True)
class SampledBound(BoundRow):
    """One row of the sampled verdict table: a ``BoundRow`` with its uncertainty and method.

    Attributes:
        name: Short key (``"gd"``, ``"trace"``, ``"frobenius"``, ``"sgd_sampled"``).
        condition: The condition in symbols.
        kind: ``"exact"`` (decides the question it names), ``"necessary"`` (a margin above 1
            proves instability) or ``"estimate"`` (a Monte-Carlo estimate with an interval).
        value: The curvature quantity (λ_max, Tr H, ‖H‖_F) or, for ``"sgd_sampled"``, ρ̂.
        stderr: Standard error of ``value`` (``None`` when exact or not estimated).
        eta_threshold: Largest η the condition allows (η̂* for ``"sgd_sampled"``).
        eta_ci: Interval of ``eta_threshold`` at the configured level (``None`` if exact).
        margin: lr/eta_threshold (≤ 1: the condition holds at lr).
        method: How ``value`` was obtained (``"exact-dense"``, ``"lanczos"``, ``"hutchinson"``,
            ``"sampled"``, …).
    """

    stderr: float | None = None
    eta_ci: tuple[float, float] | None = None
    method: str = ""


@dataclass(frozen=True)
class SampledStabilityReport:
    """Verdict of the sampled route at one learning rate.

    Attributes:
        lr: Learning rate η.
        eta_star: Sampled estimate of η*.
        eta_star_ci: Its confidence interval.
        growth: ρ̂(lr), the estimated per-step growth factor of E‖δ‖².
        growth_ci: Its confidence interval.
        verdict: ``"stable"`` (interval of ρ below 1), ``"unstable"`` (above 1) or
            ``"undecided at this budget"``.
        verdict_confidence: One-sided Student-t confidence that log ρ(lr) has the sign of
            its estimate (≥ (1 + confidence)/2 for a decided verdict).
        confidence: Level of the intervals.
        sampling: The sampling rule.
        momentum: Momentum β (0: plain SGD).
        nesterov: Whether PyTorch's Nesterov form was analysed.
        curvature: ``"hessian"`` or ``"gauss_newton"``.
        parameters: The parameters measured.
        n: Number of samples.
        outputs: Outputs per sample C.
        num_products: Curvature-vector products spent (batch products and full-data ones).
        num_batches: Batch curvatures used.
        wall_time: Seconds spent by the object so far (all queries).
        rows: Verdict rows (GD threshold, trace and Frobenius bounds, sampled SGD).
        sharpness: The full-data sharpness report behind the rows (``None`` without bounds).
        estimate: The η* search result.
        growth_estimate: The growth estimate at lr.
        engine: ``"vmap"`` or ``"loop"`` (batch products), ``"full"`` for GD.
        particles: Particles m per replica used.
        config: The Monte-Carlo budget.
        notes: Caveats in words.
        route: ``"sampled"``.
        route_reason: Why the sampled route ran (``method='sampled'`` requested, or no exact
            route fitted the memory budget under ``method='auto'``).
        memory: How the route fitted its memory budget: measured product memory, chunking,
            any reduction of particles or replicas (:class:`SampledMemory`).
    """

    lr: float
    eta_star: float
    eta_star_ci: tuple[float, float]
    growth: float
    growth_ci: tuple[float, float]
    verdict: str
    verdict_confidence: float
    confidence: float
    sampling: Sampling
    momentum: float
    nesterov: bool
    curvature: str
    parameters: ParameterSelection
    n: int
    outputs: int
    num_products: int
    num_batches: int
    wall_time: float
    rows: tuple[SampledBound, ...]
    sharpness: SharpnessReport | None
    estimate: SampledEtaStar
    growth_estimate: GrowthEstimate
    engine: str
    particles: int
    config: SampledConfig
    notes: tuple[str, ...] = field(default=())
    route: str = "sampled"
    route_reason: str = ""
    memory: SampledMemory | None = None

    @property
    def eta_gd(self) -> float:
        """The GD threshold of the optimizer analysed (2/λ_max; 2(1 + β)/λ_max with momentum)."""
        return self.bounds.get("gd", math.nan)

    @property
    def stable(self) -> bool | None:
        """True/False for a decided verdict, None when undecided at this budget."""
        return {"stable": True, "unstable": False}.get(self.verdict)

    @property
    def bounds(self) -> dict[str, float]:
        """η-threshold of every row, keyed by row name."""
        return {r.name: r.eta_threshold for r in self.rows}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the sharpness report and parameters as their own dicts)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sharpness":
                d[f.name] = None if value is None else value.to_dict()
            elif f.name == "parameters":
                d[f.name] = value.to_dict()
            elif f.name == "sampling":
                d[f.name] = {"n": value.n, "batch_size": value.B, "scheme": value.scheme}
            elif f.name == "rows":
                d[f.name] = [{**dataclasses.asdict(r), "holds": r.holds} for r in value]
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                d[f.name] = dataclasses.asdict(value)
            else:
                d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def table(self) -> str:
        """The verdict as an aligned plain-text table (what ``str(report)`` returns)."""
        s = self.sampling
        mom = "" if self.momentum == 0 else f", momentum={self.momentum:g}"
        mom += ", nesterov" if self.nesterov else ""
        lines = [
            f"dynstab sampled stability ({self.curvature}; n={self.n}, C={self.outputs}, "
            f"lr={self.lr:.6g}, {s.label}{mom}; p={self.parameters.numel})"
        ]
        hdr = ("criterion", "kind", "value", "η threshold", "margin lr/η", "holds")
        body = []
        for r in self.rows:
            value = f"{r.value:.6g}" + ("" if r.stderr is None else f" ± {r.stderr:.2g}")
            eta = f"{r.eta_threshold:.6g}"
            if r.eta_ci is not None:
                eta += f" [{r.eta_ci[0]:.4g}, {r.eta_ci[1]:.4g}]"
            body.append((r.condition, r.kind, value, eta, f"{r.margin:.4g}",
                         "yes" if r.holds else "NO"))  # fmt: skip
        widths = [max(len(x[i]) for x in [hdr, *body]) for i in range(len(hdr))]

        def fmt(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        lines += [fmt(hdr), fmt(tuple("-" * w for w in widths)), *map(fmt, body), ""]
        level = f"{100 * self.confidence:g}%"
        lines.append(
            f"sampled η* = {self.eta_star:.6g}  ({level} CI [{self.eta_star_ci[0]:.6g}, "
            f"{self.eta_star_ci[1]:.6g}])"
        )
        lines.append(
            f"E‖δ‖² growth per step at lr: {self.growth:.6g}  ({level} CI "
            f"[{self.growth_ci[0]:.6g}, {self.growth_ci[1]:.6g}])"
        )
        lines.append(
            f"verdict: {self.verdict} (one-sided confidence {self.verdict_confidence:.4f})"
        )
        c = self.config
        lines.append(
            f"budget: {max(self.estimate.replicas, c.replicas)} replicas (first stage "
            f"{c.replicas}) × {self.particles} particles, {self.num_products} "
            f"products on {self.num_batches} batches ({self.engine}), {self.wall_time:.2f} s"
        )
        if self.memory is not None:
            lines.append(self.memory.describe())
        if self.route_reason:
            lines.append(f"route: sampled ({self.route_reason})")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass
class _Point:
    theta: Tensor  # (R,) log-growth per step per replica, population of m particles
    half1: Tensor  # (R,) first half of the window
    half2: Tensor  # (R,) second half
    small: Tensor | None  # (R,) the same with m/2 particles (Richardson), or None


def _margin(lr: float, eta: float) -> float:
    if math.isinf(eta):
        return 0.0
    return math.inf if eta <= 0 else lr / eta


class SampledStability:
    """Sampled mean-square stability of SGD (optionally with momentum) at a point, set up once.

    Build it once from the model, loss, data, sampling rule and parameter selection, then
    query :meth:`growth` (ρ̂ at a learning rate), :meth:`eta_star` (η̂* with its interval),
    :meth:`bounds` (λ_max, Tr H, ‖H‖_F and their η-thresholds) and :meth:`report`. Every query
    reuses the pilot population and the same random numbers (common random numbers), so
    estimates at different η are directly comparable, and evaluated η are cached. See the
    module docstring for the estimator and its guarantees.

    Args:
        model: The network (left as found: mode, buffers, ``.grad``, RNG state).
        loss_fn: Batch-mean loss (e.g. :func:`dynstab.losses.half_mse`).
        data: Tensors ``(X, y)`` (or ``(x_1, …, x_k, y)``, a dict), a map-style ``Dataset`` or
            a ``DataLoader`` over one: batches are drawn by sample index (see
            :class:`dynstab.curvature.IndexedData`); the full data are streamed only for one
            validating pass and for :meth:`bounds`.
        batch_size: Batch size B; ``None`` means full-batch GD. Ignored when ``sampling`` is a
            :class:`~dynstab.sampling.Sampling`.
        sampling: ``"with"`` or ``"without"`` replacement, or a ``Sampling`` (its ``n`` must be
            the number of samples). Epoch-wise ``"reshuffle"`` is refused (batches are not
            i.i.d.; no mean-square threshold covers it).
        params: Parameter selection (default: those with ``requires_grad=True``).
        curvature: ``"hessian"`` (default) or ``"gauss_newton"``.
        momentum: Heavy-ball momentum β in [0, 1) (PyTorch ``SGD(momentum=β, dampening=0)``).
        nesterov: Analyse PyTorch's Nesterov form (needs ``momentum > 0``).
        config: Monte-Carlo budget (:class:`SampledConfig`).
        generator: CPU generator from which all random numbers derive (one draw at set-up);
            ``None`` uses torch's global generator.
        device: Device of the computation (default: the parameters').
        unpack: ``unpack(batch) -> (inputs, targets)`` for custom batch layouts.
        forward: ``forward(model, inputs) -> outputs`` for custom model calls.
        allow_stochastic: Accept train-mode BatchNorm / active Dropout.
        engine: Batch products ``"auto"``, ``"vmap"`` or ``"loop"`` (see
            :class:`~dynstab.curvature.BatchCurvature`).
        chunk_size: Batches per vectorised call (memory bound); ``None``: all at once.

    Attributes:
        sampling: The resolved :class:`~dynstab.sampling.Sampling`.
        particles: The number m of particles per replica in use.
        problem: The :class:`~dynstab.curvature.CurvatureProblem`.
        products: The :class:`~dynstab.curvature.BatchCurvature` (counts its products).
        wall_time: Seconds spent so far (set-up and all queries).

    Raises:
        TypeError: On wrongly typed arguments or data without random access.
        ValueError: On bad sizes, an unknown curvature, momentum outside [0, 1), Nesterov
            without momentum, or epoch-wise reshuffling.

    Example:
        >>> from dynstab.losses import half_mse
        >>> X = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> y = model(X).detach()  # H = mean x² = 2.5; GD: η* = 2/2.5, growth (1 − 2.5η)²
        >>> s = SampledStability(model, half_mse, (X, y), batch_size=None,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> round(s.growth(0.6).growth, 9), round(s.eta_star().eta_star, 4)
        (0.25, 0.8)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: object,
        *,
        batch_size: int | None = 1,
        sampling: str | Sampling = "with",
        params: ParamSpec = None,
        curvature: str = "hessian",
        momentum: float = 0.0,
        nesterov: bool = False,
        config: SampledConfig | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        unpack: UnpackFn | None = None,
        forward: ForwardFn | None = None,
        allow_stochastic: bool = False,
        engine: str = "auto",
        chunk_size: int | None = None,
    ) -> None:
        start = time.perf_counter()
        check_choice("curvature", curvature, ("hessian", "gauss_newton"))
        F, g = momentum_form(momentum, nesterov)  # validates β and nesterov
        if config is None:
            config = SampledConfig()
        if not isinstance(config, SampledConfig):
            raise TypeError(f"config must be a SampledConfig; got {type(config).__name__}.")
        gen = check_generator("generator", generator)
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
        self.config = config
        self.curvature = curvature
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        f = F.flatten().tolist()
        self._form = None if self.momentum == 0.0 else (*f, *g.tolist())
        self.indexed = IndexedData(data, unpack=unpack)
        self.problem = CurvatureProblem(
            model, loss_fn, self.indexed.stream(), params, allow_stochastic=allow_stochastic,
            device=device, unpack=unpack, forward=forward, who="SampledStability",
        )  # fmt: skip
        self.problem.scan()
        self.indexed.device = self.problem.device
        self.sampling = self._resolve_sampling(sampling, batch_size, self.problem.n)
        self.products = BatchCurvature(
            self.problem, self.indexed, curvature=curvature, engine=engine, chunk_size=chunk_size
        )
        self._seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        self._budget = self._memory_budget()
        self._chunk: int | None = None  # fewest batches per product call so far (None: whole)
        self._largest_call = 0
        self._max_etas = 0
        self._planned = 0
        self._replicas_capped = 0
        self._work = self._measure_products()
        self.particles = self._resolve_particles()
        self._fdt = torch.float32 if self.problem.device.type == "mps" else torch.float64
        # replica blocks (first replica, size): the first stage, then any second-stage blocks
        self._blocks: list[tuple[int, int]] = [(0, config.replicas)]
        self._points: list[dict[float, _Point]] = [{}]  # per block: η -> evaluation
        self._pilots: dict[int, tuple[Tensor, Tensor | None, Tensor]] = {}
        self._frozen = False
        self._eta_star: SampledEtaStar | None = None
        self._sharpness: SharpnessReport | None = None
        self._sharpness_args = {
            "model": model, "loss_fn": loss_fn, "data": self.indexed.stream(),
            "params": params, "device": device, "unpack": unpack, "forward": forward,
            "allow_stochastic": allow_stochastic,
        }  # fmt: skip
        self.wall_time = time.perf_counter() - start

    # -- set-up ----------------------------------------------------------------------------------

    @staticmethod
    def _resolve_sampling(sampling: str | Sampling, batch_size: int | None, n: int) -> Sampling:
        if isinstance(sampling, Sampling):
            if sampling.n != n:
                raise ValueError(
                    f"sampling.n must equal the number of samples, {n}; got {sampling.n}. "
                    f"Build Sampling(n={n}, ...)."
                )
            s = sampling
        elif isinstance(sampling, str):
            s = Sampling(n, batch_size, sampling)
        else:
            raise TypeError(
                "sampling must be 'with', 'without' or a dynstab.sampling.Sampling; got "
                f"{type(sampling).__name__}."
            )
        if not s.iid:
            raise ValueError(
                "the sampled route needs i.i.d. batches (sampling 'with' or 'without'); got "
                "sampling='reshuffle' (epoch-wise reshuffling), which no mean-square criterion "
                "covers. Use sampling='without' as its i.i.d. stand-in."
            )
        return s

    def _memory_budget(self) -> int:
        return memory_budget(self.config.memory_budget, self.problem.device).bytes

    def _vector_bytes(self) -> int:
        """Bytes of one p-vector in the products' dtype."""
        return self.products.p * torch.empty((), dtype=self.problem.dtype).element_size()

    def _state_bytes(self, during_product: bool = False) -> int:
        """Bytes of one particle's state per η during a step (or beside its product)."""
        arrays = PRODUCT_ARRAYS if during_product else STEP_ARRAYS
        return arrays[self._form is not None] * self._vector_bytes()

    def _cache_bytes(self) -> int:
        """Bytes of one particle of a cached pilot cloud (δ, and u with momentum)."""
        return (1 if self._form is None else 2) * self._vector_bytes()

    def _measure_products(self) -> tuple[int, int, int]:
        """Working bytes ``(call, batch, vector)`` of one product, measured by a small probe.

        Three products on k batches with s vectors each, (k, s) = (1, 1), (2, 1), (2, 2)
        (7 products, counted in ``num_products``), run under :class:`_TensorPeak`; the
        working memory is modelled as ``call + k·(batch + s·vector)`` (every allocation of
        the product, its output included, beyond its inputs).
        """
        gen = self._generator(9)
        sampler = None if self.sampling.is_full_batch else self.sampling.sampler(gen)
        peaks = []
        for k, s in ((1, 1), (2, 1), (2, 2)):
            V = torch.randn(k, s, self.products.p, generator=gen, dtype=torch.float64)
            V = V.to(dtype=self.problem.dtype, device=self.problem.device)
            idx = None if sampler is None else torch.stack([sampler.next() for _ in range(k)])
            with _TensorPeak() as tracker:
                self._apply(idx, V, chunk=False)
            peaks.append(tracker.peak)
        vector = max(0, (peaks[2] - peaks[1]) // 2)
        batch = max(0, peaks[1] - peaks[0] - vector)
        return max(0, peaks[0] - batch - vector), batch, vector

    def _peak_bytes(self, rows: int, etas: int, chunk: int, cached: int) -> int:
        """Planned peak bytes of one step of the simulation.

        ``rows`` particles at ``etas`` η, products on ``chunk`` batches at a time, and the
        pilot clouds of ``cached`` particles kept for later η. The larger of the product
        phase (state beside the product's working memory) and the stepping phase
        (``STEP_ARRAYS`` per particle and η), plus the cached clouds.
        """
        _, batch, vector = self._work
        product = rows * etas * self._state_bytes(True) + chunk * (batch + etas * vector)
        step = rows * etas * self._state_bytes()
        return self._fixed_bytes(rows, etas, cached) + max(product, step)

    def _fixed_bytes(self, rows: int, etas: int, cached: int) -> int:
        """Bytes of a step that do not depend on the chunk or the phase."""
        scalars = rows * (etas * PARTICLE_SCALARS + self.sampling.B) * 8
        return cached * self._cache_bytes() + self._work[0] + scalars

    def _plan(self, rows: int, etas: int) -> tuple[int, int]:
        """Batches per product call and the planned peak bytes of a step of ``rows`` particles.

        The state of ``rows`` particles at ``etas`` η values and the cached pilot clouds of
        every replica are fixed; the product's chunk takes what is left (at least 1 batch).
        """
        _, batch, vector = self._work
        cached = self.replicas * self.particles
        per = batch + etas * vector
        fixed = self._fixed_bytes(rows, etas, cached) + rows * etas * self._state_bytes(True)
        chunk = rows if per <= 0 else int((self._budget - fixed) // per)
        chunk = max(1, min(rows, chunk))
        return chunk, self._peak_bytes(rows, etas, chunk, cached)

    def _resolve_particles(self) -> int:
        cfg = self.config
        extra = 1.5 if cfg.bias_correction == "richardson" else 1.0
        R = cfg.replicas

        def fits(m: int) -> bool:  # one η, products on one batch at a time
            return self._peak_bytes(int(R * m * extra), 1, 1, R * m) <= self._budget

        requested = cfg.particles or DEFAULT_PARTICLES
        m = requested
        while m > 4 and not fits(m):
            m = (m - 1) // 2 * 2 if m % 2 else m - 2  # even sizes (Richardson halves)
        m = max(4, m)
        cap = m if fits(m) else 0
        if cap < 4:
            need = self._peak_bytes(int(R * 4 * extra), 1, 1, R * 4)
            warnings.warn(
                f"SampledStability: the memory budget ({_gib(self._budget)}) is smaller than "
                f"the smallest population needs ({_gib(need)}: 4 particles per replica, products "
                "on one batch at a time); running over the budget. Raise "
                "SampledConfig.memory_budget or reduce the replicas.",
                DynstabWarning,
                stacklevel=3,
            )
        elif m < 32:
            if cap < requested:
                why = (
                    f"only m = {m} particles per replica fit the memory budget "
                    f"({self._budget / 2**30:.2g} GiB for p = {self.products.p}: the state of "
                    f"one particle takes {_gib(self._state_bytes())} per η)"
                )
                fix = "Raise SampledConfig.memory_budget or reduce the replicas."
            else:
                why = f"m = {m} particles per replica (SampledConfig.particles)"
                fix = "Use particles >= 32 for a smaller bias."
            warnings.warn(
                f"SampledStability: {why}; the population bias grows like 1/m (Richardson "
                f"removes its first order). {fix}",
                DynstabWarning,
                stacklevel=3,
            )
        return m

    def _stretch(self, steps: int) -> int:
        """Relaxation steps scaled by 1/√(1 − β): momentum slows the relaxation of the cloud."""
        return math.ceil(steps / math.sqrt(1.0 - self.momentum))

    def _generator(self, *tags: int) -> torch.Generator:
        seed = self._seed
        for t in tags:
            seed = (seed * 1_000_003 + 7919 * (t + 1)) % (2**62)
        return torch.Generator().manual_seed(seed)

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.problem.n

    @property
    def parameters(self) -> ParameterSelection:
        """The parameters measured."""
        return self.problem.selection

    @property
    def num_products(self) -> int:
        """Curvature-vector products spent so far (batch products and the bounds' products)."""
        sharp = self._sharpness.num_matvecs if self._sharpness is not None else 0
        return self.products.num_products + sharp

    # -- the simulation ------------------------------------------------------------------------

    def _samplers(self, phase: int, block: int) -> list[BatchSampler]:
        start, size = self._blocks[block]
        return [
            self.sampling.sampler(self._generator(phase, r)) for r in range(start, start + size)
        ]

    def _draw(self, samplers: list[BatchSampler], m: int) -> Tensor | None:
        """Batch indices ``(R·m, B)`` for one step, ``m`` per replica (``None`` for GD)."""
        if self.sampling.is_full_batch:
            return None
        return torch.cat([torch.stack([s.next() for _ in range(m)]) for s in samplers])

    def _apply(self, idx: Tensor | None, Z: Tensor | list[Tensor], chunk: bool = True) -> Tensor:
        """Products of the rows of ``Z`` (or of the parts, in order) with their batches' curvature.

        ``Z``: ``(K, L, p)`` or parts of it along the first axis; ``idx``: ``(K, B)`` (None:
        full batch). Runs in chunks of batches when the memory plan (:meth:`_plan`) asks for
        it; every row's product is independent of the others, so chunks change no number
        (bitwise on the CPU in the tests; only a chunk of a single batch was seen to differ, in
        the last bit, and chunks of one batch are used only when no larger chunk fits).
        """
        parts = [Z] if isinstance(Z, Tensor) else Z
        rows, etas = sum(int(z.shape[0]) for z in parts), int(parts[0].shape[1])
        size, planned = self._plan(rows, etas) if chunk else (rows, 0)
        if chunk:
            self._largest_call = max(self._largest_call, rows)
            self._max_etas = max(self._max_etas, etas)
            self._planned = max(self._planned, planned)
            if size < rows:
                self._chunk = size if self._chunk is None else min(self._chunk, size)

        def product(lo: int, z: Tensor) -> Tensor:
            if idx is None:
                return self.products.apply_full(z)
            return self.products.apply(idx[lo : lo + z.shape[0]], z)

        if len(parts) == 1 and size >= rows:
            return product(0, parts[0])
        Y = parts[0].new_empty((rows, etas, parts[0].shape[2]))
        offset = 0
        for z in parts:
            # balanced pieces of at most ``size`` batches: no piece of one batch unless size is
            # 1 (a vectorised product over a single batch can differ in the last bit)
            pieces = -(-int(z.shape[0]) // size)
            bounds = [round(i * z.shape[0] / pieces) for i in range(pieces + 1)]
            for lo, hi in itertools.pairwise(bounds):
                Y[offset + lo : offset + hi] = product(offset + lo, z[lo:hi])
            offset += z.shape[0]
        return Y

    @staticmethod
    def _norm2(d: Tensor, u: Tensor | None) -> Tensor:
        out = (d * d).sum(-1, dtype=torch.float64)
        if u is not None:
            out = out + (u * u).sum(-1, dtype=torch.float64)
        return out

    def _initial_particles(self, block: int) -> tuple[Tensor, Tensor | None]:
        """Unit particles δ₀ ∝ H_I g (own batch each), u₀ = 0; shape ``(R·m, 1, p)``."""
        R, m, p = self._blocks[block][1], self.particles, self.products.p
        g = torch.randn(R * m, 1, p, generator=self._generator(1, block), dtype=torch.float64)
        g = g.to(dtype=self.problem.dtype, device=self.problem.device)
        Y = self._apply(self._draw(self._samplers(2, block), m), g)
        dead = self._norm2(Y, None) <= 0
        d = torch.where(dead[..., None], g, Y)
        d = d / self._norm2(d, None).sqrt()[..., None].to(d.dtype)
        u = torch.zeros_like(d) if self._form is not None else None
        return d, u

    def _step(
        self, d: Tensor, u: Tensor | None, Y: Tensor, eta: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """One linearised step of every particle: new states and squared norms ``(K, L)``.

        ``eta`` broadcasts against ``(K, L, 1)``: ``(1, L, 1)`` for a grid, ``(K, 1, 1)`` for
        the pilot's per-replica η.
        """
        e = eta.to(d.dtype)
        if self._form is None:
            d2 = d - e * Y
            return d2, None, self._norm2(d2, None)
        assert u is not None
        f11, f12, f21, f22, g1, g2 = self._form
        d2 = f11 * d + f12 * u - (g1 * e) * Y
        u2 = f21 * d + f22 * u - (g2 * e) * Y
        return d2, u2, self._norm2(d2, u2)

    def _advance(
        self, d: Tensor, u: Tensor | None, Y: Tensor, eta: Tensor, logw: Tensor, uniform: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Step, weight, renormalise and resample one cloud; also return the log mean weight.

        ``d``/``u``/``Y``: ``(R·k, L, p)``; ``logw``: ``(R, L, k)``; returns the new
        ``(d, u, logw)`` and the log-growth of this step per (replica, η), ``(R, L)``.
        """
        R, L, k = logw.shape
        d, u, w = self._step(d, u, Y, eta)
        w = w.to(self._fdt).clamp_min(torch.finfo(self._fdt).tiny)
        wg = w.reshape(R, k, L).permute(0, 2, 1)  # (R, L, k)
        inc = torch.logsumexp(torch.log_softmax(logw, -1) + wg.log(), dim=-1)
        logw = logw + wg.log()
        scale = w.sqrt()[..., None].to(d.dtype)
        d = d / scale
        u = None if u is None else u / scale
        d, u, logw = self._resample(d, u, logw, uniform)
        return d, u, logw, inc

    def _resample(
        self, d: Tensor, u: Tensor | None, logw: Tensor, uniform: Tensor, force: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Systematic resampling of the groups (replica, η) whose ESS fell below threshold.

        ``d``/``u``: ``(R·k, L, p)``; ``logw``: ``(R, L, k)``; ``uniform``: ``(R,)`` shared by
        every η of a replica (common random numbers).
        """
        R, L, k = logw.shape
        w = torch.softmax(logw, dim=-1)
        low = 1.0 / (w * w).sum(-1) < self.config.ess_threshold * k
        if force:
            low = torch.ones_like(low)
        elif not bool(low.any()):
            return d, u, logw
        cum = torch.cumsum(w, dim=-1)
        cum[..., -1] = 1.0
        pos = (uniform.to(cum)[:, None, None] + torch.arange(k, device=cum.device)) / k
        anc = torch.searchsorted(cum, pos.expand(R, L, k).contiguous()).clamp_(max=k - 1)
        keep = torch.arange(k, device=anc.device).expand(R, L, k)
        index = torch.where(low[..., None], anc, keep).permute(0, 2, 1).to(d.device)  # (R, k, L)
        p = d.shape[-1]

        def gather(Z: Tensor) -> Tensor:
            idx = index[..., None].expand(R, k, L, p)
            return torch.gather(Z.reshape(R, k, L, p), 1, idx).reshape(R * k, L, p)

        d = gather(d)
        u = None if u is None else gather(u)
        logw = torch.where(low[..., None], torch.zeros_like(logw), logw)
        return d, u, logw

    def _quadratic(self, d: Tensor, u: Tensor | None, Y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Coefficients of the one-step weight ‖z'‖² = a0 − 2η a1 + η² a2 of unit states."""
        if self._form is None:
            return self._norm2(d, None), (d * Y).sum(-1, dtype=torch.float64), self._norm2(Y, None)
        assert u is not None
        f11, f12, f21, f22, g1, g2 = self._form
        Fd, Fu = f11 * d + f12 * u, f21 * d + f22 * u
        a1 = g1 * (Fd * Y).sum(-1, dtype=torch.float64) + g2 * (Fu * Y).sum(-1, dtype=torch.float64)
        return self._norm2(Fd, Fu), a1, (g1 * g1 + g2 * g2) * self._norm2(Y, None)

    def _pilot_run(self, block: int = 0) -> tuple[Tensor, Tensor | None, Tensor]:
        """Pilot population (per replica) held slightly above the threshold.

        The particles start at δ₀ ∝ H_I g; η starts at the root of the one-step growth of that
        cloud and is then steered (per replica, multiplicatively, at most 10% per step) so that
        the smoothed log-growth per step equals ``pilot_growth`` > 0: just above η* the
        unstable mode dominates the cloud and the modes of small curvature (growth ≈ 1) are
        suppressed by exp(−pilot_growth) per step. Over the second half of the run the root
        of the mean one-step growth, η = 2 tr(HS)/tr E[H_ISH_I] for the cloud's second moment
        S (the quadratic of :meth:`_quadratic` with momentum), is averaged: it equals η* when
        S is the unstable eigenvector at η*, and centres the evaluation grid.

        Returns:
            ``(δ, u, η_fp)``: the final cloud with equal weights, shape ``(R·m, 1, p)``, and
            the per-replica fixed-point estimates ``(R,)``.
        """
        if block in self._pilots:
            return self._pilots[block]
        cfg = self.config
        R, m = self._blocks[block][1], self.particles
        dev, fdt = self.problem.device, self._fdt
        d, u = self._initial_particles(block)
        samplers = self._samplers(3, block)
        ugen = self._generator(4, block)
        logw = torch.zeros(R, 1, m, dtype=fdt, device=dev)
        eta = torch.ones(R, dtype=fdt, device=dev)
        smooth = torch.zeros(R, dtype=fdt, device=dev)
        acc = torch.zeros(4, R, dtype=fdt, device=dev)  # weighted (1, a0, a1, a2), second half
        # with momentum the state integrates over ~1/(1 − β) steps and grows that much slower
        target = cfg.pilot_growth * (1.0 - self.momentum)
        pilot_steps = self._stretch(cfg.pilot_steps)
        for t in range(pilot_steps):
            Y = self._apply(self._draw(samplers, m), d)
            a0, a1, a2 = (a.to(fdt).reshape(R, m) for a in self._quadratic(d, u, Y))
            wn = torch.softmax(logw[:, 0], dim=-1)  # (R, m)
            A = torch.stack([torch.ones(R, dtype=fdt, device=dev), *((wn * a).sum(-1)
                             for a in (a0, a1, a2))])  # fmt: skip
            if t == 0 and block == 0:
                self._frozen = float(A[3].abs().max()) == 0.0  # every product vanished
                eta = self._root(A[0], A[1], A[2], A[3], None)
            if 2 * t >= pilot_steps:
                acc += A
            uni = torch.rand(R, generator=ugen, dtype=torch.float64).to(dev)
            d, u, logw, inc = self._advance(d, u, Y, eta.repeat_interleave(m)[:, None, None],
                                            logw, uni)  # fmt: skip
            del Y  # not alive beside the next product (the memory plan counts on it)
            smooth = inc[:, 0] if t == 0 else 0.8 * smooth + 0.2 * inc[:, 0]
            eta = eta * (2.0 * (target - smooth)).clamp(-0.1, 0.1).exp()
        uni = torch.rand(R, generator=ugen, dtype=torch.float64).to(dev)
        d, u, _ = self._resample(d, u, logw, uni, force=True)
        self._pilots[block] = (d, u, self._root(acc[0], acc[1], acc[2], acc[3], eta))
        return self._pilots[block]

    @staticmethod
    def _root(Sw: Tensor, S0: Tensor, S1: Tensor, S2: Tensor, near: Tensor | None) -> Tensor:
        """Positive root of S0 − 2ηS1 + η²S2 = Sw (nearest to ``near``; else 1 or ``near``).

        Without momentum S0 = Sw and the root is 2S1/S2.
        """
        S2 = S2.clamp_min(torch.finfo(S2.dtype).tiny)
        c = S0 - Sw
        disc = (S1 * S1 - S2 * c).clamp_min(0.0).sqrt()
        r1, r2 = (S1 - disc) / S2, (S1 + disc) / S2
        if near is None:
            root = torch.where(r1 > 0, r1, r2)
        else:
            root = torch.where((r1 - near).abs() < (r2 - near).abs(), r1, r2)
        root = torch.where(c.abs() <= 1e-12 * Sw.abs(), 2 * S1 / S2, root)
        ok = torch.isfinite(root) & (root > 0)
        return torch.where(ok, root, torch.ones_like(root) if near is None else near)

    def _evaluate(self, etas: Sequence[float]) -> None:
        """Evaluate, in every replica block, the η not yet cached, in groups within the budget."""
        cfg = self.config
        extra = 1.5 if cfg.bias_correction == "richardson" else 1.0
        for block, (_, size) in enumerate(self._blocks):
            done = self._points[block]
            todo = sorted({float(e) for e in etas if float(e) not in done})
            if not todo:
                continue
            # as many η per simulation as fit with a product on one batch (chunks take the rest)
            rows, cached = int(size * self.particles * extra), self.replicas * self.particles
            L = len(todo)
            while L > 1 and self._peak_bytes(rows, L, 1, cached) > self._budget:
                L -= 1
            for start in range(0, len(todo), L):
                self._evaluate_group(block, todo[start : start + L])

    def _point(self, eta: float) -> _Point:
        """The evaluation at ``eta`` over all replica blocks (replicas concatenated in order)."""
        pts = [self._points[b][eta] for b in range(len(self._blocks))]
        small = [q.small for q in pts]
        return _Point(
            torch.cat([q.theta for q in pts]),
            torch.cat([q.half1 for q in pts]),
            torch.cat([q.half2 for q in pts]),
            None if small[0] is None else torch.cat(cast(list[Tensor], small)),
        )

    def _add_replicas(self, total: int) -> None:
        """Add independent replica blocks (of at most the first stage's size) up to ``total``."""
        size0 = self._blocks[0][1]
        have = self._blocks[-1][0] + self._blocks[-1][1]
        while have < total:
            size = min(size0, total - have)
            self._blocks.append((have, size))
            self._points.append({})
            have += size
        self._evaluate(sorted(self._points[0]))

    def _replica_cap(self) -> int:
        """Most replicas whose cached pilot clouds fit beside a step of one block (one η)."""
        extra = 1.5 if self.config.bias_correction == "richardson" else 1.0
        m, R = self.particles, self.config.replicas
        rows = int(R * m * extra)
        total = R
        while total < self.config.max_replicas and (
            self._peak_bytes(rows, 1, 1, (total + 1) * m) <= self._budget
        ):
            total += 1
        return total

    @property
    def memory(self) -> SampledMemory:
        """How the route fits its memory budget so far (:class:`SampledMemory`)."""
        return SampledMemory(
            budget=self._budget,
            state_bytes=self._state_bytes(),
            product_bytes=self._work,
            particles_requested=self.config.particles or DEFAULT_PARTICLES,
            particles=self.particles,
            chunk=self._chunk,
            largest_call=self._largest_call,
            etas_per_group=self._max_etas,
            planned_bytes=self._planned,
            replicas_capped=self._replicas_capped,
        )

    @property
    def replicas(self) -> int:
        """Replicas R in use: the first stage's, plus any added by the second stage."""
        return self._blocks[-1][0] + self._blocks[-1][1]

    def _evaluate_group(self, block: int, etas: list[float]) -> None:
        """Evaluate θ_r(η) for every replica and η of ``etas`` with common random numbers.

        Every replica runs its population of m particles from the pilot's cloud and, for the
        Richardson correction, one of h = m/2 particles started from a random half of that
        cloud and driven by the batches of the first h slots (common random numbers between
        the two sizes). The same samplers and resampling numbers serve every η and every call.
        """
        cfg = self.config
        R, m = self._blocks[block][1], self.particles
        h = m // 2 if cfg.bias_correction == "richardson" else 0
        L = len(etas)
        d0, u0, _ = self._pilot_run(block)
        p = d0.shape[-1]
        dev, fdt = self.problem.device, self._fdt
        eta = torch.tensor(etas, dtype=fdt, device=dev)[None, :, None]
        sizes = [m, h] if h else [m]
        half = torch.randperm(m, generator=self._generator(7))[:h].to(d0.device)

        def start(size: int, Z: Tensor | None) -> Tensor | None:
            if Z is None:
                return None
            Zr = Z.reshape(R, m, 1, p)
            Zs = Zr if size == m else Zr[:, half]
            return Zs.reshape(R * size, 1, p).expand(R * size, L, p).clone()

        ds = [start(k, d0) for k in sizes]
        us = [start(k, u0) for k in sizes]
        logws = [torch.zeros(R, L, k, dtype=fdt, device=dev) for k in sizes]
        samplers = self._samplers(5, block)
        ugen = self._generator(6, block)
        burn_in = self._stretch(cfg.burn_in)
        total = burn_in + cfg.steps
        mid = burn_in + cfg.steps // 2
        acc = torch.zeros(len(sizes), 2, R, L, dtype=fdt, device=dev)
        for t in range(total):
            idx = self._draw(samplers, m)
            if idx is not None and h:
                idx = torch.cat([idx, idx.reshape(R, m, -1)[:, :h].reshape(R * h, -1)])
            Y = self._apply(idx, [d for d in ds if d is not None])
            uni = torch.rand(R, generator=ugen, dtype=torch.float64).to(dev)
            offset = 0
            for c, k in enumerate(sizes):
                d = ds[c]
                assert d is not None
                Yc = Y[offset : offset + R * k]
                offset += R * k
                ds[c], us[c], logws[c], inc = self._advance(d, us[c], Yc, eta, logws[c], uni)
                if t >= burn_in:
                    acc[c, int(t >= mid)] += inc
            del Y, Yc, d  # not alive beside the next product (the memory plan counts on it)
        n1, n2 = mid - burn_in, total - mid
        acc = acc.cpu().to(torch.float64)
        for i, e in enumerate(etas):
            big = acc[0, :, :, i]  # (2, R)
            small = acc[1, :, :, i].sum(0) / cfg.steps if h else None
            self._points[block][e] = _Point(big.sum(0) / cfg.steps, big[0] / n1, big[1] / n2, small)

    # -- statistics ----------------------------------------------------------------------------

    def _estimate(self, pt: _Point) -> tuple[float, float]:
        """(log-growth, stderr) over replicas; Richardson-extrapolated in 1/m if configured.

        The population bias of θ is ≈ −c/m (measured in the tests), so
        ψ_r = 2θ_r(m) − θ_r(m/2) removes it to O(1/m²); the ψ_r are independent across
        replicas. The estimate is their mean over all R replicas; the standard error is
        s₀/√R with s₀ the sample standard deviation of the first stage's R₀ replicas
        (Stein's two-stage procedure: R was chosen from the first stage alone, and s₀ is
        independent of the mean of normal data, so the Student-t interval on R₀ − 1 degrees
        of freedom keeps its level; with one stage, R = R₀ and this is the usual interval).
        """
        values = pt.theta if pt.small is None else 2.0 * pt.theta - pt.small
        R, R0 = values.numel(), self.config.replicas
        return float(values.mean()), float(values[:R0].std(correction=1)) / math.sqrt(R)

    def _quantile(self) -> float:
        """Student-t quantile of the two-sided interval on R₀ − 1 degrees of freedom."""
        df = self.config.replicas - 1
        return float(special.stdtrit(df, 0.5 + 0.5 * self.config.confidence))

    def growth(self, lr: float) -> GrowthEstimate:
        """Estimated per-step mean-square growth factor ρ̂(lr) with its interval.

        Above η* this estimates ρ(Q_lr); below η* it is the decay rate of the
        curvature-carrying perturbations over the simulated horizon (module docstring).

        Args:
            lr: Learning rate η > 0.

        Returns:
            :class:`GrowthEstimate` (cached: a second call with the same lr costs nothing).

        Raises:
            ValueError: If ``lr`` is not a finite positive number.
        """
        lr = check_lr(lr)
        t0 = time.perf_counter()
        self._pilot_run()
        if self._frozen:
            self.wall_time += time.perf_counter() - t0
            zeros = (0.0,) * self.config.replicas
            return GrowthEstimate(lr, 1.0, (1.0, 1.0), 0.0, 0.0, zeros, 0.0, 0.0)
        self._evaluate([lr])
        self.wall_time += time.perf_counter() - t0
        pt = self._point(lr)
        est, se = self._estimate(pt)
        tq = self._quantile()
        drift = pt.half2 - pt.half1
        return GrowthEstimate(
            lr=lr,
            growth=math.exp(est),
            ci=(math.exp(est - tq * se), math.exp(est + tq * se)),
            log_growth=est,
            stderr=se,
            replicas=tuple(float(x) for x in pt.theta),
            drift=float(drift.mean()),
            drift_stderr=float(drift.std(correction=1)) / math.sqrt(drift.numel()),
        )

    # -- η* ------------------------------------------------------------------------------------

    def _curves(self) -> tuple[list[float], list[float], list[float], list[float]]:
        etas = sorted(self._points[0])
        tq = self._quantile()
        mean, upper, lower = [], [], []
        for e in etas:
            est, se = self._estimate(self._point(e))
            mean.append(est)
            upper.append(est + tq * se)
            lower.append(est - tq * se)
        return etas, mean, upper, lower

    @staticmethod
    def _first_up(etas: list[float], vals: list[float]) -> tuple[float, int]:
        """Interpolated first crossing of 0 from below, scanning upwards; (η, bracket index).

        Returns ``(-inf, -1)`` if the first value is ≥ 0 and ``(inf, len)`` if none is.
        """
        if vals[0] >= 0:
            return -math.inf, -1
        for i in range(1, len(etas)):
            if vals[i] >= 0:
                a, b, va, vb = etas[i - 1], etas[i], vals[i - 1], vals[i]
                return a + (b - a) * (-va) / (vb - va), i
        return math.inf, len(etas)

    @staticmethod
    def _last_down(etas: list[float], vals: list[float]) -> tuple[float, int]:
        """Interpolated last crossing: the η beyond which every value is ≥ 0 (as above)."""
        if vals[-1] < 0:
            return math.inf, len(etas)
        i = len(etas) - 1
        while i > 0 and vals[i - 1] >= 0:
            i -= 1
        if i == 0:
            return -math.inf, -1
        a, b, va, vb = etas[i - 1], etas[i], vals[i - 1], vals[i]
        return a + (b - a) * (-va) / (vb - va), i

    def _second_stage(self, est: float, lo: float, hi: float) -> int:
        """Replicas R for the ``target_width`` from the first stage's interval (Stein, 1945).

        The half-width of the interval scales like 1/√R at a fixed first-stage spread s₀, so
        R = ⌈R₀·(h₀/(w·η̂*))²⌉ (h₀ the first stage's half-width, w the target), at most
        ``max_replicas``; R₀ when the first stage already meets the target, when there is no
        target, or when the first stage bracketed nothing.
        """
        cfg, R0 = self.config, self.config.replicas
        w = cfg.target_width
        if w is None or not (math.isfinite(lo) and math.isfinite(hi) and est > 0):
            return R0
        rel = 0.5 * (hi - lo) / (w * est)
        if rel <= 1.0:
            return R0
        return min(cfg.max_replicas, math.ceil(R0 * rel * rel))

    def eta_star(self) -> SampledEtaStar:
        """Sampled η* with its confidence interval (cached after the first call).

        The interval inverts the pointwise test of ρ(η) = 1: η_L is the first crossing of the
        upper confidence curve of log ρ̂, η_U the last crossing of the lower one; η̂* is the
        first crossing of the mean curve. Crossings are bracketed by evaluated points (the
        grid is extended by factors of 2 where needed) and refined by regula falsi with a
        bisection safeguard until each bracket is narrower than ``refine`` × the interval's
        half-width (at most ``max_rounds`` rounds).

        **Adaptive budget (two stages).** The first stage runs ``replicas`` = R₀ replicas. If
        its interval is wider than ±``target_width``·η̂*, a second stage adds independent
        replicas up to R = ⌈R₀(h₀/(w·η̂*))²⌉ (at most ``max_replicas``), evaluated at the
        same η with the same common random numbers per replica, and the search continues
        with all R. The stopping rule reads the first stage only and the interval uses the
        first stage's spread s₀ with R₀ − 1 degrees of freedom (Stein's two-stage procedure),
        so the interval keeps its level; it is not a "stop when narrow" rule, which would
        favour stages whose spread happened to be small.

        Returns:
            :class:`SampledEtaStar`. When a crossing cannot be bracketed within a factor 10³
            of the pilot's estimate, the corresponding end is ``0`` or ``inf`` and a
            :class:`~dynstab.errors.ConvergenceWarning` is emitted.
        """
        if self._eta_star is not None:
            return self._eta_star
        t0 = time.perf_counter()
        cfg = self.config
        pilot_eta = float(self._pilot_run()[2].mean())
        if self._frozen:
            self._eta_star = SampledEtaStar(math.inf, (math.inf, math.inf), math.inf, (), True)
            self.wall_time += time.perf_counter() - t0
            return self._eta_star
        new = [pilot_eta * g for g in cfg.grid]
        limit_lo, limit_hi = pilot_eta * 1e-3, pilot_eta * 1e3
        rounds = extensions = 0
        staged = False
        while True:
            self._evaluate(new)
            etas, mean, upper, lower = self._curves()
            est, i_est = self._first_up(etas, mean)
            lo, i_lo = self._first_up(etas, upper)
            hi, i_hi = self._last_down(etas, lower)
            new = []
            if (i_lo == -1 or i_est == -1) and etas[0] > limit_lo:
                new.append(etas[0] / 2)
            if (i_hi == len(etas) or i_est == len(etas)) and etas[-1] < limit_hi:
                new.append(etas[-1] * 2)
            if new and extensions < 20:
                extensions += 1
                continue
            new = []
            if not staged:
                staged = True
                total = self._second_stage(est, lo, hi)
                cap = self._replica_cap()
                if total > cap:  # the cached pilot clouds of more replicas would not fit
                    self._replicas_capped = total - cap
                    total = cap
                if total > self.replicas:
                    self._add_replicas(total)
                    continue  # the same η with every replica, then bracket and refine again
            if rounds >= cfg.max_rounds:
                break
            half = 0.5 * (hi - lo) if math.isfinite(hi - lo) else math.inf
            for c, i in ((lo, i_lo), (est, i_est), (hi, i_hi)):
                if not (0 < i < len(etas)) or not math.isfinite(c):
                    continue
                a, b = etas[i - 1], etas[i]
                if b - a <= max(cfg.refine * half, 1e-3 * c):
                    continue
                # regula falsi with a bisection safeguard: an interpolant near a bracket end
                # (a kinked curve) would shrink the bracket from one side only
                if not (a + 0.25 * (b - a) <= c <= b - 0.25 * (b - a)):
                    c = 0.5 * (a + b)
                if c not in self._points[0] and c not in new:
                    new.append(c)
            if not new:
                break
            rounds += 1
        bracketed = all(0 < i < len(etas) for i in (i_lo, i_est, i_hi))
        if not bracketed:
            warnings.warn(
                "SampledStability.eta_star: the search did not bracket η* and both interval "
                f"ends between {limit_lo:.3g} and {limit_hi:.3g}; the open ends are reported "
                "as 0 or inf. The point may not be a minimum (negative curvature grows for "
                "every η), or the budget is too small to resolve the growth.",
                ConvergenceWarning,
                stacklevel=2,
            )
        tq = self._quantile()
        self.wall_time += time.perf_counter() - t0
        self._eta_star = SampledEtaStar(
            eta_star=max(est, 0.0),
            ci=(max(lo, 0.0), max(hi, 0.0)),
            pilot_eta=pilot_eta,
            replicas=self.replicas,
            evaluated=tuple((e, m_, (u_ - m_) / tq) for e, m_, u_ in zip(etas, mean, upper)),
            bracketed=bracketed,
            num_products=self.num_products,
            wall_time=self.wall_time,
            momentum=self.momentum,
            nesterov=self.nesterov,
        )
        return self._eta_star

    # -- bounds and the report -----------------------------------------------------------------

    def sharpness(self) -> SharpnessReport:
        """λ_max, Tr and ‖·‖_F of the full-data curvature (cached after the first call).

        Calls :func:`dynstab.sharpness` on the same model, data (streamed), parameters and
        curvature with ``SampledConfig.bounds``: by default certified Lanczos for λ_max (a
        Ritz value ≤ λ_max with its error bound) and Hutchinson for Tr and ‖·‖_F with standard
        errors (one shared Rademacher probe set), O(p) memory at any n.

        Returns:
            The :class:`~dynstab.measures.SharpnessReport`.
        """
        if self._sharpness is None:
            t0 = time.perf_counter()
            self._sharpness = sharpness(
                measures=("lambda_max", "trace", "frobenius"), curvature=self.curvature,
                config=self.config.bounds, generator=self._generator(8),
                **self._sharpness_args,  # type: ignore[arg-type]
            )  # fmt: skip
            self.wall_time += time.perf_counter() - t0
        return self._sharpness

    def bounds(self, lr: float) -> tuple[SampledBound, ...]:
        """The scalable verdict rows at ``lr``: GD threshold, trace and Frobenius bounds.

        * ``gd``: λ_max ≤ 2/η (with momentum the GD-with-momentum threshold of
          :func:`~dynstab.criteria.momentum_gd_threshold`): exact for full-batch GD, and a
          necessary condition for SGD (mean-square stability implies first-moment
          stability, whose threshold it is).
        * ``trace``: Tr H ≤ 2C/(qη) and ``frobenius``: ‖H‖_F ≤ 2√C/(√q η) (Wu & Su, 2023,
          Thm. 3.3; C outputs per sample, q of the sampling rule): necessary conditions for
          plain SGD at an interpolating minimum of the ½-square loss (per-sample curvatures
          PSD of rank ≤ C); not given with momentum.

        Intervals of the thresholds propagate the Hutchinson standard errors (delta method,
        normal quantile of the configured level).

        Args:
            lr: Learning rate η > 0.

        Returns:
            The rows, in that order.
        """
        lr = check_lr(lr)
        rep = self.sharpness()
        s, C = self.sampling, self.problem.outputs_per_sample
        z = float(special.ndtri(0.5 + 0.5 * self.config.confidence))
        rows = []
        lm = rep.lambda_max
        assert lm is not None
        assert rep.trace is not None
        assert rep.frobenius is not None
        lam = float(cast(float, lm.value))
        if lam > 0:
            eta_gd = momentum_gd_threshold(lam, self.momentum, nesterov=self.nesterov)
        else:
            eta_gd = 0.0 if lam < 0 else math.inf
        cond = "λ_max(H) ≤ 2/η"
        if self.momentum:
            b = self.momentum
            cond = f"λ_max(H) ≤ {(2 + 2 * b) / (1 + 2 * b) if self.nesterov else 2 + 2 * b:g}/η"
        kind = "exact" if s.is_full_batch else "necessary"
        gd_ci = None
        err = lm.error_bound
        if isinstance(err, float) and math.isfinite(err) and lam > 0:
            # a Ritz value θ ≤ λ_max ≤ θ + error bound: the threshold lies in this interval
            gd_ci = (eta_gd * lam / (lam + err), eta_gd)
        rows.append(SampledBound("gd", cond, kind, lam, eta_gd, _margin(lr, eta_gd), None, gd_ci,
                                 lm.method))  # fmt: skip
        if not self.momentum and not s.is_full_batch:
            q = s.q
            for name, m, cond, thr in (
                ("trace", rep.trace, "Tr H ≤ 2C/(qη)", lambda v: 2.0 * C / (q * v)),
                ("frobenius", rep.frobenius, "‖H‖_F ≤ 2√C/(√q η)",
                 lambda v: 2.0 * math.sqrt(C) / (math.sqrt(q) * v)),
            ):  # fmt: skip
                v = float(cast(float, m.value))
                se = m.stderr
                eta = thr(v) if v > 0 else math.inf
                ci = None
                if se is not None and math.isfinite(se) and v > 0:
                    lo_v, hi_v = v + z * se, max(v - z * se, 0.0)
                    ci = (thr(lo_v), thr(hi_v) if hi_v > 0 else math.inf)
                rows.append(SampledBound(name, cond, "necessary", v, eta, _margin(lr, eta), se,
                                         ci, m.method))  # fmt: skip
        return tuple(rows)

    def report(self, lr: float, *, bounds: bool = True) -> SampledStabilityReport:
        """The sampled verdict at ``lr``: η̂* and its interval, ρ̂(lr), verdict, bounds.

        The verdict is ``"stable"`` when the interval of ρ(lr) lies below 1, ``"unstable"``
        when it lies above 1, else ``"undecided at this budget"``; ``verdict_confidence`` is
        the one-sided Student-t confidence that log ρ(lr) has the sign of its estimate.

        Args:
            lr: Learning rate η > 0.
            bounds: Add the GD/trace/Frobenius rows (full-data Lanczos and Hutchinson;
                :meth:`bounds`).

        Returns:
            :class:`SampledStabilityReport`.
        """
        lr = check_lr(lr)
        est = self.eta_star()
        g = self.growth(lr)
        df = self.config.replicas - 1
        level = 0.5 + 0.5 * self.config.confidence
        if g.stderr > 0:
            conf = float(special.stdtr(df, abs(g.log_growth) / g.stderr))
        else:
            conf = 1.0
        if self._frozen:
            verdict, conf = "stable", 1.0
        elif g.ci[1] < 1.0:
            verdict = "stable"
        elif g.ci[0] > 1.0:
            verdict = "unstable"
        else:
            verdict = VERDICTS[2]
            conf = min(conf, level)
        notes: list[str] = []
        if self._frozen:
            notes.append("every curvature product vanished: nothing moves, η* = inf.")
        if not est.bracketed:
            notes.append("η* was not bracketed: an interval end is 0 or inf.")
        w = self.config.target_width
        half = 0.5 * (est.ci[1] - est.ci[0])
        if w is not None and est.eta_star > 0 and half > w * est.eta_star:
            notes.append(
                f"the η* interval (±{100 * half / est.eta_star:.3g}%) is wider than the target "
                f"±{100 * w:g}% after {est.replicas} replicas (max_replicas = "
                f"{self.config.max_replicas}): the budget is spent; raise max_replicas or "
                "particles for a narrower interval."
            )
        inside = est.ci[0] <= lr <= est.ci[1]
        if inside and g.stderr > 0 and abs(g.drift) > 3 * max(g.drift_stderr, 1e-300):
            notes.append(
                f"the log-growth at lr still drifts between the halves of the window "
                f"({g.drift:+.3g} ± {g.drift_stderr:.2g}) and lr lies inside the η* interval; "
                "raise burn_in and steps for a decided verdict."
            )
        mem = self.memory
        if mem.particles < mem.particles_requested or mem.replicas_capped:
            notes.append(
                f"the memory budget ({_gib(mem.budget)}) reduced the population: "
                f"{mem.particles} of {mem.particles_requested} particles per replica"
                + (
                    f", {mem.replicas_capped} second-stage replicas refused"
                    if mem.replicas_capped
                    else ""
                )
                + "; raise SampledConfig.memory_budget for a smaller bias and interval."
            )
        if self.products.engine == "loop" and self.products.note:
            notes.append(f"batch products not vectorised ({self.products.note}).")
        sgd = SampledBound(
            "sgd_sampled", "ρ̂(η) ≤ 1 (sampled mean square)", "estimate", g.growth,
            est.eta_star, _margin(lr, est.eta_star), None, est.ci, "sampled",
        )  # fmt: skip
        rows = (*self.bounds(lr), sgd) if bounds else (sgd,)
        return SampledStabilityReport(
            lr=lr,
            eta_star=est.eta_star,
            eta_star_ci=est.ci,
            growth=g.growth,
            growth_ci=g.ci,
            verdict=verdict,
            verdict_confidence=conf,
            confidence=self.config.confidence,
            sampling=self.sampling,
            momentum=self.momentum,
            nesterov=self.nesterov,
            curvature=self.curvature,
            parameters=self.parameters,
            n=self.n,
            outputs=self.problem.outputs_per_sample,
            num_products=self.num_products,
            num_batches=self.products.num_batches,
            wall_time=self.wall_time,
            rows=rows,
            sharpness=self._sharpness if bounds else None,
            estimate=est,
            growth_estimate=g,
            engine="full" if self.sampling.is_full_batch else self.products.engine,
            particles=self.particles,
            config=self.config,
            notes=tuple(notes),
            memory=self.memory,
        )
