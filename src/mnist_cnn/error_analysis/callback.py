"""The ErrorAnalysis callback: figures and numbers from the test pass the trainer already runs."""

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from mnist_cnn.data import denormalize
from mnist_cnn.error_analysis import figures, metrics
from mnist_cnn.experiment_trackers import file_name, publish_image


def gather_uneven(module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` from every rank, concatenated in rank order along dim 0. The test set is
    dealt to ranks without padding, so ranks may hold different counts: pad to the largest
    for the collective, then drop the padding."""
    if module.trainer.world_size == 1:
        return tensor
    sizes = module.all_gather(torch.tensor(len(tensor), device=tensor.device)).tolist()
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    gathered = module.all_gather(padded)  # (world_size, max(sizes), ...)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


class ErrorAnalysis(L.Callback):
    """Keeps each test batch's images, labels and softmax of the logits that `test_step`
    returns (nothing is predicted twice), then, after the test pass, saves figures to
    `figures_dir` and the trackers (TensorBoard's IMAGES tab) and fills `summary` for metrics.json.
    Also shows the first training batch once, as a sanity check of what the model sees."""

    def __init__(self, figures_dir: str, samples: int, mistakes: int, calibration_bins: int,
                 top_confusions: int):
        self.figures_dir = Path(figures_dir)
        self.samples, self.mistakes = samples, mistakes
        self.calibration_bins, self.top_confusions = calibration_bins, top_confusions
        self.summary: dict[str, Any] = {}
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._show_next_train_batch = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_next_train_batch = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if self._show_next_train_batch and trainer.is_global_zero:
            images, labels = batch[0][: self.samples], batch[1][: self.samples]
            self._publish(trainer, "train/samples",
                          figures.training_samples(denormalize(images), labels, pl_module.class_names))
        self._show_next_train_batch = False

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches, self.summary = [], {}

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        self._batches.append((denormalize(images), outputs.float().softmax(dim=1), labels))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        images, probabilities, labels = (gather_uneven(pl_module, torch.cat(parts))
                                         for parts in zip(*self._batches))
        self._batches = []
        predicted = probabilities.argmax(dim=1)
        names = pl_module.class_names
        confusion = metrics.confusion_matrix(predicted, labels, num_classes=probabilities.shape[1])
        per_class_accuracy = metrics.per_class_accuracy(confusion)
        bins = metrics.reliability(probabilities, labels, self.calibration_bins)
        self.summary = {
            # NaN (a class absent from a truncated test set) is not valid JSON
            "test/per_class_acc": [None if math.isnan(acc) else acc for acc in per_class_accuracy.tolist()],
            "test/ece": bins.ece,
            "test/misclassified": int((predicted != labels).sum()),
            "test/class_names": names,  # by label: the indices in the lists and matrix here
            "test/top_confusions": [
                {"true": true, "predicted": pred, "count": count,
                 "true_name": names[true], "predicted_name": names[pred]}
                for true, pred, count in metrics.most_frequent_confusions(confusion, self.top_confusions)
            ],
            "test/confusion_matrix": confusion.tolist(),
        }
        if not trainer.is_global_zero:
            return
        mistakes = metrics.most_confident_mistakes(probabilities, labels, self.mistakes)
        samples = slice(self.samples)
        self._publish(trainer, "test/predictions",
                      figures.predictions(images[samples], probabilities[samples], labels[samples], names))
        self._publish(trainer, "test/confident_mistakes",
                      figures.confident_mistakes(images[mistakes], probabilities[mistakes], labels[mistakes], names))
        self._publish(trainer, "test/confusion_matrix",
                      figures.confusion_matrix(confusion, per_class_accuracy, names))
        self._publish(trainer, "test/confidence_histogram", figures.confidence_histogram(probabilities, labels))
        self._publish(trainer, "test/reliability", figures.reliability_diagram(bins))

    def _publish(self, trainer: L.Trainer, tag: str, figure: Figure) -> None:
        # Drawn once (most of a figure's cost), then the same pixels go to the file and to the trackers.
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3]
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(self.figures_dir / f"{file_name(tag)}.png")
        publish_image(trainer.loggers, tag, pixels, trainer.global_step)
