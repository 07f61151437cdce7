"""On the real MNIST files (fetched once into the project's data/ folder): two epochs of
training, shared by every test here through the session's `real_mnist_run`."""

import json

import pytest
from conftest import draw_digit, run_script

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_two_epochs_on_real_mnist_reach_98_percent(real_mnist_run):
    metrics = json.loads((real_mnist_run / "metrics.json").read_text())
    assert metrics["test_images"] == 10_000
    assert metrics["test/acc"] >= 0.98


def test_error_analysis_of_real_mnist_names_its_mistakes_and_is_well_calibrated(real_mnist_run):
    metrics = json.loads((real_mnist_run / "metrics.json").read_text())
    assert metrics["test/misclassified"] == round((1 - metrics["test/acc"]) * 10_000)
    assert metrics["test/ece"] < 0.05  # a cross-entropy-trained CNN is nearly calibrated
    assert min(metrics["test/per_class_acc"]) > 0.9
    assert len(metrics["test/top_confusions"]) == 10 and metrics["test/top_confusions"][0]["count"] >= 2


def test_predict_reads_a_one_and_a_seven_drawn_on_white_paper_at_an_odd_size(real_mnist_run, tmp_path):
    one = draw_digit(tmp_path / "one.png", 1, size=(123, 97))
    seven = draw_digit(tmp_path / "seven.jpg", 7, size=(123, 97))
    result = run_script("predict.py", f"ckpt_path={real_mnist_run / 'checkpoints' / 'best.ckpt'}",
                        f"inputs=[{one},{seven}]", "json=true")
    assert result.returncode == 0, result.stderr
    labels = {json.loads(line)["file"]: json.loads(line)["label"] for line in result.stdout.splitlines()}
    assert labels == {str(one): 1, str(seven): 7}
