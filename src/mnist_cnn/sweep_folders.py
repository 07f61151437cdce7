"""Sweep folders that already hold jobs: a sweep run again into its folder, a requeued job.

A job folder belongs to one job, named by its overrides. Finding it again (the same sweep
command again into a fixed `hydra.sweep.dir`, or a cluster requeueing the job) finishes that
job; finding another job's run there is refused, since its results are not this job's.
"""

import itertools
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.resume import SNAPSHOT, ResumeError


def check_same_job(job_dir: Path, overrides: list[str]) -> None:
    """A sweep job's folder that holds a run already holds this job's (requeued, or the same sweep
    run again), not another job's: its results are not this job's to return or continue."""
    kept = list(OmegaConf.load(job_dir / SNAPSHOT / "overrides.yaml"))
    if differences := differing(kept, overrides):
        raise ResumeError(f"{job_dir} holds another job's run ({differences[0]}), not this job's "
                          f"({differences[1]}): sweep into a new folder (leave hydra.sweep.dir at its "
                          "default), or move that folder away")


def differing(kept: list[str], now: list[str]) -> tuple[str, str] | None:
    """The overrides in which two jobs differ, as each job wrote them; None for the same job."""
    jobs = [{override.key_or_group: override for override in OverridesParser.create().parse_overrides(lines)}
            for lines in (kept, now)]
    keys = sorted(key for key in jobs[0].keys() | jobs[1].keys()
                  if key not in jobs[0] or key not in jobs[1] or jobs[0][key].value() != jobs[1][key].value())
    if not keys:
        return None
    kept_lines, now_lines = (" ".join(job[key].input_line for key in keys if key in job) or "nothing" for job in jobs)
    return kept_lines, now_lines


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_sweep_folder(config: DictConfig) -> None:
    """A sweep run again into the folder of an earlier one (a fixed `hydra.sweep.dir`) finishes
    that sweep: each job folder it finds there must hold the job this sweep runs in it. Checked
    before any job starts, for Hydra's own sweeper, whose jobs are known in advance (each job
    checks its own folder too: `check_same_job`)."""
    sweep_dir = Path(config.hydra.sweep.dir)
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if config.hydra.sweeper._target_ != BASIC_SWEEPER or subdir != "${hydra.job.num}" or not sweep_dir.is_dir():
        return
    lines = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides(lines + list(config.hydra.overrides.task))
    for number, job in enumerate(itertools.chain.from_iterable(BasicSweeper.split_arguments(overrides, None))):
        kept_file = sweep_dir / str(number) / SNAPSHOT / "overrides.yaml"
        kept = list(OmegaConf.load(kept_file)) if kept_file.is_file() else job
        if differences := differing(kept, job):
            raise ResumeError(f"hydra.sweep.dir={sweep_dir} holds an earlier sweep whose job {number} ran "
                              f"{differences[0]}, where this sweep runs {differences[1]}: sweep into a new folder "
                              "(leave hydra.sweep.dir at its default), or run the earlier sweep's command to finish it")
