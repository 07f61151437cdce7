"""What a run tells its experiment trackers (TensorBoard, CSV, MLflow, W&B): its hyperparameters,
figures and files, and, when it resumes, which tracker run it continues.

The logger group builds one tracker (`logger=mlflow`) or several (`logger=many`: a mapping of
them); Lightning sends every metric to each. What Lightning does not send, this module does."""

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.logger import DummyLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mnist_cnn.schema import ConfigError

log = logging.getLogger(__name__)

# The metrics that sit beside each run's hyperparameters in TensorBoard's HPARAMS tab.
HPARAMS_METRICS = ("val/acc_best", "test/acc", "test/loss")
# Where a checkpoint names the tracker runs it belongs to, so that a resume continues them.
TRACKER_RUNS = "tracker_runs"


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The settings that distinguish one run from another, flat and ready for any tracker."""
    flat: dict[str, Any] = {"seed": cfg.seed, "max_epochs": cfg.trainer.max_epochs}
    for group in ("data", "model", "optimizer", "scheduler"):
        for key, value in (OmegaConf.to_container(cfg[group], resolve=True) or {}).items():
            if key == "_target_":
                flat[group] = value.rsplit(".", 1)[-1]
            elif key in ("data_dir", "md5", "redownload", "sources", "class_names"):
                continue  # where the data comes from, not how the run differs
            elif isinstance(value, dict):  # a nested object, e.g. data.augment: one column per setting
                flat.update({f"{group}/{key}/{name}": setting for name, setting in value.items() if name != "_target_"})
            else:
                flat[f"{group}/{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    flat.setdefault("scheduler", "none")
    return flat


def tracker_configs(logger_cfg: DictConfig | None) -> list[DictConfig]:
    """The trackers a logger setting describes: none (`~logger`), one, or the mapping of `logger=many`."""
    if not logger_cfg:
        return []
    if "_target_" in logger_cfg:
        return [logger_cfg]
    return [tracker for tracker in logger_cfg.values() if tracker]


def build_loggers(logger_cfg: DictConfig | None, checkpoint: dict | None = None) -> list[Logger]:
    """The configured trackers; a run resumed from `checkpoint` continues the tracker runs it
    names, and drops what its logs recorded after the checkpoint's step: one step axis, no overlap."""
    loggers = []
    for tracker in tracker_configs(logger_cfg):
        continuing = continuation(get_class(tracker._target_), checkpoint) if checkpoint else {}
        try:
            loggers.append(instantiate(tracker, **continuing))
        except InstantiationException as error:
            if not isinstance(error.__cause__, ModuleNotFoundError):
                raise
            raise ConfigError(f"{tracker._target_.rsplit('.', 1)[-1]} needs its package ({error.__cause__}): "
                              "pip install -e '.[trackers]'") from None
    return loggers


def continuation(tracker: type, checkpoint: dict) -> dict[str, Any]:
    """The arguments that make a tracker continue the run `checkpoint` was saved in."""
    runs = checkpoint.get(TRACKER_RUNS, {})
    if issubclass(tracker, (TensorBoardLogger, CSVLogger)):
        return {"purge_step": checkpoint["global_step"]}
    if issubclass(tracker, MLFlowLogger) and "mlflow" in runs:
        return {"run_id": runs["mlflow"]}
    if issubclass(tracker, WandbLogger) and "wandb" in runs:
        return {"id": runs["wandb"], "resume": "allow"}
    return {}


class RecordTrackerRuns(L.Callback):
    """Names the run's MLflow and W&B runs in every checkpoint: the runs a resume continues."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        runs = {}
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                runs["mlflow"] = logger.run_id
            elif isinstance(logger, WandbLogger):
                runs["wandb"] = logger.version
        checkpoint[TRACKER_RUNS] = runs


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, resumable like TensorBoard's: `purge_step` keeps the rows of the
    run's metrics.csv up to that step (Lightning's own would delete the file) and drops the rest."""

    def __init__(self, save_dir: str, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100, purge_step: int | None = None):
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self.purge_step = purge_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        metrics_file = Path(self.log_dir) / "metrics.csv"
        kept = [] if self.purge_step is None or not metrics_file.exists() else rows_up_to(metrics_file, self.purge_step)
        experiment = super().experiment  # a fresh metrics.csv, which the kept rows start
        for row in kept:
            experiment.log_metrics({key: float(value) for key, value in row.items() if key != "step" and value},
                                   int(row["step"]))
        return experiment


def rows_up_to(metrics_file: Path, step: int) -> list[dict[str, str]]:
    with metrics_file.open(newline="") as file:
        return [row for row in csv.DictReader(file) if int(row["step"]) <= step]


def record_hyperparameters(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """The run's hyperparameters, for every tracker (TensorBoard: its HPARAMS tab)."""
    # fast_dev_run swaps the loggers for one that writes nothing.
    loggers = [logger for logger in loggers if not isinstance(logger, DummyLogger)]
    if not loggers:
        log.info("no logger: this run sends its metrics and hyperparameters to no tracker")
        return
    flat = hyperparameters(cfg)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # Written directly rather than through log_hyperparams, which would also log a
            # placeholder value for every metric at step 0.
            for summary in hparams(flat, dict.fromkeys(HPARAMS_METRICS, 0.0)):
                logger.experiment.file_writer.add_summary(summary)
        else:
            logger.log_hyperparams(flat)


def publish_image(loggers: Iterable[Logger], tag: str, pixels: np.ndarray, step: int) -> None:
    """An RGB image for every tracker that keeps images; MLflow keeps it as an artifact."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, pixels, artifact_file=f"figures/{file_name(tag)}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[pixels], step=step)


def file_name(tag: str) -> str:
    """A figure's file name for its tag: test/predictions -> test_predictions."""
    return tag.replace("/", "_")


def publish_files(loggers: Iterable[Logger], files: dict[str, str]) -> None:
    """Text files (name -> contents: metrics.json, the resolved config) for the trackers that keep
    files; TensorBoard and CSV logs sit in the run folder beside them."""
    for logger in loggers:
        for name, text in files.items():
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, name)
            elif isinstance(logger, WandbLogger):
                # W&B uploads what lies in its run's files folder.
                path = Path(logger.experiment.dir) / name
                path.write_text(text)
                logger.experiment.save(str(path), base_path=logger.experiment.dir, policy="now")


def close_trackers(loggers: Iterable[Logger]) -> None:
    """Ends the W&B run of this job: a sweep runs its jobs in one process, and each job is its own
    run. (Lightning closes the other trackers at the end of fit and test.)"""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb  # installed with the logger

        wandb.finish()
