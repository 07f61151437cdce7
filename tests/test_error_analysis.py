"""The figures and numbers the ErrorAnalysis callback leaves in a training run's folder."""

import json

import torch
from conftest import (
    TEST_FIGURES,
    assert_readable_pngs,
    learnable_digits,
    read_tensorboard_images,
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


def test_metrics_json_analysis_is_consistent_with_itself_and_with_the_test_labels(finished_run, tiny_data):
    metrics = json.loads((finished_run[0] / "metrics.json").read_text())
    confusion = torch.tensor(metrics["test/confusion_matrix"])
    _, test_labels = learnable_digits(tiny_data.test_size, seed=2)  # as write_tiny_mnist made them
    assert confusion.shape == (10, 10) and confusion.sum() == metrics["test_images"] == tiny_data.test_size
    assert torch.equal(confusion.sum(dim=1), torch.bincount(test_labels, minlength=10))
    assert torch.allclose(torch.tensor(metrics["test/per_class_acc"]), confusion.diag() / confusion.sum(dim=1))
    assert metrics["test/misclassified"] == confusion.sum() - confusion.trace()
    assert 1 - metrics["test/misclassified"] / metrics["test_images"] == metrics["test/acc"]
    assert 0 <= metrics["test/ece"] <= 1
    listed = [(c["true"], c["predicted"], c["count"]) for c in metrics["test/top_confusions"]]
    off_diagonal = confusion - torch.diag(confusion.diag())
    assert all(true != pred and confusion[true, pred] == count > 0 for true, pred, count in listed)
    assert [count for _, _, count in listed] == sorted(off_diagonal.flatten().tolist(), reverse=True)[:len(listed)]
    assert len(listed) == min(10, int((off_diagonal > 0).sum()))
