"""A Hydra sweeper on Optuna's ask-and-tell interface: asks the study for trials, launches each
batch through the configured `hydra/launcher`, and tells the study what each job's metrics.json
says. Everything lives in the study's storage, so a rerun of the same command, or a second
worker on the same storage, picks up where the study stands."""

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from mnist_cnn.config import SWEEP_CONFIG
from mnist_cnn.console import exit_with

from ._liveness import SilenceWatch, heartbeat
from ._search_space import search_space
from ._storage import open_storage

log = logging.getLogger(__name__)

# The override that tells a job which trial it is; the job's pruning callback reads it.
TRIAL_KEY = "optuna_trial"
# A job stopped early for hopelessness (by the pruner, or by divergence) is a pruned trial for Optuna.
STOPPED_EARLY = ("pruned", "diverged")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def tell(study: optuna.Study, trial: optuna.Trial, job: JobReturn, objective: str) -> str:
    """Record the job's outcome from its metrics.json; returns its status. A trial another worker
    has meanwhile recorded failed (this search stalled past the grace period) keeps that record."""
    metrics_file = Path(job.hydra_cfg.hydra.runtime.output_dir) / "metrics.json" if job.hydra_cfg else None
    metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.exists() else {}
    status = metrics.get("status", "failed")
    try:
        record(study, trial, metrics, status, objective)
    except (UpdateFinishedTrialError, ValueError):  # what Optuna raises for a finished trial
        if state_of(study, trial.number) != TrialState.FAIL:
            raise
        log.warning("trial %d: another worker recorded it failed while this search was silent; "
                    "its outcome here (%s) is not recorded", trial.number, status)
    return status


def record(study: optuna.Study, trial: optuna.Trial, metrics: dict, status: str, objective: str) -> None:
    trial.set_user_attr("status", status)
    if "epochs" in metrics:
        trial.set_user_attr("epochs", metrics["epochs"])
    if status in STOPPED_EARLY:
        study.tell(trial, state=TrialState.PRUNED)
    elif status == "completed" and objective in metrics:
        study.tell(trial, float(metrics[objective]))
    else:
        study.tell(trial, state=TrialState.FAIL)


def state_of(study: optuna.Study, number: int) -> TrialState:
    return next(trial.state for trial in study.get_trials(deepcopy=False) if trial.number == number)


class OptunaSearch(Sweeper):
    """Runs the trials still missing from the study's n_trials, counting those running elsewhere.
    When those running elsewhere take every remaining place, the search watches their heartbeats:
    a trial whose heartbeat stays still for grace_period_s (its search died) is recorded failed
    and replaced; once each of the others has beaten, the search writes the results and ends,
    rather than hold its machine idle, and the live workers write them again when they finish."""

    def __init__(self, sampler: Any, pruner: Any, direction: str, objective: str, storage: Any,
                 study_name: str, n_trials: int, n_jobs: int, heartbeat_interval_s: int,
                 grace_period_s: int, params: dict[str, str]) -> None:
        if heartbeat_interval_s >= grace_period_s:
            exit_with(f"hydra.sweeper.grace_period_s={grace_period_s} must exceed "
                      f"heartbeat_interval_s={heartbeat_interval_s}, or live trials count as dead")
        self.sampler, self.pruner, self.direction, self.objective = sampler, pruner, direction, objective
        self.storage, self.study_name, self.n_trials = storage, study_name, n_trials
        # joblib's convention: -1 is every core, -2 all but one
        self.n_jobs = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        self.heartbeat_interval_s, self.grace_period_s = heartbeat_interval_s, grace_period_s
        self.params = params

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        try:
            searched, fixed = search_space([f"{key}={value}" for key, value in self.params.items()] + arguments)
        except ValueError as error:
            exit_with(str(error))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # also for a SQLite study kept there
        # As Hydra's own sweeper does: the sweep's config, whose command line names its jobs.
        OmegaConf.save(self.config, self.sweep_dir / SWEEP_CONFIG)
        study = optuna.create_study(storage=open_storage(self.storage), study_name=self.study_name,
                                    sampler=instantiate(self.sampler), pruner=instantiate(self.pruner),
                                    direction=self.direction, load_if_exists=True)
        self.check_trial_folders(study)
        self.run_missing(study, searched, fixed)
        self.write_results(study)

    def check_trial_folders(self, study: optuna.Study) -> None:
        """The sweep folder's trial folders belong to this study. Those of a study whose storage was
        deleted, or of another study kept here, would give their numbers' new trials their results."""
        known = {trial.number for trial in study.get_trials(deepcopy=False)}
        strangers = sorted(int(folder.name) for folder in self.sweep_dir.iterdir()
                           if folder.name.isdigit() and (folder / ".hydra").is_dir() and int(folder.name) not in known)
        if strangers:
            exit_with(f"{self.sweep_dir} holds trial folders {strangers} that study {self.study_name} does "
                      "not know (its storage was deleted or replaced?): move them away, or give this study "
                      "another hydra.sweeper.study_name")

    def run_missing(self, study: optuna.Study, searched: dict, fixed: dict[str, str]) -> None:
        """Run trials until the study has its n_trials, or this session's own failures used its share."""
        watch = SilenceWatch(self.grace_period_s)
        watch.fail_silent(study)  # a first look: the next ones tell a silent trial
        to_launch = self.missing(study)  # failures in this session are replaced by the next one
        log.info("study %s: %d of %d trials to run", self.study_name, max(to_launch, 0), self.n_trials)
        job_idx, waiting_for = 0, []
        while True:
            to_launch += len(watch.fail_silent(study))  # a dead search's trials: replaced, not ours to count
            if (batch_size := min(self.n_jobs, to_launch, self.missing(study))) > 0:
                trials = [self.ask(study, searched) for _ in range(batch_size)]
                trials = [trial for trial in trials if trial is not None]
                to_launch -= batch_size
                self.run_batch(study, trials, fixed, job_idx)
                job_idx += len(trials)
            elif self.missing(study) <= 0 and (unproven := watch.unproven()):
                if unproven != waiting_for:  # one line for each set of trials waited for
                    waiting_for = unproven
                    log.info("study %s: trials %s, running elsewhere, take the remaining places: waiting "
                             "for their heartbeat, or %s s of silence to replace them", self.study_name,
                             waiting_for, self.grace_period_s)
                time.sleep(self.heartbeat_interval_s)
            else:
                break
        # Said also when their first beat came before this search had to wait for it.
        if alive := sorted(watch.seen):
            log.info("study %s: trials %s, running elsewhere, are alive: their workers finish them and "
                     "write the results again", self.study_name, alive)

    def run_batch(self, study: optuna.Study, trials: list[optuna.Trial], fixed: dict[str, str],
                  job_idx: int) -> None:
        """Launch the trials' jobs through the configured launcher, then tell the study their outcomes."""
        if not trials:
            return
        overrides = [[*(f"{key}={value}" for key, value in {**trial.params, **fixed}.items()),
                      f"{TRIAL_KEY}={trial.number}"] for trial in trials]
        try:
            with heartbeat(trials, self.heartbeat_interval_s):
                jobs = self.launcher.launch(overrides, initial_job_idx=job_idx)
        except BaseException:  # Ctrl+C or a launcher error: a rerun replaces these trials at once
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        for trial, job in zip(trials, jobs):
            log.info("trial %d: %s", trial.number, tell(study, trial, job, self.objective))

    def missing(self, study: optuna.Study) -> int:
        """Trials still to run for the study to reach n_trials, counting those running elsewhere."""
        return self.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))

    def ask(self, study: optuna.Study, searched: dict) -> optuna.Trial | None:
        """A new trial, or None when workers sharing the storage asked at the same moment and the
        study already has its n_trials without it (that trial is recorded failed, unlaunched)."""
        trial = study.ask(searched)
        earlier = [other for other in study.get_trials(deepcopy=False)
                   if other.number < trial.number and other.state != TrialState.FAIL]
        if len(earlier) < self.n_trials:
            return trial
        trial.set_user_attr("status", "surplus")
        study.tell(trial, state=TrialState.FAIL)
        return None

    def write_results(self, study: optuna.Study) -> None:
        states = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "trials": dict(states)}
        if states["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            log.info("best trial %d: %s = %.4f with %s", best.number, self.objective, best.value, best.params)
        else:
            log.warning("no trial of study %s has completed yet: no best parameters", study.study_name)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
