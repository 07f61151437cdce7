"""The evaluation entry point: test any checkpoint, with the same error analysis as training."""

import json
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.classifier import CheckpointError, Classifier, load_classifier
from mnist_cnn.console import quiet_library_notices
from mnist_cnn.error_analysis.callback import ErrorAnalysis
from mnist_cnn.experiment_trackers import build_loggers


def test_results(trainer: L.Trainer, classifier: Classifier) -> dict[str, Any]:
    """The numbers of the trainer's last test pass, with the ErrorAnalysis summary when that callback ran."""
    results = {
        "test/acc": float(trainer.callback_metrics["test/acc"]),
        "test/loss": float(trainer.callback_metrics["test/loss"]),
        "test_images": int(classifier.test_images.compute()),
    }
    for callback in trainer.callbacks:
        if isinstance(callback, ErrorAnalysis):
            results.update(callback.summary)
    return results


METRICS_FILE = "metrics.json"  # a run's record, in its folder


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    # Written aside and renamed: a worker summarising a shared sweep folder never reads half a file.
    partial = run_dir / f"{METRICS_FILE}.partial"
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    partial.replace(run_dir / METRICS_FILE)


def evaluate(cfg: DictConfig, classifier: Classifier) -> dict[str, Any]:
    """Test `classifier` on the test set, write metrics.json and figures; returns the metrics."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    datamodule = instantiate(cfg.data)
    trainer = instantiate(cfg.trainer, logger=build_loggers(cfg.get("logger")) or False,
                          callbacks=[instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()])
    started = time.perf_counter()
    trainer.test(classifier, datamodule=datamodule)
    metrics = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        **test_results(trainer, classifier),
        "world_size": trainer.world_size,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        print(f"test accuracy {metrics['test/acc']:.2%}, test loss {metrics['test/loss']:.4f} "
              f"on {metrics['test_images']} images\nrun folder: {run_dir}")
    return metrics


def run(cfg: DictConfig) -> None:
    quiet_library_notices()
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        sys.exit("error: name the checkpoint to evaluate: python eval.py ckpt_path=<file>")
    try:
        classifier = load_classifier(cfg.ckpt_path)
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    data_classes = list(cfg.data.class_names)
    if classifier.class_names != data_classes:
        sys.exit(f"error: the checkpoint's model tells apart {classifier.class_names}, but the data config holds "
                 f"{data_classes} ({cfg.data.dataset}): name the data it was trained on, e.g. data=fashion_mnist")
    evaluate(cfg, classifier)
