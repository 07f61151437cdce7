"""The training entry point: compose the parts from config, fit, test, record."""

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from mnist_cnn.classifier import Classifier
from mnist_cnn.config import CONFIG_DIR, register_resolvers
from mnist_cnn.evaluate import test_results

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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint, write metrics.json; returns the metrics."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
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
        **test_results(trainer, classifier),
        "val/acc_best": val_acc_best,
        "epochs": epochs,
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
def main(cfg: DictConfig) -> float:
    # A sweeper (e.g. Optuna) maximises what the app returns: select by validation.
    return train(cfg)["val/acc_best"]
