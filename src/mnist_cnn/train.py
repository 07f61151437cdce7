"""The training entry point: compose the parts from config, fit, test, record."""

import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.allocator import reuse_freed_memory
from mnist_cnn.checkpoint_io import DiskFullError
from mnist_cnn.classifier import Classifier
from mnist_cnn.console import quiet_library_notices
from mnist_cnn.distributed import end_distributed
from mnist_cnn.evaluate import METRICS_FILE, test_results, write_metrics
from mnist_cnn.experiment_trackers import (
    RecordTrackerRuns,
    build_loggers,
    close_trackers,
    publish_files,
    record_hyperparameters,
)
from mnist_cnn.job_lock import job_running
from mnist_cnn.mnist_files import MNISTFilesError
from mnist_cnn.randomness import SeedEachTrainingBatch
from mnist_cnn.resume import (
    SNAPSHOT,
    ResumeError,
    check_weights_fit,
    checkpoint_to_resume,
    completed_run_metrics,
    discard_event_files,
    nothing_to_resume,
    read_training_state,
    resumed_config,
)
from mnist_cnn.schema import ConfigError, check_config
from mnist_cnn.stopping import TrainingDiverged, last_checkpoint_path
from mnist_cnn.sweep_folders import check_same_job
from mnist_cnn.trial_pruning import TrialPruned, TrialTakenOver

log = logging.getLogger(__name__)

# Failures whose message says all a user needs; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, ResumeError, MNISTFilesError, TrainingDiverged, DiskFullError, TrialTakenOver)
# What a tracker that keeps files receives besides its metrics and metrics.json: the run's settings.
RESOLVED_CONFIG = "run_config.yaml"
# What metrics.json says of a fit that one of these ended; a sweep lists the job as not completed.
STOPPED_STATUS = {SIGTERMException: "interrupted", TrainingDiverged: "diverged", DiskFullError: "failed"}


def plain(config: DictConfig) -> dict[str, Any]:
    """A resolved copy of a config node as plain Python containers."""
    return OmegaConf.to_container(config, resolve=True) or {}


def torch_threads(requested: int | None, launcher: DictConfig, trainer: L.Trainer) -> int:
    """Torch's thread count for this process: as requested, else the usable CPUs shared among the
    processes that compute side by side on this machine (the launcher's parallel jobs, times each
    job's DDP ranks when they run on the CPU), so that they don't oversubscribe it."""
    if requested is not None:
        return requested
    return max(1, usable_cpus() // (parallel_jobs(launcher) * cpu_ranks(trainer)))


def parallel_jobs(launcher: DictConfig) -> int:
    """The jobs the launcher runs side by side: joblib's `n_jobs`; other launchers run one at a time."""
    if "n_jobs" not in launcher:  # only the joblib launcher runs several jobs on this machine
        return 1
    from joblib import effective_n_jobs  # installed with the launcher

    return effective_n_jobs(launcher.n_jobs)


def cpu_ranks(trainer: L.Trainer) -> int:
    """The processes of one job that share this process's CPUs: its DDP ranks on the CPU, unless
    SLURM started them as tasks with CPUs of their own; else one."""
    own_cpus = isinstance(getattr(trainer.strategy, "cluster_environment", None), SLURMEnvironment)
    return trainer.num_devices if isinstance(trainer.accelerator, CPUAccelerator) and not own_cpus else 1


def usable_cpus() -> int:
    """The CPUs this process may run on (SLURM's allotment to its task, taskset), not the machine's."""
    if "SLURM_CPUS_PER_TASK" in os.environ:  # also where SLURM does not pin tasks to their CPUs
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint the fit saved; None, said in one line, when there is none and the
    final weights are tested instead."""
    checkpointing = trainer.checkpoint_callback
    if checkpointing is not None and checkpointing.best_model_path:
        return checkpointing.best_model_path
    if trainer.fast_dev_run:
        reason = "trainer.fast_dev_run saves no checkpoint"
    elif checkpointing is None:
        reason = "checkpointing is off (trainer.enable_checkpointing=false)"
    else:
        reason = ("training ended before any validation pass (trainer.max_steps, check_val_every_n_epoch "
                  "or limit_val_batches), so no best checkpoint exists")
    log.warning("%s: testing the final weights", reason)
    return None


def validation_metrics(trainer: L.Trainer) -> dict[str, float]:
    """{"val/acc_best": ...}, or {} before any validation pass."""
    val_acc_best = trainer.callback_metrics.get("val/acc_best")
    return {} if val_acc_best is None else {"val/acc_best": float(val_acc_best)}


def early_stopping_metrics(trainer: L.Trainer) -> dict[str, Any]:
    """Whether early stopping (`callbacks=early_stopping`) ended the fit, and after which epoch,
    counted from 1 as `epochs` counts them (null when the fit ran its course)."""
    early_stopping = trainer.early_stopping_callback
    stopped = early_stopping is not None and early_stopping.stopping_reason != EarlyStoppingReason.NOT_STOPPED
    return {"stopped_early": stopped, "stopped_epoch": early_stopping.stopped_epoch + 1 if stopped else None}


def fit_and_test(trainer: L.Trainer, classifier: Classifier, datamodule: L.LightningDataModule,
                 run_dir: Path, resume_from: Path | None) -> dict[str, Any]:
    """Fit (continuing from `resume_from` if given), test the best checkpoint, write metrics.json."""
    started = time.perf_counter()
    try:
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except tuple(STOPPED_STATUS) as stop:
        interrupted = isinstance(stop, SIGTERMException)
        if trainer.is_global_zero:
            # On a full disk the record may not fit either: the stop's own message names the last
            # complete checkpoint, and stays the one line the run ends with.
            with suppress(OSError):
                write_metrics(run_dir, {"status": STOPPED_STATUS[type(stop)],
                                        "epochs": trainer.current_epoch, "steps": trainer.global_step,
                                        "wall_time_s": round(time.perf_counter() - started, 1)})
        if not interrupted:
            raise
        print(f"Stopped at step {trainer.global_step}; saved {last_checkpoint_path(trainer)}.\n"
              f"Resume with: python train.py ckpt_path={last_checkpoint_path(trainer)}  (or resume=latest)",
              file=sys.stderr)
        raise SystemExit(1) from None
    except TrialPruned as pruned:  # the search's pruner stopped it: recorded, not tested
        metrics = {**validation_metrics(trainer), "epochs": trainer.current_epoch, "steps": trainer.global_step,
                   "wall_time_s": round(time.perf_counter() - started, 1), "status": "pruned"}
        if trainer.is_global_zero:
            write_metrics(run_dir, metrics)
            print(f"{pruned}\nrun folder: {run_dir}")
        return metrics

    # Read before testing: the test pass restores the callbacks' state as best.ckpt saved it.
    validation, stopping = validation_metrics(trainer), early_stopping_metrics(trainer)
    epochs = trainer.current_epoch
    trainer.test(classifier, datamodule=datamodule, ckpt_path=best_checkpoint(trainer), weights_only=True)
    metrics = {
        **test_results(trainer, classifier),
        **validation,
        "epochs": epochs,
        **stopping,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "status": "completed",
    }
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        best_validation = f"best validation accuracy {validation['val/acc_best']:.2%}, " if validation else ""
        stopped_early = " (stopped early)" if stopping["stopped_early"] else ""
        print(
            f"test accuracy {metrics['test/acc']:.2%}, test loss {metrics['test/loss']:.4f}, "
            f"{best_validation}{epochs} epochs{stopped_early} in {metrics['wall_time_s']} s\n"
            f"run folder: {run_dir}"
        )
    return metrics


def callbacks(cfg: DictConfig, loggers: Sequence[Logger]) -> list[L.Callback]:
    """The configured callbacks (none with `~callbacks`), less those the run's settings rule out:
    Lightning refuses a learning-rate monitor without a logger, and a checkpoint callback
    with trainer.enable_checkpointing=false."""
    built = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()]
    ruled_out = () if loggers else (LearningRateMonitor,)
    if cfg.trainer.get("enable_checkpointing") is False:
        ruled_out += (ModelCheckpoint,)
    return [callback for callback in built if not isinstance(callback, ruled_out)]


def build(cfg: DictConfig, checkpoint: dict | None = None, extra_callbacks: Sequence[L.Callback] = ()
          ) -> tuple[L.LightningDataModule, Classifier, L.Trainer]:
    """The datamodule, classifier and trainer (with its loggers and callbacks) that `cfg` describes;
    a run resumed from `checkpoint` continues its tracker runs."""
    datamodule = instantiate(cfg.data)
    classifier = Classifier(plain(cfg.model), plain(cfg.optimizer), plain(cfg.scheduler) or None,
                            class_names=list(datamodule.class_names), preprocessing=datamodule.preprocessing)
    loggers = build_loggers(cfg.get("logger"), checkpoint)
    # Not configurable callbacks: an exact resume, in the same tracker runs, is a property of every
    # run, not an option.
    continuity = [SeedEachTrainingBatch(cfg.seed), RecordTrackerRuns()]
    trainer = instantiate(cfg.trainer, logger=loggers or False,  # False: Lightning would add a default one
                          callbacks=[*continuity, *callbacks(cfg, loggers), *extra_callbacks])
    return datamodule, classifier, trainer


def train(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None, checkpoint: dict | None = None
          ) -> dict[str, Any]:
    """Build data, model, loggers and trainer from the config, then fit (continuing from `resume_from`,
    whose contents are `checkpoint`) and test; returns the metrics."""
    if cfg.reuse_freed_memory and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: it needs glibc's malloc (Linux)")
    L.seed_everything(cfg.seed, workers=True)
    datamodule, classifier, trainer = build(cfg, checkpoint)
    # After the trainer is built: its accelerator and devices say how many ranks share the CPUs.
    torch.set_num_threads(torch_threads(cfg.threads, HydraConfig.get().launcher, trainer))
    log.info("torch uses %d threads", torch.get_num_threads())
    if trainer.is_global_zero and not resume_from:
        record_hyperparameters(trainer.loggers, cfg)

    try:
        metrics = fit_and_test(trainer, classifier, datamodule, run_dir, resume_from)
        if trainer.is_global_zero:
            publish_files(trainer.loggers, {METRICS_FILE: (run_dir / METRICS_FILE).read_text(),
                                            RESOLVED_CONFIG: OmegaConf.to_yaml(cfg, resolve=True)})
    except BaseException:
        end_distributed(trainer, failed=True)
        raise
    finally:
        close_trackers(trainer.loggers)
    end_distributed(trainer)
    return metrics


def run(cfg: DictConfig) -> float | None:
    quiet_library_notices()
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    # A sweep job: another worker summarising a shared sweep folder sees it running, not failed.
    with job_running(run_dir) if hydra_config.mode == RunMode.MULTIRUN else nullcontext():
        try:
            # A folder that held a config snapshot before this process started is an earlier
            # run's (resumed, or requeued by a cluster): continue with that run's config.
            continues_earlier_run = hydra_config.output_subdir not in (None, SNAPSHOT)
            if continues_earlier_run and hydra_config.mode == RunMode.MULTIRUN:
                check_same_job(run_dir, list(hydra_config.overrides.task))
            if metrics := completed_run_metrics(run_dir):  # a requeued job that had finished
                log.info("%s", nothing_to_resume(run_dir, metrics))
                return metrics.get("val/acc_best")
            resume_from = checkpoint_to_resume(cfg, run_dir)
            if resume_from or continues_earlier_run:
                cfg = resumed_config(run_dir, list(hydra_config.overrides.task))
            if continues_earlier_run and not resume_from:
                discard_event_files(run_dir)
            check_config(cfg)
            training_state = None
            if resume_from:
                training_state = read_training_state(resume_from)
                check_weights_fit(training_state, instantiate(cfg.model))
            # A sweeper (e.g. Optuna) maximises what the app returns: select by validation.
            return train(cfg, run_dir, resume_from, training_state).get("val/acc_best")
        except Exception as error:
            if hydra_config.mode == RunMode.MULTIRUN:
                # Hydra 1.3's sweepers stop the whole sweep at the first job that raised, and skip
                # its summary; instead the job is logged here, the summary lists it, and the sweep
                # exits non-zero once every job has run (SweepSummary).
                if isinstance(error, TrainingDiverged):  # a result (metrics.json says diverged), not a failure
                    log.warning("%s", error)
                elif isinstance(error, USER_ERRORS):  # the message says it all
                    log.error("job failed: %s", error)
                else:
                    log.exception("job failed; the sweep goes on")
                return None  # Optuna records the trial as failed
            if isinstance(error, USER_ERRORS) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                log.error("%s", error)  # the message says it all; HYDRA_FULL_ERROR=1 shows the trace
                raise SystemExit(1) from None
            raise
