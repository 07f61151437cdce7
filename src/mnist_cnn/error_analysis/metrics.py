"""Error analysis of a test pass, from the predicted probabilities and the true labels.

Pure functions of tensors: the callback that collects the predictions, the figures and
metrics.json all read the same numbers from here.
"""

from dataclasses import dataclass

import torch


@dataclass
class Reliability:
    """Predictions grouped by confidence into equal-width bins over [0, 1]."""

    edges: torch.Tensor  # (bins + 1,)
    counts: torch.Tensor  # (bins,) predictions per bin
    confidence: torch.Tensor  # (bins,) mean confidence per bin, 0 where empty
    accuracy: torch.Tensor  # (bins,) fraction correct per bin, 0 where empty

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| gap."""
        weights = self.counts / self.counts.sum()
        return float((weights * (self.accuracy - self.confidence).abs()).sum())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true label, column = predicted label."""
    pairs = labels * num_classes + predictions
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Fraction of each true class predicted correctly (recall); NaN for a class never seen."""
    return confusion.diag() / confusion.sum(dim=1)


def most_frequent_confusions(confusion: torch.Tensor, count: int) -> list[tuple[int, int, int]]:
    """Up to `count` (true, predicted, images) off-diagonal cells, most images first."""
    off_diagonal = confusion.clone().fill_diagonal_(0).flatten()
    images, cells = off_diagonal.sort(descending=True, stable=True)
    num_classes = len(confusion)
    return [(cell // num_classes, cell % num_classes, n)
            for cell, n in zip(cells.tolist(), images.tolist()) if n > 0][:count]


def most_confident_mistakes(probabilities: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of up to `count` misclassified images, highest confidence first."""
    confidence, predictions = probabilities.max(dim=1)
    wrong = (predictions != labels).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:count]]


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> Reliability:
    confidence, predictions = probabilities.max(dim=1)
    correct = (predictions == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    # bins are (low, high]; a confidence of exactly 0 cannot occur for an argmax
    bin_of = (torch.bucketize(confidence, edges.to(confidence.device)) - 1).clamp(0, bins - 1)
    counts = torch.bincount(bin_of, minlength=bins).float()
    occupied = counts.clamp(min=1)
    return Reliability(
        edges=edges,
        counts=counts,
        confidence=torch.bincount(bin_of, confidence, minlength=bins) / occupied,
        accuracy=torch.bincount(bin_of, correct, minlength=bins) / occupied,
    )
