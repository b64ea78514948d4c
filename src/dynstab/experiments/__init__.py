"""Reproductions: configs, registry, resumable runner, executors and reports.

Write a reproduction as an :class:`Experiment` subclass (see :mod:`dynstab.experiments.base`)
with a frozen dataclass config (see :mod:`dynstab.experiments.config`), register it with
:func:`register` (and :func:`register_group`) in a module listed in
:data:`dynstab.experiments.registry.EXPERIMENT_MODULES`, and run it with
:func:`run_experiment` / :func:`reproduce` or ``dynstab run NAME`` / ``dynstab reproduce GROUP``.
The files written are described in :mod:`dynstab.experiments.runner`.
"""

from dynstab.experiments.base import Claim, Experiment, RunSpec
from dynstab.experiments.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    profile_config,
)
from dynstab.experiments.registry import (
    get_experiment,
    list_experiments,
    list_groups,
    register,
    register_group,
    resolve,
    unregister,
    unregister_group,
)
from dynstab.experiments.runner import (
    ExperimentResult,
    ReproductionResult,
    render_run_dir,
    reproduce,
    resolve_config,
    run_experiment,
)

__all__ = [
    # contract
    "Claim",
    "Experiment",
    "ExperimentConfig",
    # results
    "ExperimentResult",
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
    "unregister",
    "unregister_group",
]
