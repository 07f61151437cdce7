"""The training entry point: compose the parts from config, fit, test, record."""

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mnist_cnn.classifier import Classifier
from mnist_cnn.config import CONFIG_DIR, register_resolvers

log = logging.getLogger(__name__)

# The metrics that sit beside each run's hyperparameters in TensorBoard's HPARAMS tab.
HPARAMS_METRICS = ("val/acc_best", "test/acc", "test/loss")


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
        if requested < 1:
            raise ValueError(f"threads={requested} must be at least 1, or null for cores / parallel jobs")
        return requested
    parallel_jobs = 1
    if "n_jobs" in launcher:  # only the joblib launcher runs several jobs on this machine
        from joblib import effective_n_jobs  # installed with the launcher

        parallel_jobs = effective_n_jobs(launcher.n_jobs)
    return max(1, (os.cpu_count() or 1) // parallel_jobs)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint, write metrics.json; returns the metrics."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    torch.set_num_threads(torch_threads(cfg.threads, HydraConfig.get().launcher))
    log.info("torch uses %d threads", torch.get_num_threads())
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    classifier = Classifier(plain(cfg.model), plain(cfg.optimizer), plain(cfg.scheduler) or None)
    logger = instantiate(cfg.logger)
    trainer = instantiate(cfg.trainer, logger=logger,
                          callbacks=[instantiate(callback) for callback in cfg.callbacks.values()])
    if trainer.is_global_zero:
        record_hyperparameters(logger, cfg)

    started = time.perf_counter()
    trainer.fit(classifier, datamodule=datamodule)
    val_acc_best = float(trainer.callback_metrics["val/acc_best"])
    epochs = trainer.current_epoch
    trainer.test(classifier, datamodule=datamodule, ckpt_path="best")
    metrics = {
        "test/acc": float(trainer.callback_metrics["test/acc"]),
        "test/loss": float(trainer.callback_metrics["test/loss"]),
        "val/acc_best": val_acc_best,
        "epochs": epochs,
        "test_images": int(classifier.test_images.compute()),
        "world_size": trainer.world_size,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "status": "completed",
    }
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(
            f"test accuracy {metrics['test/acc']:.2%}, test loss {metrics['test/loss']:.4f}, "
            f"best validation accuracy {val_acc_best:.2%}, {epochs} epochs in {metrics['wall_time_s']} s\n"
            f"run folder: {run_dir}"
        )
    return metrics


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A sweeper (e.g. Optuna) maximises what the app returns: select by validation.
    try:
        return train(cfg)["val/acc_best"]
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # Hydra 1.3's sweepers stop the whole sweep at the first job that raised, and skip
        # its summary; instead the job is logged here and the summary lists it as failed.
        log.exception("job failed; the sweep goes on")
        return None  # Optuna records the trial as failed
