"""Data-parallel training that also works inside Hydra sweeps.

Lightning's DDP launcher starts ranks 1..N-1 by running the script again with the
parent's command line. Inside `python train.py -m ...` that command line is the whole
sweep, so every child would start a sweep of its own (Lightning PR #18175, Hydra issue
#2070). This launcher starts each child as a single run of the current job instead: the
job's own overrides, written into the job's folder. Under SLURM (or torchrun) the cluster
starts the ranks and no launcher runs at all.
"""

import os
import subprocess
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import (
    _SubprocessScriptLauncher,
)

import __main__

# What a launcher tells its processes about their place in the group.
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# How a rank other than 0 runs its job's Hydra job, started by this launcher or by SLURM: rank 0
# writes the config snapshot and the log file (a second snapshot would look like a requeued run's).
LATER_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def job_command(local_rank: int) -> list[str]:
    """This Hydra job as a single run: the same script, config and overrides, in the same folder.

    The child writes no config snapshot and no log file (only rank 0 writes files). Its mode
    is RUN whatever the config says: a preset that sets hydra.mode=MULTIRUN in its YAML
    would otherwise make each child start a sweep of its own.
    """
    hydra = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command.append(f"--config-name={hydra.job.config_name}")
    command += [f"--config-dir={source.path}" for source in hydra.runtime.config_sources
                if source.provider == "command-line"]
    return command + list(hydra.overrides.task) + [
        "hydra.mode=RUN",
        f'hydra.run.dir="{hydra.runtime.output_dir}"',
        *LATER_RANK_OVERRIDES,
        f"hydra.job.name={hydra.job.name}_rank{local_rank}",
    ]


class HydraJobLauncher(_SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        if not HydraConfig.initialized():
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        # The same variables Lightning's launcher sets; LOCAL_RANK in this process also
        # tells Lightning that a second trainer call (test after fit) must not launch again.
        environment = self.cluster_environment
        os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port),
                          NODE_RANK=str(environment.node_rank()), LOCAL_RANK=str(environment.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_environment = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(job_command(local_rank), env=child_environment,
                                               cwd=HydraConfig.get().runtime.cwd))


class HydraDDPStrategy(DDPStrategy):
    """DDP (NCCL on GPUs, gloo on CPUs) whose processes are started per Hydra job."""

    def _configure_launcher(self) -> None:
        self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def end_distributed(trainer: Trainer, failed: bool = False) -> None:
    """Leave this process as it was before the job: the next job of a sweep that runs in the
    same process must launch its own ranks and process group, not join the old ones.

    After a failure of this rank (a full disk: only rank 0 writes checkpoints) the ranks it
    started may be waiting for it in a collective that never comes: they are stopped, not
    awaited. They write no files, so nothing of theirs is lost.
    """
    for child in getattr(trainer.strategy.launcher, "procs", []):
        if failed:
            child.kill()
        child.wait()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if trainer.world_size > 1:
        for name in RANK_VARIABLES:
            os.environ.pop(name, None)
