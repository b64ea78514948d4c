"""Shared fixtures: the case registry and determinism settings."""

from __future__ import annotations

import pytest
import torch

from cases import CASE_IDS, CASES, HALF_MSE_CASES, Case, Problem

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.slow`` tests unless the ``-m`` expression mentions ``slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow test; run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request: pytest.FixtureRequest) -> Problem:
    """A freshly built float64 problem from the registry."""
    c: Case = request.param
    return c.build()


@pytest.fixture(params=HALF_MSE_CASES, ids=[c.id for c in HALF_MSE_CASES])
def mse_case(request: pytest.FixtureRequest) -> Problem:
    """A freshly built ½-MSE problem from the registry."""
    c: Case = request.param
    return c.build()


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(1234)
