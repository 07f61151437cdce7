"""The training entry point: compose the parts from config, fit, test, record."""

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mnist_cnn.allocator import reuse_freed_memory
from mnist_cnn.classifier import Classifier
from mnist_cnn.config import CONFIG_DIR, ConfigError, check_config, register_resolvers
from mnist_cnn.distributed import end_distributed
from mnist_cnn.evaluate import test_results, write_metrics
from mnist_cnn.mnist_files import MNISTFilesError
from mnist_cnn.resume import (
    ResumeError,
    checkpoint_to_resume,
    resumed_config,
    steps_done,
)
from mnist_cnn.stopping import TrainingDiverged, last_checkpoint_path
from mnist_cnn.trial_pruning import TrialPruned

log = logging.getLogger(__name__)

# The metrics that sit beside each run's hyperparameters in TensorBoard's HPARAMS tab.
HPARAMS_METRICS = ("val/acc_best", "test/acc", "test/loss")
# Failures whose message says all a user needs; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, ResumeError, MNISTFilesError, TrainingDiverged)


def plain(config: DictConfig) -> dict[str, Any]:
    """A resolved copy of a config node as plain Python containers."""
    return OmegaConf.to_container(config, resolve=True) or {}


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The settings that distinguish one run from another, flat and TensorBoard-ready."""
    flat: dict[str, Any] = {"seed": cfg.seed, "max_epochs": cfg.trainer.max_epochs}
    for group in ("data", "model", "optimizer", "scheduler"):
        for key, value in plain(cfg[group]).items():
            if key == "_target_":
                flat[group] = value.rsplit(".", 1)[-1]
            elif key not in ("data_dir", "md5", "redownload"):
                flat[f"{group}/{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    flat.setdefault("scheduler", "none")
    return flat


def record_hyperparameters(logger: TensorBoardLogger, cfg: DictConfig) -> None:
    # Written directly rather than through logger.log_hyperparams, which would also
    # log a placeholder value for every metric at step 0.
    writer = logger.experiment._get_file_writer()
    for summary in hparams(hyperparameters(cfg), dict.fromkeys(HPARAMS_METRICS, 0.0)):
        writer.add_summary(summary)


def torch_threads(requested: int | None, launcher: DictConfig) -> int:
    """Torch's thread count for this job: as requested, else the cores shared among the jobs
    the launcher runs side by side (joblib's `n_jobs`), so parallel jobs don't oversubscribe."""
    if requested is not None:
        return requested
    parallel_jobs = 1
    if "n_jobs" in launcher:  # only the joblib launcher runs several jobs on this machine
        from joblib import effective_n_jobs  # installed with the launcher

        parallel_jobs = effective_n_jobs(launcher.n_jobs)
    return max(1, (os.cpu_count() or 1) // parallel_jobs)


def validation_metrics(trainer: L.Trainer) -> dict[str, float]:
    """{"val/acc_best": ...}, or {} before any validation pass."""
    val_acc_best = trainer.callback_metrics.get("val/acc_best")
    return {} if val_acc_best is None else {"val/acc_best": float(val_acc_best)}


def fit_and_test(trainer: L.Trainer, classifier: Classifier, datamodule: L.LightningDataModule,
                 run_dir: Path, resume_from: Path | None) -> dict[str, Any]:
    """Fit (continuing from `resume_from` if given), test the best checkpoint, write metrics.json."""
    started = time.perf_counter()
    try:
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except (SIGTERMException, TrainingDiverged) as stop:
        interrupted = isinstance(stop, SIGTERMException)
        if trainer.is_global_zero:
            write_metrics(run_dir, {"status": "interrupted" if interrupted else "diverged",
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

    validation = validation_metrics(trainer)
    if not validation:  # then no best checkpoint exists either
        log.warning("training ended before any validation pass (trainer.max_steps, check_val_every_n_epoch "
                    "or limit_val_batches): testing the final weights, no val/acc_best")
    epochs = trainer.current_epoch
    trainer.test(classifier, datamodule=datamodule, ckpt_path="best" if validation else None, weights_only=True)
    metrics = {
        **test_results(trainer, classifier),
        **validation,
        "epochs": epochs,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "status": "completed",
    }
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        best_validation = f"best validation accuracy {validation['val/acc_best']:.2%}, " if validation else ""
        print(
            f"test accuracy {metrics['test/acc']:.2%}, test loss {metrics['test/loss']:.4f}, "
            f"{best_validation}{epochs} epochs in {metrics['wall_time_s']} s\n"
            f"run folder: {run_dir}"
        )
    return metrics


def build(cfg: DictConfig, resume_from: Path | None = None, extra_callbacks: Sequence[L.Callback] = ()
          ) -> tuple[L.LightningDataModule, Classifier, L.Trainer]:
    """The datamodule, classifier and trainer (with its logger and callbacks) that `cfg` describes."""
    datamodule = instantiate(cfg.data)
    classifier = Classifier(plain(cfg.model), plain(cfg.optimizer), plain(cfg.scheduler) or None)
    # A resumed run drops what its logs recorded after the checkpoint: one step axis, no overlap.
    logger = instantiate(cfg.logger, **({"purge_step": steps_done(resume_from)} if resume_from else {}))
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=[*callbacks, *extra_callbacks])
    return datamodule, classifier, trainer


def train(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """Build data, model, logger and trainer from the config, then fit and test; returns the metrics."""
    torch.set_num_threads(torch_threads(cfg.threads, HydraConfig.get().launcher))
    log.info("torch uses %d threads", torch.get_num_threads())
    if cfg.reuse_freed_memory and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: it needs glibc's malloc (Linux)")
    L.seed_everything(cfg.seed, workers=True)
    datamodule, classifier, trainer = build(cfg, resume_from)
    if trainer.is_global_zero and not resume_from:
        record_hyperparameters(trainer.logger, cfg)

    try:
        metrics = fit_and_test(trainer, classifier, datamodule, run_dir, resume_from)
    finally:
        end_distributed(trainer)
    return metrics


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    try:
        resume_from = checkpoint_to_resume(cfg, run_dir)
        if resume_from:
            cfg = resumed_config(run_dir, list(hydra_config.overrides.task))
        check_config(cfg)
        # A sweeper (e.g. Optuna) maximises what the app returns: select by validation.
        return train(cfg, run_dir, resume_from).get("val/acc_best")
    except Exception as error:
        if hydra_config.mode == RunMode.MULTIRUN:
            # Hydra 1.3's sweepers stop the whole sweep at the first job that raised, and skip
            # its summary; instead the job is logged here and the summary lists it as failed.
            log.exception("job failed; the sweep goes on")
            return None  # Optuna records the trial as failed
        if isinstance(error, USER_ERRORS) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            log.error("%s", error)  # the message says it all; HYDRA_FULL_ERROR=1 shows the trace
            raise SystemExit(1) from None
        raise
