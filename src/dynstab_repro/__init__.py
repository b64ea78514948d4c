"""Reproductions: configs, registry, resumable runner, executors and reports.

Write a reproduction as an :class:`Experiment` subclass (see :mod:`dynstab_repro.base`)
with a frozen dataclass config (see :mod:`dynstab_repro.config`), register it with
:func:`register` (and :func:`register_group`) in a module listed in
:data:`dynstab_repro.registry.EXPERIMENT_MODULES`, and run it with
:func:`run_experiment` / :func:`reproduce` or ``dynstab run NAME`` / ``dynstab reproduce GROUP``.
The files written are described in :mod:`dynstab_repro.runner`.
"""

from dynstab_repro.base import (
    UNIT_OUTCOMES,
    Claim,
    ClaimStatus,
    Experiment,
    Measurement,
    RunSpec,
    unit_outcome,
)
from dynstab_repro.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    profile_config,
)
from dynstab_repro.executors import Interrupted
from dynstab_repro.registry import (
    get_experiment,
    list_experiments,
    list_groups,
    register,
    register_group,
    resolve,
    unregister,
    unregister_group,
)
from dynstab_repro.runner import (
    ExperimentResult,
    ReproductionResult,
    render_run_dir,
    reproduce,
    resolve_config,
    run_experiment,
)

__all__ = [
    "UNIT_OUTCOMES",
    # contract
    "Claim",
    "ClaimStatus",
    "Experiment",
    "ExperimentConfig",
    # results
    "ExperimentResult",
    "Interrupted",
    "Measurement",
    "ReproductionResult",
    "RunSpec",
    # configs
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    # registry
    "get_experiment",
    "list_experiments",
    "list_groups",
    "profile_config",
    "register",
    "register_group",
    # running
    "render_run_dir",
    "reproduce",
    "resolve",
    "resolve_config",
    "run_experiment",
    "unit_outcome",
    "unregister",
    "unregister_group",
]
