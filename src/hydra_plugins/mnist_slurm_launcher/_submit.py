"""hydra-submitit's SLURM launcher, for clusters as they come:
- a job that ends without a result (scancel, a node lost, killed for memory) is a job of the
  sweep that failed, which its folder and the sweep's summary report, not a crash of the sweep;
- on a cluster without accounting, where `sacct` fails, job states come from `squeue`;
- a job array sbatch refuses (a partition that does not exist, more CPUs than a node has)
  stops the sweep with one line saying why;
- under DDP, the tasks of ranks 1 and up run their job as `HydraDDPStrategy`'s ranks do."""

import io
import logging
import subprocess
from collections.abc import Sequence
from contextlib import redirect_stderr, suppress
from pathlib import Path
from typing import Any

import submitit
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher

from mnist_cnn.console import exit_with
from mnist_cnn.distributed import LATER_RANK_OVERRIDES

log = logging.getLogger(__name__)

# How often, at most, a job's state is asked for: well within the time slurmctld keeps an
# ended job in squeue (MinJobAge, 300 s unless a cluster sets it lower).
STATE_POLL_S = 60


class SqueueInfoWatcher(SlurmInfoWatcher):
    """Job states from slurmctld's queue (`squeue`), as submitit reads them from `sacct`."""

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--me", "--states=all", "--noheader", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        return super().read_info("JobID|State|NodeList\n" + text)


def accounting_works() -> bool:
    return subprocess.run(["sacct", "--noheader", "--jobs=0"], capture_output=True, check=False).returncode == 0


def watch_through_squeue(jobs: list[submitit.Job]) -> None:
    watcher = SqueueInfoWatcher(delay_s=STATE_POLL_S)
    for job in jobs:
        # A job of several tasks (DDP) waits on a Job per task, each asking its own watcher.
        for task in [job, *(job.task(k) for k in range(job.num_tasks))]:
            task.watcher = watcher
        watcher.register_job(job.job_id)


class ClusterSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for number, overrides in zip(numbers, job_overrides):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        jobs = self.submit(job_overrides, numbers)
        if not accounting_works():
            log.info("sacct fails (SLURM accounting is off?): job states come from squeue")
            watch_through_squeue(jobs)
        return [self.result(job, number, overrides) for job, number, overrides in zip(jobs, numbers, job_overrides)]

    def submit(self, job_overrides: Sequence[Sequence[str]], numbers: range) -> list[submitit.Job]:
        """The sweep's jobs, submitted as one job array; one line and exit 1 when sbatch refuses it."""
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the others take submitit's `slurm_` prefix
        executor.update_parameters(**{key if key in shared else f"slurm_{key}": value
                                      for key, value in self.params.items()
                                      if key not in ("submitit_folder", "max_num_timeout")})
        try:  # submitit prints sbatch's refusal as it raises it: exit_with says it once
            with redirect_stderr(io.StringIO()):
                return executor.map_array(self, [list(overrides) for overrides in job_overrides],
                                          ["hydra.sweep.dir"] * len(job_overrides), list(numbers),
                                          [f"job_id_for_{number}" for number in numbers],
                                          [Singleton.get_state()] * len(job_overrides))
        except FailedJobError as refused:  # nothing was submitted: what submitit wrote for it goes too
            pending = Path(self.params["submitit_folder"]).parent
            for leftover in [*pending.glob("*.pkl"), *pending.glob(".submission_file_*")]:
                leftover.unlink()
            with suppress(OSError):
                pending.rmdir()  # unless earlier batches' jobs are in it
            reason = "; ".join(line.removeprefix("sbatch: error: ") for line in str(refused).strip().splitlines())
            exit_with(f"sbatch refused the sweep's jobs: {reason} (hydra.launcher's partition, account, "
                      "gpus_per_node, cpus_per_task and mem_gb must fit the cluster: `sinfo` lists its partitions)")

    def __call__(self, sweep_overrides: list[str], *job: Any) -> JobReturn:
        """One SLURM task of a sweep job. Under `trainer=ddp` SLURM starts a task per rank, and each
        runs the Hydra job: those of rank 1 and up write no snapshot and no log file."""
        if submitit.JobEnvironment().global_rank > 0:
            sweep_overrides = [*sweep_overrides, *LATER_RANK_OVERRIDES]
        return super().__call__(sweep_overrides, *job)

    @staticmethod
    def result(job: submitit.Job, number: int, overrides: Sequence[str]) -> JobReturn:
        try:
            return job.results()[0]
        except UncompletedJobError:
            log.error("job %d (SLURM job %s) ended as %s without returning: its train.log and %s say why",
                      number, job.job_id, job.state, job.paths.stderr)
            # As the app's own failed jobs return: the job's folder and the summary say how it ended.
            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
