"""The error-analysis numbers, checked against torchmetrics and against cases worked by hand."""

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_recall,
)

from mnist_cnn.error_analysis import metrics


def noisy_predictions(count: int = 600, classes: int = 10, seed: int = 0):
    """Probabilities that are mostly right, sometimes confidently wrong."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=generator)
    logits = 2 * torch.randn(count, classes, generator=generator) + 3 * F.one_hot(labels, classes)
    return logits.softmax(dim=1), labels


def test_confusion_matrix_matches_torchmetrics_and_counts_every_image():
    probabilities, labels = noisy_predictions()
    confusion = metrics.confusion_matrix(probabilities.argmax(dim=1), labels, num_classes=10)
    assert torch.equal(confusion, multiclass_confusion_matrix(probabilities, labels, num_classes=10))
    assert confusion.sum() == len(labels)


def test_per_class_accuracy_is_the_recall_of_each_class():
    probabilities, labels = noisy_predictions()
    confusion = metrics.confusion_matrix(probabilities.argmax(dim=1), labels, num_classes=10)
    expected = multiclass_recall(probabilities, labels, num_classes=10, average=None)
    assert torch.allclose(metrics.per_class_accuracy(confusion).float(), expected)


@pytest.mark.parametrize("bins", [10, 15])
def test_ece_matches_torchmetrics(bins):
    probabilities, labels = noisy_predictions()
    reliability = metrics.reliability(probabilities, labels, bins)
    expected = multiclass_calibration_error(probabilities, labels, num_classes=10, n_bins=bins, norm="l1")
    assert reliability.ece == pytest.approx(float(expected), abs=1e-6)
    assert reliability.counts.sum() == len(labels)


def test_a_predictor_always_90_percent_sure_and_right_half_the_time_has_ece_0_4():
    probabilities = torch.full((100, 10), 0.1 / 9)
    probabilities[:, 0] = 0.9
    labels = torch.tensor([0, 1] * 50)
    reliability = metrics.reliability(probabilities, labels, bins=10)
    assert reliability.ece == pytest.approx(0.4, abs=1e-6)  # float32
    assert reliability.counts.tolist() == [0] * 8 + [100, 0]  # 0.9 lies in the bin (0.8, 0.9]
    assert reliability.accuracy[8] == pytest.approx(0.5) and reliability.confidence[8] == pytest.approx(0.9)


def test_most_frequent_confusions_are_off_diagonal_most_first():
    confusion = torch.diag(torch.full((10,), 50))
    confusion[4, 9], confusion[7, 1], confusion[3, 5] = 3, 2, 2
    assert metrics.most_frequent_confusions(confusion, count=10) == [(4, 9, 3), (3, 5, 2), (7, 1, 2)]
    assert metrics.most_frequent_confusions(confusion, count=2) == [(4, 9, 3), (3, 5, 2)]


def test_most_confident_mistakes_are_wrong_and_more_confident_than_the_mistakes_left_out():
    probabilities, labels = noisy_predictions()
    confidence, predicted = probabilities.max(dim=1)
    chosen = metrics.most_confident_mistakes(probabilities, labels, count=5)
    assert len(chosen) == 5 and (predicted[chosen] != labels[chosen]).all()
    assert (confidence[chosen].diff() <= 0).all()
    left_out = (predicted != labels) & ~torch.isin(torch.arange(len(labels)), chosen)
    assert confidence[left_out].max() <= confidence[chosen].min()
