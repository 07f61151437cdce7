"""The sweeper's settings, registered as `hydra/sweeper: mnist_optuna` (Hydra imports every
module of a `hydra_plugins` package at start-up, so the ConfigStore entry exists before composing)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_optuna_sweeper.sweeper.OptunaSweeper"
    # Sampler, pruner and storage are built when the sweep starts, once its folder exists.
    _recursive_: bool = False
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})
    direction: str = "maximize"
    objective: str = "val/acc_best"  # the key of the job's returned metrics that Optuna optimises
    # A SQLAlchemy URL, or a `_target_` node that builds an Optuna storage (journal file).
    storage: Any = None
    study_name: str = "study"
    n_trials: int = 20  # the size of the study: a rerun runs only the trials still missing
    n_jobs: int = 1  # trials launched at once
    heartbeat_interval_s: int = 60  # how often a running trial says it is alive
    grace_period_s: int = 180  # a running trial silent for longer belongs to a dead search
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="mnist_optuna", node=OptunaSweeperConf,
                             provider="mnist_cnn")
