"""The figures and numbers the ErrorAnalysis callback leaves in a training run's folder."""

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    TEST_FIGURES,
    assert_readable_pngs,
    learnable_digits,
    only_run_dir,
    read_tensorboard_images,
    run_train,
)


def test_figures_are_saved_as_pngs_of_readable_size(finished_run):
    run_dir, _ = finished_run
    assert_readable_pngs(run_dir / "figures", TEST_FIGURES | {"train/samples"})


def test_tensorboard_holds_the_training_batch_at_the_start_and_the_figures_after_the_test(finished_run):
    run_dir, _ = finished_run
    images = read_tensorboard_images(run_dir)
    assert set(images) == TEST_FIGURES | {"train/samples"}
    assert [step for step, _, _ in images["train/samples"]] == [0]
    last_step = max(step for step, _, _ in images["test/confusion_matrix"])
    assert last_step > 0 and all(steps[-1][0] == last_step for tag, steps in images.items() if tag in TEST_FIGURES)
    assert all(width >= 200 and height >= 200 for steps in images.values() for _, width, height in steps)


@pytest.fixture(scope="module")
def run_with_mistakes(tiny_data, tmp_path_factory) -> Path:
    """A net too small and too briefly trained to classify every test image right."""
    log_dir = tmp_path_factory.mktemp("weak_logs")
    result = run_train(tiny_data, log_dir, "model.channels=[2,4]", "optimizer.lr=0.001", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(log_dir)


def test_metrics_json_analysis_is_consistent_with_itself_and_with_the_test_labels(run_with_mistakes, tiny_data):
    metrics = json.loads((run_with_mistakes / "metrics.json").read_text())
    confusion = torch.tensor(metrics["test/confusion_matrix"])
    _, test_labels = learnable_digits(tiny_data.test_size, seed=2)  # as write_tiny_mnist made them
    assert confusion.shape == (10, 10) and confusion.sum() == metrics["test_images"] == tiny_data.test_size
    assert torch.equal(confusion.sum(dim=1), torch.bincount(test_labels, minlength=10))
    per_class = torch.tensor([float("nan") if acc is None else acc for acc in metrics["test/per_class_acc"]])
    assert torch.allclose(per_class, confusion.diag() / confusion.sum(dim=1), equal_nan=True)
    assert metrics["test/misclassified"] == confusion.sum() - confusion.trace() > 0
    assert 1 - metrics["test/misclassified"] / metrics["test_images"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert 0 < metrics["test/ece"] <= 1
    listed = [(c["true"], c["predicted"], c["count"]) for c in metrics["test/top_confusions"]]
    off_diagonal = confusion - torch.diag(confusion.diag())
    assert listed, "a net that makes mistakes has confusions to list"
    assert all(true != pred and confusion[true, pred] == count > 0 for true, pred, count in listed)
    assert [count for _, _, count in listed] == sorted(off_diagonal.flatten().tolist(), reverse=True)[:len(listed)]
    assert len(listed) == min(10, int((off_diagonal > 0).sum()))
