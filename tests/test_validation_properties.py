"""Property-based tests of input validation at the public entry points (hypothesis).

Over random bad inputs every entry point must raise a ``TypeError`` or ``ValueError`` (the
classes of ``dynstab.errors`` subclass these) whose message names the offending argument — never
a raw error from deep inside torch (IndexError, RuntimeError, LinAlgError), and never a silent
result. Good inputs drawn from the same strategies must be accepted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dynstab
from dynstab.criteria import eta_star, frobenius_bound, gd_bound, trace_bound
from dynstab.sampling import Sampling

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Values that are not usable as a learning rate.
bad_lrs = st.one_of(
    st.just(True),
    st.just(False),
    st.just("0.1"),
    st.just(None),
    st.just([0.1]),
    st.floats(max_value=0.0),
    st.just(math.inf),
    st.just(math.nan),
    st.complex_numbers(min_magnitude=1e-3, max_magnitude=1.0).filter(lambda z: z.imag != 0),
)

#: Values that are not usable as a batch size (``None`` is valid: it means full-batch GD).
bad_batch_sizes = st.one_of(
    st.just(True),
    st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just("4"),
    st.just([2]),
)


def _psd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(n, n + 2, generator=g, dtype=torch.float64)
    return J @ J.T / n


def _names_argument(message: str, *names: str) -> bool:
    return any(name in message for name in names)


@SETTINGS
@given(lr=bad_lrs)
def test_bad_learning_rates_are_refused_by_stability(lr):
    K = _psd(6, 0)
    with pytest.raises((TypeError, ValueError)) as info:
        dynstab.check_stability(K, lr=lr, batch_size=2)
    assert _names_argument(str(info.value), "lr")


@SETTINGS
@given(B=bad_batch_sizes)
def test_bad_batch_sizes_are_refused_everywhere(B):
    K = _psd(6, 1)
    for call in (
        lambda: trace_bound(K, B),
        lambda: eta_star(K, B),
        lambda: Sampling(6, B),
        lambda: dynstab.check_stability(K, lr=0.1, batch_size=B),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert _names_argument(str(info.value), "batch_size")


@SETTINGS
@given(
    n=st.integers(2, 7),
    seed=st.integers(0, 10_000),
    defect=st.sampled_from(["nan", "inf", "asymmetric", "negative", "nonsquare", "vector"]),
)
def test_defective_gram_matrices_are_refused_by_every_bound(n, seed, defect):
    K = _psd(n, seed)
    if defect == "nan":
        K[0, 0] = math.nan
    elif defect == "inf":
        K[0, 1] = K[1, 0] = math.inf
    elif defect == "asymmetric":
        K[0, 1] += 1.0 + float(K.abs().max())
    elif defect == "negative":
        K = K - 2.0 * float(torch.linalg.eigvalsh(K)[-1]) * torch.eye(n, dtype=torch.float64)
    elif defect == "nonsquare":
        K = K[:, :-1]
    else:
        K = K[0]
    bounds = (gd_bound, lambda M: trace_bound(M, 1), lambda M: frobenius_bound(M, 1))
    for fn in (*bounds, lambda M: eta_star(M, 1)):
        with pytest.raises((TypeError, ValueError)) as info:
            fn(K)
        assert "K" in str(info.value) or "Gram" in str(info.value)


@SETTINGS
@given(
    n=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    B=st.integers(1, 6),
    scheme=st.sampled_from(["with", "without"]),
)
def test_valid_gram_matrices_give_finite_consistent_thresholds(n, seed, B, scheme):
    assume(scheme == "with" or n >= B)
    K = _psd(n, seed)
    eta = eta_star(K, B, scheme).eta_star
    assert math.isfinite(eta)
    assert eta > 0
    # η* never exceeds a necessary bound (Wu & Su 2023; Mulayoff & Michaeli 2024)
    assert eta <= trace_bound(K, B, scheme) * (1 + 1e-9)
    assert eta <= gd_bound(K) * (1 + 1e-9)


@SETTINGS
@given(
    residuals=st.one_of(
        st.just([0.0, 1.0, 2.0]),
        st.just("residuals"),
        st.just(np.array([math.nan, 0.0, 0.0])),
        st.just(torch.tensor([0.0, math.inf, 0.0], dtype=torch.float64)),
        st.just(np.array([1 + 1j, 0, 0])),
    )
)
def test_bad_residuals_are_refused(residuals):
    K = _psd(3, 2)
    with pytest.raises((TypeError, ValueError)) as info:
        dynstab.check_stability(K, residuals, lr=0.1, batch_size=1)
    assert "residual" in str(info.value)


@SETTINGS
@given(
    generator=st.one_of(
        st.just(0),
        st.just("seed"),
        st.just(np.random.default_rng(0)),
        st.just(torch.Generator().manual_seed(0).get_state()),
    )
)
def test_non_generators_are_refused_by_sharpness(generator):
    model = torch.nn.Linear(3, 1).double()
    X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError) as info:
        dynstab.sharpness(model, dynstab.half_mse, (X, model(X).detach()), generator=generator)
    assert "generator" in str(info.value)


@SETTINGS
@given(
    bad=st.sampled_from(["nan_input", "inf_target", "label_range", "label_float", "empty"]),
    seed=st.integers(0, 1000),
)
def test_bad_data_give_clear_errors_not_raw_torch_errors(bad, seed):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(4, 3).double()
    X = torch.randn(6, 4, dtype=torch.float64, generator=g)
    loss = dynstab.half_mse
    y: torch.Tensor = model(X).detach()
    if bad == "nan_input":
        X[int(torch.randint(6, (1,), generator=g))] = math.nan
    elif bad == "inf_target":
        y[0, 0] = math.inf
    elif bad == "label_range":
        loss = dynstab.cross_entropy
        y = torch.randint(0, 3, (6,), generator=g, dtype=torch.int16)
        y[int(torch.randint(6, (1,), generator=g))] = 3 + int(torch.randint(5, (1,), generator=g))
    elif bad == "label_float":
        loss = dynstab.cross_entropy
        y = torch.full((6, 5), 0.2, dtype=torch.float64)  # 5 "classes" for a 3-output model
    else:
        X, y = X[:0], y[:0]
    with pytest.raises((TypeError, ValueError)):
        dynstab.sharpness(model, loss, (X, y), "trace")
