"""The launcher class Hydra finds. Hydra imports every module of `hydra_plugins` at start-up,
also where the cluster extra is not installed, but skips modules whose names start with `_`:
the launcher itself (`_submit.py`, which imports submitit) loads only when a sweep starts."""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SlurmLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        from ._submit import ClusterSlurmLauncher

        self.launcher = ClusterSlurmLauncher(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.launcher.launch(job_overrides, initial_job_idx)
